"""End-to-end compiles of the seed workloads: CNN, BERT-like, DLRM, TTS, and unsupported operators."""

from __future__ import annotations

import json
import re
import tarfile
import time

import pytest
import torch

from neurondock_workers.compiler import (
    NothingOnNeuronError,
    OperatorNotImplementedError,
    TargetError,
    compile_model,
    load_compiled,
    read_manifest,
)

BUDGET = 0.25
ANALYZE_KEYS = [
    "percent_supported",
    "percent_supported_arithmetic",
    "supported_count",
    "total_count",
    "supported_count_arithmetic",
    "total_count_arithmetic",
    "supported_operators",
    "unsupported_operators",
    "operators",
    "operator_count",
]


def compile_(zoo_entry, tmp_path, options=None, target="ml_inf1"):
    path, config = zoo_entry
    return compile_model(path, config, target, options, tmp_path, measure_budget_s=BUDGET)


def segments(result, target):
    return [s for s in result.report["partition"]["segments"] if s["target"] == target]


def test_cnn_compiles_entirely_to_one_neuron_graph(compiled_cnn):
    report = compiled_cnn.report
    assert report["emulated"] is True and report["device"] == "emulated-inferentia-v1"
    assert list(report["analyze"]) == ANALYZE_KEYS
    assert report["analyze"]["percent_supported"] == 100.0
    assert report["analyze"]["operator_count"]["aten::_convolution"] == 20
    assert report["analyze"]["operator_count"]["aten::batch_norm"] == 20
    partition = report["partition"]
    assert partition["neuron_subgraphs"] == 1 and partition["cpu_segments"] == 0
    assert partition["percent_compiled"] == 100.0
    (graph,) = partition["segments"]
    assert graph["name"].startswith("_NeuronGraph$")
    assert graph["io_config"]["inputs"] == {"0:0": [[1, 3, 64, 64], "float32"]}
    assert graph["outputs"][0]["shape"] == [1, 10]


def test_cnn_compile_time_and_artifact(compiled_cnn):
    assert compiled_cnn.compile_seconds < 60  # the goal for a ResNet-18-class model
    with tarfile.open(compiled_cnn.artifact_path) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
        assert tar.extractfile("code/inference.py").read().startswith(b"def model_fn")
    assert {"model.pt", "manifest.json", "compile.log", "code/inference.py"} <= names
    assert any(n.startswith("neff/NeuronGraph_") and n.endswith(".neff.json") for n in names)
    assert manifest["emulated"] is True
    assert manifest["compiler"]["version"] == compiled_cnn.compiler_version
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["input"]["sha256"] and manifest["input"]["files"]["model.pth"]
    assert manifest["options"]["cast_mode"] == "fp32-cast-all"
    assert read_manifest(compiled_cnn.artifact_path).document["cache_key"] == compiled_cnn.cache_key


def test_cnn_log_uses_torch_neuron_line_formats(compiled_cnn):
    log = compiled_cnn.log_path.read_text().splitlines()
    assert "INFO:Neuron:100.00% of all operations (including primitives) (110 of 110) are supported" in log
    assert (
        "INFO:Neuron:All operators are compiled by neuron-cc "
        "(this does not guarantee that neuron-cc will successfully compile)"
    ) in log
    assert (
        "INFO:Neuron:Number of arithmetic operators (pre-compilation) before = 69, fused = 69, "
        "percent fused = 100.00%" in log
    )
    assert "INFO:Neuron:The neuron partitioner created 1 sub-graphs" in log
    assert any(
        line.startswith("INFO:Neuron:Compiling function _NeuronGraph$") and "with neuron-cc; log file is at" in line
        for line in log
    )
    status = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d [AP]M INFO \d+ \[root\]: Compiler status PASS$")
    assert any(status.match(line) for line in log)
    assert "INFO:Neuron: => aten::_convolution: 20" in log


def test_cnn_numerics_drift_is_bf16_sized_and_served(compiled_cnn, tmp_path):
    numerics = compiled_cnn.report["numerics"]
    drift = numerics["drift"]
    assert numerics["dtype"] == "bfloat16" and numerics["rounded_activations"] > 0
    # BF16 keeps 8 significant bits: drift is visible but small relative to the outputs.
    assert 0 < drift["max_abs_error"] < 0.05 * drift["reference_max_abs"]
    assert 0.999 < drift["cosine_similarity"] < 1.0
    execution = compiled_cnn.report["execution"]
    by_name = {c["name"]: c for c in execution["candidates"]}
    assert by_name["frozen"]["matches_emulated_numerics"] and by_name["frozen"]["max_abs_deviation"] == 0.0
    # FP32 is exactly one drift away: inside the envelope, but not the device numerics.
    assert not by_name["uncompiled"]["matches_emulated_numerics"]
    assert by_name["uncompiled"]["within_drift_envelope"]
    chosen = by_name[execution["selected"]]
    assert chosen["matches_emulated_numerics"] is execution["serves_device_numerics"]
    if not execution["serves_device_numerics"]:  # policy auto fell back because the casts cost time here
        assert execution["device_numerics_p50_ms"] > execution["uncompiled_p50_ms"] and "note" in execution
    with tarfile.open(compiled_cnn.artifact_path) as tar:
        tar.extractall(tmp_path, filter="data")
    module = load_compiled(tmp_path)
    torch.manual_seed(3)
    x = torch.randn(1, 3, 64, 64)
    original = torch.jit.load(str(tmp_path / "model.pt"))
    assert torch.equal(module(x), original(x)) or execution["selected"].endswith("optimize_for_inference")


def test_cnn_resources_follow_aws_rules(compiled_cnn):
    resources = compiled_cnn.report["resources"]
    assert resources["constant_bytes_after_cast"] < 0.6 * resources["constant_bytes_fp32"]
    assert resources["device_memory_per_replica_bytes"] < resources["device_memory_per_chip_bytes"]
    assert resources["suggested_pipeline_cores"] == 1  # 0.7M weights: 4 * round(0.7e6 / 2e7) = 0
    assert resources["static_shapes"]["inputs"] == [{"shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert resources["dynamic_dims"] == []


def test_cnn_projection_is_labelled_and_scales_with_cores(compiled_cnn):
    projection = compiled_cnn.report["projection"]
    inf1 = {row["instance_type"]: row for row in projection["inf1"]}
    assert all(row["label"] == "projected, not measured on Inferentia" for row in inf1.values())
    assert inf1["ml.inf1.24xlarge"]["throughput_per_s"] > 10 * inf1["ml.inf1.xlarge"]["throughput_per_s"]
    assert inf1["ml.inf1.xlarge"]["cost_per_million_usd"] > 0
    assert projection["prices"]["as_of"] and "on-demand" in projection["prices"]["basis"]
    assert {row["instance_type"] for row in projection["g4dn"]} >= {"ml.g4dn.xlarge"}
    assert projection["c5"][0]["label"].startswith("projected from the CPU measurement")


def test_bert_embeddings_fall_back_to_cpu(zoo, tmp_path):
    result = compile_(zoo.bert(), tmp_path)
    report = result.report
    assert report["example_inputs"]["inputs"][0]["dtype"] == "int64"  # inferred from aten::embedding
    assert report["analyze"]["unsupported_operators"] == ["aten::embedding"]
    assert report["analyze"]["operator_count"]["aten::embedding"] == 3
    (neuron,) = segments(result, "neuron")
    assert neuron["operators"]["aten::linear"] == 10 and neuron["operators"]["aten::layer_norm"] == 5
    embedding = [
        seg["why_cpu"]["aten::embedding"] for seg in segments(result, "cpu") if "aten::embedding" in seg["why_cpu"]
    ]
    assert sum(e["count"] for e in embedding) == 3
    assert all("not supported on Inf1" in e["reason"] for e in embedding)
    log = result.log_path.read_text()
    assert (
        "INFO:Neuron:There are 3 ops of 1 different types in the TorchScript that are not compiled by "
        "neuron-cc: aten::embedding, (For more information see" in log
    )
    assert "INFO:Neuron: => aten::embedding: 3 [not supported]" in log
    assert all(t["p50_ms"] is not None for t in report["projection"]["cpu_segments_measured"])


def test_dlrm_tables_on_cpu_interaction_on_neuron(zoo, tmp_path):
    result = compile_(zoo.dlrm(), tmp_path)
    report = result.report
    dtypes = [i["dtype"] for i in report["example_inputs"]["inputs"]]
    assert dtypes == ["float32", "int64"]
    assert "aten::embedding_bag" in report["analyze"]["unsupported_operators"]
    neuron_ops = {k for seg in segments(result, "neuron") for k in seg["operators"]}
    assert {"aten::linear", "aten::bmm"} <= neuron_ops
    cpu_ops = {k for seg in segments(result, "cpu") for k in seg["operators"]}
    assert "aten::embedding_bag" in cpu_ops and "aten::bmm" not in cpu_ops
    assert report["numerics"]["drift"]["cosine_similarity"] > 0.999


def test_tts_acoustic_model(zoo, tmp_path):
    result = compile_(zoo.tts(), tmp_path, "--fast-math fp32-cast-matmult-fp16 no-fast-relayout")
    report = result.report
    neuron_ops = {k for seg in segments(result, "neuron") for k in seg["operators"]}
    assert {"aten::_convolution", "aten::lstm", "aten::linear"} <= neuron_ops
    assert report["numerics"]["dtype"] == "float16" and report["numerics"]["cast_scope"] == "matmult"
    assert report["resources"]["static_shapes"]["outputs"] == [{"shape": [1, 40, 48], "dtype": "float32"}]


def test_unsupported_operator_splits_the_model(zoo, tmp_path):
    result = compile_(zoo.gather(), tmp_path)
    kinds = [(s["target"], sorted(s["operators"])) for s in result.report["partition"]["segments"]]
    assert kinds == [
        ("neuron", ["aten::linear", "aten::relu"]),
        ("cpu", ["aten::gather"]),
        ("neuron", ["aten::linear", "aten::relu"]),
    ]
    assert result.report["partition"]["percent_compiled"] == 87.5


def test_unsupported_operator_without_fallback_fails(zoo, tmp_path):
    with pytest.raises(OperatorNotImplementedError) as info:
        compile_(zoo.gather(), tmp_path, {"fallback": False})
    assert info.value.failure_reason == (
        "ClientError: CompilationError: OperatorNotImplemented: The following operators are not implemented: "
        "{'aten::gather'}"
    )


def test_single_fusion_ratio_option(zoo, tmp_path):
    result = compile_(zoo.gather(), tmp_path, "--single-fusion-ratio-threshold 0.4")
    assert result.report["partition"]["neuron_subgraphs"] == 1
    reasons = [e["reason"] for s in segments(result, "cpu") for e in s["why_cpu"].values()]
    assert any("single_fusion_ratio_threshold=0.4" in r for r in reasons)


def test_nothing_on_neuron_fails_like_torch_neuron(zoo, tmp_path):
    with pytest.raises(NothingOnNeuronError) as info:
        compile_(zoo.gather_only(), tmp_path)
    assert info.value.failure_reason == (
        "ClientError: CompilationError: Unable to compile model for ml_inf1: No operations were successfully "
        "partitioned and compiled to neuron for this model - aborting trace! No operator of this model is on "
        "Neuron's supported list (not supported: aten::gather). Replace them with supported operators, or compile "
        "for TargetDevice ml_c5, which runs the whole model on the CPU."
    )
    log = (tmp_path / "compile.log").read_text()
    assert (
        "ERROR:Neuron:No operations were successfully partitioned and compiled to neuron for this model - "
        "aborting trace!"
    ) in log


def test_a_lone_linear_is_refused_naming_the_rule_and_what_to_change(save_model, tmp_path):
    # The README's first model was one Linear: one operator, below torch-neuron's minimum segment of two.
    path = save_model("linear", torch.nn.Linear(16, 4).eval(), (torch.randn(1, 16),))
    with pytest.raises(NothingOnNeuronError) as info:
        compile_((path, "[[1, 16]]"), tmp_path / "w")
    reason = info.value.failure_reason
    assert "aborting trace! Rule minimum_segment_size=2: a Neuron subgraph needs at least 2 supported" in reason
    assert "the longest such run in this model has 1 (aten::linear)" in reason
    assert 'compile with CompilerOptions "--minimum-segment-size 1"' in reason and "TargetDevice ml_c5" in reason
    # Each change it names works.
    assert compile_((path, "[[1, 16]]"), tmp_path / "a", "--minimum-segment-size 1").report["partition"]
    assert compile_((path, "[[1, 16]]"), tmp_path / "b", target="ml_c5").summary()["target"] == "ml_c5"


def test_c5_target_is_fp32_and_never_slower(zoo, tmp_path):
    result = compile_(zoo.cnn(), tmp_path, target="ml_c5")
    report = result.report
    assert report["emulated"] is True and report["device"] == "cpu" and report["partition"] is None
    assert report["numerics"]["drift"]["max_abs_error"] < 1e-4 * report["numerics"]["drift"]["reference_max_abs"]
    # The uncompiled model is a candidate, so the choice can only be faster (within timing noise).
    assert report["execution"]["speedup_vs_uncompiled"] >= 0.97
    assert "inf1" not in report["projection"]


@pytest.mark.parametrize("name", ["bert", "gather"])
def test_default_policy_is_never_slower(zoo, tmp_path, name):
    # Both are small enough that the per-op cost of the casts shows; "auto" must not let that through.
    execution = compile_(getattr(zoo, name)(), tmp_path).report["execution"]
    assert execution["policy"] == "auto"
    assert execution["speedup_vs_uncompiled"] >= 0.97
    assert not execution["slower_than_uncompiled"]
    chosen = next(c for c in execution["candidates"] if c["name"] == execution["selected"])
    assert chosen["within_drift_envelope"]


def test_fastest_policy_is_never_slower(zoo, tmp_path):
    result = compile_(zoo.bert(), tmp_path, "--execution-policy fastest")
    execution = result.report["execution"]
    assert execution["policy"] == "fastest"
    assert execution["speedup_vs_uncompiled"] >= 0.97
    assert not execution["slower_than_uncompiled"]


def test_unknown_target_is_refused(zoo, tmp_path):
    with pytest.raises(TargetError) as info:
        compile_(zoo.cnn(), tmp_path, target="ml_p3")
    assert info.value.api_code == "ValidationException"
    assert "ml_inf1, ml_c5" in info.value.message


def test_dynamic_batch_is_checked(zoo, tmp_path):
    result = compile_(zoo.cnn(), tmp_path, "--dynamic-batch-size")
    resources = result.report["resources"]
    assert resources["dynamic_dims"] == [0]
    assert resources["dynamic_batch_check"] == {"verified": True, "checked_batch": 2}


def test_model_with_fixed_batch_fails_dynamic_check(zoo, tmp_path):
    started = time.perf_counter()
    result = compile_(zoo.fixed_batch(), tmp_path, "--dynamic-batch-size")
    check = result.report["resources"]["dynamic_batch_check"]
    assert check["verified"] is False and "batch 8" in check["reason"]
    assert time.perf_counter() - started < 30
