"""Weights re-pointed at the host's shared file mapping: only when safe, and never changing an answer."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
import torch

from neurondock_workers.hosting import weights
from neurondock_workers.hosting.weights_cache import prune, weights_key

X = torch.randn(4, 512, generator=torch.Generator().manual_seed(1))


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512)).eval()


def _torchscript(module: torch.nn.Module) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        torch.jit.save(torch.jit.trace(module, torch.zeros(1, 512)), buffer)
        buffer.seek(0)
        return torch.jit.load(buffer)


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(str(path)):
                lo, hi = line.split()[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def _all_mapped(model: torch.nn.Module, cache: Path) -> bool:
    (path,) = cache.glob("*.pt")
    ranges = _mapped_ranges(path)
    return all(any(lo <= t.data_ptr() < hi for lo, hi in ranges) for t in [*model.parameters(), *model.buffers()])


def _answer(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(X)


def test_torchscript_weights_move_to_the_shared_file_and_answers_stay_bit_identical(tmp_path):
    first, second = _torchscript(_mlp()), _torchscript(_mlp())
    before = _answer(first)

    note_first = weights.share_weights(first, tmp_path, "k1")
    note_second = weights.share_weights(second, tmp_path, "k1")

    assert note_first.startswith("weights shared: 4 tensors (2.0 MiB)") and "written by this replica" in note_first
    assert "written by an earlier replica" in note_second
    assert len(list(tmp_path.glob("*.pt"))) == 1
    assert _all_mapped(first, tmp_path) and _all_mapped(second, tmp_path)
    assert torch.equal(_answer(first), before) and torch.equal(_answer(second), before)


def test_eager_models_keep_tied_weights_tied(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(1024, 512)
            self.head = torch.nn.Linear(512, 1024, bias=False)
            self.head.weight = self.embed.weight
            self.norm = torch.nn.LayerNorm(512)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.embed(ids)))

    torch.manual_seed(0)
    model = Tied().eval()
    ids = torch.arange(16)
    with torch.inference_mode():
        before = model(ids)

    note = weights.share_weights(model, tmp_path, "tied")

    assert note.startswith("weights shared: 3 tensors")
    assert model.head.weight is model.embed.weight
    assert _all_mapped(model, tmp_path)
    with torch.inference_mode():
        assert torch.equal(model(ids), before)


def test_weights_that_differ_under_the_same_key_stay_private(tmp_path):
    weights.share_weights(_mlp(seed=0), tmp_path, "k")
    other = _mlp(seed=1)  # a model_fn that does not load the same values every time
    before = _answer(other)

    note = weights.share_weights(other, tmp_path, "k")

    assert "4 tensors differ from that file and stay private" in note
    assert torch.equal(_answer(other), before)


def test_frozen_torchscript_is_left_alone_and_says_why(tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        frozen = torch.jit.freeze(torch.jit.script(_mlp()))

    note = weights.share_weights(frozen, tmp_path, "frozen")

    assert note.startswith("weights not shared: a frozen/optimized TorchScript graph holds its weights as")
    assert not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_mlp().train(), "the model is in training mode"),
        (torch.nn.Linear(4, 4).eval(), "too small to be worth a shared mapping"),
        ({"encoder": _mlp()}, "the model is a dict, not a torch.nn.Module"),
    ],
)
def test_unsafe_or_pointless_models_are_not_shared(tmp_path, model, reason):
    assert reason in weights.share_weights(model, tmp_path, "k")
    assert not list(tmp_path.glob("*.pt"))


def test_the_environment_switches_sharing(tmp_path):
    env = {"NEURONDOCK_WEIGHTS_CACHE": str(tmp_path), "NEURONDOCK_WEIGHTS_KEY": "k"}
    assert weights.share_from_env(_mlp(), {**env, "NEURONDOCK_SHARE_WEIGHTS": "0"}) == (
        "weights not shared: NEURONDOCK_SHARE_WEIGHTS is off"
    )
    assert weights.share_from_env(_mlp(), {}) is None, "no artifact identity outside a host agent"
    assert weights.share_from_env(None, env) is None
    assert (weights.share_from_env(_mlp(), env) or "").startswith("weights shared")


def test_cache_keys_and_pruning(tmp_path):
    key = weights_key("digest", {"A": "1"})
    assert key == weights_key("digest", {"A": "1"}) != weights_key("digest", {"A": "2"})
    for name in (f"{key}-abc.pt", f"{key}-abc.lock", "other-abc.pt", ".other-abc.pt-tmp"):
        (tmp_path / name).write_bytes(b"")

    removed = prune(tmp_path, {key})

    assert sorted(p.name for p in removed) == [".other-abc.pt-tmp", "other-abc.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}-abc.lock", f"{key}-abc.pt"]
