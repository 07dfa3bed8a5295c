"""The recommender endpoint's handler (SAGEMAKER_PROGRAM): two inputs arrive as one NPZ body.

The default PyTorch handler passes one tensor to the model; a DLRM takes dense features and
categorical ids. ``model_fn`` and ``output_fn`` stay the defaults (the compiled model; NPY/JSON out).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

NPZ = "application/x-npz"


def input_fn(body: bytes, content_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``{"dense": float32 [batch, 13], "sparse": int64 [batch, 8]}`` from an NPZ body."""
    if content_type.split(";")[0].strip() != NPZ:
        raise ValueError(f"Send {NPZ} with arrays 'dense' and 'sparse', not {content_type}")
    arrays = np.load(io.BytesIO(body), allow_pickle=False)
    return torch.from_numpy(arrays["dense"]), torch.from_numpy(arrays["sparse"])


def predict_fn(inputs: tuple[torch.Tensor, torch.Tensor], model: Any) -> torch.Tensor:
    """Run the model on both inputs."""
    with torch.inference_mode():
        return model(*inputs)
