"""Asynchronous inference: the AsyncInferenceConfig rules, and the life of one queued request.

A request is accepted (a row, then the task after commit, then the 202), claimed by one worker at a
time (a conditional UPDATE on the attempt counter; the claim is kept by heartbeats), and finished
exactly once (another conditional UPDATE fenced by the attempt). docs/async.md tells the whole story.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, Update, delete, func, select, update
from sqlalchemy.orm import Session, aliased

from neurondock_platform import dispatch
from neurondock_platform.db import utcnow
from neurondock_platform.errors import EndpointNotFoundError, PlatformError, RuntimeValidationError
from neurondock_platform.models import AsyncInference, AsyncInferenceStatus, Endpoint, EndpointVariant
from neurondock_platform.services.validation import invalid

CONFIG = "AsyncInferenceConfig"
# SageMaker "chooses an optimal value" when the config names none; neurondock's choice.
DEFAULT_MAX_CONCURRENT = 4
DEFAULT_TTL_SECONDS = 21600
DEFAULT_TIMEOUT_SECONDS = 900
INLINE_LIMIT = 128_000
# Finished requests are kept this long (for the worker log's ids and debugging), then pruned.
KEEP_FINISHED = dt.timedelta(days=1)
# A claim lapses when its worker has not heartbeaten for this long (workers beat every 0.5 s).
LEASE_SECONDS = 5.0
FINAL = (AsyncInferenceStatus.COMPLETED, AsyncInferenceStatus.FAILED)
OPEN = (AsyncInferenceStatus.QUEUED, AsyncInferenceStatus.IN_PROGRESS)
# Endpoint states in which a request may be accepted (the old fleet serves during an update).
ACCEPTING = ("InService", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed")


class AsyncNotImplemented(PlatformError):
    """A member of AsyncInferenceConfig that neurondock does not implement."""

    code = "NotImplemented"
    http_status = 501


# ----------------------------------------------------------------------------------- configuration


def check_config(config: dict[str, Any]) -> None:
    """CreateEndpointConfig's rules for AsyncInferenceConfig beyond botocore's shapes."""
    output = config.get("OutputConfig") or {}
    path = "asyncInferenceConfig.outputConfig"
    if output.get("KmsKeyId"):
        raise AsyncNotImplemented(
            "AsyncInferenceConfig.OutputConfig.KmsKeyId is not implemented by neurondock: results are written "
            "with the store's own encryption; leave KmsKeyId out."
        )
    if not output.get("S3OutputPath"):
        raise invalid(output.get("S3OutputPath"), f"{path}.s3OutputPath", "Member must not be null")
    for member in ("S3OutputPath", "S3FailurePath"):
        value = output.get(member)
        if value is not None and split_s3_uri(value) is None:
            raise invalid(value, f"{path}.{member[0].lower()}{member[1:]}", "Member must be an s3://bucket/prefix URI")
    notification = output.get("NotificationConfig") or {}
    for topic in notification.get("IncludeInferenceResponseIn") or []:
        wanted = "SuccessTopic" if topic == "SUCCESS_NOTIFICATION_TOPIC" else "ErrorTopic"
        if not notification.get(wanted):
            raise invalid(
                topic,
                f"{path}.notificationConfig.includeInferenceResponseIn",
                f"{topic} needs NotificationConfig.{wanted}",
            )


def split_s3_uri(uri: str) -> tuple[str, str] | None:
    """``s3://bucket/key`` → (bucket, key); None for anything else."""
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[len("s3://") :].partition("/")
    return (bucket, key) if bucket else None


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)


@dataclass(frozen=True)
class Limits:
    """What an endpoint's AsyncInferenceConfig says about running its requests."""

    max_concurrent_per_instance: int
    output_path: str
    failure_path: str | None
    success_topic: str | None
    error_topic: str | None
    include_response_in: tuple[str, ...]


def limits_of(config: dict[str, Any]) -> Limits:
    output = config.get("OutputConfig") or {}
    notification = output.get("NotificationConfig") or {}
    client = config.get("ClientConfig") or {}
    return Limits(
        max_concurrent_per_instance=int(client.get("MaxConcurrentInvocationsPerInstance") or DEFAULT_MAX_CONCURRENT),
        output_path=str(output["S3OutputPath"]),
        failure_path=output.get("S3FailurePath"),
        success_topic=notification.get("SuccessTopic"),
        error_topic=notification.get("ErrorTopic"),
        include_response_in=tuple(notification.get("IncludeInferenceResponseIn") or ()),
    )


# ------------------------------------------------------------------------------------- acceptance


@dataclass(frozen=True)
class AsyncRequest:
    """InvokeEndpointAsync's members as the runtime front door parsed them."""

    input_location: str | None = None
    body: bytes | None = None
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    inference_id: str | None = None
    output_path_extension: str | None = None
    filename: str | None = None
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS


def accept(
    session: Session, *, account_id: str, endpoint_name: str, request: AsyncRequest, now: dt.datetime | None = None
) -> AsyncInference:
    """Record the request as accepted and queue its task after commit; the caller answers 202 after."""
    now = now or utcnow()
    endpoint = session.scalar(select(Endpoint).where(Endpoint.account_id == account_id, Endpoint.name == endpoint_name))
    if endpoint is None:
        raise EndpointNotFoundError(name=endpoint_name, account_id=account_id)
    config = endpoint.extra.get(CONFIG)
    if not config:
        raise RuntimeValidationError(
            f"Endpoint {endpoint_name} of account {account_id} is not an asynchronous endpoint: its endpoint "
            "config has no AsyncInferenceConfig. Use InvokeEndpoint."
        )
    if str(endpoint.status) not in ACCEPTING:
        raise RuntimeValidationError(
            f"Endpoint {endpoint_name} of account {account_id} is in status {endpoint.status} and cannot be "
            "invoked; it must be InService."
        )
    if (request.input_location is None) == (request.body is None):
        raise RuntimeValidationError("Provide exactly one of InputLocation and an inline Body.")
    if request.input_location is not None and split_s3_uri(request.input_location) is None:
        raise RuntimeValidationError(
            f"InputLocation {request.input_location} is not an s3://bucket/key URI (neurondock reads inputs "
            "from S3 only)."
        )
    limits = limits_of(config)
    generated = str(uuid.uuid4())
    extension = request.output_path_extension or ""
    output = _join(limits.output_path, extension, f"{request.filename or generated}.out")
    failure = _join(limits.failure_path, extension, f"{generated}-error.out") if limits.failure_path else None
    row = AsyncInference(
        account_id=account_id,
        endpoint_id=endpoint.id,
        endpoint_name=endpoint.name,
        inference_id=request.inference_id or generated,
        status=AsyncInferenceStatus.QUEUED,
        input_location=request.input_location,
        body=request.body,
        request={
            k: v
            for k, v in (
                ("ContentType", request.content_type),
                ("Accept", request.accept),
                ("CustomAttributes", request.custom_attributes),
            )
            if v is not None
        },
        output_location=output,
        failure_location=failure,
        request_ttl_seconds=request.ttl_seconds,
        invocation_timeout_seconds=request.timeout_seconds,
        received_at=now,
        expires_at=now + dt.timedelta(seconds=request.ttl_seconds),
        due_at=now,
    )
    session.add(row)
    session.flush()
    dispatch.enqueue_after_commit(session, dispatch.ASYNC_INFERENCE, row.id)
    return row


# ----------------------------------------------------------------------------------------- claims

Action = Literal["run", "expired", "exhausted", "busy", "wait", "done"]
# A request whose worker died this many times is failed rather than tried again (a request that
# kills its worker, or a bug, must not loop through the fleet forever).
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Claim:
    """What one delivery of the task does: run (or expire) under ``attempt``, or nothing for now."""

    action: Action
    attempt: int = 0


def capacity(session: Session, endpoint_id: int) -> int:
    """Requests the endpoint may run at once: MaxConcurrentInvocationsPerInstance x instances."""
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None or not endpoint.extra.get(CONFIG):
        return 0
    instances = session.scalar(
        select(func.coalesce(func.sum(EndpointVariant.current_instance_count), 0)).where(
            EndpointVariant.endpoint_id == endpoint_id
        )
    )
    return limits_of(endpoint.extra[CONFIG]).max_concurrent_per_instance * int(instances or 0)


def claim(
    session: Session,
    row_id: int,
    owner: str,
    *,
    lease_timeout: float,
    now: dt.datetime | None = None,
) -> Claim:
    """Decide what a delivery does with the request, and take it when it should run or expire."""
    now = now or utcnow()
    row = session.get(AsyncInference, row_id, populate_existing=True)
    if row is None or row.status in FINAL:
        return Claim("done")
    stale = now - dt.timedelta(seconds=lease_timeout)
    beating = row.heartbeat_at is not None and row.heartbeat_at >= stale
    if row.status == AsyncInferenceStatus.IN_PROGRESS and row.owner != owner and beating:
        # Its owner is alive (or died less than a lease ago): the sweep sends it again if the claim lapses.
        return Claim("busy", row.attempts)
    action: Action = "expired" if now >= row.expires_at else "run"
    if row.attempts >= MAX_ATTEMPTS:
        action = "exhausted"
    take = _unclaimed(row_id, row.attempts).values(
        attempts=row.attempts + 1,
        owner=owner,
        heartbeat_at=now,
        status=AsyncInferenceStatus.IN_PROGRESS,
        started_at=row.started_at or now,
    )
    if action == "run":
        # The slot count is inside the UPDATE: pysqlite runs a SELECT outside the write transaction, so
        # a count read first let two claims both take the last slot. On PostgreSQL the UPDATEs of two
        # requests do not wait for each other: the endpoint's row lock orders them (docs/async.md, "Claimed").
        session.execute(select(Endpoint.id).where(Endpoint.id == row.endpoint_id).with_for_update())
        running = _running(row.endpoint_id, stale, besides=row.id)
        take = take.where(running.scalar_subquery() < capacity(session, row.endpoint_id))
    if getattr(session.execute(take), "rowcount", 0) == 1:
        return Claim(action, row.attempts + 1)
    if action != "run":
        return Claim("busy", row.attempts)
    # No free slot: parked (a finishing request or the monitor's sweep sends it again when one
    # frees), unless another delivery took the request meanwhile.
    parked = session.execute(_unclaimed(row_id, row.attempts).values(due_at=None))
    return Claim("wait" if getattr(parked, "rowcount", 0) == 1 else "busy", row.attempts)


def _running(endpoint_id: int, stale: dt.datetime, *, besides: int | None = None) -> Select[int]:
    """How many of the endpoint's requests hold a live claim (``besides`` one of them)."""
    other = aliased(AsyncInference)  # aliased: inside the claim's UPDATE it must not correlate with it
    query = select(func.count(other.id)).where(
        other.endpoint_id == endpoint_id,
        other.status == AsyncInferenceStatus.IN_PROGRESS,
        other.heartbeat_at >= stale,
    )
    return query if besides is None else query.where(other.id != besides)


def _unclaimed(row_id: int, attempts: int) -> Update:
    """An UPDATE of the request that matches only while it is open and no delivery claimed it since ``attempts``."""
    return (
        update(AsyncInference)
        .where(AsyncInference.id == row_id, AsyncInference.attempts == attempts, AsyncInference.status.in_(OPEN))
        .execution_options(synchronize_session=False)
    )


def _claimed(row_id: int, attempt: int) -> Update:
    """An UPDATE of the request that matches only while ``attempt`` still holds its claim."""
    return (
        update(AsyncInference)
        .where(
            AsyncInference.id == row_id,
            AsyncInference.attempts == attempt,
            AsyncInference.status == AsyncInferenceStatus.IN_PROGRESS,
        )
        .execution_options(synchronize_session=False)
    )


def heartbeat(session: Session, row_id: int, attempt: int, now: dt.datetime | None = None) -> bool:
    """Renew the claim of ``attempt``; False when another attempt took the request over."""
    renewed = session.execute(_claimed(row_id, attempt).values(heartbeat_at=now or utcnow()))
    return getattr(renewed, "rowcount", 0) == 1


def finish(
    session: Session,
    row_id: int,
    attempt: int,
    status: AsyncInferenceStatus,
    *,
    variant_name: str | None = None,
    failure_reason: str | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Record the outcome once: only the attempt that still holds the claim may (True when it did)."""
    done = session.execute(
        _claimed(row_id, attempt).values(
            status=status,
            finished_at=now or utcnow(),
            variant_name=variant_name,
            failure_reason=failure_reason,
            owner=None,
            body=None,
        )
    )
    return getattr(done, "rowcount", 0) == 1


def release(session: Session, row_id: int, attempt: int) -> bool:
    """Park a claimed request back in the queue unrun (no replica could take it yet), its attempt not counted.

    Not counted: MAX_ATTEMPTS bounds the workers a request saw die, and a request put back while its
    endpoint's replicas restart (a host process that died takes them along) would otherwise be failed
    as interrupted before they are back. Its TTL bounds how long it is put back.
    """
    put_back = session.execute(
        _claimed(row_id, attempt).values(
            status=AsyncInferenceStatus.QUEUED,
            owner=None,
            heartbeat_at=None,
            due_at=None,
            attempts=attempt - 1,
        )
    )
    return getattr(put_back, "rowcount", 0) == 1


def _free_slots(session: Session, endpoint_id: int, stale: dt.datetime) -> int:
    running = session.scalar(_running(endpoint_id, stale))
    return max(0, capacity(session, endpoint_id) - int(running or 0))


def wake(session: Session, endpoint_id: int, *, lease_timeout: float, now: dt.datetime) -> list[int]:
    """Send the tasks of the oldest parked requests the endpoint has free slots for (after commit)."""
    free = _free_slots(session, endpoint_id, now - dt.timedelta(seconds=lease_timeout))
    if not free:
        return []
    ids = list(
        session.scalars(
            select(AsyncInference.id)
            .where(
                AsyncInference.endpoint_id == endpoint_id,
                AsyncInference.status == AsyncInferenceStatus.QUEUED,
                AsyncInference.due_at.is_(None),
            )
            .order_by(AsyncInference.id)
            .limit(free)
        )
    )
    _send(session, ids, now)
    return ids


def sweep(session: Session, *, lease_timeout: float, grace: float, now: dt.datetime) -> list[int]:
    """Resend what the database says is owed; return the request ids sent.

    Parked requests go when their endpoint has a free slot (a request finished, or instances came
    up), or when their TTL ran out (the delivery expires them, also at zero capacity). Sent ones
    whose message may be lost go again: queued and long overdue, or claimed by a worker that stopped
    heartbeating (the embedded broker never redelivers the message of a worker that died; Redis does
    only after its visibility timeout).
    """
    overdue = now - dt.timedelta(seconds=grace)
    stale = now - dt.timedelta(seconds=lease_timeout)
    queued = AsyncInference.status == AsyncInferenceStatus.QUEUED
    lost = queued & (AsyncInference.due_at < overdue)
    expired = queued & AsyncInference.due_at.is_(None) & (AsyncInference.expires_at <= now)
    silent = (AsyncInference.status == AsyncInferenceStatus.IN_PROGRESS) & (AsyncInference.heartbeat_at < stale)
    query = select(AsyncInference.id).where(lost | expired | silent).order_by(AsyncInference.id)
    ids = list(session.scalars(query))
    _send(session, ids, now)
    parked = session.scalars(
        select(AsyncInference.endpoint_id)
        .where(AsyncInference.status == AsyncInferenceStatus.QUEUED, AsyncInference.due_at.is_(None))
        .distinct()
    ).all()
    for endpoint_id in parked:
        ids += wake(session, endpoint_id, lease_timeout=lease_timeout, now=now)
    return ids


def open_requests(session: Session) -> list[int]:
    """Every request not finished yet (a starting worker sends them all; claims sort them out)."""
    return list(session.scalars(select(AsyncInference.id).where(AsyncInference.status.in_(OPEN))))


def any_open(session: Session) -> bool:
    """Whether some request is not finished yet (the monitor's sweep keeps an eye on it)."""
    return session.scalar(select(AsyncInference.id).where(AsyncInference.status.in_(OPEN)).limit(1)) is not None


def _send(session: Session, row_ids: list[int], now: dt.datetime) -> None:
    for row_id in row_ids:
        session.execute(
            update(AsyncInference)
            .where(AsyncInference.id == row_id, AsyncInference.status == AsyncInferenceStatus.QUEUED)
            .values(due_at=now)
            .execution_options(synchronize_session=False)
        )
        dispatch.enqueue_after_commit(session, dispatch.ASYNC_INFERENCE, row_id)


def prune(session: Session, now: dt.datetime) -> int:
    """Delete requests finished more than ``KEEP_FINISHED`` ago; return how many."""
    gone = session.execute(
        delete(AsyncInference)
        .where(AsyncInference.status.in_(FINAL), AsyncInference.finished_at < now - KEEP_FINISHED)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(gone, "rowcount", 0) or 0)


def get(session: Session, row_id: int) -> AsyncInference | None:
    return session.get(AsyncInference, row_id, populate_existing=True)


def find(session: Session, *, account_id: str, endpoint_name: str, inference_id: str) -> AsyncInference | None:
    """The newest request of the account's endpoint with this InferenceId."""
    return session.scalar(
        select(AsyncInference)
        .where(
            AsyncInference.account_id == account_id,
            AsyncInference.endpoint_name == endpoint_name,
            AsyncInference.inference_id == inference_id,
        )
        .order_by(AsyncInference.id.desc())
        .limit(1)
    )
