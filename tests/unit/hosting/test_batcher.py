"""The replica's dynamic batcher, in-process with the real handler and a tiny TorchScript model."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import numpy as np
import pytest

from neurondock_workers.hosting.batcher import Answer, BatchConfig, Batcher, QueueFull, Request
from neurondock_workers.hosting.handler import Handler

NPY = "application/x-npy"
JSON = "application/json"


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


class Collector:
    """Requests whose answers land in a dict, for a batcher driven without an event loop."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self._cv = threading.Condition()

    def request(self, tag: str, body: bytes, content_type: str = NPY, accept: str = NPY, attrs=None) -> Request:
        def deliver(answer: Answer) -> None:
            with self._cv:
                self.answers[tag] = answer
                self._cv.notify_all()

        return Request(body, content_type, accept, attrs, deliver)

    def wait(self, *tags: str, timeout: float = 20.0) -> list[Answer]:
        with self._cv:
            assert self._cv.wait_for(lambda: all(t in self.answers for t in tags), timeout), (
                f"no answer for {[t for t in tags if t not in self.answers]}"
            )
            return [self.answers[t] for t in tags]


@pytest.fixture
def make_batcher():
    made: list[Batcher] = []

    def make(model_dir, **config) -> Batcher:
        handler = Handler(model_dir, {})
        handler.load_model()
        batcher = Batcher(handler, BatchConfig(**config))
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close()


GATED_PREDICT = """
import threading
import torch

GATE = threading.Event()
ENTERED = threading.Event()
SIZES = []
THREADS = []

def predict_fn(data, model):
    SIZES.append(int(data.shape[0]))
    THREADS.append(threading.current_thread().name)
    ENTERED.set()
    GATE.wait(20)
    with torch.inference_mode():
        return model(data)
"""


def test_opportunistic_batching_takes_what_is_queued_and_never_waits(model_dir, write_code, make_batcher):
    write_code(GATED_PREDICT)
    batcher = make_batcher(model_dir, max_batch_size=8, max_delay=0.0)
    module = batcher.handler.module
    got = Collector()

    # Alone in the queue, the first request goes straight to the model: nothing waits for company.
    batcher.submit(got.request("first", npy(rows(1, 0))))
    assert module.ENTERED.wait(10)
    for i in range(4):
        batcher.submit(got.request(f"r{i}", npy(rows(1, i + 1))))
    assert batcher.outstanding == 5
    module.GATE.set()

    first, *rest = got.wait("first", "r0", "r1", "r2", "r3")
    assert module.SIZES == [1, 4]
    assert (first.batch_size, first.queue_depth) == (1, 0)
    assert [a.batch_size for a in rest] == [4, 4, 4, 4]
    assert sorted(a.batch_index for a in rest) == [0, 1, 2, 3]
    assert [a.queue_depth for a in rest] == [1, 2, 3, 4]
    assert batcher.stats.executions == 2 and batcher.stats.batched_requests == 4


@pytest.mark.parametrize("delay, sizes", [(0.0, [1, 1]), (2.0, [2])])
def test_max_delay_holds_a_lone_request_for_company(model_dir, write_code, make_batcher, delay, sizes):
    write_code(GATED_PREDICT)
    batcher = make_batcher(model_dir, max_batch_size=2, max_delay=delay)
    module = batcher.handler.module
    module.GATE.set()
    got = Collector()

    batcher.submit(got.request("a", npy(rows(1, 0))))
    if delay == 0.0:
        got.wait("a")  # answered without anyone else arriving
    else:
        time.sleep(0.05)
    batcher.submit(got.request("b", npy(rows(1, 1))))

    got.wait("a", "b")
    assert sizes == module.SIZES


def test_batched_answers_equal_one_by_one_answers(model_dir, make_batcher):
    batcher = make_batcher(model_dir, max_batch_size=8)
    handler = batcher.handler
    got = Collector()
    inputs = {f"n{i}": rows(n, i) for i, n in enumerate([1, 3, 2, 1])}
    json_inputs = {"j0": rows(2, 10), "j1": rows(1, 11)}

    with batcher.hold():
        for tag, x in inputs.items():
            batcher.submit(got.request(tag, npy(x)))
        for tag, x in json_inputs.items():
            batcher.submit(got.request(tag, json.dumps(x.tolist()).encode(), JSON, JSON))

    answers = dict(zip(inputs, got.wait(*inputs), strict=True))
    assert {a.batch_size for a in answers.values()} == {4}  # 7 rows of NPY in one execution
    for tag, x in inputs.items():
        alone = handler.invoke(npy(x), NPY, NPY)
        assert answers[tag].result.status == 200
        assert answers[tag].result.content_type == NPY
        batched = np.load(io.BytesIO(answers[tag].result.body))
        assert batched.shape == (x.shape[0], 3)
        np.testing.assert_allclose(batched, np.load(io.BytesIO(alone.body)), rtol=1e-6, atol=1e-6)
    for tag, x in json_inputs.items():
        (answer,) = got.wait(tag)
        assert answer.batch_size == 2  # JSON requests batch among themselves, not with NPY ones
        alone = handler.invoke(json.dumps(x.tolist()).encode(), JSON, JSON)
        np.testing.assert_allclose(json.loads(answer.result.body), json.loads(alone.body), rtol=1e-6, atol=1e-6)


def test_max_batch_size_counts_rows(model_dir, make_batcher):
    batcher = make_batcher(model_dir, max_batch_size=4)
    got = Collector()
    with batcher.hold():
        for i, n in enumerate([2, 2, 3, 6]):
            batcher.submit(got.request(f"r{i}", npy(rows(n, i))))
    answers = got.wait("r0", "r1", "r2", "r3")
    assert [a.batch_size for a in answers] == [2, 2, 1, 1]
    assert [np.load(io.BytesIO(a.result.body)).shape[0] for a in answers] == [2, 2, 3, 6]


def test_custom_transform_fn_runs_one_by_one(model_dir, write_code, make_batcher):
    write_code(
        """
        import json

        def transform_fn(model, data, content_type, accept):
            return json.dumps({"echo": json.loads(data)}), "application/json"
        """
    )
    batcher = make_batcher(model_dir, max_batch_size=8)
    assert not batcher.batching
    got = Collector()
    with batcher.hold():
        for i in range(3):
            batcher.submit(got.request(f"r{i}", json.dumps([i]).encode(), JSON, JSON))
    answers = got.wait("r0", "r1", "r2")
    assert [a.batch_size for a in answers] == [1, 1, 1]
    assert [json.loads(a.result.body) for a in answers] == [{"echo": [0]}, {"echo": [1]}, {"echo": [2]}]


def test_non_tensor_inputs_and_bad_requests_fall_back_with_their_own_answers(model_dir, write_code, make_batcher):
    write_code(
        """
        import json
        import torch

        def input_fn(data, content_type):
            doc = json.loads(data)
            if isinstance(doc, dict):
                return doc  # not a tensor: must not be batched
            return torch.tensor(doc, dtype=torch.float32)

        def predict_fn(data, model):
            if isinstance(data, dict):
                return torch.tensor([[float(len(data))]])
            with torch.inference_mode():
                return model(data)
        """
    )
    batcher = make_batcher(model_dir, max_batch_size=8)
    handler = batcher.handler
    got = Collector()
    good = [rows(1, 1), rows(2, 2)]
    with batcher.hold():
        batcher.submit(got.request("dict", b'{"a": 1, "b": 2}', JSON, JSON))
        batcher.submit(got.request("g0", json.dumps(good[0].tolist()).encode(), JSON, JSON))
        batcher.submit(got.request("bad", b"[[1, 2, 3]]", JSON, JSON))  # wrong width: its own 500
        batcher.submit(got.request("broken", b"{not json", JSON, JSON))
        batcher.submit(got.request("g1", json.dumps(good[1].tolist()).encode(), JSON, JSON))

    dict_answer, g0, bad, broken, g1 = got.wait("dict", "g0", "bad", "broken", "g1")
    assert (dict_answer.batch_size, json.loads(dict_answer.result.body)) == (1, [[2.0]])
    assert g0.batch_size == g1.batch_size == 2
    for answer, x in ((g0, good[0]), (g1, good[1])):
        alone = handler.invoke(json.dumps(x.tolist()).encode(), JSON, JSON)
        np.testing.assert_allclose(json.loads(answer.result.body), json.loads(alone.body), rtol=1e-6)
    assert bad.result.status == 500 and "mat1 and mat2" in bad.result.message
    assert broken.result.status == 500 and broken.batch_size == 1


def test_a_model_that_refuses_batches_is_answered_one_by_one_and_not_batched_again(
    model_dir, write_code, make_batcher
):
    write_code(
        """
        import torch

        SIZES = []

        def predict_fn(data, model):
            SIZES.append(int(data.shape[0]))
            if data.shape[0] != 1:
                raise ValueError("this model hard-codes batch 1")
            with torch.inference_mode():
                return model(data)
        """
    )
    batcher = make_batcher(model_dir, max_batch_size=8)
    got = Collector()
    for round_ in range(2):
        with batcher.hold():
            for i in range(3):
                batcher.submit(got.request(f"{round_}-{i}", npy(rows(1, i))))
        answers = got.wait(*(f"{round_}-{i}" for i in range(3)))
        assert all(a.result.status == 200 and a.batch_size == 1 for a in answers)
    # One failed batch of 3, then singles only.
    assert batcher.handler.module.SIZES == [3, 1, 1, 1, 1, 1, 1]


def test_a_full_queue_refuses_at_once(model_dir, write_code, make_batcher):
    write_code(GATED_PREDICT)
    batcher = make_batcher(model_dir, max_batch_size=1, max_queue=2, cores_label="nc3")
    module = batcher.handler.module
    got = Collector()
    batcher.submit(got.request("a", npy(rows(1, 0))))
    assert module.ENTERED.wait(10)
    batcher.submit(got.request("b", npy(rows(1, 1))))

    with pytest.raises(QueueFull) as err:
        batcher.submit(got.request("c", npy(rows(1, 2))))
    assert "NRT_QUEUE_FULL" in str(err.value) and "2 of 2" in str(err.value) and "nc3" in str(err.value)
    assert batcher.stats.failed_to_queue == 1

    module.GATE.set()
    got.wait("a", "b")
    batcher.submit(got.request("d", npy(rows(1, 3))))  # room again once the queue drains
    got.wait("d")


def test_replica_server_answers_429_when_full_and_runs_inline_when_idle(model_dir, write_code):
    from neurondock_workers.hosting.replica import ReplicaServer

    write_code(GATED_PREDICT)
    handler = Handler(model_dir, {})
    handler.load_model()
    module = handler.module

    async def scenario() -> None:
        server = ReplicaServer(handler, BatchConfig(max_batch_size=1, max_queue=1))
        try:
            module.GATE.set()
            server.batcher.stats.avg_execution_s = 0.0  # as after a few fast executions
            meta, body = await server.dispatch({"op": "invoke", "content_type": NPY, "accept": NPY}, npy(rows(1, 0)))
            assert meta["status"] == 200 and meta["batch_size"] == 1 and meta["queue_limit"] == 1
            # Idle replica, fast model: it ran on the event loop's thread, not the model thread.
            assert [threading.current_thread().name] == module.THREADS and meta["queue_depth"] == 0
            assert np.load(io.BytesIO(body)).shape == (1, 3)

            module.GATE.clear()
            module.ENTERED.clear()
            server.batcher.stats.avg_execution_s = 1.0  # a slow model goes to the model thread
            first = asyncio.ensure_future(
                server.dispatch({"op": "invoke", "content_type": NPY, "accept": NPY}, npy(rows(1, 1)))
            )
            while not module.ENTERED.is_set():
                await asyncio.sleep(0.01)
            meta, _ = await server.dispatch({"op": "invoke", "content_type": NPY, "accept": NPY}, npy(rows(1, 2)))
            assert meta["status"] == 429 and "NRT_QUEUE_FULL" in meta["message"]
            module.GATE.set()
            meta, _ = await first
            assert meta["status"] == 200 and meta["failed_to_queue"] == 1
            assert module.THREADS[-1] == "model"

            meta, _ = await server.dispatch({"op": "metadata"}, b"")
            assert meta["status"] == 200 and meta["platform"] == "pytorch_torchscript"
        finally:
            server.batcher.close()

    asyncio.run(scenario())


def test_a_slower_model_runs_inline_only_for_a_solo_request_after_warm_up(model_dir, write_code):
    from neurondock_workers.hosting import batcher as batching
    from neurondock_workers.hosting.replica import ReplicaServer

    write_code(GATED_PREDICT)
    handler = Handler(model_dir, {})
    handler.load_model()
    module = handler.module
    module.GATE.set()
    invoke = {"op": "invoke", "content_type": NPY, "accept": NPY}

    async def scenario() -> None:
        server = ReplicaServer(handler, BatchConfig(max_batch_size=8, max_queue=8))
        stats = server.batcher.stats
        try:

            async def thread_of(**extra) -> str:
                stats.avg_execution_s = 0.05  # a 50 ms model: past the plain inline limit
                meta, _ = await server.dispatch({**invoke, **extra}, npy(rows(1, 0)))
                assert meta["status"] == 200
                return module.THREADS[-1]

            # The first executions run on the model thread whatever the router says: a warm-up may be slow.
            warm_up = batching.SOLO_INLINE_AFTER
            assert [await thread_of(outstanding=1) for _ in range(warm_up)] == ["model"] * warm_up
            main = threading.current_thread().name
            assert await thread_of(outstanding=1) == main
            # Company is coming (the router has another request in flight here), or nothing was said.
            assert await thread_of(outstanding=2) == "model"
            assert await thread_of() == "model"
            stats.avg_execution_s = batching.SOLO_INLINE_MAX_SECONDS  # too long to hold the event loop
            meta, _ = await server.dispatch({**invoke, "outstanding": 1}, npy(rows(1, 0)))
            assert meta["status"] == 200 and module.THREADS[-1] == "model"
        finally:
            server.batcher.close()

    asyncio.run(scenario())


def test_config_from_env_and_compiled_manifest(tmp_path):
    assert BatchConfig.from_env({}) == BatchConfig(8, 0.0, 32, 1, "nc0")
    env = {
        "NEURONDOCK_MAX_BATCH_SIZE": "4",
        "NEURONDOCK_MAX_BATCH_DELAY_MS": "2.5",
        "NEURON_RT_VISIBLE_CORES": "4-7",
    }
    assert BatchConfig.from_env(env) == BatchConfig(4, 0.0025, (4 + 3) * 4, 4, "nc4-nc7")
    assert BatchConfig.from_env({"NEURONDOCK_MAX_QUEUE_SIZE": "5"}).max_queue == 5
    assert BatchConfig.from_env({"NEURON_MAX_NUM_INFERS": "2", "NEURONDOCK_MAX_BATCH_SIZE": "1"}).max_queue == 2

    manifest = {"target": "ml_inf1", "resources": {"compiled_batch_size": 4, "dynamic_dims": [0]}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert BatchConfig.from_env({}, tmp_path).max_batch_size == 4
    manifest["resources"]["dynamic_dims"] = []
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    # Static compiled shapes: the runtime would refuse any other batch, so nothing is batched.
    assert BatchConfig.from_env({"NEURONDOCK_MAX_BATCH_SIZE": "8"}, tmp_path).max_batch_size == 1
