"""Text to speech: a FastSpeech-style acoustic model (phonemes -> mel spectrogram) on ml.inf1.xlarge, streamed.

The workload behind "most of Alexa's text-to-speech runs on Inf1". The model is built here with random
weights: what matters is its shape (an embedding, convolutions, a length regulator, a mel head and a
postnet), which decides what lands on NeuronCores and what the projection says.

The endpoint streams (InvokeEndpointWithResponseStream): ``tts_streaming_inference.py`` synthesises
the utterance phrase by phrase and sends each phrase's frames as soon as they exist, so playback can
start after the first phrase instead of the whole utterance. The example prints both times.

    python sdk/examples/tts_acoustic.py --endpoint-url http://127.0.0.1:8780
"""

from __future__ import annotations

import io
import re
import statistics
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np
import torch
from torch import nn

SYMBOLS = " abcdefghijklmnopqrstuvwxyz,.?!'"
MAX_SYMBOLS = 48  # Inferentia compiles static shapes: pad every utterance to this many symbols
FRAMES_PER_SYMBOL = 4  # a real model predicts a duration per phoneme; a fixed rate keeps shapes static
MEL_BINS = 80
UTTERANCE = "Alexa, turn off the bedroom lights, lock the front door, and play some jazz in the kitchen."
HANDLER = Path(__file__).with_name("tts_streaming_inference.py")


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


def phrases(text: str) -> list[str]:
    """Split an utterance after each comma or sentence end: the unit the endpoint synthesises at a time."""
    return [p.strip() for p in re.findall(r"[^,.?!]+[,.?!]?", text) if p.strip()]


def stream(predictor: Any, symbols: np.ndarray) -> tuple[list[np.ndarray], float, float]:
    """Stream one utterance; return its mel chunks and the seconds to the first chunk and to the last."""
    sent = time.perf_counter()
    first = 0.0
    chunks: list[np.ndarray] = []
    for part in predictor.predict_stream(symbols):
        if not chunks:
            first = time.perf_counter() - sent
        # Each part is one phrase's frames, NPY-encoded whole by the endpoint's output_fn.
        chunks.append(np.load(io.BytesIO(part), allow_pickle=False))
    return chunks, first, time.perf_counter() - sent


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    session = _common.make_session(args)
    torch.manual_seed(0)
    model = AcousticModel().eval()
    parts = phrases(UTTERANCE)
    symbols = np.concatenate([encode(p) for p in parts])  # one padded row per phrase

    # entry_point: deploy repacks the compiled artifact with code/tts_streaming_inference.py, as SageMaker does.
    example = torch.from_numpy(symbols[:1])
    compiled = _common.compile_for_inf1(session, args, "tts-acoustic", model, example, entry_point=str(HANDLER))
    try:
        predictor = _common.deploy(compiled)
        chunks, _, _ = stream(predictor, symbols)
        mel = np.concatenate(chunks, axis=1)
        with torch.no_grad():
            local = np.concatenate(
                [model(torch.from_numpy(encode(p)))[:, : len(p.lower()) * FRAMES_PER_SYMBOL].numpy() for p in parts],
                axis=1,
            )
        print(
            f"mel spectrogram {mel.shape} ({mel.shape[1]} frames x {mel.shape[2]} bins) in {len(chunks)} streamed "
            f"chunks, one per phrase; max |endpoint - local PyTorch| = {np.abs(mel - local).max():.4f}"
        )
        timings = [stream(predictor, symbols)[1:] for _ in range(max(args.requests, 1))]
        first_ms = statistics.median(t[0] for t in timings) * 1e3
        whole_ms = statistics.median(t[1] for t in timings) * 1e3
        print(
            f"measured   streamed utterance ({len(parts)} phrases, InvokeEndpointWithResponseStream, p50 of "
            f"{len(timings)}): first audio chunk {first_ms:7.2f} ms   whole utterance {whole_ms:7.2f} ms   "
            f"(playback starts {whole_ms / max(first_ms, 1e-6):.1f}x sooner)"
        )
        one_phrase = symbols[:1]
        latency = _common.time_predictions(lambda: predictor.predict(one_phrase), args.requests)
        _common.print_comparison("TTS acoustic model, one phrase", latency, _common.compile_report(session, compiled))
    finally:
        _common.clean_up(compiled, args.keep)


if __name__ == "__main__":
    main()
