"""Benchmark: how fast target tracking reacts to load, with AWS's timing and with the speed-up knob.

For each timing a fresh `neurondock up` serves a tiny model on one ml.c5.large; a target tracking
policy on SageMakerVariantInvocationsPerInstance (target 500 a minute, AWS's default cooldowns)
watches it; a paced load of 20 requests a second (1,200 a minute: three instances' worth) starts at
t = 0. Printed: t to the first scale-out activity (its StartTime) and t to the new instances serving
(DescribeEndpoint InService at the new count, which the reconciler reports only after the routing
flip), and the knob's figures as a ratio of AWS timing's, both measured in this run.

AWS's timing cannot beat its own rule: AlarmHigh needs 3 whole one-minute datapoints above the
target, so the first action comes 2 to 3 minutes (plus a flush and a second) after load starts,
depending on where in a minute it started (docs/autoscaling.md, "How fast"). The figure AWS users
report for the same policy is 3 minutes or more to the action and several more to serving
instances; that figure is theirs, not measured here.

``python -m pytest tests/benchmarks/test_bench_autoscaling.py -m benchmark -s``; never asserts times. The
default suite runs the same path with the knob in ``tests/e2e/test_cloudwatch_autoscaling.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.autoscaling import deploy, track_invocations, variant_target
from tests.support.load import InvokeLoad, signed_headers
from tests.support.platform import ACCESS_KEY, REGION, SECRET_KEY, Platform

WAIT = {"Delay": 0.5, "MaxAttempts": 600}


def _scale_out_timing(tmp: Path, env: dict[str, str], *, timeout: float) -> dict[str, float]:
    plat = Platform(tmp, extra_env=env)
    plat.start()
    try:
        sm, s3 = plat.client("sagemaker"), plat.client("s3")
        aas = plat.client("application-autoscaling")
        s3.create_bucket(Bucket="bench")
        name = deploy(sm, s3, "bench", tmp, wait=WAIT)
        target = variant_target(name)
        aas.register_scalable_target(**target, MinCapacity=1, MaxCapacity=3)
        track_invocations(aas, target, 500.0, name="invocations")
        body = json.dumps([[0.1] * 16]).encode()
        path = f"/endpoints/{name}/invocations"
        headers = signed_headers(plat.url, REGION, ACCESS_KEY, SECRET_KEY, path, body, "application/json")
        out: dict[str, float] = {}
        start_wall = dt.datetime.now(dt.UTC)
        with InvokeLoad(plat.port, path, body, headers, threads=4, rate=20) as load:
            started = load.started_at
            deadline = started + timeout
            while time.monotonic() < deadline and "serving" not in out:
                if "action" not in out:
                    found: list[dict[str, Any]] = aas.describe_scaling_activities(
                        ServiceNamespace="sagemaker", ResourceId=target["ResourceId"]
                    )["ScalingActivities"]
                    if found:
                        out["action"] = (found[-1]["StartTime"] - start_wall).total_seconds()
                        out["offset_in_minute"] = start_wall.second + start_wall.microsecond / 1e6
                else:
                    described = sm.describe_endpoint(EndpointName=name)
                    variant = described["ProductionVariants"][0]
                    if described["EndpointStatus"] == "InService" and variant["CurrentInstanceCount"] > 1:
                        out["serving"] = time.monotonic() - started
                time.sleep(0.25)
        out["failed"] = float(sum(n for status, n in load.statuses.items() if status != 200) + len(load.errors))
        return out
    finally:
        plat.stop()


def _report(label: str, got: dict[str, float]) -> None:
    nan = float("nan")
    print(
        f"\n[bench-autoscaling] {label}: load start -> first scale-out action {got.get('action', nan):.1f} s, "
        f"-> new instances serving {got.get('serving', nan):.1f} s (load began "
        f"{got.get('offset_in_minute', nan):.0f} s into a minute; {got['failed']:.0f} failed invocations)",
        flush=True,
    )


@pytest.mark.benchmark
@pytest.mark.timeout(1200)
def test_time_from_load_to_scaled_out(tmp_path_factory):
    aws = _scale_out_timing(tmp_path_factory.mktemp("aws-timing"), {}, timeout=420)
    _report("AWS's timing (defaults)", aws)
    fast = _scale_out_timing(
        tmp_path_factory.mktemp("knob"),
        {"NEURONDOCK_SCALING_SPEEDUP": "10", "NEURONDOCK_METRICS_FLUSH_SECONDS": "1"},
        timeout=120,
    )
    _report("speed-up knob 10x, 1 s flush", fast)
    if "serving" in aws and "serving" in fast:
        print(
            f"[bench-autoscaling] knob / AWS timing: action {fast['action'] / aws['action']:.2f}, "
            f"serving {fast['serving'] / aws['serving']:.2f}; AWS's own rule puts the action 120-180 s after load "
            "starts (3 whole one-minute datapoints) plus one flush and a second; the goal was under 90 s"
        )
    assert "action" in aws and "action" in fast
