"""The replica's request path in-process: what one answer costs it, without sockets or a machine's noise.

``python -m tests.benchmarks.replica_path`` serves a tiny MLP (16 → 4, batching on) through
``ReplicaServer`` over eight stand-in connections whose invoke frames (the API's meta, a (1, 16)
float32 NPY body) all arrive in one pass of a uvloop loop, so each pass is one batch of 8, answered and
written to the stand-in transports. It prints the process CPU per request after a warm-up. Under
valgrind it counts instructions only over the measured passes, which the machine's load does not move:

``PYTHONHASHSEED=0 NEURONDOCK_PATH_MODE=callgrind valgrind --tool=callgrind --instr-atstart=no
python -m tests.benchmarks.replica_path`` (then ``callgrind_annotate``; PROGRAM TOTALS / requests).

``NEURONDOCK_PATH_INLINE=0`` sends every batch through the model thread instead of running it on the
loop's thread (under valgrind a batch runs past the inline limit, so the limit is set either way);
``NEURONDOCK_PATH_PASSES`` and ``NEURONDOCK_PATH_WARM`` set the passes (50 and 100). docs/measured.md
("the replica's request path, fewer instructions") records the figures.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
import uvloop

from neurondock_platform.dataplane.protocol import FrameChannel, encode_frame
from neurondock_workers.hosting import batcher
from neurondock_workers.hosting.handler import Handler
from neurondock_workers.hosting.replica import ReplicaServer
from tests.support.torch_models import tiny_mlp

CONNECTIONS = 8
NPY = "application/x-npy"


class _Transport(asyncio.Transport):
    """A connection that takes every write at once and counts the frames written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1

    def writelines(self, list_of_data: Any) -> None:
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def main() -> None:
    """Serve the warm-up passes, then measure the rest as the mode says."""
    mode = os.environ.get("NEURONDOCK_PATH_MODE", "time")
    passes = int(os.environ.get("NEURONDOCK_PATH_PASSES", "50"))
    warm = int(os.environ.get("NEURONDOCK_PATH_WARM", "100"))
    batcher.INLINE_MAX_SECONDS = 10.0 if os.environ.get("NEURONDOCK_PATH_INLINE", "1") == "1" else 0.0
    torch.set_num_threads(1)
    model_dir = tempfile.mkdtemp()
    tiny_mlp().save(os.path.join(model_dir, "model.pt"))
    handler = Handler(model_dir, environ={})
    handler.load_model()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    server = ReplicaServer(handler, batcher.BatchConfig())
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32))
    frames = [
        # As the API's router sends them: more than one request in flight to the replica.
        encode_frame(
            {"op": "invoke", "content_type": NPY, "accept": NPY, "custom_attributes": None, "inference_id": None}
            | {"outstanding": 2 + i},
            buffer.getvalue(),
        )
        for i in range(CONNECTIONS)
    ]
    channels: list[tuple[FrameChannel, _Transport]] = []
    for _ in range(CONNECTIONS):
        channel, transport = FrameChannel(loop), _Transport()
        channel.connection_made(transport)

        def reply(meta: dict[str, Any] | bytes, body: bytes, channel: FrameChannel = channel) -> None:
            server._reply(channel, meta, body)

        def on_frame(frame: tuple[dict[str, Any], bytes], channel: FrameChannel = channel, reply: Any = reply) -> None:
            server._handle(frame[0], frame[1], reply, loop, channel)

        channel.serve(on_frame)
        channels.append((channel, transport))
    sent = 0

    async def serve(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            for (channel, _), frame in zip(channels, frames, strict=True):
                channel.data_received(frame)
            sent += CONNECTIONS
            await asyncio.sleep(0)
        while sum(transport.writes for _, transport in channels) < sent:
            await asyncio.sleep(0.0005)  # answers from the model thread come through the loop

    loop.run_until_complete(serve(warm))
    started = time.process_time()
    if mode == "callgrind":
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
    loop.run_until_complete(serve(passes))
    if mode == "callgrind":
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True)
    cpu = time.process_time() - started
    stats = server.batcher.stats
    print(
        f"[replica-path] {passes * CONNECTIONS} requests measured; {stats.requests} in {stats.executions} executions "
        f"in all; {cpu / (passes * CONNECTIONS) * 1e6:.1f} µs of CPU per request",
        file=sys.stderr,
    )
    server.batcher.close()


if __name__ == "__main__":
    main()
