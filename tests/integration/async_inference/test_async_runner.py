"""The async runner against a real database: outcomes written once, expiry, slots, takeover, sweep.

The object store and the replica are fakes here (the e2e tests use the real ones); the claims,
fences, parking and metrics are the real services on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import event, func, select
from tests.conftest import ACCOUNT_ID

from neurondock_platform import dispatch
from neurondock_platform.dataplane.client import ReplicaTimeout
from neurondock_platform.dataplane.router import RoutedAnswer
from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.errors import ServiceUnavailable
from neurondock_platform.models import (
    AsyncInference,
    AsyncInferenceStatus,
    Endpoint,
    EndpointStatus,
    EndpointVariant,
    MetricDatapoint,
    MetricStream,
)
from neurondock_platform.services import async_inference
from neurondock_platform.services.async_inference import MAX_ATTEMPTS, AsyncRequest
from neurondock_workers.async_job import AsyncConfig, run_async_inference

SUCCESS_TOPIC = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:async-ok"
ERROR_TOPIC = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:async-error"
CONFIG = AsyncConfig(lease_timeout=5.0, heartbeat_interval=0.05, metrics_period=10)


class FakeStore:
    """An S3 client acting as an owner: objects by (bucket, key), honouring If-None-Match: *."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts: list[str] = []
        self.owners: list[Any] = []

    def __call__(self, owner: Any) -> FakeStore:
        self.owners.append(owner)
        return self

    @staticmethod
    def _error(code: str, op: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code}}, op)

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if Bucket == "not-mine":
            raise self._error("AccessDenied", "GetObject")
        import io

        return {"Body": io.BytesIO(self.objects[(Bucket, Key)]), "ContentType": "application/json"}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str, IfNoneMatch: str | None = None) -> None:
        if IfNoneMatch == "*" and (Bucket, Key) in self.objects:
            raise self._error("PreconditionFailed", "PutObject")
        self.objects[(Bucket, Key)] = Body
        self.puts.append(f"s3://{Bucket}/{Key}")

    def text(self, uri: str) -> str:
        bucket, _, key = uri[len("s3://") :].partition("/")
        return self.objects[(bucket, key)].decode()


class FakeInvoker:
    """Answers like a replica: echo, a model error for b"fail", no replica while ``down``."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.timeouts: list[float] = []
        self.content_types: list[str | None] = []
        self.down = False

    def invoke(self, account_id: str, name: str, meta: dict[str, Any], body: bytes, timeout: float) -> RoutedAnswer:
        self.calls.append(body)
        self.timeouts.append(timeout)
        self.content_types.append(meta.get("content_type"))
        if self.down:
            raise ServiceUnavailable(f"Endpoint {name} has no replica ready to serve; retry shortly.")
        if body == b"slow":
            raise ReplicaTimeout(f"replica did not answer within {timeout:.0f} s")
        if body == b"fail":
            return RoutedAnswer("AllTraffic", 1, {"status": 500, "message": "the model gave up"}, b"")
        return RoutedAnswer("AllTraffic", 1, {"status": 200, "content_type": "application/json"}, b'{"echo": 1}')


@pytest.fixture
def factory(session_factory):
    dispatcher = dispatch.RecordingDispatcher()
    dispatch.install(session_factory, dispatcher)
    session_factory.dispatcher = dispatcher  # type: ignore[attr-defined]
    return session_factory


def _endpoint(factory, *, instances: int = 1, per_instance: int = 2, name: str = "async-ep") -> int:
    config = {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": per_instance},
        "OutputConfig": {
            "S3OutputPath": "s3://results/out",
            "S3FailurePath": "s3://results/failed/",
            "NotificationConfig": {"SuccessTopic": SUCCESS_TOPIC, "ErrorTopic": ERROR_TOPIC},
        },
    }
    with session_scope(factory) as session:
        endpoint = Endpoint(
            account_id=ACCOUNT_ID,
            name=name,
            arn=f"arn:aws:sagemaker:us-east-1:{ACCOUNT_ID}:endpoint/{name}",
            endpoint_config_name=name,
            status=EndpointStatus.IN_SERVICE,
            extra={async_inference.CONFIG: config},
        )
        session.add(endpoint)
        session.flush()
        session.add(
            EndpointVariant(
                endpoint_id=endpoint.id,
                name="AllTraffic",
                model_name=name,
                container={"ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/Runner"},
                instance_type="ml.c5.large",
                desired_instance_count=instances,
                current_instance_count=instances,
            )
        )
        return endpoint.id


def _accept(factory, name: str = "async-ep", now: dt.datetime | None = None, **request: Any) -> int:
    request.setdefault("body", b"hello")
    with session_scope(factory) as session:
        row = async_inference.accept(
            session, account_id=ACCOUNT_ID, endpoint_name=name, request=AsyncRequest(**request), now=now
        )
        return row.id


def _row(factory, row_id: int) -> AsyncInference:
    with session_scope(factory) as session:
        row = session.get(AsyncInference, row_id)
        assert row is not None
        session.expunge(row)
        return row


def _counts(factory) -> dict[str, float]:
    with session_scope(factory) as session:
        rows = session.execute(
            select(MetricStream.metric_name, func.sum(MetricDatapoint.sum))
            .join(MetricDatapoint, MetricDatapoint.stream_id == MetricStream.id)
            .group_by(MetricStream.metric_name)
        ).all()
    return {name: float(total) for name, total in rows}


def _run(factory, row_id: int, store: FakeStore, invoker: FakeInvoker) -> str:
    return run_async_inference(factory, row_id, store, invoker, CONFIG).state  # type: ignore[arg-type]


def test_accepted_request_runs_once_and_writes_result_and_notification(factory):
    _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    row_id = _accept(factory, content_type="text/plain", inference_id="my-id")
    assert factory.dispatcher.sent == [(dispatch.ASYNC_INFERENCE, (row_id,))]
    row = _row(factory, row_id)
    assert row.output_location.startswith("s3://results/out/") and row.output_location.endswith(".out")
    generated = row.output_location.rsplit("/", 1)[1].removesuffix(".out")
    assert row.failure_location == f"s3://results/failed/{generated}-error.out"
    assert row.inference_id == "my-id" and generated != "my-id"

    assert _run(factory, row_id, store, invoker) == "completed"
    assert invoker.calls == [b"hello"]
    assert store.text(row.output_location) == '{"echo": 1}'
    record = json.loads(store.text(row.output_location + ".notification.json"))
    message = json.loads(record["Message"])
    assert record["Type"] == "Notification" and record["TopicArn"] == SUCCESS_TOPIC
    assert message["invocationStatus"] == "Completed" and message["inferenceId"] == "my-id"
    assert message["responseParameters"] == {"contentType": "application/json", "outputLocation": row.output_location}
    assert message["requestParameters"] == {"endpointName": "async-ep", "contentType": "text/plain"}
    # Written as the endpoint's owner with the model's execution role, never the platform's keys.
    assert {(o.account_id, o.role) for o in store.owners} == {(ACCOUNT_ID, f"arn:aws:iam::{ACCOUNT_ID}:role/Runner")}

    done = _row(factory, row_id)
    assert done.status == AsyncInferenceStatus.COMPLETED and done.body is None and done.attempts == 1
    # A second delivery of the same task does nothing.
    assert _run(factory, row_id, store, invoker) == "done"
    assert invoker.calls == [b"hello"] and len(store.puts) == 2
    counts = _counts(factory)
    assert counts["InvocationsProcesssed"] == 1 and "InvocationFailures" not in counts
    assert counts["TotalProcessingTime"] >= 0 and "TimeInBacklog" in counts
    # Kept a day after it finished, then pruned by the monitor's retention pass.
    with session_scope(factory) as session:
        assert async_inference.prune(session, utcnow()) == 0
        assert async_inference.prune(session, utcnow() + dt.timedelta(days=1, seconds=1)) == 1


def test_model_error_writes_the_failure_object_and_error_notification(factory):
    _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    row_id = _accept(factory, body=b"fail")
    assert _run(factory, row_id, store, invoker) == "failed"
    row = _row(factory, row_id)
    assert row.status == AsyncInferenceStatus.FAILED and row.failure_location is not None
    assert json.loads(store.text(row.failure_location)) == {
        "code": 500,
        "type": "ModelError",
        "message": 'Received server error (500) from primary with message "the model gave up".',
    }
    assert (("results", row.output_location.split("/", 3)[3])) not in store.objects
    message = json.loads(json.loads(store.text(row.failure_location + ".notification.json"))["Message"])
    assert message["invocationStatus"] == "Failed" and "the model gave up" in message["failureReason"]
    assert _counts(factory)["InvocationFailures"] == 1


def test_s3_input_without_content_type_takes_the_objects(factory):
    _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    store.put_object("inputs", "rows.json", b"[[1]]", "application/json")
    untyped = _accept(factory, body=None, input_location="s3://inputs/rows.json")
    typed = _accept(factory, body=None, input_location="s3://inputs/rows.json", content_type="text/csv")
    assert _run(factory, untyped, store, invoker) == _run(factory, typed, store, invoker) == "completed"
    assert invoker.calls == [b"[[1]]", b"[[1]]"]
    assert invoker.content_types == ["application/json", "text/csv"]


def test_invocation_timeout_fails_the_request(factory):
    _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    row_id = _accept(factory, body=b"slow", timeout_seconds=7)
    assert _run(factory, row_id, store, invoker) == "failed"
    row = _row(factory, row_id)
    assert invoker.timeouts == [7.0]  # the router waits InvocationTimeoutSeconds for the replica
    failure = json.loads(store.text(str(row.failure_location)))
    assert failure["type"] == "InvocationTimeout" and "InvocationTimeoutSeconds (7 s)" in failure["message"]
    assert row.variant_name == "AllTraffic" and _counts(factory)["InvocationFailures"] == 1


def test_request_past_its_ttl_expires_without_reaching_the_model(factory):
    _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    row_id = _accept(factory, now=utcnow() - dt.timedelta(seconds=61), ttl_seconds=60)
    assert _run(factory, row_id, store, invoker) == "failed"
    assert invoker.calls == []
    row = _row(factory, row_id)
    assert "RequestTTLSeconds (60 s)" in store.text(str(row.failure_location))
    counts = _counts(factory)
    assert counts["ExpiredRequests"] == 1 and counts["InvocationFailures"] == 1


def test_unreadable_input_fails_as_a_download_failure(factory):
    _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    row_id = _accept(factory, body=None, input_location="s3://not-mine/input.json")
    assert _run(factory, row_id, store, invoker) == "failed"
    assert invoker.calls == []
    assert "AccessDenied" in store.text(str(_row(factory, row_id).failure_location))
    assert _counts(factory)["RequestDownloadFailures"] == 1


def test_a_dead_workers_request_is_taken_over_and_its_result_written_once(factory):
    _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    row_id = _accept(factory)
    # Attempt 1 claimed it, wrote the output, and died before recording the outcome.
    long_ago = utcnow() - dt.timedelta(seconds=60)
    with session_scope(factory) as session:
        assert async_inference.claim(session, row_id, "dead", lease_timeout=5.0, now=long_ago).action == "run"
    row = _row(factory, row_id)
    store.put_object("results", row.output_location.split("/", 3)[3], b"first", "application/json")
    with session_scope(factory) as session:
        assert async_inference.sweep(session, lease_timeout=5.0, grace=30.0, now=utcnow()) == [row_id]

    assert _run(factory, row_id, store, invoker) == "completed"
    done = _row(factory, row_id)
    assert done.attempts == 2 and done.status == AsyncInferenceStatus.COMPLETED
    assert store.text(row.output_location) == "first"  # not overwritten
    assert store.puts.count(row.output_location) == 1
    assert _counts(factory)["InvocationsProcesssed"] == 1
    # The dead attempt cannot record an outcome any more.
    with session_scope(factory) as session:
        assert not async_inference.finish(session, row_id, 1, AsyncInferenceStatus.FAILED)


def test_a_request_interrupted_three_times_fails_instead_of_looping(factory):
    _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    row_id = _accept(factory)
    long_ago = utcnow() - dt.timedelta(seconds=60)
    for index, dead in enumerate(("w1", "w2", "w3")):
        then = long_ago + dt.timedelta(seconds=10 * index)  # each claim lapsed before the next
        with session_scope(factory) as session:
            assert async_inference.claim(session, row_id, dead, lease_timeout=5.0, now=then).action == "run"
    assert _run(factory, row_id, store, invoker) == "failed"
    assert invoker.calls == []
    failure = json.loads(store.text(str(_row(factory, row_id).failure_location)))
    assert failure["type"] == "InternalFailure" and "interrupted 3 times" in failure["message"]


def test_a_parked_request_past_its_ttl_is_sent_to_expire_even_without_capacity(factory):
    _endpoint(factory, instances=0)
    store, invoker = FakeStore(), FakeInvoker()
    row_id = _accept(factory, now=utcnow() - dt.timedelta(seconds=30), ttl_seconds=60)
    assert _run(factory, row_id, store, invoker) == "wait"  # parked: no instance
    with session_scope(factory) as session:
        assert async_inference.sweep(session, lease_timeout=5.0, grace=30.0, now=utcnow()) == []
        later = utcnow() + dt.timedelta(seconds=31)
        assert async_inference.sweep(session, lease_timeout=5.0, grace=30.0, now=later) == [row_id]
        # That delivery expires it, with no instance to run anything.
        assert async_inference.claim(session, row_id, "w", lease_timeout=5.0, now=later).action == "expired"


def test_a_live_owner_keeps_its_request(factory):
    _endpoint(factory)
    row_id = _accept(factory)
    with session_scope(factory) as session:
        assert async_inference.claim(session, row_id, "alive", lease_timeout=5.0).action == "run"
    store, invoker = FakeStore(), FakeInvoker()
    assert _run(factory, row_id, store, invoker) == "busy"
    assert invoker.calls == []


def test_concurrency_limit_parks_requests_and_a_finished_one_wakes_the_next(factory):
    endpoint_id = _endpoint(factory, per_instance=1)
    store, invoker = FakeStore(), FakeInvoker()
    first, second = _accept(factory), _accept(factory)
    with session_scope(factory) as session:
        assert async_inference.claim(session, first, "worker-a", lease_timeout=5.0).action == "run"
    assert _run(factory, second, store, invoker) == "wait"
    assert _row(factory, second).due_at is None  # parked
    with session_scope(factory) as session:
        assert async_inference.sweep(session, lease_timeout=5.0, grace=30.0, now=utcnow()) == []
        assert async_inference.finish(session, first, 1, AsyncInferenceStatus.COMPLETED)
    factory.dispatcher.sent.clear()
    with session_scope(factory) as session:
        assert async_inference.wake(session, endpoint_id, lease_timeout=5.0, now=utcnow()) == [second]
    assert factory.dispatcher.sent == [(dispatch.ASYNC_INFERENCE, (second,))]
    assert _run(factory, second, store, invoker) == "completed"


def test_two_claims_at_once_cannot_both_take_the_last_slot(factory):
    """A claim that read the slot count before the other's commit still parks (SQLite ran both)."""
    _endpoint(factory, per_instance=1)
    first, second = _accept(factory), _accept(factory)
    holder = factory()
    assert async_inference.claim(holder, first, "worker-a", lease_timeout=5.0).action == "run"  # not committed yet
    writing, outcome = threading.Event(), []

    def note_write(conn, cursor, statement, parameters, context, executemany):
        # The contender's first lock (its write on SQLite, the endpoint's row lock on PostgreSQL): it
        # waits there for the holder, after reading everything it reads outside that lock.
        text = statement.lstrip().upper()
        if threading.current_thread().name == "contender" and (text.startswith("UPDATE") or "FOR UPDATE" in text):
            writing.set()

    def contend():
        with session_scope(factory) as session:
            outcome.append(async_inference.claim(session, second, "worker-b", lease_timeout=5.0).action)

    engine = factory.kw["bind"]
    event.listen(engine, "before_cursor_execute", note_write)
    contender = threading.Thread(target=contend, name="contender")
    try:
        contender.start()
        assert writing.wait(30), "the contender never reached its write"
        holder.commit()
        contender.join(60)
    finally:
        holder.close()
        event.remove(engine, "before_cursor_execute", note_write)
    assert outcome == ["wait"]
    assert _row(factory, second).status == AsyncInferenceStatus.QUEUED and _row(factory, second).due_at is None


def test_no_replica_puts_the_request_back_and_zero_instances_parks_it(factory):
    endpoint_id = _endpoint(factory)
    store, invoker = FakeStore(), FakeInvoker()
    invoker.down = True
    row_id = _accept(factory)
    # Put back more often than a request may be interrupted, and still run once a replica is there.
    for _ in range(MAX_ATTEMPTS + 1):
        assert _run(factory, row_id, store, invoker) == "requeued"
    row = _row(factory, row_id)
    assert row.status == AsyncInferenceStatus.QUEUED and row.due_at is None and store.puts == []
    assert row.attempts == 0, "a request put back unrun is not an interrupted attempt"
    with session_scope(factory) as session:
        variant = session.scalar(select(EndpointVariant).where(EndpointVariant.endpoint_id == endpoint_id))
        assert variant is not None
        variant.current_instance_count = 0
    assert _run(factory, row_id, store, invoker) == "wait"
    from neurondock_platform.services import async_metrics

    with session_scope(factory) as session:
        (backlog,) = async_metrics.backlog(session, utcnow())
    assert backlog["ApproximateBacklogSize"] == 1 and backlog["HasBacklogWithoutCapacity"] == 1
    assert backlog["ApproximateAgeOfOldestRequest"] >= 0


def test_accept_refuses_real_time_endpoints_and_both_inputs(factory):
    _endpoint(factory)
    with session_scope(factory) as session:
        session.add(
            Endpoint(
                account_id=ACCOUNT_ID,
                name="realtime",
                arn="arn:x",
                endpoint_config_name="realtime",
                status=EndpointStatus.IN_SERVICE,
                extra={},
            )
        )
    from neurondock_platform.errors import RuntimeValidationError

    with pytest.raises(RuntimeValidationError, match="not an asynchronous endpoint"):
        _accept(factory, name="realtime")
    with pytest.raises(RuntimeValidationError, match="exactly one"):
        _accept(factory, input_location="s3://a/b")
