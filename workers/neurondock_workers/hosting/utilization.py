"""Instance metrics, as SageMaker's instances publish them: ``/aws/sagemaker/Endpoints`` CPUUtilization
and MemoryUtilization per {EndpointName, VariantName} (docs/cloudwatch.md, "What the platform
publishes").

Every flush interval, on the wall-clock boundary, the host agent reads ``/proc`` for each replica
process it runs and everything below it, those alone (a sandboxed replica is a tree under bubblewrap): CPU time
since the last look and resident memory. An instance's figure sums its replicas: CPU in percent of
one core, so an instance of N vCPUs reads 0–N × 100 % as on SageMaker; memory in percent of the
instance type's memory. Each variant gets one datapoint per flush with one sample per instance.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import catalog
from neurondock_platform import sagemaker_metrics as sm
from neurondock_platform.dataplane.metrics import aligned_interval
from neurondock_platform.db import session_scope
from neurondock_platform.models import Endpoint, EndpointVariant, Replica
from neurondock_platform.services import metrics
from neurondock_platform.sketch import Sketch

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcessUse:
    ppid: int
    cpu_ticks: int
    rss_bytes: int


def _use(entry: Path) -> ProcessUse | None:
    try:
        fields = (entry / "stat").read_text().rpartition(")")[2].split()
        return ProcessUse(int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21]) * _PAGE)
    except (OSError, ValueError, IndexError):
        return None


def read_processes(proc: Path = Path("/proc")) -> dict[int, ProcessUse]:
    """Every process's parent, CPU ticks (user + system) and resident memory, from ``/proc/<pid>/stat``."""
    out: dict[int, ProcessUse] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (use := _use(entry)) is not None:
            out[int(entry.name)] = use
    return out


def read_trees(roots: list[int], proc: Path = Path("/proc")) -> dict[int, ProcessUse]:
    """``read_processes`` for ``roots`` and their descendants only, found through ``task/*/children``.

    A host runs far more processes than replicas; a kernel without those files gets the full scan.
    """
    out: dict[int, ProcessUse] = {}
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in out or (use := _use(proc / str(pid))) is None:
            continue
        out[pid] = use
        try:
            tasks = list((proc / str(pid) / "task").iterdir())
            listed = [(task / "children").read_text() for task in tasks]
        except FileNotFoundError:
            if not (proc / str(pid)).exists():
                continue  # it exited between the two reads
            return read_processes(proc)
        except OSError:
            continue
        todo.extend(int(child) for text in listed for child in text.split())
    return out


def tree_use(root: int, table: Mapping[int, ProcessUse]) -> tuple[int, int]:
    """CPU ticks and resident bytes of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, entry in table.items():
        children.setdefault(entry.ppid, []).append(pid)
    ticks = rss = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        found = table.get(pid)
        if found is not None:
            ticks, rss = ticks + found.cpu_ticks, rss + found.rss_bytes
        todo.extend(children.get(pid, ()))
    return ticks, rss


class InstanceUsage:
    """Samples this host's replicas and writes the instance metrics to the store."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        host_id: str,
        pids: Callable[[], dict[int, int | None]],
        interval: float,
        *,
        read: Callable[[list[int]], dict[int, ProcessUse]] = read_trees,
    ) -> None:
        self.factory, self.host_id, self.pids, self.read = factory, host_id, pids, read
        self.interval = aligned_interval(interval)
        self._last: dict[int, tuple[float, int]] = {}  # replica id → (when, cpu ticks)
        self._streams: dict[Any, int] = {}
        # Replica id → (extra, variant, instance type, endpoint, account), read once per replica.
        self._placed: dict[int, tuple[Any, ...]] = {}

    def rows(self, now: float) -> list[dict[str, Any]]:
        """One datapoint per variant for the period ending ``now`` (an aligned boundary)."""
        pids = {rid: pid for rid, pid in self.pids().items() if pid}
        if not pids:
            self._last.clear()
            return []
        table = self.read(list(pids.values()))
        self._place([rid for rid in pids if rid not in self._placed])
        self._placed = {rid: v for rid, v in self._placed.items() if rid in pids}
        cpu: dict[tuple[str, str, str, int], float] = {}
        memory: dict[tuple[str, str, str, int], float] = {}
        types: dict[tuple[str, str, str], str] = {}
        for rid, (extra, variant, instance_type, endpoint, account) in self._placed.items():
            ticks, rss = tree_use(pids[rid], table)
            before = self._last.get(rid)
            self._last[rid] = (now, ticks)
            key = (account, endpoint, variant, int((extra or {}).get("instance", rid)))
            types[key[:3]] = instance_type
            memory[key] = memory.get(key, 0.0) + rss
            if before is not None and now > before[0] and ticks >= before[1]:
                cpu[key] = cpu.get(key, 0.0) + 100.0 * (ticks - before[1]) / _TICK / (now - before[0])
        self._last = {rid: v for rid, v in self._last.items() if rid in pids}
        start = dt.datetime.fromtimestamp(now - self.interval, dt.UTC)
        out = []
        for metric, values in (("CPUUtilization", cpu), ("MemoryUtilization", memory)):
            per_variant: dict[tuple[str, str, str], list[float]] = {}
            for key, value in values.items():
                if metric == "MemoryUtilization":
                    entry = catalog.get(types[key[:3]])
                    if entry is None or not entry.memory_gib:
                        continue
                    value = 100.0 * value / (entry.memory_gib * 1024**3)
                per_variant.setdefault(key[:3], []).append(round(value, 3))
            for (account, endpoint, variant), samples in per_variant.items():
                out.append(
                    {
                        "account_id": account,
                        "namespace": sm.namespace(metric),
                        "metric_name": metric,
                        "dimensions": sm.variant_dimensions(endpoint, variant),
                        "period_start": start,
                        "period_seconds": self.interval,
                        "sample_count": len(samples),
                        "sum": sum(samples),
                        "minimum": min(samples),
                        "maximum": max(samples),
                        "unit": sm.unit(metric),
                        "sketch": Sketch.of((v, 1) for v in samples).to_json(),
                        "source": f"agent:{self.host_id}"[:64],
                    }
                )
        return out

    def _place(self, replica_ids: list[int]) -> None:
        """Learn where replicas first seen belong: a replica never moves to another variant or instance."""
        if not replica_ids:
            return
        with self.factory() as session:
            placed = session.execute(
                select(
                    Replica.id,
                    Replica.extra,
                    EndpointVariant.name,
                    EndpointVariant.instance_type,
                    Endpoint.name,
                    Endpoint.account_id,
                )
                .join(EndpointVariant, Replica.variant_id == EndpointVariant.id)
                .join(Endpoint, Replica.endpoint_id == Endpoint.id)
                .where(Replica.id.in_(replica_ids))
            ).all()
        for rid, *where in placed:
            self._placed[rid] = tuple(where)

    def run(self, stop: threading.Event) -> None:
        """Sample on every flush boundary until ``stop`` is set."""
        while True:
            now = time.time()
            boundary = now - now % self.interval + self.interval
            if stop.wait(boundary - now):
                return
            try:
                rows = self.rows(boundary)
                if rows:
                    with session_scope(self.factory) as session:
                        metrics.write_points(session, rows, self._streams)
            except Exception:
                # Instance metrics must never take the agent down; the next period tries again.
                log.exception("could not record instance utilization")
                self._streams.clear()
