"""Models built in code for the compiler tests, saved as the TorchScript tarballs Neo would receive."""

from __future__ import annotations

import io
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tests.support.torch_models import resnet18
from torch import nn

HERE = Path(__file__).parent
# TorchScript is deprecated upstream but is the artifact format under test.
JIT_DEPRECATION = "ignore:`torch.jit.:DeprecationWarning"
MEASURE_BUDGET_S = 0.25


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.filterwarnings(JIT_DEPRECATION))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # The machine has 2 cores shared with other test runs; one thread keeps timings comparable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, ffn)
        self.ff2 = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax(q @ k.transpose(-1, -2) / (h // self.heads) ** 0.5, -1)
        y = (att @ v).transpose(1, 2).reshape(b, t, h)
        x = self.ln1(x + self.out(y))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class TinyBert(nn.Module):
    """A BERT-like encoder: word/position/type embeddings, fused-QKV layers, pooler and classifier."""

    def __init__(
        self,
        vocab: int = 500,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        ffn: int = 128,
        seq: int = 32,
        classes: int = 2,
    ) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(seq, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.ln = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList([EncoderLayer(hidden, heads, ffn) for _ in range(layers)])
        self.pool = nn.Linear(hidden, hidden)
        self.cls = nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.ln(self.word(ids) + self.pos(positions) + self.token_type(torch.zeros_like(ids)))
        for layer in self.layers:
            x = layer(x)
        return self.cls(torch.tanh(self.pool(x[:, 0])))


class DLRM(nn.Module):
    """DLRM-style recommender: bottom MLP, EmbeddingBag tables, dot interaction (bmm), top MLP."""

    def __init__(self, dense: int = 13, tables: tuple[int, ...] = (100, 80, 60), dim: int = 16) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(dense, 32), nn.ReLU(), nn.Linear(32, dim), nn.ReLU())
        self.emb = nn.ModuleList([nn.EmbeddingBag(n, dim, mode="sum") for n in tables])
        features = len(tables) + 1
        self.top = nn.Sequential(nn.Linear(dim + features * features, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        z = torch.stack([x] + [table(sparse[:, i, :]) for i, table in enumerate(self.emb)], dim=1)
        interactions = torch.bmm(z, z.transpose(1, 2)).flatten(1)
        return torch.sigmoid(self.top(torch.cat([x, interactions], dim=1)))


class AcousticModel(nn.Module):
    """TTS-style acoustic model: phoneme embedding, conv encoder, BiLSTM, mel projection, conv postnet."""

    def __init__(self, phonemes: int = 60, hidden: int = 64, mels: int = 40) -> None:
        super().__init__()
        self.emb = nn.Embedding(phonemes, hidden)
        self.convs = nn.ModuleList([nn.Conv1d(hidden, hidden, 5, padding=2) for _ in range(3)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(hidden) for _ in range(3)])
        self.lstm = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(hidden, mels)
        self.post = nn.Sequential(nn.Conv1d(mels, 32, 5, padding=2), nn.Tanh(), nn.Conv1d(32, mels, 5, padding=2))

    def forward(self, phonemes: torch.Tensor) -> torch.Tensor:
        x = self.emb(phonemes).transpose(1, 2)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x)))
        x, _ = self.lstm(x.transpose(1, 2))
        mel = self.proj(x).transpose(1, 2)
        return mel + self.post(mel)


class GatherNet(nn.Module):
    """An MLP with aten::gather (not supported on Inf1) between two supported halves."""

    idx: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 32)
        self.c, self.d = nn.Linear(32, 16), nn.Linear(16, 8)
        self.register_buffer("idx", torch.randint(0, 32, (4, 32), generator=torch.Generator().manual_seed(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.b(F.relu(self.a(x))))
        h = torch.gather(h, 1, self.idx)
        return self.d(F.relu(self.c(h)))


class FixedBatch(nn.Module):
    """Hard-codes its batch in a reshape, so dynamic batch sizes cannot work."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)).reshape(4, -1))


class GatherOnly(nn.Module):
    """Nothing here can run on a NeuronCore."""

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 1, index)


class LinearRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(x))


def trace(model: nn.Module, *example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace a model in eval mode (deterministic weights come from the caller's seed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model.eval(), example)


def write_tarball(path: Path, members: dict[str, bytes]) -> Path:
    """Write a model.tar.gz holding `members` (name -> bytes)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def script_bytes(module: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


class Zoo:
    """Build each test model once and save it as a Neo input tarball."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[Path, Any]] = {}

    def _build(
        self,
        name: str,
        model: nn.Module,
        examples: tuple[torch.Tensor, ...],
        config: Any,
        extra: dict[str, bytes] | None = None,
    ) -> tuple[Path, Any]:
        if name not in self._cache:
            members = {"model.pth": script_bytes(trace(model, *examples)), **(extra or {})}
            self._cache[name] = (write_tarball(self.root / f"{name}.tar.gz", members), config)
        return self._cache[name]

    def cnn(self) -> tuple[Path, Any]:
        torch.manual_seed(0)
        return self._build(
            "cnn",
            resnet18((16, 32, 64, 128), classes=10),
            (torch.randn(1, 3, 64, 64),),
            {"input0": [1, 3, 64, 64]},
            {"code/inference.py": b"def model_fn(model_dir):\n    pass\n"},
        )

    def bert(self) -> tuple[Path, Any]:
        torch.manual_seed(0)
        return self._build("bert", TinyBert(), (torch.randint(0, 500, (1, 32)),), [[1, 32]])

    def dlrm(self) -> tuple[Path, Any]:
        torch.manual_seed(0)
        examples = (torch.randn(4, 13), torch.randint(0, 60, (4, 3, 2)))
        return self._build("dlrm", DLRM(), examples, {"dense": [4, 13], "sparse": [4, 3, 2]})

    def tts(self) -> tuple[Path, Any]:
        torch.manual_seed(0)
        return self._build("tts", AcousticModel(), (torch.randint(0, 60, (1, 48)),), {"phonemes": [1, 48]})

    def gather(self) -> tuple[Path, Any]:
        torch.manual_seed(0)
        return self._build("gather", GatherNet(), (torch.randn(4, 16),), [[4, 16]])

    def fixed_batch(self) -> tuple[Path, Any]:
        torch.manual_seed(0)
        return self._build("fixed_batch", FixedBatch(), (torch.randn(4, 16),), [[4, 16]])

    def gather_only(self) -> tuple[Path, Any]:
        examples = (torch.randn(4, 8), torch.randint(0, 8, (4, 8)))
        return self._build("gather_only", GatherOnly(), examples, [[4, 8], [4, 8]])

    def linear_relu(self) -> tuple[Path, Any]:
        torch.manual_seed(0)
        return self._build("linear_relu", LinearRelu(), (torch.randn(2, 8),), [[2, 8]])


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture
def save_model(tmp_path: Path) -> Any:
    """Return save(name, model, examples) -> path of a model.tar.gz holding the traced model."""

    def save(name: str, model: nn.Module, examples: tuple[torch.Tensor, ...]) -> Path:
        return write_tarball(tmp_path / f"{name}.tar.gz", {"model.pth": script_bytes(trace(model, *examples))})

    return save


@pytest.fixture(scope="session")
def compiled_cnn(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The ResNet-style CNN compiled once for ml_inf1 (default options), shared by read-only tests."""
    from neurondock_workers.compiler import compile_model

    path, config = zoo.cnn()
    return compile_model(
        path, config, "ml_inf1", None, tmp_path_factory.mktemp("cnn"), measure_budget_s=MEASURE_BUDGET_S
    )
