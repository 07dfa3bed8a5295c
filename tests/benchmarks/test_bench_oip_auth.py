"""Benchmark: what a bearer token costs the data plane beside SigV4, measured side by side in one run.

Prints the server-side OverheadLatency (``x-neurondock-overhead-us``: everything but the replica round
trip) p50/p99 of ``POST /endpoints/<name>/invocations`` and ``POST /v2/models/<name>/infer`` for a tiny
MLP at concurrency 1, signed with SigV4 (headers precomputed once) and with ``Authorization: Bearer``,
in alternating blocks so both see the same machine load. A token's check runs off the event loop (its
lookups may read the database), SigV4's on it when the key is cached. Never asserts absolute times.

``python -m pytest tests/benchmarks/test_bench_oip_auth.py -m benchmark -s``
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import pytest

from tests.benchmarks.test_bench_dataplane import _deploy, npy, pct
from tests.support.platform import ACCESS_KEY, REGION, SECRET_KEY, Platform, running_platform
from tests.support.torch_models import tiny_mlp

pytestmark = pytest.mark.benchmark
BLOCK = 250
BLOCKS = 8


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    yield from running_platform(tmp_path_factory.mktemp("bench-oip-auth"))


def _signed(platform: Platform, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """SigV4 headers computed once; the server accepts them for 15 minutes."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=platform.url + path, data=body, headers=dict(headers))
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
    return dict(request.headers.items())


def _overheads(platform: Platform, path: str, body: bytes, headers: dict[str, str], count: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=60)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    for _ in range(count):
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        out.append(float(response.getheader("x-neurondock-overhead-us") or 0))
    conn.close()
    return out


def test_bearer_token_overhead_beside_sigv4(platform, tmp_path):
    import numpy as np

    name = _deploy(platform, tmp_path, tiny_mlp(seed=3))
    token = platform.api_token()
    x = np.ones((1, 16), np.float32)
    runtime_body = npy(x)
    oip_body = json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": x.tolist()}]})
    doors: dict[str, tuple[str, bytes, dict[str, str]]] = {
        "runtime": (f"/endpoints/{name}/invocations", runtime_body, {"Content-Type": "application/x-npy"}),
        "oip": (f"/v2/models/{name}/infer", oip_body.encode(), {"Content-Type": "application/json"}),
    }
    results: dict[tuple[str, str], list[float]] = {}
    for door, (path, body, base) in doors.items():
        schemes: dict[str, dict[str, Any]] = {
            "sigv4": _signed(platform, path, body, base),
            "bearer": {**base, "Authorization": f"Bearer {token}"},
        }
        for headers in schemes.values():
            _overheads(platform, path, body, headers, 100)  # warm-up: connections, caches
        for _ in range(BLOCKS):
            for scheme, headers in schemes.items():
                results.setdefault((door, scheme), []).extend(_overheads(platform, path, body, headers, BLOCK))

    print(f"\n== OverheadLatency, tiny MLP, c=1, {BLOCK * BLOCKS} calls each (µs; n>2ms: calls over 2 ms) ==")

    def line(values: list[float]) -> str:
        return f"p50 {pct(values, 0.5):6.0f} p99 {pct(values, 0.99):6.0f} n>2ms {sum(v > 2000 for v in values):3d}"

    for door in doors:
        sig, bearer = results[(door, "sigv4")], results[(door, "bearer")]
        ratio = f"p50 {pct(bearer, 0.5) / pct(sig, 0.5):.2f} p99 {pct(bearer, 0.99) / pct(sig, 0.99):.2f}"
        print(f"{door:8s} sigv4 {line(sig)} | bearer {line(bearer)} | bearer/sigv4 {ratio}")
