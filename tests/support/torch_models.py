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


def resnet18(widths: tuple[int, ...] = (64, 128, 256, 512), classes: int = 1000) -> Any:
    """torchvision's ResNet-18 layout built in code (torchvision is not a dependency), seeded, in eval mode."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        """torchvision's ResNet-18 layout: 7x7 stem, basic blocks 2-2-2-2, global pool, classifier."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
            blocks, cin = [], widths[0]
            for i, width in enumerate(widths):
                for j in range(2):
                    blocks.append(BasicBlock(cin, width, 2 if j == 0 and i > 0 else 1))
                    cin = width
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    torch.manual_seed(0)
    return ResNet18().eval()


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
