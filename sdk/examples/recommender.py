"""Recommendation: a DLRM-style click-through-rate model (dense features + categorical ids) on ml.inf1.xlarge.

Built here with random weights: a bottom MLP for the dense features, one embedding table per
categorical feature, DLRM's pairwise dot-product interaction and a top MLP. The embedding lookups fall
back to the CPU (they are not on Neuron's supported-operator list), and the compile report says so.
Two inputs travel as one NPZ body, decoded by ``recommender_inference.py`` on the endpoint.

    python sdk/examples/recommender.py --endpoint-url http://127.0.0.1:8780
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import _common
import numpy as np
import torch
from torch import nn

from neurondock.serializers import SimpleBaseSerializer

DENSE_FEATURES = 13  # as in the Criteo dataset DLRM was built for
TABLE_ROWS = (1000, 500, 200, 100, 50, 20, 10, 5)  # one table per categorical feature
EMBEDDING_DIM = 16
BATCH = 64  # score 64 candidate items per request
HANDLER = Path(__file__).with_name("recommender_inference.py")


def mlp(*sizes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for inputs, outputs in itertools.pairwise(sizes):
        layers += [nn.Linear(inputs, outputs), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class DLRM(nn.Module):
    """dense [batch, 13] float32, sparse [batch, 8] int64 → click probability [batch, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.bottom = mlp(DENSE_FEATURES, 64, EMBEDDING_DIM)
        self.tables = nn.ModuleList(nn.Embedding(rows, EMBEDDING_DIM) for rows in TABLE_ROWS)
        features = len(TABLE_ROWS) + 1
        # DLRM keeps only the upper triangle of the interactions; the full matrix keeps the graph simple.
        self.top = mlp(EMBEDDING_DIM + features * features, 64, 32, 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        vectors = torch.stack([x] + [table(sparse[:, i]) for i, table in enumerate(self.tables)], dim=1)
        interactions = torch.bmm(vectors, vectors.transpose(1, 2)).flatten(1)
        return torch.sigmoid(self.top(torch.cat([x, interactions], dim=1)))


class NpzSerializer(SimpleBaseSerializer):
    """Send a dict of arrays as one NPZ body (what recommender_inference.py reads)."""

    def __init__(self) -> None:
        super().__init__(content_type="application/x-npz")

    def serialize(self, data: Any) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **data)
        return buffer.getvalue()


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    session = _common.make_session(args)
    torch.manual_seed(0)
    model = DLRM().eval()
    rng = np.random.default_rng(0)
    request = {
        "dense": rng.standard_normal((BATCH, DENSE_FEATURES)).astype(np.float32),
        "sparse": np.stack([rng.integers(0, rows, BATCH) for rows in TABLE_ROWS], axis=1).astype(np.int64),
    }
    example = (torch.from_numpy(request["dense"]), torch.from_numpy(request["sparse"]))

    # entry_point: deploy repacks the compiled artifact with code/recommender_inference.py, as SageMaker does.
    compiled = _common.compile_for_inf1(session, args, "recommender", model, example, entry_point=str(HANDLER))
    try:
        predictor = _common.deploy(compiled, serializer=NpzSerializer())
        scores = predictor.predict(request)[:, 0]
        with torch.no_grad():
            local = model(*example).numpy()[:, 0]
        best = np.argsort(scores)[::-1][:5]
        clicks = ", ".join(f"{p:.3f}" for p in scores[best])
        print(f"scored {len(scores)} candidates; top 5 items {best.tolist()} with p(click) {clicks}")
        print(f"max |endpoint - local PyTorch| = {np.abs(scores - local).max():.4f}")
        latency = _common.time_predictions(lambda: predictor.predict(request), args.requests)
        _common.print_comparison("DLRM recommender", latency, _common.compile_report(session, compiled), BATCH)
    finally:
        _common.clean_up(compiled, args.keep)


if __name__ == "__main__":
    main()
