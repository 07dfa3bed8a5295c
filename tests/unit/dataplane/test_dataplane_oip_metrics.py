"""OIP v2, throttling, metrics and the hot-path SigV4 check, with replicas played by fakes."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import struct
from typing import Any

import numpy as np
import pytest
from tests.conftest import ACCESS_KEY, ACCOUNT_ID, SECRET_KEY, sign
from tests.unit.dataplane.fakes import StaticTable, asgi_call

from neurondock_platform import sigv4
from neurondock_platform.api.auth import CredentialCache
from neurondock_platform.dataplane import oip
from neurondock_platform.dataplane.auth import IncomingRequest, SigV4Authenticator
from neurondock_platform.dataplane.metrics import MetricsCollector, MetricsFlusher
from neurondock_platform.dataplane.oip import OipApp
from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, VariantRoute
from neurondock_platform.dataplane.runtime import RuntimeApp
from neurondock_platform.errors import AuthError
from neurondock_platform.models import EndpointStatus


class DoublingReplica:
    """Decodes the NPY request like the default handler and answers 2·x as NPY; or plays a full queue."""

    def __init__(self, full: set[str] | None = None, status: int = 200) -> None:
        self.full = full or set()
        self.status = status
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, address, meta, body, timeout):
        self.calls.append((address, meta))
        if meta["op"] == "metadata":
            inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
            return {"status": 200, "platform": "pytorch_torchscript", "inputs": inputs, "outputs": []}, b""
        if address in self.full:
            return {"status": 429, "message": "NRT_QUEUE_FULL", "queue_depth": 4, "queue_limit": 4}, b""
        if self.status != 200:
            return {"status": self.status, "message": "bad input\nTraceback ..."}, b""
        x = np.load(io.BytesIO(body), allow_pickle=False)
        out = io.BytesIO()
        np.save(out, (x * 2).astype(np.float32) if x.dtype.kind != "S" else x)
        meta_out = {
            "status": 200,
            "content_type": "application/x-npy",
            "model_latency_us": 50,
            "queue_us": 5,
            "queue_depth": 0,
            "batch_size": 1,
            "batch_index": 0,
            "busy_us": 1000,
            "queue_limit": 32,
        }
        return meta_out, out.getvalue()

    async def close(self) -> None: ...


def endpoint(*variants: tuple[str, float, list[str]], status=EndpointStatus.IN_SERVICE) -> EndpointRoute:
    ids = iter(range(1, 100))
    return EndpointRoute(
        ACCOUNT_ID,
        "ep",
        status,
        tuple(
            VariantRoute(n, w, tuple(ReplicaRoute(next(ids), a, 1.5) for a in addrs), len(addrs))
            for n, w, addrs in variants
        ),
    )


@pytest.fixture
def plane(settings, session_factory):
    def make(routes, caller):
        runtime = RuntimeApp(
            settings, session_factory, CredentialCache(session_factory), caller=caller, table=StaticTable(routes)
        )
        return runtime, OipApp(runtime)

    return make


def call(app, method, path, body=b"", headers=None, signed=True, **sign_kw):
    hdrs = dict(headers or {})
    if signed:
        hdrs = sign(method, f"http://localhost{path}", body=body, headers=hdrs, **sign_kw)
    hdrs["Host"] = "localhost"
    return asyncio.run(asgi_call(app, method, path, body, hdrs))


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


X = np.arange(8, dtype=np.float32).reshape(2, 4) / 3


# --- OIP ----------------------------------------------------------------------------------------


def test_oip_json_infer_round_trips_through_npy(plane):
    replica = DoublingReplica()
    _, app = plane({(ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1"]))}, replica)
    request = {"id": "42", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}]}

    status, headers, body = call(app, "POST", "/v2/models/ep/infer", json.dumps(request).encode())

    assert status == 200, body
    doc = json.loads(body)
    assert doc["id"] == "42" and doc["model_name"] == "ep" and doc["model_version"] == "AllTraffic"
    (out,) = doc["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("output0", "FP32", [2, 4])
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(2, 4), X * 2, rtol=1e-6)
    sent = replica.calls[0][1]
    assert (sent["content_type"], sent["accept"]) == ("application/x-npy", "application/x-npy")
    assert "overhead;dur=" in headers["server-timing"]


def test_oip_binary_tensors_skip_json_both_ways(plane):
    replica = DoublingReplica()
    _, app = plane({(ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1"]))}, replica)
    raw = X.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}

    status, out_headers, body = call(app, "POST", "/v2/models/ep/infer", header + raw, headers)

    assert status == 200, body
    assert out_headers["content-type"] == "application/octet-stream"
    split = int(out_headers["inference-header-content-length"])
    doc = json.loads(body[:split])
    (out,) = doc["outputs"]
    assert out["name"] == "y" and out["parameters"]["binary_data_size"] == len(body) - split
    assert "data" not in out
    np.testing.assert_array_equal(np.frombuffer(body[split:], dtype="<f4").reshape(2, 4), X * 2)


def test_oip_int_bool_and_bytes_inputs_become_npy(plane):
    replica = DoublingReplica()
    _, app = plane({(ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1"]))}, replica)
    request = {"inputs": [{"name": "ids", "shape": [1, 3], "datatype": "INT64", "data": [[1, 2, 3]]}]}
    status, _, body = call(app, "POST", "/v2/models/ep/infer", json.dumps(request).encode())
    assert status == 200
    assert json.loads(body)["outputs"][0]["data"] == [2.0, 4.0, 6.0]

    strings = [b"hello", b"hi"]
    raw = b"".join(struct.pack("<I", len(s)) + s for s in strings)
    header = json.dumps(
        {
            "inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}],
        }
    ).encode()
    status, _, body = call(
        app, "POST", "/v2/models/ep/infer", header + raw, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 200, body
    out = json.loads(body)["outputs"][0]
    assert (out["datatype"], out["data"]) == ("BYTES", ["hello", "hi"])


def test_oip_versions_pin_variants_and_errors_follow_kserve(plane):
    replica = DoublingReplica()
    routes = {(ACCOUNT_ID, "ep"): endpoint(("a", 1.0, ["r:1"]), ("b", 0.0, ["r:2"]))}
    _, app = plane(routes, replica)
    request = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})

    status, _, body = call(app, "POST", "/v2/models/ep/versions/b/infer", request.encode())
    assert status == 200 and json.loads(body)["model_version"] == "b"
    assert replica.calls[-1][0] == "r:2"

    status, _, body = call(app, "POST", "/v2/models/ep/versions/zzz/infer", request.encode())
    assert status == 404 and "variants: a, b" in json.loads(body)["error"]
    status, _, body = call(app, "POST", "/v2/models/missing/infer", request.encode())
    assert status == 404 and "not found" in json.loads(body)["error"]
    bad = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2]}]})
    status, _, body = call(app, "POST", "/v2/models/ep/infer", bad.encode())
    assert status == 400 and "2 values for shape [2, 4]" in json.loads(body)["error"]
    two = json.dumps({"inputs": [json.loads(bad)["inputs"][0]] * 2})
    status, _, body = call(app, "POST", "/v2/models/ep/infer", two.encode())
    assert status == 400 and "one tensor" in json.loads(body)["error"]
    status, _, body = call(app, "POST", "/v2/models/ep/infer", request.encode(), signed=False)
    assert status == 403 and json.loads(body)["error"] == "Missing Authentication Token"
    status, _, body = call(app, "POST", "/v2/models/ep/infer", request.encode(), secret_key="nope")
    assert status == 403

    _, failing = plane(routes, DoublingReplica(status=400))
    status, _, body = call(failing, "POST", "/v2/models/ep/infer", request.encode())
    assert status == 400 and json.loads(body)["error"] == "The model failed with status 400: bad input"


def test_oip_health_metadata_and_readiness(plane):
    routes = {
        (ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1"])),
        (ACCOUNT_ID, "new"): EndpointRoute(ACCOUNT_ID, "new", EndpointStatus.CREATING, (VariantRoute("v", 1.0, ()),)),
    }
    _, app = plane(routes, DoublingReplica())

    assert call(app, "GET", "/v2/health/live", signed=False)[0] == 200
    status, _, body = call(app, "GET", "/v2/health/ready", signed=False)
    assert (status, json.loads(body)) == (200, {"ready": True})
    status, _, body = call(app, "GET", "/v2", signed=False)
    assert "binary_tensor_data" in json.loads(body)["extensions"]

    status, _, body = call(app, "GET", "/v2/models/ep/ready")
    assert (status, json.loads(body)) == (200, {"name": "ep", "ready": True})
    status, _, body = call(app, "GET", "/v2/models/new/ready")
    assert (status, json.loads(body)["ready"]) == (400, False)
    assert call(app, "GET", "/v2/models/ep/ready", signed=False)[0] == 403

    status, _, body = call(app, "GET", "/v2/models/ep")
    doc = json.loads(body)
    assert status == 200 and doc["name"] == "ep" and doc["versions"] == ["AllTraffic"]
    assert doc["platform"] == "pytorch_torchscript" and doc["inputs"][0]["shape"] == [-1, 4]
    status, _, body = call(app, "POST", "/v2/models/new/infer", b'{"inputs": []}')
    assert status == 400
    assert call(app, "GET", "/v2/nothing/here", signed=False)[0] == 404


def test_npy_header_matches_numpy_and_parse_reads_numpy_output():
    for array in (X, np.array([[True, False]]), np.arange(6, dtype=">i4").reshape(2, 3), np.zeros((0, 3))):
        ours = oip.npy_header(np.lib.format.dtype_to_descr(array.dtype), array.shape) + array.tobytes()
        np.testing.assert_array_equal(np.load(io.BytesIO(ours)), array)
        tensor = oip.parse_npy(npy(array))
        assert tensor.shape == array.shape
        assert oip.output_json_data(tensor) == array.reshape(-1).tolist()
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert oip.output_json_data(oip.parse_npy(npy(fortran))) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(oip.OipError):
        oip.parse_npy(b"not npy at all")


# --- throttling and metrics ----------------------------------------------------------------------


def invoke(app, body=b'{"x": 1}'):
    url = "http://localhost/endpoints/ep/invocations"
    signed = sign("POST", url, body=body, headers={"Content-Type": "application/json"})
    signed["Host"] = "localhost"
    return asyncio.run(asgi_call(app, "POST", "/endpoints/ep/invocations", body, signed))


def test_a_full_replica_sends_the_request_to_another_then_throttles(plane):
    replica = DoublingReplica(full={"r:1"})
    runtime, _ = plane({(ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1", "r:2"]))}, replica)
    for _ in range(4):
        status, _, body = invoke(runtime, npy(X))
        assert status == 200, body

    replica.full.add("r:2")
    status, headers, body = invoke(runtime, npy(X))
    assert status == 429
    assert headers["x-amzn-errortype"] == "ThrottlingException"
    assert "NRT_QUEUE_FULL: 4 of 4" in json.loads(body)["message"]
    text = runtime.metrics.render(runtime.router.outstanding).decode()
    assert 'InvocationsThrottled{account_id="123456789012",EndpointName="ep",VariantName="AllTraffic"} 1' in text


def test_a_draining_replica_hands_the_request_to_another(plane):
    class Draining(DoublingReplica):
        async def call(self, address, meta, body, timeout):
            if address == "r:1" and meta["op"] == "invoke":
                self.calls.append((address, meta))
                return {"status": 503, "message": "replica is shutting down", "retry": True}, b""
            return await super().call(address, meta, body, timeout)

    replica = Draining()
    runtime, _ = plane({(ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1", "r:2"]))}, replica)
    for _ in range(3):
        status, _, body = invoke(runtime, npy(X))
        assert status == 200, body
    assert {address for address, _ in replica.calls} <= {"r:1", "r:2"}


def test_botocore_retries_throttling_exception_in_every_retry_mode():
    # The reason for the code: standard/adaptive modes retry a 429 only with a throttling code.
    from botocore.retries import standard

    checker = standard.ThrottledRetryableChecker()
    assert "ThrottlingException" in checker._throttled_error_codes
    assert "ModelNotReadyException" not in checker._throttled_error_codes
    assert 429 not in standard.TransientRetryableChecker._TRANSIENT_STATUS_CODES


def test_metrics_count_invocations_latency_errors_and_render_prometheus(plane):
    replica = DoublingReplica()
    runtime, app = plane({(ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1", "r:2"]))}, replica)
    runtime.metrics.observe_routes(runtime.table.routes)
    for _ in range(3):
        assert invoke(runtime, npy(X))[0] == 200
    request = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert call(app, "POST", "/v2/models/ep/infer", request.encode())[0] == 200
    replica.status = 400
    assert invoke(runtime, npy(X))[0] == 424

    status, headers, body = asyncio.run(asgi_call(runtime.serve_metrics, "GET", "/metrics"))
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    labels = 'account_id="123456789012",EndpointName="ep",VariantName="AllTraffic"'
    assert f"Invocations{{{labels}}} 5" in text
    assert f"InvocationsPerInstance{{{labels}}} 2.5" in text  # two instances: each request adds 1/2
    assert f"Invocation4XXErrors{{{labels}}} 1" in text
    assert f"ModelLatency_count{{{labels}}} 5" in text
    assert f'OverheadLatency_bucket{{{labels},le="+Inf"}} 5' in text
    assert f"ModelSetupTime_sum{{{labels}}} 3000000" in text  # two replicas, 1.5 s each, in µs
    assert f'BatchSize_bucket{{{labels},le="1"}} 4' in text
    assert "# TYPE ModelLatency histogram" in text
    # Least-outstanding routing picks either replica; only the ones that answered 200 reported a limit.
    answered = {address.split(":")[1] for address, meta in replica.calls[:-1] if meta["op"] != "metadata"}
    for replica_id in ("1", "2"):
        limit = 32 if replica_id in answered else 0
        assert f'ReplicaQueueLimit{{{labels},replica="{replica_id}"}} {limit}' in text


def test_period_rows_flush_to_metric_points_and_read_back_as_series(plane, session_factory):
    from neurondock_platform.services import metrics as metric_service

    runtime, _ = plane({(ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1"]))}, DoublingReplica())
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=5)
    runtime.metrics.period_started = start.timestamp()
    for _ in range(4):
        assert invoke(runtime, npy(X))[0] == 200

    written = asyncio.run(MetricsFlusher(runtime.metrics, session_factory).flush())
    assert written > 0
    assert asyncio.run(MetricsFlusher(runtime.metrics, session_factory).flush()) == 1  # only utilization now

    end = start + dt.timedelta(minutes=1)
    with session_factory() as session:
        (invocations,) = metric_service.series(session, ACCOUNT_ID, "ep", "Invocations", start, end, 60)
        (latency,) = metric_service.series(session, ACCOUNT_ID, "ep", "ModelLatency", start, end, 60)
        (batch,) = metric_service.series(session, ACCOUNT_ID, "ep", "BatchSize", start, end, 60)
        utilization = metric_service.series(session, ACCOUNT_ID, "ep", "NeuronCoreUtilization", start, end, 60)
        names = metric_service.list_metrics(session, ACCOUNT_ID, "ep")
        with pytest.raises(Exception, match="multiple of 10"):
            metric_service.series(session, ACCOUNT_ID, "ep", "Invocations", start, end, 15)
    assert (invocations.sum, invocations.timestamp, invocations.unit) == (4, start, "Count")
    assert latency.sample_count == 4 and latency.unit == "Microseconds"
    assert latency.minimum is not None and latency.minimum <= latency.p50 <= latency.p99 <= latency.maximum
    assert batch.buckets == {"1": 4} and batch.to_dict()["Buckets"] == {"1": 4}
    assert utilization and 0 <= utilization[0].average <= 100
    assert ("OverheadLatency", "AllTraffic") in names


def test_collector_reservoir_percentiles():
    collector = MetricsCollector()
    key = (ACCOUNT_ID, "ep", "v")
    for value in range(1, 10001):
        collector.invocation(key, outcome="ok", instances=1, total_us=value + 100.0, model_us=float(value))
    rows = {r["metric"]: r for r in collector.take_period()}
    latency = rows["ModelLatency"]
    assert latency["count"] == 10000 and latency["minimum"] == 1 and latency["maximum"] == 10000
    assert 4000 < latency["p50"] < 6000 and latency["p99"] > 9000
    assert rows["OverheadLatency"]["p50"] == 100


# --- SigV4 on the hot path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["good", "bad-secret", "other-service", "missing-header", "query", "unknown-key", "skewed", "swapped-body"],
)
def test_fast_sigv4_agrees_with_the_reference_verifier(case, session_factory):
    body = b"\x93NUMPY payload"
    url = "http://localhost/endpoints/ep/invocations" + ("?a=b&c=d%20e" if case == "query" else "")
    kw: dict[str, Any] = {}
    if case == "bad-secret":
        kw["secret_key"] = "wrong"
    if case == "other-service":
        kw["service"] = "execute-api"
    if case == "unknown-key":
        kw["access_key"] = "AKNDNOTAKEY000000000"
    signed_headers = {"Content-Type": "application/x-npy"}
    if case == "swapped-body":
        # The declared payload hash is signed; the body that arrives is another one.
        signed_headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    headers = sign("POST", url, body=body, headers=signed_headers, **kw)
    headers["Host"] = "localhost"
    if case == "swapped-body":
        body = b"\x93NUMPY another payload"
    lower = {k.lower(): v for k, v in headers.items()}
    if case == "missing-header":
        del lower["content-type"]
    if case == "skewed":
        lower["x-amz-date"] = "20200101T000000Z"
    query = url.partition("?")[2]
    cache = CredentialCache(session_factory)
    fast = SigV4Authenticator(cache)

    def reference() -> str:
        sigv4.verify(
            method="POST", path="/endpoints/ep/invocations", query=query, headers=lower, body=body, lookup=cache.lookup
        )
        return "ok"

    def ours() -> str:
        principal = asyncio.run(
            fast.authenticate(IncomingRequest("POST", "/endpoints/ep/invocations", query, lower, body))
        )
        assert (principal.account_id, principal.access_key_id) == (ACCOUNT_ID, ACCESS_KEY)
        return "ok"

    outcomes = []
    for check in (reference, ours):
        try:
            outcomes.append(check())
        except AuthError as err:
            outcomes.append(err.code)
    if case == "other-service":
        # The reference accepts any scope; the data plane insists on sagemaker, as AWS does.
        assert outcomes == ["ok", "InvalidSignatureException"]
    else:
        assert outcomes[0] == outcomes[1], outcomes
        assert (outcomes[0] == "ok") == (case in ("good", "query"))
    assert SECRET_KEY  # the fixture account's key signs the good cases
