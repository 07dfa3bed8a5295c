"""The one wrapper around a replica process: spawn (warm or cold), wait for ready, ping, health, stop.

The host agent never touches a replica process any other way, so tests swap this class for a fake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neurondock_platform.dataplane import protocol
from neurondock_platform.db import utcnow
from neurondock_workers.hosting.replica import FAILED_MARKER, LISTENING_MARKER, OP_HEALTH
from neurondock_workers.hosting.standby import PIDFILE, STANDBY_MODULE, StandbyPool

logger = logging.getLogger(__name__)

REPLICA_MODULE = "neurondock_workers.hosting.replica"
# Longer than the replica's own drain (replica.DRAIN_SECONDS), shorter than the reconciler's stop wait.
DEFAULT_STOP_GRACE = 15.0
LOG_TAIL_LINES = 20
LOG_ROTATE_BYTES = 5 * 1024 * 1024
_READY_POLL = 0.02
# Each start writes this line to replica.log, so one attempt's lines can be told from the last one's.
START_BANNER = "--- neurondock: starting replica"


class ReplicaStartError(Exception):
    """A replica process did not become ready; the message is the FailureReason."""


def read_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """Return the last ``lines`` lines of a log file ("" when there is none)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def pid_alive(pid: int) -> bool:
    """Return whether a process exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited already; only its parent's wait() is missing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class ReplicaProcess:
    """The one way the agent touches a replica process: spawn, wait for ready, ping, health, stop."""

    def __init__(
        self,
        replica_id: int,
        model_dir: Path,
        log_path: Path,
        env: Mapping[str, str],
        bind: str = "127.0.0.1",
        torch_threads: int = 1,
    ) -> None:
        self.replica_id = replica_id
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path)
        self.env = dict(env)
        self.bind = bind
        self.torch_threads = torch_threads
        self.address: str | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._scan_pos = 0

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def command(self) -> list[str]:
        """Return the replica's argv."""
        return [
            sys.executable,
            "-m",
            REPLICA_MODULE,
            "--model-dir",
            str(self.model_dir),
            "--bind",
            self.bind,
            "--port",
            "0",
            "--torch-threads",
            str(self.torch_threads),
        ]

    # Set by the agent: warm interpreters that skip torch's import (None: always start cold).
    standby_pool: StandbyPool | None = None

    def start(self) -> int:
        """Spawn the process with stdout and stderr appended to the log; return its pid."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > LOG_ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        with self.log_path.open("ab") as log:
            log.write(f"{START_BANNER} {self.replica_id} at {utcnow():%Y-%m-%dT%H:%M:%SZ}\n".encode())
            log.flush()
            self._scan_pos = log.tell()
            pool = self.standby_pool
            warm = pool.take(self.env) if pool is not None else None
            if warm is not None and pool is not None:
                argv = self.command()[3:]
                if pool.activate(warm, argv=argv, env=self.env, cwd=self.model_dir, log=self.log_path):
                    log.write(f"neurondock: starting from a standby interpreter (pid {warm.pid})\n".encode())
                    self._popen = warm
                    return warm.pid
            self._popen = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=str(self.model_dir),
                # Its own session: a terminal's Ctrl-C reaches the agent, which then stops replicas in order.
                start_new_session=True,
            )
        return self._popen.pid

    def _new_lines(self) -> list[str]:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._scan_pos)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self._scan_pos += len(complete)
        return complete.decode("utf-8", "replace").splitlines()

    def _exit_reason(self, code: int) -> str:
        lines = [line for line in self._attempt_lines() if line.strip()]
        for line in reversed(lines):
            if line.startswith(FAILED_MARKER):
                return line[len(FAILED_MARKER) :].strip()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        last = lines[-1].strip() if lines else ""
        return f"Replica process {how} before it was ready" + (f": {last}" if last else "")

    def _attempt_lines(self) -> list[str]:
        text = read_tail(self.log_path, lines=200)
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith(START_BANNER)]
        return lines[starts[-1] + 1 :] if starts else lines

    def wait_ready(self, timeout: float, cancel: threading.Event | None = None) -> str | None:
        """Wait for the LISTENING line and a good ping; return ``host:port``, or None when cancelled.

        Raises:
            ReplicaStartError: the process exited, or was not ready within ``timeout`` seconds.
        """
        assert self._popen is not None, "start() first"
        cancel = cancel or threading.Event()
        deadline = time.monotonic() + timeout
        while self.address is None:
            for line in self._new_lines():
                if line.startswith(LISTENING_MARKER):
                    port = line.split()[-1].rpartition(":")[2]
                    self.address = f"{self.bind}:{port}"
            if self.address is not None:
                break
            code = self._popen.poll()
            if code is not None:
                raise ReplicaStartError(self._exit_reason(code))
            if time.monotonic() > deadline:
                raise ReplicaStartError(
                    f"Replica did not load its model and start listening within {timeout:.0f} seconds"
                )
            if cancel.wait(_READY_POLL):
                return None
        while True:
            if cancel.is_set():
                return None
            remaining = deadline - time.monotonic()
            if self.ping(timeout=max(0.1, min(2.0, remaining))):
                return self.address
            code = self._popen.poll()
            if code is not None:
                raise ReplicaStartError(self._exit_reason(code))
            if remaining <= 0:
                raise ReplicaStartError(
                    f"Replica at {self.address} listened but did not answer its health check within "
                    f"{timeout:.0f} seconds"
                )
            cancel.wait(_READY_POLL)

    def ping(self, timeout: float = 2.0) -> bool:
        """Return True when the replica answers a ping with status 200."""
        if self.address is None:
            return False
        try:
            return protocol.ping(self.address, timeout=timeout).get("status") == 200
        except (OSError, ConnectionError, protocol.ProtocolError, ValueError):
            return False

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """Return the replica's health answer (requests, in flight, memory, recycle), or None."""
        if self.address is None:
            return None
        host, _, port = self.address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                protocol.send_frame(sock, {"op": OP_HEALTH})
                meta, _ = protocol.recv_frame(sock)
        except (OSError, ConnectionError, protocol.ProtocolError, ValueError):
            return None
        return meta if meta.get("status") == 200 else None

    def alive(self) -> bool:
        """Return True while the process has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def terminate(self, grace: float = DEFAULT_STOP_GRACE) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; return the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self._popen.kill()
                self._popen.wait(5.0)
        return self._popen.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last lines of the replica log."""
        return read_tail(self.log_path, lines)

    @classmethod
    def kill_stale(cls, pid: int, model_dir: Path, grace: float = DEFAULT_STOP_GRACE) -> bool:
        """Kill a replica left by an earlier agent run; True when ``pid`` was one and is gone now.

        Only a process whose command line names the replica module and this replica's model
        directory is touched, so a recycled pid never takes an innocent process down.
        """
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        args = [a.decode("utf-8", "replace") for a in argv]
        cold = REPLICA_MODULE in args and str(model_dir) in args
        warm = STANDBY_MODULE in args and _pidfile_names(model_dir.parent / PIDFILE, pid)
        if not (cold or warm) or not pid_alive(pid):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(_READY_POLL)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return True


def _pidfile_names(path: Path, pid: int) -> bool:
    try:
        return path.read_text().strip() == str(pid)
    except OSError:
        return False



def append_log(path: Path, line: str) -> None:
    """Append one line to a replica log (the agent's notes go where the user reads the replica's own)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
    except OSError:
        logger.warning("could not write to %s", path)

