"""The TTS endpoint's handler (SAGEMAKER_PROGRAM): synthesise an utterance phrase by phrase, streaming each.

The request is NPY symbol ids, one padded row per phrase. ``predict_fn`` returns a generator: each
phrase's mel frames leave the endpoint (one ``PayloadPart``, NPY-encoded by the default ``output_fn``)
as soon as the model has produced them, while it works on the next phrase. ``model_fn``, ``input_fn``
and ``output_fn`` stay the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def predict_fn(phrases: torch.Tensor, model: Any) -> Iterator[torch.Tensor]:
    """Yield the mel frames [1, frames, bins] of each phrase, its padding cut off, as each is ready."""

    def frames() -> Iterator[torch.Tensor]:
        for row in phrases:
            ids = row.unsqueeze(0)
            with torch.inference_mode():
                mel = model(ids)
            # Padding is symbol 0 (a space): the phrase ends after its last other symbol.
            used = int(row.nonzero().max()) + 1 if bool(row.any()) else 0
            per_symbol = mel.shape[1] // ids.shape[1]
            yield mel[:, : used * per_symbol]

    return frames()
