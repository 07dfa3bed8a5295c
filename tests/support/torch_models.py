"""Small models built in code and packed the way SageMaker expects (model.tar.gz)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any


def tiny_mlp(seed: int = 0) -> Any:
    """A 16→16→4 MLP as TorchScript."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    return torch.jit.trace(model, torch.randn(1, 16))


def small_cnn(seed: int = 0) -> Any:
    """A small image CNN as TorchScript (3×32×32 in, 10 classes out)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    return torch.jit.trace(model, torch.randn(1, 3, 32, 32))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack_model(
    path: Path,
    scripted: Any | None = None,
    *,
    model_name: str = "model.pt",
    code: dict[str, str] | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Write a model.tar.gz with a TorchScript file at the top and optional ``code/`` files."""
    import torch

    with tarfile.open(path, "w:gz") as tar:
        if scripted is not None:
            buf = io.BytesIO()
            torch.jit.save(scripted, buf)
            _add_bytes(tar, model_name, buf.getvalue())
        for name, text in (code or {}).items():
            _add_bytes(tar, f"code/{name}", text.encode())
        for name, data in (extra or {}).items():
            _add_bytes(tar, name, data)
    return path
