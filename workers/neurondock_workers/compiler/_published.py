"""What AWS has published about Inf1 performance: the figures the projection is calibrated on.

The rows and their sources are listed in ``docs/inferentia.md`` ("Published performance"); the
hardware itself comes from ``neurondock_platform.catalog``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedBenchmark:
    """One row of AWS's Inf1 performance tables (Neuron 2.20, torch 1.13.1)."""

    key: str
    model: str
    instance: str
    mode: str  # "real-time": one request in flight; "batch": every core busy; "pipeline": one model on N cores
    batch: int
    throughput: float
    p50_ms: float
    cores_used: int


PUBLISHED_BENCHMARKS = (
    PublishedBenchmark("bert-base-cased-b1", "bert-base", "ml.inf1.xlarge", "real-time", 1, 125.7, 7.9, 1),
    PublishedBenchmark("bert-base-uncased-b3", "bert-base", "ml.inf1.xlarge", "real-time", 3, 284.7, 10.5, 1),
    PublishedBenchmark("bert-base-uncased-b6", "bert-base", "ml.inf1.xlarge", "batch", 6, 1180.7, 40.6, 4),
    PublishedBenchmark("bert-base-cased-b8", "bert-base", "ml.inf1.xlarge", "batch", 8, 1095.4, 58.3, 4),
    PublishedBenchmark("bert-base-mrpc-b4", "bert-base", "ml.inf1.xlarge", "batch", 4, 1056.0, 20.0, 4),
    PublishedBenchmark("distilbert-base-b8", "distilbert-base", "ml.inf1.xlarge", "batch", 8, 1876.7, 33.7, 4),
    PublishedBenchmark("distilroberta-base-b6", "distilroberta-base", "ml.inf1.xlarge", "batch", 6, 1512.9, 15.0, 4),
    PublishedBenchmark("resnet50-fp32-b5", "resnet-50", "ml.inf1.xlarge", "batch", 5, 921.5, 21.6, 4),
    PublishedBenchmark("bert-base-pipeline16-b1", "bert-base", "ml.inf1.6xlarge", "pipeline", 1, 2009.1, 5.9, 16),
)

# The g4dn anchor: "1 million BERT-base (seq 128) requests for $0.20 on g4dn.xlarge" (AWS ML Blog).
G4DN_BERT_ANCHOR_USD_PER_MILLION = 0.20
