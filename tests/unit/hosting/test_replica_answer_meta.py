"""The replica's invoke answer meta, written as JSON without an encoder: what the router decodes."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np

from neurondock_workers.hosting.batcher import BatchConfig
from neurondock_workers.hosting.handler import Handler

NPY = "application/x-npy"

ATTRIBUTES_OUT = """
def output_fn(prediction, accept, context):
    context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", 'said="ünï"\\tback')
    if context.custom_attributes == "fail":
        raise ValueError('a "quoted"\\nmessage ü')
    return b"done", 'text/plain; charset="utf-8"'
"""


def _body() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1, 4), np.float32))
    return buffer.getvalue()


def _answers(handler: Handler, *metas: dict) -> list[tuple[bytes, dict, bytes]]:
    from neurondock_workers.hosting.replica import ReplicaServer

    async def scenario() -> list[tuple[bytes, dict, bytes]]:
        server = ReplicaServer(handler, BatchConfig(max_batch_size=4, max_queue=8))
        encoded: list[bytes] = []
        # The bytes the frame carries, besides the dict dispatch hands back.
        original = server._answer_meta
        server._answer_meta = lambda result, answer: encoded.append(original(result, answer)) or encoded[-1]
        try:
            out = []
            for meta in metas:
                answer_meta, body = await server.dispatch({"op": "invoke", **meta}, _body())
                out.append((encoded[-1], answer_meta, body))
            return out
        finally:
            server.batcher.close()

    return asyncio.run(scenario())


def test_an_answer_meta_is_json_with_every_field_the_router_reads(model_dir):
    handler = Handler(model_dir, {})
    handler.load_model()
    [(raw, meta, body)] = _answers(handler, {"content_type": NPY, "accept": NPY})
    assert json.loads(raw) == meta and raw.isascii()
    counters = ("queue_limit", "max_batch_size", "busy_us", "uptime_us", "executions", "failed_to_queue")
    figures = ("model_latency_us", "queue_us", "queue_depth", "batch_size", "batch_index", *counters)
    assert set(meta) == {"status", "content_type", *figures}
    assert meta["status"] == 200 and meta["content_type"] == NPY and np.load(io.BytesIO(body)).shape == (1, 3)
    assert all(type(meta[name]) is int for name in figures)
    assert meta["queue_limit"] == 8 and meta["max_batch_size"] == 4 and meta["executions"] == 1


def test_custom_attributes_messages_and_content_types_keep_every_character(model_dir, write_code):
    write_code(ATTRIBUTES_OUT)
    handler = Handler(model_dir, {})
    handler.load_model()
    ok, failed = _answers(
        handler, {"content_type": NPY, "accept": NPY}, {"content_type": NPY, "accept": NPY, "custom_attributes": "fail"}
    )
    raw, meta, body = ok
    assert json.loads(raw) == meta and body == b"done"
    assert meta["content_type"] == 'text/plain; charset="utf-8"'
    assert meta["custom_attributes"] == 'said="ünï"\tback' and "message" not in meta
    raw, meta, body = failed
    assert json.loads(raw) == meta and meta["status"] == 500
    assert meta["message"] == 'ValueError: a "quoted"\nmessage ü' and body == meta["message"].encode()
    assert meta["custom_attributes"] == 'said="ünï"\tback'
