"""Run the platform's monitor passes (alarms, scheduled actions, scaling activities) in a worker.

Every worker process runs this thread; the database lease in ``services/monitor.py`` lets one of
them do the work at a time, and another takes over within the lease's life when it stops. A pass
plans the next one; in between the thread sleeps, woken early by the ``monitor`` doorbell when this
host commits a change to alarms, scheduled actions, scaling activities or async requests
(``wakeup.py``), but never passes more often than ``monitor.interval``.
"""

from __future__ import annotations

import logging
import threading
import time

from neurondock_platform import dispatch, wakeup
from neurondock_platform.config import Settings
from neurondock_platform.db import make_engine, make_sessionmaker, utcnow
from neurondock_platform.services import leases, monitor

log = logging.getLogger(__name__)

_bells: set[wakeup.Doorbell] = set()


def run(settings: Settings, stop: threading.Event) -> None:
    """Pass after pass until ``stop`` is set; then give the lease up."""
    factory = make_sessionmaker(make_engine(settings.database_url))
    # Scaling actions change endpoints, which enqueue their reconcile after commit like any API call.
    dispatch.install(factory, dispatch.CeleryDispatcher(settings.broker_url, settings.queue))
    wakeup.install(factory, settings.data_dir)
    state = monitor.Monitor(factory, settings, leases.holder_name())
    every = monitor.interval(settings)
    bell = wakeup.Doorbell(wakeup.bells_dir(settings.data_dir, wakeup.MONITOR))
    _bells.add(bell)
    try:
        started = time.monotonic()
        while _sleep(stop, bell, started + every, time.monotonic() + state.pause(utcnow())):
            started = time.monotonic()
            try:
                state.tick(utcnow())
            except Exception:
                log.exception("monitor pass failed; trying again")
    finally:
        _bells.discard(bell)
        bell.close()
        state.release()


def _sleep(stop: threading.Event, bell: wakeup.Doorbell, earliest: float, planned: float) -> bool:
    """Wait until ``planned`` (or ``earliest``, if rung first, and no sooner); False when ``stop`` is set.

    One wait for the whole time, no slices: whoever sets ``stop`` rings the bell (``wake``).
    """
    deadline = max(earliest, planned)
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        if bell.wait(left):
            deadline = min(deadline, max(earliest, time.monotonic()))
    return False


def wake() -> None:
    """Cut this process's monitor waits short (after setting their stop event, so they end at once)."""
    for bell in list(_bells):
        bell.ring()


def start(settings: Settings, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run, args=(settings, stop), name="neurondock-monitor", daemon=True)
    thread.start()
    return thread
