"""A model-server replica: load the model, then serve the frame protocol on TCP.

``python -m neurondock_workers.hosting.replica --model-dir DIR --bind 127.0.0.1 --port 0``

The model is loaded before the socket opens, so a listening replica is a ready one and a broken
``model_fn`` exits non-zero with its traceback (and one ``NEURONDOCK_REPLICA_FAILED`` line the host
agent turns into a FailureReason) on stderr. Model executions run one at a time on the batcher's
model thread (``hosting/batcher.py``), which keeps the event loop free for pings, for reading the
next requests and for refusing them at once when the queue is full (status 429, ``NRT_QUEUE_FULL``).

Every invoke answer's meta carries ``model_latency_us`` (the execution's own time), ``queue_us``,
``queue_depth`` (requests ahead of it on arrival), ``batch_size``/``batch_index`` and the replica's
monotonic counters (``busy_us``, ``uptime_us``, ``executions``, ``failed_to_queue``, ``queue_limit``)
from which the router derives utilization and the batch-size histogram.

A ``health`` frame (the host agent's, not the router's) answers with the requests received so far,
those in flight and the replica's memory (``hosting/memory.py``), including ``recycle`` when the
replica has outgrown its memory limit and wants the agent to replace it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurondock_platform.dataplane.protocol import (
    OP_INVOKE,
    OP_METADATA,
    OP_PING,
    ProtocolError,
    encode_frame,
    read_frame,
)
from neurondock_workers.hosting.environment import THREADS_ENV

if TYPE_CHECKING:
    from neurondock_workers.hosting.batcher import Answer, BatchConfig

LISTENING_MARKER = "NEURONDOCK_REPLICA_LISTENING"
# The agent's richer ping; the router's protocol has no use for it, so it is defined here.
OP_HEALTH = "health"
FAILED_MARKER = "NEURONDOCK_REPLICA_FAILED"
# Error text goes in the frame's JSON meta, which the protocol caps at 64 KiB; the body keeps it whole.
MAX_META_MESSAGE = 16 * 1024
# How long SIGTERM waits for in-flight executions before the process leaves anyway.
DRAIN_SECONDS = 10.0
# Answers are small; only a slow reader with this much unsent makes the connection wait.
WRITE_HIGH_WATER = 1 << 20
MANIFEST_FILE = "manifest.json"


def describe_exception(exc: BaseException, limit: int = 1000) -> str:
    """Return ``Type: message`` on one line, the way a traceback's last line reads."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReplicaServer:
    """Serves ping, metadata and invoke frames for one loaded handler through its batcher."""

    def __init__(self, handler: Any, config: BatchConfig | None = None) -> None:
        # Imported here: the host agent imports this module for its markers and must not load torch.
        from neurondock_workers.hosting import batcher
        from neurondock_workers.hosting.memory import GrowthWatch

        self._batching = batcher
        self.handler = handler
        self.config = config or batcher.BatchConfig.from_env(model_dir=getattr(handler, "model_dir", None))
        self.batcher = batcher.Batcher(handler, self.config)
        self._writers: set[asyncio.StreamWriter] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._metadata: dict[str, Any] | None = None
        self._received = 0
        self.memory = GrowthWatch.from_env()
        self.stopping = False

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer frames on one connection, one request at a time, until the peer closes it."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writers.add(writer)
        try:
            while True:
                try:
                    meta, body = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                except (ProtocolError, ValueError) as exc:
                    writer.write(encode_frame({"status": 400, "message": f"bad frame: {exc}"}))
                    await writer.drain()
                    break
                reply, reply_body = await self.dispatch(meta, body)
                writer.write(encode_frame(reply, reply_body))
                if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _device_counters(self) -> dict[str, Any]:
        # Projected device time for a compiled Inferentia model: NeuronCore utilization reads it.
        device_ns = getattr(getattr(self.handler, "model", None), "device_ns", None)
        return {"device_busy_us": device_ns // 1000} if isinstance(device_ns, int) else {}

    def _counters(self) -> dict[str, Any]:
        stats = self.batcher.stats
        return {
            "queue_limit": self.config.max_queue,
            "max_batch_size": self.config.max_batch_size if self.batcher.batching else 1,
            "busy_us": stats.busy_ns // 1000,
            "uptime_us": (time.perf_counter_ns() - stats.started_ns) // 1000,
            "executions": stats.executions,
            "failed_to_queue": stats.failed_to_queue,
            **self._device_counters(),
        }

    async def dispatch(self, meta: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        """Answer one request frame."""
        op = meta.get("op")
        if op == OP_INVOKE:
            return await self._invoke(meta, body)
        if op == OP_PING:
            return {"status": 200}, b""
        if op == OP_HEALTH:
            health = {"requests": self._received, "inflight": self._inflight, **self.memory.snapshot()}
            return {"status": 200, **health}, b""
        if op == OP_METADATA:
            if self._metadata is None:
                self._metadata = model_metadata(self.handler)
            return {"status": 200, **self._metadata, **self._counters()}, b""
        return {"status": 400, "message": f"unknown op {op!r}"}, b""

    async def _invoke(self, meta: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        if self.stopping:
            # Never executed: ``retry`` tells the router to send it to another replica.
            return {"status": 503, "message": "replica is shutting down", "retry": True}, b""
        self._received += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        batching = self._batching
        request = batching.Request(
            body,
            meta.get("content_type"),
            meta.get("accept"),
            meta.get("custom_attributes"),
            batching.make_deliver(loop, future),
        )
        self._inflight += 1
        self._idle.clear()
        try:
            if not self.batcher.run_inline(request, solo=meta.get("outstanding") == 1):
                self.batcher.submit(request)
        except batching.QueueFull as exc:
            self._done()
            # Refused before it was queued: the router may try another replica, the client may retry.
            return {"status": 429, "message": str(exc), "queue_depth": exc.outstanding, **self._counters()}, b""
        try:
            answer = await future
        finally:
            self._done()
        self.memory.check()
        result = answer.result
        if result.status >= 400:
            # The replica log is this platform's CloudWatch: keep the traceback where users look.
            print(
                f"invocation failed with status {result.status}: {result.message}",
                file=sys.stderr,
                flush=True,
            )
        return {
            "status": result.status,
            "content_type": result.content_type,
            "custom_attributes": result.custom_attributes,
            "message": result.message[:MAX_META_MESSAGE],
            "model_latency_us": result.model_latency_us,
            "queue_us": answer.queue_us,
            "queue_depth": answer.queue_depth,
            "batch_size": answer.batch_size,
            "batch_index": answer.batch_index,
            **({"device_us": answer.device_us} if answer.device_us is not None else {}),
            **self._counters(),
        }, result.body

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
        for writer in list(self._writers):
            writer.close()
        self.batcher.close()
        return idle


_OIP_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float32": "FP32",
    "float64": "FP64",
}


def model_metadata(handler: Any) -> dict[str, Any]:
    """Describe the model's inputs and outputs as far as they are known (OIP model metadata).

    A compiled artifact's manifest knows its static shapes and dtypes; dim 0 is -1 when it is
    dynamic. Plain TorchScript only knows its argument names: shapes are -1 and the datatype is
    FP32, which is what the default handler makes of JSON and CSV bodies.
    """
    model_dir = Path(getattr(handler, "model_dir", "."))
    try:
        manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict) and manifest.get("emulated") is True:
        resources = manifest.get("resources") or {}
        static = resources.get("static_shapes") or {}
        dynamic = 0 in (resources.get("dynamic_dims") or [])
        names = [i.get("name") for i in (manifest.get("example_inputs") or {}).get("inputs") or []]

        def tensors(specs: list[dict[str, Any]], prefix: str, given: list[Any]) -> list[dict[str, Any]]:
            out = []
            for i, spec in enumerate(specs):
                shape = [int(d) for d in spec.get("shape") or []]
                if dynamic and shape:
                    shape[0] = -1
                name = given[i] if i < len(given) and given[i] else f"{prefix}{i}"
                datatype = _OIP_DATATYPES.get(str(spec.get("dtype")), "FP32")
                out.append({"name": name, "datatype": datatype, "shape": shape})
            return out

        platform = "neurondock_inf1_emulated" if manifest.get("target") == "ml_inf1" else "pytorch_torchscript"
        return {
            "platform": platform,
            "inputs": tensors(static.get("inputs") or [], "input", names),
            "outputs": tensors(static.get("outputs") or [], "output", []),
        }
    model = getattr(handler, "model", None)
    inputs: list[dict[str, Any]] = []
    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is not None:
        args = [a.name for a in schema.arguments if a.name != "self"]
        inputs = [{"name": n, "datatype": "FP32", "shape": [-1]} for n in args]
    platform = "pytorch_torchscript" if schema is not None else "pytorch"
    return {"platform": platform, "inputs": inputs, "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1]}]}


async def serve(handler: Any, bind: str, port: int, drain_seconds: float = DRAIN_SECONDS) -> bool:
    """Listen, announce the address on stdout, and serve until SIGTERM/SIGINT; True on a clean drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    replica = ReplicaServer(handler)
    server = await asyncio.start_server(replica.handle_connection, host=bind, port=port)
    host, bound_port = server.sockets[0].getsockname()[:2]
    # Memory growth counts from here: the model is loaded and the replica is about to be ready.
    replica.memory.start()
    print(f"{LISTENING_MARKER} {host}:{bound_port}", flush=True)
    await stop.wait()
    server.close()
    idle = await replica.drain(drain_seconds)
    await server.wait_closed()
    return idle


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m neurondock_workers.hosting.replica")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--env-json", default="", help="a JSON object of environment variables to set first")
    parser.add_argument("--torch-threads", type=int, default=1)
    return parser.parse_args(argv)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run a replica; the exit code is non-zero when the model cannot be loaded."""
    args = _parse_args(argv)
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
            reason += (
                " (code/requirements.txt is not installed here; install it into the worker's environment)"
            )
        return _fail(reason)
    try:
        handler.load_model()
    except Exception as exc:
        return _fail(f"{handler.load_stage} raised: {describe_exception(exc)}")
    _share_weights(handler.model)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        idle = runner.run(serve(handler, args.bind, args.port))
    sys.stdout.flush()
    sys.stderr.flush()
    if not idle:
        # A model call that outlived the drain would block the interpreter's exit on its thread.
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
