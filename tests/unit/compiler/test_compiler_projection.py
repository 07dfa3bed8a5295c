"""Projection: calibration against AWS's Inf1 tables, AWS's sizing rules, cost per million inferences."""

from __future__ import annotations

import pytest

from neurondock_workers.compiler._profile import reference_profile
from neurondock_workers.compiler._projection import (
    PROJECTED,
    calibration,
    core_model,
    cost_per_million,
    project_gpu,
    project_inf1,
    stage_time,
)
from neurondock_workers.compiler._resources import suggested_batch_size, suggested_pipeline_cores

# The rows the issue names: BERT-base at batch 1 and 6, DistilBERT at 8, ResNet-50 at 5.
REQUIRED = ("bert-base-cased-b1", "bert-base-uncased-b6", "distilbert-base-b8", "resnet50-fp32-b5")


def test_required_benchmarks_within_25_percent():
    rows = {r["benchmark"]: r for r in calibration()["rows"]}
    for key in REQUIRED:
        assert abs(rows[key]["throughput_residual_pct"]) <= 25.0, rows[key]
    assert abs(rows["bert-base-cased-b1"]["latency_residual_pct"]) <= 25.0


def test_calibration_publishes_every_residual():
    cal = calibration()
    assert cal["label"] == PROJECTED
    assert cal["within_25pct"] >= cal["compared"] - 1
    assert all(r["throughput_residual_leave_one_out_pct"] is not None for r in cal["rows"])
    params = cal["fitted_parameters"]
    assert 0 < params["eta_gemm"] < 1 and 0 < params["eta_conv"] < 1 and 0 <= params["overlap"] <= 1


def test_aws_batch_size_rule_reproduces_the_worked_examples():
    # neuroncore-batching.rst: ResNet-50 (7.8 GFLOPs, 25M params) -> 5; BERT-Large seq128 (77.3, 302M) -> 6.
    assert suggested_batch_size(7.8e9, 25e6) == 5
    assert suggested_batch_size(77.3e9, 302e6) == 6


def test_aws_pipeline_rule():
    assert suggested_pipeline_cores(85e6) == 16  # BERT-base: 4 * round(4.25)
    assert suggested_pipeline_cores(5e6) == 1
    assert suggested_pipeline_cores(340e6) == 64


def test_cost_formula_matches_aws_table_arithmetic():
    # ResNet-50 at 921.5/s on inf1.xlarge: $0.069 per million on-demand, $0.033 at the RI-effective rate.
    assert cost_per_million(0.228, 921.5) == pytest.approx(0.0687, abs=1e-4)
    assert cost_per_million(0.110, 921.5) == pytest.approx(0.0332, abs=1e-4)
    assert cost_per_million(0.228, 0) is None


def test_g4dn_projection_reproduces_its_anchor():
    (xlarge, *_) = project_gpu(reference_profile("bert-base", 1), 1)
    assert xlarge["cost_per_million_usd"] == pytest.approx(0.20, rel=0.01)


def test_batching_raises_throughput_and_latency():
    m = core_model()
    one, six = reference_profile("bert-base", 1), reference_profile("bert-base", 6)
    assert stage_time(six, m) > stage_time(one, m)
    b1 = project_inf1([one], 0.0, batch=1, pipeline_cores=1)[0]
    b6 = project_inf1([six], 0.0, batch=6, pipeline_cores=1)[0]
    assert b6["throughput_per_s"] > 2 * b1["throughput_per_s"]
    assert b6["latency_ms"] > b1["latency_ms"]


def test_pipeline_that_does_not_fit_is_reported():
    rows = project_inf1([reference_profile("bert-base", 1)], 0.0, batch=1, pipeline_cores=16)
    by_name = {r["instance_type"]: r for r in rows}
    assert by_name["ml.inf1.xlarge"]["fits"] is False and "needs 16 NeuronCores" in by_name["ml.inf1.xlarge"]["reason"]
    assert by_name["ml.inf1.6xlarge"]["fits"] is True and by_name["ml.inf1.6xlarge"]["replicas"] == 1


def test_cpu_segments_slow_the_projection():
    profile = reference_profile("bert-base", 1)
    fast = project_inf1([profile], 0.0, batch=1, pipeline_cores=1)[0]
    slow = project_inf1([profile], 0.005, batch=1, pipeline_cores=1)[0]
    assert slow["latency_ms"] == pytest.approx(fast["latency_ms"] + 5.0, abs=0.01)
