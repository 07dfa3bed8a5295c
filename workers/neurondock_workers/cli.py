"""Process entry points for the workers: the Celery worker and the host agent."""

from __future__ import annotations

import argparse
import logging

from neurondock_platform.config import Settings


def run_worker(settings: Settings, concurrency: int = 4, loglevel: str = "INFO") -> int:
    """Run a Celery worker in this process until it is told to stop."""
    from neurondock_workers.celery_app import configure

    app = configure(settings)
    import neurondock_workers.tasks  # noqa: F401  (registers the tasks)

    # Threads: a reconcile mostly waits on the database, and compiles run in child processes.
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname=worker-{settings.host_id}@%h",
    ]
    app.worker_main(argv)
    return 0


def main(argv: list[str]) -> int:
    """Dispatch ``worker`` or ``agent``."""
    parser = argparse.ArgumentParser(prog="python -m neurondock_workers")
    parser.add_argument("command", choices=["worker", "agent"])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if args.command == "worker":
        return run_worker(settings, args.concurrency, args.loglevel)
    from neurondock_workers.hosting.agent import run_agent

    run_agent(settings)
    return 0
