"""A compiled artifact served by the SageMaker PyTorch handler: loaded with load_compiled, static shapes."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from tests.integration.compilation.compilation_helpers import script_bytes, tarball
from tests.support.torch_models import small_cnn

from neurondock_platform import compiled_manifest
from neurondock_workers.compiler import compile_model, load_compiled
from neurondock_workers.hosting.compiled import CompiledModel
from neurondock_workers.hosting.defaults import default_model_fn
from neurondock_workers.hosting.handler import Handler

NPY = "application/x-npy"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cnn():
    return small_cnn(seed=4)


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory, cnn):
    """Compile the CNN for a target with options and unpack the artifact; cached per (target, options)."""
    made: dict[tuple[str, str | None], object] = {}

    def build(target: str = "ml_inf1", options: str | None = None):
        if (target, options) not in made:
            root = tmp_path_factory.mktemp("compiled")
            (root / "model.tar.gz").write_bytes(tarball({"model.pt": script_bytes(cnn)}))
            result = compile_model(
                root / "model.tar.gz", [[1, 3, 32, 32]], target, options, root / "work", measure_budget_s=0.2
            )
            with tarfile.open(result.artifact_path, "r:gz") as tar:
                tar.extractall(root / "model", filter="data")
            made[(target, options)] = root / "model"
        return made[(target, options)]

    return build


def test_a_compiled_artifact_loads_through_load_compiled_and_serves_its_numerics(compiled_dir, cnn):
    model_dir = compiled_dir()
    handler = Handler(model_dir, environ={})
    model = handler.load_model()
    assert isinstance(model, CompiledModel) and not model.training
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("float32")
    result = handler.invoke(_npy(x), NPY, NPY)
    assert result.status == 200, result.message
    got = np.load(io.BytesIO(result.body))
    with torch.no_grad():
        emulated = load_compiled(model_dir)(torch.from_numpy(x)).numpy()
        fp32 = cnn(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, emulated)
    # BF16 weights and matmul inputs: close to FP32, not equal.
    np.testing.assert_allclose(got, fp32, rtol=0.05, atol=0.05)

    as_json = handler.invoke(json.dumps(x.tolist()).encode(), "application/json", "application/json")
    assert as_json.status == 200
    np.testing.assert_allclose(np.array(json.loads(as_json.body)), emulated, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "dtype", "fragment"),
    [
        ((2, 3, 32, 32), "float32", "Input input0 has shape [2, 3, 32, 32] but the model was compiled"),
        ((1, 3, 16, 16), "float32", "with the static shape [1, 3, 32, 32]"),
        ((3, 32, 32), "float32", "has shape [3, 32, 32]"),
        ((1, 3, 32, 32), "float64", "Input input0 has dtype float64 but the model was compiled for float32"),
    ],
)
def test_inputs_that_do_not_fit_the_compiled_shapes_are_a_400(compiled_dir, shape, dtype, fragment):
    handler = Handler(compiled_dir(), environ={})
    handler.load_model()
    result = handler.invoke(_npy(np.zeros(shape, dtype=dtype)), NPY, NPY)
    assert result.status == 400
    assert fragment in result.message
    assert "NRT_EXEC_BAD_INPUT" in result.message
    if dtype == "float32":
        assert "--dynamic-batch-size" in result.message


def test_dynamic_batch_size_frees_dim_0_only(compiled_dir, cnn):
    handler = Handler(compiled_dir(options="--dynamic-batch-size"), environ={})
    handler.load_model()
    x = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype("float32")
    result = handler.invoke(_npy(x), NPY, NPY)
    assert result.status == 200, result.message
    assert np.load(io.BytesIO(result.body)).shape == (5, 10)
    bad = handler.invoke(_npy(np.zeros((5, 3, 16, 16), dtype="float32")), NPY, NPY)
    assert bad.status == 400 and "(dim 0 dynamic)" in bad.message


def test_an_ml_c5_artifact_is_plain_torchscript_without_device_shapes(compiled_dir):
    model = default_model_fn(str(compiled_dir(target="ml_c5")))
    assert not isinstance(model, CompiledModel)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_a_model_dir_without_the_compiler_manifest_loads_as_before(tmp_path, cnn):
    (tmp_path / "model.pt").write_bytes(script_bytes(cnn))
    (tmp_path / "manifest.json").write_text('{"not": "ours"}')
    model = default_model_fn(str(tmp_path))
    assert isinstance(model, torch.jit.ScriptModule)


def test_each_execution_counts_the_compile_reports_projected_device_time(compiled_dir):
    model_dir = compiled_dir(options="--dynamic-batch-size")
    manifest = compiled_manifest.load(model_dir)
    assert manifest is not None and manifest.dynamic_batch
    per_batch = manifest.projected_device_seconds()
    assert per_batch is not None and per_batch > 0
    handler = Handler(model_dir, environ={})
    model = handler.load_model()
    assert model.device_seconds == per_batch and model.compiled_batch == 1
    assert handler.invoke(_npy(np.zeros((1, 3, 32, 32), dtype="float32")), NPY, NPY).status == 200
    assert model.last_device_us == int(per_batch * 1e9) // 1000
    # Five rows on a batch-1 compilation run as five chunks on the NeuronCore.
    assert handler.invoke(_npy(np.zeros((5, 3, 32, 32), dtype="float32")), NPY, NPY).status == 200
    assert model.last_device_us == int(5 * per_batch * 1e9) // 1000
    assert model.device_ns == int(per_batch * 1e9) + int(5 * per_batch * 1e9)
    # A refused input never reached the device.
    assert handler.invoke(_npy(np.zeros((1, 3, 16, 16), dtype="float32")), NPY, NPY).status == 400
    assert model.last_device_us is None
