"""`neurondock store` started on its own, in the operator's two steps, for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.platform import ACCESS_KEY, ACCOUNT_ID, SECRET_KEY, free_port
from tests.support.waiting import wait_for


def start_store(directory: Path, *, wrap: Sequence[str] = (), **popen: Any) -> tuple[subprocess.Popen[bytes], str]:
    """Migrate a database in ``directory``, run the store on a free port until it answers; return it and its URL."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),  # a wrapper (a profiler) is found on it
        "NEURONDOCK_DATA_DIR": str(directory / "store"),
        "NEURONDOCK_DATABASE_URL": f"sqlite:///{directory / 'shared.db'}",
        "NEURONDOCK_PORT": str(port),
        "NEURONDOCK_ROOT_ACCESS_KEY_ID": ACCESS_KEY,
        "NEURONDOCK_ROOT_SECRET_ACCESS_KEY": SECRET_KEY,
        "NEURONDOCK_ACCOUNT_ID": ACCOUNT_ID,
    }
    cli = [sys.executable, "-m", "neurondock_platform.cli"]
    # The operator's two steps: migrate (which bootstraps the root key), then run the store.
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*wrap, *cli, "store"], env=env, **popen)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        with urllib.request.urlopen(url + "/ping", timeout=1):
            return True

    try:
        wait_for(answers, 30, what="the store to answer /ping", ignoring=(OSError,))
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, url
