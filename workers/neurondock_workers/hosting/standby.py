"""Replica interpreters: started before their replica is known, in the sandbox, then activated.

Every replica process starts the same way. The agent spawns an interpreter —
``python -m neurondock_workers.hosting.standby --control-fd N``, inside the host's sandbox
(``neurondock_workers/sandbox.py``) — that says hello on its control socket (the kernel stamps the
message with the sender's pid as the agent sees it, which is how the agent learns the pid of a
process inside a pid namespace), imports torch and the serving modules, and says ready. Activation
then sends it one message — argv, environment, channel key, limits — with two descriptors, the
replica log and the listening socket the agent bound for it, and it becomes that replica. A
replica's interpreter is acquired before its model data is fetched (``process.HeadStart``): a warm
start takes one spawned earlier, a cold start spawns one then, which imports torch while the data
downloads; either is activated once the data is there and fits the replica's NeuronCores, or
killed (its slot removed) when the fetch fails or the start is cancelled.

A sandboxed interpreter sees its own *slot*, a directory the agent made for it before it knew which
replica it would serve: ``<slot>/model`` shows read-only at ``/opt/ml/model`` and ``<slot>/weights``
writable at ``/opt/ml/weights``. Activation fills the slot from the host side (hard links to the
artifact's one unpacked copy and to its shared weights file; see ``hosting/slots.py``), which the
sandbox sees at once because a bind mount is the same directory. A fork-from-zygote design fits the
same contract: the forked child would enter a slot the same way.

Importing torch is most of a replica's start-up (seconds on this machine) and does not depend on the
model, so the host agent keeps up to ``size`` standbys waiting (1 by default; 4 lets an
ml.inf1.xlarge start its 4 replicas, one per NeuronCore, all warm; the rest otherwise start cold, in
parallel) — by default only while it serves no replica. The pool is sized by demand: the first
endpoint on a fresh platform starts warm, and a host that serves holds no interpreter it may never
use; a second endpoint, a scale-out or a replacement then starts cold (about 0.8 s more to
InService, docs/measured.md). Every replica process counts itself in before it takes a standby or
starts cold and out once it is gone; while any is counted in the pool starts none, and stops any
still waiting once the starting replicas have loaded. The last replica gone refills it, so the next
deploy starts warm again. ``while_serving`` (NEURONDOCK_STANDBY_WHILE_SERVING) keeps standbys while
replicas serve too, for warm scale-out. A standby is only used when the replica's environment agrees
with it on everything an interpreter reads at start-up (``compatible``) and when the replica keeps
the network (a standby cannot leave its network namespace). The pool fills in the background, one
interpreter at a time (a torch import keeps a core busy for over a second), and only once the
replica that took a standby has loaded its model or failed to: started at once, the refill's import
would compete with that load for the host's cores. Each standby costs memory: measured here (torch
2.13 CPU) one waiting standby has an RSS of ~222 MiB and a Pss of ~160-180 MiB, ~146 MiB of it
private anonymous memory, so a full pool of 4 holds ~0.7 GiB; ``size`` 0 turns the pool off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from neurondock_platform import lifetime
from neurondock_workers.exiting import exit_now
from neurondock_workers.sandbox import MODEL_DIR, WEIGHTS_DIR, Bind, Jail, Sandbox

STANDBY_MODULE = "neurondock_workers.hosting.standby"
READY_MARKER = "NEURONDOCK_STANDBY_READY"
PIDFILE = "replica.pid"
# Variables an interpreter, OpenMP or torch read before a standby could change them.
_STARTUP_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "LD_", "TORCH", "CUDA", "OPENBLAS", "MALLOC")
_HELLO = b"hello"
_READY = b"ready"
# The activation message (argv, environment, key, limits) is small; the environment is the bulk.
_MAX_SPEC = 1 << 20
_CREDS = struct.Struct("3i")

logger = logging.getLogger(__name__)


# --- inside the interpreter -------------------------------------------------------------------------


def _become(spec: dict[str, Any], fds: Sequence[int]) -> int:
    from neurondock_workers.sandbox import apply_limits

    log_fd = fds[0]
    listen = socket.socket(fileno=fds[1]) if len(fds) > 1 else None
    local = socket.socket(fileno=fds[2]) if len(fds) > 2 else None
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
    # Before any user code: lowering a limit needs no privilege, raising it back needs one we lack.
    apply_limits(spec.get("limits"))
    from neurondock_workers.hosting import replica

    return replica.main(spec["argv"], key=spec["key"], listen=listen, local=local)


def main(argv: list[str] | None = None) -> int:
    """Say hello, import the heavy modules, say ready, then wait to become a replica."""
    args = sys.argv[1:] if argv is None else argv
    control = socket.socket(fileno=int(args[args.index("--control-fd") + 1]))
    control.send(_HELLO)

    import torch  # noqa: F401  (the point of a standby)

    import neurondock_workers.hosting.batcher
    import neurondock_workers.hosting.handler
    import neurondock_workers.hosting.replica
    import neurondock_workers.hosting.weights  # noqa: F401

    print(READY_MARKER, flush=True)
    with contextlib.suppress(OSError):
        control.send(_READY)
    try:
        message, fds, _flags, _addr = socket.recv_fds(control, _MAX_SPEC, 4)
    except OSError:
        return 0
    control.close()
    if not message:
        return 0  # the agent let us go unused
    return _become(json.loads(message), fds)


# --- on the agent's side ----------------------------------------------------------------------------


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of an environment an interpreter reads before it is activated (two agreeing may swap)."""
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES)}


class Interpreter:
    """One interpreter process waiting to become a replica (warm once ``warm`` is set)."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        control: socket.socket,
        *,
        sandbox: Sandbox | None,
        slot: Path | None,
        uid: int | None,
        network: bool,
    ) -> None:
        self.proc = proc
        self.control = control
        self.sandbox = sandbox
        self.slot = slot
        self.uid = uid
        self.network = network
        # The interpreter's own pid as this process sees it (bwrap's pid when sandboxed is not it).
        self.pid: int | None = None if slot is not None else proc.pid
        self.hello = threading.Event()
        self.warm = threading.Event()
        threading.Thread(target=self._watch, name="neurondock-interpreter", daemon=True).start()

    @property
    def sandboxed(self) -> bool:
        return self.slot is not None

    @property
    def model_dir(self) -> Path | None:
        """The host side of the slot's model directory (None unsandboxed)."""
        return None if self.slot is None else self.slot / "model"

    @property
    def weights_dir(self) -> Path | None:
        """The host side of the slot's writable weights directory (None unsandboxed)."""
        return None if self.slot is None else self.slot / "weights"

    def _watch(self) -> None:
        # hello (stamped with the sender's pid), then ready once torch is imported; EOF means it died.
        try:
            while not self.warm.is_set():
                data, ancdata, _flags, _addr = self.control.recvmsg(16, socket.CMSG_SPACE(_CREDS.size))
                if not data:
                    break
                for level, kind, payload in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and self.pid is None:
                        self.pid = _CREDS.unpack(payload[: _CREDS.size])[0] or None
                if data == _HELLO:
                    self.hello.set()
                elif data == _READY:
                    self.warm.set()
        except OSError:
            pass
        finally:
            self.hello.set()

    def wait_pid(self, timeout: float) -> int | None:
        """Wait until the interpreter said hello (or died); return its pid."""
        self.hello.wait(timeout)
        return self.pid

    def activate(self, spec: Mapping[str, Any], fds: Sequence[int]) -> bool:
        """Send the replica spec and descriptors; False if the interpreter died meanwhile."""
        if self.proc.poll() is not None:
            return False
        try:
            socket.send_fds(self.control, [json.dumps(spec).encode()], list(fds))
        except OSError:
            return False
        return True

    def release(self) -> None:
        """Let an interpreter that will not become a replica go, and clean up after it."""
        with contextlib.suppress(OSError):
            self.control.shutdown(socket.SHUT_RDWR)
        self.control.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(5)
        self.cleanup()

    def kill(self) -> None:
        """SIGKILL the interpreter (and so its sandbox)."""
        for pid in {self.pid, self.proc.pid} - {None}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                assert pid is not None
                os.kill(pid, 9)

    def cleanup(self) -> None:
        """Once the process has exited: remove its slot and give back its uid."""
        with contextlib.suppress(OSError):
            self.control.close()
        if self.sandboxed and self.pid is not None:
            # bwrap can be gone a moment before the interpreter is (its SIGKILL, from bwrap or from
            # kill(), is still finishing): the uid must not go to another sandbox while it runs.
            lifetime.wait_gone(self.pid, 5)
        if self.slot is not None:
            shutil.rmtree(self.slot, ignore_errors=True)
        if self.sandbox is not None:
            self.sandbox.release_uid(self.uid)


def spawn(
    sandbox: Sandbox | None,
    env: Mapping[str, str],
    log: IO[bytes],
    *,
    slots_dir: Path | None,
    network: bool = True,
) -> Interpreter:
    """Start one interpreter (sandboxed when ``sandbox`` is enabled) writing to ``log`` until activated."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    slot: Path | None = None
    uid: int | None = None
    argv = [sys.executable, "-m", STANDBY_MODULE, "--control-fd", str(child.fileno())]
    try:
        if sandbox is not None and sandbox.enabled:
            assert slots_dir is not None, "a sandboxed interpreter needs a slot directory"
            slot = slots_dir / uuid.uuid4().hex
            (slot / "model").mkdir(parents=True)
            (slot / "weights").mkdir()
            uid = sandbox.allocate_uid()
            sandbox.give(slot / "weights", uid)
            jail = Jail(
                binds=(Bind(slot / "model", MODEL_DIR), Bind(slot / "weights", WEIGHTS_DIR, writable=True)),
                network=network,
                cwd=MODEL_DIR,
                die_with_parent=True,
            )
            argv = sandbox.command(argv, jail, uid=uid)
        proc = lifetime.spawn(
            argv,
            # An agent that dies (SIGKILL, OOM) takes its interpreters and replicas along: nobody else
            # would stop them (bwrap's --die-with-parent passes it on into the sandbox).
            death_signal=signal.SIGKILL,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            pass_fds=(child.fileno(),),
            # Its own session: a terminal's Ctrl-C reaches the agent, which then stops replicas in order.
            start_new_session=True,
        )
    except BaseException:
        parent.close()
        if slot is not None:
            shutil.rmtree(slot, ignore_errors=True)
        if sandbox is not None:
            sandbox.release_uid(uid)
        raise
    finally:
        child.close()
    return Interpreter(proc, parent, sandbox=sandbox, slot=slot, uid=uid, network=network)


class StandbyPool:
    """Keeps up to ``size`` standbys ready while it serves no replica; hands them out, refills in the background.

    Every replica process counts itself in (``serve``) before it takes a standby or starts cold, and
    out (``unserve``) once it is gone. While any is counted in, the pool's target is 0 unless
    ``while_serving``: it starts no standby, and once the starting replicas have loaded (``loaded``)
    it stops any standby still waiting. When the last one goes, it refills, so the next deploy starts
    warm.
    """

    def __init__(
        self,
        base_env: Mapping[str, str],
        log_dir: Path,
        size: int = 1,
        *,
        while_serving: bool = False,
        sandbox: Sandbox | None = None,
        slots_dir: Path | None = None,
    ) -> None:
        self.base_env = dict(base_env)
        self.log_dir = log_dir
        self.size = max(0, size)
        self.while_serving = while_serving
        self.sandbox = sandbox
        self.slots_dir = slots_dir
        self._lock = threading.Lock()
        self._ready: list[Interpreter] = []
        self._closed = False
        self._filling = False
        self._filler: threading.Thread | None = None
        # Standbys handed out whose takers have not called loaded() yet: the pool stays that much short.
        self._owed = 0
        # Replica processes counted in and not yet out.
        self._serving = 0
        # How many interpreters the pool has started, and how many waiting ones it stopped unused.
        self.spawned = 0
        self.stopped = 0
        # How many takes got a fully warm interpreter, and how many one still importing torch.
        self.taken_warm = 0
        self.taken_warming = 0

    def compatible(self, env: Mapping[str, str]) -> bool:
        """Whether a replica with this environment may start from a standby."""
        return startup_env(env) == startup_env(self.base_env)

    def warm_count(self) -> int:
        """Return how many standbys are warm and waiting."""
        with self._lock:
            return sum(1 for s in self._ready if s.warm.is_set() and s.proc.poll() is None)

    def importing_count(self) -> int:
        """Return how many standbys are still importing."""
        with self._lock:
            return sum(1 for s in self._ready if not s.warm.is_set() and s.proc.poll() is None)

    def waiting_count(self) -> int:
        """Return how many standbys are alive and not handed out (warm or importing)."""
        with self._lock:
            return sum(1 for s in self._ready if s.proc.poll() is None)

    @property
    def filling(self) -> bool:
        """Whether the background fill is running."""
        with self._lock:
            return self._filling

    @property
    def serving(self) -> int:
        """How many replica processes are counted in."""
        with self._lock:
            return self._serving

    def _target_locked(self) -> int:
        if self._closed:
            return 0
        return self.size if self.while_serving or self._serving == 0 else 0

    def _spawn(self) -> Interpreter | None:
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / "standby.log").open("ab") as log:
                self.spawned += 1
                return spawn(self.sandbox, self.base_env, log, slots_dir=self.slots_dir)
        except OSError:
            logger.exception("could not start a standby replica interpreter")
            return None

    def _fill_loop(self) -> None:
        while True:
            with self._lock:
                self._ready = [s for s in self._ready if s.proc.poll() is None]
                if len(self._ready) + self._owed >= self._target_locked():
                    self._filling = False
                    return
            standby = self._spawn()
            if standby is None:
                with self._lock:
                    self._filling = False
                return
            with self._lock:
                # A replica may have been counted in (or the pool closed) while this one started.
                wanted = len(self._ready) + self._owed < self._target_locked()
                if wanted:
                    self._ready.append(standby)
            if not wanted:
                self._stop([standby])
                continue
            # One import at a time: wait for this one before starting the next.
            while not standby.warm.wait(0.1) and standby.proc.poll() is None and not self._closed:
                pass
            if not standby.warm.is_set() and standby.proc.poll() is not None:
                with self._lock:
                    ours = standby in self._ready
                    if ours:
                        self._ready.remove(standby)
                if not ours:
                    continue  # handed out (its taker owns it now) or stopped by _trim
                # Died while importing: a broken interpreter would die again; the next take tries once more.
                logger.warning("a standby interpreter exited with %s before it was ready", standby.proc.returncode)
                standby.cleanup()
                with self._lock:
                    self._filling = False
                return

    def fill(self) -> None:
        """Start standbys in the background until the target number are ready or coming."""
        with self._lock:
            if self._filling or self._target_locked() == 0:
                return
            self._filling = True
            self._filler = threading.Thread(target=self._fill_loop, name="neurondock-standby", daemon=True)
            self._filler.start()

    def _stop(self, standbys: Sequence[Interpreter]) -> None:
        # An unused standby holds nothing: end them all at once rather than wait for each to finish
        # importing torch and read its control socket (seconds apiece, longer than a container's stop timeout).
        for standby in standbys:
            standby.kill()
        for standby in standbys:
            standby.release()
        with self._lock:
            self.stopped += len(standbys)

    def _trim(self) -> None:
        """Stop the waiting standbys beyond the target (warm ones are kept first)."""
        with self._lock:
            keep = max(0, self._target_locked() - self._owed)
            ordered = sorted(self._ready, key=lambda s: not s.warm.is_set())
            self._ready, excess = ordered[:keep], ordered[keep:]
        if excess:
            self._stop(excess)

    def serve(self) -> None:
        """Count a replica process in (before it takes a standby or starts cold)."""
        with self._lock:
            self._serving += 1

    def unserve(self) -> None:
        """Count a replica process out (once it is gone); the last one out refills the pool."""
        with self._lock:
            self._serving = max(0, self._serving - 1)
        self.fill()

    def take(self, env: Mapping[str, str], *, network: bool = True) -> Interpreter | None:
        """Hand out a standby, warm ones first (None when there is none, or it cannot fit this replica)."""
        if not self.compatible(env) or not network:
            return None
        with self._lock:
            alive = [s for s in self._ready if s.proc.poll() is None]
            chosen = next((s for s in alive if s.warm.is_set()), alive[0] if alive else None)
            self._ready = [s for s in alive if s is not chosen]
            if chosen is not None:
                # The taker calls loaded() once its model has loaded: a refill's torch import would
                # compete with that load for the host's cores (docs/runtime.md, "Start-up").
                self._owed += 1
                if chosen.warm.is_set():
                    self.taken_warm += 1
                else:
                    self.taken_warming += 1
        if chosen is None:
            self.fill()
        return chosen

    def loaded(self, *, took: bool) -> None:
        """Called once by each counted-in replica when its model has loaded (or failed to).

        A taker's replacement starts now, if the policy wants one; standbys beyond the policy stop.
        """
        with self._lock:
            if took:
                self._owed = max(0, self._owed - 1)
        self._trim()
        self.fill()

    def close(self) -> None:
        """Let every waiting standby go, start no more, and wait for a fill under way to let its own go."""
        with self._lock:
            self._closed = True
            waiting, self._ready = self._ready, []
            filler = self._filler
        self._stop(waiting)
        if filler is not None and filler is not threading.current_thread():
            # It stops at its next look at the target: a spawn in flight is stopped, its slot removed.
            filler.join(10.0)


if __name__ == "__main__":
    exit_now(main())
