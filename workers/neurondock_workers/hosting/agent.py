"""The host agent: keep this host's replica processes in line with its ``Replica`` rows.

The reconciler writes desired state (``desired_state`` running/stopped); the agent observes and
reports actual state (``state``, ``address``, ``pid``, ``failure_reason``, ``log_tail``). Each
``step()`` is one idempotent pass; slow work (download, model load, graceful stop) runs on a
background thread per replica so one slow model never holds up the others. Replica processes belong
to the agent, not to a request or a task, and every touch of one goes through ``ReplicaProcess``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import neurondock_platform
import neurondock_workers
from neurondock_platform.config import Settings
from neurondock_platform.dataplane import protocol
from neurondock_platform.db import make_engine, make_sessionmaker, session_scope, utcnow
from neurondock_platform.models import EndpointVariant, Host, Replica, ReplicaState
from neurondock_workers.hosting import neuron
from neurondock_workers.hosting.artifacts import ModelDataError, fetch_model_data
from neurondock_workers.hosting.replica import FAILED_MARKER, LISTENING_MARKER, describe_exception
from neurondock_workers.hosting.s3 import make_s3_client
from neurondock_workers.hosting.standby import PIDFILE, STANDBY_MODULE, StandbyPool

logger = logging.getLogger(__name__)

REPLICA_MODULE = "neurondock_workers.hosting.replica"
DESIRED_RUNNING = "running"
DESIRED_STOPPED = "stopped"
# Model load can be slow for big models; a variant may set its own limit like SageMaker's.
DEFAULT_STARTUP_TIMEOUT = 300.0
STARTUP_TIMEOUT_KEY = "ContainerStartupHealthCheckTimeoutInSeconds"
# Longer than the replica's own drain (replica.DRAIN_SECONDS), shorter than the reconciler's stop wait.
DEFAULT_STOP_GRACE = 15.0
HEARTBEAT_INTERVAL = 1.0
LOG_TAIL_LINES = 20
LOG_ROTATE_BYTES = 5 * 1024 * 1024
# A replica that stays up this long has recovered; its next crash restarts without delay again.
STABLE_SECONDS = 60.0
MAX_RESTART_DELAY = 30.0
_READY_POLL = 0.02
# Each start writes this line to replica.log, so one attempt's lines can be told from the last one's.
START_BANNER = "--- neurondock: starting replica"


class ReplicaStartError(Exception):
    """A replica process did not become ready; the message is the FailureReason."""


class AgentConflictError(RuntimeError):
    """Another live agent already runs this host id on this machine."""


def replica_dir(settings: Settings, replica_id: int) -> Path:
    """Return the directory holding one replica's model files and ``replica.log``."""
    return settings.replicas_dir / str(replica_id)


def _read_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
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


def _pid_alive(pid: int) -> bool:
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
    """The one way the agent touches a replica process: spawn, wait for ready, ping, stop."""

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
        text = _read_tail(self.log_path, lines=200)
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
        return _read_tail(self.log_path, lines)

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
        if not (cold or warm) or not _pid_alive(pid):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(_READY_POLL)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return True


@dataclass
class _Managed:
    """The agent's own record of one replica it runs."""

    replica_id: int
    # starting → ready | failed | cancelled; ready → backoff (crashed) → starting; stopping → gone
    phase: str = "starting"
    proc: ReplicaProcess | None = None
    # A start or stop thread owns this replica; step() leaves it alone until the thread is done.
    busy: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    ready_at: float = 0.0
    crashes: int = 0
    retry_at: float = 0.0


@dataclass
class _Launch:
    managed: _Managed
    container: dict[str, Any]
    startup_timeout: float
    # The NeuronCores and chips the reconciler gave this replica (empty off Inferentia).
    neuron: dict[str, Any] = field(default_factory=dict)


class HostAgent:
    """Runs the replica processes the database assigns to this host."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        s3_client_factory: Callable[[], Any],
        *,
        process_cls: type[ReplicaProcess] = ReplicaProcess,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_grace: float = DEFAULT_STOP_GRACE,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        fetch_retry_seconds: float = 60.0,
    ) -> None:
        self.settings = settings
        self.fetch_retry_seconds = fetch_retry_seconds
        self.sessions = session_factory
        self.s3_client_factory = s3_client_factory
        self.process_cls = process_cls
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.heartbeat_interval = heartbeat_interval
        self.cache_dir = settings.data_dir / "cache" / "model-data"
        self._managed: dict[int, _Managed] = {}
        self._lock = threading.Lock()
        self._s3: Any = None
        self._s3_lock = threading.Lock()
        self._started_at = utcnow()
        self._registered = False
        self._recovered = False
        self._last_heartbeat = 0.0

    # --- the pass ---------------------------------------------------------------------------------

    def step(self) -> None:
        """Make one idempotent pass: heartbeat, then converge every replica of this host."""
        now = time.monotonic()
        if not self._registered or now - self._last_heartbeat >= self.heartbeat_interval:
            self.heartbeat()
        if not self._recovered:
            self._kill_stale_processes()
            self._recovered = True

        launches: list[_Launch] = []
        stops: list[tuple[_Managed, bool]] = []
        with session_scope(self.sessions) as session:
            rows = session.execute(
                select(Replica, EndpointVariant)
                .join(EndpointVariant, Replica.variant_id == EndpointVariant.id)
                .where(Replica.host_id == self.settings.host_id)
                .order_by(Replica.id)
            ).all()
            seen = set()
            with self._lock:
                for replica, variant in rows:
                    seen.add(replica.id)
                    self._converge(replica, variant, now, launches, stops)
                for replica_id, managed in list(self._managed.items()):
                    if replica_id not in seen:
                        self._forget(managed, stops)
        # Threads start only after the commit, so their writes never race the pass's own.
        for launch in launches:
            self._spawn_thread(launch.managed, "start", self._start_replica, launch)
        for managed, write_state in stops:
            self._spawn_thread(managed, "stop", self._stop_replica, managed, write_state)

    def _converge(
        self,
        replica: Replica,
        variant: EndpointVariant,
        now: float,
        launches: list[_Launch],
        stops: list[tuple[_Managed, bool]],
    ) -> None:
        managed = self._managed.get(replica.id)
        if replica.desired_state == DESIRED_STOPPED:
            if managed is not None:
                if managed.busy:
                    # A start in flight stops its own process when it sees this.
                    managed.cancel.set()
                    return
                if managed.proc is not None and managed.proc.alive():
                    managed.busy = True
                    managed.phase = "stopping"
                    stops.append((managed, True))
                    return
                del self._managed[replica.id]
            if replica.state != ReplicaState.STOPPED or replica.address or replica.pid:
                replica.state = ReplicaState.STOPPED
                replica.address = None
                replica.pid = None
            return

        restart = False
        if managed is not None:
            if managed.busy:
                return
            if managed.phase == "ready":
                if managed.proc is None or not managed.proc.alive():
                    self._record_crash(replica, managed, now)
                return
            if managed.phase == "backoff":
                if now >= managed.retry_at:
                    # The row already says Starting (and counted the restart) since the crash.
                    fresh = _Managed(replica.id, crashes=managed.crashes)
                    self._managed[replica.id] = fresh
                    launches.append(
                        _Launch(fresh, dict(variant.container or {}), self._timeout_for(variant), _neuron(replica))
                    )
                return
            if managed.phase == "failed" and replica.state != ReplicaState.PENDING:
                # A failed replica waits for the reconciler to ask again (by setting it Pending).
                return
            # Failed and asked again, or a start that was cancelled: begin afresh.
            del self._managed[replica.id]
        elif replica.state == ReplicaState.FAILED:
            return
        else:
            # Ready in the database but no process here: it died while no agent was watching.
            restart = replica.state == ReplicaState.READY

        managed = _Managed(replica.id)
        self._managed[replica.id] = managed
        replica.state = ReplicaState.STARTING
        replica.address = None
        replica.pid = None
        replica.failure_reason = None
        if restart:
            replica.restarts += 1
        launches.append(_Launch(managed, dict(variant.container or {}), self._timeout_for(variant), _neuron(replica)))

    def _record_crash(self, replica: Replica, managed: _Managed, now: float) -> None:
        code = managed.proc.returncode if managed.proc is not None else None
        logger.warning("replica %s exited (code %s); restarting", replica.id, code)
        managed.crashes = 1 if now - managed.ready_at > STABLE_SECONDS else managed.crashes + 1
        # The first crash restarts at once; a crash loop backs off so it cannot eat the host's CPUs.
        delay = 0.0 if managed.crashes <= 1 else min(2.0 ** (managed.crashes - 2), MAX_RESTART_DELAY)
        managed.phase = "backoff"
        managed.retry_at = now + delay
        replica.state = ReplicaState.STARTING
        replica.address = None
        replica.pid = None
        replica.restarts += 1
        if managed.proc is not None:
            _append_log(
                managed.proc.log_path, f"neurondock: replica process exited with code {code}; restarting"
            )

    def _forget(self, managed: _Managed, stops: list[tuple[_Managed, bool]]) -> None:
        # The row is gone (endpoint deleted): nothing to report to, only processes to end.
        if managed.busy:
            managed.cancel.set()
            return
        del self._managed[managed.replica_id]
        if managed.proc is not None and managed.proc.alive():
            managed.busy = True
            managed.phase = "stopping"
            stops.append((managed, False))
        else:
            shutil.rmtree(replica_dir(self.settings, managed.replica_id) / "model", ignore_errors=True)

    def _timeout_for(self, variant: EndpointVariant) -> float:
        value = (variant.extra or {}).get(STARTUP_TIMEOUT_KEY)
        try:
            return float(value) if value else self.startup_timeout
        except (TypeError, ValueError):
            return self.startup_timeout

    def _spawn_thread(self, managed: _Managed, kind: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"replica-{managed.replica_id}-{kind}", daemon=True
        )
        managed.thread = thread
        thread.start()

    # --- background work --------------------------------------------------------------------------

    def _s3_client(self) -> Any:
        with self._s3_lock:
            if self._s3 is None:
                self._s3 = self.s3_client_factory()
            return self._s3

    def replica_env(
        self,
        container: Mapping[str, Any],
        model_dir: Path,
        replica_id: int,
        neuron_assignment: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Return the environment a replica runs with: the container's Environment over SageMaker defaults."""
        # Never hand the platform's own credentials to user code.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONDOCK_", "AWS_"))}
        env["PYTHONPATH"] = os.pathsep.join([*_source_roots(), *filter(None, [env.get("PYTHONPATH")])])
        env.update(
            {
                # Set before the interpreter starts: torch reads OMP_NUM_THREADS at import.
                "OMP_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
                "SAGEMAKER_REGION": self.settings.region,
                "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(int(self.settings.model_timeout)),
                "SAGEMAKER_BASE_DIR": str(model_dir.parent),
                "SM_MODEL_DIR": str(model_dir),
            }
        )
        environment = container.get("Environment") or {}
        env.update({str(k): str(v) for k, v in environment.items()})
        # The SDK sends /opt/ml/model/code; here the code lives under this replica's model dir.
        env["SAGEMAKER_SUBMIT_DIRECTORY"] = str(model_dir / "code")
        env["NEURONDOCK_REPLICA_ID"] = str(replica_id)
        cores = (neuron_assignment or {}).get("cores")
        if cores:
            # libnrt semantics: the process owns exactly these cores (inferentia.md §3.2).
            env["NEURON_RT_VISIBLE_CORES"] = neuron.core_range(cores)
        return env

    def _start_replica(self, launch: _Launch) -> None:
        managed = launch.managed
        rid = managed.replica_id
        rdir = replica_dir(self.settings, rid)
        log_path = rdir / "replica.log"
        started = time.monotonic()
        proc: ReplicaProcess | None = None
        try:
            url = launch.container.get("ModelDataUrl")
            if not url:
                raise ModelDataError(
                    "The model has no ModelDataUrl: neurondock's PyTorch runtime needs a model.tar.gz in S3"
                )
            model_dir = self._fetch_with_retry(str(url), rdir / "model", managed.cancel)
            if managed.cancel.is_set():
                managed.phase = "cancelled"
                return
            misfit = neuron.check_fit(model_dir, launch.neuron)
            if misfit is not None:
                _append_log(log_path, misfit)
                raise ReplicaStartError(misfit)
            proc = self.process_cls(
                rid,
                model_dir,
                log_path,
                self.replica_env(launch.container, model_dir, rid, launch.neuron),
                bind=self.settings.host_address,
            )
            managed.proc = proc
            pid = proc.start()
            self._update(rid, pid=pid)
            address = proc.wait_ready(launch.startup_timeout, managed.cancel)
            if address is None or not self._update(
                rid,
                require_running=True,
                state=ReplicaState.READY,
                address=address,
                pid=pid,
                setup_seconds=round(time.monotonic() - started, 3),
                failure_reason=None,
                log_tail=None,
            ):
                proc.terminate(self.stop_grace)
                managed.phase = "cancelled"
                return
            managed.ready_at = time.monotonic()
            managed.phase = "ready"
            logger.info("replica %s ready at %s in %.2fs", rid, address, time.monotonic() - started)
        except ModelDataError as exc:
            _append_log(log_path, f"neurondock: {exc.message}")
            self._fail(managed, exc.message, _read_tail(log_path))
        except ReplicaStartError as exc:
            tail = proc.log_tail() if proc is not None else ""
            if proc is not None:
                proc.terminate(self.stop_grace)
            self._fail(managed, str(exc), tail)
        except Exception as exc:
            logger.exception("starting replica %s failed", rid)
            if proc is not None:
                proc.terminate(self.stop_grace)
            reason = f"Internal error while starting the replica: {describe_exception(exc)}"
            _append_log(log_path, f"neurondock: {reason}")
            self._fail(managed, reason, _read_tail(log_path))
        finally:
            managed.busy = False

    def _fetch_with_retry(self, url: str, dest: Path, cancel: threading.Event) -> Path:
        """Fetch model data, riding out a store that is briefly unreachable (e.g. the API restarting)."""
        deadline = time.monotonic() + self.fetch_retry_seconds
        delay = 0.1
        while True:
            try:
                return fetch_model_data(self._s3_client(), url, self.cache_dir, dest=dest)
            except ModelDataError as exc:
                if not exc.transient or time.monotonic() + delay > deadline or cancel.is_set():
                    raise
                logger.info("model data store unreachable (%s); retrying in %.1fs", exc.message, delay)
                if cancel.wait(delay):
                    raise
                delay = min(delay * 2, 2.0)

    def _fail(self, managed: _Managed, reason: str, tail: str) -> None:
        logger.warning("replica %s failed: %s", managed.replica_id, reason)
        self._update(
            managed.replica_id,
            require_running=True,
            state=ReplicaState.FAILED,
            failure_reason=reason,
            log_tail=tail,
            address=None,
            pid=None,
        )
        # After the write: step() treats a failed phase as final only once the row says so.
        managed.phase = "failed"

    def _stop_replica(self, managed: _Managed, write_state: bool) -> None:
        try:
            if managed.proc is not None:
                managed.proc.terminate(self.stop_grace)
            if write_state:
                self._update(managed.replica_id, state=ReplicaState.STOPPED, address=None, pid=None)
            else:
                shutil.rmtree(replica_dir(self.settings, managed.replica_id) / "model", ignore_errors=True)
        finally:
            with self._lock:
                if self._managed.get(managed.replica_id) is managed:
                    del self._managed[managed.replica_id]
            managed.phase = "stopped"
            managed.busy = False

    def _update(
        self,
        replica_id: int,
        *,
        require_running: bool = False,
        only_states: tuple[ReplicaState, ...] | None = None,
        **values: Any,
    ) -> bool:
        """Write observed state to a replica row; False when the row is gone or no longer matches."""
        try:
            with session_scope(self.sessions) as session:
                replica = session.get(Replica, replica_id)
                if replica is None or (require_running and replica.desired_state != DESIRED_RUNNING):
                    return False
                if only_states is not None and replica.state not in only_states:
                    return False
                for key, value in values.items():
                    setattr(replica, key, value)
                return True
        except Exception:
            logger.exception("could not record the state of replica %s", replica_id)
            return False

    # --- host bookkeeping -------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Register this host, or refresh its capacity and heartbeat."""
        s = self.settings
        with session_scope(self.sessions) as session:
            host = session.get(Host, s.host_id)
            if host is None:
                host = Host(id=s.host_id, address=s.host_address, started_at=self._started_at)
                session.add(host)
            elif not self._registered and host.agent_pid is not None and host.agent_pid != os.getpid():
                age = (utcnow() - host.last_heartbeat).total_seconds()
                # Two agents on one host id would fight over the same replicas; a crashed one is fine.
                if age < s.heartbeat_timeout and _pid_alive(host.agent_pid):
                    raise AgentConflictError(
                        f"Another host agent (pid {host.agent_pid}) is running as host {s.host_id!r}; "
                        "stop it or give this one its own NEURONDOCK_HOST_ID"
                    )
            host.address = s.host_address
            host.chips = s.host_chips
            host.vcpus = s.host_vcpus
            host.memory_mb = s.host_memory_mb
            host.agent_pid = os.getpid()
            if not self._registered:
                host.started_at = self._started_at
            host.last_heartbeat = utcnow()
        self._registered = True
        self._last_heartbeat = time.monotonic()

    def _kill_stale_processes(self) -> None:
        # Replicas of an earlier agent run still hold their ports; they are not ours to watch, so
        # they go, and the pass that follows starts fresh ones.
        with session_scope(self.sessions) as session:
            rows = session.execute(
                select(Replica.id, Replica.pid).where(
                    Replica.host_id == self.settings.host_id, Replica.pid.is_not(None)
                )
            ).all()
        for replica_id, pid in rows:
            model_dir = replica_dir(self.settings, replica_id) / "model"
            if pid and self.process_cls.kill_stale(pid, model_dir, self.stop_grace):
                logger.info("killed stale replica %s (pid %s) from an earlier agent run", replica_id, pid)

    # --- lifecycle --------------------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Step every ``agent_poll_interval`` seconds until ``stop_event`` is set, then shut down."""
        try:
            while not stop_event.is_set():
                try:
                    self.step()
                except Exception:
                    # A database blip must not take the replicas down with the agent.
                    logger.exception("host agent pass failed; trying again")
                stop_event.wait(self.settings.agent_poll_interval)
        finally:
            self.shutdown()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop every replica process this agent runs and mark their rows Pending for the next run."""
        with self._lock:
            items = list(self._managed.values())
            self._managed.clear()
        for managed in items:
            managed.cancel.set()
        stoppers = []
        for managed in items:
            proc = managed.proc
            if proc is not None and proc.alive():
                thread = threading.Thread(target=proc.terminate, args=(self.stop_grace,), daemon=True)
                thread.start()
                stoppers.append(thread)
        limit = self.stop_grace + 10.0 if timeout is None else timeout
        deadline = time.monotonic() + limit
        for thread in stoppers + [m.thread for m in items if m.thread is not None]:
            thread.join(max(0.0, deadline - time.monotonic()))
        for managed in items:
            # A start thread may have spawned its process after the sweep above.
            if managed.proc is not None and managed.proc.alive():
                managed.proc.terminate(self.stop_grace)
            self._update(
                managed.replica_id,
                only_states=(ReplicaState.READY, ReplicaState.STARTING),
                state=ReplicaState.PENDING,
                address=None,
                pid=None,
            )

    def managed_pids(self) -> dict[int, int | None]:
        """Return replica id → pid of the processes this agent runs (for diagnostics and tests)."""
        with self._lock:
            return {rid: (m.proc.pid if m.proc else None) for rid, m in self._managed.items()}


def _neuron(replica: Replica) -> dict[str, Any]:
    extra = replica.extra or {}
    return {k: extra[k] for k in ("cores", "chips", "replicas_per_instance") if k in extra}


def _pidfile_names(path: Path, pid: int) -> bool:
    try:
        return path.read_text().strip() == str(pid)
    except OSError:
        return False


def _source_roots() -> list[str]:
    # A source checkout run without an install still has to import us in the replica. Installed
    # packages are found anyway, and site-packages on PYTHONPATH would outrank the standard library.
    roots = set()
    for package in (neurondock_platform, neurondock_workers):
        for entry in package.__path__:
            root = Path(entry).resolve().parent
            if root.name not in ("site-packages", "dist-packages"):
                roots.add(str(root))
    return sorted(roots)


def _append_log(path: Path, line: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
    except OSError:
        logger.warning("could not write to %s", path)


def run_agent(settings: Settings) -> None:
    """Run this host's agent until SIGTERM or SIGINT, then stop its replicas cleanly."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.replicas_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent = HostAgent(settings, make_sessionmaker(engine), lambda: make_s3_client(settings))
        pool = StandbyPool(agent.replica_env({}, settings.replicas_dir, 0), settings.replicas_dir)
        ReplicaProcess.standby_pool = pool
        pool.fill()
        logger.info("host agent %s running (pid %s)", settings.host_id, os.getpid())
        agent.run(stop)
    finally:
        if ReplicaProcess.standby_pool is not None:
            ReplicaProcess.standby_pool.close()
            ReplicaProcess.standby_pool = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        engine.dispose()


if __name__ == "__main__":
    run_agent(Settings.from_env())
