"""torch-neuron's partitioner: convex Neuron subgraphs, min segment size, single-fusion ratio, fallback."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._analysis import NodeInfo
from ._graph import TensorMeta
from .errors import NothingOnNeuronError, OperatorNotImplementedError

NEURON = "neuron"
CPU = "cpu"


@dataclass
class Segment:
    """A run of nodes executed as one unit: a `_NeuronGraph$N` or a CPU segment."""

    name: str
    target: str
    nodes: list[NodeInfo]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    cpu_reasons: dict[str, str] = field(default_factory=dict)  # node key -> why it is on the CPU

    @property
    def arithmetic_ops(self) -> int:
        """Return the number of aten operators in the segment."""
        return sum(1 for n in self.nodes if n.arithmetic)

    def op_counts(self) -> dict[str, int]:
        """Return operator counts by kind, sorted by name."""
        return dict(sorted(Counter(n.kind for n in self.nodes).items()))

    def to_dict(self, metas: Mapping[str, TensorMeta]) -> dict[str, Any]:
        """Return the report entry: ops, io-config shapes and CPU reasons."""
        data: dict[str, Any] = {
            "name": self.name,
            "target": self.target,
            "operators": self.op_counts(),
            "arithmetic_ops": self.arithmetic_ops,
            "inputs": [_io(n, metas) for n in self.inputs],
            "outputs": [_io(n, metas) for n in self.outputs],
        }
        if self.target == NEURON:
            data["io_config"] = {
                "inputs": {
                    f"{i}:0": [metas[n].to_dict()["shape"], metas[n].dtype]
                    for i, n in enumerate(self.inputs)
                    if n in metas
                },
                "outputs": [f"{n}:0" for n in self.outputs],
            }
        else:
            grouped: dict[str, dict[str, Any]] = {}
            for node in self.nodes:
                entry = grouped.setdefault(node.kind, {"count": 0, "reason": self.cpu_reasons.get(node.key, "")})
                entry["count"] += 1
            data["why_cpu"] = grouped
        return data


def _io(name: str, metas: Mapping[str, TensorMeta]) -> dict[str, Any]:
    meta = metas.get(name)
    return {"name": name, **(meta.to_dict() if meta else {"shape": None, "dtype": None})}


@dataclass
class PartitionPlan:
    """Every segment in execution order, plus torch-neuron's summary numbers."""

    segments: list[Segment]
    arithmetic_total: int
    arithmetic_fused: int
    minimum_segment_size: int
    single_fusion_ratio_threshold: float
    fallback: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def neuron_segments(self) -> list[Segment]:
        """Return the Neuron subgraphs in execution order."""
        return [s for s in self.segments if s.target == NEURON]

    @property
    def cpu_segments(self) -> list[Segment]:
        """Return the CPU segments in execution order."""
        return [s for s in self.segments if s.target == CPU]

    @property
    def percent_fused(self) -> float:
        """Return the share of aten operators placed on Neuron."""
        return round(100.0 * self.arithmetic_fused / self.arithmetic_total, 2) if self.arithmetic_total else 0.0

    def target_of(self) -> dict[str, str]:
        """Return node key -> segment name."""
        return {n.key: s.name for s in self.segments for n in s.nodes}

    def to_dict(self, metas: Mapping[str, TensorMeta]) -> dict[str, Any]:
        """Return the report section."""
        return {
            "minimum_segment_size": self.minimum_segment_size,
            "single_fusion_ratio_threshold": self.single_fusion_ratio_threshold,
            "fallback": self.fallback,
            "neuron_subgraphs": len(self.neuron_segments),
            "cpu_segments": len(self.cpu_segments),
            "arithmetic_ops_before": self.arithmetic_total,
            "arithmetic_ops_compiled": self.arithmetic_fused,
            "percent_compiled": self.percent_fused,
            "segments": [s.to_dict(metas) for s in self.segments],
            "warnings": list(self.warnings),
        }


def _clusters(infos: Sequence[NodeInfo], members: Iterable[int], producer: Mapping[str, int]) -> list[list[int]]:
    """Greedily grow convex clusters over `members` in topological order (no path may leave and re-enter)."""
    member_set = set(members)
    ancestors: list[int] = [0] * len(infos)
    for i, info in enumerate(infos):
        mask = 0
        for name in info.inputs:
            p = producer.get(name)
            if p is not None:
                mask |= ancestors[p] | (1 << p)
        ancestors[i] = mask
    cluster_of: dict[int, int] = {}
    nodes: dict[int, set[int]] = {}
    masks: dict[int, int] = {}
    externals: dict[int, set[int]] = {}
    for i in sorted(member_set):
        preds = {producer[n] for n in infos[i].inputs if n in producer}
        merged_nodes, merged_mask, merged_ext = {i}, 1 << i, set(preds)
        own = i
        candidates = sorted({cluster_of[p] for p in preds if p in cluster_of}, key=lambda c: -len(nodes[c]))
        for c in candidates:
            mask = merged_mask | masks[c]
            ext = {p for p in merged_ext | externals[c] if not (mask >> p) & 1}
            if all(not (ancestors[p] & mask) for p in ext):
                merged_nodes |= nodes.pop(c)
                merged_mask = mask
                merged_ext = ext
                del masks[c], externals[c]
                own = c
        for n in merged_nodes:
            cluster_of[n] = own
        nodes[own], masks[own] = merged_nodes, merged_mask
        externals[own] = {p for p in merged_ext if not (merged_mask >> p) & 1}
    return [sorted(v) for v in nodes.values()]


def partition(
    infos: Sequence[NodeInfo],
    graph_inputs: Sequence[str],
    graph_outputs: Sequence[str],
    *,
    minimum_segment_size: int = 2,
    single_fusion_ratio_threshold: float = 0.6,
    fallback: bool = True,
) -> PartitionPlan:
    """Split the nodes into Neuron subgraphs and CPU segments the way torch-neuron's partitioner does."""
    unsupported = sorted({n.kind for n in infos if not n.supported})
    if not fallback and unsupported:
        raise OperatorNotImplementedError(operators="{" + ", ".join(repr(k) for k in unsupported) + "}")
    producer = {name: i for i, info in enumerate(infos) for name in info.outputs}
    reasons: dict[str, str] = {n.key: n.reason or "" for n in infos if not n.supported}
    candidates = _clusters(infos, [i for i, n in enumerate(infos) if n.supported], producer)
    arithmetic_total = sum(1 for n in infos if n.arithmetic)
    neuron: list[list[int]] = []
    for cluster in candidates:
        size = sum(1 for i in cluster if infos[i].arithmetic)
        if size >= minimum_segment_size:
            neuron.append(cluster)
            continue
        for i in cluster:
            reasons[infos[i].key] = (
                f"supported, but its segment has {size} operator(s), fewer than minimum_segment_size="
                f"{minimum_segment_size}"
            )
    warnings: list[str] = []
    if neuron and arithmetic_total:
        largest = max(neuron, key=lambda c: (sum(1 for i in c if infos[i].arithmetic), -c[0]))
        share = sum(1 for i in largest if infos[i].arithmetic) / arithmetic_total
        if share > single_fusion_ratio_threshold and len(neuron) > 1:
            for cluster in neuron:
                if cluster is largest:
                    continue
                for i in cluster:
                    reasons[infos[i].key] = (
                        f"supported, but the largest subgraph holds {share:.0%} of operators (> "
                        f"single_fusion_ratio_threshold={single_fusion_ratio_threshold}), "
                        "so only it is compiled"
                    )
            neuron = [largest]
    if not neuron:
        raise NothingOnNeuronError(why=_why_nothing_on_neuron(infos, candidates, minimum_segment_size))
    on_neuron = {i for c in neuron for i in c}
    cpu = (
        _clusters(infos, [i for i in range(len(infos)) if i not in on_neuron], producer)
        if len(on_neuron) < len(infos)
        else []
    )
    segments = [Segment(f"_NeuronGraph${infos[c[0]].index}", NEURON, [infos[i] for i in c]) for c in neuron]
    segments += [
        Segment(
            f"cpu${infos[c[0]].index}",
            CPU,
            [infos[i] for i in c],
            cpu_reasons={infos[i].key: reasons.get(infos[i].key, "") for i in c},
        )
        for c in cpu
    ]
    ordered = _order(segments, producer, infos)
    _wire(ordered, set(graph_inputs), set(graph_outputs), infos, producer)
    fused = sum(s.arithmetic_ops for s in ordered if s.target == NEURON)
    if arithmetic_total and fused / arithmetic_total < 0.5:
        warnings.append("torch.neuron.trace was unable to compile > 50% of the operators in the compiled model!")
    return PartitionPlan(
        ordered,
        arithmetic_total,
        fused,
        minimum_segment_size,
        single_fusion_ratio_threshold,
        fallback,
        warnings,
    )


def _why_nothing_on_neuron(
    infos: Sequence[NodeInfo], candidates: Sequence[Sequence[int]], minimum_segment_size: int
) -> str:
    """Say which rule left no operator for Neuron, and what the user can change."""
    alternative = "or compile for TargetDevice ml_c5, which runs the whole model on the CPU."
    unsupported = sorted({n.kind for n in infos if n.arithmetic and not n.supported})
    runs = [[infos[i] for i in c if infos[i].arithmetic] for c in candidates]
    largest = max(runs, key=len, default=[])
    if not largest:
        return (
            f"No operator of this model is on Neuron's supported list (not supported: {', '.join(unsupported)}). "
            f"Replace them with supported operators, {alternative}"
        )
    kinds = ", ".join(n.kind for n in largest)
    return (
        f"Rule minimum_segment_size={minimum_segment_size}: a Neuron subgraph needs at least "
        f"{minimum_segment_size} supported operators in a row, and the longest such run in this model has "
        f"{len(largest)} ({kinds}). Give the model more supported operators in a row (a Linear followed by a "
        f'ReLU is enough), compile with CompilerOptions "--minimum-segment-size {len(largest)}", {alternative}'
    )


def _order(segments: list[Segment], producer: Mapping[str, int], infos: Sequence[NodeInfo]) -> list[Segment]:
    owner = {n.index: k for k, s in enumerate(segments) for n in s.nodes}
    by_pos = {i: owner[info.index] for i, info in enumerate(infos)}
    deps: dict[int, set[int]] = {k: set() for k in range(len(segments))}
    for k, seg in enumerate(segments):
        for node in seg.nodes:
            for name in node.inputs:
                p = producer.get(name)
                if p is not None and by_pos[p] != k:
                    deps[k].add(by_pos[p])
    users: dict[int, set[int]] = {k: set() for k in deps}
    for k, ds in deps.items():
        for d in ds:
            users[d].add(k)
    ready = [(segments[k].nodes[0].index, k) for k, ds in deps.items() if not ds]
    heapq.heapify(ready)
    order: list[Segment] = []
    pending = {k: len(ds) for k, ds in deps.items()}
    while ready:
        _, k = heapq.heappop(ready)
        order.append(segments[k])
        for u in users[k]:
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, (segments[u].nodes[0].index, u))
    if len(order) != len(segments):  # convex clusters cannot form a cycle; guard anyway
        raise RuntimeError("partitioner produced a cyclic segment graph")
    return order


def _wire(
    segments: list[Segment],
    graph_inputs: set[str],
    graph_outputs: set[str],
    infos: Sequence[NodeInfo],
    producer: Mapping[str, int],
) -> None:
    owner = {name: s.name for s in segments for n in s.nodes for name in n.outputs}
    consumers: dict[str, set[str]] = {}
    for seg in segments:
        for node in seg.nodes:
            for name in node.inputs:
                consumers.setdefault(name, set()).add(seg.name)
    for seg in segments:
        seen: set[str] = set()
        for node in seg.nodes:
            for name in node.inputs:
                if name in seen or owner.get(name) == seg.name:
                    continue
                if name in graph_inputs or name in producer:
                    seg.inputs.append(name)
                    seen.add(name)
        for node in seg.nodes:
            for name in node.outputs:
                if name in graph_outputs or consumers.get(name, set()) - {seg.name}:
                    seg.outputs.append(name)
