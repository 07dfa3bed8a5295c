"""Bearer tokens on both front doors, anonymous readiness, and the input and output checks OIP metadata allows."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import numpy as np
import pytest
from tests.conftest import ACCESS_KEY, ACCOUNT_ID, sign
from tests.support.identity import new_account
from tests.unit.dataplane.fakes import StaticTable, asgi_call, verifier

from neurondock_platform.dataplane.auth import default_authenticator
from neurondock_platform.dataplane.oip import OipApp
from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, VariantRoute
from neurondock_platform.dataplane.runtime import RuntimeApp
from neurondock_platform.db import session_scope
from neurondock_platform.models import EndpointStatus
from neurondock_platform.services import revocations, sessions

# Nothing here depends on the database engine: SQLite only, to keep the default run short.
SQLITE_ONLY = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

NPY = "application/x-npy"
COMPILED_16 = {
    "platform": "neurondock_inf1_emulated",
    "signature": "compiled",
    "enforced": True,
    "inputs": [{"name": "input0", "dtype": "float32", "shape": [-1, 16]}],
    "outputs": [{"name": "output0", "dtype": "float32", "shape": [-1, 4]}],
}


class Model:
    """A replica fake: a 16→4 model that fails (500) on anything but float32 rows of 16, and a signature."""

    def __init__(self, signature: dict[str, Any]) -> None:
        self.signature = signature
        self.ops: list[str] = []

    async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
        self.ops.append(meta["op"])
        if meta["op"] == "metadata":
            return {"status": 200, **self.signature}, b""
        x = np.load(io.BytesIO(body), allow_pickle=False)
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 16:
            return {"status": 500, "message": f"RuntimeError: mat1 and mat2 shapes cannot be multiplied {x.shape}"}, b""
        out = io.BytesIO()
        np.save(out, x[:, :4] * 2)
        return {"status": 200, "content_type": NPY, "model_latency_us": 10}, out.getvalue()

    async def close(self) -> None: ...


def route(account_id: str = ACCOUNT_ID, status: EndpointStatus = EndpointStatus.IN_SERVICE) -> EndpointRoute:
    return EndpointRoute(account_id, "ep", status, (VariantRoute("AllTraffic", 1.0, (ReplicaRoute(1, "r:1", 1.0),)),))


@pytest.fixture
def plane(settings, session_factory):
    def make(routes: dict[tuple[str, str], EndpointRoute], replica: Model, revoked=None) -> tuple[RuntimeApp, OipApp]:
        check = verifier(settings, session_factory)
        runtime = RuntimeApp(
            settings,
            session_factory,
            check,
            caller=replica,
            table=StaticTable(routes),  # type: ignore[arg-type]
            authenticator=default_authenticator(check, revoked) if revoked is not None else None,
        )
        return runtime, OipApp(runtime)

    return make


def send(app, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, *, signed=False):
    hdrs = dict(headers or {})
    if signed:
        hdrs = sign(method, f"http://localhost{path}", body=body, headers=hdrs)
    hdrs["Host"] = "localhost"
    return asyncio.run(asgi_call(app, method, path, body, hdrs))


def infer_body(x: np.ndarray, datatype: str = "FP32", **extra: Any) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input0", "shape": list(x.shape), "datatype": datatype, "data": x.tolist()}], **extra}
    ).encode()


def npy(x: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, x)
    return out.getvalue()


def issue(session_factory, access_key_id: str = ACCESS_KEY, purpose: str = sessions.PURPOSE_API):
    from neurondock_platform.services.credentials import CredentialCache

    credential = CredentialCache(session_factory).lookup(access_key_id)
    assert credential is not None
    return sessions.issue_token(access_key_id, credential, purpose=purpose)


@SQLITE_ONLY
def test_bearer_tokens_invoke_both_front_doors_within_their_account_until_revoked(plane, session_factory, monkeypatch):
    from neurondock_platform.dataplane import auth

    other = new_account(session_factory, "other-team")
    cache = revocations.RevocationCache(session_factory, refresh_seconds=60.0)
    routes = {(ACCOUNT_ID, "ep"): route(), (other.account_id, "theirs"): route(other.account_id)}
    runtime, oip = plane(routes, Model(COMPILED_16), revoked=cache)
    token = issue(session_factory)
    bearer = {"Authorization": f"Bearer {token.value}"}
    x = np.ones((2, 16), np.float32)
    hops: list[object] = []
    to_thread = asyncio.to_thread

    async def counted(fn, *args):
        hops.append(fn)
        return await to_thread(fn, *args)

    monkeypatch.setattr(auth.asyncio, "to_thread", counted)

    status, _, body = send(oip, "POST", "/v2/models/ep/infer", infer_body(x), bearer)
    assert status == 200, body
    status, headers, body = send(runtime, "POST", "/endpoints/ep/invocations", npy(x), {**bearer, "Content-Type": NPY})
    assert status == 200 and headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    # The first check read the key and the revocation list in a thread; the second needed no database.
    assert len(hops) == 1
    # SigV4 still works beside tokens.
    assert send(oip, "POST", "/v2/models/ep/infer", infer_body(x), signed=True)[0] == 200
    # A token reaches its own account's endpoints only.
    status, _, body = send(oip, "POST", "/v2/models/theirs/infer", infer_body(x), bearer)
    assert status == 404 and f"in account {ACCOUNT_ID}" in json.loads(body)["error"]
    status, _, body = send(runtime, "POST", "/endpoints/theirs/invocations", npy(x), {**bearer, "Content-Type": NPY})
    assert status == 400 and json.loads(body)["__type"] == "ValidationError"

    # A console session is not an API token; a forged one fails its signature.
    console = issue(session_factory, purpose=sessions.PURPOSE_CONSOLE)
    status, _, body = send(
        oip, "POST", "/v2/models/ep/infer", infer_body(x), {"Authorization": f"Bearer {console.value}"}
    )
    assert status == 401 and "not issued for api use" in json.loads(body)["error"]
    forged = token.value[:-4] + ("AAAA" if not token.value.endswith("AAAA") else "BBBB")
    assert send(oip, "POST", "/v2/models/ep/infer", infer_body(x), {"Authorization": f"Bearer {forged}"})[0] == 401

    # Revoked as the admin API revokes: the row, then this process's cache at once...
    with session_scope(session_factory) as session:
        row = revocations.revoke_token(session, token.claims)
    cache.note([row])
    status, _, body = send(oip, "POST", "/v2/models/ep/infer", infer_body(x), bearer)
    assert status == 401 and "revoked" in json.loads(body)["error"]
    status, _, body = send(runtime, "POST", "/endpoints/ep/invocations", npy(x), {**bearer, "Content-Type": NPY})
    assert status == 401 and json.loads(body)["__type"] == "InvalidToken"
    # ...and another process, which reads the revocation from the database.
    elsewhere = revocations.RevocationCache(session_factory, refresh_seconds=60.0)
    _, other_oip = plane(routes, Model(COMPILED_16), revoked=elsewhere)
    status, _, body = send(other_oip, "POST", "/v2/models/ep/infer", infer_body(x), bearer)
    assert status == 401 and "revoked" in json.loads(body)["error"]


@SQLITE_ONLY
def test_anonymous_readiness_says_ready_or_not_and_nothing_more(plane, session_factory):
    other = new_account(session_factory, "probe-team")
    routes = {
        (ACCOUNT_ID, "ep"): route(),
        (other.account_id, "creating"): EndpointRoute(
            other.account_id, "creating", EndpointStatus.CREATING, (VariantRoute("v", 1.0, ()),)
        ),
    }
    _, oip = plane(routes, Model(COMPILED_16))
    ready = send(oip, "GET", "/v2/models/ep/ready")
    assert (ready[0], json.loads(ready[2])) == (200, {"name": "ep", "ready": True})
    assert send(oip, "GET", "/v2/models/ep/versions/AllTraffic/ready")[0] == 200
    # Not ready, unknown, and an unknown version look alike.
    answers = [send(oip, "GET", path) for path in ("/v2/models/creating/ready", "/v2/models/nope/ready")]
    answers.append(send(oip, "GET", "/v2/models/ep/versions/nope/ready"))
    assert {
        (status, body.replace(b"creating", b"x").replace(b"nope", b"x").replace(b"ep", b"x"))
        for status, _, body in answers
    } == {(400, b'{"name":"x","ready":false}')}
    # Everything else about a model still needs credentials.
    assert send(oip, "GET", "/v2/models/ep")[0] == 403
    assert send(oip, "POST", "/v2/models/ep/infer", infer_body(np.ones((1, 16), np.float32)))[0] == 403


@SQLITE_ONLY
def test_a_compiled_model_refuses_other_datatypes_and_shapes_before_the_replica_sees_them(plane):
    replica = Model(COMPILED_16)
    _, oip = plane({(ACCOUNT_ID, "ep"): route()}, replica)

    for x, datatype in ((np.ones((2, 16)), "FP64"), (np.ones((2, 16), np.int64), "INT64"), (np.ones((2, 8)), "FP32")):
        status, _, body = send(oip, "POST", "/v2/models/ep/infer", infer_body(x, datatype), signed=True)
        error = json.loads(body)["error"]
        assert status == 400 and f"got {datatype} {list(x.shape)}" in error
        assert "expects input0 FP32 [-1, 16] (dim 0 is the batch and may vary)" in error
    assert "invoke" not in replica.ops and replica.ops.count("metadata") == 1

    status, _, body = send(oip, "GET", "/v2/models/ep", signed=True)
    doc = json.loads(body)
    assert doc["inputs"] == [{"name": "input0", "datatype": "FP32", "shape": [-1, 16]}]
    assert (doc["platform"], doc["parameters"]["signature"]) == ("neurondock_inf1_emulated", "compiled")


@SQLITE_ONLY
def test_unknown_outputs_are_refused_not_echoed(plane):
    _, oip = plane({(ACCOUNT_ID, "ep"): route()}, Model(COMPILED_16))
    x = np.ones((1, 16), np.float32)
    status, _, body = send(oip, "POST", "/v2/models/ep/infer", infer_body(x, outputs=[{"name": "logits"}]), signed=True)
    assert (
        status == 400
        and "Output 'logits' is not an output of model ep; its outputs: output0" in json.loads(body)["error"]
    )
    status, _, body = send(
        oip, "POST", "/v2/models/ep/infer", infer_body(x, outputs=[{"name": "output0"}]), signed=True
    )
    assert status == 200 and json.loads(body)["outputs"][0]["name"] == "output0"


@SQLITE_ONLY
def test_an_uncompiled_model_learns_its_signature_and_then_blames_misfits_on_the_request(plane):
    replica = Model({"platform": "pytorch_torchscript", "signature": "unknown", "inputs": [], "outputs": []})
    _, oip = plane({(ACCOUNT_ID, "ep"): route()}, replica)
    doc = json.loads(send(oip, "GET", "/v2/models/ep", signed=True)[2])
    assert (doc["inputs"], doc["outputs"], doc["parameters"]["signature"]) == ([], [], "unknown")
    # Before anything succeeded, a failure is the model's: nothing says what it expects.
    status, _, body = send(oip, "POST", "/v2/models/ep/infer", infer_body(np.ones((1, 16)), "FP64"), signed=True)
    assert status == 500 and "The model failed with status 500" in json.loads(body)["error"]

    x = np.ones((3, 16), np.float32)
    assert send(oip, "POST", "/v2/models/ep/infer", infer_body(x), signed=True)[0] == 200
    replica.signature = {
        "platform": "pytorch_torchscript",
        "signature": "observed",
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 16]}],
        "outputs": [{"name": "output0", "dtype": "float32", "shape": [-1, 4]}],
    }
    # The success made the front door ask again (the replica learnt from it).
    doc = json.loads(send(oip, "GET", "/v2/models/ep", signed=True)[2])
    assert doc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]

    status, _, body = send(oip, "POST", "/v2/models/ep/infer", infer_body(np.ones((1, 16)), "FP64"), signed=True)
    error = json.loads(body)["error"]
    assert status == 400 and "got FP64 [1, 16]; the model expects input FP32 [-1, 16]" in error
    assert "The model failed with status 500" in error
    # An observed signature is one sample: a request unlike it still goes to the model, which may take it.
    assert replica.ops[-1] == "invoke"


@SQLITE_ONLY
def test_the_revocation_list_is_refreshed_ahead_so_token_checks_stay_on_the_event_loop(session_factory):
    now = [100.0]
    cache = revocations.RevocationCache(session_factory, refresh_seconds=1.0, clock=lambda: now[0])
    token = issue(session_factory)
    assert not cache.current() and cache.due()
    assert not cache.refuses(token.claims)  # the first check loads the list
    assert cache.current() and not cache.due()
    with session_scope(session_factory) as session:
        revocations.revoke_token(session, token.claims)  # by another process: this one is not told
    now[0] += 0.6
    assert cache.current() and cache.due()
    cache.refresh_ahead()
    assert cache.current() and not cache.due()
    now[0] += 0.5  # a full period after the first load, yet answered from the list read ahead
    assert cache.current() and cache.refuses(token.claims)


def test_the_signature_cache_asks_few_replicas_and_keeps_known_answers_for_the_process():
    from neurondock_platform.dataplane.oip_metadata import SignatureCache

    known = {
        "platform": "pytorch_torchscript",
        "signature": "observed",
        **{k: COMPILED_16[k] for k in ("inputs", "outputs")},
    }
    answers = {"r:1": {"signature": "unknown"}, "r:2": known, "r:3": known}
    asked: list[str] = []

    class Caller:
        async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
            asked.append(address)
            return {"status": 200, **answers[address]}, b""

    now = [0.0]
    cache = SignatureCache(Caller(), clock=lambda: now[0])  # type: ignore[arg-type]
    variant = VariantRoute("v", 1.0, tuple(ReplicaRoute(i, f"r:{i}", channel_key=f"k{i}") for i in (1, 2, 3)))

    assert not asyncio.run(cache.of_variant(variant, ask=1)).known and asked == ["r:1"]
    signature = asyncio.run(cache.of_variant(variant))  # r:1 is not asked again within a second
    assert signature.known and signature.inputs[0].shape == (-1, 16) and asked == ["r:1", "r:2"]
    now[0] += 3600
    assert asyncio.run(cache.of_variant(variant)).known and asked == ["r:1", "r:2"]  # known: kept
    # A new process behind the same replica row has a new channel key: it is asked again.
    restarted = VariantRoute("v", 1.0, (ReplicaRoute(2, "r:2", channel_key="k2-new"),))
    assert asyncio.run(cache.of_variant(restarted)).known and asked[-1] == "r:2" and len(asked) == 3
