"""Place variant instances on live hosts: all of an instance's chips on one host, spread across hosts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.models import Host, Replica


@dataclass
class HostCapacity:
    """A live host and what is already placed on it."""

    host_id: str
    chips: int
    used_chips: int
    replicas_of_variant: int

    @property
    def free_chips(self) -> int:
        return self.chips - self.used_chips


class InsufficientCapacity(Exception):
    """No live host can take the instance."""


def live_hosts(session: Session, heartbeat_timeout: float, now: dt.datetime | None = None) -> list[Host]:
    """Hosts whose agent heartbeated within the timeout."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=heartbeat_timeout)
    return list(session.scalars(select(Host).where(Host.last_heartbeat >= cutoff).order_by(Host.id)))


def choose_host(candidates: Sequence[HostCapacity], chips_needed: int) -> HostCapacity:
    """Pick the host with the fewest replicas of this variant, then the most free chips."""
    fitting = [h for h in candidates if h.free_chips >= chips_needed]
    if not fitting:
        raise InsufficientCapacity(
            f"InsufficientInstanceCapacity: no live host has {chips_needed} free emulated Inferentia chip(s) "
            f"(free per host: {', '.join(f'{h.host_id}={h.free_chips}' for h in candidates) or 'no live hosts'})."
        )
    return min(fitting, key=lambda h: (h.replicas_of_variant, -h.free_chips, h.host_id))


def capacities(
    hosts: Iterable[Host], replicas: Iterable[Replica], chips_of_replica: dict[int, int], variant_id: int
) -> list[HostCapacity]:
    """Summarise chip use per live host from the running replicas."""
    table = {h.id: HostCapacity(h.id, h.chips, 0, 0) for h in hosts}
    for r in replicas:
        cap = table.get(r.host_id)
        if cap is None or r.desired_state != "running":
            continue
        cap.used_chips += chips_of_replica.get(r.id, 0)
        if r.variant_id == variant_id:
            cap.replicas_of_variant += 1
    return list(table.values())


def free_chips(session: Session, heartbeat_timeout: float, now: dt.datetime | None = None) -> dict[str, int]:
    """Free emulated chips per live host (chips no running replica holds); adjacency is the reconciler's check."""
    hosts = live_hosts(session, heartbeat_timeout, now)
    used: dict[str, set[int]] = {h.id: set() for h in hosts}
    for replica in session.scalars(select(Replica).where(Replica.desired_state == "running")):
        if replica.host_id in used:
            used[replica.host_id].update(replica.extra.get("chips") or [])
    return {h.id: h.chips - len(used[h.id]) for h in hosts}
