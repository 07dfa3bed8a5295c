"""A real Celery worker on the embedded broker takes a task queued while its prefetch window was full.

While every slot of the window is taken, the transport's look at the queue finds nothing it may take;
the task queued meanwhile must start when a slot frees, not at the idle backstop (``broker.IDLE_POLL``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from neurondock_platform import broker, dispatch

# Far under the 30 s backstop, far over a worker's look on a ring.
SOON = 10.0
WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from celery import Celery
    from neurondock_platform import broker

    url, marks = sys.argv[1], Path(sys.argv[2])
    app = Celery("t", set_as_current=False)
    app.conf.update(broker.celery_config(url, "q"))

    @app.task(name="t.hold", acks_late=True)
    def hold():
        (marks / "hold-started").touch()
        while not (marks / "release").exists():
            time.sleep(0.02)

    @app.task(name="t.mark", acks_late=True)
    def mark():
        (marks / "mark-ran").touch()

    quiet = ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    app.worker_main(["worker", "--pool=threads", "--concurrency=1", "-Q", "q", "--loglevel=WARNING", *quiet])
    """
)


def _wait_for(path: Path, seconds: float, worker: subprocess.Popen[bytes]) -> float:
    start = time.monotonic()
    while not path.exists():
        assert worker.poll() is None, "the worker exited"
        if time.monotonic() - start > seconds:
            raise AssertionError(f"{path.name} did not appear within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_task_queued_behind_a_full_window_starts_when_the_slot_frees(tmp_path):
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    sender = dispatch.CeleryDispatcher(url, "q")
    worker = subprocess.Popen([sys.executable, str(script), url, str(tmp_path)])
    try:
        sender.send("t.hold")
        _wait_for(tmp_path / "hold-started", 60, worker)
        # The one slot is taken: this send rings, and the worker's look finds nothing it may take.
        sender.send("t.mark")
        time.sleep(0.5)  # not readiness: time for that ring's look to happen and find the window full
        assert not (tmp_path / "mark-ran").exists()
        (tmp_path / "release").touch()
        waited = _wait_for(tmp_path / "mark-ran", SOON, worker)
        assert waited < broker.IDLE_POLL
    finally:
        # Everything is checked: kill. This plain Celery worker does not ring broker.interrupt_drains on
        # SIGTERM as neurondock's worker does, and its warm shutdown took about 4 s of the test's 5.6 s.
        worker.kill()
        worker.wait(30)
