"""A model-server replica: load the model, then serve the frame protocol on TCP (and a local Unix socket).

``python -m neurondock_workers.hosting.replica --model-dir DIR --bind 127.0.0.1 --port 0 --key-fd N``

Every connection must first pass the protocol's handshake on this process's own key
(``dataplane/protocol.py``), read from ``--key-fd`` (or handed over by a standby's activation) and
never put in the environment or on the command line.

The model is loaded before the socket opens, so a listening replica is a ready one and a broken
``model_fn`` exits non-zero with its traceback (and one ``NEURONDOCK_REPLICA_FAILED`` line the host
agent turns into a FailureReason) on stderr. Model executions run one at a time on the batcher's
model thread (``hosting/batcher.py``), which keeps the event loop free for pings, for reading the
next requests and for refusing them at once when the job queue is full (status 429).

Every invoke answer's meta carries ``model_latency_us`` (the execution's own time), ``queue_us``,
``queue_depth`` (requests ahead of it on arrival), ``batch_size``/``batch_index`` and the replica's
monotonic counters (``busy_us``, ``uptime_us``, ``executions``, ``failed_to_queue``, ``queue_limit``)
from which the router derives utilization and the batch-size histogram.

A ``health`` frame (the host agent's, not the router's) answers with the requests received so far,
those in flight and the replica's memory (``hosting/memory.py``), including ``recycle`` when the
replica has outgrown its memory limit and wants the agent to replace it.

An invoke frame with ``"stream": true`` is answered by a chunk frame per part as the model produces
it, written from the model thread through the loop, then the ordinary answer frame
(``dataplane/protocol.py``, docs/streaming.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import functools
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from neurondock_platform.dataplane.protocol import (
    HANDSHAKE_SECONDS,
    KIND_CHUNK,
    OP_INVOKE,
    OP_METADATA,
    OP_PING,
    ChannelAuthError,
    FrameChannel,
    ProtocolError,
    ServerHandshake,
    decode_meta,
    encode_frame,
    refusal,
)
from neurondock_workers.exiting import exit_now
from neurondock_workers.hosting import signature
from neurondock_workers.hosting.environment import THREADS_ENV, TIMEOUT_ENV
from neurondock_workers.sandbox import memory_limit_note

if TYPE_CHECKING:
    from neurondock_workers.hosting.batcher import Answer, BatchConfig
    from neurondock_workers.hosting.contract import InvocationResult
    from neurondock_workers.hosting.pipeline import Emit

# Sends one answer frame (its meta, or the meta already encoded as JSON, and its body); always called
# on the event loop's thread.
Reply = Callable[[dict[str, Any] | bytes, bytes], None]

LISTENING_MARKER = "NEURONDOCK_REPLICA_LISTENING"
# Printed (with every thread's traceback) by a replica that ends itself because an execution hung.
TIMED_OUT_MARKER = "NEURONDOCK_REPLICA_TIMED_OUT"
# Its exit code (EX_TEMPFAIL): the host agent starts a fresh process, as after any crash.
EXIT_TIMED_OUT = 75
# The agent's richer ping; the router's protocol has no use for it, so it is defined here.
OP_HEALTH = "health"
FAILED_MARKER = "NEURONDOCK_REPLICA_FAILED"
# Error text goes in the frame's JSON meta, which the protocol caps at 64 KiB; the body keeps it whole.
MAX_META_MESSAGE = 16 * 1024
# How long SIGTERM waits for in-flight executions before the process leaves anyway.
DRAIN_SECONDS = 10.0
# Answers are small; only a slow reader with this much unsent makes the connection wait.
WRITE_HIGH_WATER = 1 << 20


def timeout_grace(timeout: float) -> float:
    """How long past the model timeout a replica lets an execution run before it ends itself.

    The router gives up on a request ``timeout`` seconds after it sent it, so it has answered the
    hung request's caller (424, timed out) before the replica goes; the requests queued behind it
    then see their connection close and are sent to another replica.
    """
    return max(1.0, 0.05 * timeout)


# The watchdog looks this long after an execution's limit, so that it is past it.
WATCHDOG_PAST = 0.001


class HangWatchdog:
    """End the replica when one model execution runs past the model timeout (TorchServe restarts such a worker).

    A hung ``predict_fn`` would otherwise hold the replica's one execution slot forever: every later
    request times out behind it while the replica still answers pings. The watchdog runs on its own
    thread; a hang that holds the GIL stops it too, and then the host agent's health check (which
    the frozen event loop no longer answers) ends the process instead.
    """

    def __init__(self, stats: Any, timeout: float) -> None:
        self.stats = stats
        self.timeout = timeout
        self.limit_ns = int((timeout + timeout_grace(timeout)) * 1e9)

    def start(self) -> None:
        threading.Thread(target=self._run, name="neurondock-hang-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            since, now = self.stats.running_since_ns, time.perf_counter_ns()
            if since and now - since > self.limit_ns:
                self._end((now - since) / 1e9)
            # The execution running now is due at since + limit; one that starts after this look, no
            # sooner than a limit from now. Sleeping until the earlier of the two misses neither, and
            # an idle replica's watchdog wakes once a limit instead of four times a second.
            due = (since or now) + self.limit_ns
            time.sleep((due - now) / 1e9 + WATCHDOG_PAST)

    def _end(self, elapsed: float) -> None:
        print(
            f"{TIMED_OUT_MARKER} a model execution has run for {elapsed:.1f} s, past the model timeout of "
            f"{self.timeout:g} s; this replica exits so that the host agent starts a fresh one. The stack of "
            "every thread follows.",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(EXIT_TIMED_OUT)


def model_timeout(environ: Any) -> float | None:
    """The model timeout the host agent set (None when the replica runs on its own)."""
    try:
        value = float(environ.get(TIMEOUT_ENV) or 0)
    except ValueError:
        return None
    return value if value > 0 else None


@functools.lru_cache(maxsize=64)
def _json_text(text: str) -> str:
    """A string as a JSON string (a replica answers with a handful of content types)."""
    return encode_basestring_ascii(text)


def describe_exception(exc: BaseException, limit: int = 1000) -> str:
    """Return ``Type: message`` on one line, the way a traceback's last line reads."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split()) + memory_limit_note(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReplicaServer:
    """Serves ping, metadata and invoke frames for one loaded handler through its batcher."""

    def __init__(self, handler: Any, config: BatchConfig | None = None, *, key: str | None = None) -> None:
        # Imported here: the host agent imports this module for its markers and must not load torch.
        from neurondock_workers.hosting import batcher
        from neurondock_workers.hosting.memory import GrowthWatch

        # Without a key no connection can authenticate: the replica then serves no one.
        self._key = key
        self._batching = batcher
        self.handler = handler
        self.config = config or batcher.BatchConfig.from_env(model_dir=getattr(handler, "model_dir", None))
        self.batcher = batcher.Batcher(handler, self.config)
        self._channels: set[FrameChannel] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._metadata: dict[str, Any] | None = None
        # The first successful NPY invocation's tensors: an uncompiled model's metadata (hosting/signature.py).
        self._observed: dict[str, Any] | None = None
        self._received = 0
        self.memory = GrowthWatch.from_env()
        self.stopping = False
        # The model whose device counters were looked for, and whether it has them.
        self._probed: Any = None
        self._has_device = False

    def open(self, channel: FrameChannel) -> None:
        """Serve a connection that just opened (``FrameChannel``'s ``on_open``)."""
        task = channel.loop.create_task(self.handle_connection(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle_connection(self, channel: FrameChannel) -> None:
        """Authenticate a connection, then answer its frames one request at a time until the peer closes it."""
        sock = channel.transport.get_extra_info("socket") if channel.transport is not None else None
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._channels.add(channel)
        try:
            if not await self._authenticate(channel):
                return
            loop = channel.loop

            def reply(meta: dict[str, Any] | bytes, body: bytes) -> None:
                self._reply(channel, meta, body)

            def on_frame(frame: tuple[dict[str, Any], bytes]) -> None:
                self._handle(frame[0], frame[1], reply, loop, channel)

            # Frames are answered from callbacks (no task wake-up per frame); this task only sees the end.
            ended = await channel.serve(on_frame)
            if isinstance(ended, ProtocolError | ValueError):
                channel.send({"status": 400, "message": f"bad frame: {ended}"})
                await channel.drain()
        except ConnectionError:
            pass
        finally:
            self._channels.discard(channel)
            channel.close()

    def _reply(self, channel: FrameChannel, meta: dict[str, Any] | bytes, body: bytes) -> None:
        """Send one answer frame, then let the connection's next request in."""
        if channel.is_closing():
            return  # the router gave up on this connection meanwhile: no one reads the answer
        channel.send(meta, body)
        if channel.write_buffer_size() > WRITE_HIGH_WATER:
            task = channel.loop.create_task(self._release_drained(channel))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            channel.release()

    async def _release_drained(self, channel: FrameChannel) -> None:
        # A slow reader: its next request waits until the answers already written have left.
        with contextlib.suppress(ConnectionError):
            await channel.drain()
            channel.release()

    async def _authenticate(self, channel: FrameChannel) -> bool:
        """Run the channel handshake; False (after saying why) when the peer cannot prove the key."""
        if self._key is None:
            channel.write(refusal(ChannelAuthError("this replica has no channel key and serves no one")))
            await channel.drain()
            return False
        shake = ServerHandshake(self._key)
        channel.write(shake.hello())
        try:
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                meta, _ = await channel.next_frame()
            channel.write(shake.answer(meta))
        except ChannelAuthError as exc:
            channel.write(refusal(exc))
            await channel.drain()
            return False
        except (TimeoutError, asyncio.IncompleteReadError, ProtocolError, ValueError):
            return False
        return True

    def _device_counters(self) -> dict[str, Any]:
        # Projected device time for a compiled Inferentia model: NeuronCore utilization reads it.
        model: Any = getattr(self.handler, "model", None)
        if model is not self._probed:
            # getattr on a TorchScript module without the attribute raises inside torch (~3 µs a call).
            self._probed, self._has_device = model, hasattr(model, "device_ns")
        device_ns = model.device_ns if self._has_device else None
        return {"device_busy_us": device_ns // 1000} if isinstance(device_ns, int) else {}

    def _counters_json(self) -> str:
        """The counters every answer carries, as JSON members without braces (all ints this process counted)."""
        stats, config = self.batcher.stats, self.config
        # Written by str(), no format spec: one costs more than the conversion (docs/measured.md).
        return (
            f'"queue_limit":{config.max_queue},'
            f'"max_batch_size":{config.max_batch_size if self.batcher.batching else 1},'
            f'"busy_us":{stats.busy_ns // 1000},"uptime_us":{(time.perf_counter_ns() - stats.started_ns) // 1000},'
            f'"executions":{stats.executions},"failed_to_queue":{stats.failed_to_queue}'
        )

    def _counters(self) -> dict[str, Any]:
        """The counters as a dict, for the answers built as dicts (pings, refusals)."""
        counters: dict[str, Any] = json.loads("{" + self._counters_json() + "}")
        counters.update(self._device_counters())
        return counters

    async def dispatch(
        self, meta: dict[str, Any], body: bytes, writer: FrameChannel | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """Answer one request frame (a streamed invoke writes its parts to ``writer`` first)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[dict[str, Any], bytes]] = loop.create_future()

        def reply(reply_meta: dict[str, Any] | bytes, reply_body: bytes) -> None:
            if not answer.done():
                meta = decode_meta(reply_meta) if isinstance(reply_meta, bytes) else reply_meta
                answer.set_result((meta, reply_body))

        self._handle(meta, body, reply, loop, writer)
        return await answer

    def _handle(
        self,
        meta: dict[str, Any],
        body: bytes,
        reply: Reply,
        loop: asyncio.AbstractEventLoop,
        writer: FrameChannel | None = None,
    ) -> None:
        """Answer one request frame through ``reply`` on the loop's thread: at once, or when its execution ends."""
        op = meta.get("op")
        if op == OP_INVOKE:
            emit = _chunk_writer(writer) if writer is not None and meta.get("stream") else None
            self._invoke(meta, body, reply, loop, emit)
        elif op == OP_PING:
            reply({"status": 200}, b"")
        elif op == OP_HEALTH:
            health = {"requests": self._received, "inflight": self._inflight, **self.memory.snapshot()}
            reply({"status": 200, **health}, b"")
        elif op == OP_METADATA:
            if self._metadata is None:
                self._metadata = signature.describe(self.handler, self._observed)
            reply({"status": 200, **self._metadata, **self._counters()}, b"")
        else:
            reply({"status": 400, "message": f"unknown op {op!r}"}, b"")

    def _invoke(
        self, meta: dict[str, Any], body: bytes, reply: Reply, loop: asyncio.AbstractEventLoop, emit: Emit | None
    ) -> None:
        if self.stopping:
            # Never executed: ``retry`` tells the router to send it to another replica.
            reply({"status": 503, "message": "replica is shutting down", "retry": True}, b"")
            return
        self._received += 1
        batching = self._batching

        def answered(answer: Answer) -> None:
            self._answered(meta, body, reply, answer)

        request = batching.Request(
            body,
            meta.get("content_type"),
            meta.get("accept"),
            meta.get("custom_attributes"),
            batching.make_deliver(loop, answered),
            emit=emit,
            following=int(meta.get("following") or 0),
        )
        self._inflight += 1
        self._idle.clear()
        try:
            solo = meta.get("outstanding") == 1 and not request.following
            if not self.batcher.run_inline(request, solo=solo):
                self.batcher.submit(request)
        except batching.QueueFull as exc:
            self._done()
            # Refused before it was queued: the router may try another replica, the client may retry.
            reply({"status": 429, "message": str(exc), "queue_depth": exc.outstanding, **self._counters()}, b"")

    def _answered(self, meta: dict[str, Any], body: bytes, reply: Reply, answer: Answer) -> None:
        """Answer an executed request (on the loop's thread)."""
        self._done()
        self.memory.check()
        result = answer.result
        if self._observed is None and result.status == 200:
            self._observed = signature.observe(meta.get("content_type"), body, result.content_type, result.body)
            if self._observed is not None:
                self._metadata = None
        if result.status >= 400:
            # The replica log is this platform's CloudWatch: the traceback goes there, where its owner
            # looks (LogStreamArn, `neurondock logs`), never into the answer.
            detail = result.failure.text() if result.failure is not None else result.message
            print(f"invocation failed with status {result.status}: {detail}", file=sys.stderr, flush=True)
        reply(self._answer_meta(result, answer), result.body)

    def _answer_meta(self, result: InvocationResult, answer: Answer) -> bytes:
        """An invoke answer's meta, written as JSON directly (a dict encoded per answer cost twice as much)."""
        status: Any = result.status
        if type(status) is not int:
            status = json.dumps(status)  # a user's InferenceError may carry any status; the router judges it
        # Every other figure is an int this process counted, written as JSON by str().
        meta = (
            f'{{"status":{status},"content_type":{_json_text(result.content_type)},'
            f'"model_latency_us":{result.model_latency_us},"queue_us":{answer.queue_us},'
            f'"queue_depth":{answer.queue_depth},"batch_size":{answer.batch_size},'
            f'"batch_index":{answer.batch_index},{self._counters_json()}'
        )
        # Left out when empty: every answer's meta is encoded here and decoded by the router.
        extra = self._device_counters()
        if result.custom_attributes is not None:
            extra["custom_attributes"] = result.custom_attributes
        if result.message:
            extra["message"] = result.message[:MAX_META_MESSAGE]
        if result.parts:
            extra["parts"] = result.parts
        if answer.device_us is not None:
            extra["device_us"] = answer.device_us
        if extra:
            # The rare fields through the JSON encoder: "{...}" made ",..." to follow the fixed ones.
            meta += "," + json.dumps(extra, separators=(",", ":"))[1:]
        else:
            meta += "}"
        return meta.encode()

    def _done(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Refuse new work, wait for in-flight executions, close connections; True when idle."""
        self.stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            idle = True
        except TimeoutError:
            idle = False
        for channel in list(self._channels):
            channel.close()
        self.batcher.close()
        return idle


class StreamClosed(ConnectionError):
    """The router closed the connection of a stream: the model stops producing parts nobody reads."""


def _chunk_writer(writer: FrameChannel) -> Emit:
    """Return an ``emit`` that sends each part as a chunk frame; called on the model thread."""
    loop = asyncio.get_running_loop()

    def emit(part: bytes, content_type: str, custom_attributes: str | None) -> None:
        if writer.is_closing():
            raise StreamClosed("the router closed the stream; no one reads further parts")
        frame = encode_frame(
            {"kind": KIND_CHUNK, "content_type": content_type, "custom_attributes": custom_attributes}, part
        )
        # Through the loop: the transport is not thread-safe. Parts and the answer leave in order,
        # since the answer is delivered through the same loop after the last part.
        loop.call_soon_threadsafe(writer.write, frame)

    return emit


async def serve(
    handler: Any,
    bind: str,
    port: int,
    drain_seconds: float = DRAIN_SECONDS,
    *,
    key: str | None,
    listen: socket.socket | None = None,
    local: socket.socket | None = None,
) -> bool:
    """Listen (on ``listen`` when the agent bound it), announce the address, serve until SIGTERM/SIGINT.

    ``local``, when the agent bound it, is the Unix socket a router on this host connects to first
    (``protocol.local_name``): the same frames, served the same way.

    Returns True on a clean drain.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    replica = ReplicaServer(handler, key=key)
    timeout = model_timeout(os.environ)
    if timeout is not None:
        HangWatchdog(replica.batcher.stats, timeout).start()

    def channel() -> FrameChannel:
        return FrameChannel(loop, on_open=replica.open)

    if listen is not None:
        # Bound by the agent in the host's network: it works even from a sandbox with no network.
        server = await loop.create_server(channel, sock=listen)
    else:
        server = await loop.create_server(channel, host=bind, port=port)
    servers = [server]
    if local is not None:
        servers.append(await loop.create_unix_server(channel, sock=local))
    host, bound_port = server.sockets[0].getsockname()[:2]
    # Memory growth counts from here: the model is loaded and the replica is about to be ready.
    replica.memory.start()
    print(f"{LISTENING_MARKER} {host}:{bound_port}", flush=True)
    await stop.wait()
    for each in servers:
        each.close()
    idle = await replica.drain(drain_seconds)
    for each in servers:
        await each.wait_closed()
    return idle


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m neurondock_workers.hosting.replica")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--env-json", default="", help="a JSON object of environment variables to set first")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--key-fd", type=int, default=None, help="read the channel key from this inherited fd")
    return parser.parse_args(argv)


def read_key_fd(fd: int) -> str:
    """Read a channel key from an inherited descriptor, then close it."""
    with os.fdopen(fd, "rb") as stream:
        return stream.read(256).decode("ascii").strip()


def _loop_factory() -> Any:
    # uvloop (installed with the platform's server) answers a frame in fewer microseconds.
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _fail(reason: str) -> int:
    traceback.print_exc()
    print(f"{FAILED_MARKER} {reason}", file=sys.stderr, flush=True)
    return 1


def _share_weights(model: Any) -> None:
    from neurondock_workers.hosting import weights

    try:
        note = weights.share_from_env(model, os.environ)
    except Exception as exc:
        # Sharing only saves memory; a replica with private weights still serves correctly.
        note = f"weights not shared: {describe_exception(exc)}"
    if note:
        print(f"neurondock: {note}", flush=True)


def main(
    argv: Sequence[str] | None = None,
    *,
    key: str | None = None,
    listen: socket.socket | None = None,
    local: socket.socket | None = None,
) -> int:
    """Run a replica; the exit code is non-zero when the model cannot be loaded."""
    args = _parse_args(argv)
    if key is None and args.key_fd is not None:
        key = read_key_fd(args.key_fd)
    if not key:
        print(f"{FAILED_MARKER} no channel key: start replicas through the host agent", file=sys.stderr, flush=True)
        return 2
    if args.env_json:
        os.environ.update({str(k): str(v) for k, v in json.loads(args.env_json).items()})

    import torch

    from neurondock_workers.hosting.handler import Handler

    # Intra-op threads as the agent chose them (one per emulated NeuronCore replica, the instance's
    # vCPUs on a CPU instance type); one inter-op thread: a replica runs one execution at a time.
    threads = os.environ.get(THREADS_ENV, "")
    torch.set_num_threads(max(1, int(threads) if threads.isdigit() else args.torch_threads))
    with contextlib.suppress(RuntimeError):  # a standby interpreter may have started the pool already
        torch.set_num_interop_threads(1)
    program = os.environ.get("SAGEMAKER_PROGRAM") or "inference.py"
    print(f"neurondock replica pid={os.getpid()} model_dir={args.model_dir} program={program}", flush=True)
    try:
        handler = Handler(args.model_dir)
    except Exception as exc:
        reason = f"loading code/{program} raised: {describe_exception(exc)}"
        if isinstance(exc, ModuleNotFoundError) and os.path.exists(
            os.path.join(args.model_dir, "code", "requirements.txt")
        ):
            # SageMaker pip-installs code/requirements.txt at container start; a host here has no such step.
            reason += " (code/requirements.txt is not installed here; install it into the worker's environment)"
        return _fail(reason)
    try:
        handler.load_model()
    except Exception as exc:
        return _fail(f"{handler.load_stage} raised: {describe_exception(exc)}")
    _share_weights(handler.model)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        idle = runner.run(serve(handler, args.bind, args.port, key=key, listen=listen, local=local))
    sys.stdout.flush()
    sys.stderr.flush()
    if not idle:
        # A model call that outlived the drain would block the interpreter's exit on its thread.
        os._exit(0)
    return 0


if __name__ == "__main__":
    exit_now(main())
