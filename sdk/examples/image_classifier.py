"""Image classification: a small ResNet-style CNN (224x224 RGB -> 10 classes) on ml.inf1.xlarge.

The model is built here with random weights; its shape (a strided stem, residual stages with batch
norm, global pooling and a linear head) is what the compile report and the projection look at.

    python sdk/examples/image_classifier.py --endpoint-url http://127.0.0.1:8780
"""

from __future__ import annotations

import _common
import numpy as np
import torch
from torch import nn

IMAGE_SIZE = 224
CLASSES = ("cat", "dog", "car", "ship", "plane", "bird", "frog", "horse", "truck", "deer")


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions and a (projected when the shape changes) shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-10-shaped classifier with narrow stages (16, 32, 64, 128 channels)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            stages.append(BasicBlock(channels, width, stride=1 if i == 0 else 2))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, len(CLASSES)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(images))).softmax(-1)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    session = _common.make_session(args)
    torch.manual_seed(0)
    model = SmallResNet().eval()
    # One normalised RGB image, NCHW float32: 600 KB as NPY (JSON would take ~100 ms just to parse).
    image = np.random.default_rng(0).standard_normal((1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)

    compiled = _common.compile_for_inf1(session, args, "image-classifier", model, torch.from_numpy(image))
    try:
        predictor = _common.deploy(compiled)
        probabilities = predictor.predict(image)[0]
        top = np.argsort(probabilities)[::-1][:3]
        print("top 3:", ", ".join(f"{CLASSES[i]} {probabilities[i]:.3f}" for i in top))
        latency = _common.time_predictions(lambda: predictor.predict(image), args.requests)
        _common.print_comparison("image classifier", latency, _common.compile_report(session, compiled))
    finally:
        _common.clean_up(compiled, args.keep)


if __name__ == "__main__":
    main()
