"""The host agent: keep this host's replica processes in line with its ``Replica`` rows.

The reconciler writes desired state (``desired_state`` running/stopped); the agent observes and
reports actual state (``state``, ``address``, ``pid``, ``failure_reason``, ``log_tail``). Each
``step()`` is one idempotent pass; slow work (download, model load, graceful stop) runs on a
background thread per replica so one slow model never holds up the others. Replica processes belong
to the agent, not to a request or a task, and every touch of one goes through ``ReplicaProcess``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.config import Settings
from neurondock_platform.db import make_engine, make_sessionmaker, session_scope, utcnow
from neurondock_platform.models import EndpointVariant, Replica, ReplicaState
from neurondock_workers.hosting import host, neuron, recycle
from neurondock_workers.hosting.artifacts import ModelDataError, fetch_model
from neurondock_workers.hosting.environment import replica_environment
from neurondock_workers.hosting.host import AgentConflictError
from neurondock_workers.hosting.process import (
    DEFAULT_STOP_GRACE,
    ReplicaProcess,
    ReplicaStartError,
    append_log,
    read_tail,
)
from neurondock_workers.hosting.replica import describe_exception
from neurondock_workers.hosting.s3 import make_s3_client
from neurondock_workers.hosting.standby import StandbyPool
from neurondock_workers.hosting.weights_cache import prune, weights_key

logger = logging.getLogger(__name__)

# ReplicaProcess and the errors live in their own modules; importing them from here keeps working.
__all__ = ["AgentConflictError", "HostAgent", "ReplicaProcess", "ReplicaStartError", "replica_dir", "run_agent"]

DESIRED_RUNNING = "running"
DESIRED_STOPPED = "stopped"
# Model load can be slow for big models; a variant may set its own limit like SageMaker's.
DEFAULT_STARTUP_TIMEOUT = 300.0
STARTUP_TIMEOUT_KEY = "ContainerStartupHealthCheckTimeoutInSeconds"
HEARTBEAT_INTERVAL = 1.0
# A replica that stays up this long has recovered; its next crash restarts without delay again.
STABLE_SECONDS = 60.0
MAX_RESTART_DELAY = 30.0


def replica_dir(settings: Settings, replica_id: int) -> Path:
    """Return the directory holding one replica's model files and ``replica.log``."""
    return settings.replicas_dir / str(replica_id)


@dataclass
class _Managed:
    """The agent's own record of one replica it runs."""

    replica_id: int
    # starting → ready | failed | cancelled; ready → backoff (crashed) → starting; stopping → gone;
    # ready → recycling (a replacement process starts) → ready
    phase: str = "starting"
    proc: ReplicaProcess | None = None
    # A start or stop thread owns this replica; step() leaves it alone until the thread is done.
    busy: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    ready_at: float = 0.0
    crashes: int = 0
    retry_at: float = 0.0
    # The weight cache key its processes share (see weights_cache.py); None until fetched.
    weights_key: str | None = None
    # Health checks run on their own short threads; the pass only reads what they found.
    checking: bool = False
    checked_at: float = 0.0
    # Why the replica asked to be replaced, until the replacement serves or fails.
    recycle: str | None = None
    recycle_after: float = 0.0


@dataclass
class _Pass:
    """What one pass decided to do once its transaction has committed."""

    launches: list[_Launch] = field(default_factory=list)
    stops: list[tuple[_Managed, bool]] = field(default_factory=list)
    recycles: list[_Launch] = field(default_factory=list)
    checks: list[_Managed] = field(default_factory=list)


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
        health_interval: float = recycle.HEALTH_INTERVAL,
    ) -> None:
        self.settings = settings
        self.fetch_retry_seconds = fetch_retry_seconds
        self.sessions = session_factory
        self.s3_client_factory = s3_client_factory
        self.process_cls = process_cls
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.heartbeat_interval = heartbeat_interval
        self.health_interval = health_interval
        self.cache_dir = settings.data_dir / "cache" / "model-data"
        self.weights_dir = settings.data_dir / "cache" / "weights"
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
            # Weight files of an earlier run: no replica of ours maps them any more.
            prune(self.weights_dir, ())
            self._recovered = True

        todo = _Pass()
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
                    self._converge(replica, variant, now, todo)
                for replica_id, managed in list(self._managed.items()):
                    if replica_id not in seen:
                        self._forget(managed, todo.stops)
        # Threads start only after the commit, so their writes never race the pass's own.
        for launch in todo.launches:
            self._spawn_thread(launch.managed, "start", self._start_replica, launch)
        for managed, write_state in todo.stops:
            self._spawn_thread(managed, "stop", self._stop_replica, managed, write_state)
        for launch in todo.recycles:
            self._spawn_thread(launch.managed, "recycle", self._recycle_replica, launch)
        for managed in todo.checks:
            # Not the managed thread: a check must never hold up a start, stop or shutdown.
            threading.Thread(
                target=self._check_health, args=(managed,), name=f"replica-{managed.replica_id}-health", daemon=True
            ).start()

    def _converge(self, replica: Replica, variant: EndpointVariant, now: float, todo: _Pass) -> None:
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
                    todo.stops.append((managed, True))
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
                elif managed.recycle is not None and now >= managed.recycle_after:
                    managed.busy = True
                    managed.phase = "recycling"
                    todo.recycles.append(self._launch(managed, replica, variant))
                elif not managed.checking and now - managed.checked_at >= self.health_interval:
                    managed.checking = True
                    managed.checked_at = now
                    todo.checks.append(managed)
                return
            if managed.phase == "backoff":
                if now >= managed.retry_at:
                    # The row already says Starting (and counted the restart) since the crash.
                    fresh = _Managed(replica.id, crashes=managed.crashes)
                    self._managed[replica.id] = fresh
                    todo.launches.append(self._launch(fresh, replica, variant))
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
        todo.launches.append(self._launch(managed, replica, variant))

    def _launch(self, managed: _Managed, replica: Replica, variant: EndpointVariant) -> _Launch:
        return _Launch(managed, dict(variant.container or {}), self._timeout_for(variant), _neuron(replica))

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
            append_log(
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
        weights_key: str | None = None,
    ) -> dict[str, str]:
        """Return the environment a replica runs with: the container's Environment over SageMaker defaults."""
        return replica_environment(
            self.settings, container, model_dir, replica_id, neuron_assignment, weights_key, self.weights_dir
        )

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
            model_dir, digest = self._fetch_with_retry(str(url), rdir / "model", managed.cancel)
            managed.weights_key = weights_key(digest, launch.container.get("Environment"))
            if managed.cancel.is_set():
                managed.phase = "cancelled"
                return
            misfit = neuron.check_fit(model_dir, launch.neuron)
            if misfit is not None:
                append_log(log_path, misfit)
                raise ReplicaStartError(misfit)
            proc = self.process_cls(
                rid,
                model_dir,
                log_path,
                self.replica_env(launch.container, model_dir, rid, launch.neuron, managed.weights_key),
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
            append_log(log_path, f"neurondock: {exc.message}")
            self._fail(managed, exc.message, read_tail(log_path))
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
            append_log(log_path, f"neurondock: {reason}")
            self._fail(managed, reason, read_tail(log_path))
        finally:
            managed.busy = False

    def _check_health(self, managed: _Managed) -> None:
        try:
            proc = managed.proc
            health = proc.health() if proc is not None else None
            reason = (health or {}).get("recycle")
            if reason and managed.recycle is None and managed.phase == "ready":
                logger.info("replica %s asks to be recycled: %s", managed.replica_id, reason)
                managed.recycle = str(reason)
        finally:
            managed.checking = False

    def _recycle_replica(self, launch: _Launch) -> None:
        """Start a replacement, switch the row to it once ready, then drain and stop the old process."""
        managed = launch.managed
        old, reason = managed.proc, managed.recycle or "asked to be recycled"
        handed_back = False

        def switched(new: ReplicaProcess) -> None:
            # Supervised again from here on (crashes, stops); the old process only has to go quietly.
            nonlocal handed_back
            managed.proc, managed.ready_at, managed.recycle = new, time.monotonic(), None
            managed.phase, managed.busy, handed_back = "ready", False, True

        try:
            if old is None:
                return
            env = self.replica_env(launch.container, old.model_dir, old.replica_id, launch.neuron, managed.weights_key)
            new = self.process_cls(old.replica_id, old.model_dir, old.log_path, env, bind=self.settings.host_address)
            replaced = recycle.replace(
                old,
                new,
                self.sessions,
                reason=reason,
                startup_timeout=launch.startup_timeout,
                stop_grace=self.stop_grace,
                cancel=managed.cancel,
                on_switch=switched,
            )
            if not replaced:
                managed.recycle_after = time.monotonic() + recycle.RETRY_SECONDS
        except Exception as exc:
            if not isinstance(exc, ReplicaStartError):
                logger.exception("recycling replica %s failed", managed.replica_id)
            if not handed_back:
                managed.recycle = None
                managed.recycle_after = time.monotonic() + recycle.RETRY_SECONDS
        finally:
            if not handed_back:
                if managed.cancel.is_set():
                    # A stop or delete cancelled the replacement; the pass now ends the old process itself.
                    managed.cancel = threading.Event()
                managed.phase, managed.busy = "ready", False

    def _fetch_with_retry(self, url: str, dest: Path, cancel: threading.Event) -> tuple[Path, str]:
        """Fetch model data and its digest, riding out a store that is briefly unreachable (an API restart)."""
        deadline = time.monotonic() + self.fetch_retry_seconds
        delay = 0.1
        while True:
            try:
                return fetch_model(self._s3_client(), url, self.cache_dir, dest=dest)
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
                keep = {m.weights_key for m in self._managed.values() if m.weights_key}
            managed.phase = "stopped"
            managed.busy = False
        # The last replica of an artifact is gone: so is the reason to keep its weights file.
        prune(self.weights_dir, keep)

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
        with session_scope(self.sessions) as session:
            host.record_heartbeat(session, self.settings, self._started_at, first=not self._registered)
        self._registered = True
        self._last_heartbeat = time.monotonic()

    def _kill_stale_processes(self) -> None:
        with session_scope(self.sessions) as session:
            rows = host.replica_pids(session, self.settings.host_id)
        for replica_id, pid in rows:
            model_dir = replica_dir(self.settings, replica_id) / "model"
            if self.process_cls.kill_stale(pid, model_dir, self.stop_grace):
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
        if settings.standby_pool_size > 0:
            pool = StandbyPool(
                agent.replica_env({}, settings.replicas_dir, 0), settings.replicas_dir, size=settings.standby_pool_size
            )
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
