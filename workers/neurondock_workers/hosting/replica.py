"""A model-server replica: load the model, then serve the frame protocol on TCP.

``python -m neurondock_workers.hosting.replica --model-dir DIR --bind 127.0.0.1 --port 0``

The model is loaded before the socket opens, so a listening replica is a ready one and a broken
``model_fn`` exits non-zero with its traceback (and one ``NEURONDOCK_REPLICA_FAILED`` line the host
agent turns into a FailureReason) on stderr. Model executions run one at a time on a single worker
thread, which keeps the event loop free for pings and for reading the next requests.
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
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from neurondock_platform.dataplane.protocol import (
    OP_INVOKE,
    OP_PING,
    ProtocolError,
    encode_frame,
    read_frame,
)

LISTENING_MARKER = "NEURONDOCK_REPLICA_LISTENING"
FAILED_MARKER = "NEURONDOCK_REPLICA_FAILED"
# Error text goes in the frame's JSON meta, which the protocol caps at 64 KiB; the body keeps it whole.
MAX_META_MESSAGE = 16 * 1024
# How long SIGTERM waits for in-flight executions before the process leaves anyway.
DRAIN_SECONDS = 10.0


def describe_exception(exc: BaseException, limit: int = 1000) -> str:
    """Return ``Type: message`` on one line, the way a traceback's last line reads."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReplicaServer:
    """Serves ping and invoke frames for one loaded handler."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._writers: set[asyncio.StreamWriter] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
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
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def dispatch(self, meta: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        """Answer one request frame."""
        op = meta.get("op")
        if op == OP_PING:
            return {"status": 200}, b""
        if op != OP_INVOKE:
            return {"status": 400, "message": f"unknown op {op!r}"}, b""
        if self.stopping:
            return {"status": 503, "message": "replica is shutting down"}, b""
        self._inflight += 1
        self._idle.clear()
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                self.handler.invoke,
                body,
                meta.get("content_type"),
                meta.get("accept"),
                meta.get("custom_attributes"),
            )
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
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
        }, result.body

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
        self._executor.shutdown(wait=False, cancel_futures=True)
        return idle


async def serve(handler: Any, bind: str, port: int, drain_seconds: float = DRAIN_SECONDS) -> bool:
    """Listen, announce the address on stdout, and serve until SIGTERM/SIGINT; True on a clean drain."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    replica = ReplicaServer(handler)
    server = await asyncio.start_server(replica.handle_connection, host=bind, port=port)
    host, bound_port = server.sockets[0].getsockname()[:2]
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


def _fail(reason: str) -> int:
    traceback.print_exc()
    print(f"{FAILED_MARKER} {reason}", file=sys.stderr, flush=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run a replica; the exit code is non-zero when the model cannot be loaded."""
    args = _parse_args(argv)
    if args.env_json:
        os.environ.update({str(k): str(v) for k, v in json.loads(args.env_json).items()})

    import torch

    from neurondock_workers.hosting.handler import Handler

    # One intra-op thread per replica: replicas share the host's cores, as NeuronCores are not shared.
    torch.set_num_threads(max(1, args.torch_threads))
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

    idle = asyncio.run(serve(handler, args.bind, args.port))
    sys.stdout.flush()
    sys.stderr.flush()
    if not idle:
        # A model call that outlived the drain would block the interpreter's exit on its thread.
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
