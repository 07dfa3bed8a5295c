"""Benchmark: CreateEndpoint → InService, and InvokeEndpoint latency beside the in-process model.

Prints figures measured in this run; asserts only that they were measured. Run the full version with
``python -m pytest tests/benchmarks -m benchmark -s``; the default suite runs a quick smoke.
"""

from __future__ import annotations

import io
import os
import statistics
import time
import uuid

import pytest

from tests.support.platform import Platform
from tests.support.torch_models import pack_model, tiny_mlp

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
FULL = os.environ.get("NEURONDOCK_BENCH_FULL") == "1"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    plat = Platform(tmp_path_factory.mktemp("nd-bench"))
    plat.start()
    yield plat
    plat.stop()


@pytest.mark.parametrize("mode", [pytest.param("smoke"), pytest.param("full", marks=pytest.mark.benchmark)])
def test_deploy_and_invoke_latency(platform, tmp_path, mode):
    import numpy as np
    import torch

    torch.set_num_threads(1)
    deploys = 5 if mode == "full" else 1
    invokes = 2000 if mode == "full" else 100
    sm, rt, s3 = platform.client("sagemaker"), platform.client("sagemaker-runtime"), platform.client("s3")
    bucket = f"bench-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    model = tiny_mlp()
    s3.upload_file(str(pack_model(tmp_path / "m.tar.gz", model)), bucket, "m/model.tar.gz")
    sm.create_model(
        ModelName="bench", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/m/model.tar.gz"}
    )
    sm.create_endpoint_config(
        EndpointConfigName="bench",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "bench",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.c5.large",
            }
        ],
    )

    to_service = []
    name = ""
    for i in range(deploys):
        name = f"bench-{mode}-{i}"
        start = time.perf_counter()
        sm.create_endpoint(EndpointName=name, EndpointConfigName="bench")
        while sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Creating":
            time.sleep(0.02)  # the poll interval of this measurement, not a readiness stand-in
        assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
        to_service.append(time.perf_counter() - start)
        if i < deploys - 1:
            sm.delete_endpoint(EndpointName=name)

    x = np.random.default_rng(0).standard_normal((1, 16)).astype("float32")
    buf = io.BytesIO()
    np.save(buf, x)
    body = buf.getvalue()
    for _ in range(50):
        rt.invoke_endpoint(EndpointName=name, ContentType="application/x-npy", Accept="application/x-npy", Body=body)
    served, overhead = [], []
    for _ in range(invokes):
        start = time.perf_counter()
        resp = rt.invoke_endpoint(
            EndpointName=name, ContentType="application/x-npy", Accept="application/x-npy", Body=body
        )
        resp["Body"].read()
        served.append((time.perf_counter() - start) * 1e3)
        overhead.append(int(resp["ResponseMetadata"]["HTTPHeaders"].get("x-neurondock-overhead-us", "0")) / 1e3)
    tensor = torch.from_numpy(x)
    local = []
    with torch.inference_mode():
        for _ in range(50):
            model(tensor)
        for _ in range(invokes):
            start = time.perf_counter()
            out = model(torch.from_numpy(np.load(io.BytesIO(body))))
            out_buf = io.BytesIO()
            np.save(out_buf, out.numpy())
            local.append((time.perf_counter() - start) * 1e3)

    p50, p99 = _pct(served, 0.5), _pct(served, 0.99)
    l50, l99 = _pct(local, 0.5), _pct(local, 0.99)
    print(
        f"\n[benchmark:{mode}] CreateEndpoint -> InService: median {statistics.median(to_service):.2f} s "
        f"(min {min(to_service):.2f}, max {max(to_service):.2f}, n={deploys}; goal <= 5 s; SageMaker takes minutes)\n"
        f"[benchmark:{mode}] InvokeEndpoint via boto3 (tiny MLP, NPY, n={invokes}): "
        f"p50 {p50:.3f} ms, p99 {p99:.3f} ms\n"
        f"[benchmark:{mode}] same model in-process (decode+run+encode):        p50 {l50:.3f} ms, p99 {l99:.3f} ms\n"
        f"[benchmark:{mode}] served/in-process ratio p50 {p50 / l50:.1f}x, difference p50 {p50 - l50:.3f} ms, "
        f"p99 {p99 - l99:.3f} ms\n"
        f"[benchmark:{mode}] server-side overhead (x-neurondock-overhead-us): p50 {_pct(overhead, 0.5):.3f} ms, "
        f"p99 {_pct(overhead, 0.99):.3f} ms"
    )
    assert len(served) == invokes and all(v > 0 for v in served)
    sm.delete_endpoint(EndpointName=name)
