"""The host agent: keep this host's replica processes in line with its ``Replica`` rows.

The reconciler writes desired state (``desired_state`` running/stopped); the agent observes and
reports actual state (``state``, ``address``, ``pid``, ``failure_reason``, ``log_tail``). Each
``step()`` is one idempotent pass; slow work (download, model load, graceful stop) runs on a
background thread per replica so one slow model never holds up the others. Replica processes belong
to the agent, not to a request or a task, and every touch of one goes through ``ReplicaProcess``.

Longer than most modules on purpose: it is one state machine over ``_Managed`` records under one
lock, and its pass, start, recycle, health and stop paths all move the same records; split, that
lock's invariants would be spread over several files. What is not that state machine lives beside
it: what a replica is built from (``launcher.py``), its process (``process.py``), recycling
(``recycle.py``), model data (``artifacts.py``) and the host's record (``host.py``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import database_gate, wakeup
from neurondock_platform.config import Settings
from neurondock_platform.db import make_engine, make_sessionmaker, session_scope, utcnow
from neurondock_platform.models import Account, Endpoint, EndpointVariant, Replica, ReplicaState
from neurondock_workers import sandbox as sandboxing
from neurondock_workers.hosting import artifacts, host, neuron, recycle
from neurondock_workers.hosting.artifacts import ModelDataError, ObjectStore
from neurondock_workers.hosting.host import AgentConflictError
from neurondock_workers.hosting.launcher import ReplicaLauncher
from neurondock_workers.hosting.process import (
    DEFAULT_STOP_GRACE,
    ReplicaProcess,
    ReplicaStartError,
    append_log,
    read_tail,
)
from neurondock_workers.hosting.replica import EXIT_TIMED_OUT, describe_exception, timeout_grace
from neurondock_workers.hosting.s3 import ModelStores, OwnerClients, StoreOwner
from neurondock_workers.hosting.standby import StandbyPool
from neurondock_workers.hosting.utilization import InstanceUsage
from neurondock_workers.hosting.weights_cache import prune, weights_key
from neurondock_workers.sandbox import Sandbox

logger = logging.getLogger(__name__)

# ReplicaProcess and the errors live in their own modules; importing them from here keeps working.
__all__ = [
    "AgentConflictError",
    "AgentRun",
    "HostAgent",
    "ReplicaProcess",
    "ReplicaStartError",
    "replica_dir",
    "run_agent",
]

DESIRED_RUNNING = "running"
DESIRED_STOPPED = "stopped"
# Model load can be slow for big models; a variant may set its own limit like SageMaker's.
DEFAULT_STARTUP_TIMEOUT = 300.0
STARTUP_TIMEOUT_KEY = "ContainerStartupHealthCheckTimeoutInSeconds"
HEARTBEAT_INTERVAL = 1.0
# ... and at most this often: four beats fit in the default 15 s heartbeat timeout.
HEARTBEAT_INTERVAL_MAX = 5.0
# An idle replica (no request since its last health answer) is checked this many times less often.
IDLE_HEALTH_FACTOR = 10
# The longest an idle agent waits without looking at its stop event: a backstop only, since whoever
# sets it also rings (``wake``; run_agent's signal handler does both), which ends the wait at once.
STOP_SLICE = 5.0
# A replica that stays up this long has recovered; its next crash restarts without delay again.
STABLE_SECONDS = 60.0
MAX_RESTART_DELAY = 30.0


def replica_dir(settings: Settings, replica_id: int) -> Path:
    """Return the directory holding one replica's ``replica.log``."""
    return settings.replicas_dir / str(replica_id)


def host_dir(settings: Settings) -> Path:
    """Return this host's own working directory: unpacked artifacts, shared weights, sandbox slots.

    Per host id, so agents that share one data directory (hosts simulated on one machine) never
    clean up each other's files.
    """
    return settings.data_dir / "hosts" / re.sub(r"[^A-Za-z0-9._-]", "_", settings.host_id)


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
    # The unpacked artifact it runs (artifacts.fetch_model's digest); None until fetched.
    digest: str | None = None
    # Health checks run on their own short threads; the pass only reads what they found.
    checking: bool = False
    checked_at: float = 0.0
    # The request count of the last health answer, and whether the replica was idle across two answers.
    requests_seen: int = -1
    idle: bool = False
    # Why the replica asked to be replaced, until the replacement serves or fails.
    recycle: str | None = None
    # Since when its health checks have gone unanswered while its process lives (0: they are answered).
    unhealthy_since: float = 0.0
    recycle_after: float = 0.0


@dataclass
class _Pass:
    """What one pass decided to do once its transaction has committed."""

    launches: list[_Launch] = field(default_factory=list)
    stops: list[tuple[_Managed, bool]] = field(default_factory=list)
    recycles: list[_Launch] = field(default_factory=list)
    checks: list[_Managed] = field(default_factory=list)
    # Whether the pass heartbeats: idle replicas' checks due before the next beat come along (``_check_due``).
    beat: bool = False


@dataclass
class _Launch:
    managed: _Managed
    container: dict[str, Any]
    startup_timeout: float
    # The NeuronCores and chips the reconciler gave this replica (empty off Inferentia).
    neuron: dict[str, Any] = field(default_factory=dict)
    # Whose model it is: an admin account's model may run unsandboxed where the sandbox cannot start.
    account_id: str = ""
    trusted: bool = False
    instance_type: str = ""
    # The model's execution role: its data is downloaded with its account's own credentials for it.
    role_arn: str | None = None

    @property
    def owner(self) -> StoreOwner:
        return StoreOwner(self.account_id, self.role_arn)


class HostAgent:
    """Runs the replica processes the database assigns to this host."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        stores: Callable[[StoreOwner], ObjectStore],
        *,
        process_cls: type[ReplicaProcess] = ReplicaProcess,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_grace: float = DEFAULT_STOP_GRACE,
        heartbeat_interval: float | None = None,
        fetch_retry_seconds: float = 60.0,
        health_interval: float = recycle.HEALTH_INTERVAL,
        sandbox: Sandbox | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        # When to heartbeat, health-check, retry a crashed or recycling replica: tests pass a fake clock.
        self.clock = clock
        # How user code runs on this host (probed once per process; docs/sandbox.md).
        self.sandbox = sandbox if sandbox is not None else sandboxing.for_settings(settings)
        self.sessions = session_factory
        self.process_cls = process_cls
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        # An idle host writes its heartbeat a few times per heartbeat timeout, not every second.
        self.heartbeat_interval = (
            heartbeat_interval
            if heartbeat_interval is not None
            else max(HEARTBEAT_INTERVAL, min(HEARTBEAT_INTERVAL_MAX, settings.heartbeat_timeout / 4))
        )
        self.health_interval = health_interval
        self.host_dir = host_dir(settings)
        # What starts: model data fetched as its owner, the sandboxed process and its environment.
        self.launcher = ReplicaLauncher(
            settings,
            self.sandbox,
            stores,
            self.host_dir,
            process_cls=process_cls,
            fetch_retry_seconds=fetch_retry_seconds,
        )
        self.cache_dir = self.launcher.cache_dir
        self.weights_dir = self.launcher.weights_dir
        self.slots_dir = self.launcher.slots_dir
        self._managed: dict[int, _Managed] = {}
        self._lock = threading.Lock()
        self._bell: wakeup.Doorbell | None = None
        self._started_at = utcnow()
        self._registered = False
        self._recovered = False
        # The slots an earlier run left, when this run starts standbys before it recovers (None: all of them).
        self._earlier_slots: list[Path] | None = None
        self._last_heartbeat = 0.0
        # When the last full pass (one that reads this host's replica rows) ran.
        self._last_full = 0.0

    # --- the pass ---------------------------------------------------------------------------------

    def step(self) -> None:
        """Make one idempotent pass: heartbeat, then converge every replica of this host."""
        now = self._last_full = self.clock()
        beat = not self._registered or now - self._last_heartbeat >= self.heartbeat_interval
        if beat:
            self.heartbeat()
        if not self._recovered:
            self.recover()

        todo = _Pass(beat=beat)
        with session_scope(self.sessions) as session:
            rows = session.execute(
                select(Replica, EndpointVariant, Endpoint.account_id, Account.is_admin)
                .join(EndpointVariant, Replica.variant_id == EndpointVariant.id)
                .join(Endpoint, Replica.endpoint_id == Endpoint.id)
                .outerjoin(Account, Endpoint.account_id == Account.id)
                .where(Replica.host_id == self.settings.host_id)
                .order_by(Replica.id)
            ).all()
            seen = set()
            with self._lock:
                for replica, variant, account_id, is_admin in rows:
                    seen.add(replica.id)
                    self._converge(replica, variant, now, todo, (account_id, bool(is_admin)))
                for replica_id, managed in list(self._managed.items()):
                    if replica_id not in seen:
                        self._forget(managed, todo.stops)
                todo.checks += self._idle_companions(todo.checks, now)
        # Threads start only after the commit, so their writes never race the pass's own.
        for launch in todo.launches:
            self._spawn_thread(launch.managed, "start", self._start_replica, launch)
        for managed, write_state in todo.stops:
            self._spawn_thread(managed, "stop", self._stop_replica, managed, write_state)
        for launch in todo.recycles:
            self._spawn_thread(launch.managed, "recycle", self._recycle_replica, launch)
        self._start_checks(todo.checks)

    def tend(self) -> None:
        """The timed part of a pass alone: heartbeat and the health checks that are due, no replica rows read.

        An idle agent's wake-ups for a heartbeat or a health check run this; anything a check finds
        that needs a pass rings the doorbell (``_check_health``).
        """
        now = self.clock()
        beat = now - self._last_heartbeat >= self.heartbeat_interval
        if beat:
            self.heartbeat()
        with self._lock:
            checks = [
                m for m in self._managed.values() if m.phase == "ready" and not m.busy and self._check_due(m, now, beat)
            ]
            checks += self._idle_companions(checks, now)
        self._start_checks(checks)

    def _check_due(self, managed: _Managed, now: float, beat: bool = False) -> bool:
        """Whether a ready replica's health check is due; if so, it is marked as running from ``now``.

        On a wake-up that heartbeats (``beat``), an idle replica whose check falls due before the next
        beat is checked now: early, never late, and its check needs no wake-up of its own. Idle checks
        of every replica then land on the same beats and run on one thread (``_start_checks``).
        """
        every = self._health_every(managed)
        ahead = min(self.heartbeat_interval, every) if beat and managed.idle else 0.0
        if managed.checking or now + ahead - managed.checked_at < every:
            return False
        managed.checking, managed.checked_at = True, now
        return True

    def _idle_companions(self, checks: list[_Managed], now: float) -> list[_Managed]:
        """When idle replicas are checked now anyway, the others whose check would come on the next beat.

        Checked a beat early, they join this beat's thread, and from then on every idle replica's
        check falls on the same beats: one thread and one wake-up of the agent's checks every other
        beat, instead of replicas checked on alternate beats keeping every beat busy. Marked running.
        """
        if not any(m.idle for m in checks):
            return []
        horizon = now + 2 * self.heartbeat_interval
        companions = [
            m
            for m in self._managed.values()
            if m.phase == "ready"
            and m.idle
            and not m.busy
            and not m.checking
            and horizon - m.checked_at >= self._health_every(m)
        ]
        for managed in companions:
            managed.checking, managed.checked_at = True, now
        return companions

    def _start_checks(self, checks: list[_Managed]) -> None:
        # Not the managed thread: a check must never hold up a start, stop or shutdown. A serving
        # replica gets a thread of its own (one that hangs must not delay another's check); idle ones,
        # checked together on a heartbeat's wake-up, share one.
        idle = [m for m in checks if m.idle]
        for managed in checks:
            if not managed.idle:
                threading.Thread(
                    target=self._check_health, args=(managed,), name=f"replica-{managed.replica_id}-health", daemon=True
                ).start()
        if idle:
            threading.Thread(target=self._check_each, args=(idle,), name="idle-replicas-health", daemon=True).start()

    def _check_each(self, checks: list[_Managed]) -> None:
        for managed in checks:
            try:
                self._check_health(managed)
            except Exception:
                # Each check clears its own ``checking``; one that failed must not skip the rest.
                logger.exception("health check of replica %s failed", managed.replica_id)

    def recover(self) -> None:
        """Clean up after an earlier agent run: stale replica processes, then their files.

        Runs before this agent starts any interpreter (the first pass calls it; ``run_agent`` calls
        it before its passes; standbys that ``AgentRun.prepare`` started already keep their slots).
        """
        if self._recovered:
            return
        self._kill_stale_processes()
        # Files of an earlier run: no replica of ours maps or reads them any more.
        prune(self.weights_dir, ())
        artifacts.prune(self.cache_dir, ())
        if self._earlier_slots is None:
            shutil.rmtree(self.slots_dir, ignore_errors=True)
        else:
            # Standbys of this run started before it registered (``note_earlier_slots``): theirs stay.
            for slot in self._earlier_slots:
                shutil.rmtree(slot, ignore_errors=True)
        self._remove_legacy_copies()
        self._recovered = True

    def note_earlier_slots(self) -> None:
        """Remember the sandbox slots an earlier run left, before this run starts any: ``recover`` removes those."""
        try:
            self._earlier_slots = list(self.slots_dir.iterdir())
        except FileNotFoundError:
            self._earlier_slots = []

    def _converge(
        self, replica: Replica, variant: EndpointVariant, now: float, todo: _Pass, owner: tuple[str, bool]
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
                    todo.recycles.append(self._launch(managed, replica, variant, owner))
                elif self._check_due(managed, now, todo.beat):
                    todo.checks.append(managed)
                return
            if managed.phase == "backoff":
                if now >= managed.retry_at:
                    # The row already says Starting (and counted the restart) since the crash.
                    fresh = _Managed(replica.id, crashes=managed.crashes)
                    self._managed[replica.id] = fresh
                    todo.launches.append(self._launch(fresh, replica, variant, owner))
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
        todo.launches.append(self._launch(managed, replica, variant, owner))

    def _launch(
        self, managed: _Managed, replica: Replica, variant: EndpointVariant, owner: tuple[str, bool]
    ) -> _Launch:
        return _Launch(
            managed,
            dict(variant.container or {}),
            self._timeout_for(variant),
            _neuron(replica),
            account_id=owner[0],
            trusted=owner[1],
            role_arn=(variant.container or {}).get("ExecutionRoleArn"),
            instance_type=variant.instance_type,
        )

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
            managed.proc.discard()
            why = (
                "a model execution ran past the model timeout, so the replica was recycled"
                if code == EXIT_TIMED_OUT
                else f"replica process exited with code {code}"
            )
            append_log(managed.proc.log_path, f"neurondock: {why}; restarting")

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
            if managed.proc is not None:
                managed.proc.discard()
            self._prune_unused()

    def _timeout_for(self, variant: EndpointVariant) -> float:
        value = (variant.extra or {}).get(STARTUP_TIMEOUT_KEY)
        try:
            return float(value) if value else self.startup_timeout
        except (TypeError, ValueError):
            return self.startup_timeout

    def _spawn_thread(self, managed: _Managed, kind: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"replica-{managed.replica_id}-{kind}", daemon=True)
        managed.thread = thread
        thread.start()

    # --- background work --------------------------------------------------------------------------

    def _process_for(self, launch: _Launch, model_dir: Path, log_path: Path) -> ReplicaProcess:
        return self.launcher.process(
            launch.managed.replica_id,
            launch.container,
            launch.neuron,
            instance_type=launch.instance_type,
            trusted=launch.trusted,
            model_dir=model_dir,
            log_path=log_path,
            weights=launch.managed.weights_key,
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
            # The interpreter first: a cold one imports torch while the model data downloads.
            head = self.launcher.head_start(
                rid, launch.container, launch.neuron, trusted=launch.trusted, log_path=log_path
            )
            try:
                model_dir, digest = self.launcher.fetch(launch.owner, str(url), managed.cancel)
                managed.digest = digest
                managed.weights_key = weights_key(digest, launch.container.get("Environment"), launch.account_id)
                if managed.cancel.is_set():
                    managed.phase = "cancelled"
                    return
                misfit = neuron.check_fit(model_dir, launch.neuron)
                if misfit is not None:
                    append_log(log_path, misfit)
                    raise ReplicaStartError(misfit)
                proc = self._process_for(launch, model_dir, log_path)
                managed.proc = proc
                pid = proc.start(head)
            finally:
                if head is not None:
                    # A failed fetch, a misfit or a cancel: no interpreter, slot or pool count is left behind.
                    head.abandon()
            self._update(rid, pid=pid)
            address = proc.wait_ready(launch.startup_timeout, managed.cancel)
            if address is None or not self._update(
                rid,
                require_running=True,
                state=ReplicaState.READY,
                address=address,
                channel_key=proc.channel_key,
                pid=pid,
                setup_seconds=round(time.monotonic() - started, 3),
                failure_reason=None,
                log_tail=None,
            ):
                proc.terminate(self.stop_grace)
                managed.phase = "cancelled"
                return
            managed.ready_at = self.clock()
            managed.phase = "ready"
            logger.info("replica %s ready at %s in %.2fs", rid, address, time.monotonic() - started)
        except ModelDataError as exc:
            append_log(log_path, f"neurondock: {exc.message}")
            self._fail(managed, exc.message, read_tail(log_path))
        except ReplicaStartError as exc:
            tail = proc.log_tail() if proc is not None else ""
            if proc is not None:
                proc.terminate(self.stop_grace)
            else:
                append_log(log_path, f"neurondock: {exc}")
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

    def _health_every(self, managed: _Managed) -> float:
        """Seconds between health checks: ten times longer for a replica that served nothing since the last one.

        Memory grows and executions hang only with requests; a new request is noticed at the next
        check, so an idle replica costs its host a check at most every 10 s (on a heartbeat's wake-up
        when one comes before: ``_check_due``), not every second.
        """
        return self.health_interval * (IDLE_HEALTH_FACTOR if managed.idle else 1)

    def _check_health(self, managed: _Managed) -> None:
        try:
            proc = managed.proc
            health = proc.health() if proc is not None else None
            requests = int((health or {}).get("requests", -1))
            managed.idle = health is not None and not health.get("inflight") and requests == managed.requests_seen
            managed.requests_seen = requests
            if health is None and proc is not None and proc.alive():
                self._unresponsive(managed, proc)
            else:
                managed.unhealthy_since = 0.0
            reason = (health or {}).get("recycle")
            if reason and managed.recycle is None and managed.phase == "ready":
                logger.info("replica %s asks to be recycled: %s", managed.replica_id, reason)
                managed.recycle = str(reason)
                self.wake()  # the next pass starts its replacement
        finally:
            managed.checking = False

    def _unresponsive(self, managed: _Managed, proc: ReplicaProcess) -> None:
        # A hang that holds the GIL freezes the replica's own watchdog and its event loop alike: past
        # the model timeout (and the watchdog's grace) without a health answer, the agent ends it, and
        # the next pass restarts it like any crash.
        now = time.monotonic()
        managed.unhealthy_since = managed.unhealthy_since or now
        limit = self.settings.model_timeout + timeout_grace(self.settings.model_timeout) + self.health_interval
        if now - managed.unhealthy_since > limit:
            append_log(
                proc.log_path,
                f"neurondock: the replica has not answered its health check for {now - managed.unhealthy_since:.0f} s, "
                f"past the model timeout of {self.settings.model_timeout:g} s; ending it",
            )
            proc.kill()

    def _recycle_replica(self, launch: _Launch) -> None:
        """Start a replacement, switch the row to it once ready, then drain and stop the old process."""
        managed = launch.managed
        old, reason = managed.proc, managed.recycle or "asked to be recycled"
        handed_back = False

        def switched(new: ReplicaProcess) -> None:
            # Supervised again from here on (crashes, stops); the old process only has to go quietly.
            nonlocal handed_back
            managed.proc, managed.ready_at, managed.recycle = new, self.clock(), None
            managed.phase, managed.busy, handed_back = "ready", False, True

        try:
            if old is None:
                return
            new = self._process_for(launch, old.model_dir, old.log_path)
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
                managed.recycle_after = self.clock() + recycle.RETRY_SECONDS
        except Exception as exc:
            if not isinstance(exc, ReplicaStartError):
                logger.exception("recycling replica %s failed", managed.replica_id)
            if not handed_back:
                managed.recycle = None
                managed.recycle_after = self.clock() + recycle.RETRY_SECONDS
        finally:
            if not handed_back:
                if managed.cancel.is_set():
                    # A stop or delete cancelled the replacement; the pass now ends the old process itself.
                    managed.cancel = threading.Event()
                managed.phase, managed.busy = "ready", False

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
        finally:
            with self._lock:
                if self._managed.get(managed.replica_id) is managed:
                    del self._managed[managed.replica_id]
            managed.phase = "stopped"
            managed.busy = False
        self._prune_unused()

    def _prune_unused(self) -> None:
        """Delete unpacked artifacts and weights files no replica of this host uses any more."""
        with self._lock:
            managed = list(self._managed.values())
        if any(m.phase == "starting" and m.digest is None for m in managed):
            return  # a fetch in flight: its artifact is not in the keep list yet; the next stop prunes
        artifacts.prune(self.cache_dir, {m.digest for m in managed if m.digest})
        # The last replica of an artifact is gone: so is the reason to keep its weights file.
        prune(self.weights_dir, {m.weights_key for m in managed if m.weights_key})

    def _remove_legacy_copies(self) -> None:
        # Agents before one-unpack-per-host unpacked a copy per replica and into a shared cache.
        if self.settings.replicas_dir.is_dir():
            for rdir in self.settings.replicas_dir.iterdir():
                shutil.rmtree(rdir / "model", ignore_errors=True)
        for legacy in ("model-data", "weights"):
            shutil.rmtree(self.settings.data_dir / "cache" / legacy, ignore_errors=True)

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
        """Register this host (its capacity and sandbox status), then refresh its heartbeat."""
        with session_scope(self.sessions) as session:
            if not (self._registered and host.beat(session, self.settings.host_id)):
                record = host.record_heartbeat(session, self.settings, self._started_at, first=not self._registered)
                record.sandbox = self.sandbox.status()
        self._registered = True
        self._last_heartbeat = self.clock()

    def _kill_stale_processes(self) -> None:
        with session_scope(self.sessions) as session:
            rows = host.replica_pids(session, self.settings.host_id)
        for replica_id, pid in rows:
            if self.process_cls.kill_stale(pid, replica_dir(self.settings, replica_id), self.stop_grace):
                logger.info("killed stale replica %s (pid %s) from an earlier agent run", replica_id, pid)

    # --- lifecycle --------------------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        """Step until ``stop_event`` is set, then shut down.

        Every ``agent_poll_interval`` while a replica is starting, stopping, recycling, backing off
        or being checked; otherwise every ``agent_idle_poll_interval``, or at once when the doorbell
        rings (replica rows changed, a child exited, a stop was asked: ``wake``). Set ``stop_event``
        and then call ``wake``, so the agent stops at once rather than within ``STOP_SLICE``.
        """
        bell = self._bell = wakeup.Doorbell(wakeup.bells_dir(self.settings.data_dir, wakeup.AGENTS))
        rung = True
        try:
            while not stop_event.is_set():
                try:
                    if rung or self._pass_due():
                        self.step()
                    else:
                        self.tend()
                except Exception:
                    # A database blip must not take the replicas down with the agent.
                    logger.exception("host agent pass failed; trying again")
                deadline, rung = time.monotonic() + self._pause(), False
                # In slices, so that a stop_event set without a ring is still seen within one (a backstop).
                while not stop_event.is_set() and (left := deadline - time.monotonic()) > 0:
                    if bell.wait(min(left, STOP_SLICE)):
                        rung = True
                        break
        finally:
            self._bell = None
            bell.close()
            # Within the supervisor's stop budget, leaving it time for the row updates and the exit.
            self.shutdown(max(1.0, self.settings.stop_timeout - 2.0))

    def _pause(self) -> float:
        with self._lock:
            managed = list(self._managed.values())
        if any(m.busy or m.phase not in ("ready", "failed") for m in managed):
            return self.settings.agent_poll_interval
        # Idle: the next full pass, heartbeat, health check or recycle retry, whichever comes first.
        now = self.clock()
        due = [self._last_full + self.settings.agent_idle_poll_interval, self._last_heartbeat + self.heartbeat_interval]
        due += [m.checked_at + self._health_every(m) for m in managed if m.phase == "ready"]
        due += [m.recycle_after for m in managed if m.recycle is not None]
        return max(self.settings.agent_poll_interval, min(due) - now)

    def _pass_due(self) -> bool:
        """Whether the next wake-up needs a full pass (rows read), not only ``tend``."""
        now = self.clock()
        # A wake-up that heartbeats takes the full pass due before the next beat along: early, never
        # late, and the full pass needs no wake-up of its own (the idle poll is a backstop on SQLite).
        ahead = self.heartbeat_interval if now - self._last_heartbeat >= self.heartbeat_interval else 0.0
        if now + ahead - self._last_full >= self.settings.agent_idle_poll_interval:
            return True
        with self._lock:
            return any(
                m.busy
                or m.phase not in ("ready", "failed")
                or (m.phase == "ready" and (m.proc is None or not m.proc.alive()))
                or (m.recycle is not None and now >= m.recycle_after)
                for m in self._managed.values()
            )

    def wake(self) -> None:
        """Cut the wait before the next pass short (safe from a signal handler)."""
        bell = self._bell
        if bell is not None:
            bell.ring()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop every replica process this agent runs and mark their rows Pending for the next run.

        With ``timeout``, replicas get that long (less a second) to drain before SIGKILL, all at once.
        """
        grace = self.stop_grace if timeout is None else max(0.5, timeout - 1.0)
        if ReplicaProcess.standby_pool is not None:
            # First: the last replica stopping would otherwise refill the pool on the way out.
            ReplicaProcess.standby_pool.close()
        with self._lock:
            items = list(self._managed.values())
            self._managed.clear()
        for managed in items:
            managed.cancel.set()
        stoppers = []
        for managed in items:
            proc = managed.proc
            if proc is not None and proc.alive():
                thread = threading.Thread(target=proc.terminate, args=(grace,), daemon=True)
                thread.start()
                stoppers.append(thread)
        limit = self.stop_grace + 10.0 if timeout is None else timeout
        deadline = time.monotonic() + limit
        for thread in stoppers + [m.thread for m in items if m.thread is not None]:
            thread.join(max(0.0, deadline - time.monotonic()))
        for managed in items:
            # A start thread may have spawned its process after the sweep above.
            if managed.proc is not None and managed.proc.alive():
                managed.proc.terminate(self.stop_grace if timeout is None else 0.0)
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


class AgentRun:
    """One run of this host's agent, in phases its process drives: ``prepare``, ``serve``, ``close``.

    ``run_agent`` drives them in a process of its own; the host process (``neurondock_workers host``)
    drives them on a thread beside its Celery worker. ``request_stop`` and ``wake`` are safe from a
    signal handler.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.agent: HostAgent | None = None
        self.stores: ModelStores | None = None
        self.engine = make_engine(settings.database_url)

    def prepare(self) -> None:
        """Everything before the database is needed: imports, clients, the sandbox probe, the standby."""
        settings = self.settings
        settings.replicas_dir.mkdir(parents=True, exist_ok=True)
        sessions = make_sessionmaker(self.engine)
        # Replica rows this agent reports (Ready, Failed …) wake the API's routing table at once.
        wakeup.install(sessions, settings.data_dir)
        clients = OwnerClients(settings, sessions, session_name=f"neurondock-agent-{settings.host_id}")
        # Model data is read with the owner's keys by a client of the host process's own, without
        # botocore (hosting/s3.py).
        stores = self.stores = ModelStores(clients.keys)
        agent = self.agent = HostAgent(settings, sessions, stores)
        logger.info("user code sandbox: %s", agent.sandbox.describe())
        if settings.standby_pool_size > 0:
            # The standby's torch import needs no database: it runs beside the migrations and the other
            # children's imports, not after them, and the first replica finds it warm (docs/runtime.md).
            # What an earlier run left is cleaned up only once this agent has registered (``serve``):
            # another live agent on this host id may own it.
            agent.note_earlier_slots()
            pool = StandbyPool(
                agent.launcher.environment({}, settings.replicas_dir, 0),
                settings.replicas_dir,
                size=settings.standby_pool_size,
                while_serving=settings.standby_while_serving,
                sandbox=agent.sandbox,
                slots_dir=agent.slots_dir,
            )
            ReplicaProcess.standby_pool = pool
            pool.fill()

    def serve(self) -> None:
        """Register, recover and run until ``request_stop``; then stop the replicas (database ready)."""
        agent, settings = self.agent, self.settings
        assert agent is not None, "prepare() first"
        # Register first (a second live agent on this host id is refused), then clean up.
        agent.heartbeat()
        agent.recover()
        logger.info("host agent %s running (pid %s)", settings.host_id, os.getpid())
        # SageMaker's instance metrics (CPU, memory), from this host's replica processes.
        usage = InstanceUsage(
            make_sessionmaker(self.engine), settings.host_id, agent.managed_pids, settings.metrics_flush_seconds
        )
        threading.Thread(target=usage.run, args=(self.stop,), name="instance-usage", daemon=True).start()
        agent.run(self.stop)

    def request_stop(self) -> None:
        """Ask ``serve`` to stop its replicas and return (a stop asked before ``serve`` makes it return at once)."""
        self.stop.set()
        self.wake()

    def wake(self) -> None:
        """Have the agent look at its replicas now (one of its processes exited, or a stop was asked)."""
        if self.agent is not None:
            self.agent.wake()

    def close(self) -> None:
        """Let the standby interpreters go and close the database connections."""
        if ReplicaProcess.standby_pool is not None:
            ReplicaProcess.standby_pool.close()
            ReplicaProcess.standby_pool = None
        if self.stores is not None:
            # A download still in flight ends now, not after the host's stop budget.
            self.stores.close()
        self.engine.dispose()


def run_agent(settings: Settings, *, gate: int | None = None) -> None:
    """Run this host's agent in this process until SIGTERM or SIGINT, then stop its replicas cleanly.

    With ``gate`` (``up`` starts the agent beside its migrations) it imports and probes its sandbox
    first and touches the database only once the gate opens (database_gate).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = AgentRun(settings)

    def _on_signal(signum: int, frame: Any) -> None:
        # A stop, or a replica process that exited (SIGCHLD): act now, not at the next idle pass.
        if signum == signal.SIGCHLD:
            run.wake()
        else:
            run.request_stop()

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
    previous = {sig: signal.signal(sig, _on_signal) for sig in signals}
    try:
        run.prepare()
        database_gate.wait(gate)
        run.serve()
    finally:
        run.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    run_agent(Settings.from_env())
