"""The partitioner on hand-built graphs: convexity, minimum segment size, single-fusion ratio, fallback."""

from __future__ import annotations

import pytest

from neurondock_workers.compiler import NothingOnNeuronError, OperatorNotImplementedError
from neurondock_workers.compiler._analysis import NodeInfo
from neurondock_workers.compiler._partition import CPU, NEURON, partition


def graph(*spec: tuple[str, str, list[str]]) -> list[NodeInfo]:
    """spec: (output name, kind, input names); kinds ending in '!' are unsupported."""
    nodes = []
    for index, (name, kind, inputs) in enumerate(spec):
        supported = not kind.endswith("!")
        kind = kind.rstrip("!")
        nodes.append(
            NodeInfo(
                index=index,
                kind=kind,
                key=name,
                supported=supported,
                arithmetic=kind.startswith("aten::"),
                inputs=inputs,
                outputs=[name],
                scope="",
                reason=None if supported else f"{kind} unsupported",
            )
        )
    return nodes


def targets(plan):
    return {n.key: seg.target for seg in plan.segments for n in seg.nodes}


def test_a_path_through_the_cpu_splits_the_neuron_graph():
    # a -> b -> gather(cpu) -> d, and a -> d directly: merging a,b with d would make a cycle through the CPU.
    nodes = graph(
        ("a", "aten::linear", ["x"]),
        ("b", "aten::relu", ["a"]),
        ("g", "aten::gather!", ["b"]),
        ("d", "aten::add", ["g", "a"]),
        ("e", "aten::relu", ["d"]),
    )
    plan = partition(nodes, ["x"], ["e"])
    neuron = plan.neuron_segments
    assert [sorted(n.key for n in s.nodes) for s in neuron] == [["a", "b"], ["d", "e"]]
    assert [s.name for s in plan.segments] == ["_NeuronGraph$0", "cpu$2", "_NeuronGraph$3"]
    assert neuron[1].inputs == ["g", "a"]
    assert neuron[0].outputs == ["a", "b"]


def test_segments_below_the_minimum_stay_on_cpu_with_a_reason():
    nodes = graph(
        ("a", "aten::relu", ["x"]),
        ("g", "aten::gather!", ["a"]),
        ("b", "aten::linear", ["g"]),
        ("c", "aten::relu", ["b"]),
    )
    plan = partition(nodes, ["x"], ["c"])
    assert targets(plan) == {"a": CPU, "g": CPU, "b": NEURON, "c": NEURON}
    cpu = plan.cpu_segments[0]
    assert "fewer than minimum_segment_size=2" in cpu.cpu_reasons["a"]
    assert cpu.cpu_reasons["g"] == "aten::gather unsupported"
    with pytest.raises(NothingOnNeuronError) as info:
        partition(nodes, ["x"], ["c"], minimum_segment_size=3)
    assert "Rule minimum_segment_size=3" in info.value.message
    assert "the longest such run in this model has 2 (aten::linear, aten::relu)" in info.value.message


def test_single_fusion_ratio_keeps_only_the_dominant_subgraph():
    nodes = graph(
        ("a", "aten::linear", ["x"]),
        ("b", "aten::relu", ["a"]),
        ("g", "aten::gather!", ["b"]),
        ("c", "aten::linear", ["g"]),
        ("d", "aten::relu", ["c"]),
        ("e", "aten::linear", ["d"]),
        ("f", "aten::relu", ["e"]),
    )
    both = partition(nodes, ["x"], ["f"])  # largest holds 4/7 = 57% <= 60%: both compile
    assert len(both.neuron_segments) == 2
    one = partition(nodes, ["x"], ["f"], single_fusion_ratio_threshold=0.5)
    assert [s.name for s in one.neuron_segments] == ["_NeuronGraph$3"]
    assert "only it is compiled" in one.cpu_segments[0].cpu_reasons["a"]


def test_nothing_on_neuron_aborts_with_torch_neurons_message():
    nodes = graph(("g", "aten::gather!", ["x"]), ("r", "aten::relu", ["g"]))
    with pytest.raises(NothingOnNeuronError) as info:
        partition(nodes, ["x"], ["r"])
    assert (
        "No operations were successfully partitioned and compiled to neuron for this model - aborting trace! "
        "Rule minimum_segment_size=2"
    ) in info.value.failure_reason
    # With nothing supported at all, the reason names the unsupported operators instead.
    with pytest.raises(NothingOnNeuronError) as info:
        partition(graph(("g", "aten::gather!", ["x"])), ["x"], ["g"])
    assert "No operator of this model is on Neuron's supported list (not supported: aten::gather)" in str(info.value)


def test_fallback_off_names_the_unsupported_operators():
    nodes = graph(("a", "aten::linear", ["x"]), ("b", "aten::relu", ["a"]), ("g", "aten::embedding!", ["b"]))
    with pytest.raises(OperatorNotImplementedError) as info:
        partition(nodes, ["x"], ["g"], fallback=False)
    assert info.value.message.endswith(
        "OperatorNotImplemented: The following operators are not implemented: {'aten::embedding'}"
    )


def test_low_coverage_warns_like_torch_neuron():
    nodes = graph(
        ("a", "aten::linear", ["x"]),
        ("b", "aten::relu", ["a"]),
        ("g1", "aten::gather!", ["b"]),
        ("g2", "aten::gather!", ["g1"]),
        ("g3", "aten::gather!", ["g2"]),
    )
    plan = partition(nodes, ["x"], ["g3"])
    assert plan.percent_fused == 40.0
    assert plan.warnings == ["torch.neuron.trace was unable to compile > 50% of the operators in the compiled model!"]


def test_independent_branches_fuse_into_one_subgraph():
    nodes = graph(
        ("a", "aten::linear", ["x"]),
        ("b", "aten::linear", ["x"]),
        ("c", "aten::add", ["a", "b"]),
    )
    plan = partition(nodes, ["x"], ["c"])
    assert len(plan.segments) == 1 and plan.segments[0].arithmetic_ops == 3
