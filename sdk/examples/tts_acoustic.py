"""Text to speech: a FastSpeech-style acoustic model (phonemes -> mel spectrogram) on ml.inf1.xlarge.

The workload behind "most of Alexa's text-to-speech runs on Inf1". The model is built here with random
weights: what matters is its shape (an embedding, convolutions, a length regulator, a mel head and a
postnet), which decides what lands on NeuronCores and what the projection says.

    python sdk/examples/tts_acoustic.py --endpoint-url http://127.0.0.1:8780
"""

from __future__ import annotations

import _common
import numpy as np
import torch
from torch import nn

SYMBOLS = " abcdefghijklmnopqrstuvwxyz,.?!'"
MAX_SYMBOLS = 48  # Inferentia compiles static shapes: pad every utterance to this many symbols
FRAMES_PER_SYMBOL = 4  # a real model predicts a duration per phoneme; a fixed rate keeps shapes static
MEL_BINS = 80


class ConvBlock(nn.Module):
    """Conv1d → ReLU → LayerNorm over channels, with a residual connection."""

    def __init__(self, channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return x + self.norm(y.transpose(1, 2)).transpose(1, 2)


class AcousticModel(nn.Module):
    """Symbol ids [batch, MAX_SYMBOLS] → mel spectrogram [batch, MAX_SYMBOLS * FRAMES_PER_SYMBOL, MEL_BINS]."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(SYMBOLS), channels)
        self.encoder = nn.Sequential(*(ConvBlock(channels) for _ in range(3)))
        self.decoder = nn.Sequential(*(ConvBlock(channels) for _ in range(3)))
        self.mel = nn.Linear(channels, MEL_BINS)
        self.postnet = nn.Sequential(
            nn.Conv1d(MEL_BINS, 256, 5, padding=2), nn.Tanh(), nn.Conv1d(256, MEL_BINS, 5, padding=2)
        )

    def forward(self, symbols: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embed(symbols).transpose(1, 2))
        x = x.repeat_interleave(FRAMES_PER_SYMBOL, dim=2)  # the length regulator
        mel = self.mel(self.decoder(x).transpose(1, 2))
        return mel + self.postnet(mel.transpose(1, 2)).transpose(1, 2)


def encode(text: str) -> np.ndarray:
    """Map text to padded symbol ids (a real front end would produce phonemes)."""
    ids = [SYMBOLS.index(c) for c in text.lower() if c in SYMBOLS][:MAX_SYMBOLS]
    return np.array([ids + [0] * (MAX_SYMBOLS - len(ids))], dtype=np.int64)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    session = _common.make_session(args)
    torch.manual_seed(0)
    model = AcousticModel().eval()
    symbols = encode("Alexa, turn off the bedroom lights.")

    compiled = _common.compile_for_inf1(session, args, "tts-acoustic", model, torch.from_numpy(symbols))
    try:
        predictor = _common.deploy(compiled)
        mel = predictor.predict(symbols)
        with torch.no_grad():
            local = model(torch.from_numpy(symbols)).numpy()
        print(
            f"mel spectrogram {mel.shape} ({mel.shape[1]} frames x {mel.shape[2]} bins); "
            f"max |endpoint - local PyTorch| = {np.abs(mel - local).max():.4f}"
        )
        latency = _common.time_predictions(lambda: predictor.predict(symbols), args.requests)
        _common.print_comparison("TTS acoustic model", latency, _common.compile_report(session, compiled))
    finally:
        _common.clean_up(compiled, args.keep)


if __name__ == "__main__":
    main()
