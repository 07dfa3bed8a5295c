"""Benchmark: what the demand-sized standby pool costs a second endpoint, and what it saves in memory.

By default the host agent keeps no standby interpreter while it serves a replica
(docs/runtime.md, "Start-up"): a second endpoint's replica starts cold. With
NEURONDOCK_STANDBY_WHILE_SERVING=1 it keeps one, as before, and the second endpoint starts warm. One
platform of each, one after the other: ResNet-18 deployed and answered, the tree left to go quiet,
its memory read, then further endpoints of the same model created one at a time (each deleted before
the next, the first still serving) and CreateEndpoint → InService timed. Prints the figures; asserts
only that each start was as warm or cold as its policy says.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from pathlib import Path

import pytest

from tests.benchmarks.procs import memory_by_process, memory_mb, settle, tree
from tests.benchmarks.test_bench_dataplane import IMAGE
from tests.support.platform import Platform, running_platform
from tests.support.torch_models import pack_model, resnet18

ROUNDS = int(os.environ.get("NEURONDOCK_SECOND_ROUNDS", "2"))
WARM_LINE = "starting from a standby interpreter"


def _archive(tmp: Path) -> Path:
    import torch

    net = torch.jit.trace(resnet18().eval(), torch.randn(1, 3, 224, 224))
    return pack_model(tmp / "model.tar.gz", net, model_name="model.pt")


def _deploy(platform: Platform, bucket: str, name: str) -> float:
    sm = platform.client("sagemaker")
    container = {"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/{name}/model.tar.gz"}
    sm.create_model(ModelName=name, PrimaryContainer=container)
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    start = time.perf_counter()
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    while (status := sm.describe_endpoint(EndpointName=name)["EndpointStatus"]) == "Creating":
        time.sleep(0.02)  # this measurement's poll interval, not a readiness stand-in
    assert status == "InService", status
    return time.perf_counter() - start


def _started_warm(platform: Platform) -> int:
    logs = platform.data_dir.glob("replicas/*/replica.log")
    return sum(p.read_text(errors="replace").count(WARM_LINE) for p in logs)


@pytest.mark.benchmark
@pytest.mark.parametrize("while_serving", [False, True], ids=["by-demand", "while-serving"])
def test_a_second_endpoint_cold_and_warm(tmp_path_factory, tmp_path, while_serving):
    env = {"NEURONDOCK_STANDBY_WHILE_SERVING": "1" if while_serving else "0"}
    archive = _archive(tmp_path)
    label = "while serving" if while_serving else "by demand"
    load = os.getloadavg()[0]
    for platform in running_platform(tmp_path_factory.mktemp("nd-second"), extra_env=env):
        assert platform.process is not None
        root = platform.process.pid
        s3, rt = platform.client("s3"), platform.client("sagemaker-runtime")
        bucket = f"second-{uuid.uuid4().hex[:6]}"
        s3.create_bucket(Bucket=bucket)
        names = ["first"] + [f"next-{i}" for i in range(ROUNDS)]
        for name in names:
            s3.upload_file(str(archive), bucket, f"{name}/model.tar.gz")
        first = _deploy(platform, bucket, "first")
        body = json.dumps([[[[0.0] * 224] * 224] * 3])
        rt.invoke_endpoint(EndpointName="first", ContentType="application/json", Body=body)["Body"].read()
        settle(root)
        rss, pss = memory_mb(tree(root))
        by_process = memory_by_process(root)
        seconds, warm = [], []
        for name in names[1:]:
            settle(root)
            before = _started_warm(platform)
            seconds.append(_deploy(platform, bucket, name))
            warm.append(_started_warm(platform) - before)
            platform.client("sagemaker").delete_endpoint(EndpointName=name)
        print(
            f"\n[benchmark] standby {label}: first endpoint → InService {first:.2f} s; once quiet with it "
            f"serving RSS / PSS {rss:.0f} / {pss:.0f} MB ({by_process})\n"
            f"[benchmark] standby {label}: a second endpoint CreateEndpoint → InService "
            f"{', '.join(f'{s:.2f}' for s in seconds)} s (median {statistics.median(seconds):.2f}), "
            f"warm starts {sum(warm)} of {len(warm)}; load {load:.2f} → {os.getloadavg()[0]:.2f}"
        )
        assert warm == [1 if while_serving else 0] * ROUNDS
