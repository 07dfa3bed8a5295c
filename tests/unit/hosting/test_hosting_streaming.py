"""Streaming through the one pipeline: which predictions stream, what a non-streaming request gets, failures."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

from neurondock_workers.hosting.handler import load_handler

GENERATOR = """
import json

def model_fn(model_dir):
    return None

def input_fn(data, content_type):
    return json.loads(data)

def predict_fn(data, model):
    def parts():
        for i in range(data["parts"]):
            if i == data.get("fail_at"):
                raise RuntimeError("broke at part %d" % i)
            yield {"part": i}
    return parts()

def output_fn(prediction, accept):
    return json.dumps(prediction) + "\\n", "application/jsonlines"
"""


@pytest.fixture(autouse=True)
def _isolate_imports(tmp_path):
    path, modules = sys.path[:], set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


def _collect():
    parts: list[tuple[bytes, str, str | None]] = []
    return parts, lambda body, content_type, attributes: parts.append((body, content_type, attributes))


def test_a_generator_predict_fn_emits_each_part_and_joins_them_otherwise(model_dir, write_code):
    write_code(GENERATOR)
    pipeline = load_handler(model_dir, {}).pipeline
    parts, emit = _collect()
    streamed = pipeline.invoke(b'{"parts": 3}', "application/json", None, None, emit)
    assert [p[0] for p in parts] == [b'{"part": %d}\n' % i for i in range(3)]
    assert {p[1] for p in parts} == {"application/jsonlines"}
    assert (streamed.status, streamed.body, streamed.parts) == (200, b"", 3)
    whole = pipeline.invoke(b'{"parts": 3}', "application/json", None, None)
    assert (whole.status, whole.body, whole.parts) == (200, b"".join(p[0] for p in parts), 0)
    assert whole.content_type == "application/jsonlines"


def test_a_failure_after_a_part_ends_the_stream_and_before_it_answers_the_request(model_dir, write_code):
    write_code(GENERATOR)
    pipeline = load_handler(model_dir, {}).pipeline
    parts, emit = _collect()
    broken = pipeline.invoke(b'{"parts": 3, "fail_at": 1}', "application/json", None, None, emit)
    assert len(parts) == 1
    assert (broken.status, broken.body, broken.parts) == (500, b"", 1)
    assert broken.message == "RuntimeError: broke at part 1"
    parts, emit = _collect()
    refused = pipeline.invoke(b'{"parts": 3, "fail_at": 0}', "application/json", None, None, emit)
    assert parts == [] and (refused.status, refused.parts) == (500, 0)
    assert refused.body == b"RuntimeError: broke at part 0"


def test_a_torchscript_tuple_streams_element_by_element_only_when_asked(tmp_path):
    class Frames(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return x, x * 2, x * 3

    root = tmp_path / "frames"
    root.mkdir()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        torch.jit.script(Frames()).save(str(root / "model.pt"))
    pipeline = load_handler(root, {}).pipeline
    parts, emit = _collect()
    result = pipeline.invoke(b"[[1.0, 2.0]]", "application/json", "application/json", None, emit)
    assert result.status == 200, result.message
    assert [json.loads(p[0]) for p in parts] == [[[1.0, 2.0]], [[2.0, 4.0]], [[3.0, 6.0]]]
    whole = pipeline.invoke(b"[[1.0, 2.0]]", "application/json", "application/json", None)
    assert json.loads(whole.body) == [[[1.0, 2.0]], [[2.0, 4.0]], [[3.0, 6.0]]]


def test_a_prediction_that_is_not_an_iterator_is_one_part(model_dir):
    pipeline = load_handler(model_dir, {}).pipeline
    parts, emit = _collect()
    result = pipeline.invoke(b"[[1, 2, 3, 4]]", "application/json", None, None, emit)
    assert parts == [] and result.status == 200 and result.parts == 0
    assert len(json.loads(result.body)[0]) == 3


def test_the_replica_stops_a_model_whose_stream_nobody_reads() -> None:
    import asyncio

    from neurondock_platform.dataplane.protocol import FrameChannel
    from neurondock_workers.hosting.replica import StreamClosed, _chunk_writer

    class Writer:
        def __init__(self) -> None:
            self.frames: list[bytes] = []
            self.closing = False

        def is_closing(self) -> bool:
            return self.closing

        def write(self, frame: bytes) -> None:
            self.frames.append(frame)

    async def scenario() -> Writer:
        writer = Writer()
        emit = _chunk_writer(writer)  # type: ignore[arg-type]
        emit(b"part", "audio/wav", None)
        await asyncio.sleep(0)  # the frame is written through the loop
        writer.closing = True
        with pytest.raises(StreamClosed):
            emit(b"unread", "audio/wav", None)
        return writer

    writer = asyncio.run(scenario())

    async def decode():
        channel = FrameChannel(asyncio.get_running_loop())
        channel.data_received(b"".join(writer.frames))
        return await channel.next_frame()

    meta, body = asyncio.run(decode())
    assert meta == {"kind": "chunk", "content_type": "audio/wav", "custom_attributes": None} and body == b"part"
