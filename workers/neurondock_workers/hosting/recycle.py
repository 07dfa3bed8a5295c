"""Replace a replica process that asked to be recycled, without failing a single request.

A replica past its memory growth limit says so in its health answer (``hosting/memory.py``). The
host agent then, in this order: starts a replacement for the same ``Replica`` row on a new port with
the same NeuronCores and environment; waits until it is ready; switches the row's address and pid to
it, so every router's next refresh (every 0.25 s) sends traffic there; waits until the old process
has had no new request for a moment; and only then drains and stops it.

The wait matters because a router that was refused by a draining replica leaves that replica id out
for the rest of the request, and the replacement has the same id: an old process that refused work
while a router still sent it some would turn a retry into an error. Crashes keep their own path (the
agent's restart with back-off); recycling only ever replaces a process that is still serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.models import Replica, ReplicaState
from neurondock_workers.hosting.process import ReplicaProcess, ReplicaStartError, append_log

logger = logging.getLogger(__name__)

# How often the agent asks each ready replica for its health (memory, recycle request).
HEALTH_INTERVAL = 1.0
# Routers on this host refresh their table as soon as the switch commits (a doorbell), others within
# a second; a little later none should use the old address (the quiet wait below makes sure).
SWITCH_SECONDS = 1.0
# No new request for this long after the switch: the routers have moved on.
QUIET_SECONDS = 0.5
# A router that cannot reach the database keeps its cached table; past this the old process goes anyway.
MAX_QUIET_WAIT = 30.0
# A replacement that failed to start is tried again after this long; the old process keeps serving.
RETRY_SECONDS = 60.0
RECYCLES_KEY = "recycles"
LAST_RECYCLE_KEY = "last_recycle"


def record_switch(
    sessions: sessionmaker[Session], replica_id: int, *, address: str, pid: int | None, channel_key: str, reason: str
) -> int | None:
    """Point a Ready, still wanted replica row at its replacement; return the recycle count, or None."""
    with session_scope(sessions) as session:
        replica = session.get(Replica, replica_id)
        if replica is None or replica.desired_state != "running" or replica.state != ReplicaState.READY:
            return None
        extra = dict(replica.extra or {})
        count = int(extra.get(RECYCLES_KEY) or 0) + 1
        extra[RECYCLES_KEY] = count
        extra[LAST_RECYCLE_KEY] = {"at": utcnow().isoformat(), "reason": reason}
        # A new dict, not an in-place change: the JSON column only notices assignment.
        replica.extra = extra
        replica.address = address
        replica.channel_key = channel_key
        replica.pid = pid
        return count


def wait_until_quiet(
    proc: ReplicaProcess,
    cancel: threading.Event,
    *,
    switch_seconds: float = SWITCH_SECONDS,
    quiet_seconds: float = QUIET_SECONDS,
    max_wait: float = MAX_QUIET_WAIT,
    poll: float = 0.1,
) -> bool:
    """Wait until no router sends ``proc`` new work; False when ``max_wait`` passed first or cancelled."""
    started = last_change = time.monotonic()
    last: dict[str, Any] | None = proc.health()
    while True:
        if cancel.wait(poll):
            return False
        now = time.monotonic()
        health = proc.health()
        if health is None:
            return True  # gone or not answering: nothing left to wait for
        if last is None or health.get("requests") != last.get("requests") or health.get("inflight"):
            last_change = now
        last = health
        if now - started >= switch_seconds and now - last_change >= quiet_seconds:
            return True
        if now - started >= max_wait:
            return False


def replace(
    old: ReplicaProcess,
    new: ReplicaProcess,
    sessions: sessionmaker[Session],
    *,
    reason: str,
    startup_timeout: float,
    stop_grace: float,
    cancel: threading.Event,
    on_switch: Callable[[ReplicaProcess], None],
) -> bool:
    """Run one recycle of ``old``'s row onto ``new``; True once ``new`` serves it and ``old`` is stopped.

    ``on_switch`` runs as soon as the row points at ``new``, before the old process is drained. False
    means the row was stopped, deleted, not Ready or the recycle cancelled: ``new`` is stopped again.

    Raises:
        ReplicaStartError: the replacement did not become ready; it is stopped, ``old`` keeps serving.
    """
    rid = old.replica_id
    append_log(old.log_path, f"neurondock: {reason}; starting a replacement for pid {old.pid}")
    try:
        pid = new.start()
        address = new.wait_ready(startup_timeout, cancel)
        count = (
            None
            if address is None
            else record_switch(sessions, rid, address=address, pid=pid, channel_key=new.channel_key, reason=reason)
        )
    except ReplicaStartError as exc:
        new.terminate(stop_grace)
        append_log(
            old.log_path,
            f"neurondock: the replacement did not start ({exc}); pid {old.pid} keeps serving and the agent "
            f"tries again in {RETRY_SECONDS:.0f} s",
        )
        raise
    except BaseException:
        new.terminate(stop_grace)
        raise
    if count is None:
        new.terminate(stop_grace)
        return False
    append_log(
        old.log_path,
        f"neurondock: recycled: {reason} (pid {old.pid} replaced by pid {pid} at {address}; "
        f"recycle {count} of this replica)",
    )
    logger.info("replica %s recycled: %s; pid %s → %s", rid, reason, old.pid, pid)
    on_switch(new)
    try:
        wait_until_quiet(old, cancel)
    finally:
        old.terminate(stop_grace)
    return True
