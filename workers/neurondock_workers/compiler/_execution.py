"""Pick, by measurement, the fastest CPU execution that reproduces the emulated device numerics."""

from __future__ import annotations

import io
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import _numerics

UNCOMPILED = "uncompiled"
FROZEN = "frozen"
OPTIMIZED = "frozen+optimize_for_inference"
FROZEN_FP32 = "frozen-fp32"
OPTIMIZED_FP32 = "frozen-fp32+optimize_for_inference"
# Within this band two medians are the same speed on a shared 2-core host.
NOISE_BAND = 0.03


@dataclass
class Candidate:
    """One way to run the compiled model on the CPU."""

    name: str
    module: Callable[..., Any]
    description: str
    times: list[float] = field(default_factory=list)
    deviation: dict[str, Any] = field(default_factory=dict)
    matches: bool = False  # reproduces the device numerics (casts in the graph, deviation is FP32 noise)
    in_envelope: bool = False  # no farther from the emulation than FP32 is

    @property
    def p50(self) -> float:
        """Return the median latency in seconds."""
        return statistics.median(self.times) if self.times else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """Return the report entry."""
        ordered = sorted(self.times)
        return {
            "name": self.name,
            "description": self.description,
            "p50_ms": round(self.p50 * 1e3, 4) if self.times else None,
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 4) if ordered else None,
            "runs": len(self.times),
            "matches_emulated_numerics": self.matches,
            "within_drift_envelope": self.in_envelope,
            "max_abs_deviation": self.deviation.get("max_abs_error"),
        }


def copy_module(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Return an independent copy of a ScriptModule."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer, map_location="cpu")


def _optimized(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.optimize_for_inference(copy_module(module))


def build_candidates(
    reference: torch.jit.ScriptModule,
    uncompiled: torch.jit.ScriptModule,
    optimization_level: int,
    fp32: torch.jit.ScriptModule | None = None,
) -> tuple[list[Candidate], list[str]]:
    """Return the executions to try (FP32 forms only when `fp32` is given) and notes on failures."""
    notes: list[str] = []
    candidates = [
        Candidate(UNCOMPILED, uncompiled, "the input TorchScript as loaded (FP32; the speed baseline)"),
        Candidate(FROZEN, reference, "frozen graph, BatchNorm folded, device casts inserted (the emulation itself)"),
    ]
    if fp32 is not None:
        candidates.append(Candidate(FROZEN_FP32, fp32, "frozen graph, BatchNorm folded, FP32 (no device casts)"))
    if optimization_level >= 2:
        for name, base, what in ((OPTIMIZED, reference, "with device casts"), (OPTIMIZED_FP32, fp32, "FP32")):
            if base is None:
                continue
            try:
                candidates.append(
                    Candidate(
                        name,
                        _optimized(base),
                        f"torch.jit.optimize_for_inference on the frozen graph, {what} (oneDNN layouts and fusions)",
                    )
                )
            except Exception as exc:  # optimize_for_inference rejects some graphs; the others still compete
                notes.append(f"{name} not applicable: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    return candidates, notes


def measure(
    candidates: Sequence[Candidate],
    inputs: Sequence[torch.Tensor],
    *,
    budget_s: float = 1.5,
    min_rounds: int = 7,
    max_rounds: int = 200,
) -> None:
    """Time every candidate round-robin, so background load hits all of them alike."""
    with torch.no_grad():
        for cand in candidates:
            for _ in range(2):
                cand.module(*inputs)
        started = time.perf_counter()
        rounds = 0
        while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - started < budget_s):
            for cand in candidates:
                t0 = time.perf_counter()
                cand.module(*inputs)
                cand.times.append(time.perf_counter() - t0)
            rounds += 1


TIGHT = "max |candidate - emulated| <= 1e-4 * max|FP32 output| + 5% of the emulated drift, casts in the graph"
ENVELOPE = "max |candidate - emulated| <= 1e-4 * max|FP32 output| + 105% of the emulated drift (FP32 qualifies)"


def select(
    candidates: Sequence[Candidate],
    reference_outs: Sequence[Any],
    drift: dict[str, Any],
    input_sets: Sequence[Sequence[torch.Tensor]],
    target: str,
    policy: str = "auto",
) -> dict[str, Any]:
    """Check candidates against the emulated numerics on every input set and pick one by `policy`.

    "device-numerics": the fastest execution that reproduces the device casts. "fastest": the fastest
    within the drift envelope. "auto": device numerics unless that is slower than the uncompiled
    model, then the fastest within the envelope, so the artifact is never slower than its input.
    """
    # Serving device numerics means the casts must be in the graph, not merely invisible on the examples.
    structural = target == "ml_inf1"
    with torch.no_grad():
        for cand in candidates:
            outs = [cand.module(*inputs) for inputs in input_sets]
            cand.deviation = _numerics.compare_outputs(outs, list(reference_outs))
            cand.matches = _numerics.within_tolerance(cand.deviation, drift) and (
                not structural or cand.name in (FROZEN, OPTIMIZED)
            )
            cand.in_envelope = cand.matches or _numerics.within_tolerance(cand.deviation, drift, envelope=True)
    baseline = next(c for c in candidates if c.name == UNCOMPILED)

    def fastest(pool: list[Candidate]) -> Candidate:
        # On ties prefer compiled forms: they carry the device numerics and the folded graph.
        return min(pool, key=lambda c: (c.p50 * (1.0 + (NOISE_BAND if c.name == UNCOMPILED else 0.0)), c.name))

    device = fastest([c for c in candidates if c.matches])
    envelope = fastest([c for c in candidates if c.in_envelope])
    device_slower = device.p50 > baseline.p50 * (1.0 + NOISE_BAND)
    chosen = envelope if policy == "fastest" or (policy == "auto" and device_slower) else device
    speedup = baseline.p50 / chosen.p50 if chosen.p50 > 0 else 1.0
    result: dict[str, Any] = {
        "selected": chosen.name,
        "selected_p50_ms": round(chosen.p50 * 1e3, 4),
        "uncompiled_p50_ms": round(baseline.p50 * 1e3, 4),
        "speedup_vs_uncompiled": round(speedup, 3),
        "slower_than_uncompiled": speedup < 1.0 - NOISE_BAND,
        "policy": policy,
        "tolerance": {"device_numerics": TIGHT, "drift_envelope": ENVELOPE},
        "serves_device_numerics": chosen.matches,
        "device_numerics_p50_ms": round(device.p50 * 1e3, 4),
        "candidates": [c.to_dict() for c in candidates],
        "threads": torch.get_num_threads(),
        "label": "measured on this host (CPU)",
    }
    if structural and device_slower:
        result["note"] = (
            f"reproducing the device casts costs {device.p50 / baseline.p50 - 1:.0%} over the uncompiled "
            "FP32 model on this host; "
            + (
                f"the artifact serves FP32 within the drift envelope instead (policy {policy}); compile "
                "with --execution-policy device-numerics to serve the casts anyway"
                if chosen is envelope
                else "served anyway (policy device-numerics)"
            )
        )
    return result


def time_function(fn: Callable[..., Any], args: Sequence[Any], *, budget_s: float = 0.3, max_runs: int = 100) -> float:
    """Return the median seconds of calling `fn(*args)`."""
    with torch.no_grad():
        fn(*args)
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < max_runs and (len(times) < 5 or time.perf_counter() - started < budget_s):
            t0 = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
