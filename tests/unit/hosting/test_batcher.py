"""The replica's dynamic batcher, in-process with the real handler and a tiny TorchScript model."""

from __future__ import annotations

import asyncio
import collections
import io
import json
import threading
import time
from typing import Any

import numpy as np
import pytest
from tests.support.manifests import write_manifest

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


def gated_handler(model_dir, write_code) -> Handler:
    """A loaded handler whose predict_fn notes batch sizes and threads (GATED_PREDICT), its gate open."""
    write_code(GATED_PREDICT)
    handler = Handler(model_dir, {})
    handler.load_model()
    handler.module.GATE.set()
    return handler


def test_opportunistic_batching_takes_what_is_queued_and_never_waits(model_dir, write_code, make_batcher):
    write_code(GATED_PREDICT)
    batcher = make_batcher(model_dir, max_batch_size=8, max_delay=0.0, batch_user_predict=True)
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
    batcher = make_batcher(model_dir, max_batch_size=2, max_delay=delay, batch_user_predict=True)
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


def test_max_delay_counts_from_when_the_model_frees_up(model_dir, write_code, make_batcher):
    """TorchServe's pollBatch: a request that queued during an execution still waits for company after it.

    Closed-loop clients answered by one execution send their next requests only once it has answered
    them; counted from its arrival instead, the request that waited through the execution would run as
    a fragment of the batch those clients are about to make.
    """
    write_code(GATED_PREDICT)
    delay = 0.5
    batcher = make_batcher(model_dir, max_batch_size=2, max_delay=delay, batch_user_predict=True)
    module = batcher.handler.module
    got = Collector()

    batcher.submit(got.request("first", npy(rows(1, 0))))
    assert module.ENTERED.wait(10)
    batcher.submit(got.request("queued", npy(rows(1, 1))))
    # The execution outlasts the queued request's delay, counted from its arrival.
    time.sleep(delay * 1.2)
    module.GATE.set()
    got.wait("first")
    batcher.submit(got.request("next", npy(rows(1, 2))))  # the client "first" answered comes back

    queued, following = got.wait("queued", "next")
    assert module.SIZES == [1, 2]
    assert (queued.batch_size, following.batch_size) == (2, 2)


@pytest.mark.parametrize("following, arrives_after, sizes", [(0, 1.5, [1, 1]), (1, 1.5, [2]), (1, 3.0, [1, 1])])
def test_company_the_router_announced_extends_the_delay_once(
    model_dir, write_code, make_batcher, following, arrives_after, sizes
):
    """A request whose router was still reading another for this replica may wait one more delay, no longer."""
    write_code(GATED_PREDICT)
    delay = 0.4
    batcher = make_batcher(model_dir, max_batch_size=2, max_delay=delay, batch_user_predict=True)
    module = batcher.handler.module
    module.GATE.set()
    got = Collector()

    first = got.request("first", npy(rows(1, 0)))
    first.following = following
    batcher.submit(first)
    time.sleep(delay * arrives_after)  # the announced request reaches the replica this late
    batcher.submit(got.request("next", npy(rows(1, 1))))

    got.wait("first", "next")
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


def test_inputs_of_another_dtype_never_share_an_execution(model_dir, make_batcher):
    # torch.cat would promote them to one dtype without complaint: the batch key must keep them apart.
    batcher = make_batcher(model_dir, max_batch_size=8)
    got = Collector()
    with batcher.hold():
        batcher.submit(got.request("a", npy(rows(1, 0))))
        batcher.submit(got.request("wide", npy(rows(1, 1).astype(np.float64))))
        batcher.submit(got.request("b", npy(rows(2, 2))))
    a, wide, b = got.wait("a", "wide", "b")
    assert (a.batch_size, b.batch_size) == (2, 2)
    assert (a.result.status, b.result.status) == (200, 200)
    assert wide.batch_size == 1


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
    batcher = make_batcher(model_dir, max_batch_size=8, batch_user_predict=True)
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


COUNTING = """
import collections
import json

import torch

# What each hook saw, by request id (the first number of every row).
SEEN = collections.defaultdict(list)
BATCHES = []

def _ids(tensor):
    return [int(v) for v in tensor[:, 0].tolist()]

def input_fn(data, content_type):
    doc = json.loads(data)
    SEEN["input_fn"].append(int(doc[0][0]))
    return torch.tensor(doc, dtype=torch.float32)

def predict_fn(data, model):
    ids = _ids(data)
    SEEN["predict_fn"] += ids
    BATCHES.append(ids)
    if any(i >= 900 for i in ids):
        raise ValueError(f"poisoned input among {ids}")
    with torch.inference_mode():
        return model(data)

def output_fn(prediction, accept):
    SEEN["output_fn"].append(prediction.shape[0])
    if prediction.shape[0] == 3:
        raise RuntimeError("this output_fn refuses three rows")
    return json.dumps(prediction.tolist()), "application/json"
"""


def _rows(request_id: int, n: int = 1) -> bytes:
    return json.dumps([[float(request_id), 0.5, -0.5, 1.0]] * n).encode()


def _counts(module, hook: str) -> dict[int, int]:
    return dict(collections.Counter(module.SEEN[hook]))


def _counting_batch(model_dir, write_code, make_batcher, bodies: dict[str, bytes]) -> tuple[Any, dict[str, Answer]]:
    """Queue JSON requests for the counting inference.py as one batch; return its module and the answers."""
    write_code(COUNTING)
    batcher = make_batcher(model_dir, max_batch_size=8, batch_user_predict=True)
    got = Collector()
    with batcher.hold():
        for tag, body in bodies.items():
            batcher.submit(got.request(tag, body, JSON, JSON))
    return batcher.handler.module, dict(zip(bodies, got.wait(*bodies), strict=True))


def test_a_failed_batch_never_runs_a_users_hook_twice_for_one_request(model_dir, write_code, make_batcher):
    bodies = {"ok-1": _rows(1), "bad-json": b"{not json", "poison": _rows(901), "ok-2": _rows(2)}
    module, answers = _counting_batch(model_dir, write_code, make_batcher, bodies)

    # input_fn failed for one request: that alone is its answer, and it is never decoded again.
    assert answers["bad-json"].result.status == 500 and answers["bad-json"].batch_size == 1
    assert answers["bad-json"].result.failure.error_type == "JSONDecodeError"
    # The user's predict_fn failed on the batch: every request in it gets that failure, none runs again.
    assert module.BATCHES == [[1, 901, 2]]
    for tag in ("ok-1", "poison", "ok-2"):
        result = answers[tag].result
        assert (result.status, answers[tag].batch_size) == (500, 3)
        assert result.failure.error_type == "ValueError"
        assert result.failure.message == "ValueError: poisoned input among [1, 901, 2]"
        assert "predict_fn" in result.failure.traceback and result.message == result.failure.message
    assert _counts(module, "input_fn") == {1: 1, 901: 1, 2: 1}
    assert _counts(module, "predict_fn") == {1: 1, 901: 1, 2: 1}
    assert module.SEEN["output_fn"] == []


def test_an_output_fn_failure_is_that_requests_answer_alone(model_dir, write_code, make_batcher):
    module, answers = _counting_batch(model_dir, write_code, make_batcher, {"one": _rows(1), "three": _rows(3, n=3)})
    one, three = answers["one"], answers["three"]
    assert module.BATCHES == [[1, 3, 3, 3]]
    assert one.result.status == 200 and one.batch_size == 2 and len(json.loads(one.result.body)) == 1
    assert three.result.status == 500 and "this output_fn refuses three rows" in three.result.message
    assert _counts(module, "input_fn") == {1: 1, 3: 1}
    assert module.SEEN["output_fn"] == [1, 3]


def test_a_batchs_answers_are_all_encoded_before_the_first_is_handed_back(model_dir, write_code, make_batcher):
    # Handing one answer back wakes the event loop, which then contends with the model thread for the
    # GIL while the rest are encoded: the batch's clients got their answers milliseconds apart.
    write_code(COUNTING)
    batcher = make_batcher(model_dir, max_batch_size=8, batch_user_predict=True)
    module = batcher.handler.module
    got = Collector()
    encoded_when_delivered: list[int] = []
    tags = [f"r{i}" for i in range(4)]
    with batcher.hold():
        for i, tag in enumerate(tags):
            request = got.request(tag, _rows(i), JSON, JSON)
            deliver = request.deliver
            request.deliver = lambda answer, deliver=deliver: (
                encoded_when_delivered.append(len(module.SEEN["output_fn"])),
                deliver(answer),
            )[-1]
            batcher.submit(request)
    assert [a.result.status for a in got.wait(*tags)] == [200] * 4
    assert module.BATCHES == [[0, 1, 2, 3]]
    assert encoded_when_delivered == [4, 4, 4, 4]


def test_a_users_predict_fn_is_not_batched_unless_the_model_asks(model_dir, write_code, make_batcher):
    write_code(COUNTING)
    batcher = make_batcher(model_dir, max_batch_size=8)
    assert not batcher.batching
    module = batcher.handler.module
    got = Collector()
    with batcher.hold():
        for i in range(3):
            batcher.submit(got.request(f"r{i}", _rows(i), JSON, JSON))
    assert [a.batch_size for a in got.wait("r0", "r1", "r2")] == [1, 1, 1]
    assert module.BATCHES == [[0], [1], [2]]
    # The model asks by setting NEURONDOCK_MAX_BATCH_SIZE in its environment.
    assert BatchConfig.from_env({"NEURONDOCK_MAX_BATCH_SIZE": "4"}).batch_user_predict
    assert not BatchConfig.from_env({}).batch_user_predict
    assert not BatchConfig.from_env({"NEURONDOCK_MAX_BATCH_SIZE": "1"}).batch_user_predict


BATCH_ONE_MODEL = """
import json

import torch

DECODED = []

class BatchOne(torch.nn.Module):
    def forward(self, x):
        return x.view(1, 4) * 2.0  # hard-codes batch 1

def model_fn(model_dir):
    return torch.jit.trace(BatchOne(), torch.zeros(1, 4))

def input_fn(data, content_type):
    DECODED.append(data)
    return torch.tensor(json.loads(data), dtype=torch.float32)
"""


def test_a_model_that_refuses_batches_is_answered_one_by_one_from_decoded_inputs(model_dir, write_code, make_batcher):
    # The default predict_fn is the model alone: after a failed batch it runs again per request from the
    # input already decoded; the user's input_fn is not run again.
    write_code(BATCH_ONE_MODEL)
    batcher = make_batcher(model_dir, max_batch_size=8)
    assert batcher.batching
    module = batcher.handler.module
    got = Collector()
    for round_ in range(2):
        with batcher.hold():
            for i in range(3):
                batcher.submit(got.request(f"{round_}-{i}", json.dumps([[i, i, i, i]]).encode(), JSON, JSON))
        answers = got.wait(*(f"{round_}-{i}" for i in range(3)))
        assert all(a.result.status == 200 and a.batch_size == 1 for a in answers)
        assert [json.loads(a.result.body) for a in answers] == [[[2.0 * i] * 4] for i in range(3)]
    assert len(module.DECODED) == 6  # one input_fn per request
    # One failed batch of 3 in the first round, then that input signature is not batched again.
    assert batcher.stats.executions == 6 and batcher.stats.batched_requests == 0


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
    assert "Job queue full" in str(err.value) and "2 of 2" in str(err.value) and "nc3" in str(err.value)
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
            assert meta["status"] == 429 and "Job queue full" in meta["message"]
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

    handler = gated_handler(model_dir, write_code)
    module = handler.module
    invoke = {"op": "invoke", "content_type": NPY, "accept": NPY}

    async def scenario() -> None:
        server = ReplicaServer(handler, BatchConfig(max_batch_size=8, max_queue=8))
        stats = server.batcher.stats
        try:

            async def thread_of(**extra) -> str:
                # The answer can arrive before the model thread has marked itself idle: wait for that.
                deadline = time.monotonic() + 10
                while server.batcher.outstanding and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
                stats.avg_execution_s = 0.05  # a 50 ms model: past the plain inline limit
                meta, _ = await server.dispatch({**invoke, **extra}, npy(rows(1, 0)))
                assert meta["status"] == 200
                return module.THREADS[-1]

            # The first executions run on the model thread whatever the router says: a warm-up may be slow.
            warm_up = batching.SOLO_INLINE_AFTER
            assert [await thread_of(outstanding=1) for _ in range(warm_up)] == ["model"] * warm_up
            main = threading.current_thread().name
            assert await thread_of(outstanding=1) == main
            # Company is coming (the router has another request in flight here, or is reading more for
            # this replica), or nothing was said.
            assert await thread_of(outstanding=2) == "model"
            assert await thread_of(outstanding=1, following=1) == "model"
            assert await thread_of() == "model"
            stats.avg_execution_s = batching.SOLO_INLINE_MAX_SECONDS  # too long to hold the event loop
            meta, _ = await server.dispatch({**invoke, "outstanding": 1}, npy(rows(1, 0)))
            assert meta["status"] == 200 and module.THREADS[-1] == "model"
        finally:
            server.batcher.close()

    asyncio.run(scenario())


def test_requests_read_in_one_pass_of_the_loop_run_as_one_batch_on_its_thread(model_dir, write_code):
    """With a fast model, the requests several connections delivered together batch without the model thread."""
    import torch

    from neurondock_workers.hosting.replica import ReplicaServer

    handler = gated_handler(model_dir, write_code)
    module = handler.module
    npy_in = {"op": "invoke", "content_type": NPY, "accept": NPY, "outstanding": 6}
    inputs = [rows(1, i) for i in range(6)]
    bodies = [json.dumps(x.tolist()).encode() if i == 3 else npy(x) for i, x in enumerate(inputs)]

    async def scenario() -> list[tuple[dict[str, Any], bytes]]:
        server = ReplicaServer(handler, BatchConfig(max_batch_size=4, max_queue=16, batch_user_predict=True))
        server.batcher.stats.avg_execution_s = 0.0  # as after a few fast executions
        try:
            # One pass of the loop reads all six: NPY 0-2 and 4 gather (4 is the limit), the JSON one (3)
            # and NPY 5 queue for the model thread, which waits for the gathered batch to end.
            calls = [
                asyncio.ensure_future(server.dispatch({**npy_in, "content_type": JSON} if i == 3 else dict(npy_in), b))
                for i, b in enumerate(bodies)
            ]
            return await asyncio.gather(*calls)
        finally:
            server.batcher.close()

    answers = asyncio.run(scenario())
    assert [meta["status"] for meta, _ in answers] == [200] * 6
    assert module.SIZES == [4, 1, 1]
    assert [threading.current_thread().name, "model", "model"] == module.THREADS
    assert [meta["batch_size"] for meta, _ in answers] == [4, 4, 4, 1, 4, 1]
    with torch.inference_mode():
        for x, (_, body) in zip(inputs, answers, strict=True):
            expected = handler.model(torch.from_numpy(x)).numpy()
            assert np.allclose(np.load(io.BytesIO(body)), expected, atol=1e-6)


def test_config_from_env_and_compiled_manifest(tmp_path):
    # TorchServe's default job queue on every instance type; Neuron's limit bounds executions only.
    assert BatchConfig.from_env({}) == BatchConfig(8, 0.0, 100, 1, "nc0", max_executions=4)
    env = {
        "NEURONDOCK_MAX_BATCH_SIZE": "4",
        "NEURONDOCK_MAX_BATCH_DELAY_MS": "2.5",
        "NEURON_RT_VISIBLE_CORES": "4-7",
    }
    expected = BatchConfig(4, 0.0025, 100, 4, "nc4-nc7", batch_user_predict=True, max_executions=4 + 3)
    assert BatchConfig.from_env(env) == expected
    assert BatchConfig.from_env({"NEURONDOCK_MAX_BATCH_SIZE": "1"}).max_queue == 100
    assert BatchConfig.from_env({"TS_JOB_QUEUE_SIZE": "7"}).max_queue == 7
    assert BatchConfig.from_env({"TS_JOB_QUEUE_SIZE": "7", "NEURONDOCK_MAX_QUEUE_SIZE": "5"}).max_queue == 5
    two = BatchConfig.from_env({"NEURON_MAX_NUM_INFERS": "2", "NEURONDOCK_MAX_BATCH_SIZE": "1"})
    assert (two.max_queue, two.max_executions) == (100, 2)

    write_manifest(tmp_path, inputs=[("input0", [4, 16], "float32")], dynamic_batch=True)
    assert BatchConfig.from_env({}, tmp_path).max_batch_size == 4
    write_manifest(tmp_path, inputs=[("input0", [4, 16], "float32")], dynamic_batch=False)
    # Static compiled shapes: the runtime would refuse any other batch, so nothing is batched.
    assert BatchConfig.from_env({"NEURONDOCK_MAX_BATCH_SIZE": "8"}, tmp_path).max_batch_size == 1
    # An artifact compiled for ml_c5 is plain CPU TorchScript: batched as configured.
    write_manifest(tmp_path, target="ml_c5", inputs=[("input0", [4, 16], "float32")])
    assert BatchConfig.from_env({"NEURONDOCK_MAX_BATCH_SIZE": "8"}, tmp_path).max_batch_size == 8


def test_batching_off_queues_eight_clients_and_refuses_only_past_the_job_queue(model_dir, write_code):
    """On any instance type, c=8 with NEURONDOCK_MAX_BATCH_SIZE=1 queues (TorchServe's default depth)."""
    from neurondock_workers.hosting.replica import ReplicaServer

    write_code(GATED_PREDICT)
    handler = Handler(model_dir, {})
    handler.load_model()
    module = handler.module
    config = BatchConfig.from_env({"NEURONDOCK_MAX_BATCH_SIZE": "1", "NEURON_RT_VISIBLE_CORES": "0"})
    assert (config.max_queue, config.max_executions) == (100, 4)

    async def scenario(server: ReplicaServer, clients: int) -> list[dict[str, Any]]:
        server.batcher.stats.avg_execution_s = 1.0  # slow: every request goes through the queue
        module.GATE.clear()
        invoke = {"op": "invoke", "content_type": NPY, "accept": NPY}
        calls = [asyncio.ensure_future(server.dispatch(dict(invoke), npy(rows(1, i)))) for i in range(clients)]
        while server.batcher.outstanding < min(clients, server.config.max_queue):
            await asyncio.sleep(0.01)
        module.GATE.set()
        return [meta for meta, _ in await asyncio.gather(*calls)]

    server = ReplicaServer(handler, config)
    try:
        answers = asyncio.run(scenario(server, 8))
        assert [a["status"] for a in answers] == [200] * 8 and max(a["queue_depth"] for a in answers) == 7
        assert server.batcher.stats.failed_to_queue == 0
    finally:
        server.batcher.close()

    server = ReplicaServer(handler, BatchConfig.from_env({"NEURONDOCK_MAX_BATCH_SIZE": "1", "TS_JOB_QUEUE_SIZE": "5"}))
    try:
        statuses = [a["status"] for a in asyncio.run(scenario(server, 8))]
        assert sorted(statuses) == [200] * 5 + [429] * 3
    finally:
        server.batcher.close()


def test_by_default_an_idle_model_hands_its_heap_back_within_three_quiet_seconds(model_dir):
    # Three quiet seconds are what a platform is measured "once quiet" after (tests/benchmarks/procs.settle):
    # a replica trimmed later is read with an execution's leftovers (~11 MB for ResNet-18, docs/measured.md).
    handler = Handler(model_dir, {})
    handler.load_model()
    trimmed = threading.Event()
    batcher = Batcher(handler, BatchConfig(max_batch_size=1), trim=trimmed.set)
    try:
        got = Collector()
        batcher.submit(got.request("queued", npy(rows(1, 0))))
        got.wait("queued")
        done = time.perf_counter()
        assert trimmed.wait(3.0), "no trim within three idle seconds"
        assert time.perf_counter() - done < 3.0
    finally:
        batcher.close()


def test_an_idle_model_hands_its_free_heap_back_once_per_idle_spell(model_dir):
    handler = Handler(model_dir, {})
    handler.load_model()
    trims: list[float] = []
    trimmed = threading.Semaphore(0)

    def trim() -> None:
        trims.append(time.perf_counter())
        trimmed.release()

    batcher = Batcher(handler, BatchConfig(max_batch_size=1), idle_trim_s=0.05, trim=trim)
    try:
        got = Collector()
        # Queued: runs on the model thread, which trims once it has been idle 50 ms since the execution.
        submitted = time.perf_counter()
        batcher.submit(got.request("queued", npy(rows(1, 0))))
        got.wait("queued")
        assert trimmed.acquire(timeout=10), "no trim after the model went idle"
        assert trims[0] - submitted >= 0.05
        # Inline on the caller's thread, which never notifies the model thread of a finished execution
        # otherwise: the first execution after a trim starts the idle clock again. The first execution's
        # time (a TorchScript model's first call profiles it; slower still on a busy machine) must not
        # decide whether this one may run inline.
        batcher.stats.avg_execution_s = 0.0
        assert batcher.run_inline(got.request("inline", npy(rows(1, 1))), solo=True)
        got.wait("inline")
        assert trimmed.acquire(timeout=10), "no trim after an inline execution"
        assert len(trims) == 2
    finally:
        batcher.close()
