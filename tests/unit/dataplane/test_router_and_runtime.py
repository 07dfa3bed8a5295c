"""The runtime front door and the router, with replicas played by a fake caller."""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from typing import Any

import pytest
from tests.conftest import ACCESS_KEY, ACCOUNT_ID, sign
from tests.unit.dataplane.fakes import StaticTable, asgi_call, verifier

from neurondock_platform.dataplane.client import ReplicaTimeout, ReplicaUnavailable
from neurondock_platform.dataplane.router import Router
from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, VariantRoute
from neurondock_platform.dataplane.runtime import RuntimeApp
from neurondock_platform.models import EndpointStatus


class FakeCaller:
    def __init__(self, behaviour: dict[str, Any] | None = None) -> None:
        self.behaviour = behaviour or {}
        self.calls: list[tuple[str, dict[str, Any], bytes]] = []

    async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
        self.calls.append((address, meta, body))
        action = self.behaviour.get(address, "echo")
        if action == "dead":
            raise ReplicaUnavailable("gone")
        if action == "slow":
            raise ReplicaTimeout("slow")
        if action == "error":
            return {"status": 400, "message": "bad input"}, b""
        return {"status": 200, "content_type": "application/json", "model_latency_us": 10}, body

    def abandon(self, address, key) -> None: ...

    async def close(self) -> None: ...


def route(*variants: tuple[str, float, list[str]], status=EndpointStatus.IN_SERVICE) -> EndpointRoute:
    ids = iter(range(1, 100))
    return EndpointRoute(
        ACCOUNT_ID,
        "ep",
        status,
        tuple(VariantRoute(n, w, tuple(ReplicaRoute(next(ids), a) for a in addrs)) for n, w, addrs in variants),
    )


def test_weighted_variant_choice_follows_weights():
    r = Router(StaticTable({}), FakeCaller())
    rt = route(("a", 3.0, ["x:1"]), ("b", 1.0, ["y:1"]))
    counts = collections.Counter(r.choose_variant(rt, None).name for _ in range(4000))
    assert 0.70 < counts["a"] / 4000 < 0.80


def test_target_variant_overrides_and_unknown_is_rejected():
    from neurondock_platform.errors import RuntimeValidationError

    r = Router(StaticTable({}), FakeCaller())
    rt = route(("a", 1.0, ["x:1"]), ("b", 0.0, ["y:1"]))
    assert r.choose_variant(rt, "b").name == "b"
    with pytest.raises(RuntimeValidationError):
        r.choose_variant(rt, "c")


def test_least_outstanding_replica():
    r = Router(StaticTable({}), FakeCaller())
    v = route(("a", 1.0, ["x:1", "x:2"])).variants[0]
    r.outstanding[1] = 3
    assert r.choose_replica(v, set()).address == "x:2"


def test_the_replica_is_told_how_many_requests_the_router_has_in_flight_to_it():
    class Gated(FakeCaller):
        async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
            self.calls.append((address, dict(meta), body))
            await gate.wait()
            return {"status": 200, "model_latency_us": 10}, body

    async def scenario() -> list[int]:
        r = Router(StaticTable({}), caller)
        rt = route(("a", 1.0, ["x:1"]))
        first = asyncio.ensure_future(r.invoke(rt, None, {"op": "invoke"}, b"1", 5))
        second = asyncio.ensure_future(r.invoke(rt, None, {"op": "invoke"}, b"2", 5))
        while len(caller.calls) < 2:
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, second)
        await r.invoke(rt, None, {"op": "invoke"}, b"3", 5)
        return [meta["outstanding"] for _, meta, _ in caller.calls]

    gate = asyncio.Event()
    caller = Gated()
    # Alone (1) the replica may skip its model-thread hand-off; with company (2) it queues to batch.
    assert asyncio.run(scenario()) == [1, 2, 1]


def test_a_dead_replica_is_retried_on_another():
    table = StaticTable({})
    caller = FakeCaller({"x:1": "dead"})
    r = Router(table, caller)
    rt = route(("a", 1.0, ["x:1", "x:2"]))
    # Either replica may be picked first; enough requests that the dead one is tried (p = 2^-64 not).
    for _ in range(64):
        answer = asyncio.run(r.invoke(rt, None, {"op": "invoke"}, b"1", 5))
        assert answer.meta["status"] == 200 and answer.replica_id == 2
    assert 1 in table.invalidated


def test_when_every_cached_replica_is_gone_a_table_read_after_the_failure_finds_the_new_ones():
    # An update moved traffic to new replicas and stopped the old one, but this API process's cached
    # table still lists only the old one: the request must reach a new replica, not fail.
    stale = route(("a", 1.0, ["x:old"]))
    current = EndpointRoute(ACCOUNT_ID, "ep", stale.status, (VariantRoute("a", 1.0, (ReplicaRoute(7, "x:new"),)),))
    table = StaticTable({(ACCOUNT_ID, "ep"): current})
    caller = FakeCaller({"x:old": "dead"})
    answer = asyncio.run(Router(table, caller).invoke(stale, None, {"op": "invoke"}, b"1", 5))
    assert answer.meta["status"] == 200 and answer.replica_id == 7
    assert [c[0] for c in caller.calls] == ["x:old", "x:new"]
    assert len(table.fresh_reads) == 1


def test_a_replica_that_timed_out_gets_no_new_request_until_a_new_process_serves_it():
    from neurondock_platform.dataplane.routing import ReplicaRoute

    caller = FakeCaller({"x:1": "slow"})
    r = Router(StaticTable({}), caller)
    rt = route(("a", 1.0, ["x:1"]))
    with pytest.raises(ReplicaTimeout):
        asyncio.run(r.invoke(rt, None, {"op": "invoke"}, b"1", 5))
    calls = len(caller.calls)

    # The hung process is avoided: no request queues behind it for another whole timeout.
    from neurondock_platform.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable):
        asyncio.run(r.invoke(rt, None, {"op": "invoke"}, b"2", 5))
    assert len(caller.calls) == calls
    # With a second replica the endpoint keeps serving from it ...
    two = route(("a", 1.0, ["x:1", "x:2"]))
    assert asyncio.run(r.invoke(two, None, {"op": "invoke"}, b"3", 5)).meta["status"] == 200
    assert caller.calls[-1][0] == "x:2"
    # ... and the replaced process (same replica id, new channel key) is used again at once.
    caller.behaviour.clear()
    fresh = EndpointRoute(
        rt.account_id, rt.name, rt.status, (VariantRoute("a", 1.0, (ReplicaRoute(1, "x:1", None, "k2"),)),)
    )
    assert asyncio.run(r.invoke(fresh, None, {"op": "invoke"}, b"4", 5)).meta["status"] == 200


@pytest.fixture
def runtime_app(settings, session_factory):
    def make(routes, caller):
        return RuntimeApp(
            settings,
            session_factory,
            verifier(settings, session_factory),
            caller=caller,
            table=StaticTable(routes),
        )

    return make


def invoke(app, name="ep", body=b'{"x": 1}', headers=None, **sign_kw):
    url = f"http://localhost/endpoints/{name}/invocations"
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    signed = sign("POST", url, body=body, headers=hdrs, **sign_kw)
    signed["Host"] = "localhost"
    return asyncio.run(asgi_call(app, "POST", f"/endpoints/{name}/invocations", body, signed))


def test_invoke_passes_body_and_headers_through(runtime_app):
    caller = FakeCaller()
    app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, ["x:1"]))}, caller)
    status, headers, body = invoke(
        app, headers={"X-Amzn-SageMaker-Custom-Attributes": "k=v", "Accept": "application/json"}
    )
    assert status == 200 and body == b'{"x": 1}'
    assert headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    assert caller.calls[0][1]["custom_attributes"] == "k=v"
    assert caller.calls[0][1]["accept"] == "application/json"
    # A fresh random UUID per request, in its canonical form.
    again = invoke(app)[1]["x-amzn-requestid"]
    for request_id in (headers["x-amzn-requestid"], again):
        assert str(uuid.UUID(request_id)) == request_id and uuid.UUID(request_id).version == 4
    assert again != headers["x-amzn-requestid"]


def test_a_body_in_several_messages_is_hashed_as_it_arrives_and_forwarded_whole(runtime_app):
    caller = FakeCaller()
    app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, ["x:1"]))}, caller)
    image = bytes(range(256)) * 2352  # 602 KB, ten ASGI messages in asgi_call
    status, _, echoed = invoke(app, body=image, headers={"Content-Type": "application/x-npy"})
    assert status == 200 and caller.calls[0][2] == image and echoed == image


def test_a_body_in_several_messages_that_is_not_the_signed_one_is_refused(runtime_app):
    caller = FakeCaller()
    app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, ["x:1"]))}, caller)
    url, path = "http://localhost/endpoints/ep/invocations", "/endpoints/ep/invocations"
    signed_body = bytes(300_000)
    headers = sign("POST", url, body=signed_body, headers={"Content-Type": "application/x-npy"})
    headers["Host"] = "localhost"
    sent = signed_body[:-1] + b"\x01"  # the last message differs
    status, _, body = asyncio.run(asgi_call(app, "POST", path, sent, headers))
    assert status == 403 and json.loads(body)["__type"] == "InvalidSignatureException"
    assert caller.calls == []


def test_requests_still_being_read_for_an_endpoint_are_announced_to_its_replica(runtime_app):
    """The replica is told how many requests for its endpoint the front door is reading (docs/runtime.md)."""
    url, path = "http://localhost/endpoints/ep/invocations", "/endpoints/ep/invocations"
    body = bytes(200_000)

    def headers(payload: bytes, access_key: str) -> list[tuple[bytes, bytes]]:
        signed = sign("POST", url, body=payload, headers={"Content-Type": "application/x-npy"}, access_key=access_key)
        signed["Host"] = "localhost"
        return [(k.lower().encode(), v.encode()) for k, v in signed.items()]

    async def scenario(replicas: list[str]) -> tuple[list[dict[str, Any]], dict[tuple[str, str], int]]:
        caller = FakeCaller()
        app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, replicas))}, caller)

        def request(
            payload: bytes, released: asyncio.Event | None = None, tampered: bool = False, access_key: str = ACCESS_KEY
        ):
            sent = payload[:-1] + b"\x01" if tampered else payload
            chunks = [sent[:65536], sent[65536:]]

            async def receive() -> dict[str, Any]:
                if released is not None and len(chunks) == 1:
                    await released.wait()  # the rest of this body has not arrived yet
                return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

            async def send(message: dict[str, Any]) -> None: ...

            scope = {
                "type": "http",
                "method": "POST",
                "path": path,
                "query_string": b"",
                "headers": headers(payload, access_key),
            }
            return asyncio.ensure_future(app(scope, receive, send))

        held, tampered = asyncio.Event(), asyncio.Event()
        slow, refused = request(body, held), request(body, tampered, tampered=True)
        # Another caller (another account's key) reading a request for an endpoint of the same name.
        stranger = request(body, tampered, access_key="AKIDSOMEONEELSE00000")
        await request(body)  # forwarded while the others are still being read
        tampered.set()
        await refused
        await stranger
        held.set()
        await slow
        return [meta for _, meta, _ in caller.calls], dict(app.arriving)

    forwarded, left = asyncio.run(scenario(["x:1"]))
    # Only the same caller's count; the tampered one is refused after its body is read, and counts no longer.
    assert [meta.get("following") for meta in forwarded] == [2, None] and left == {}
    # Shared out among the variant's replicas, rounded up.
    forwarded, _ = asyncio.run(scenario(["x:1", "x:2"]))
    assert [meta.get("following") for meta in forwarded] == [1, None]


def test_unknown_endpoint_is_validation_error(runtime_app):
    app = runtime_app({}, FakeCaller())
    status, headers, body = invoke(app, name="missing")
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationError"
    assert json.loads(body)["message"] == f"Endpoint missing of account {ACCOUNT_ID} not found."


def test_bad_signature_is_rejected_before_routing(runtime_app):
    caller = FakeCaller()
    app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, ["x:1"]))}, caller)
    status, _, body = invoke(app, secret_key="wrong")
    assert status == 403 and json.loads(body)["__type"] == "InvalidSignatureException"
    assert caller.calls == []


def test_payload_over_6_mib_is_refused(runtime_app):
    app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, ["x:1"]))}, FakeCaller())
    status, _, body = invoke(app, body=bytes(6 * 1024 * 1024 + 1))
    assert status == 413 and "6 MiB" in json.loads(body)["message"]


def test_model_error_and_timeout_are_424(runtime_app):
    app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, ["x:1"]))}, FakeCaller({"x:1": "error"}))
    status, headers, body = invoke(app)
    doc = json.loads(body)
    assert status == 424 and headers["x-amzn-errortype"] == "ModelError"
    assert doc["OriginalStatusCode"] == 400 and doc["OriginalMessage"] == "bad input"
    assert doc["Message"].startswith("Received client error (400) from primary")
    app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, ["x:1"]))}, FakeCaller({"x:1": "slow"}))
    status, _, body = invoke(app)
    assert status == 424 and json.loads(body)["OriginalStatusCode"] == 0


def test_creating_endpoint_cannot_be_invoked(runtime_app):
    app = runtime_app(
        {(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, []), status=EndpointStatus.CREATING)}, FakeCaller()
    )
    status, _, body = invoke(app)
    assert status == 400 and "Creating" in json.loads(body)["message"]


def test_no_ready_replica_is_retryable_503(runtime_app):
    app = runtime_app({(ACCOUNT_ID, "ep"): route(("AllTraffic", 1.0, []))}, FakeCaller())
    status, _, _ = invoke(app)
    assert status == 503
