"""Process entry points for the workers: the Celery worker, the host agent, and both in one process."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from neurondock_platform import database_gate, heap, optional_imports
from neurondock_platform.config import Settings

logger = logging.getLogger(__name__)


def _celery_worker(settings: Settings, concurrency: int, loglevel: str) -> Any:
    """Celery's worker for this host's queue, built but not started."""
    from celery import concurrency as pools
    from celery.utils.log import mlevel
    from celery.utils.nodenames import default_nodename, host_format

    from neurondock_workers.celery_app import configure
    from neurondock_workers.drains import QuietConsumer

    app = configure(settings)
    import neurondock_workers.tasks  # noqa: F401  (registers the tasks)

    # Celery's worker class itself, not its command line (app.worker_main): that imports click-repl
    # and prompt_toolkit, ~8 MB and a few hundred ms of start-up the worker never uses.
    return app.Worker(
        hostname=host_format(default_nodename(f"worker-{settings.host_id}@%h")),
        # Threads: a reconcile mostly waits on the database, and compiles run in child processes.
        pool_cls=pools.get_implementation("threads"),
        concurrency=concurrency,
        consumer_cls=QuietConsumer,
        loglevel=mlevel(loglevel.upper()),
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )


def run_worker(settings: Settings, concurrency: int = 4, loglevel: str = "INFO", gate: int | None = None) -> int:
    """Run a Celery worker in this process until it is told to stop (once ``gate`` opens: database_gate)."""
    worker = _celery_worker(settings, concurrency, loglevel)
    database_gate.wait(gate)
    worker.start()
    return int(worker.exitcode or 0)


class _SignalWatch:
    """A thread that hears every SIGTERM, SIGINT and SIGCHLD at once, whichever thread the kernel gave it to.

    Python runs signal handlers on the main thread only, and only between two bytecodes: a signal the
    kernel hands to another thread waits until the main thread's current wait ends (Celery's broker
    drain: up to 2 s). The interpreter's C-level handler writes each signal's number to the wakeup fd
    (``signal.set_wakeup_fd``) at once, from any thread; this thread reads it and acts for the agent,
    outside any signal handler, so it may take locks.
    """

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._on_signal = on_signal
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._run, name="signal-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for number in os.read(self._read, 64):
                if number == 0:
                    return
                self._on_signal(number)

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        os.write(self._write, b"\0")  # not a signal number: the thread's end
        self._thread.join()
        os.close(self._read)
        os.close(self._write)


def run_host(settings: Settings, concurrency: int = 4, loglevel: str = "INFO", gate: int | None = None) -> int:
    """Run the Celery worker and the host agent in this one process until SIGTERM or SIGINT.

    Celery runs on the main thread, where it installs its own SIGTERM/SIGINT handlers (warm shutdown);
    the agent runs on a thread of its own, which a SIGTERM or SIGINT stops at once (``_SignalWatch``) and
    which hands its replicas back (Pending) within ``Settings.stop_timeout``, beside Celery's shutdown.
    SIGCHLD (a replica exited) wakes the agent. If either half ends unasked, the other is stopped and
    the process exits non-zero: the supervisor restarts it whole, never half of it (docs/supervision.md).
    """
    from celery.worker import state as celery_state

    from neurondock_platform import broker
    from neurondock_workers.hosting.agent import AgentRun

    run = AgentRun(settings)
    gate_open = threading.Event()
    main = threading.main_thread()
    stop_asked = threading.Event()
    agent_failed = threading.Event()

    def heard(signum: int) -> None:
        if signum == signal.SIGCHLD:
            run.wake()  # a replica process exited: the agent acts now, not at its next idle pass
            return
        if signum in (signal.SIGTERM, signal.SIGINT):
            stop_asked.set()
            run.request_stop()
            # Celery's handler runs once the main thread's broker wait ends: end it now.
            broker.interrupt_drains()

    def before_celery(signum: int, frame: Any) -> None:
        # Until Celery installs its own handlers (which replace this one): Celery stops as soon as it starts.
        celery_state.should_stop = 0

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, before_celery),
        signal.SIGINT: signal.signal(signal.SIGINT, before_celery),
        # A Python handler, however idle, is what has the interpreter hear SIGCHLD and tell the watch.
        signal.SIGCHLD: signal.signal(signal.SIGCHLD, lambda signum, frame: None),
    }
    watch = _SignalWatch(heard)

    def agent_half() -> None:
        try:
            run.prepare()
            gate_open.wait()
            if not run.stop.is_set():  # also set when the gate closed: then the database is not ready
                run.serve()
        except BaseException:
            logger.exception("the host agent failed")
            agent_failed.set()
        else:
            if not run.stop.is_set():
                logger.error("the host agent stopped without being asked to")
                agent_failed.set()
        if agent_failed.is_set() and not stop_asked.is_set():
            # Stop the Celery half the way a SIGTERM does, sent to the main thread: its handler runs at
            # once, its wait interrupted, rather than when that wait ends.
            logger.error("stopping the Celery worker too: this process exits for its supervisor to restart")
            signal.pthread_kill(main.ident or 0, signal.SIGTERM)

    agent_thread = threading.Thread(target=agent_half, name="host-agent", daemon=True)
    try:
        # The agent's half imports and probes its sandbox while Celery's builds its worker.
        agent_thread.start()
        worker = _celery_worker(settings, concurrency, loglevel)
        database_gate.wait(gate)  # exits if the gate closes; the agent's thread has not touched the database
        gate_open.set()
        worker.start()
        code = int(worker.exitcode or 0)
    finally:
        # Celery's half ended, however: the agent stops too.
        run.request_stop()
        gate_open.set()
        agent_thread.join(max(1.0, settings.stop_timeout))
        if agent_thread.is_alive():
            logger.error("the host agent did not stop within %.0f s", settings.stop_timeout)
        run.close()
        watch.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if agent_failed.is_set() or agent_thread.is_alive():
        return code or 1
    if not stop_asked.is_set():
        logger.error("the Celery worker stopped without being asked to (exit code %s)", code)
        return code or 1
    return code


def main(argv: list[str]) -> int:
    """Dispatch ``worker``, ``agent`` or ``host`` (both in one process)."""
    parser = argparse.ArgumentParser(prog="python -m neurondock_workers")
    parser.add_argument("command", choices=["worker", "agent", "host"])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    heap.limit_arenas()  # before any thread starts
    heap.fix_thresholds()
    optional_imports.refuse()  # before Celery and kombu look for them
    # `up` hands its children a pipe to wait on until the database is migrated.
    gate = database_gate.take()
    logging.basicConfig(level=args.loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if args.command == "worker":
        return run_worker(settings, args.concurrency, args.loglevel, gate)
    if args.command == "host":
        return run_host(settings, args.concurrency, args.loglevel, gate)
    from neurondock_workers.hosting.agent import run_agent

    run_agent(settings, gate=gate)
    return 0
