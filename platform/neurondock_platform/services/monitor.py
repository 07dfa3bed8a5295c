"""The monitor: one pass of the background duties of CloudWatch and Application Auto Scaling.

Each pass judges the alarms that are due (and runs their actions), runs due scheduled actions,
moves scaling activities on (Pending → InProgress → Successful / Unfulfilled, and Unfulfilled ones
again when capacity appears), and now and then applies metric and history retention. Every worker
process runs passes (``neurondock_workers/monitor.py``); only the holder of the ``monitor`` lease
does the work, and each duty is safe on its own if two passes overlap during a hand-over (alarms
and scheduled actions advance by compare-and-set; docs/cloudwatch.md, "Where the evaluator runs").

A pass ends by planning the next one (``Monitor.next_pass``): when the next alarm or scheduled action
is due, the next backlog gauge or retention, or the lease needs renewing; every ``interval`` while an
activity or an async request is open; and never later than ``idle_interval``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.config import Settings, idle_poll
from neurondock_platform.db import session_scope
from neurondock_platform.sagemaker_metrics import aligned_interval
from neurondock_platform.services import async_inference, async_metrics, leases, metrics
from neurondock_platform.services.autoscaling import activities, scheduled
from neurondock_platform.services.cloudwatch import alarms, evaluator
from neurondock_platform.services.cloudwatch.evaluation import Timing

log = logging.getLogger(__name__)

LEASE = "monitor"
# A sent async task not picked up within this is sent again (a duplicate delivery does nothing).
ASYNC_GRACE = dt.timedelta(seconds=30)
RETENTION_EVERY = dt.timedelta(minutes=5)


def timing(settings: Settings) -> Timing:
    """The alarm and scaling timing of this platform (AWS's, or faster by the operator's knob)."""
    return Timing(speedup=settings.scaling_speedup, flush_seconds=aligned_interval(settings.metrics_flush_seconds))


def interval(settings: Settings) -> float:
    """Seconds between passes while something is in progress (and the least between two passes)."""
    return min(1.0, aligned_interval(settings.metrics_flush_seconds) / 2)


def idle_interval(settings: Settings) -> float:
    """The most seconds between two passes: half a flush, and on SQLite the local idle poll (10 s).

    An alarm made on another host (no doorbell rings here) is first due a whole period plus a flush
    and a second after it was made, and a period's backlog gauge must be written before its alarms
    judge it (``Timing.settle``): a pass every half flush sees both in time. On SQLite every writer
    is on this machine and rings the monitor's doorbell (``wakeup.py``, endpoints included, for a new
    async endpoint's first gauge), so an idle pass finds nothing a ring would not have brought.
    """
    shared = max(interval(settings), aligned_interval(settings.metrics_flush_seconds) / 2)
    return max(shared, idle_poll(settings.database_url))


def lease_seconds(settings: Settings) -> float:
    """The monitor lease's life: two idle passes (10 s by default on PostgreSQL, 20 s on SQLite).

    The holder renews it once half of it is gone, so an idle pass renews it and no pass comes only
    for that. A holder that dies is replaced when its lease lapses, or at once by a worker of the
    same machine, which sees the process is gone (``leases.gone``).
    """
    return 2 * idle_interval(settings)


def renew_after(settings: Settings) -> dt.timedelta:
    """How old the holder lets its lease get before renewing it (a write each time)."""
    return dt.timedelta(seconds=lease_seconds(settings) / 2)


@dataclass(frozen=True)
class _Survey:
    """What a pass found before its duties: when the next alarm and scheduled action are due, what is open."""

    alarm_due: dt.datetime | None
    scheduled_due: dt.datetime | None
    activities: bool
    async_open: bool


@dataclass
class Monitor:
    """The state one process keeps between passes."""

    factory: sessionmaker[Session]
    settings: Settings
    holder: str
    # Retention first runs one interval after start, not in the middle of a platform's start-up.
    last_retention: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    held: bool = field(default=False, init=False)
    renewed_at: dt.datetime | None = field(default=None, init=False)
    last_backlog: dt.datetime | None = field(default=None, init=False)
    # Whether the last backlog pass wrote gauges (some endpoint is async): then each period gets one.
    backlog_written: bool = field(default=False, init=False)
    # When the next pass is due (``tick`` plans it).
    next_pass: dt.datetime | None = field(default=None, init=False)

    def tick(self, now: dt.datetime) -> dict[str, int]:
        """One pass; returns what it did (empty when another process holds the lease)."""
        self.next_pass = now + dt.timedelta(seconds=interval(self.settings))  # unless planned below
        if not self.held or self.renewed_at is None or now - self.renewed_at >= renew_after(self.settings):
            with self.factory() as session:
                ttl = lease_seconds(self.settings)
                epoch = leases.acquire(session, LEASE, self.holder, ttl, now)
                other = leases.held_by_other(session, LEASE, self.holder, now) if epoch is None else None
                if other is not None and leases.gone(other[0]):
                    epoch = leases.acquire(session, LEASE, self.holder, ttl, now, dead=other[0])
                self.held = epoch is not None
            self.renewed_at = now if self.held else None
        if not self.held:
            return {}
        clock = timing(self.settings)
        found = self._survey(now, clock)
        done: dict[str, int] = {}
        if found.alarm_due is not None and found.alarm_due <= now:
            done["alarms_judged"] = evaluator.evaluate_due(self.factory, now, clock)
        if found.scheduled_due is not None and found.scheduled_due <= now:
            done["scheduled_run"] = self._step("scheduled actions", lambda s: scheduled.run_due(s, now))
        # Alarm actions and scheduled actions start activities: moved on in the same pass, as before.
        if found.activities or done:
            done["activities_moved"] = self._step(
                "scaling activities",
                lambda s: activities.progress(
                    s,
                    now,
                    retry_seconds=clock.duration(activities.RETRY_SECONDS),
                    heartbeat_timeout=self.settings.heartbeat_timeout,
                ),
            )
        if found.async_open:
            done["async_sent"] = self._step(
                "async inference sweep",
                lambda s: len(
                    async_inference.sweep(
                        s, lease_timeout=async_inference.LEASE_SECONDS, grace=ASYNC_GRACE.total_seconds(), now=now
                    )
                ),
            )
        period = clock.flush_seconds
        boundary = now - dt.timedelta(seconds=now.timestamp() % period)
        if self.last_backlog is None or boundary > self.last_backlog:
            self.last_backlog = boundary
            done["async_backlog"] = self._step(
                "async backlog", lambda s: async_metrics.publish_backlog(s, now, int(period))
            )
            self.backlog_written = done["async_backlog"] > 0
        if now - self.last_retention >= RETENTION_EVERY:
            self.last_retention = now
            done["retention"] = self._step("retention", lambda s: _retain(s, now))
        self.next_pass = self._plan(now, clock, found)
        return done

    def _survey(self, now: dt.datetime, clock: Timing) -> _Survey:
        with self.factory() as session:
            return _Survey(
                evaluator.next_due(session, now, clock),
                scheduled.next_run(session),
                activities.any_unfinished(session),
                async_inference.any_open(session),
            )

    def _plan(self, now: dt.datetime, clock: Timing, found: _Survey) -> dt.datetime:
        """When the next pass is due: the soonest of everything that will be."""
        assert self.renewed_at is not None and self.last_backlog is not None
        again = now + dt.timedelta(seconds=interval(self.settings))
        soon = [
            now + dt.timedelta(seconds=idle_interval(self.settings)),
            self.renewed_at + renew_after(self.settings),
            self.last_retention + RETENTION_EVERY,
        ]
        if self.backlog_written:
            soon.append(self.last_backlog + dt.timedelta(seconds=clock.flush_seconds))
        for due in (found.alarm_due, found.scheduled_due):
            if due is not None:
                # One that was due now looks again after an interval: judged, it has a later time then.
                soon.append(again if due <= now else due)
        if found.activities or found.async_open:
            soon.append(again)
        return min(soon)

    def pause(self, now: dt.datetime) -> float:
        """Seconds until the next pass is due."""
        return 0.0 if self.next_pass is None else max(0.0, (self.next_pass - now).total_seconds())

    def _step(self, what: str, work: Callable[[Session], int]) -> int:
        try:
            with session_scope(self.factory) as session:
                return work(session)
        except Exception:
            log.exception("monitor: %s failed; trying again next pass", what)
            return 0

    def release(self) -> None:
        """Give the lease up (on shutdown) so another process takes over at once."""
        if self.held:
            with self.factory() as session:
                leases.release(session, LEASE, self.holder)
            self.held = False


def _retain(session: Session, now: dt.datetime) -> int:
    rolled = metrics.retain(session, now)
    pruned = alarms.prune_history(session, now) + activities.prune(session, now) + async_inference.prune(session, now)
    return sum(rolled.values()) + pruned
