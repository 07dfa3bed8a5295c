"""Cast emulation: what the device rounds, how drift is measured, when an execution counts as equivalent."""

from __future__ import annotations

import tarfile

import pytest
import torch
from torch import nn

from neurondock_workers.compiler import compile_model, load_compiled
from neurondock_workers.compiler._numerics import compare_outputs, within_tolerance

BUDGET = 0.2
# Tiny models are dispatch-bound, so "auto" would serve FP32; these tests check the served casts.
SERVE_CASTS = "--execution-policy device-numerics"


def unpack(result, dest):
    with tarfile.open(result.artifact_path) as tar:
        tar.extractall(dest, filter="data")
    return load_compiled(dest)


def rnd(t, dtype):
    return t.to(dtype).to(torch.float32)


def original_weights(zoo):
    path, _ = zoo.linear_relu()
    with tarfile.open(path) as tar:
        module = torch.jit.load(tar.extractfile("model.pth"))
    return module.fc.weight.detach(), module.fc.bias.detach()


@pytest.mark.parametrize(
    ("options", "dtype", "round_bias"),
    [
        ("", torch.bfloat16, True),  # fp32-cast-all: every FP32 constant and matmul input
        ("--fast-math fp32-cast-matmult-bf16", torch.bfloat16, False),  # only the GEMM operands
        ("--fast-math fp32-cast-all-fp16", torch.float16, True),
    ],
)
def test_linear_relu_matches_a_hand_emulation(zoo, tmp_path, options, dtype, round_bias):
    path, config = zoo.linear_relu()
    options = f"{options} {SERVE_CASTS}"
    result = compile_model(path, config, "ml_inf1", options, tmp_path / "w", measure_budget_s=BUDGET)
    assert result.report["execution"]["serves_device_numerics"] is True
    module = unpack(result, tmp_path / "out")
    weight, bias = original_weights(zoo)
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(7))
    expected = torch.relu(rnd(x, dtype) @ rnd(weight, dtype).T + (rnd(bias, dtype) if round_bias else bias))
    assert torch.allclose(module(x), expected, rtol=0, atol=1e-6)
    fp32 = torch.relu(x @ weight.T + bias)
    assert not torch.allclose(module(x), fp32, rtol=0, atol=1e-6)


class SharedProjection(nn.Module):
    """q and k are views of one projection: the device rounds that projection once."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.proj(x).view(x.shape[0], 2, 8).unbind(1)
        return torch.relu(q @ k.t())


def test_rounding_is_hoisted_above_views_without_changing_results(save_model, tmp_path):
    torch.manual_seed(0)
    model = SharedProjection()
    path = save_model("shared", model, (torch.randn(4, 8),))
    result = compile_model(path, [[4, 8]], "ml_inf1", SERVE_CASTS, tmp_path / "w", measure_budget_s=BUDGET)
    # x and the projection are rounded once each; q and k reuse the projection's rounding.
    assert result.report["numerics"]["rounded_activations"] == 2
    module = unpack(result, tmp_path / "out")
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
    bf16 = torch.bfloat16
    h = rnd(rnd(x, bf16) @ rnd(model.proj.weight.detach(), bf16).T, bf16)
    q, k = h.view(4, 2, 8).unbind(1)
    assert torch.allclose(module(x), torch.relu(q @ k.T), rtol=0, atol=1e-6)


def test_fp16_drifts_less_than_bf16(compiled_cnn, zoo, tmp_path):
    path, config = zoo.cnn()
    fp16 = compile_model(
        path, config, "ml_inf1", "--fast-math fp32-cast-matmult-fp16", tmp_path, measure_budget_s=BUDGET
    )
    bf16_drift = compiled_cnn.report["numerics"]["drift"]["max_abs_error"]
    fp16_drift = fp16.report["numerics"]["drift"]["max_abs_error"]
    # FP16 keeps 11 significant bits to BF16's 8: about 8x less rounding error.
    assert 0 < fp16_drift < bf16_drift / 3


def test_tolerance_separates_reordering_noise_from_a_cast():
    drift = {"max_abs_error": 1e-3, "reference_max_abs": 1.0}
    assert within_tolerance({"comparable": True, "max_abs_error": 2e-5}, drift)
    assert not within_tolerance({"comparable": True, "max_abs_error": 1e-3}, drift)
    assert within_tolerance({"comparable": True, "max_abs_error": 1e-3}, drift, envelope=True)
    assert not within_tolerance({"comparable": False, "max_abs_error": 0.0}, drift)


def test_compare_outputs_walks_nested_outputs_and_checks_integers():
    a = {"logits": torch.tensor([1.0, 2.0]), "ids": torch.tensor([1, 2])}
    b = {"logits": torch.tensor([1.0, 2.5]), "ids": torch.tensor([1, 3])}
    report = compare_outputs(a, b)
    assert report["max_abs_error"] == pytest.approx(0.5)
    assert {"shape": [2], "exact": False} in report["outputs"]
    assert not within_tolerance(compare_outputs(a, b), {"max_abs_error": 1.0, "reference_max_abs": 2.5}, envelope=True)
    same = compare_outputs((a["logits"],), (a["logits"],))
    assert same["cosine_similarity"] == pytest.approx(1.0) and same["max_abs_error"] == 0.0
    assert compare_outputs(torch.zeros(2), torch.zeros(3))["comparable"] is False
