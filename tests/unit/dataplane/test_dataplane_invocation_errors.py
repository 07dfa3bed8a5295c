"""Failed invocations recorded by the runtime in per-endpoint rings, with replicas played by a fake caller."""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.conftest import ACCOUNT_ID, sign
from tests.unit.dataplane.fakes import StaticTable, asgi_call, verifier

from neurondock_platform.dataplane.client import ReplicaTimeout
from neurondock_platform.dataplane.invocation_errors import FailedInvocation, InvocationErrorLog
from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, VariantRoute
from neurondock_platform.dataplane.runtime import RuntimeApp
from neurondock_platform.models import EndpointStatus


class Replicas:
    """Answers per address: ``ok``, ``error`` (the model says 400), ``full`` (429 unqueued) or ``slow``."""

    def __init__(self, behaviour: dict[str, str]) -> None:
        self.behaviour = behaviour

    async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
        action = self.behaviour.get(address, "ok")
        if action == "slow":
            raise ReplicaTimeout("slow")
        if action == "error":
            return {"status": 400, "message": "bad input: expected 4 features"}, b""
        if action == "full":
            return {"status": 429, "message": "NRT_QUEUE_FULL", "queue_depth": 4, "queue_limit": 4}, b""
        return {"status": 200, "content_type": "application/json", "model_latency_us": 10}, body

    def abandon(self, address, key) -> None: ...

    async def close(self) -> None: ...


def endpoint(addresses: list[str], status: EndpointStatus = EndpointStatus.IN_SERVICE) -> EndpointRoute:
    replicas = tuple(ReplicaRoute(i + 1, a) for i, a in enumerate(addresses))
    return EndpointRoute(ACCOUNT_ID, "ep", status, (VariantRoute("AllTraffic", 1.0, replicas),))


@pytest.fixture
def runtime(settings, session_factory):
    def make(route: EndpointRoute, behaviour: dict[str, str] | None = None) -> RuntimeApp:
        return RuntimeApp(
            settings,
            session_factory,
            verifier(settings, session_factory),
            caller=Replicas(behaviour or {}),
            table=StaticTable({(ACCOUNT_ID, "ep"): route}),  # type: ignore[arg-type]
        )

    return make


def _post(app, path, body, headers) -> tuple[int, dict[str, str]]:
    status, response_headers, _ = asyncio.run(asgi_call(app, "POST", path, body, headers))
    return status, response_headers


def invoke(app, name="ep", body=b'{"x": 1}', **sign_kw) -> tuple[int, dict[str, str]]:
    url = f"http://localhost/endpoints/{name}/invocations"
    headers = sign("POST", url, body=body, headers={"Content-Type": "application/json"}, **sign_kw)
    headers["Host"] = "localhost"
    return _post(app, f"/endpoints/{name}/invocations", body, headers)


def only(app: RuntimeApp) -> FailedInvocation:
    (failure,) = app.metrics.errors.take()
    return failure


def test_a_model_error_keeps_the_replicas_answer_and_the_request_id(runtime):
    app = runtime(endpoint(["r:1"]), {"r:1": "error"})
    status, headers = invoke(app)
    failure = only(app)
    assert status == failure.http_status == 424 and failure.error_code == "ModelError"
    assert failure.original_status_code == 400 and failure.original_message == "bad input: expected 4 features"
    assert failure.message.startswith("Received client error (400) from primary")
    assert (failure.account_id, failure.endpoint_name, failure.variant_name) == (ACCOUNT_ID, "ep", "AllTraffic")
    assert failure.replica_id == 1 and failure.request_id == headers["x-amzn-requestid"]


def test_timeouts_throttles_and_no_replica_are_recorded(runtime):
    app = runtime(endpoint(["r:1"]), {"r:1": "slow"})
    assert invoke(app)[0] == 424
    timed_out = only(app)
    assert timed_out.original_status_code == 0 and "timed out" in timed_out.message and timed_out.replica_id == 1

    app = runtime(endpoint(["r:1", "r:2"]), {"r:1": "full", "r:2": "full"})
    assert invoke(app)[0] == 429
    throttled = only(app)
    assert throttled.error_code == "ThrottlingException" and throttled.variant_name == "AllTraffic"
    assert throttled.replica_id is None  # every replica refused it

    app = runtime(endpoint([]))
    assert invoke(app)[0] == 503
    assert only(app).error_code == "ServiceUnavailable"


def test_client_errors_of_an_existing_endpoint_are_recorded(runtime):
    app = runtime(endpoint([], status=EndpointStatus.CREATING))
    assert invoke(app)[0] == 400
    refused = only(app)
    assert refused.error_code == "ValidationError" and "Creating" in refused.message
    assert refused.variant_name is None and refused.replica_id is None


def test_a_too_large_body_is_not_recorded_its_signature_was_never_checked(runtime):
    app = runtime(endpoint(["r:1"]))
    assert invoke(app, body=bytes(6 * 1024 * 1024 + 1))[0] == 413
    assert app.metrics.errors.take() == []


def test_successes_unknown_endpoints_and_bad_signatures_record_nothing(runtime):
    app = runtime(endpoint(["r:1"]))
    assert invoke(app)[0] == 200
    assert invoke(app, name="missing")[0] == 400
    assert invoke(app, secret_key="wrong")[0] == 403
    assert invoke(app, name="missing", body=bytes(6 * 1024 * 1024 + 1))[0] == 413
    assert app.metrics.errors.take() == []


def test_each_endpoint_keeps_its_newest_failures_and_restore_keeps_the_bound():
    log = InvocationErrorLog(size=3)

    def failure(name: str, i: int) -> FailedInvocation:
        return FailedInvocation(ACCOUNT_ID, name, "v", 500, "InternalFailure", f"m{i}", f"r{i}", at=float(i))

    for i in range(5):
        log.record(failure("a", i))
    log.record(failure("b", 9))
    assert log.dropped == 2 and len(log) == 4
    taken = log.take()
    assert [f.message for f in taken] == ["m2", "m3", "m4", "m9"] and len(log) == 0
    log.record(failure("a", 10))
    log.restore(taken)  # a failed flush puts them back behind the newer one
    assert [f.message for f in log.take()] == ["m3", "m4", "m10", "m9"]


def test_a_row_truncates_long_messages():
    failure = FailedInvocation(ACCOUNT_ID, "ep", None, 424, "ModelError", "x" * 5000, "r", original_message="y" * 5000)
    row = failure.to_row("api-1")
    assert len(row["message"]) == len(row["original_message"]) == 1024
    assert row["occurred_at"].tzinfo is not None and json.dumps({k: str(v) for k, v in row.items()})


def test_a_failed_open_inference_protocol_infer_is_recorded_too(runtime):
    from neurondock_platform.dataplane.oip import OipApp

    app = runtime(endpoint(["r:1"]), {"r:1": "error"})
    oip = OipApp(app)
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}).encode()
    url = "http://localhost/v2/models/ep/infer"
    headers = sign("POST", url, body=body, headers={"Content-Type": "application/json"})
    headers["Host"] = "localhost"
    status, _ = _post(oip, "/v2/models/ep/infer", body, headers)
    assert status == 400
    failure = only(app)
    assert failure.http_status == 400 and failure.replica_id == 1 and failure.variant_name == "AllTraffic"
    assert "Open Inference Protocol" in failure.message and failure.request_id.startswith("oip-")
    # Nothing is kept for a model the caller has no endpoint for.
    missing = "http://localhost/v2/models/nope/infer"
    headers = sign("POST", missing, body=body, headers={"Content-Type": "application/json"})
    headers["Host"] = "localhost"
    assert _post(oip, "/v2/models/nope/infer", body, headers)[0] == 404
    assert app.metrics.errors.take() == []
