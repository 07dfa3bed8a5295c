"""A pre-warmed replica interpreter: torch is imported before the model is known.

Importing torch is most of a replica's start-up (seconds on this machine), and it does not depend
on the model. The host agent keeps one standby process waiting on its stdin; when a replica must
start, the agent writes one JSON line (argv, environment, working directory, log file) and the
standby becomes that replica. A standby is only used when the replica's environment agrees with
it on everything an interpreter reads at start-up (see ``StandbyPool.compatible``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STANDBY_MODULE = "neurondock_workers.hosting.standby"
READY_MARKER = "NEURONDOCK_STANDBY_READY"
PIDFILE = "standby.pid"
# Variables an interpreter, OpenMP or torch read before a standby could change them.
_STARTUP_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "LD_", "TORCH", "CUDA", "OPENBLAS", "MALLOC")

logger = logging.getLogger(__name__)


def _become(spec: dict[str, Any]) -> int:
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(spec["cwd"])
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in spec["env"].items()})
    from neurondock_workers.hosting import replica

    return replica.main(spec["argv"])


def main() -> int:
    """Import the heavy modules, then wait for the replica to become."""
    import torch  # noqa: F401  (the point of a standby)

    import neurondock_workers.hosting.handler
    import neurondock_workers.hosting.replica  # noqa: F401

    print(READY_MARKER, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the agent let us go unused
    return _become(json.loads(line))


class StandbyPool:
    """Keeps one warm standby ready; hands it out and starts the next one in the background."""

    def __init__(self, base_env: Mapping[str, str], log_dir: Path) -> None:
        self.base_env = dict(base_env)
        self.log_dir = log_dir
        self._lock = threading.Lock()
        self._ready: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._spawning = False

    def compatible(self, env: Mapping[str, str]) -> bool:
        """Whether a replica with this environment may start from a standby."""
        keys = {k for k in (*env, *self.base_env) if k.startswith(_STARTUP_PREFIXES)}
        return all(env.get(k) == self.base_env.get(k) for k in keys)

    def _spawn(self) -> None:
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / "standby.log").open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", STANDBY_MODULE],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.base_env,
                    start_new_session=True,
                )
        except OSError:
            logger.exception("could not start a standby replica interpreter")
            proc = None
        with self._lock:
            self._spawning = False
            if self._closed and proc is not None:
                _release(proc)
                return
            self._ready = proc

    def fill(self) -> None:
        """Start a standby in the background if none is ready or coming."""
        with self._lock:
            if self._closed or self._spawning or (self._ready is not None and self._ready.poll() is None):
                return
            self._spawning = True
        threading.Thread(target=self._spawn, name="neurondock-standby", daemon=True).start()

    def take(self, env: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
        """Hand out the ready standby (None when there is none or the environment differs)."""
        if not self.compatible(env):
            return None
        with self._lock:
            proc, self._ready = self._ready, None
        self.fill()
        if proc is None or proc.poll() is not None:
            return None
        return proc

    def activate(
        self, proc: subprocess.Popen[bytes], *, argv: list[str], env: Mapping[str, str], cwd: Path, log: Path
    ) -> bool:
        """Turn a standby into a replica; False if it died meanwhile (start cold instead)."""
        spec = {"argv": argv, "env": dict(env), "cwd": str(cwd), "log": str(log)}
        assert proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            return False
        # kill_stale() of a later agent recognises this pid as this replica's by this file.
        (log.parent / PIDFILE).write_text(str(proc.pid))
        return True

    def close(self) -> None:
        """Let the waiting standby go."""
        with self._lock:
            self._closed = True
            proc, self._ready = self._ready, None
        if proc is not None:
            _release(proc)


def _release(proc: subprocess.Popen[bytes]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(5)


if __name__ == "__main__":
    sys.exit(main())
