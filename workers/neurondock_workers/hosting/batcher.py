"""Dynamic batching for one replica: a bounded request queue and one execution at a time.

Opportunistic by default, like Triton with ``max_queue_delay_microseconds`` 0 (serving-peers.md §5):
when the model frees up, the worker takes whatever compatible requests are already queued, up to
``max_batch_size`` rows, and never waits when the queue is empty. ``max_delay`` (env
``NEURONDOCK_MAX_BATCH_DELAY_MS``) lets a lone request wait that long for company.

A batch is built from the handler's public hooks: each request's body goes through ``input_fn``;
requests whose decoded inputs are tensors of one dtype with equal trailing dims and that share
content type, accept and custom attributes are concatenated on dim 0, run through one ``predict_fn``
and split back into per-request predictions for ``output_fn``. Anything else — a custom
``transform_fn``, a non-tensor input, a prediction that does not split on dim 0, an error — runs
one request at a time through ``Handler.invoke``, so answers and errors are exactly what an
unbatched replica gives. The model must treat the rows of dim 0 independently (eval-mode models
do); ``NEURONDOCK_MAX_BATCH_SIZE=1`` turns batching off.

The queue is bounded like the Neuron runtime's (inferentia.md §3.2, §7.3): ``NEURON_MAX_NUM_INFERS``
outstanding executions, NeuronCores + 3 by default. An execution here is a batch of up to
``max_batch_size`` requests, so a replica holds at most ``executions × max_batch_size`` requests
(exactly cores + 3 when batching is off); ``NEURONDOCK_MAX_QUEUE_SIZE`` sets the request bound
directly. Past it a request is refused at once (``QueueFull``), never parked.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurondock_workers.hosting.handler import (
    ANY,
    CUSTOM_ATTRIBUTES_HEADER,
    OCTET_STREAM,
    UTF8_TYPES,
    Context,
    InvocationResult,
    base_type,
)

DEFAULT_MAX_BATCH_SIZE = 8
# The Neuron runtime's default for NEURON_MAX_NUM_INFERS is the process's cores + 3.
EXTRA_INFERS = 3
MANIFEST_FILE = "manifest.json"
# Executions shorter than this on average may run on the event loop's thread when the model is idle.
INLINE_MAX_SECONDS = 0.002
# ... and executions up to this long when the router says the request is the only one it has in
# flight to this replica: nothing is waiting to be batched, and the health frame's 1 s timeout holds.
SOLO_INLINE_MAX_SECONDS = 0.25
# Executions measured before a longer one may run inline (a first call may be a slow warm-up).
SOLO_INLINE_AFTER = 3


class QueueFull(Exception):
    """The replica already holds as many requests as its queue allows (NRT_QUEUE_FULL)."""

    def __init__(self, outstanding: int, limit: int, cores: str) -> None:
        super().__init__(
            f"NRT_QUEUE_FULL (7): {outstanding} of {limit} requests already outstanding on NeuronCore(s) {cores}; "
            "the request was not queued (failed_to_queue). Retry with backoff, or add instances."
        )
        self.outstanding = outstanding
        self.limit = limit


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def visible_cores(env: Mapping[str, str]) -> tuple[int, str]:
    """Count the NeuronCores this process owns from ``NEURON_RT_VISIBLE_CORES``/``NEURON_RT_NUM_CORES``.

    VISIBLE wins over NUM, as in the Neuron runtime; a CPU instance type has neither and counts as
    one execution unit. Returns (count, label) where label reads like ``nc0-nc3``.
    """
    visible = (env.get("NEURON_RT_VISIBLE_CORES") or "").strip()
    if visible:
        count = 0
        for part in visible.split(","):
            lo, _, hi = part.strip().partition("-")
            count += int(hi) - int(lo) + 1 if hi else 1
        first = visible.split(",")[0].partition("-")[0].strip()
        last = visible.split(",")[-1].rpartition("-")[2].strip()
        return max(1, count), f"nc{first}" if count == 1 else f"nc{first}-nc{last}"
    num = _int_env(env, "NEURON_RT_NUM_CORES")
    if num:
        return num, f"nc0-nc{num - 1}" if num > 1 else "nc0"
    return 1, "nc0"


def compiled_batch(model_dir: Path | str | None) -> tuple[int | None, bool]:
    """Return (compiled batch size, dim 0 dynamic) from a compiled artifact's manifest, or (None, True)."""
    if model_dir is None:
        return None, True
    try:
        manifest = json.loads((Path(model_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None, True
    if not isinstance(manifest, dict) or manifest.get("target") != "ml_inf1":
        return None, True
    resources = manifest.get("resources") or {}
    batch = resources.get("compiled_batch_size")
    dynamic = 0 in (resources.get("dynamic_dims") or []) or bool(resources.get("dynamic_batch_size"))
    return (int(batch) if isinstance(batch, int) and batch > 0 else None), dynamic


@dataclass(frozen=True)
class BatchConfig:
    """How one replica batches and how many requests it may hold."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_delay: float = 0.0
    max_queue: int = (1 + EXTRA_INFERS) * DEFAULT_MAX_BATCH_SIZE
    cores: int = 1
    cores_label: str = "nc0"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, model_dir: Path | str | None = None) -> BatchConfig:
        """Read ``NEURONDOCK_MAX_BATCH_SIZE``, ``NEURONDOCK_MAX_BATCH_DELAY_MS``, the queue bounds and the manifest.

        A model compiled for ``ml_inf1`` batches up to its compiled batch when dim 0 is dynamic and
        not at all when its shapes are static (the runtime would refuse any other batch).
        """
        env = os.environ if env is None else env
        cores, label = visible_cores(env)
        batch, dynamic = compiled_batch(model_dir)
        configured = _int_env(env, "NEURONDOCK_MAX_BATCH_SIZE")
        if batch is not None and not dynamic:
            size = 1
        elif configured is not None:
            size = configured
        else:
            size = batch or DEFAULT_MAX_BATCH_SIZE
        size = max(1, size)
        delay_ms = float(env.get("NEURONDOCK_MAX_BATCH_DELAY_MS") or 0)
        executions = _int_env(env, "NEURON_MAX_NUM_INFERS") or cores + EXTRA_INFERS
        queue = _int_env(env, "NEURONDOCK_MAX_QUEUE_SIZE") or executions * size
        return cls(size, max(0.0, delay_ms / 1000.0), max(1, queue), cores, label)


@dataclass
class Request:
    """One queued invocation."""

    body: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    deliver: Callable[[Answer], None]
    queued_ns: int = field(default_factory=time.perf_counter_ns)
    queue_depth: int = 0


@dataclass(frozen=True)
class Answer:
    """What the worker hands back for one request."""

    result: InvocationResult
    batch_size: int
    batch_index: int
    queue_us: int
    queue_depth: int
    # Projected NeuronCore time of the execution that answered (compiled Inferentia models only).
    device_us: int | None = None


@dataclass
class BatchStats:
    """Counters a replica reports with every answer (monotonic since the replica started)."""

    executions: int = 0
    requests: int = 0
    batched_requests: int = 0
    busy_ns: int = 0
    failed_to_queue: int = 0
    # Starts at the inline limit: the first execution, of unknown length, runs on the model thread.
    avg_execution_s: float = INLINE_MAX_SECONDS
    started_ns: int = field(default_factory=time.perf_counter_ns)


def _arity(fn: Callable[..., Any]) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return -1


def _call(fn: Callable[..., Any], arity: int, args: tuple[Any, ...], context: Context) -> Any:
    # The toolkit's convention: one parameter more than the contract means "also pass the context".
    return fn(*args, context) if arity == len(args) + 1 else fn(*args)


def _to_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(f"output_fn must return bytes or str, got {type(body).__name__}")


def _split(prediction: Any, sizes: Sequence[int]) -> list[Any] | None:
    """Split a batched prediction back into per-request pieces on dim 0; None when it cannot be."""
    rows = sum(sizes)
    if isinstance(prediction, torch.Tensor):
        if prediction.dim() == 0 or prediction.shape[0] != rows:
            return None
        return list(torch.split(prediction, list(sizes)))
    if isinstance(prediction, tuple | list) and prediction:
        parts = [_split(p, sizes) for p in prediction]
        if any(p is None for p in parts):
            return None
        return [type(prediction)(p[i] for p in parts if p is not None) for i in range(len(sizes))]
    if isinstance(prediction, dict) and prediction:
        split = {k: _split(v, sizes) for k, v in prediction.items()}
        if any(v is None for v in split.values()):
            return None
        return [{k: v[i] for k, v in split.items() if v is not None} for i in range(len(sizes))]
    return None


class _Decoded:
    __slots__ = ("context", "data", "request")

    def __init__(self, request: Request, context: Context, data: Any) -> None:
        self.request = request
        self.context = context
        self.data = data


class Batcher:
    """Owns the replica's queue and its single model thread."""

    def __init__(self, handler: Any, config: BatchConfig) -> None:
        self.handler = handler
        self.config = config
        self.stats = BatchStats()
        self._queue: collections.deque[Request] = collections.deque()
        self._cv = threading.Condition()
        self._executing = 0
        self._closed = False
        self._unbatchable: set[tuple[Any, ...]] = set()
        # OpenMP's thread count is per thread: the model thread must be told what the process was.
        self._torch_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)
        self._batchable = self._hooks_batchable(handler)
        self._thread.start()

    @staticmethod
    def _hooks_batchable(handler: Any) -> bool:
        # A custom transform_fn owns decode, predict and encode in one call: nothing to batch there.
        default = getattr(handler, "_default_transform_fn", None)
        return default is not None and getattr(handler, "transform_fn", None) == default

    @property
    def batching(self) -> bool:
        """Whether requests can be batched at all with this handler and configuration."""
        return self._batchable and self.config.max_batch_size > 1

    @property
    def outstanding(self) -> int:
        """Requests queued or executing."""
        return len(self._queue) + self._executing

    def submit(self, request: Request) -> None:
        """Queue a request; its ``deliver`` runs on the model thread. Raises QueueFull past the bound."""
        with self._cv:
            outstanding = len(self._queue) + self._executing
            if outstanding >= self.config.max_queue:
                self.stats.failed_to_queue += 1
                raise QueueFull(outstanding, self.config.max_queue, self.config.cores_label)
            request.queue_depth = outstanding
            self._queue.append(request)
            self._cv.notify()

    def run_inline(self, request: Request, solo: bool = False) -> bool:
        """Execute ``request`` on the calling thread if the model is idle and fast; False otherwise.

        At low load the hand-off to the model thread and back costs two thread wake-ups (about
        0.3 ms in all here, measured with a 600 KB request) for nothing: the queue is empty. Only
        executions that have been short (an average under ``INLINE_MAX_SECONDS``) run inline, so a
        slow model never holds up the event loop that reads requests, answers pings and refuses
        overflow. A ``solo`` request (its router has nothing else in flight to this replica, so no
        company to batch it with is coming from there) may run inline up to
        ``SOLO_INLINE_MAX_SECONDS``; a request from elsewhere that arrives meanwhile waits as it
        would have waited in the queue for the one execution at a time.
        """
        stats = self.stats
        limit = SOLO_INLINE_MAX_SECONDS if solo and stats.executions >= SOLO_INLINE_AFTER else INLINE_MAX_SECONDS
        if self._closed or stats.avg_execution_s >= limit:
            return False
        with self._cv:
            if self._queue or self._executing:
                return False
            self._executing = 1
        started = time.perf_counter_ns()
        try:
            self._one(request)
        finally:
            with self._cv:
                self._executing = 0
                self._finish(started, 1)
                if self._queue:
                    self._cv.notify()
        return True

    def _finish(self, started: int, requests: int) -> None:
        elapsed = time.perf_counter_ns() - started
        stats = self.stats
        stats.busy_ns += elapsed
        stats.requests += requests
        # An exponential average of execution time decides whether the next one may run inline.
        stats.avg_execution_s += 0.2 * (elapsed / 1e9 - stats.avg_execution_s)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the model thread from taking work while the caller queues several requests at once."""
        with self._cv:
            yield

    def close(self) -> None:
        """Stop the model thread after the queue empties."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    # --- the model thread -------------------------------------------------------------------------

    def _take(self) -> list[Request] | None:
        cfg = self.config
        with self._cv:
            while not self._queue:
                if self._closed:
                    return None
                self._cv.wait()
            limit = cfg.max_batch_size if self.batching else 1
            if limit > 1 and cfg.max_delay > 0 and len(self._queue) < limit:
                # Only a configured delay ever holds the first request back (serving-peers.md §5).
                deadline = self._queue[0].queued_ns / 1e9 + cfg.max_delay
                while len(self._queue) < limit and not self._closed:
                    remaining = deadline - time.perf_counter_ns() / 1e9
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
            first = self._queue.popleft()
            taken = [first]
            if limit > 1:
                key = (first.content_type, first.accept, first.custom_attributes)
                skipped: list[Request] = []
                while self._queue and len(taken) < limit:
                    req = self._queue.popleft()
                    if (req.content_type, req.accept, req.custom_attributes) == key:
                        taken.append(req)
                    else:
                        skipped.append(req)
                # Requests of another kind keep their place at the head of the queue.
                self._queue.extendleft(reversed(skipped))
            self._executing = len(taken)
            return taken

    def _run(self) -> None:
        torch.set_num_threads(self._torch_threads)
        while True:
            taken = self._take()
            if taken is None:
                return
            started = time.perf_counter_ns()
            try:
                if len(taken) == 1:
                    self._one(taken[0])
                else:
                    self._many(taken)
            finally:
                with self._cv:
                    self._executing = 0
                    self._finish(started, len(taken))

    def _answer(self, request: Request, result: InvocationResult, started: int, size: int, index: int) -> None:
        device_us = getattr(getattr(self.handler, "model", None), "last_device_us", None)
        queue_us = max(0, (started - request.queued_ns) // 1000)
        request.deliver(Answer(result, size, index, queue_us, request.queue_depth, device_us))

    def _one(self, request: Request) -> InvocationResult:
        started = time.perf_counter_ns()
        result: InvocationResult = self.handler.invoke(
            request.body, request.content_type, request.accept, request.custom_attributes
        )
        self.stats.executions += 1
        self._answer(request, result, started, 1, 0)
        return result

    def _context(self, request: Request, content_type: str, accept: str) -> Context:
        headers = {"Content-Type": content_type, "Accept": accept}
        if request.custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES_HEADER] = request.custom_attributes
        return Context(model_dir=str(self.handler.model_dir), request_headers=headers)

    def _accept(self, accept: str | None) -> str:
        return str(self.handler.default_accept) if not accept or accept.strip() == ANY else accept

    def _decode(self, request: Request, arity: int) -> _Decoded | None:
        content_type = request.content_type or OCTET_STREAM
        context = self._context(request, content_type, self._accept(request.accept))
        try:
            data: bytes | str = request.body
            if base_type(content_type) in UTF8_TYPES:
                data = request.body.decode("utf-8")
            decoded = _call(self.handler.input_fn, arity, (data, content_type), context)
        except Exception:
            return None  # Handler.invoke reproduces the error with its status and traceback
        return _Decoded(request, context, decoded)

    def _many(self, taken: list[Request]) -> None:
        """Decode every request, batch the compatible ones, run the rest one by one."""
        in_arity = _arity(self.handler.input_fn)
        singles: list[Request] = []
        groups: dict[tuple[Any, ...], list[_Decoded]] = {}
        for request in taken:
            decoded = self._decode(request, in_arity)
            data = decoded.data if decoded is not None else None
            if decoded is None or not isinstance(data, torch.Tensor) or data.dim() == 0:
                singles.append(request)
                continue
            key = (str(data.dtype), tuple(data.shape[1:]), data.device.type)
            if key in self._unbatchable:
                singles.append(request)
                continue
            groups.setdefault(key, []).append(decoded)
        for key, members in groups.items():
            # Keep each execution within max_batch_size rows; a request bigger than that runs alone.
            chunk: list[_Decoded] = []
            rows = 0
            for member in members:
                n = int(member.data.shape[0])
                if chunk and rows + n > self.config.max_batch_size:
                    self._run_group(key, chunk)
                    chunk, rows = [], 0
                chunk.append(member)
                rows += n
            if chunk:
                self._run_group(key, chunk)
        for request in singles:
            self._one(request)

    def _run_group(self, key: tuple[Any, ...], members: list[_Decoded]) -> None:
        handler = self.handler
        if len(members) == 1:
            self._one(members[0].request)
            return
        started = time.perf_counter_ns()
        sizes = [int(m.data.shape[0]) for m in members]
        try:
            batch = torch.cat([m.data for m in members])
            predict_args = (batch, handler.model)
            prediction = _call(handler.predict_fn, _arity(handler.predict_fn), predict_args, members[0].context)
            pieces = _split(prediction, sizes)
        except Exception:
            pieces = None
        if pieces is None:
            # The model would not take (or give back) a batch: answer one by one, as unbatched. If
            # those all succeed, this input signature never batches again in this replica.
            statuses = [self._one(m.request).status for m in members]
            if all(status == 200 for status in statuses):
                self._unbatchable.add(key)
            return
        self.stats.executions += 1
        self.stats.batched_requests += len(members)
        out_arity = _arity(handler.output_fn)
        for i, (member, piece) in enumerate(zip(members, pieces, strict=True)):
            context = member.context
            accept = context.request_headers["Accept"]
            try:
                encoded = _call(handler.output_fn, out_arity, (piece, accept), context)
                response_type = context.response_headers.get("Content-Type") or accept
                if isinstance(encoded, tuple):
                    encoded, response_type = encoded[0], encoded[1] or response_type
                payload = _to_bytes(encoded)
            except Exception:
                self._one(member.request)
                continue
            result = InvocationResult(
                status=200,
                body=payload,
                content_type=str(response_type),
                custom_attributes=context.response_headers.get(CUSTOM_ATTRIBUTES_HEADER),
                model_latency_us=(time.perf_counter_ns() - started) // 1000,
            )
            self._answer(member.request, result, started, len(members), i)


def make_deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Answer]) -> Callable[[Answer], None]:
    """Return a callback that resolves ``future`` on ``loop`` from the model thread."""

    def _set(answer: Answer) -> None:
        if not future.done():
            future.set_result(answer)

    loop_thread = threading.get_ident()

    def deliver(answer: Answer) -> None:
        if threading.get_ident() == loop_thread:
            _set(answer)  # run inline: no wake-up through the loop's self-pipe needed
        else:
            loop.call_soon_threadsafe(_set, answer)

    return deliver
