"""neuron-monitor's JSON report for one emulated host (docs/neuron-tools.md), marked emulated.

One document per call, shaped like the Neuron SDK 1.16 report: ``neuron_runtime_data`` (one entry
per replica process, which is one Neuron runtime owning its NeuronCores), ``system_data``,
``instance_data`` (with ``"emulated": true`` added) and ``neuron_hardware_info``. Latencies are in
seconds, as the real tool reports them.

Where the figures come from, so nobody mistakes them for hardware counters:
- ``neuroncore_counters``: the replica's NeuronCoreUtilization over the period — projected device
  busy time over wall time for a compiled Inferentia artifact, measured execution time otherwise
  (``utilization_source`` says which);
- ``inference_stats``: what the data plane recorded for the replica (``ReplicaInferenceStats``
  metric points) in the period; ``device_latency`` is the compile report's projection, ``null`` when
  the model was not compiled for Inferentia;
- ``memory_used``: host memory from ``/proc`` (processes on the host this API process runs on),
  device memory as the runtime reported it or the compile report's estimate;
- ``vcpu_usage``/``memory_info``: ``/proc`` of this machine, only for the local host; other hosts
  carry an ``error`` rather than guessed numbers. ECC counters are always zero: there is no device.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from neurondock_platform.models import MetricDatapoint
from neurondock_platform.services import metrics
from neurondock_platform.services.fleet import CORES_PER_CHIP, HostView, ReplicaView, iso

INFERENCE_STATS_METRIC = "ReplicaInferenceStats"
UTILIZATION_METRIC = "NeuronCoreUtilization"
DEFAULT_PERIOD_SECONDS = 60.0
NOT_LOCAL = "not available: this host's /proc is not visible from the API process that answered"
_PERCENTILES = ("p0", "p1", "p25", "p50", "p75", "p99", "p100")
_SUMMARY_KEYS = (
    "completed",
    "completed_with_err",
    "completed_with_num_err",
    "timed_out",
    "incorrect_input",
    "failed_to_queue",
)
_ERROR_KEYS = ("generic", "numerical", "transient", "model", "runtime", "hardware")


class _CpuSampler:
    """Turns cumulative /proc CPU counters into usage over the time since the previous sample."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: dict[int, tuple[float, int, int]] = {}
        self._system: tuple[float, list[list[int]]] | None = None

    def process(self, pid: int | None) -> tuple[float, dict[str, float]] | None:
        """Return (period, {user, system} percent of one vCPU) for a local process, or None."""
        if not pid:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            user, system = int(fields[11]), int(fields[12])
            start_ticks = int(fields[19])
        except (OSError, ValueError, IndexError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        now = time.monotonic()
        with self._lock:
            previous = self._process.get(pid)
            self._process[pid] = (now, user, system)
        if previous is None:
            # First look at this process: its average since it started.
            period = max(0.001, _uptime() - start_ticks / ticks)
            d_user, d_system = user, system
        else:
            period = max(0.001, now - previous[0])
            d_user, d_system = user - previous[1], system - previous[2]
        scale = 100.0 / (ticks * period)
        return period, {"user": round(d_user * scale, 2), "system": round(d_system * scale, 2)}

    def system(self) -> tuple[float, dict[str, Any]] | None:
        """Return (period, vcpu_usage body) for this machine from /proc/stat, or None."""
        try:
            lines = [line.split() for line in Path("/proc/stat").read_text().splitlines()]
        except OSError:
            return None
        cpus = [[int(v) for v in line[1:9]] for line in lines if line and line[0].startswith("cpu")]
        switches = next((int(line[1]) for line in lines if line and line[0] == "ctxt"), 0)
        now = time.monotonic()
        with self._lock:
            previous = self._system
            self._system = (now, cpus)
        if previous is None or len(previous[1]) != len(cpus):
            period, deltas = max(0.001, _uptime()), cpus
        else:
            period = max(0.001, now - previous[0])
            pairs = zip(cpus, previous[1], strict=True)
            deltas = [[a - b for a, b in zip(cur, old, strict=True)] for cur, old in pairs]
        usage = [_cpu_percent(d) for d in deltas]
        return period, {
            "period": round(period, 6),
            "average_usage": usage[0],
            "usage_data": {str(i): u for i, u in enumerate(usage[1:])},
            "context_switch_count": switches,
            "error": "",
        }


def _cpu_percent(ticks: Sequence[int]) -> dict[str, float]:
    # /proc/stat's first seven columns, in neuron-monitor's names; steal counts toward the total only.
    names = ("user", "nice", "system", "idle", "io_wait", "irq", "soft_irq")
    total = max(1, sum(ticks))
    return {n: round(100.0 * v / total, 2) for n, v in zip(names, ticks[:7], strict=True)}


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 1.0


def _memory_info() -> dict[str, Any]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {"error": "could not read /proc/meminfo"}
    total, available = values.get("MemTotal", 0), values.get("MemAvailable", 0)
    swap_total, swap_free = values.get("SwapTotal", 0), values.get("SwapFree", 0)
    return {
        "memory_total_bytes": total,
        "memory_used_bytes": total - available,
        "swap_total_bytes": swap_total,
        "swap_used_bytes": swap_total - swap_free,
        "error": "",
    }


SAMPLER = _CpuSampler()


def _points(
    session: Session, replica_ids: Sequence[int], metric: str, since: dt.datetime
) -> dict[int, list[MetricDatapoint]]:
    return metrics.replica_points(session, metric, replica_ids, since)


def _latency(points: list[MetricDatapoint], key: str) -> dict[str, float | None] | None:
    """Combine per-period percentiles (µs) into the tool's seconds; the latest period's shape wins."""
    shaped = [p for p in points if isinstance(p.buckets, dict) and isinstance(p.buckets.get(key), dict)]
    if not shaped:
        return None
    latest = shaped[-1].buckets[key]  # type: ignore[index]
    return {name: (round(latest[name] / 1e6, 9) if isinstance(latest.get(name), int | float) else None)
            for name in _PERCENTILES}  # fmt: skip


def _inference_stats(points: list[MetricDatapoint], period: float) -> dict[str, Any]:
    summary = dict.fromkeys(_SUMMARY_KEYS, 0)
    errors = dict.fromkeys(_ERROR_KEYS, 0)
    for point in points:
        data = point.buckets if isinstance(point.buckets, dict) else {}
        for key in _SUMMARY_KEYS:
            summary[key] += int(data.get(key) or 0)
        for key in _ERROR_KEYS:
            errors[key] += int((data.get("errors") or {}).get(key) or 0)
    return {
        "period": round(period, 6),
        "error_summary": errors,
        "inference_summary": summary,
        "latency_stats": {
            "total_latency": _latency(points, "total_latency"),
            "device_latency": _latency(points, "device_latency"),
        },
        "error": "",
    }


def _runtime_entry(
    replica: ReplicaView,
    view: HostView,
    stats: list[MetricDatapoint],
    utilization: list[MetricDatapoint],
    period: float,
) -> dict[str, Any]:
    # Over the report's period (the host view's own figure is a fixed one-minute average).
    count = sum(p.sample_count for p in utilization)
    busy = round(sum(p.sum for p in utilization) / count, 2) if count else 0.0
    cores = {str(index): {"neuroncore_utilization": busy} for index in replica.cores}
    source = next((p.buckets.get("source") for p in reversed(utilization) if isinstance(p.buckets, dict)), None)
    vcpu = SAMPLER.process(replica.pid) if view.local else None
    device = replica.device_memory_bytes
    memory = {"host": replica.rss_bytes, "neuron_device": device}
    model_name = replica.model_name or ""
    return {
        "pid": replica.pid or 0,
        "address": replica.address or "",
        "neuron_runtime_tag": f"{replica.endpoint_name}/{replica.variant_name}/replica-{replica.id}",
        "error": "" if replica.state == "Ready" else f"replica state {replica.state}",
        "report": {
            "neuroncore_counters": {
                "period": round(period, 6),
                "neuroncores_in_use": cores,
                "utilization_source": source or ("none recorded" if not utilization else "measured execution time"),
                "error": "",
            },
            "inference_stats": _inference_stats(stats, period),
            "memory_used": {
                "period": round(period, 6),
                "neuron_runtime_used_bytes": memory,
                "loaded_models": [
                    {
                        "name": model_name,
                        "uuid": f"{replica.endpoint_id:016x}{replica.id:016x}",
                        "model_id": replica.id,
                        "is_running": replica.state == "Ready",
                        "memory_used_bytes": memory,
                        "device_memory_source": replica.device_memory_source,
                        "subgraphs": {
                            "sg00": {
                                "memory_used_bytes": memory,
                                "neuroncore_index": replica.cores[0] if replica.cores else None,
                                "neuron_device_index": replica.chips[0] if replica.chips else None,
                            }
                        },
                    }
                ],
                "error": "" if view.local else NOT_LOCAL,
            },
            "neuron_runtime_vcpu_usage": {
                "period": round(vcpu[0], 6) if vcpu else round(period, 6),
                "vcpu_usage": vcpu[1] if vcpu else None,
                "error": "" if vcpu else (NOT_LOCAL if not view.local else "process not running"),
            },
        },
    }


def report(
    session: Session,
    view: HostView,
    *,
    region: str,
    period_seconds: float = DEFAULT_PERIOD_SECONDS,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Return one neuron-monitor document for ``view``'s host over the last ``period_seconds``."""
    current = now or dt.datetime.now(dt.UTC)
    since = current - dt.timedelta(seconds=period_seconds)
    runtimes = [r for r in view.replicas if r.visible and r.state not in ("Stopped", "Failed") and r.cores]
    ids = [r.id for r in runtimes]
    stats = _points(session, ids, INFERENCE_STATS_METRIC, since)
    utilization = _points(session, ids, UTILIZATION_METRIC, since)
    system: dict[str, Any]
    if view.local:
        sampled = SAMPLER.system()
        vcpu = sampled[1] if sampled else {"error": "could not read /proc/stat"}
        memory = {"period": round(period_seconds, 6), **_memory_info()}
    else:
        vcpu = {"error": NOT_LOCAL}
        memory = {"error": NOT_LOCAL}
    system = {
        "neuron_hw_counters": {
            "period": round(period_seconds, 6),
            "neuron_devices": [
                {
                    "neuron_device_index": chip.index,
                    "mem_ecc_corrected": 0,
                    "mem_ecc_uncorrected": 0,
                    "sram_ecc_uncorrected": 0,
                }
                for chip in view.chips
            ],
            "error": "",
        },
        "vcpu_usage": vcpu,
        "memory_info": memory,
    }
    return {
        "neuron_runtime_data": [
            _runtime_entry(r, view, stats.get(r.id, []), utilization.get(r.id, []), period_seconds) for r in runtimes
        ],
        "system_data": system,
        "instance_data": {
            "instance_name": view.host.id,
            "instance_id": view.host.id,
            "instance_type": f"emulated host ({len(view.chips)} Inferentia chips)",
            "instance_availability_zone": f"{region}a",
            "instance_availability_zone_id": "",
            "instance_region": region,
            "ami_id": "",
            "subnet_id": "",
            "emulated": True,
            "report_time": iso(current),
            "error": "",
        },
        "neuron_hardware_info": {
            "neuron_device_count": len(view.chips),
            "neuroncore_per_device_count": CORES_PER_CHIP,
            "error": "",
        },
    }
