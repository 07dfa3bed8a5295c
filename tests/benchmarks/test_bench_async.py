"""Benchmark: what the async path costs beside InvokeEndpoint, measured on one endpoint in one run.

One async endpoint (MaxConcurrentInvocationsPerInstance 4, one ml.c5.large) serves an echo handler;
neurondock also answers InvokeEndpoint on it, which is the baseline. Printed, as ratios to the
baseline's p50: the InvokeEndpointAsync acknowledgement (the 202: headers checked, a row committed,
the task sent), one request's time from the call to its output object being readable (polled every
5 ms), and the wall time of a burst of requests queued at once against the same number of
InvokeEndpoint calls made one after another.

``python -m pytest tests/benchmarks/test_bench_async.py -m benchmark -s``; never asserts times.
"""

from __future__ import annotations

import statistics
import time

import pytest

from tests.e2e.test_async_inference import BUCKET, deploy_async, split
from tests.support import services
from tests.support.platform import Platform

pytestmark = pytest.mark.benchmark
SEQUENTIAL = 30
BURST = 40


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _readable(s3, uri: str, timeout: float = 60.0) -> None:
    bucket, key = split(uri)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return
        except s3.exceptions.ClientError:
            time.sleep(0.005)
    raise AssertionError(f"{uri} was not written within {timeout} s")


@pytest.mark.parametrize("backend", ["sqlite-embedded", pytest.param("postgres-redis", marks=pytest.mark.postgres)])
def test_async_costs_beside_invoke_endpoint(tmp_path, backend):
    if backend == "postgres-redis":
        if not (services.postgres_available() and services.redis_available()):
            pytest.skip("PostgreSQL or Redis is not reachable")
        with services.fresh_postgres_database() as url:
            _run(Platform(tmp_path / "nd", database_url=url, broker_url=services.fresh_redis_url()), tmp_path, backend)
    else:
        _run(Platform(tmp_path / "nd"), tmp_path, backend)


def _run(plat: Platform, tmp_path, backend: str) -> None:
    plat.start()
    try:
        sm, rt, s3 = plat.client("sagemaker"), plat.client("sagemaker-runtime"), plat.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        name = deploy_async(plat, (sm, rt, s3), tmp_path, per_instance=4, topics=False)
        body = b"hello"
        for _ in range(3):  # warm the replica, the worker's router and its S3 client
            rt.invoke_endpoint(EndpointName=name, Body=body)
            _readable(s3, rt.invoke_endpoint_async(EndpointName=name, Body=body)["OutputLocation"])

        sync = []
        for _ in range(SEQUENTIAL):
            started = time.perf_counter()
            rt.invoke_endpoint(EndpointName=name, Body=body)["Body"].read()
            sync.append(time.perf_counter() - started)
        accept, complete = [], []
        for _ in range(SEQUENTIAL):
            started = time.perf_counter()
            sent = rt.invoke_endpoint_async(EndpointName=name, Body=body)
            accept.append(time.perf_counter() - started)
            _readable(s3, sent["OutputLocation"])
            complete.append(time.perf_counter() - started)

        started = time.perf_counter()
        for _ in range(BURST):
            rt.invoke_endpoint(EndpointName=name, Body=body)["Body"].read()
        sync_burst = time.perf_counter() - started
        started = time.perf_counter()
        burst = [rt.invoke_endpoint_async(EndpointName=name, Body=body)["OutputLocation"] for _ in range(BURST)]
        queued = time.perf_counter() - started
        for uri in burst:
            _readable(s3, uri)
        async_burst = time.perf_counter() - started
    finally:
        plat.stop()

    base = _p50(sync)
    print(f"\n== {backend}: async inference vs InvokeEndpoint on one endpoint ({SEQUENTIAL} sequential calls each) ==")
    print(f"InvokeEndpoint round trip             p50 {base * 1e3:8.2f} ms   (baseline)")
    print(f"InvokeEndpointAsync 202               p50 {_p50(accept) * 1e3:8.2f} ms   x{_p50(accept) / base:.2f}")
    print(f"InvokeEndpointAsync to readable output p50 {_p50(complete) * 1e3:8.2f} ms   x{_p50(complete) / base:.2f}")
    print(
        f"burst of {BURST}: queued in {queued:.2f} s, all outputs readable after {async_burst:.2f} s; "
        f"{BURST} InvokeEndpoint calls one after another {sync_burst:.2f} s (x{async_burst / sync_burst:.2f})"
    )
