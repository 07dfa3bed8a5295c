"""What a replica says about its model's tensors (the ``metadata`` frame), in-process with the real handler."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
from tests.support.manifests import write_manifest

from neurondock_workers.hosting import signature
from neurondock_workers.hosting.batcher import BatchConfig
from neurondock_workers.hosting.handler import Handler

NPY = "application/x-npy"


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_an_uncompiled_model_is_described_by_its_first_successful_npy_invocation(model_dir):
    from neurondock_workers.hosting.replica import ReplicaServer

    handler = Handler(model_dir, {})
    handler.load_model()
    seen: list[dict[str, Any]] = []

    async def scenario() -> None:
        server = ReplicaServer(handler, BatchConfig(max_batch_size=1, max_queue=4))
        try:

            async def ask(op: dict[str, Any], body: bytes = b"") -> dict[str, Any]:
                meta, _ = await server.dispatch(op, body)
                return meta

            seen.append(await ask({"op": "metadata"}))
            # A JSON body and a failing NPY body teach nothing: only a successful NPY pair does.
            assert (await ask({"op": "invoke", "content_type": "application/json", "accept": NPY}, b"[[1,2,3,4]]"))[
                "status"
            ] == 200
            failed = await ask({"op": "invoke", "content_type": NPY, "accept": NPY}, npy(np.ones((2, 4))))
            assert failed["status"] == 500  # float64 into a float32 Linear
            seen.append(await ask({"op": "metadata"}))
            ok = await ask({"op": "invoke", "content_type": NPY, "accept": NPY}, npy(np.ones((5, 4), np.float32)))
            assert ok["status"] == 200
            seen.append(await ask({"op": "metadata"}))
        finally:
            server.batcher.close()

    asyncio.run(scenario())
    before, still, after = seen
    for unknown in (before, still):
        assert (unknown["signature"], unknown["inputs"], unknown["outputs"]) == ("unknown", [], [])
    assert after["platform"] == "pytorch_torchscript" and after["signature"] == "observed"
    # A traced nn.Sequential's one argument is called ``input``; dim 0 (the batch) varies.
    assert after["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 4]}]
    assert after["outputs"] == [{"name": "output0", "dtype": "float32", "shape": [-1, 3]}]


def test_a_compiled_artifact_is_described_by_its_manifest(model_dir):
    write_manifest(model_dir, target="ml_c5", inputs=[("input0", [1, 16], "float32")], outputs=[([1, 4], "float32")])
    described = signature.describe(type("H", (), {"model_dir": str(model_dir), "model": None})())
    # CPU TorchScript: any batch runs, and nothing enforces the compiled shapes.
    assert (described["platform"], described["signature"], described["enforced"]) == (
        "pytorch_torchscript",
        "compiled",
        False,
    )
    assert described["inputs"] == [{"name": "input0", "dtype": "float32", "shape": [-1, 16]}]
    write_manifest(model_dir, inputs=[("input0", [1, 16], "float32")], outputs=[([1, 4], "float32")])
    described = signature.describe(type("H", (), {"model_dir": str(model_dir), "model": None})())
    assert described["enforced"] and described["inputs"] == [{"name": "input0", "dtype": "float32", "shape": [1, 16]}]

    write_manifest(model_dir, inputs=[("ids", [4, 128], "int64")], outputs=[([4, 2], "float32")], dynamic_batch=True)
    described = signature.describe(type("H", (), {"model_dir": str(model_dir), "model": None})())
    assert described["platform"] == "neurondock_inf1_emulated"
    assert described["inputs"] == [{"name": "ids", "dtype": "int64", "shape": [-1, 128]}]
    assert described["outputs"] == [{"name": "output0", "dtype": "float32", "shape": [-1, 2]}]


def test_observe_reads_only_npy_pairs():
    body = npy(np.zeros((3, 2), np.int64))
    assert signature.observe(NPY, body, NPY, npy(np.array([b"ab", b"c"]))) == {
        "input": ("int64", (3, 2)),
        "output": ("bytes", (2,)),
    }
    assert signature.observe("application/json", b"[1]", NPY, body) is None
    assert signature.observe(NPY, b"not npy", NPY, body) is None
    assert signature.observe(NPY, npy(np.float32(1.0)), NPY, body) is None
