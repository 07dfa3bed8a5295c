"""Process entry points for the workers: the Celery worker and the host agent."""

from __future__ import annotations

import argparse
import logging

from neurondock_platform import database_gate
from neurondock_platform.config import Settings


def run_worker(settings: Settings, concurrency: int = 4, loglevel: str = "INFO", gate: int | None = None) -> int:
    """Run a Celery worker in this process until it is told to stop (once ``gate`` opens: database_gate)."""
    from celery import concurrency as pools
    from celery.utils.log import mlevel
    from celery.utils.nodenames import default_nodename, host_format

    from neurondock_workers.celery_app import configure

    app = configure(settings)
    import neurondock_workers.tasks  # noqa: F401  (registers the tasks)

    # Celery's worker class itself, not its command line (app.worker_main): that imports click-repl
    # and prompt_toolkit, ~8 MB and a few hundred ms of start-up the worker never uses.
    worker = app.Worker(
        hostname=host_format(default_nodename(f"worker-{settings.host_id}@%h")),
        # Threads: a reconcile mostly waits on the database, and compiles run in child processes.
        pool_cls=pools.get_implementation("threads"),
        concurrency=concurrency,
        loglevel=mlevel(loglevel.upper()),
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    database_gate.wait(gate)
    worker.start()
    return int(worker.exitcode or 0)


def main(argv: list[str]) -> int:
    """Dispatch ``worker`` or ``agent``."""
    parser = argparse.ArgumentParser(prog="python -m neurondock_workers")
    parser.add_argument("command", choices=["worker", "agent"])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    # `up` hands its children a pipe to wait on until the database is migrated.
    gate = database_gate.take()
    logging.basicConfig(level=args.loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if args.command == "worker":
        return run_worker(settings, args.concurrency, args.loglevel, gate)
    from neurondock_workers.hosting.agent import run_agent

    run_agent(settings, gate=gate)
    return 0
