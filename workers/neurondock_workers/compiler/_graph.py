"""TorchScript IR helpers: freeze, capture every intermediate value, cut out segments, edit constants."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Graph = Any  # torch._C.Graph (pybind types are not useful to mypy)
Node = Any
Value = Any

# torch dtype <-> ScalarType codes used by aten::to in the IR.
SCALAR_TYPE_CODE = {torch.float16: 5, torch.float32: 6, torch.bfloat16: 15}


@dataclass(frozen=True)
class TensorMeta:
    """Shape and dtype of one tensor seen while running the graph."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        """Return the element count."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Return the byte size at the recorded dtype."""
        return self.numel * _dtype_size(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe form."""
        return {"shape": list(self.shape), "dtype": self.dtype}


def _dtype_size(dtype: str) -> int:
    return int(torch.empty((), dtype=getattr(torch, dtype)).element_size()) if hasattr(torch, dtype) else 4


def dtype_name(dtype: torch.dtype) -> str:
    """Return 'float32' for torch.float32."""
    return str(dtype).removeprefix("torch.")


def meta_of(tensor: torch.Tensor) -> TensorMeta:
    """Return the TensorMeta of a tensor."""
    return TensorMeta(tuple(int(d) for d in tensor.shape), dtype_name(tensor.dtype))


def freeze(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Freeze an eval-mode copy, keeping BatchNorm and friends unfolded so op counts match the model."""
    frozen = torch.jit.freeze(module.eval(), optimize_numerics=False)
    torch._C._jit_pass_inline(frozen.graph)
    return frozen


def fold_for_device(frozen: torch.jit.ScriptModule) -> None:
    """Fold BatchNorm/add/mul constants into conv and linear weights in place (neuron-cc's frontend folds)."""
    torch._C._jit_pass_optimize_frozen_graph(frozen.graph, True)


def top_nodes(graph: Graph) -> list[Node]:
    """Return the top-level nodes in order."""
    return list(graph.nodes())


def all_nodes(graph: Graph) -> Iterable[Node]:
    """Yield every node, including those inside control-flow blocks."""
    stack = list(reversed(list(graph.nodes())))
    while stack:
        node = stack.pop()
        yield node
        for block in node.blocks():
            stack.extend(reversed(list(block.nodes())))


def is_tensor_value(value: Value) -> bool:
    """Return whether a value is a tensor."""
    return isinstance(value.type(), torch._C.TensorType)


def constant_tensor(value: Value) -> torch.Tensor | None:
    """Return the tensor a prim::Constant holds, else None."""
    node = value.node()
    if node.kind() != "prim::Constant" or not node.hasAttribute("value") or node.kindOf("value") != "t":
        return None
    tensor: torch.Tensor = node.t("value")
    return tensor


def graph_inputs(graph: Graph) -> list[Value]:
    """Return the forward inputs without `self`."""
    values = list(graph.inputs())
    return values[1:] if values and isinstance(values[0].type(), torch._C.ClassType) else values


def capture_values(
    graph: Graph, inputs: Sequence[torch.Tensor], keep: set[str] | None = None
) -> tuple[dict[str, TensorMeta], dict[str, torch.Tensor]]:
    """Run a copy of the graph returning every top-level tensor value; return metas and the kept tensors.

    TorchScript has no per-node shape API that survives scripted code, so the graph is copied, every
    intermediate tensor is added to a tuple output, and the copy is run once on the example inputs.
    """
    work = graph.copy()
    if len(list(work.inputs())) == len(inputs) + 1:
        work.eraseInput(0)  # frozen graphs keep an unused `self`
    names: list[str] = []
    values: list[Value] = []
    # Unnamed values get fresh numbers in a copy, so names come from the original, matched by position.
    for original, node in zip(graph.nodes(), work.nodes(), strict=True):
        if node.kind() == "prim::Constant":
            continue
        for orig_out, out in zip(original.outputs(), node.outputs(), strict=True):
            if is_tensor_value(out):
                names.append(orig_out.debugName())
                values.append(out)
    for _ in range(len(list(work.outputs()))):
        work.eraseOutput(0)
    tup = work.create("prim::TupleConstruct", values)
    work.appendNode(tup)
    tup.output().setType(torch._C.TupleType([v.type() for v in values]))
    work.registerOutput(tup.output())
    fn = torch._C._create_function_from_graph("neurondock_capture", work)
    with torch.no_grad():
        results = fn(*inputs) if values else ()
    metas: dict[str, TensorMeta] = {}
    kept: dict[str, torch.Tensor] = {}
    for name, tensor in zip(names, results, strict=True):
        if isinstance(tensor, torch.Tensor):
            metas[name] = meta_of(tensor)
            if keep is not None and name in keep:
                kept[name] = tensor
    for value, tensor in zip(graph_inputs(graph), inputs, strict=True):
        metas[value.debugName()] = meta_of(tensor)
        if keep is not None and value.debugName() in keep:
            kept[value.debugName()] = tensor
    return metas, kept


@dataclass
class Segment:
    """A callable cut out of a graph: its external inputs and escaping outputs, by debug name."""

    function: Callable[..., Any]
    inputs: list[str]
    outputs: list[str]


def extract_segment(graph: Graph, nodes: Sequence[Node], name: str) -> Segment:
    """Clone `nodes` (in order) into a standalone TorchScript function."""
    segment: Graph = torch._C.Graph()
    mapping: dict[str, Value] = {}
    inside = {out.debugName() for node in nodes for out in node.outputs()}
    input_names: list[str] = []

    def lookup(value: Value) -> Value:
        key = value.debugName()
        if key in mapping:
            return mapping[key]
        producer = value.node()
        if producer.kind() == "prim::Constant":
            clone = segment.createClone(producer, lambda v: v)
            segment.insertNode(clone)
            mapping[key] = clone.output()
        else:
            new = segment.addInput()
            new.setType(value.type())
            mapping[key] = new
            input_names.append(key)
        return mapping[key]

    for node in nodes:
        for value in node.inputs():
            lookup(value)
        clone = segment.createClone(node, lambda v: mapping[v.debugName()])
        segment.insertNode(clone)
        for old, new in zip(node.outputs(), clone.outputs(), strict=True):
            mapping[old.debugName()] = new
    escaping: list[str] = []
    for node in nodes:
        for out in node.outputs():
            if any(use.user.kind() == "prim::Return" or _outside(use.user, inside) for use in out.uses()):
                escaping.append(out.debugName())
    outs = [mapping[n] for n in escaping]
    if len(outs) == 1:
        segment.registerOutput(outs[0])
    else:
        tup = segment.create("prim::TupleConstruct", outs)
        segment.appendNode(tup)
        tup.output().setType(torch._C.TupleType([v.type() for v in outs]))
        segment.registerOutput(tup.output())
    fn = torch._C._create_function_from_graph(name, segment)
    return Segment(fn, input_names, escaping)


def _outside(user: Node, inside: set[str]) -> bool:
    outs = [o.debugName() for o in user.outputs()]
    return not outs or not any(o in inside for o in outs)


class GraphEditor:
    """Insert rounding casts and replace constants in a frozen graph."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        first = next(iter(graph.nodes()))
        self._codes: dict[int, Value] = {}
        with graph.insert_point_guard(first):
            for code in SCALAR_TYPE_CODE.values():
                self._codes[code] = graph.insertConstant(code)

    def replace_constant(self, node: Node, index: int, tensor: torch.Tensor) -> None:
        """Point input `index` of `node` at a new constant (shared constants are never mutated)."""
        with self.graph.insert_point_guard(node):
            value = self.graph.insertConstant(tensor)
        node.replaceInput(index, value)

    def rounded(self, value: Value, before: Node, dtype: torch.dtype) -> Value:
        """Insert `value.to(dtype).to(float32)` before `before` and return the rounded value."""
        with self.graph.insert_point_guard(before):
            low = self.graph.insert("aten::to", [value, self._codes[SCALAR_TYPE_CODE[dtype]]])
            back = self.graph.insert("aten::to", [low, self._codes[SCALAR_TYPE_CODE[torch.float32]]])
        low.setType(value.type())
        back.setType(value.type())
        result: Value = back
        return result

    def lint(self) -> None:
        """Check the edited graph is well formed."""
        torch._C._jit_pass_lint(self.graph)
