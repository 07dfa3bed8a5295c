"""The host row: how an agent registers its host, proves it is alive, and finds its predecessor's replicas."""

from __future__ import annotations

import datetime as dt
import os

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from neurondock_platform.config import Settings
from neurondock_platform.db import utcnow
from neurondock_platform.lifetime import pid_alive
from neurondock_platform.models import Host, Replica


class AgentConflictError(RuntimeError):
    """Another live agent already runs this host id on this machine."""


def record_heartbeat(session: Session, settings: Settings, started_at: dt.datetime, *, first: bool) -> Host:
    """Register the host, or refresh its capacity and heartbeat.

    Raises:
        AgentConflictError: on the first heartbeat, another agent process is alive and beating as this host.
    """
    s = settings
    host = session.get(Host, s.host_id)
    if host is None:
        host = Host(id=s.host_id, address=s.host_address, started_at=started_at)
        session.add(host)
    elif first and host.agent_pid is not None and host.agent_pid != os.getpid():
        age = (utcnow() - host.last_heartbeat).total_seconds()
        # Two agents on one host id would fight over the same replicas; a crashed one is fine.
        if age < s.heartbeat_timeout and pid_alive(host.agent_pid):
            raise AgentConflictError(
                f"Another host agent (pid {host.agent_pid}) is running as host {s.host_id!r}; "
                "stop it or give this one its own NEURONDOCK_HOST_ID"
            )
    host.address = s.host_address
    host.chips = s.host_chips
    host.vcpus = s.host_vcpus
    host.memory_mb = s.host_memory_mb
    host.agent_pid = os.getpid()
    if first:
        host.started_at = started_at
    host.last_heartbeat = utcnow()
    return host


def beat(session: Session, host_id: str) -> bool:
    """Refresh the heartbeat of a host this process registered, in one statement; False when it is not ours now.

    Capacity and sandbox status do not change while an agent runs: they are written when it registers
    (``record_heartbeat``), not on every beat.
    """
    result = session.execute(
        update(Host)
        .where(Host.id == host_id, Host.agent_pid == os.getpid())
        .values(last_heartbeat=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def replica_pids(session: Session, host_id: str) -> list[tuple[int, int]]:
    """Return (replica id, pid) of the host's rows that name a process.

    Replicas of an earlier agent run still hold their ports; they are not the new agent's to watch,
    so it ends them, and its first pass starts fresh ones.
    """
    rows = session.execute(
        select(Replica.id, Replica.pid).where(Replica.host_id == host_id, Replica.pid.is_not(None))
    ).all()
    return [(rid, pid) for rid, pid in rows if pid]
