"""Operator analysis and work profiles: the graph analyser agrees with the analytic builders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurondock_workers.compiler import compile_model
from neurondock_workers.compiler._oplist import is_arithmetic, is_supported, unsupported_reason
from neurondock_workers.compiler._profile import reference_profile, resnet_profile, transformer_profile


def test_supported_list_follows_neurons_published_operators():
    for kind in (
        "aten::_convolution",
        "aten::linear",
        "aten::layer_norm",
        "aten::gelu",
        "aten::softmax",
        "aten::bmm",
        "aten::lstm",
        "prim::ListConstruct",
    ):
        assert is_supported(kind), kind
    for kind in (
        "aten::embedding",
        "aten::embedding_bag",
        "aten::index",
        "aten::gather",
        "aten::randn",
        "prim::If",
        "prim::Loop",
        "aten::nonzero",
    ):
        assert not is_supported(kind), kind
    assert "performance criteria" in unsupported_reason("aten::embedding")
    assert is_arithmetic("aten::t") and not is_arithmetic("prim::Constant")


def test_graph_profile_of_the_bert_encoder_matches_the_formula(zoo, tmp_path):
    path, config = zoo.bert()
    result = compile_model(path, config, "ml_inf1", None, tmp_path, measure_budget_s=0.1)
    measured = result.report["projection"]["whole_model_profile"]
    formula = transformer_profile(layers=2, hidden=64, heads=4, ffn=128, seq=32, batch=1, classes=2)
    assert measured["gemm_flops"] == pytest.approx(formula.gemm_flops, rel=1e-9)
    assert measured["gemm_rows"] == pytest.approx(formula.gemm_rows, rel=1e-9)
    assert measured["conv_flops"] == 0


def test_graph_profile_of_the_cnn_matches_the_formula(compiled_cnn):
    measured = compiled_cnn.report["projection"]["whole_model_profile"]
    formula = resnet_profile(
        block="basic",
        layers=(2, 2, 2, 2),
        widths=(16, 32, 64, 128),
        image=64,
        batch=1,
        stem_width=16,
        classes=10,
    )
    assert measured["conv_flops"] == pytest.approx(formula.conv_flops, rel=1e-9)
    assert measured["gemm_flops"] == pytest.approx(formula.gemm_flops, rel=1e-9)


def test_reference_profiles_match_published_model_sizes():
    bert = reference_profile("bert-base", 1)
    assert bert.total_flops == pytest.approx(22.4e9, rel=0.01)  # 2*85M*128 + attention
    assert bert.weight_count == pytest.approx(85.6e6, rel=0.01)  # encoder + pooler; embeddings stay on the CPU
    resnet = reference_profile("resnet-50", 1)
    assert resnet.total_flops == pytest.approx(8.2e9, rel=0.01)  # 4.1 GMACs
    assert resnet.weight_count == pytest.approx(25.6e6, rel=0.02)
    assert reference_profile("bert-base", 6).gemm_flops == pytest.approx(6 * bert.gemm_flops)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if bool(h.sum() > 0):
            h = h * 2
        return torch.relu(self.b(h))


def test_control_flow_stays_on_the_cpu(tmp_path):
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Branchy().eval()).save(str(tmp_path / "branchy.pt"))
    result = compile_model(tmp_path / "branchy.pt", [[2, 8]], "ml_inf1", None, tmp_path / "w", measure_budget_s=0.1)
    analysis = result.report["analyze"]
    assert "prim::If" in analysis["unsupported_operators"]
    assert analysis["operator_count"]["aten::mul"] == 1  # counted inside the branch
    why = [
        e["reason"]
        for s in result.report["partition"]["segments"]
        if s["target"] == "cpu"
        for e in s["why_cpu"].values()
    ]
    assert any("control flow (prim::If)" in reason for reason in why)
    assert result.report["partition"]["neuron_subgraphs"] == 2
