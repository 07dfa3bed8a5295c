"""Per-replica inference statistics, in neuron-monitor's terms (docs/neuron-tools.md).

Each replica process is one emulated Neuron runtime; neuron-monitor reports, per runtime and period,
an ``inference_summary`` (completed, completed_with_err, completed_with_num_err, timed_out,
incorrect_input, failed_to_queue), an ``error_summary`` and ``latency_stats`` percentiles of the
runtime-measured ``total_latency`` and the on-device ``device_latency``. Here ``total_latency`` is
the router's round trip to the replica and ``device_latency`` the compile report's projected device
time the replica reports per execution (absent for models not compiled for Inferentia).

Each period becomes one ``ReplicaInferenceStats`` datapoint per replica: ``sum`` = completed,
``sample_count`` = requests, the extremes of the total latency in µs, and the rest in ``buckets``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neurondock_platform.dataplane.quantiles import percentile

METRIC = "ReplicaInferenceStats"
PERCENTILES = {"p0": 0.0, "p1": 0.01, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p99": 0.99, "p100": 1.0}
RESERVOIR = 512


def _percentiles(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return {name: percentile(ordered, q) for name, q in PERCENTILES.items()}


@dataclass
class ReplicaPeriod:
    """One replica's outcomes since the last flush."""

    completed: int = 0
    completed_with_err: int = 0
    completed_with_num_err: int = 0
    timed_out: int = 0
    incorrect_input: int = 0
    failed_to_queue: int = 0
    model_errors: int = 0
    runtime_errors: int = 0
    total_us: list[float] = field(default_factory=list)
    device_us: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.completed + self.completed_with_err + self.timed_out + self.incorrect_input + self.failed_to_queue

    def answer(self, status: int, meta: Mapping[str, Any], rtt_us: float | None) -> None:
        """Count one answer the replica gave (``status`` as the replica sent it)."""
        if status == 200:
            self.completed += 1
            if meta.get("numerical_error"):
                self.completed_with_num_err += 1
        elif status == 429:
            self.failed_to_queue += 1
        elif 400 <= status < 500 and meta.get("incorrect_input"):
            self.incorrect_input += 1
        else:
            self.completed_with_err += 1
            if 400 <= status < 500 or status == 424:
                self.model_errors += 1
            else:
                self.runtime_errors += 1
        if rtt_us is not None and status != 429 and len(self.total_us) < RESERVOIR:
            self.total_us.append(float(rtt_us))
        device = meta.get("device_us")
        if isinstance(device, int | float) and status != 429 and len(self.device_us) < RESERVOIR:
            self.device_us.append(float(device))

    def timeout(self) -> None:
        """Count a request the replica did not answer in time."""
        self.timed_out += 1

    def row_values(self) -> dict[str, Any] | None:
        """Return the metric point's values, or None when nothing happened."""
        if not self.requests:
            return None
        total = _percentiles(self.total_us)
        return {
            "sum": float(self.completed),
            "sample_count": self.requests,
            "minimum": total["p0"] if total else None,
            "maximum": total["p100"] if total else None,
            "buckets": {
                "completed": self.completed,
                "completed_with_err": self.completed_with_err,
                "completed_with_num_err": self.completed_with_num_err,
                "timed_out": self.timed_out,
                "incorrect_input": self.incorrect_input,
                "failed_to_queue": self.failed_to_queue,
                "errors": {
                    "generic": 0,
                    "numerical": self.completed_with_num_err,
                    "transient": self.timed_out,
                    "model": self.model_errors,
                    "runtime": self.runtime_errors,
                    "hardware": 0,
                },
                "total_latency": total,
                "device_latency": _percentiles(self.device_us),
                "device_latency_label": "projected" if self.device_us else None,
            },
        }
