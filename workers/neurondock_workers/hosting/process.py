"""The one wrapper around a replica process: spawn (warm or cold), wait for ready, ping, health, stop.

The host agent never touches a replica process any other way, so tests swap this class for a fake.
A replica starts as an interpreter (``hosting/standby.py``) — taken warm from the pool or spawned
cold, sandboxed when the host's sandbox is enabled, by the agent before it fetches the model data
(``HeadStart``) — that is then activated with this process's argv, environment, channel key and
limits, its log and a listening socket the agent bound for it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from neurondock_platform.dataplane import protocol
from neurondock_platform.db import utcnow
from neurondock_platform.lifetime import pid_alive, wait_gone
from neurondock_workers.hosting import slots
from neurondock_workers.hosting.replica import FAILED_MARKER, LISTENING_MARKER, OP_HEALTH
from neurondock_workers.hosting.standby import (
    PIDFILE,
    STANDBY_MODULE,
    Interpreter,
    StandbyPool,
    spawn,
    startup_env,
)
from neurondock_workers.hosting.weights_cache import WAIT_ENV
from neurondock_workers.sandbox import MODEL_DIR, Limits, Sandbox

logger = logging.getLogger(__name__)

# Longer than the replica's own drain (replica.DRAIN_SECONDS), shorter than the reconciler's stop wait.
DEFAULT_STOP_GRACE = 15.0
LOG_TAIL_LINES = 20
LOG_ROTATE_BYTES = 5 * 1024 * 1024
_READY_POLL = 0.02
# Each start writes this line to replica.log, so one attempt's lines can be told from the last one's.
START_BANNER = "--- neurondock: starting replica"
# How long an interpreter may take to say hello (a Python start in a sandbox takes ~0.1 s).
_HELLO_SECONDS = 30.0
# A replica whose artifact's weights another replica is writing waits this long for that file.
WEIGHTS_WAIT_SECONDS = 60.0


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


class ReplicaProcess:
    """The one way the agent touches a replica process: spawn, wait for ready, ping, health, stop.

    ``model_dir`` is the host path of the model's files. With an enabled ``sandbox`` the process
    sees them read-only at ``/opt/ml/model`` (``env`` must say so: ``view_of``), gets a uid of its
    own, ``limits`` and, unless ``network``, no network; ``weights`` (host cache dir, key) lets
    sandboxed replicas of one artifact share one weights file (``hosting/slots.py``).
    """

    # Set by the agent: warm interpreters that skip torch's import (None: always start cold).
    standby_pool: StandbyPool | None = None
    # Weights keys some sandboxed replica of this process is loading (and may be writing the file of),
    # and the slot weights directories of each key's live replicas (any of them may write the file).
    _loading: ClassVar[collections.Counter[str]] = collections.Counter()
    _slots: ClassVar[dict[str, set[Path]]] = {}
    _loading_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        replica_id: int,
        model_dir: Path,
        log_path: Path,
        env: Mapping[str, str],
        bind: str = "127.0.0.1",
        torch_threads: int = 1,
        *,
        sandbox: Sandbox | None = None,
        network: bool = True,
        limits: Limits | None = None,
        weights: tuple[Path, str] | None = None,
        slots_dir: Path | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path)
        self.env = dict(env)
        self.bind = bind
        self.torch_threads = torch_threads
        self.sandbox = sandbox if sandbox is not None and sandbox.enabled else None
        self.network = network
        self.limits = limits
        self.weights = weights
        self.slots_dir = slots_dir if slots_dir is not None else self.log_path.parent / "slots"
        self.address: str | None = None
        # This process's channel key: the agent records it for the routers, the replica gets it at spawn.
        self.channel_key = protocol.new_key()
        self._interpreter: Interpreter | None = None
        # The pool that counts this process in (until it is gone), and that waits for its model to load.
        self._counted_in: StandbyPool | None = None
        self._owes_loaded: StandbyPool | None = None
        self._took_standby = False
        self._loading_key: str | None = None
        self._scan_pos = 0
        # The health checks' kept connection (``health``) and the address it goes to.
        self._health_sock: socket.socket | None = None
        self._health_address: str | None = None
        self._health_lock = threading.Lock()

    @staticmethod
    def view_of(model_dir: Path, sandbox: Sandbox | None) -> Path:
        """Where the replica itself sees its model directory."""
        return Path(MODEL_DIR) if sandbox is not None and sandbox.enabled else Path(model_dir)

    @property
    def sandboxed(self) -> bool:
        return self.sandbox is not None

    @property
    def _popen(self) -> subprocess.Popen[bytes] | None:
        return self._interpreter.proc if self._interpreter is not None else None

    @property
    def pid(self) -> int | None:
        """The replica's own pid (inside a sandbox, not bwrap's)."""
        return self._interpreter.pid if self._interpreter is not None else None

    @property
    def returncode(self) -> int | None:
        if self._popen is None:
            return None
        code = self._popen.poll()
        if code is not None and self.sandboxed and code > 128:
            # bwrap reports a child killed by signal N as 128 + N.
            return -(code - 128)
        return code

    def command(self) -> list[str]:
        """Return the replica's argv (what its interpreter is activated with)."""
        return [
            "--model-dir",
            str(self.view_of(self.model_dir, self.sandbox)),
            "--torch-threads",
            str(self.torch_threads),
        ]

    def _listen_socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((self.bind, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    def _local_socket(self) -> socket.socket | None:
        """The Unix socket a router on this host reaches the replica on (``protocol.local_name``), if it binds."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(protocol.local_name(self.channel_key))
        except OSError as exc:
            # Routers then use TCP, as they do for a replica on another host.
            logger.warning("replica %s: no local Unix socket (%s); it is reached on TCP only", self.replica_id, exc)
            sock.close()
            return None
        return sock

    def _spec(self) -> dict[str, Any]:
        env = dict(self.env)
        if self.sandboxed:
            # The platform's home is not in the sandbox; its private /tmp is the only writable place.
            env.update(HOME="/tmp", TMPDIR="/tmp")
        if self.sandboxed and self.weights is not None:
            cache, key = self.weights
            with self._loading_lock:
                if self._loading[key] and not slots.cached(cache, key):
                    # A sibling is loading the same artifact: map its file rather than write a second.
                    env[WAIT_ENV] = str(WEIGHTS_WAIT_SECONDS)
                self._loading[key] += 1
                self._loading_key = key
        return {
            "argv": self.command(),
            "env": env,
            "cwd": str(self.view_of(self.model_dir, self.sandbox)),
            "key": self.channel_key,
            "limits": self.limits.to_json() if self.limits is not None else None,
        }

    def _prepare(self, interpreter: Interpreter) -> None:
        if interpreter.model_dir is not None:
            slots.link_tree(self.model_dir, interpreter.model_dir)
        if interpreter.weights_dir is not None and self.weights is not None:
            with self._loading_lock:
                self._slots.setdefault(self.weights[1], set()).add(interpreter.weights_dir)
        self._sync_weights(interpreter)

    def _sync_weights(self, interpreter: Interpreter | None = None) -> None:
        interpreter = interpreter or self._interpreter
        if interpreter is None or interpreter.weights_dir is None or self.weights is None:
            return
        cache, key = self.weights
        with self._loading_lock:
            siblings = set(self._slots.get(key, ()))
        # Whichever replica of the artifact wrote the file first, every one of them gets it.
        for directory in siblings:
            slots.harvest(directory, cache, key)
        slots.distribute(cache, interpreter.weights_dir, key)

    def _done_loading(self) -> None:
        with self._loading_lock:
            if self._loading_key is not None:
                self._loading[self._loading_key] -= 1
                if self._loading[self._loading_key] <= 0:
                    del self._loading[self._loading_key]
                self._loading_key = None

    @classmethod
    def head_start(
        cls,
        replica_id: int,
        log_path: Path,
        env: Mapping[str, str],
        *,
        sandbox: Sandbox | None,
        network: bool,
        slots_dir: Path,
    ) -> HeadStart:
        """Acquire a replica's interpreter before its model data is known: a standby taken, else one spawned cold.

        Acquiring writes the start banner (what the interpreter prints belongs to this attempt's
        lines) and counts the replica in with the pool before the take: a take that finds the pool
        empty must not refill it for us.
        """
        head = HeadStart(
            Path(log_path), dict(env), sandbox if sandbox is not None and sandbox.enabled else None, network
        )
        head.log_path.parent.mkdir(parents=True, exist_ok=True)
        if head.log_path.exists() and head.log_path.stat().st_size > LOG_ROTATE_BYTES:
            head.log_path.replace(head.log_path.with_name(head.log_path.name + ".1"))
        with head.log_path.open("ab") as log:
            log.write(f"{START_BANNER} {replica_id} at {utcnow():%Y-%m-%dT%H:%M:%SZ}\n".encode())
            log.flush()
            head.scan_pos = log.tell()
            pool = head.pool = cls.standby_pool
            if pool is not None:
                pool.serve()
            pool_sandboxed = pool is not None and pool.sandbox is not None and pool.sandbox.enabled
            fits = pool is not None and pool_sandboxed == (head.sandbox is not None)
            warm = pool.take(head.env, network=network) if fits and pool is not None else None
            head.took = warm is not None
            try:
                head.interpreter = warm or spawn(head.sandbox, head.env, log, slots_dir=slots_dir, network=network)
            except BaseException:
                head.abandon()
                raise
        return head

    def start(self, head: HeadStart | None = None) -> int | None:
        """Activate the replica's interpreter, ``head``'s or one acquired now; return its pid.

        Its stdout and stderr go to the log, after the banner its interpreter's acquisition wrote.
        """
        if head is not None and not head.fits(self):
            head.abandon()
            head = None
        if head is None:
            head = self.head_start(
                self.replica_id,
                self.log_path,
                self.env,
                sandbox=self.sandbox,
                network=self.network,
                slots_dir=self.slots_dir,
            )
        first, self._scan_pos = head.interpreter, head.scan_pos
        self._counted_in = self._owes_loaded = head.pool
        self._took_standby = head.took
        head.interpreter = head.pool = None
        with self.log_path.open("ab") as log:
            listen = self._listen_socket()
            local = self._local_socket()
            try:
                self._interpreter = self._activate(first, log, [listen, local] if local is not None else [listen])
            finally:
                # The replica holds the sockets now; a copy here would keep a dead replica's port open.
                listen.close()
                if local is not None:
                    local.close()
        pid = self._interpreter.wait_pid(_HELLO_SECONDS)
        if pid is not None:
            # kill_stale() of a later agent recognises this pid as this replica's by this file.
            (self.log_path.parent / PIDFILE).write_text(str(pid))
        return pid

    def _activate(self, first: Interpreter | None, log: Any, sockets: list[socket.socket]) -> Interpreter:
        spec = self._spec()
        # The acquired interpreter first; one that died meanwhile (a standby, an import that failed) once more cold.
        for interpreter in (first, None):
            if interpreter is None:
                interpreter = spawn(self.sandbox, self.env, log, slots_dir=self.slots_dir, network=self.network)
            try:
                self._prepare(interpreter)
                if interpreter.activate(spec, [log.fileno(), *(sock.fileno() for sock in sockets)]):
                    if self._took_standby and interpreter is first:
                        log.write(b"neurondock: starting from a standby interpreter\n")
                        log.flush()
                    return interpreter
            except BaseException:
                interpreter.kill()
                interpreter.release()
                self._refill()
                self._count_out()
                raise
            interpreter.release()
        self._refill()
        self._count_out()
        raise ReplicaStartError("The replica's interpreter exited before it could be started")

    def _refill(self) -> None:
        # Once per start, when the model has loaded or failed to: the pool may start a replacement
        # for a standby taken, and stops any beyond its policy (hosting/standby.py).
        pool, self._owes_loaded = self._owes_loaded, None
        if pool is not None:
            pool.loaded(took=self._took_standby)

    def _count_out(self) -> None:
        pool, self._counted_in = self._counted_in, None
        if pool is not None:
            pool.unserve()

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
        try:
            return self._wait_ready(timeout, cancel or threading.Event())
        finally:
            self._sync_weights()
            self._done_loading()
            self._refill()

    def _wait_ready(self, timeout: float, cancel: threading.Event) -> str | None:
        assert self._popen is not None
        deadline = time.monotonic() + timeout
        while self.address is None:
            self._sync_weights()
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
            return protocol.ping(self.address, self.channel_key, timeout=timeout).get("status") == 200
        except (OSError, ConnectionError, protocol.ProtocolError, ValueError):
            return False

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """Return the replica's health answer (requests, in flight, memory, recycle), or None.

        Checks reuse one connection: a connect and its key handshake cost the agent and the replica
        more than the health answer itself. A kept connection the replica closed (a drain, an idle
        close) is replaced once at once; one that timed out is dropped, and the check fails.
        """
        address = self.address
        if address is None:
            return None
        with self._health_lock:
            for _ in range(2):
                sock, fresh = self._health_sock, False
                try:
                    if sock is None or self._health_address != address:
                        self._close_health()
                        sock, fresh = protocol.connect(address, self.channel_key, timeout), True
                        self._health_sock, self._health_address = sock, address
                    sock.settimeout(timeout)
                    protocol.send_frame(sock, {"op": OP_HEALTH})
                    meta, _ = protocol.recv_frame(sock)
                except TimeoutError:
                    self._close_health()
                    return None
                except (OSError, ConnectionError, protocol.ProtocolError, ValueError):
                    self._close_health()
                    if fresh:
                        return None
                    continue
                return meta if meta.get("status") == 200 else None
        return None

    def _close_health(self) -> None:
        sock, self._health_sock = self._health_sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def alive(self) -> bool:
        """Return True while the process has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def _signal(self, sig: signal.Signals) -> None:
        # The replica itself, not bwrap: SIGTERM starts its drain (bwrap would just leave).
        assert self._popen is not None
        target = self.pid or self._popen.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, sig)

    def terminate(self, grace: float = DEFAULT_STOP_GRACE) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; return the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    self._popen.kill()
                self._popen.wait(5.0)
        code = self.returncode
        self.discard()
        return code

    def kill(self) -> None:
        """SIGKILL the replica now (a replica past the model timeout is not drained)."""
        if self._popen is not None and self._popen.poll() is None:
            self._signal(signal.SIGKILL)

    def discard(self) -> None:
        """Once the process has exited: remove its sandbox slot and give its uid back."""
        self._close_health()
        self._done_loading()
        self._refill()
        interpreter = self._interpreter
        if interpreter is not None and interpreter.proc.poll() is not None:
            if interpreter.weights_dir is not None and self.weights is not None:
                with self._loading_lock:
                    self._slots.get(self.weights[1], set()).discard(interpreter.weights_dir)
            interpreter.cleanup()
        if interpreter is None or interpreter.proc.poll() is not None:
            self._count_out()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last lines of the replica log."""
        return read_tail(self.log_path, lines)

    @classmethod
    def kill_stale(cls, pid: int, replica_dir: Path, grace: float = DEFAULT_STOP_GRACE) -> bool:
        """Kill a replica left by an earlier agent run; True when ``pid`` was one and is gone now.

        Only a replica interpreter whose pid this replica's directory recorded (``PIDFILE``) is
        touched, so a recycled pid never takes an innocent process down.
        """
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        args = [a.decode("utf-8", "replace") for a in argv]
        ours = STANDBY_MODULE in args and _pidfile_names(replica_dir / PIDFILE, pid)
        if not ours or not pid_alive(pid):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, grace, _READY_POLL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return True


@dataclass
class HeadStart:
    """A replica's interpreter acquired before its model data is fetched (``ReplicaProcess.head_start``).

    A cold start's torch import then overlaps the download; ``ReplicaProcess.start`` activates the
    interpreter, or ``abandon`` lets it go (a failed fetch, a misfit, a cancel).
    """

    log_path: Path
    env: dict[str, str]
    sandbox: Sandbox | None
    network: bool
    interpreter: Interpreter | None = None
    # The pool this start is counted in with (and owes a loaded() to) until adopted or abandoned.
    pool: StandbyPool | None = None
    took: bool = False
    # Where this attempt's lines begin in the log.
    scan_pos: int = 0

    def fits(self, proc: ReplicaProcess) -> bool:
        """Whether ``proc`` may become this interpreter: same log, sandbox, network and start-up environment."""
        return (
            self.log_path == proc.log_path
            and self.sandbox is proc.sandbox
            and self.network == proc.network
            and startup_env(self.env) == startup_env(proc.env)
        )

    def abandon(self) -> None:
        """Let the interpreter go (its slot and uid too) and count the start out; nothing once adopted."""
        interpreter, self.interpreter = self.interpreter, None
        if interpreter is not None:
            interpreter.kill()
            interpreter.release()
        pool, self.pool = self.pool, None
        if pool is not None:
            # Out first: counted in, the pool would trim a warm standby as though this start were serving.
            pool.unserve()
            pool.loaded(took=self.took)


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
