"""Run untrusted code — replica processes and compile children — inside bubblewrap.

A model's ``code/inference.py``, its TorchScript file and a compile input are the user's code. They
run in a ``bwrap`` sandbox (docs/sandbox.md) that sees: the system (``/usr``, ``/etc`` without its
secrets) and the Python environment, read-only; the binds the caller names (a replica's own model
directory read-only, its weights directory and a compile's work directory writable); a private
``/tmp``; its own ``/proc`` (own pid namespace: no other process is visible) and a minimal ``/dev``.
It does not see the data directory (credentials.json, the database, the object store), other
replicas, or the platform's environment (callers pass a scrubbed one). Without network it gets its
own network namespace with only a loopback interface.

Who runs it: when the platform runs as root, bwrap runs privileged (no user namespace) and drops
the command to a fresh unprivileged uid with ``setpriv`` (no capabilities, no new privileges), one
uid per sandbox, so per-uid limits (``RLIMIT_NPROC``) are per replica and no file the platform
owns is the sandbox's. As an ordinary user, bwrap makes an unprivileged user namespace and the code
keeps the platform's uid on the host: still nothing of the data directory is visible, but process
counts cannot be limited per replica (they count the whole user) — ``describe()`` says so.

Limits (``Limits``) are set by the sandboxed process itself with ``setrlimit`` before any user code
runs; lowering a limit needs no privilege, and raising a hard limit back needs one it no longer has.
"""

from __future__ import annotations

import functools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from neurondock_platform import catalog
from neurondock_platform.config import Settings

# Where a replica finds its model and its shared-weights directory inside the sandbox: SageMaker's
# own model path, so code written for SageMaker containers finds its files where it expects them.
MODEL_DIR = "/opt/ml/model"
WEIGHTS_DIR = "/opt/ml/weights"
SETPRIV = "/usr/bin/setpriv"
# Fresh uids for sandboxes are drawn from here: far above any real account, below 2**31.
UID_BASE = 2_000_000_000
UID_SPAN = 100_000_000
# The sandbox's private /tmp is memory; it is capped like this whatever the instance type.
TMP_BYTES = 1024**3
MIB = 1024**2
# Files under /etc a sandbox must never read, even where their modes would allow it.
_ETC_SECRETS = ("shadow", "gshadow", "shadow-", "gshadow-", "sudoers", "ssh", "security/opasswd")
# Probe results per host setup; a probe starts a sandboxed interpreter (~0.1 s).
_PROBE_TIMEOUT = 30.0

MODE_BWRAP = "bwrap"
MODE_OFF = "off"
MODE_UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Limits:
    """Per-process limits of one sandbox, derived from the instance type it stands for."""

    # RLIMIT_DATA: private writable memory (heap, anonymous mappings, thread stacks).
    memory_bytes: int | None
    # RLIMIT_NPROC: processes and threads of the sandbox's uid (root mode only: see the module doc).
    processes: int | None
    # RLIMIT_NOFILE: open file descriptors.
    open_files: int | None

    def to_json(self) -> dict[str, int | None]:
        return asdict(self)

    def describe(self) -> str:
        memory = f"{self.memory_bytes // MIB} MiB" if self.memory_bytes else "unlimited"
        processes, files = self.processes or "unlimited", self.open_files or "unlimited"
        return f"memory {memory}, processes {processes}, open files {files}"


def limits_for(instance_type: str | None, replicas_per_instance: int = 1, *, per_uid: bool = True) -> Limits:
    """Return one replica's limits: its share of the instance's memory, processes and files by vCPU.

    An instance's memory is split between the replicas that stand for it (an ml.inf1.xlarge's 8 GiB
    between its 4 NeuronCore replicas); processes (threads count) and open files scale with its
    vCPUs. ``per_uid`` False (no uid of its own) leaves the process count unlimited.
    """
    entry = catalog.get(instance_type or "")
    share = max(1, replicas_per_instance)
    if entry is None:
        return Limits(memory_bytes=None, processes=256 if per_uid else None, open_files=4096)
    memory = entry.memory_gib * 1024**3 // share
    return Limits(
        memory_bytes=memory,
        processes=max(256, 64 * entry.vcpus) if per_uid else None,
        open_files=max(4096, 1024 * entry.vcpus),
    )


def apply_limits(limits: Mapping[str, Any] | None) -> None:
    """Lower this process's limits (soft and hard) as ``Limits.to_json()`` describes them."""
    if not limits:
        return
    for name, key in (
        ("memory_bytes", resource.RLIMIT_DATA),
        ("processes", resource.RLIMIT_NPROC),
        ("open_files", resource.RLIMIT_NOFILE),
    ):
        value = limits.get(name)
        if not value:
            continue
        _soft, hard = resource.getrlimit(key)
        new = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
        resource.setrlimit(key, (new, new))


def memory_limit_note(exc: BaseException) -> str:
    """Say which limit an allocation hit when ``exc`` is one that failed under ``RLIMIT_DATA`` ('' otherwise)."""
    # Python raises MemoryError; torch's CPU allocator a RuntimeError with these words (docs/sandbox.md).
    if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
        return ""
    soft, _hard = resource.getrlimit(resource.RLIMIT_DATA)
    if soft == resource.RLIM_INFINITY:
        return ""
    return (
        f" (this replica may use {soft // MIB} MiB: its share of the instance type's memory; "
        "choose a larger instance type or fewer workers per instance)"
    )


@dataclass(frozen=True)
class Bind:
    """A host path shown inside the sandbox at ``target``."""

    source: Path
    target: str
    writable: bool = False


@dataclass(frozen=True)
class Jail:
    """What one sandbox sees besides the system and the Python environment."""

    binds: tuple[Bind, ...] = ()
    network: bool = True
    cwd: str = "/tmp"
    # Kill what runs in the sandbox when bwrap dies (bwrap itself dies with its launcher: lifetime.spawn).
    die_with_parent: bool = True


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot start a sandbox on this host; the message says why."""


class Sandbox:
    """How this host runs untrusted code: in bubblewrap, or (opted out / unavailable) unsandboxed."""

    def __init__(self, mode: str, reason: str = "", *, bwrap: str | None = None, hidden: Sequence[Path] = ()) -> None:
        self.mode = mode
        self.reason = reason
        self.bwrap = bwrap
        self.privileged = os.geteuid() == 0
        # Paths inside the bound Python environment that must not show (the data directory).
        self.hidden = tuple(hidden)
        self._uids: set[int] = set()
        self._uid_lock = threading.Lock()
        self._rng = random.SystemRandom()

    @property
    def enabled(self) -> bool:
        """Whether user code runs sandboxed."""
        return self.mode == MODE_BWRAP

    @property
    def per_uid(self) -> bool:
        """Whether each sandbox gets a uid of its own (root mode)."""
        return self.enabled and self.privileged

    def describe(self) -> str:
        """One line for banners, logs and the console."""
        if self.mode == MODE_OFF:
            return "off (NEURONDOCK_UNSAFE_UNSANDBOXED_USER_CODE): model code runs as the platform's own user"
        if self.mode == MODE_UNAVAILABLE:
            return f"unavailable ({self.reason})"
        who = "a fresh uid per sandbox" if self.privileged else "the platform's uid in a user namespace"
        return f"bubblewrap ({who}; no data directory, own pid namespace, private /tmp)"

    def status(self) -> str:
        """What a host reports: ``bwrap``, ``off`` or ``unavailable: <why>`` (at most 255 characters)."""
        text = self.mode if self.mode != MODE_UNAVAILABLE else f"{self.mode}: {self.reason}"
        return text[:255]

    # --- uids ---------------------------------------------------------------------------------------

    def allocate_uid(self) -> int | None:
        """Return a fresh uid for one sandbox (None when not running as root)."""
        if not self.per_uid:
            return None
        with self._uid_lock:
            while True:
                uid = UID_BASE + self._rng.randrange(UID_SPAN)
                if uid not in self._uids:
                    self._uids.add(uid)
                    return uid

    def release_uid(self, uid: int | None) -> None:
        """Let a uid be drawn again once its sandbox has exited."""
        if uid is not None:
            with self._uid_lock:
                self._uids.discard(uid)

    def give(self, path: Path, uid: int | None) -> None:
        """Make ``path`` (and what is under it) the sandbox uid's, so the sandbox may write there."""
        if uid is None:
            return
        os.chown(path, uid, uid)
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)

    # --- the command --------------------------------------------------------------------------------

    def command(self, argv: Sequence[str], jail: Jail, *, uid: int | None, info_fd: int | None = None) -> list[str]:
        """Return ``argv`` wrapped in bwrap as ``jail`` describes (``argv`` itself when not enabled)."""
        if not self.enabled:
            return list(argv)
        assert self.bwrap is not None
        args = [self.bwrap, "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        args += ["--hostname", "neurondock-sandbox"]
        if not jail.network:
            args.append("--unshare-net")
        if jail.die_with_parent:
            args.append("--die-with-parent")
        if self.privileged:
            # setpriv needs these two to drop to the sandbox uid; it then has no capability at all.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            args.append("--unshare-user")
        made: set[str] = set()
        args += _system_binds(made)
        for root in python_roots():
            args += [*_dirs_for(root, made), "--ro-bind", root, root]
        for hidden in self.hidden:
            if any(_under(str(hidden), root) for root in python_roots()) and hidden.exists():
                args += ["--tmpfs", str(hidden)]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
        made.add("/tmp")
        for bind in jail.binds:
            args += _dirs_for(bind.target, made)
            args += ["--bind" if bind.writable else "--ro-bind", str(bind.source), bind.target]
        args += ["--chdir", jail.cwd, "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp"]
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        args.append("--")
        if self.privileged:
            assert uid is not None, "root mode runs every sandbox as its own uid"
            args += [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--no-new-privs"]
            args.append("--")
        return [*args, *argv]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _dirs_for(target: str, made: set[str]) -> list[str]:
    # bwrap creates missing parents 0700 (root-only); a sandbox uid must be able to walk through them.
    args: list[str] = []
    parts = Path(target).parts
    for i in range(2, len(parts)):
        parent = str(Path(*parts[:i]))
        if parent not in made and not os.path.islink(parent):
            made.add(parent)
            args += ["--perms", "0755", "--dir", parent]
    return args


def _system_binds(made: set[str]) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    made.add("/usr")
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
        made.add(path)
    args += ["--ro-bind", "/etc", "/etc"]
    made.add("/etc")
    for secret in _ETC_SECRETS:
        masked = Path("/etc") / secret
        if masked.is_dir() and not masked.is_symlink():
            args += ["--tmpfs", str(masked)]
        elif masked.exists():
            args += ["--ro-bind", "/dev/null", str(masked)]
    return args


@functools.cache
def python_roots() -> tuple[str, ...]:
    """The directories the running interpreter imports from (installation, venv, source roots)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates.add(str(Path(sys.executable).resolve().parent.parent))
    # sys.path[0] is the script's directory or the working directory (``python -m``): wherever the
    # operator happened to start the platform, perhaps a home directory. Never show that.
    for entry in sys.path[1:]:
        if entry and os.path.isabs(entry) and os.path.exists(entry):
            candidates.add(entry if os.path.isdir(entry) else os.path.dirname(entry))
    # The neurondock packages themselves (a source checkout that is not on sys.path as such).
    import neurondock_platform
    import neurondock_workers

    for package in (neurondock_platform, neurondock_workers):
        candidates.update(str(Path(p).resolve().parent) for p in package.__path__)
    system = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")
    real = sorted({os.path.realpath(c) for c in candidates} | candidates)
    roots: list[str] = []
    for path in real:
        if any(_under(path, s) for s in system) or not os.path.isdir(path):
            continue
        if not any(_under(path, kept) for kept in roots):
            roots.append(path)
    return tuple(roots)


def probe(bwrap: str, hidden: Sequence[Path]) -> str | None:
    """Start one sandboxed interpreter the way replicas start; return None when it works, else why not."""
    sandbox = Sandbox(MODE_BWRAP, bwrap=bwrap, hidden=hidden)
    uid = sandbox.allocate_uid()
    check = (
        "import os, sys, neurondock_workers; "
        "hidden = [p for p in sys.argv[1:] if os.path.exists(p)]; "
        "print('visible: ' + ', '.join(hidden)) if hidden else None; sys.exit(3 if hidden else 0)"
    )
    argv = [sys.executable, "-c", check, *(str(p) for p in hidden)]
    jail = Jail(network=False, die_with_parent=True)
    try:
        done = subprocess.run(
            sandbox.command(argv, jail, uid=uid),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT,
            env=scrubbed_environment(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not start: {exc}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        return f"a test sandbox exited with {done.returncode}" + (f": {detail[-1]}" if detail else "")
    return None


@functools.cache
def _probe_once(bwrap: str) -> str | None:
    # Whether a sandbox starts is a property of the host, not of one data directory.
    return probe(bwrap, ())


def scrubbed_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The platform's environment without its own settings and credentials."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if not k.startswith(("NEURONDOCK_", "AWS_"))}


def for_settings(settings: Settings) -> Sandbox:
    """The sandbox of this host under these settings (bubblewrap is probed once per process)."""
    hidden = tuple(dict.fromkeys([settings.data_dir, *_extra_hidden(settings)]))
    return detect(settings, hidden)


def _extra_hidden(settings: Settings) -> Iterable[Path]:
    # The store's objects may live outside the data directory.
    return [settings.objects_dir]


def detect(settings: Settings, hidden: Sequence[Path]) -> Sandbox:
    """Decide how this host runs user code: opted out, bubblewrap, or unavailable (and why)."""
    if settings.unsafe_unsandboxed_user_code:
        return Sandbox(MODE_OFF, "the operator opted out")
    bwrap = shutil.which(settings.sandbox_bwrap or "bwrap")
    if bwrap is None:
        return Sandbox(MODE_UNAVAILABLE, f"{settings.sandbox_bwrap or 'bwrap'} is not installed (Debian: bubblewrap)")
    if os.geteuid() == 0 and not os.access(SETPRIV, os.X_OK):
        return Sandbox(MODE_UNAVAILABLE, f"{SETPRIV} is missing (Debian: util-linux)")
    why = _probe_once(bwrap)
    if why is not None:
        return Sandbox(MODE_UNAVAILABLE, why)
    return Sandbox(MODE_BWRAP, bwrap=bwrap, hidden=hidden)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m neurondock_workers.sandbox``: print this host's sandbox mode as JSON (for ``up``)."""
    del argv
    sandbox = for_settings(Settings.from_env())
    print(json.dumps({"mode": sandbox.mode, "status": sandbox.status(), "describe": sandbox.describe()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
