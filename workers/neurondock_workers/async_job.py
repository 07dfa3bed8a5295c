"""Run one InvokeEndpointAsync request: read its input, invoke a replica, write its result once.

``run_async_inference`` is what the ``neurondock.async_inference`` task calls; each call is one
delivery and is safe to repeat (Celery acks late, the worker start-up and the monitor resend what the
database says is owed):

1. Claim the request (``services.async_inference.claim``): a finished one is left alone; one whose
   worker still heartbeats is looked at again later; one past its RequestTTLSeconds expires; one
   over the endpoint's MaxConcurrentInvocationsPerInstance x instances waits for a slot.
2. Read the input: the inline body kept with the request, or the ``InputLocation`` object read with
   the endpoint owner's credentials (the model's execution role in the owner's account).
3. Invoke a replica through the data plane's router (``dataplane.background``), limited to
   InvocationTimeoutSeconds. No replica to take it (scaled to zero, all busy) puts it back unrun.
4. Write the answer to OutputLocation, or the error to FailureLocation, with the owner's credentials
   and ``If-None-Match: *`` — a second attempt after a worker died finds the object and leaves it —
   then the SNS-shaped notification record beside it when the config names a topic, then record
   the outcome and its metrics in one transaction fenced by the attempt.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.dataplane.background import BackgroundInvoker
from neurondock_platform.dataplane.client import ReplicaTimeout
from neurondock_platform.dataplane.protocol import OP_INVOKE
from neurondock_platform.dataplane.router import ThrottlingError
from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.errors import PlatformError, ServiceUnavailable
from neurondock_platform.models import AsyncInference, AsyncInferenceStatus, Endpoint
from neurondock_platform.s3_client import OwnerClientFactory, StoreOwner
from neurondock_platform.services import async_inference, async_metrics
from neurondock_platform.services.async_inference import split_s3_uri

log = logging.getLogger(__name__)

NOTIFICATION_SUFFIX = ".notification.json"
# S3's answers to a conditional write whose object already exists (or is being written).
_EXISTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


@dataclass(frozen=True)
class AsyncConfig:
    """How a worker holds its claim on a request, and its metric period."""

    region: str = "us-east-1"
    lease_timeout: float = async_inference.LEASE_SECONDS
    heartbeat_interval: float = 0.5
    metrics_period: int = 10


@dataclass(frozen=True)
class Outcome:
    """What one delivery did: completed, failed, lost (another attempt finished it), or nothing yet."""

    state: str


@dataclass(frozen=True)
class _Job:
    row_id: int
    attempt: int
    account_id: str
    endpoint_name: str
    endpoint_id: int
    role_arn: str | None
    inference_id: str
    input_location: str | None
    body: bytes | None
    request: dict[str, Any]
    output_location: str
    failure_location: str | None
    timeout_seconds: int
    ttl_seconds: int
    received_at: dt.datetime
    limits: async_inference.Limits


class _Failure(Exception):
    """The request failed; ``metric`` is the extra counter it adds beside InvocationFailures.

    ``kind`` and ``code`` go into the failure object beside the reason: the model's HTTP status for a
    model error, 0 when no model answered.
    """

    def __init__(
        self, reason: str, metric: str | None = None, variant: str | None = None, *, kind: str, code: int = 0
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metric = metric
        self.variant = variant
        self.kind = kind
        self.code = code

    def document(self) -> bytes:
        """The failure object: JSON in the shape of the PyTorch container's error answers."""
        return json.dumps({"code": self.code, "type": self.kind, "message": self.reason}).encode()


def run_async_inference(
    factory: sessionmaker[Session],
    row_id: int,
    clients: OwnerClientFactory,
    invoker: BackgroundInvoker,
    config: AsyncConfig,
) -> Outcome:
    """One delivery of the task: claim, run or expire, write the result once, record it."""
    owner = uuid.uuid4().hex[:12]  # one per delivery: a redelivery is never mistaken for its owner
    with session_scope(factory) as session:
        claim = async_inference.claim(session, row_id, owner, lease_timeout=config.lease_timeout)
    if claim.action in ("busy", "wait", "done"):
        return Outcome(claim.action)
    job = _load(factory, row_id, claim.attempt)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(factory, job, config, stop), daemon=True)
    beat.start()
    try:
        if claim.action == "exhausted":
            reason = (
                f"The request was interrupted {claim.attempt - 1} times (its worker stopped before it finished); "
                "it was not tried again."
            )
            return _fail(factory, clients, job, config, _Failure(reason, kind="InternalFailure"))
        if claim.action == "expired":
            reason = (
                f"Request expired: it waited longer than its RequestTTLSeconds ({job.ttl_seconds} s) in the queue "
                "before an instance could take it."
            )
            return _fail(factory, clients, job, config, _Failure(reason, "ExpiredRequests", kind="ExpiredRequest"))
        try:
            variant, answer_meta, answer_body = _run(clients, invoker, job)
        except _Requeue as requeue:
            with session_scope(factory) as session:
                async_inference.release(session, row_id, job.attempt)
            log.info("async inference %s put back: %s", job.inference_id, requeue)
            return Outcome("requeued")
        except _Failure as failure:
            return _fail(factory, clients, job, config, failure)
        return _complete(factory, clients, job, config, variant, answer_meta, answer_body)
    finally:
        stop.set()
        beat.join(timeout=5)


class _Requeue(Exception):
    """No replica could take the request now; it goes back to the queue unrun."""


def _load(factory: sessionmaker[Session], row_id: int, attempt: int) -> _Job:
    with session_scope(factory) as session:
        row = session.get(AsyncInference, row_id)
        endpoint = session.get(Endpoint, row.endpoint_id) if row is not None else None
        if row is None or endpoint is None:
            raise LookupError(f"async inference {row_id} or its endpoint is gone")
        variants = sorted(endpoint.variants, key=lambda v: v.position)
        role = (variants[0].container or {}).get("ExecutionRoleArn") if variants else None
        return _Job(
            row_id=row.id,
            attempt=attempt,
            account_id=row.account_id,
            endpoint_name=row.endpoint_name,
            endpoint_id=row.endpoint_id,
            role_arn=role,
            inference_id=row.inference_id,
            input_location=row.input_location,
            body=row.body,
            request=dict(row.request or {}),
            output_location=row.output_location,
            failure_location=row.failure_location,
            timeout_seconds=row.invocation_timeout_seconds,
            ttl_seconds=row.request_ttl_seconds,
            received_at=row.received_at,
            limits=async_inference.limits_of(endpoint.extra[async_inference.CONFIG]),
        )


def _heartbeat(factory: sessionmaker[Session], job: _Job, config: AsyncConfig, stop: threading.Event) -> None:
    while not stop.wait(config.heartbeat_interval):
        try:
            with session_scope(factory) as session:
                if not async_inference.heartbeat(session, job.row_id, job.attempt):
                    return
        except Exception:
            log.exception("async inference %s: heartbeat failed; trying again", job.inference_id)


def _client(clients: OwnerClientFactory, job: _Job) -> Any:
    return clients(StoreOwner(job.account_id, job.role_arn))


def _read_input(clients: OwnerClientFactory, job: _Job) -> tuple[bytes, str | None]:
    """The input's bytes and, from S3, the object's Content-Type."""
    if job.input_location is None:
        return job.body or b"", None
    bucket, key = split_s3_uri(job.input_location) or ("", "")
    try:
        got = _client(clients, job).get_object(Bucket=bucket, Key=key)
        return bytes(got["Body"].read()), got.get("ContentType")
    except (ClientError, BotoCoreError) as exc:
        raise _Failure(
            f"Could not read the input {job.input_location} with the endpoint owner's credentials: {exc}",
            "RequestDownloadFailures",
            kind="RequestDownloadFailure",
        ) from exc


def _run(clients: OwnerClientFactory, invoker: BackgroundInvoker, job: _Job) -> tuple[str, dict[str, Any], bytes]:
    body, stored_type = _read_input(clients, job)
    meta = {
        "op": OP_INVOKE,
        # A request without ContentType takes the input object's (docs/async.md): the SageMaker
        # Python SDK's AsyncPredictor uploads with its serializer's type and sends none.
        "content_type": job.request.get("ContentType") or stored_type,
        "accept": job.request.get("Accept"),
        "custom_attributes": job.request.get("CustomAttributes"),
        "inference_id": job.inference_id,
    }
    try:
        answer = invoker.invoke(job.account_id, job.endpoint_name, meta, body, float(job.timeout_seconds))
    except (ServiceUnavailable, ThrottlingError) as exc:
        raise _Requeue(exc.message) from exc
    except ReplicaTimeout as exc:
        raise _Failure(
            "Invocation timed out: the model did not answer within InvocationTimeoutSeconds "
            f"({job.timeout_seconds} s).",
            kind="InvocationTimeout",
        ) from exc
    except PlatformError as exc:
        raise _Failure(exc.message, kind=exc.code) from exc
    status = int(answer.meta.get("status", 500))
    if status != 200:
        original = str(answer.meta.get("message") or "")
        kind = "client" if 400 <= status < 500 else "server"
        raise _Failure(
            f'Received {kind} error ({status}) from primary with message "{original[:2000]}".',
            variant=answer.variant,
            kind="ModelError",
            code=status,
        )
    return answer.variant, answer.meta, answer.body


def _put_once(client: Any, uri: str, body: bytes, content_type: str) -> bool:
    """Write the object unless it exists; False when an earlier attempt already wrote it."""
    bucket, key = split_s3_uri(uri) or ("", "")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _EXISTS:
            return False
        raise
    return True


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification(
    job: _Job, region: str, status: str, now: dt.datetime, topic: str, *, content_type: str | None, reason: str | None
) -> dict[str, Any]:
    """The SNS notification SageMaker would publish to ``topic``, with its message (docs/async.md)."""
    request: dict[str, Any] = {"endpointName": job.endpoint_name}
    for key, member in (("accept", "Accept"), ("contentType", "ContentType"), ("customAttributes", "CustomAttributes")):
        if job.request.get(member) is not None:
            request[key] = job.request[member]
    if job.input_location is not None:
        request["inputLocation"] = job.input_location
    response: dict[str, Any] = {}
    if status == "Completed":
        response = {"contentType": content_type or "application/octet-stream", "outputLocation": job.output_location}
    elif job.failure_location is not None:
        response = {"failureLocation": job.failure_location}
    message: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": _iso(now),
        "receivedTime": _iso(job.received_at),
        "invocationStatus": status,
        "requestParameters": request,
        "responseParameters": response,
        "inferenceId": job.inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    if reason is not None:
        message["failureReason"] = reason
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{topic}/{job.output_location}")),
        "TopicArn": topic,
        "Message": json.dumps(message),
        "Timestamp": _iso(now),
        "SignatureVersion": "1",
    }


def _complete(
    factory: sessionmaker[Session],
    clients: OwnerClientFactory,
    job: _Job,
    config: AsyncConfig,
    variant: str,
    answer_meta: dict[str, Any],
    body: bytes,
) -> Outcome:
    content_type = str(answer_meta.get("content_type") or "application/octet-stream")
    client = _client(clients, job)
    try:
        _put_once(client, job.output_location, body, content_type)
    except (ClientError, BotoCoreError) as exc:
        failure = _Failure(
            f"Could not write the result to {job.output_location} with the endpoint owner's credentials: {exc}",
            "ResponseUploadFailures",
            variant,
            kind="ResponseUploadFailure",
        )
        return _fail(factory, clients, job, config, failure)
    now = utcnow()
    topic = job.limits.success_topic
    if topic:
        record = notification(job, config.region, "Completed", now, topic, content_type=content_type, reason=None)
        _write_notification(client, job.output_location, record)
    return _finish(factory, job, config, AsyncInferenceStatus.COMPLETED, variant, {"InvocationsProcesssed": 1}, None)


def _fail(
    factory: sessionmaker[Session], clients: OwnerClientFactory, job: _Job, config: AsyncConfig, failure: _Failure
) -> Outcome:
    location = job.failure_location or job.output_location.removesuffix(".out") + "-error.out"
    client = _client(clients, job)
    try:
        _put_once(client, location, failure.document(), "application/json")
        topic = job.limits.error_topic
        if topic:
            now = utcnow()
            record = notification(job, config.region, "Failed", now, topic, content_type=None, reason=failure.reason)
            _write_notification(client, location, record)
    except (ClientError, BotoCoreError):
        # The failure stays in the database (and its metrics) even when the owner cannot write it.
        log.exception("async inference %s: could not write its failure object", job.inference_id)
    counters = {"InvocationFailures": 1}
    if failure.metric:
        counters[failure.metric] = 1
    return _finish(factory, job, config, AsyncInferenceStatus.FAILED, failure.variant, counters, failure.reason)


def _write_notification(client: Any, location: str, record: dict[str, Any]) -> None:
    try:
        _put_once(client, location + NOTIFICATION_SUFFIX, json.dumps(record).encode(), "application/json")
    except (ClientError, BotoCoreError):
        log.exception("could not write the notification record beside %s", location)


def _finish(
    factory: sessionmaker[Session],
    job: _Job,
    config: AsyncConfig,
    status: AsyncInferenceStatus,
    variant: str | None,
    counters: dict[str, int],
    reason: str | None,
) -> Outcome:
    now = utcnow()
    with session_scope(factory) as session:
        variant_name = variant or async_metrics.first_variant(session, job.endpoint_id)
        done = async_inference.finish(
            session, job.row_id, job.attempt, status, variant_name=variant_name, failure_reason=reason, now=now
        )
        if not done:
            # Another attempt took the request over; its outcome is the one recorded.
            return Outcome("lost")
        row = session.get(AsyncInference, job.row_id, populate_existing=True)
        assert row is not None
        async_metrics.record_outcome(session, row, variant_name, counters, now=now, period=config.metrics_period)
        # The slot this request held is free: the oldest parked request of the endpoint goes now.
        async_inference.wake(session, job.endpoint_id, lease_timeout=config.lease_timeout, now=now)
    return Outcome("completed" if status == AsyncInferenceStatus.COMPLETED else "failed")
