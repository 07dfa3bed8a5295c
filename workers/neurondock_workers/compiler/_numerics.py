"""Device numerics: apply the --fast-math cast policy to a frozen graph and measure drift against FP32.

NeuronCore-v1 matmuls run in BF16 or FP16 with FP32 accumulation; FP32 matmuls do not exist on Inf1
(aws-neuron-sdk#765; docs/compiler.md, "Numerics"). The emulation rounds what the device rounds —
weights and the inputs of every TensorEngine op in a Neuron subgraph — and keeps FP32 elsewhere, so
it is an approximation: vector/scalar intermediates the device may also keep in BF16 stay FP32 here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from . import _graph, _oplist
from ._grammar import CompilerOptions

# The GEMM operands of each TensorEngine op; biases are added afterwards in FP32 unless the whole
# graph is cast (fp32-cast-all). addmm/baddbmm take the bias first.
_OPERAND_ARGS = {"aten::addmm": (1, 2), "aten::baddbmm": (1, 2)}
_DEFAULT_OPERANDS = (0, 1)
APPROXIMATION_NOTE = (
    "approximate: weights and TensorEngine inputs inside Neuron subgraphs are rounded to the cast dtype and "
    "accumulated in FP32; vector/scalar intermediates stay FP32; matmult-transposes and fast-relayout are "
    "not "
    "modelled"
)


def fold_device_constants(graph: _graph.Graph) -> None:
    """Fold BatchNorm and constant add/mul into conv/linear weights (before casting, as neuron-cc would)."""
    torch._C._jit_pass_fold_frozen_conv_bn(graph)
    torch._C._jit_pass_fold_frozen_conv_add_or_sub(graph)
    torch._C._jit_pass_fold_frozen_conv_mul_or_div(graph)
    torch._C._jit_pass_fold_frozen_linear_bn(graph)  # type: ignore[attr-defined]  # missing from the stubs


# Ops that only re-view or move data: rounding commutes with them, so it can be hoisted above them.
_VIEW_OPS = frozenset(
    {
        "aten::view",
        "aten::reshape",
        "aten::permute",
        "aten::transpose",
        "aten::t",
        "aten::unbind",
        "aten::split",
        "aten::chunk",
        "prim::ListUnpack",
        "aten::select",
        "aten::slice",
        "aten::contiguous",
        "aten::flatten",
        "aten::unsqueeze",
        "aten::squeeze",
        "aten::expand",
        "aten::narrow",
    }
)


class _Rounder:
    """Insert one rounding per activation, hoisted above view chains so q/k/v share one cast."""

    def __init__(self, graph: _graph.Graph, neuron_keys: set[str], dtype: torch.dtype) -> None:
        self.graph, self.neuron_keys, self.dtype = graph, neuron_keys, dtype
        self.editor = _graph.GraphEditor(graph)
        self.done: set[str] = set()  # values already carrying rounded data
        self.count = 0
        self._ok: dict[str, bool] = {}

    def _on_neuron(self, node: _graph.Node) -> bool:
        return node.outputsSize() > 0 and node.outputsAt(0).debugName() in self.neuron_keys

    def _only_rounded_uses(self, value: _graph.Value) -> bool:
        name = value.debugName()
        if name not in self._ok:
            self._ok[name] = False  # guards recursion
            ok = bool(value.uses())
            for use in value.uses():
                user = use.user
                kind = user.kind()
                if not self._on_neuron(user):
                    ok = False
                elif kind in _oplist.MATMUL_OPS:
                    ok = ok and use.offset in _OPERAND_ARGS.get(kind, _DEFAULT_OPERANDS)
                elif kind in _VIEW_OPS and use.offset == 0:
                    ok = ok and all(self._only_rounded_uses(o) for o in user.outputs())
                else:
                    ok = False
            self._ok[name] = ok
        return self._ok[name]

    def _source(self, value: _graph.Value) -> _graph.Value:
        while True:
            producer = value.node()
            if producer.kind() not in _VIEW_OPS or not self._on_neuron(producer) or producer.inputsSize() == 0:
                return value
            base = producer.inputsAt(0)
            if not (_graph.is_tensor_value(base) or producer.kind() == "prim::ListUnpack"):
                return value
            if not self._only_rounded_uses(base):
                return value
            value = base

    def round_input(self, node: _graph.Node, index: int, value: _graph.Value) -> None:
        """Make input `index` of `node` see device-rounded data."""
        if value.debugName() in self.done:
            return
        source = self._source(value)
        if source is not value or self._only_rounded_uses(value):
            uses = [(u.user, u.offset) for u in source.uses()]
            first = uses[0][0]
            for user, _ in uses[1:]:
                if user.isBefore(first):
                    first = user
            rounded = self.editor.rounded(source, first, self.dtype)
            for user, offset in uses:
                user.replaceInput(offset, rounded)
            self._mark(rounded)
        else:
            rounded = self.editor.rounded(value, node, self.dtype)
            node.replaceInput(index, rounded)
            self.done.add(rounded.debugName())
        self.count += 1

    def _mark(self, value: _graph.Value) -> None:
        self.done.add(value.debugName())
        for use in value.uses():
            if use.user.kind() in _VIEW_OPS and use.offset == 0:
                for out in use.user.outputs():
                    self._mark(out)


def apply_cast_policy(
    module: torch.jit.ScriptModule, neuron_keys: set[str], options: CompilerOptions
) -> dict[str, Any]:
    """Rewrite a frozen module in place so Neuron-side ops see device-rounded operands; return counts."""
    graph = module.graph
    dtype = getattr(torch, options.cast_dtype)
    rounder = _Rounder(graph, neuron_keys, dtype)
    cast_all = options.cast_scope == "all"
    rounded_constants: dict[str, torch.Tensor] = {}
    stats = {"rounded_constants": 0, "rounded_constant_elements": 0, "rounded_activations": 0}
    for node in list(graph.nodes()):
        if not rounder._on_neuron(node):
            continue
        kind = node.kind()
        on_tensor_engine = kind in _oplist.MATMUL_OPS
        operands = _OPERAND_ARGS.get(kind, _DEFAULT_OPERANDS) if on_tensor_engine else ()
        for index, value in enumerate(list(node.inputs())):
            if not _graph.is_tensor_value(value):
                continue
            tensor = _graph.constant_tensor(value)
            if tensor is not None:
                if tensor.is_floating_point() and tensor.dtype == torch.float32 and (index in operands or cast_all):
                    name = value.debugName()
                    if name not in rounded_constants:
                        rounded_constants[name] = tensor.to(dtype).to(torch.float32)
                        stats["rounded_constants"] += 1
                        stats["rounded_constant_elements"] += tensor.numel()
                    rounder.editor.replace_constant(node, index, rounded_constants[name])
            elif index in operands:
                rounder.round_input(node, index, node.inputsAt(index))
    rounder.editor.lint()
    stats["rounded_activations"] = rounder.count
    return stats


def flatten_outputs(obj: Any) -> list[torch.Tensor]:
    """Return the tensors of a (possibly nested) model output in a stable order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for key in sorted(obj, key=str) for t in flatten_outputs(obj[key])]
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in flatten_outputs(item)]
    return []


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0 or not math.isfinite(na) or not math.isfinite(nb):
        return 0.0
    return float(torch.dot(a, b)) / (na * nb)


def compare_outputs(candidate: Any, reference: Any) -> dict[str, Any]:
    """Return max/mean absolute error and cosine similarity of candidate vs reference outputs."""
    cands, refs = flatten_outputs(candidate), flatten_outputs(reference)
    if len(cands) != len(refs) or any(c.shape != r.shape for c, r in zip(cands, refs, strict=False)):
        return {"comparable": False, "max_abs_error": math.inf, "cosine_similarity": 0.0}
    per_output = []
    flat_c: list[torch.Tensor] = []
    flat_r: list[torch.Tensor] = []
    for c, r in zip(cands, refs, strict=True):
        if not (c.is_floating_point() or r.is_floating_point()):
            per_output.append({"shape": list(r.shape), "exact": bool(torch.equal(c, r))})
            continue
        c64, r64 = c.detach().double().flatten(), r.detach().double().flatten()
        diff = (c64 - r64).abs()
        per_output.append(
            {
                "shape": list(r.shape),
                "max_abs_error": float(diff.max()) if diff.numel() else 0.0,
                "mean_abs_error": float(diff.mean()) if diff.numel() else 0.0,
                "reference_max_abs": float(r64.abs().max()) if r64.numel() else 0.0,
                "cosine_similarity": _cosine(c64, r64),
            }
        )
        flat_c.append(c64)
        flat_r.append(r64)
    if not flat_c:
        return {
            "comparable": True,
            "max_abs_error": 0.0,
            "mean_abs_error": 0.0,
            "cosine_similarity": 1.0,
            "reference_max_abs": 0.0,
            "outputs": per_output,
        }
    all_c, all_r = torch.cat(flat_c), torch.cat(flat_r)
    diff = (all_c - all_r).abs()
    return {
        "comparable": True,
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "reference_max_abs": float(all_r.abs().max()),
        "cosine_similarity": _cosine(all_c, all_r),
        "outputs": per_output,
    }


def within_tolerance(
    deviation: dict[str, Any], drift: dict[str, Any], rtol: float = 1e-4, envelope: bool = False
) -> bool:
    """Return whether a candidate reproduces the emulated numerics (its deviation is FP32 noise, not a cast).

    With `envelope`, anything no farther from the emulation than FP32 is (the drift) qualifies.
    """
    if not deviation.get("comparable"):
        return False
    scale = max(float(drift.get("reference_max_abs", 0.0)), 1e-30)
    # Reordered FP32 sums differ by ~1e-6 relative; a different cast moves outputs by ~1e-3 (BF16 eps 7.8e-3).
    limit = rtol * scale + (1.05 if envelope else 0.05) * float(drift.get("max_abs_error", 0.0))
    ok = float(deviation["max_abs_error"]) <= limit
    for out in deviation.get("outputs", []):
        if "exact" in out and not out["exact"]:
            ok = False
    return ok


def cast_summary(options: CompilerOptions, target: str, stats: dict[str, Any]) -> dict[str, Any]:
    """Return the report's description of the cast that was applied."""
    if target != "ml_inf1":
        return {
            "cast_mode": "none (FP32 on CPU)",
            "dtype": "float32",
            "emulated_device_numerics": False,
            **stats,
        }
    return {
        "cast_mode": options.cast_mode,
        "cast_scope": options.cast_scope,
        "dtype": options.cast_dtype,
        "fast_relayout": options.fast_relayout,
        "accumulation": "float32",
        "emulated_device_numerics": True,
        "approximation": APPROXIMATION_NOTE,
        **stats,
    }


def iter_float_constants(graph: _graph.Graph) -> Iterable[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for every floating-point constant in a frozen graph."""
    for node in _graph.all_nodes(graph):
        if node.kind() == "prim::Constant" and node.hasAttribute("value") and node.kindOf("value") == "t":
            tensor = node.t("value")
            if tensor.is_floating_point():
                yield node.output().debugName(), tensor
