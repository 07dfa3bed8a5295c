"""Operator analysis with torch-neuron's `analyze_model` keys, and per-node engine costs."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from . import _graph, _oplist
from ._profile import ProfileBuilder


@dataclass
class NodeInfo:
    """One top-level node of the frozen graph, as the partitioner sees it."""

    index: int
    kind: str
    key: str  # debug name of the first output: stable across graph copies and folding passes
    supported: bool
    arithmetic: bool
    inputs: list[str]
    outputs: list[str]
    scope: str
    reason: str | None = None
    inner_kinds: list[str] = field(default_factory=list)  # ops nested in control-flow blocks


def _node_supported(node: _graph.Node) -> bool:
    kind = node.kind()
    if kind == "aten::where" and node.inputsSize() == 1:
        return False  # only the 3-argument where is supported
    return _oplist.is_supported(kind)


def _scope(node: _graph.Node) -> str:
    try:
        return str(node.scopeName()) or ""
    except RuntimeError:
        return ""


def describe_nodes(graph: _graph.Graph) -> list[NodeInfo]:
    """Return every top-level node except constants, with support status and reasons."""
    infos: list[NodeInfo] = []
    for index, node in enumerate(_graph.top_nodes(graph)):
        kind = node.kind()
        if kind == "prim::Constant":
            continue
        outputs = [o.debugName() for o in node.outputs()]
        inner = [n.kind() for block in node.blocks() for n in _graph.all_nodes(block)] if list(node.blocks()) else []
        supported = _node_supported(node)
        reason = None if supported else _oplist.unsupported_reason(kind)
        if kind == "aten::where" and not supported:
            reason = "the 1-argument aten::where is not supported (only the 3-argument form)"
        infos.append(
            NodeInfo(
                index=index,
                kind=kind,
                key=outputs[0] if outputs else f"#{index}",
                supported=supported,
                arithmetic=_oplist.is_arithmetic(kind),
                inputs=[v.debugName() for v in node.inputs()],
                outputs=outputs,
                scope=_scope(node),
                reason=reason,
                inner_kinds=inner,
            )
        )
    return infos


def analyze_model(graph: _graph.Graph) -> dict[str, Any]:
    """Return torch-neuron's `analyze_model` dict for every node (primitives included)."""
    counts: Counter[str] = Counter()
    supported_nodes = 0
    for node in _graph.all_nodes(graph):
        counts[node.kind()] += 1
        supported_nodes += _node_supported(node)
    total = sum(counts.values())
    arith = {k: v for k, v in counts.items() if _oplist.is_arithmetic(k)}
    unsupported = sorted(k for k in counts if not _oplist.is_supported(k))
    # A 1-argument where is unsupported even though the kind is listed.
    if any(n.kind() == "aten::where" and not _node_supported(n) for n in _graph.all_nodes(graph)):
        unsupported = sorted({*unsupported, "aten::where"})
    unsupported_set = set(unsupported)
    supported_arith = sum(v for k, v in arith.items() if k not in unsupported_set)
    if "aten::where" in unsupported_set:
        supported_arith += sum(1 for n in _graph.all_nodes(graph) if n.kind() == "aten::where" and _node_supported(n))
    total_arith = sum(arith.values())
    return OrderedDict(
        [
            ("percent_supported", _pct(supported_nodes, total)),
            ("percent_supported_arithmetic", _pct(supported_arith, total_arith)),
            ("supported_count", supported_nodes),
            ("total_count", total),
            ("supported_count_arithmetic", supported_arith),
            ("total_count_arithmetic", total_arith),
            ("supported_operators", sorted(k for k in counts if k not in unsupported_set)),
            ("unsupported_operators", unsupported),
            ("operators", sorted(counts)),
            ("operator_count", OrderedDict(sorted(counts.items()))),
        ]
    )


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 100.0


def analyze_log_lines(report: Mapping[str, Any]) -> list[str]:
    """Return the INFO:Neuron lines analyze_model prints (docs/compiler.md, "The compile log")."""
    lines = ["The following operations are currently supported in torch-neuron for this model:"]
    lines += [op for op in report["supported_operators"] if not op.startswith("prim::")]
    lines.append(
        f"{report['percent_supported']:.2f}% of all operations (including primitives) "
        f"({report['supported_count']} of {report['total_count']}) are supported"
    )
    lines.append(
        f"{report['percent_supported_arithmetic']:.2f}% of arithmetic operations "
        f"({report['supported_count_arithmetic']} of {report['total_count_arithmetic']}) are supported"
    )
    return lines


def _shape(value: _graph.Value, metas: Mapping[str, _graph.TensorMeta]) -> tuple[int, ...] | None:
    tensor = _graph.constant_tensor(value)
    if tensor is not None:
        return tuple(int(d) for d in tensor.shape)
    meta = metas.get(value.debugName())
    return meta.shape if meta is not None else None


def _numel(shape: tuple[int, ...] | None) -> int:
    n = 1
    for d in shape or ():
        n *= d
    return n if shape is not None else 0


def add_node_cost(
    builder: ProfileBuilder, node: _graph.Node, metas: Mapping[str, _graph.TensorMeta], seen_weights: set[str]
) -> None:
    """Add one node's engine work and constant weights to a profile."""
    kind = node.kind()
    inputs = list(node.inputs())
    out = metas.get(node.output().debugName()) if node.outputsSize() == 1 else None
    out_numel = out.numel if out is not None else 0
    for value in inputs:
        tensor = _graph.constant_tensor(value)
        if tensor is not None and tensor.is_floating_point() and value.debugName() not in seen_weights:
            seen_weights.add(value.debugName())
            builder.weights(float(tensor.numel()))
    if kind in _oplist.CONV_OPS:
        weight = _shape(inputs[1], metas)
        if weight and out_numel:
            transposed = kind.startswith("aten::conv_transpose") or (
                kind in ("aten::_convolution", "aten::convolution") and _const_bool(inputs[6])
            )
            per_output = _numel(weight) / max(weight[1] if transposed else weight[0], 1)
            builder.conv(float(out_numel), float(per_output))
    elif kind in _oplist.GEMM_OPS:
        _gemm_cost(builder, kind, inputs, metas, out)
    elif kind in _oplist.VECTOR_OPS:
        builder.vector(kind, float(_numel(_shape(inputs[0], metas))) if inputs else 0.0)
    elif kind in _oplist.SCALAR_OPS:
        builder.scalar(float(out_numel))
    elif kind in _oplist.COPY_OPS or kind in (
        "aten::embedding",
        "aten::embedding_bag",
        "aten::gather",
        "aten::index",
    ):
        builder.copy(float(out_numel))


def _const_bool(value: _graph.Value) -> bool:
    node = value.node()
    if node.kind() == "prim::Constant" and node.hasAttribute("value") and node.kindOf("value") == "i":
        return bool(node.i("value"))
    return False


def _gemm_cost(
    builder: ProfileBuilder,
    kind: str,
    inputs: list[_graph.Value],
    metas: Mapping[str, _graph.TensorMeta],
    out: _graph.TensorMeta | None,
) -> None:
    if out is None or not out.numel:
        return
    if kind == "aten::linear":
        weight = _shape(inputs[1], metas)
        if weight and len(weight) == 2:
            k, n = weight[1], weight[0]
            builder.gemm(out.numel / max(n, 1), k, n)
        return
    a_index, b_index = (1, 2) if kind in ("aten::addmm", "aten::baddbmm") else (0, 1)
    a = _shape(inputs[a_index], metas) if len(inputs) > a_index else None
    b = _shape(inputs[b_index], metas) if len(inputs) > b_index else None
    if (
        kind in ("aten::matmul", "aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::dot", "aten::mv")
        and a
        and b
    ):
        k = a[-1]
        n = b[-1] if len(b) >= 2 else 1
        m = a[-2] if len(a) >= 2 else 1
        shared_weight = _graph.constant_tensor(inputs[b_index]) is not None and len(b) == 2
        if shared_weight:  # x @ W: every row of every batch streams past the same weights
            builder.gemm(out.numel / max(n, 1), k, n)
        else:
            builder.gemm(m, k, n, repeats=out.numel / max(m * n, 1))
        return
    # einsum / tensordot: contraction size unknown from shapes alone; assume the first operand's last dim.
    k = a[-1] if a else 1
    n = out.shape[-1] if out.shape else 1
    builder.gemm(out.numel / max(n, 1), k, n)


def constant_bytes(graph: _graph.Graph) -> tuple[int, int]:
    """Return (bytes, count) of the distinct floating-point constant tensors in a frozen graph."""
    seen: set[int] = set()
    total = count = 0
    for node in _graph.all_nodes(graph):
        if node.kind() != "prim::Constant" or not node.hasAttribute("value") or node.kindOf("value") != "t":
            continue
        tensor: torch.Tensor = node.t("value")
        if tensor.is_floating_point() and id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
            count += tensor.numel()
    return total, count
