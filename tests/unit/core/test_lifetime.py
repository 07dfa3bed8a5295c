"""lifetime.spawn: a child outlives the short-lived thread that asked for it, and dies with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.support.processes import pid_gone, wait_gone

from neurondock_platform import lifetime

PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, threading, time
    from neurondock_platform.lifetime import spawn

    children = []
    def start():
        children.append(spawn([sys.executable, "-c", "import time; time.sleep(120)"], death_signal=signal.SIGKILL))
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()  # the thread that asked for the child is gone now
    children.append(spawn([sys.executable, "-c", "import time; time.sleep(120)"]))  # from the main thread
    print(" ".join(str(c.pid) for c in children), flush=True)
    time.sleep(120)
    """
)


def test_children_outlive_the_asking_thread_and_die_with_the_process():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        # PR_SET_PDEATHSIG fires when the forking *thread* exits: spawn() must not fork from that thread.
        assert wait_gone(pids, timeout=0.5) == pids
        parent.kill()
        parent.wait()
        assert wait_gone(pids, timeout=10) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in pids:
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_wait_gone_waits_for_an_exit_and_no_longer():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        began = time.monotonic()
        assert not lifetime.wait_gone(child.pid, 0.2), "a live process is not gone"
        assert time.monotonic() - began >= 0.2
        os.kill(child.pid, signal.SIGKILL)
        # Not reaped yet: a zombie has exited, and waiting for it does not take the timeout.
        began = time.monotonic()
        assert lifetime.wait_gone(child.pid, 30)
        assert time.monotonic() - began < 10
    finally:
        child.kill()
        child.wait()
