"""Dynamic batching for one replica: a bounded request queue and one execution at a time.

Opportunistic by default, like Triton with ``max_queue_delay_microseconds`` 0: when the model frees
up, the worker takes whatever compatible requests are already queued, up to ``max_batch_size`` rows,
and never waits when the queue is empty. ``max_delay`` (env ``NEURONDOCK_MAX_BATCH_DELAY_MS``) lets
the model, once free with fewer than ``max_batch_size`` requests queued, wait that long for company,
and one delay longer while the last request to arrive says its router is still reading more for it.
``docs/runtime.md`` ("Batching", "Queue bounds") has the rules and how they compare with the Neuron
runtime and other model servers.

Every request goes through the invocation pipeline (``pipeline.py``): its ``input_fn`` runs once;
requests whose decoded inputs are tensors of one dtype with equal trailing dims and that share
content type, accept and custom attributes are concatenated on dim 0, run through one ``predict_fn``
and split back into per-request predictions for ``output_fn``. A custom ``transform_fn`` owns the
whole request, so it is never batched; a user's own ``predict_fn`` is batched only when the model's
environment sets ``NEURONDOCK_MAX_BATCH_SIZE`` (it must then take and return batches); the default
``predict_fn`` is batched unless ``NEURONDOCK_MAX_BATCH_SIZE=1``. The model must treat the rows of
dim 0 independently (eval-mode models do).

Two bounds, each for what it models (``docs/runtime.md``, "Queue bounds"). The request queue holds
``TS_JOB_QUEUE_SIZE`` requests, queued or executing — TorchServe's ``job_queue_size``, 100 by default,
which the SageMaker PyTorch containers let a model's Environment set; ``NEURONDOCK_MAX_QUEUE_SIZE``
overrides it. Past it a request is refused at once (``QueueFull``), never parked. The Neuron runtime's
``NEURON_MAX_NUM_INFERS`` (NeuronCores + 3 by default) bounds executions in flight on the cores: the
one model thread keeps one execution (a batch) in flight, within it on every instance type.

A streaming request (``emit`` set) always runs alone on the model thread, never inline on the event
loop (its parts must leave while it runs), and holds the execution until its last part; each part
counts as progress for the hang watchdog (docs/streaming.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from neurondock_platform import compiled_manifest
from neurondock_workers.hosting import memory
from neurondock_workers.hosting.contract import Failure, InvocationResult
from neurondock_workers.hosting.pipeline import Emit, Invocation, Pipeline

if TYPE_CHECKING:
    from neurondock_workers.hosting.handler import Handler

DEFAULT_MAX_BATCH_SIZE = 8
# TorchServe's default job_queue_size, the queue SageMaker's PyTorch containers serve behind.
DEFAULT_QUEUE_SIZE = 100
# The Neuron runtime's default for NEURON_MAX_NUM_INFERS is the process's cores + 3.
EXTRA_INFERS = 3
# Executions shorter than this on average may run on the event loop's thread when the model is idle.
INLINE_MAX_SECONDS = 0.002
# ... and executions up to this long when the router says the request is the only one it has in
# flight to this replica: nothing is waiting to be batched, and the health frame's 1 s timeout holds.
SOLO_INLINE_MAX_SECONDS = 0.25
# Executions measured before a longer one may run inline (a first call may be a slow warm-up).
SOLO_INLINE_AFTER = 3


class QueueFull(Exception):
    """The replica already holds as many requests as its job queue allows."""

    def __init__(self, outstanding: int, limit: int, cores: str) -> None:
        super().__init__(
            f"Job queue full: {outstanding} of {limit} requests (TS_JOB_QUEUE_SIZE) already outstanding on "
            f"NeuronCore(s) {cores}; the request was not queued (failed_to_queue). Retry with backoff, or add "
            "instances."
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
    """Return (compiled batch size, dim 0 dynamic) for a model compiled for Inferentia, else (None, True)."""
    manifest = compiled_manifest.load(model_dir) if model_dir is not None else None
    if manifest is None or not manifest.on_inferentia:
        return None, True
    return manifest.compiled_batch_size, manifest.dynamic_batch


@dataclass(frozen=True)
class BatchConfig:
    """How one replica batches and how many requests it may hold."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_delay: float = 0.0
    max_queue: int = DEFAULT_QUEUE_SIZE
    cores: int = 1
    cores_label: str = "nc0"
    # Whether a user's own predict_fn is handed batches: only when the model asked for batching.
    batch_user_predict: bool = False
    # NEURON_MAX_NUM_INFERS: executions in flight on the cores (the model thread keeps one).
    max_executions: int = 1 + EXTRA_INFERS

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
        queue = _int_env(env, "NEURONDOCK_MAX_QUEUE_SIZE") or _int_env(env, "TS_JOB_QUEUE_SIZE") or DEFAULT_QUEUE_SIZE
        opted_in = configured is not None and configured > 1
        return cls(
            size, max(0.0, delay_ms / 1000.0), max(1, queue), cores, label, opted_in, max_executions=max(1, executions)
        )


# Slotted and not frozen, like the other objects made per request: a frozen dataclass sets each field
# through object.__setattr__ (InvocationResult took 2.1 µs to make frozen, 0.7 µs this way).
@dataclass(slots=True)
class Request:
    """One queued invocation."""

    body: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    deliver: Callable[[Answer], None]
    queued_ns: int = field(default_factory=time.perf_counter_ns)
    queue_depth: int = 0
    # Set for a request that asked for a streamed answer: receives each part on the model thread.
    emit: Emit | None = None
    # Requests for this replica its router had begun reading but not forwarded when it sent this one.
    following: int = 0


@dataclass(slots=True)
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
    # When the execution running now started (0: none runs); the replica's hang watchdog reads it.
    running_since_ns: int = 0


class Batcher:
    """Owns the replica's queue and its single model thread."""

    def __init__(
        self,
        handler: Handler,
        config: BatchConfig,
        *,
        idle_trim_s: float = memory.IDLE_TRIM_SECONDS,
        trim: Callable[[], None] = memory.release_free_heap,
    ) -> None:
        self.handler = handler
        self.pipeline: Pipeline = handler.pipeline
        self.config = config
        self.stats = BatchStats()
        self._queue: collections.deque[Request] = collections.deque()
        # The condition's lock, entered directly where a request passes (Condition's own `with` is two
        # Python calls); reentrant, since ``hold`` keeps it while the caller submits.
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._executing = 0
        self._closed = False
        self._unbatchable: set[tuple[Any, ...]] = set()
        # The last queued request's ``following``: company its router said was on its way.
        self._following = 0
        # Once executions have run and the model has been idle ``idle_trim_s``, the model thread hands
        # the heap they freed back to the kernel (memory.release_free_heap), once per idle spell.
        self._idle_trim_s = idle_trim_s
        self._trim = trim
        self._ran_since_trim = False
        self._last_done_ns = 0
        # Requests gathered on the event loop's thread for the batch that runs at the end of its pass.
        self._gathered: list[Request] = []
        # The model whose device counters were looked for, and whether it has them.
        self._probed: Any = None
        self._has_device = False
        # OpenMP's thread count is per thread: the model thread must be told what the process was.
        self._torch_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)
        # A custom transform_fn owns decode, predict and encode in one call: nothing to batch there.
        # A user's predict_fn is handed batches only when the model asked for them.
        self._batchable = handler.user_transform_fn is None and (
            self.pipeline.default_predict or config.batch_user_predict
        )
        self._thread.start()

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
        with self._lock:
            outstanding = len(self._queue) + self._executing
            if outstanding >= self.config.max_queue:
                self.stats.failed_to_queue += 1
                raise QueueFull(outstanding, self.config.max_queue, self.config.cores_label)
            request.queue_depth = outstanding
            self._queue.append(request)
            self._following = request.following
            self._cv.notify()

    def run_inline(self, request: Request, solo: bool = False) -> bool:
        """Execute ``request`` on the calling event loop's thread if the model is idle and fast; False otherwise.

        At low load the hand-off to the model thread and back costs two thread wake-ups (about
        0.3 ms in all here, measured with a 600 KB request) for nothing: the queue is empty. Only
        executions that have been short (an average under ``INLINE_MAX_SECONDS``) run inline, so a
        slow model never holds up the event loop that reads requests, answers pings and refuses
        overflow. A ``solo`` request (its router has nothing else in flight to this replica, so no
        company to batch it with is coming from there) runs at once, and may run inline up to
        ``SOLO_INLINE_MAX_SECONDS``; a request from elsewhere that arrives meanwhile waits as it
        would have waited in the queue for the one execution at a time.

        Otherwise, with batching on, the request runs at the end of the loop's current pass together
        with the compatible requests read in the same pass (up to ``max_batch_size``): several
        connections' frames that arrived together make one batch, as they would have in the queue.
        """
        stats = self.stats
        limit = SOLO_INLINE_MAX_SECONDS if solo and stats.executions >= SOLO_INLINE_AFTER else INLINE_MAX_SECONDS
        if self._closed or stats.avg_execution_s >= limit or request.emit is not None:
            return False
        gathered = self._gathered
        if gathered:
            if len(gathered) >= self.config.max_batch_size or _kind(request) != _kind(gathered[0]):
                return False  # queued: the model thread takes it once this batch has run
            with self._lock:
                self._executing += 1
            gathered.append(request)
            return True
        with self._lock:
            if self._queue or self._executing:
                return False
            self._executing = 1
        if solo or not self.batching:
            self._execute([request])
        else:
            self._gathered = [request]
            asyncio.get_running_loop().call_soon(self._run_gathered)
        return True

    def _run_gathered(self) -> None:
        taken, self._gathered = self._gathered, []
        self._execute(taken)

    def _execute(self, taken: list[Request]) -> None:
        """Run one execution (one request or a batch) on this thread; the model is this thread's meanwhile."""
        started = self.stats.running_since_ns = time.perf_counter_ns()
        try:
            if len(taken) == 1:
                self._one(taken[0])
            else:
                self._many(taken)
        finally:
            with self._lock:
                self._executing = 0
                self._finish(started, len(taken))
                if self._queue:
                    self._cv.notify()

    def _finish(self, started: int, requests: int) -> None:
        elapsed = time.perf_counter_ns() - started
        stats = self.stats
        stats.running_since_ns = 0
        stats.busy_ns += elapsed
        stats.requests += requests
        # An exponential average of execution time decides whether the next one may run inline.
        stats.avg_execution_s += 0.2 * (elapsed / 1e9 - stats.avg_execution_s)
        self._last_done_ns = started + elapsed
        if not self._ran_since_trim:
            self._ran_since_trim = True
            self._cv.notify()  # an idle model thread waits untimed: let it start the idle clock

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
            # An execution on the event loop's thread (run_inline) owns the model until it ends.
            while not self._queue or self._executing:
                if self._closed and not self._queue:
                    return None
                self._wait_idle()
            limit = cfg.max_batch_size if self.batching else 1
            if limit > 1 and cfg.max_delay > 0 and len(self._queue) < limit:
                # Only a configured delay ever holds the first request back (docs/runtime.md, "Batching").
                # Its clock starts now, with the model free and a request queued, as TorchServe's
                # pollBatch does: requests that queued during the last execution still wait for the
                # clients that execution answered, instead of running as a fragment of a batch.
                # While the last request to arrive says more are on their way (read by its router, not
                # forwarded yet), the wait may run one delay longer, never more.
                deadline = time.perf_counter_ns() / 1e9 + cfg.max_delay
                announced = deadline + cfg.max_delay
                while len(self._queue) < limit and not self._closed:
                    remaining = (announced if self._following else deadline) - time.perf_counter_ns() / 1e9
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
            first = self._queue.popleft()
            taken = [first]
            if limit > 1 and first.emit is None:
                key = _kind(first)
                skipped: list[Request] = []
                while self._queue and len(taken) < limit:
                    req = self._queue.popleft()
                    if req.emit is None and _kind(req) == key:
                        taken.append(req)
                    else:
                        skipped.append(req)
                # Requests of another kind keep their place at the head of the queue.
                self._queue.extendleft(reversed(skipped))
            self._executing = len(taken)
            return taken

    def _wait_idle(self) -> None:
        """Wait for work (the lock held); after executions, trim the heap once the model has been idle long enough."""
        if not self._ran_since_trim:
            self._cv.wait()
            return
        idle_s = (time.perf_counter_ns() - self._last_done_ns) / 1e9
        if self._executing or idle_s < self._idle_trim_s:
            # An execution inline on the event loop's thread ends without a notify: look again later.
            self._cv.wait(self._idle_trim_s if self._executing else self._idle_trim_s - idle_s)
            return
        self._ran_since_trim = False
        self._cv.release()  # a request may queue or run inline meanwhile; the caller looks again
        try:
            self._trim()
        finally:
            self._cv.acquire()

    def _run(self) -> None:
        torch.set_num_threads(self._torch_threads)
        while True:
            taken = self._take()
            if taken is None:
                return
            self._execute(taken)

    def _device_us(self) -> int | None:
        """The last execution's projected NeuronCore time, for a compiled Inferentia model only."""
        model = self.handler.model
        if model is not self._probed:
            # getattr on a TorchScript module without the attribute raises inside torch (~3 µs a call).
            self._probed, self._has_device = model, hasattr(model, "last_device_us")
        return model.last_device_us if self._has_device else None

    def _answer(self, request: Request, result: InvocationResult, started: int, size: int, index: int) -> None:
        device_us = self._device_us()
        queue_us = max(0, (started - request.queued_ns) // 1000)
        request.deliver(Answer(result, size, index, queue_us, request.queue_depth, device_us))

    def _progress(self, emit: Emit) -> Emit:
        """Wrap a stream's ``emit`` so that each part tells the hang watchdog the execution is alive."""
        stats = self.stats

        def part(body: bytes, content_type: str, custom_attributes: str | None) -> None:
            emit(body, content_type, custom_attributes)
            stats.running_since_ns = time.perf_counter_ns()

        return part

    def _one(self, request: Request) -> None:
        started = time.perf_counter_ns()
        emit = self._progress(request.emit) if request.emit is not None else None
        result = self.pipeline.invoke(
            request.body, request.content_type, request.accept, request.custom_attributes, emit
        )
        self.stats.executions += 1
        self._answer(request, result, started, 1, 0)

    def _finish_alone(self, request: Request, invocation: Invocation) -> InvocationResult:
        """Predict and answer one already-decoded request on its own."""
        started = time.perf_counter_ns()
        result = self.pipeline.finish(invocation)
        self.stats.executions += 1
        self._answer(request, result, started, 1, 0)
        return result

    def _many(self, taken: list[Request]) -> None:
        """Decode every request once, batch the compatible ones, answer the rest one by one."""
        pipeline = self.pipeline
        singles: list[tuple[Request, Invocation]] = []
        groups: dict[tuple[Any, ...], list[tuple[Request, Invocation]]] = {}
        for request in taken:
            invocation = pipeline.begin(request.body, request.content_type, request.accept, request.custom_attributes)
            pipeline.decode(invocation)
            if invocation.failure is not None:
                # input_fn failed: that is the request's answer (it is never decoded again).
                self._answer(request, pipeline.failed(invocation, invocation.failure), time.perf_counter_ns(), 1, 0)
                continue
            key = invocation.batch_key
            if key is None or key in self._unbatchable:
                singles.append((request, invocation))
            else:
                groups.setdefault(key, []).append((request, invocation))
        for key, members in groups.items():
            # Keep each execution within max_batch_size rows; a request bigger than that runs alone.
            chunk: list[tuple[Request, Invocation]] = []
            rows = 0
            for member in members:
                n = member[1].rows
                if chunk and rows + n > self.config.max_batch_size:
                    self._run_group(key, chunk)
                    chunk, rows = [], 0
                chunk.append(member)
                rows += n
            if chunk:
                self._run_group(key, chunk)
        for request, invocation in singles:
            self._finish_alone(request, invocation)

    def _run_group(self, key: tuple[Any, ...], members: list[tuple[Request, Invocation]]) -> None:
        if len(members) == 1:
            self._finish_alone(*members[0])
            return
        pipeline = self.pipeline
        started = time.perf_counter_ns()
        invocations = [invocation for _, invocation in members]
        outcome = pipeline.predict_batch(invocations)
        if outcome.pieces is None:
            self._batch_failed(key, members, outcome.failure)
            return
        self.stats.executions += 1
        self.stats.batched_requests += len(members)
        # output_fn runs once per request; its failure is that request's answer alone. Every answer is
        # encoded before the first is handed back: a handed-back answer wakes the event loop, which then
        # contends with this thread for the GIL while it encodes the rest (eight ResNet-18 answers took
        # up to 6 ms that way instead of 0.3, the model idle meanwhile), and the batch's clients get
        # their answers together rather than milliseconds apart.
        results = [
            pipeline.encode(invocation, piece) for (_, invocation), piece in zip(members, outcome.pieces, strict=True)
        ]
        for i, ((request, _), result) in enumerate(zip(members, results, strict=True)):
            self._answer(request, result, started, len(members), i)

    def _batch_failed(
        self, key: tuple[Any, ...], members: list[tuple[Request, Invocation]], failure: Failure | None
    ) -> None:
        """Answer a batch whose predict_fn failed, or whose prediction did not split back into its requests."""
        pipeline = self.pipeline
        if pipeline.default_predict:
            # The toolkit's predict_fn is the model alone: each request runs again on its own, from its
            # decoded input. If all of them succeed alone, this input signature never batches again.
            statuses = [self._finish_alone(request, invocation).status for request, invocation in members]
            if all(status == 200 for status in statuses):
                self._unbatchable.add(key)
            return
        # A user's predict_fn ran once for these requests and is not run again: the batch fails together.
        self.stats.executions += 1
        failure = failure or pipeline.unsplittable([invocation.rows for _, invocation in members])
        started = time.perf_counter_ns()
        for i, (request, invocation) in enumerate(members):
            self._answer(request, pipeline.failed(invocation, failure), started, len(members), i)


def _kind(request: Request) -> tuple[str | None, str | None, str | None]:
    """What requests must share to be taken into one execution (decoded inputs must match too)."""
    return request.content_type, request.accept, request.custom_attributes


def make_deliver(loop: asyncio.AbstractEventLoop, on_answer: Callable[[Answer], None]) -> Callable[[Answer], None]:
    """Return a callback that runs ``on_answer`` on ``loop``'s thread, from the model thread or from that one."""
    loop_thread = threading.get_ident()

    def deliver(answer: Answer) -> None:
        if threading.get_ident() == loop_thread:
            on_answer(answer)  # run inline: no wake-up through the loop's self-pipe needed
        else:
            loop.call_soon_threadsafe(on_answer, answer)

    return deliver
