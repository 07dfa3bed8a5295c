"""Pre-warmed replica interpreters: torch is imported before the model is known.

Importing torch is most of a replica's start-up (seconds on this machine), and it does not depend
on the model. The host agent keeps up to ``size`` standby processes waiting on their stdin (4 by
default: an ml.inf1.xlarge starts 4 replicas at once, one per NeuronCore); when a replica must
start, the agent writes one JSON line (argv, environment, working directory, log file) and the
standby becomes that replica. A standby is only used when the replica's environment agrees with it
on everything an interpreter reads at start-up (see ``StandbyPool.compatible``).

The pool refills in the background after each take, one interpreter at a time: a torch import
keeps a core busy for over a second, and the replicas that just took standbys are loading their
models on the same cores. Each standby costs memory: measured here (torch 2.13 CPU) one waiting
standby has an RSS of ~222 MiB and a Pss of ~180 MiB, ~146 MiB of it private anonymous memory,
so a full pool of 4 holds ~0.7 GiB; ``size`` 0 turns the pool off.
"""

from __future__ import annotations

import contextlib
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


def main(argv: list[str] | None = None) -> int:
    """Import the heavy modules, then wait for the replica to become."""
    args = sys.argv[1:] if argv is None else argv
    ready_fd = int(args[args.index("--ready-fd") + 1]) if "--ready-fd" in args else None

    import torch  # noqa: F401  (the point of a standby)

    import neurondock_workers.hosting.batcher
    import neurondock_workers.hosting.handler
    import neurondock_workers.hosting.replica
    import neurondock_workers.hosting.weights  # noqa: F401

    print(READY_MARKER, flush=True)
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"1")
            os.close(ready_fd)
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the agent let us go unused
    return _become(json.loads(line))


class _Standby:
    __slots__ = ("proc", "warm")

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        # Set once the interpreter has imported torch and waits for its replica.
        self.warm = threading.Event()


class StandbyPool:
    """Keeps up to ``size`` standbys ready; hands them out and refills one at a time in the background."""

    def __init__(self, base_env: Mapping[str, str], log_dir: Path, size: int = 1) -> None:
        self.base_env = dict(base_env)
        self.log_dir = log_dir
        self.size = max(0, size)
        self._lock = threading.Lock()
        self._ready: list[_Standby] = []
        self._closed = False
        self._filling = False
        # How many takes got a fully warm interpreter, and how many one still importing torch.
        self.taken_warm = 0
        self.taken_warming = 0

    def compatible(self, env: Mapping[str, str]) -> bool:
        """Whether a replica with this environment may start from a standby."""
        keys = {k for k in (*env, *self.base_env) if k.startswith(_STARTUP_PREFIXES)}
        return all(env.get(k) == self.base_env.get(k) for k in keys)

    def warm_count(self) -> int:
        """Return how many standbys are warm and waiting."""
        with self._lock:
            return sum(1 for s in self._ready if s.warm.is_set() and s.proc.poll() is None)

    def _spawn(self) -> _Standby | None:
        read_fd, write_fd = os.pipe()
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / "standby.log").open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", STANDBY_MODULE, "--ready-fd", str(write_fd)],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.base_env,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
        except OSError:
            logger.exception("could not start a standby replica interpreter")
            os.close(read_fd)
            return None
        finally:
            os.close(write_fd)
        standby = _Standby(proc)
        threading.Thread(
            target=_watch_ready, args=(read_fd, standby), name="neurondock-standby-ready", daemon=True
        ).start()
        return standby

    def _fill_loop(self) -> None:
        while True:
            with self._lock:
                self._ready = [s for s in self._ready if s.proc.poll() is None]
                if self._closed or len(self._ready) >= self.size:
                    self._filling = False
                    return
            standby = self._spawn()
            if standby is None:
                with self._lock:
                    self._filling = False
                return
            with self._lock:
                closed = self._closed
                if not closed:
                    self._ready.append(standby)
            if closed:
                _release(standby.proc)
                continue
            # One import at a time: wait for this one before starting the next.
            while not standby.warm.wait(0.1) and standby.proc.poll() is None:
                pass
            if not standby.warm.is_set():
                # Died while importing: a broken interpreter would die again; the next take tries once more.
                logger.warning("a standby interpreter exited with %s before it was ready", standby.proc.returncode)
                with self._lock:
                    self._filling = False
                return

    def fill(self) -> None:
        """Start standbys in the background until ``size`` are ready or coming."""
        with self._lock:
            if self._closed or self._filling or self.size == 0:
                return
            self._filling = True
        threading.Thread(target=self._fill_loop, name="neurondock-standby", daemon=True).start()

    def take(self, env: Mapping[str, str]) -> subprocess.Popen[bytes] | None:
        """Hand out a standby, warm ones first (None when there is none or the environment differs)."""
        if not self.compatible(env):
            return None
        with self._lock:
            alive = [s for s in self._ready if s.proc.poll() is None]
            chosen = next((s for s in alive if s.warm.is_set()), alive[0] if alive else None)
            self._ready = [s for s in alive if s is not chosen]
            if chosen is not None:
                if chosen.warm.is_set():
                    self.taken_warm += 1
                else:
                    self.taken_warming += 1
        self.fill()
        return chosen.proc if chosen is not None else None

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
        """Let every waiting standby go."""
        with self._lock:
            self._closed = True
            waiting, self._ready = self._ready, []
        for standby in waiting:
            _release(standby.proc)


def _watch_ready(read_fd: int, standby: _Standby) -> None:
    # The standby writes one byte once torch is imported; EOF without it means it died first.
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            if pipe.read(1):
                standby.warm.set()
    except OSError:
        pass


def release(proc: subprocess.Popen[bytes]) -> None:
    """Let a standby that was taken but not activated go."""
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
