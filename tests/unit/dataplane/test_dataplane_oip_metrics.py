"""OIP v2, throttling and metrics, with replicas played by fakes."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import struct
from typing import Any

import numpy as np
import pytest
from tests.conftest import ACCOUNT_ID, sign
from tests.unit.dataplane.fakes import StaticTable, asgi_call, verifier

from neurondock_platform.dataplane import oip
from neurondock_platform.dataplane.metrics import MetricsCollector, MetricsFlusher
from neurondock_platform.dataplane.oip import OipApp
from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, VariantRoute
from neurondock_platform.dataplane.runtime import RuntimeApp
from neurondock_platform.models import EndpointStatus


class DoublingReplica:
    """Decodes the NPY request like the default handler and answers 2·x as NPY; or plays a full queue."""

    def __init__(self, full: set[str] | None = None, status: int = 200, signature: str = "observed") -> None:
        self.full = full or set()
        self.status = status
        self.signature = signature
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
        self.calls.append((address, meta))
        if meta["op"] == "metadata":
            if self.signature == "unknown":
                return {"status": 200, "platform": "pytorch_torchscript", "signature": "unknown", "inputs": []}, b""
            inputs = [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]
            outputs = [{"name": "output0", "dtype": "float32", "shape": [-1, 4]}]
            answer = {"platform": "pytorch_torchscript", "signature": self.signature, "inputs": inputs}
            return {"status": 200, **answer, "outputs": outputs}, b""
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

    def abandon(self, address, key) -> None: ...

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
            settings, session_factory, verifier(settings, session_factory), caller=caller, table=StaticTable(routes)
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
    sent = next(meta for _, meta in replica.calls if meta["op"] == "invoke")
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
            "outputs": [{"name": "output0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}

    status, out_headers, body = call(app, "POST", "/v2/models/ep/infer", header + raw, headers)

    assert status == 200, body
    assert out_headers["content-type"] == "application/octet-stream"
    split = int(out_headers["inference-header-content-length"])
    doc = json.loads(body[:split])
    (out,) = doc["outputs"]
    assert out["name"] == "output0" and out["parameters"]["binary_data_size"] == len(body) - split
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
    status, _, body = call(app, "GET", "/v2/models/missing/ready")
    assert status == 404 and "not found" in json.loads(body)["error"]
    # Credentials that are there are checked, even on a probe (this app takes SigV4 only).
    status, _, body = call(app, "GET", "/v2/models/ep/ready", signed=False, headers={"Authorization": "Bearer x"})
    assert status == 400 and "Unsupported authorization scheme" in json.loads(body)["error"]

    status, _, body = call(app, "GET", "/v2/models/ep")
    doc = json.loads(body)
    assert status == 200 and doc["name"] == "ep" and doc["versions"] == ["AllTraffic"]
    assert doc["platform"] == "pytorch_torchscript" and doc["parameters"]["signature"] == "observed"
    assert doc["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert doc["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [-1, 4]}]
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
    assert "job queue full: 4 of 4" in json.loads(body)["message"]
    text = runtime.metrics.render(runtime.router.outstanding).decode()
    assert 'InvocationsThrottled{account_id="123456789012",EndpointName="ep",VariantName="AllTraffic"} 1' in text


def test_a_draining_replica_hands_the_request_to_another(plane):
    class Draining(DoublingReplica):
        async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
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

    signed = sign("GET", "http://localhost/metrics")
    signed["Host"] = "localhost"
    status, headers, body = asyncio.run(asgi_call(runtime.serve_metrics, "GET", "/metrics", headers=signed))
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
    assert answered
    for replica_id in ("1", "2"):
        # A replica routing never picked may have no series at all; it must not show a limit.
        line = f'ReplicaQueueLimit{{{labels},replica="{replica_id}"}} 32'
        assert (line in text) == (replica_id in answered)


def test_period_rows_flush_to_the_metric_store_and_read_back_as_series(plane, session_factory):
    from neurondock_platform.services import metrics as metric_service

    runtime, _ = plane({(ACCOUNT_ID, "ep"): endpoint(("AllTraffic", 1.0, ["r:1"]))}, DoublingReplica())
    now = dt.datetime.now(dt.UTC)
    start = now.replace(second=0, microsecond=0)
    runtime.metrics.period_started = now.timestamp()
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
    assert (invocations.sum, invocations.timestamp, invocations.unit) == (4, start, "None")
    assert latency.sample_count == 4 and latency.unit == "Microseconds"
    assert latency.minimum is not None and latency.minimum <= latency.p50 <= latency.p99 <= latency.maximum
    assert batch.buckets == {"1": 4} and batch.to_dict()["Buckets"] == {"1": 4}
    assert utilization and 0 <= utilization[0].average <= 100
    assert ("OverheadLatency", "AllTraffic") in names


def test_collector_rows_carry_cloudwatch_streams_and_sketched_percentiles():
    from neurondock_platform.services import statistics
    from neurondock_platform.sketch import Sketch

    collector = MetricsCollector(resolution=10)
    collector.period_started = 1_767_225_607.5  # 7.5 s into a 10 s period
    key = (ACCOUNT_ID, "ep", "v")
    for value in range(1, 10001):
        outcome = "5xx" if value % 10 == 0 else "ok"
        collector.invocation(key, outcome=outcome, instances=2, total_us=value + 100.0, model_us=float(value))
    rows = {r["metric_name"]: r for r in collector.take_period()}
    latency = rows["ModelLatency"]
    assert latency["namespace"] == "AWS/SageMaker"
    assert latency["dimensions"] == (("EndpointName", "ep"), ("VariantName", "v"))
    assert latency["period_start"] == dt.datetime.fromtimestamp(1_767_225_600, dt.UTC)
    assert latency["period_seconds"] == 10
    assert latency["sample_count"] == 10000 and latency["minimum"] == 1 and latency["maximum"] == 10000

    def stat(row, name):
        sketch = Sketch.from_json(row["sketch"])
        aggregate = statistics.Aggregate(row["sample_count"], row["sum"], row["minimum"], row["maximum"], sketch)
        return statistics.value(aggregate, name)

    assert stat(latency, "p50") == pytest.approx(5000, rel=0.011)
    assert stat(latency, "p99") == pytest.approx(9900, rel=0.011)
    assert stat(rows["OverheadLatency"], "p50") == pytest.approx(100, rel=0.011)
    errors = rows["Invocation5XXErrors"]
    assert (errors["sample_count"], errors["sum"], errors["minimum"], errors["maximum"]) == (10000, 1000, 0.0, 1.0)
    assert stat(errors, "Average") == 0.1 and errors["unit"] == "None"
    per_instance = rows["InvocationsPerInstance"]
    assert per_instance["sum"] == 5000 and per_instance["minimum"] == per_instance["maximum"] == 0.5
    assert rows["InvocationsThrottled"]["namespace"] == "neurondock/Endpoints"


def test_model_setup_time_counts_every_replica_start_even_when_sqlite_reuses_a_deleted_replicas_id():
    collector = MetricsCollector()

    def routes(*replicas: ReplicaRoute) -> dict[tuple[str, str], EndpointRoute]:
        variant = VariantRoute("AllTraffic", 1.0, replicas, instances=len(replicas))
        return {(ACCOUNT_ID, "ep"): EndpointRoute(ACCOUNT_ID, "ep", EndpointStatus.IN_SERVICE, (variant,))}

    def observed() -> int:
        return collector.variants[(ACCOUNT_ID, "ep", "AllTraffic")].setup_time.count

    first = ReplicaRoute(7, "r:1", setup_seconds=1.5, channel_key="a")
    collector.observe_routes(routes(first))
    collector.observe_routes(routes(first))  # the same start, seen on every reload, counts once
    assert observed() == 1
    collector.observe_routes(routes(ReplicaRoute(7, "r:1", setup_seconds=2.0, channel_key="b")))  # restarted
    assert observed() == 2
    collector.observe_routes({})  # the endpoint was deleted ...
    collector.observe_routes(routes(ReplicaRoute(7, "r:9", setup_seconds=1.0, channel_key="a")))  # ... and id 7 reused
    assert observed() == 3
