"""Read-only views of the fleet: hosts, their emulated Inferentia chips and NeuronCores, and replicas.

The host agent reports what runs (``Replica.state``, ``pid``, ``address``); which chips and cores a
replica holds is what the reconciler recorded on the row (``extra["cores"]``, global core indices on
the host; one replica per NeuronCore group of an instance) and otherwise *derived* here the way
placement counts them: every instance of an ``ml.inf1.*`` type holds all of its chips, contiguously,
on one host, and its replicas split the cores. Each core view says which of the two it is (``source``).

Device memory per replica is what the runtime reports, else the compile report's estimate when the
replica serves a compilation job's artifact (labelled so), else None.
Process figures (resident memory, CPU time) are read from ``/proc`` only for replicas on the host
this process runs on; for other hosts they are None rather than guessed. NeuronCore utilization is
the data plane's ``NeuronCoreUtilization`` metric (busy time over wall time) averaged over the last
minute; None when nothing was recorded.

An account sees every host's capacity but only its own replicas; other accounts' replicas show as
occupied capacity without names. Admins see everything.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform import catalog
from neurondock_platform.config import Settings
from neurondock_platform.db import utcnow
from neurondock_platform.errors import NotFoundError
from neurondock_platform.models import (
    CompilationJob,
    CompilationJobStatus,
    Endpoint,
    EndpointVariant,
    Host,
    Replica,
    ReplicaState,
)
from neurondock_platform.services import metrics

CORES_PER_CHIP = catalog.NEURON_CORES_PER_CHIP
DEVICE_MEMORY_BYTES_PER_CHIP = catalog.DEVICE_MEMORY_GIB_PER_CHIP * 1024**3
RUNTIME_VERSION = "emulated"
HIDDEN_OWNER = "another account"
# Where the runtime may report a replica's cores and device memory (``Replica.extra`` keys).
REPORTED_CORES_KEYS = ("cores", "neuron_cores")
REPORTED_DEVICE_MEMORY_KEY = "device_memory_bytes"
UTILIZATION_METRIC = "NeuronCoreUtilization"


class HostNotFound(NotFoundError):
    fmt = "Could not find host {host_id!r}."


@dataclass
class ReplicaView:
    """One replica process as an operator sees it."""

    id: int
    host_id: str
    endpoint_id: int
    variant_id: int
    instance: int
    endpoint_name: str | None
    variant_name: str | None
    model_name: str | None
    instance_type: str | None
    account_id: str | None
    visible: bool
    state: str
    desired_state: str
    pid: int | None
    address: str | None
    restarts: int
    setup_seconds: float | None
    failure_reason: str | None
    standby: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    chips: list[int] = field(default_factory=list)
    cores: list[int] = field(default_factory=list)
    cores_source: str | None = None
    rss_bytes: int | None = None
    cpu_seconds: float | None = None
    device_memory_bytes: int | None = None
    utilization_percent: float | None = None
    device_memory_source: str | None = None

    @property
    def holds_hardware(self) -> bool:
        return self.desired_state == "running" or self.state not in (ReplicaState.STOPPED, ReplicaState.FAILED)

    def to_json(self) -> dict[str, Any]:
        if not self.visible:
            return {
                "id": self.id,
                "host_id": self.host_id,
                "owner": HIDDEN_OWNER,
                "state": self.state,
                "chips": self.chips,
                "neuron_cores": self.cores,
            }
        return {
            "id": self.id,
            "host_id": self.host_id,
            "endpoint_name": self.endpoint_name,
            "variant_name": self.variant_name,
            "model_name": self.model_name,
            "instance_type": self.instance_type,
            "state": self.state,
            "desired_state": self.desired_state,
            "standby": self.standby,
            "pid": self.pid,
            "address": self.address,
            "restarts": self.restarts,
            "setup_seconds": self.setup_seconds,
            "failure_reason": self.failure_reason,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "chips": self.chips,
            "neuron_cores": self.cores,
            "neuron_cores_source": self.cores_source,
            "host_memory_bytes": self.rss_bytes,
            "cpu_seconds": self.cpu_seconds,
            "device_memory_bytes": self.device_memory_bytes,
            "device_memory_source": self.device_memory_source,
            "utilization_percent": self.utilization_percent,
        }


@dataclass
class CoreView:
    index: int
    chip: int
    replica_id: int | None = None

    def to_json(self, replicas: dict[int, ReplicaView]) -> dict[str, Any]:
        replica = replicas.get(self.replica_id) if self.replica_id is not None else None
        out: dict[str, Any] = {"index": self.index, "chip": self.chip, "replica_id": self.replica_id}
        if replica is None:
            out.update(in_use=False, owner=None, source=None)
        elif replica.visible:
            out.update(
                in_use=True,
                owner=f"{replica.endpoint_name}/{replica.variant_name}",
                source=replica.cores_source,
            )
        else:
            out.update(in_use=True, owner=HIDDEN_OWNER, source=replica.cores_source)
        # The replica's NeuronCoreUtilization (its cores execute together); None when not recorded.
        out["utilization_percent"] = replica.utilization_percent if replica is not None else None
        return out


@dataclass
class ChipView:
    index: int
    cores: list[CoreView]

    @property
    def pci_bdf(self) -> str:
        # Emulated: the real inf1.6xlarge shows 0000:00:1c.0 … 0000:00:1f.0 for its four chips.
        slot = 0x1C + self.index
        return f"0000:{slot // 0x20:02x}:{slot % 0x20:02x}.0"

    def connected(self, total: int) -> list[int]:
        # Inf1 chips form a chain: 0↔1↔2↔3 … (docs/neuron-tools.md, "neuron-ls").
        return [i for i in (self.index + 1, self.index - 1) if 0 <= i < total]


@dataclass
class HostView:
    """A host, its chips and cores, and the replicas it runs."""

    host: Host
    live: bool
    heartbeat_age_seconds: float
    local: bool
    chips: list[ChipView]
    replicas: list[ReplicaView]

    @property
    def used_chips(self) -> int:
        return sum(1 for chip in self.chips if any(c.replica_id is not None for c in chip.cores))

    def replica_map(self) -> dict[int, ReplicaView]:
        return {r.id: r for r in self.replicas}

    def to_json(self, *, detail: bool = True) -> dict[str, Any]:
        replicas = self.replica_map()
        cores_in_use = sum(1 for chip in self.chips for core in chip.cores if core.replica_id is not None)
        out: dict[str, Any] = {
            "id": self.host.id,
            "address": self.host.address,
            "emulated": True,
            "live": self.live,
            "heartbeat_age_seconds": round(self.heartbeat_age_seconds, 3),
            "last_heartbeat": iso(self.host.last_heartbeat),
            "started_at": iso(self.host.started_at),
            "agent_pid": self.host.agent_pid,
            "vcpus": self.host.vcpus,
            "memory_mb": self.host.memory_mb,
            "chip_count": len(self.chips),
            "neuron_core_count": len(self.chips) * CORES_PER_CHIP,
            "chips_in_use": self.used_chips,
            "neuron_cores_in_use": cores_in_use,
            "device_memory_bytes": len(self.chips) * DEVICE_MEMORY_BYTES_PER_CHIP,
            "replica_count": len(self.replicas),
        }
        if detail:
            out["chips"] = [
                {
                    "index": chip.index,
                    "pci_bdf": chip.pci_bdf,
                    "connected_to": chip.connected(len(self.chips)),
                    "memory_bytes": DEVICE_MEMORY_BYTES_PER_CHIP,
                    "memory_used_bytes": _chip_memory(chip, replicas),
                    "neuron_cores": [core.to_json(replicas) for core in chip.cores],
                }
                for chip in self.chips
            ]
            out["replicas"] = [r.to_json() for r in self.replicas]
        return out


def iso(value: dt.datetime | None) -> str | None:
    """Return an aware timestamp as ISO 8601 (UTC, ``Z``)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _chip_memory(chip: ChipView, replicas: dict[int, ReplicaView]) -> int | None:
    holders = {c.replica_id for c in chip.cores if c.replica_id is not None}
    if not holders:
        return 0
    total = 0
    for rid in holders:
        replica = replicas.get(rid)
        if replica is None or replica.device_memory_bytes is None:
            return None
        chips = max(1, len(replica.chips))
        total += replica.device_memory_bytes // chips
    return total


def _proc_stats(pid: int | None) -> tuple[int | None, float | None]:
    """Return (resident bytes, CPU seconds) of a local process, or Nones when it cannot be read."""
    if not pid or pid <= 0:
        return None, None
    rss: int | None = None
    cpu: float | None = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = round((int(fields[11]) + int(fields[12])) / ticks, 2)
    except (OSError, ValueError, IndexError):
        return rss, cpu
    return rss, cpu


def _instance_chips(instance_type: str | None) -> int:
    entry = catalog.get(instance_type or "")
    return entry.chips if entry is not None else 0


def _assign_cores(chips: list[ChipView], replicas: Sequence[ReplicaView]) -> None:
    """Mark the cores each replica holds: reported ones first, then derived by first-fit placement."""
    cores = {core.index: core for chip in chips for core in chip.cores}
    holders = [r for r in replicas if r.holds_hardware]
    for replica in holders:
        if replica.cores and all(i in cores and cores[i].replica_id is None for i in replica.cores):
            for index in replica.cores:
                cores[index].replica_id = replica.id
            replica.chips = sorted({cores[i].chip for i in replica.cores})
            replica.cores_source = "reported"
        else:
            replica.cores = []
    # Replicas placed before the runtime reported cores: an instance (the replicas sharing a
    # variant and instance number) holds its chips contiguously; its replicas split the cores.
    instances: dict[tuple[int, int], list[ReplicaView]] = {}
    for replica in holders:
        if replica.cores_source != "reported" and _instance_chips(replica.instance_type) > 0:
            instances.setdefault((replica.variant_id, replica.instance), []).append(replica)
    for members in instances.values():
        need = _instance_chips(members[0].instance_type)
        free = [c.index for c in chips if all(core.replica_id is None for core in c.cores)]
        start = next((i for i in free if all((i + k) in free for k in range(need))), None)
        if start is None:
            continue  # more placed than the host has (a host restarted with fewer chips)
        held = [core for chip_index in range(start, start + need) for core in chips[chip_index].cores]
        share = max(1, len(held) // len(members))
        for position, replica in enumerate(members):
            mine = (
                held[position * share : (position + 1) * share]
                if position < len(members) - 1
                else held[position * share :]
            )
            for core in mine:
                core.replica_id = replica.id
            replica.cores = [core.index for core in mine]
            replica.chips = sorted({core.chip for core in mine})
            replica.cores_source = "derived"


def recent_utilization(
    session: Session, replica_ids: Sequence[int], now: dt.datetime, window_seconds: float = 60.0
) -> dict[int, float]:
    """Return each replica's mean NeuronCoreUtilization (percent) over the last ``window_seconds``."""
    since = now - dt.timedelta(seconds=window_seconds)
    out = {}
    for rid, points in metrics.replica_points(session, UTILIZATION_METRIC, replica_ids, since).items():
        count = sum(p.sample_count for p in points)
        if count:
            out[rid] = round(sum(p.sum for p in points) / count, 1)
    return out


def _device_memory_estimates(
    session: Session, variants: Iterable[EndpointVariant], endpoints: dict[int, Endpoint]
) -> dict[tuple[str, str | None], int]:
    """Return the compile report's device-memory estimate per (account, compiled artifact URL)."""
    urls = {v.container.get("ModelDataUrl") for v in variants if v.container.get("ModelDataUrl")}
    accounts = {e.account_id for e in endpoints.values()}
    if not urls or not accounts:
        return {}
    jobs = session.scalars(
        select(CompilationJob).where(
            CompilationJob.status == CompilationJobStatus.COMPLETED,
            CompilationJob.model_artifacts.in_(urls),
            CompilationJob.account_id.in_(accounts),
        )
    )
    out: dict[tuple[str, str | None], int] = {}
    for job in jobs:
        resources = (job.report or {}).get("resources") if isinstance(job.report, dict) else None
        value = resources.get("device_memory_per_replica_bytes") if isinstance(resources, dict) else None
        if isinstance(value, int | float):
            out[(job.account_id, job.model_artifacts)] = int(value)
    return out


def _replica_views(
    session: Session,
    replicas: Iterable[Replica],
    *,
    account_id: str | None,
    local_host_id: str | None,
) -> list[ReplicaView]:
    rows = list(replicas)
    variant_ids = {r.variant_id for r in rows}
    endpoint_ids = {r.endpoint_id for r in rows}
    variants = {v.id: v for v in session.scalars(select(EndpointVariant).where(EndpointVariant.id.in_(variant_ids)))}
    endpoints = {e.id: e for e in session.scalars(select(Endpoint).where(Endpoint.id.in_(endpoint_ids)))}
    estimates = _device_memory_estimates(session, variants.values(), endpoints)
    views = []
    for r in sorted(rows, key=lambda x: (x.created_at, x.id)):
        variant = variants.get(r.variant_id)
        endpoint = endpoints.get(r.endpoint_id)
        owner = endpoint.account_id if endpoint is not None else None
        visible = account_id is None or owner == account_id
        extra = r.extra if isinstance(r.extra, dict) else {}
        reported = next((extra[k] for k in REPORTED_CORES_KEYS if isinstance(extra.get(k), list)), None)
        rss, cpu = (None, None)
        if local_host_id is not None and r.host_id == local_host_id and r.state != ReplicaState.STOPPED:
            rss, cpu = _proc_stats(r.pid)
        memory = extra.get(REPORTED_DEVICE_MEMORY_KEY)
        memory_source = "reported" if isinstance(memory, int | float) else None
        if memory_source is None and variant is not None and endpoint is not None:
            memory = estimates.get((endpoint.account_id, variant.container.get("ModelDataUrl")))
            memory_source = "compile report (estimate)" if memory is not None else None
        views.append(
            ReplicaView(
                id=r.id,
                host_id=r.host_id,
                endpoint_id=r.endpoint_id,
                endpoint_name=endpoint.name if endpoint is not None else None,
                variant_name=variant.name if variant is not None else None,
                model_name=variant.model_name if variant is not None else None,
                instance_type=variant.instance_type if variant is not None else None,
                account_id=owner,
                visible=visible,
                state=str(r.state),
                desired_state=r.desired_state,
                pid=r.pid,
                address=r.address,
                restarts=r.restarts,
                setup_seconds=r.setup_seconds,
                failure_reason=r.failure_reason,
                standby=bool(extra.get("standby")),
                variant_id=r.variant_id,
                instance=int(extra.get("instance", r.ordinal)),
                created_at=r.created_at,
                updated_at=r.updated_at,
                cores=[int(i) for i in reported] if isinstance(reported, list) else [],
                rss_bytes=rss,
                cpu_seconds=cpu,
                device_memory_bytes=int(memory) if isinstance(memory, int | float) else None,
                device_memory_source=memory_source,
            )
        )
    return views


def _host_view(
    session: Session,
    host: Host,
    replicas: list[Replica],
    *,
    account_id: str | None,
    local_host_id: str | None,
    heartbeat_timeout: float,
    now: dt.datetime,
) -> HostView:
    chips = [
        ChipView(i, [CoreView(i * CORES_PER_CHIP + k, i) for k in range(CORES_PER_CHIP)])
        for i in range(max(0, host.chips))
    ]
    views = _replica_views(session, replicas, account_id=account_id, local_host_id=local_host_id)
    utilization = recent_utilization(session, [v.id for v in views], now)
    for view in views:
        view.utilization_percent = utilization.get(view.id)
    _assign_cores(chips, views)
    age = (now - host.last_heartbeat).total_seconds()
    return HostView(
        host=host,
        live=age <= heartbeat_timeout,
        heartbeat_age_seconds=max(0.0, age),
        local=host.id == local_host_id,
        chips=chips,
        replicas=views,
    )


def list_hosts(
    session: Session, settings: Settings, *, account_id: str | None, now: dt.datetime | None = None
) -> list[HostView]:
    """Return every host with its chips, cores and replicas (``account_id=None``: unredacted, admin)."""
    hosts = list(session.scalars(select(Host).order_by(Host.id)))
    replicas = list(session.scalars(select(Replica).order_by(Replica.id)))
    by_host: dict[str, list[Replica]] = {}
    for r in replicas:
        by_host.setdefault(r.host_id, []).append(r)
    current = now or utcnow()
    return [
        _host_view(
            session,
            h,
            by_host.get(h.id, []),
            account_id=account_id,
            local_host_id=settings.host_id,
            heartbeat_timeout=settings.heartbeat_timeout,
            now=current,
        )
        for h in hosts
    ]


def get_host(
    session: Session, settings: Settings, host_id: str, *, account_id: str | None, now: dt.datetime | None = None
) -> HostView:
    """Return one host's view; raise HostNotFound."""
    host = session.get(Host, host_id) if len(host_id) <= 128 else None
    if host is None:
        raise HostNotFound(host_id=host_id)
    replicas = list(session.scalars(select(Replica).where(Replica.host_id == host_id).order_by(Replica.id)))
    return _host_view(
        session,
        host,
        replicas,
        account_id=account_id,
        local_host_id=settings.host_id,
        heartbeat_timeout=settings.heartbeat_timeout,
        now=now or utcnow(),
    )


def endpoint_replicas(session: Session, settings: Settings, endpoint: Endpoint) -> list[ReplicaView]:
    """Return the replicas of one endpoint with the chips and cores they hold on their hosts."""
    host_ids = set(session.scalars(select(Replica.host_id).where(Replica.endpoint_id == endpoint.id)))
    out: list[ReplicaView] = []
    for host_id in sorted(host_ids):
        view = get_host(session, settings, host_id, account_id=endpoint.account_id)
        out.extend(r for r in view.replicas if r.endpoint_id == endpoint.id)
    return sorted(out, key=lambda r: r.id)


def neuron_ls(view: HostView) -> dict[str, Any]:
    """Return neuron-ls's JSON (``neuron-ls -j`` fields) for one host, marked emulated."""
    replicas = view.replica_map()
    devices = []
    for chip in view.chips:
        holders = sorted({c.replica_id for c in chip.cores if c.replica_id is not None})
        processes = []
        for rid in holders:
            replica = replicas.get(rid)
            if replica is None:
                continue
            command = (
                f"neurondock-replica {replica.endpoint_name}/{replica.variant_name}"
                if replica.visible
                else HIDDEN_OWNER
            )
            processes.append(
                {
                    "pid": replica.pid if replica.visible else None,
                    "command": command,
                    "neuron_runtime_version": RUNTIME_VERSION,
                    "replica_id": replica.id if replica.visible else None,
                }
            )
        devices.append(
            {
                "neuron_device": chip.index,
                "bdf": chip.pci_bdf,
                "connected_to": chip.connected(len(view.chips)),
                "nc_count": len(chip.cores),
                "memory_size": DEVICE_MEMORY_BYTES_PER_CHIP,
                "neuroncore_ids": [c.index for c in chip.cores],
                "neuron_processes": processes,
            }
        )
    return {
        "emulated": True,
        "host_id": view.host.id,
        "instance_type": f"emulated host ({len(view.chips)} Inferentia chips)",
        "neuron_devices": devices,
    }
