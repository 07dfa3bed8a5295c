"""Data Capture on the invocation path: sample, queue, and write SageMaker's capture files off the path.

The request path only decides (one draw of a random number against the endpoint's sampling
percentage) and appends the request's bodies to a bounded in-memory queue; nothing is encoded or
written there. A flusher task per API process takes the queue every ``capture_flush_seconds`` (or
as soon as ``capture_batch_records`` wait), builds the records in a worker thread and writes one
JSON Lines object per (endpoint, variant, hour) to ``<DestinationS3Uri>/<Endpoint>/<Variant>/
yyyy/mm/dd/hh/<MM-SS-mmm>-<uuid>.jsonl`` with the endpoint owner's own credentials
(``s3_client.OwnerClients``, the model's execution role), so the store refuses a destination the
owner could not write to. A record that cannot be queued (queue full) or written (store down,
access denied) never fails the invocation: it is counted (``DataCaptureFailed``) and logged.
The format is in docs/data-capture.md.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from neurondock_platform.dataplane.looptask import LoopTask
from neurondock_platform.services.data_capture import CaptureSettings, media_type

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from neurondock_platform.config import Settings
    from neurondock_platform.dataplane.metrics import MetricsCollector

log = logging.getLogger(__name__)

CSV = "CSV"
JSON = "JSON"
BASE64 = "BASE64"
EVENT_VERSION = "0"
# The content type recorded when the caller (or the model) named none: what the runtime assumes.
DEFAULT_CONTENT_TYPE = "application/octet-stream"
QUEUE_FULL = "queue_full"
WRITE_FAILED = "write_failed"


@dataclass(frozen=True, slots=True)
class CaptureEvent:
    """One sampled invocation as the request path saw it (encoded later, by the flusher)."""

    account_id: str
    endpoint: str
    variant: str
    settings: CaptureSettings
    at: float
    input_body: bytes | None
    input_type: str | None
    output_body: bytes | None
    output_type: str | None
    inference_id: str | None

    @property
    def size(self) -> int:
        return len(self.input_body or b"") + len(self.output_body or b"")


def encoding_for(content_type: str, settings: CaptureSettings) -> str:
    """CSV or JSON when the media type is in that list of CaptureContentTypeHeader, else BASE64."""
    kind = media_type(content_type)
    if kind in settings.csv_types:
        return CSV
    if kind in settings.json_types:
        return JSON
    return BASE64


def captured_body(mode: str, body: bytes, content_type: str | None, settings: CaptureSettings) -> dict[str, str]:
    """One side of ``captureData``: ``observedContentType``, ``mode``, ``data``, ``encoding``."""
    observed = content_type or DEFAULT_CONTENT_TYPE
    encoding = encoding_for(observed, settings)
    data = None
    if encoding != BASE64:
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            encoding = BASE64  # a listed text type whose bytes are not text: kept exactly, as base64
    if data is None:
        data = base64.b64encode(body).decode("ascii")
    return {"observedContentType": observed, "mode": mode, "data": data, "encoding": encoding}


def uuid4s(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs from one read of the OS's randomness: cheaper than uuid.uuid4 each."""
    raw = bytearray(os.urandom(16 * count))
    out = []
    for i in range(0, 16 * count, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


@functools.lru_cache(maxsize=4)
def inference_time(second: int) -> str:
    """``2022-02-14T17:25:49Z``: a record's inferenceTime (records of one second share the string)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def record(event: CaptureEvent, event_id: str | None = None) -> dict[str, Any]:
    """The capture record of one invocation, in SageMaker's shape."""
    data: dict[str, Any] = {}
    if event.settings.capture_input and event.input_body is not None:
        data["endpointInput"] = captured_body("INPUT", event.input_body, event.input_type, event.settings)
    if event.settings.capture_output and event.output_body is not None:
        data["endpointOutput"] = captured_body("OUTPUT", event.output_body, event.output_type, event.settings)
    metadata: dict[str, str] = {"eventId": event_id or uuid4s(1)[0]}
    if event.inference_id:
        metadata["inferenceId"] = event.inference_id
    metadata["inferenceTime"] = inference_time(int(event.at))
    return {"captureData": data, "eventMetadata": metadata, "eventVersion": EVENT_VERSION}


def object_key(prefix: str, endpoint: str, variant: str, at: float, unique: str | None = None) -> str:
    """``<prefix>/<Endpoint>/<Variant>/yyyy/mm/dd/hh/<MM-SS-mmm>-<uuid>.jsonl`` for a file begun at ``at``."""
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    name = f"{when:%M-%S}-{when.microsecond // 1000:03d}-{unique or uuid.uuid4()}.jsonl"
    parts = [prefix] if prefix else []
    parts += [endpoint, variant, f"{when:%Y/%m/%d/%H}", name]
    return "/".join(parts)


GroupKey = tuple[str, str, str, str, str, int]  # account, endpoint, variant, bucket, prefix, hour


def group(events: Iterable[CaptureEvent]) -> dict[GroupKey, list[CaptureEvent]]:
    """Events by the file they go to: one per endpoint, variant, destination and hour."""
    groups: dict[GroupKey, list[CaptureEvent]] = {}
    for e in events:
        key = (e.account_id, e.endpoint, e.variant, e.settings.bucket, e.settings.prefix, int(e.at // 3600))
        groups.setdefault(key, []).append(e)
    return groups


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def jsonl(events: Sequence[CaptureEvent]) -> bytes:
    """A capture file's body: one record per line."""
    encode = _ENCODER.encode
    return "".join(encode(record(e, i)) + "\n" for e, i in zip(events, uuid4s(len(events)), strict=True)).encode()


class Sampler:
    """Decides per request whether it is captured: probability = sampling percentage / 100."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed).random

    def __call__(self, percentage: int) -> bool:
        return percentage >= 100 or (percentage > 0 and self._random() * 100 < percentage)


class CaptureStore(Protocol):
    """Writes one capture file as the endpoint's owner; raises on any failure."""

    def put(self, account_id: str, role_arn: str | None, bucket: str, key: str, body: bytes) -> None: ...


class OwnerStore:
    """A CaptureStore writing with the owner's own credentials (never the platform's root keys)."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        from neurondock_platform.s3_client import OwnerClients

        self._clients = OwnerClients(settings, session_factory, session_name="neurondock-data-capture")

    def put(self, account_id: str, role_arn: str | None, bucket: str, key: str, body: bytes) -> None:
        from neurondock_platform.s3_client import StoreOwner

        client = self._clients(StoreOwner(account_id, role_arn))
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/jsonlines")


# (account id, endpoint name) → each variant's execution role
RoleLookup = Callable[[str, str], dict[str, str | None]]


def database_roles(session_factory: sessionmaker[Session]) -> RoleLookup:
    """Look the variants' execution roles up in the database (once per endpoint per flush)."""

    def lookup(account_id: str, endpoint: str) -> dict[str, str | None]:
        from neurondock_platform.services import data_capture

        with session_factory() as session:
            return data_capture.execution_roles(session, account_id, endpoint)

    return lookup


def writer_for(
    settings: Settings, session_factory: sessionmaker[Session], metrics: MetricsCollector | None
) -> CaptureWriter:
    """The process's capture writer, configured from settings, writing as each endpoint's owner."""
    return CaptureWriter(
        OwnerStore(settings, session_factory),
        database_roles(session_factory),
        metrics,
        interval=settings.capture_flush_seconds,
        batch_records=settings.capture_batch_records,
        max_records=settings.capture_queue_records,
        max_bytes=settings.capture_queue_mb * 1024 * 1024,
        sampler=Sampler(settings.capture_sampling_seed),
    )


class CaptureWriter:
    """The bounded queue of sampled invocations and the task that writes them, one per API process.

    ``offer`` runs on the event loop and never blocks or raises; the flush runs its encoding and
    writes in a worker thread and reports counts back on the loop.
    """

    def __init__(
        self,
        store: CaptureStore,
        roles: RoleLookup,
        metrics: MetricsCollector | None = None,
        *,
        interval: float = 5.0,
        batch_records: int = 1000,
        max_records: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        sampler: Sampler | None = None,
    ) -> None:
        self.store = store
        self.roles = roles
        self.metrics = metrics
        self.interval = interval
        self.batch_records = max(1, batch_records)
        self.max_records = max(1, max_records)
        self.max_bytes = max_bytes
        self.sample = sampler or Sampler()
        self._queue: collections.deque[CaptureEvent] = collections.deque()
        self._bytes = 0
        self._wake: asyncio.Event | None = None
        self._flusher = LoopTask(self._loop)
        self._last_failure_log = 0.0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def observe(
        self,
        account_id: str,
        endpoint: str,
        variant: str,
        settings: CaptureSettings,
        meta: dict[str, Any],
        body: bytes,
        answer_type: str | None,
        answer: bytes,
    ) -> None:
        """Sample one successful invocation and queue it if chosen (request path: no I/O, no encoding)."""
        try:
            if not self.sample(settings.percentage):
                return
            event = CaptureEvent(
                account_id,
                endpoint,
                variant,
                settings,
                time.time(),
                body if settings.capture_input else None,
                meta.get("content_type"),
                answer if settings.capture_output else None,
                answer_type,
                meta.get("inference_id"),
            )
            self.offer(event)
        except Exception:  # capture never fails an invocation
            log.exception("data capture: could not queue an invocation of %s", endpoint)

    def offer(self, event: CaptureEvent) -> bool:
        """Queue an event; a full queue drops it and counts it."""
        size = event.size
        if len(self._queue) >= self.max_records or self._bytes + size > self.max_bytes:
            self._failed(event.account_id, event.endpoint, event.variant, 1, QUEUE_FULL)
            return False
        self._queue.append(event)
        self._bytes += size
        # The first record wakes a flusher that sleeps on an empty queue; a full batch cuts its wait short.
        if self._wake is not None and (len(self._queue) == 1 or len(self._queue) >= self.batch_records):
            self._wake.set()
        return True

    def take(self) -> list[CaptureEvent]:
        """Everything queued so far (the queue starts again empty)."""
        events = list(self._queue)
        self._queue.clear()
        self._bytes = 0
        return events

    async def flush(self) -> int:
        """Write what is queued; returns the records written."""
        events = self.take()
        if not events:
            return 0
        outcomes = await asyncio.to_thread(self._write, events)
        written = 0
        for (account, endpoint, variant), (ok, failed) in outcomes.items():
            written += ok
            if ok and self.metrics is not None:
                self.metrics.capture_written((account, endpoint, variant), ok)
            if failed:
                self._failed(account, endpoint, variant, failed, WRITE_FAILED)
        return written

    def _write(self, events: list[CaptureEvent]) -> dict[tuple[str, str, str], tuple[int, int]]:
        outcomes: dict[tuple[str, str, str], tuple[int, int]] = {}
        roles: dict[tuple[str, str], dict[str, str | None]] = {}
        for (account, endpoint, variant, bucket, prefix, _), batch in group(events).items():
            ok, failed = outcomes.get((account, endpoint, variant), (0, 0))
            try:
                if (account, endpoint) not in roles:
                    roles[(account, endpoint)] = self.roles(account, endpoint)
                key = object_key(prefix, endpoint, variant, batch[0].at)
                role = roles[(account, endpoint)].get(variant)
                self.store.put(account, role, bucket, key, jsonl(batch))
                ok += len(batch)
            except Exception as exc:
                failed += len(batch)
                log.warning(
                    "data capture: could not write %d records of %s/%s (account %s) to s3://%s/%s: %s",
                    len(batch), endpoint, variant, account, bucket, prefix, exc,
                )  # fmt: skip
            outcomes[(account, endpoint, variant)] = (ok, failed)
        return outcomes

    def _failed(self, account: str, endpoint: str, variant: str, count: int, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.capture_failed((account, endpoint, variant), count, reason)
        if reason == QUEUE_FULL:
            now = time.monotonic()
            if now - self._last_failure_log > 10:  # one line per 10 s, not one per request
                self._last_failure_log = now
                log.warning("data capture: queue full (%d records); dropping records of %s", self.queued, endpoint)

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                # Nothing to write: sleep until a record is queued, not a wake-up every interval.
                self._wake.clear()
                await self._wake.wait()
            self._wake.clear()
            if len(self._queue) < self.batch_records:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("data capture flush failed")

    def start(self) -> None:
        """Start the flusher on the running loop."""
        if not self._flusher.running:
            self._wake = asyncio.Event()
            self._flusher.start()

    async def stop(self) -> None:
        """Stop the flusher and write what is still queued."""
        await self._flusher.stop()
        await self.flush()
