"""A torch-carrying process leaves at once, yet its atexit handlers run and its output is not lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_exit_now_runs_atexit_flushes_stdio_and_keeps_the_code() -> None:
    program = textwrap.dedent(
        """
        import atexit, sys
        from neurondock_workers.exiting import exit_now
        atexit.register(lambda: print("atexit ran", flush=True))
        sys.stdout.write("buffered, no newline")
        sys.stderr.write("err buffered")
        exit_now(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "buffered, no newlineatexit ran\n"
    assert done.stderr == "err buffered"
