"""``neurondock up`` and ``neurondock host``: run the platform's processes as supervised children.

``up`` runs the API and a host process (the Celery worker and the host agent in one process);
``host`` runs the host process alone, without an API. Either holds its data dir's instance lock for
as long as any child lives, its children die with it (``lifetime.spawn``), and a SIGTERM stops
everything within ``Settings.stop_timeout`` — under Docker's default 10 s. See docs/supervision.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from neurondock_platform import database_gate, watch
from neurondock_platform.config import Settings
from neurondock_platform.lifetime import pid_alive
from neurondock_platform.watch import Child, stop_all

LOCK_FILE = "instance.lock"


# What a worker or host agent never gets: the platform's root key pair, and ambient AWS credentials
# (the shell `up` runs in may export the root pair as AWS_*). They act for accounts with the accounts'
# own short-lived credentials instead (s3_client.OwnerClients).
_NOT_FOR_WORKERS = (
    "NEURONDOCK_ROOT_ACCESS_KEY_ID",
    "NEURONDOCK_ROOT_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def child_env(settings: Settings, *, root_keys: bool = False) -> dict[str, str]:
    """The environment that hands this process's resolved settings to a child process.

    Only the API process (``root_keys``) gets the root key pair: the platform's root keys never leave
    the control plane.
    """
    env = {k: v for k, v in os.environ.items() if k not in _NOT_FOR_WORKERS}
    env.update(
        {
            "NEURONDOCK_DATA_DIR": str(settings.data_dir),
            "NEURONDOCK_HOST": settings.host,
            "NEURONDOCK_PORT": str(settings.port),
            "NEURONDOCK_REGION": settings.region,
            "NEURONDOCK_DATABASE_URL": settings.database_url,
            "NEURONDOCK_BROKER_URL": settings.broker_url,
            "NEURONDOCK_QUEUE": settings.queue,
            "NEURONDOCK_PUBLIC_URL": settings.public_url,
            "NEURONDOCK_HOST_ID": settings.host_id,
            "NEURONDOCK_HOST_ADDRESS": settings.host_address,
            "NEURONDOCK_HOST_CHIPS": str(settings.host_chips),
            "NEURONDOCK_HEARTBEAT_TIMEOUT": str(settings.heartbeat_timeout),
            "NEURONDOCK_STOP_TIMEOUT": str(settings.stop_timeout),
        }
    )
    if root_keys:
        from neurondock_platform.services.root_identity import root_identity

        identity = root_identity(settings)
        env.update(
            {
                "NEURONDOCK_ROOT_ACCESS_KEY_ID": identity.access_key_id,
                "NEURONDOCK_ROOT_SECRET_ACCESS_KEY": identity.secret_access_key,
                "NEURONDOCK_ACCOUNT_ID": identity.account_id,
            }
        )
    if settings.s3_endpoint_url:
        env["NEURONDOCK_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.unsafe_unsandboxed_user_code:
        env["NEURONDOCK_UNSAFE_UNSANDBOXED_USER_CODE"] = "1"
    return env


# --- the instance lock --------------------------------------------------------------------------


class InstanceLockedError(Exception):
    """Another instance (live, or the stale children of a killed one) holds the data dir."""


@dataclass(frozen=True)
class Holder:
    """A process that holds a data dir's instance lock."""

    pid: int
    command: str


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def lock_holders(path: Path) -> list[Holder]:
    """Processes with the lock file open: the supervisor and every child that inherited it."""
    target = str(path.resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        found.append(Holder(int(proc.name), _command_line(int(proc.name))))
                        break
    return sorted(found, key=lambda h: h.pid)


def read_lock(data_dir: Path) -> dict[str, object]:
    """What the last supervisor on this data dir wrote into its lock ({} when none)."""
    try:
        return dict(json.loads((data_dir / LOCK_FILE).read_text() or "{}"))
    except (OSError, ValueError):
        return {}


def describe_lock(data_dir: Path) -> str:
    """Explain who holds the data dir and how to stop them (empty when nobody does)."""
    path = data_dir / LOCK_FILE
    info = read_lock(data_dir)
    holders = lock_holders(path) if path.exists() else []
    owner = int(str(info.get("pid", 0)) or 0)
    what = f"neurondock {info.get('role', 'up')}"
    stop = f"stop it with: neurondock down --data-dir {data_dir}"
    if owner and pid_alive(owner):
        where = f", {info['url']}" if info.get("url") else ""
        return f"{what} is already running on {data_dir} (pid {owner}{where}); {stop}"
    if not holders:
        return ""
    listed = ", ".join(f"{h.pid} ({h.command})" for h in holders)
    return (
        f"a stale instance holds {data_dir}: its {what} (pid {owner or '?'}) is gone but its processes "
        f"still run: {listed}; {stop}"
    )


class InstanceLock:
    """An exclusive flock on ``<data dir>/instance.lock`` naming the supervisor's pid, role and URL.

    Children inherit the locked descriptor, so the lock outlives a SIGKILLed supervisor for exactly
    as long as one of its children does: a new supervisor then reports them instead of failing later
    on a port they still hold.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, role: str, url: str = "") -> None:
        """Take the lock or raise InstanceLockedError saying who has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise InstanceLockedError(
                describe_lock(self.path.parent) or f"{self.path} is locked by another process"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "role": role, "url": url}).encode())
        self.fd = fd

    def release(self) -> None:
        """Drop the lock (children that still hold the descriptor keep it locked)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (an API of another instance, say)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    return False


# --- supervised children ------------------------------------------------------------------------


def answers_ping(host: str, port: int) -> bool:
    """Whether the server listening on ``host:port`` answers ``GET /ping`` with 200.

    A request written on a socket: urllib would leave http.client, email and ssl in the supervisor for
    its whole life (~7 MB RSS, docs/measured.md). It asks the listener itself, on loopback when that
    binds every address, not ``public_url``, which may name a proxy in front of it.
    """
    address = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    named = f"[{address}]" if ":" in address else address
    request = f"GET /ping HTTP/1.1\r\nHost: {named}:{port}\r\nConnection: close\r\n\r\n"
    try:
        # The address as bytes: getaddrinfo encodes a str with the idna codec (and unicodedata, 1 MB).
        family, kind, proto, _, where = socket.getaddrinfo(address.encode(), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as conn:
            conn.settimeout(1)
            conn.connect(where)
            conn.sendall(request.encode())
            with conn.makefile("rb") as answer:
                status = answer.readline(256).split()
    except OSError:
        return False
    return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200"


def _wait_ready(settings: Settings, child: Child, stopping: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        if not child.alive():
            return False
        if answers_ping(settings.host, settings.port):
            return True
        # A refused connection costs next to nothing; the banner should not trail the API.
        time.sleep(0.02)
    return False


class Supervisor:
    """Start the children (gated on the database at ``up``), then hand the watching over to ``watch``."""

    def __init__(self, settings: Settings, children: list[Child], lock: InstanceLock) -> None:
        self.settings = settings
        self.children = children
        self.lock = lock
        self.envs = {flag: child_env(settings, root_keys=flag) for flag in (False, True)}
        self.stopping = False
        # The gates of children started before the database was ready (database_gate).
        self.gates = database_gate.Gates()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:
            self.stopping = True

    def install_signals(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)

    def start(self, child: Child, *, gated: bool = False) -> None:
        """Start ``child``; ``gated``, it waits for ``self.gates`` to open before it uses the database."""
        keep = (self.lock.fd,) if self.lock.fd is not None else ()
        env = self.envs[child.root_keys]
        if not gated:
            child.start(env, keep)
            return
        gate = self.gates.reader()
        try:
            child.start({**env, database_gate.ENV: str(gate)}, (*keep, gate))
        finally:
            os.close(gate)  # the child holds its own copy
        child.env = env  # what a restart starts with: only the first start waits at a gate

    def start_preparing(self, child: Child) -> int:
        """Start ``child`` (the API) to prepare the database; return the read end ``database_gate.prepared`` reads."""
        keep = (self.lock.fd,) if self.lock.fd is not None else ()
        env = self.envs[child.root_keys]
        read, write = os.pipe()
        try:
            child.start({**env, database_gate.PREPARE_ENV: str(write)}, (*keep, write))
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)  # the child holds its own copy: EOF here once it (and its fork) let go
        child.env = env  # a restart finds the database prepared
        return read

    def run(self) -> int:
        """Watch the children until asked to stop (or one keeps exiting); returns the exit code.

        In a lean interpreter (``watch.hand_over``): this one's imports stay behind. A stop asked before
        the hand-over is acted on here.
        """
        watch.hand_over(self.children, self.lock.fd, self.settings.stop_timeout, lambda: self.stopping)
        self.stop()
        return 0

    def stop(self) -> None:
        print("neurondock: stopping", file=sys.stderr, flush=True)
        self.gates.close()  # children still waiting for the database exit instead
        # One budget for all: the children stop in parallel, each bounding its own stop below it.
        stop_all(self.children, max(1.0, self.settings.stop_timeout))
        self.lock.release()


def banner(settings: Settings, sandbox: dict[str, str] | None = None) -> str:
    """What `up` prints: where the platform is, how model code runs, how to point boto3 and the AWS CLI at it."""
    from neurondock_platform.services.root_identity import root_identity

    identity = root_identity(settings)
    url = settings.public_url
    return "\n".join(
        [
            f"neurondock is up at {url}",
            f"  region:      {settings.region}",
            f"  account id:  {identity.account_id}",
            f"  access key:  {identity.access_key_id}",
            f"  secret key:  {identity.secret_access_key}",
            f"  data dir:    {settings.data_dir}",
            *_sandbox_lines(sandbox),
            "",
            "Point boto3 and the AWS CLI at it:",
            f"export AWS_ENDPOINT_URL_SAGEMAKER={url} AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url} "
            f"AWS_ENDPOINT_URL_S3={url}/s3 AWS_ENDPOINT_URL_STS={url}/sts "
            # botocore names the variable after the service id: "Application Auto Scaling".
            f"AWS_ENDPOINT_URL_CLOUDWATCH={url} AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING={url}",
            f"export AWS_ACCESS_KEY_ID={identity.access_key_id} AWS_SECRET_ACCESS_KEY={identity.secret_access_key} "
            f"AWS_DEFAULT_REGION={settings.region}",
            "",
            "Ctrl-C stops everything.",
        ]
    )


def probe_sandbox(settings: Settings) -> subprocess.Popen[bytes]:
    """Start the workers' sandbox probe (runs while the API starts; docs/sandbox.md)."""
    return subprocess.Popen(
        [sys.executable, "-m", "neurondock_workers.sandbox"],
        env=child_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def sandbox_report(probe: subprocess.Popen[bytes], timeout: float = 30.0) -> dict[str, str]:
    """The probe's answer: ``mode`` (bwrap, off, unavailable) and a one-line description."""
    try:
        out, _ = probe.communicate(timeout=timeout)
        report = json.loads(out.decode() or "{}")
    except (subprocess.TimeoutExpired, ValueError):
        probe.kill()
        probe.wait()
        return {"mode": "unavailable", "describe": "unavailable (the sandbox probe did not answer)"}
    return {"mode": str(report.get("mode", "unavailable")), "describe": str(report.get("describe", ""))}


def _sandbox_lines(sandbox: dict[str, str] | None) -> list[str]:
    if sandbox is None:
        return []
    lines = [f"  sandbox:     {sandbox['describe']}"]
    if sandbox["mode"] == "unavailable":
        lines.append(
            "  WARNING: model code cannot be sandboxed here: accounts other than the admin cannot deploy or "
            "compile until bubblewrap works (or neurondock runs with --unsafe-unsandboxed-user-code)."
        )
    elif sandbox["mode"] == "off":
        lines.append(
            "  WARNING: --unsafe-unsandboxed-user-code: every account's model code runs as this platform's user "
            "and can read its credentials and every account's data."
        )
    return lines


def _locked(settings: Settings, role: str, url: str = "") -> InstanceLock | None:
    lock = InstanceLock(settings.data_dir)
    try:
        lock.acquire(role, url)
    except InstanceLockedError as exc:
        print(f"neurondock: {exc}", file=sys.stderr)
        return None
    return lock


def _host_child(logs: Path) -> Child:
    # The Celery worker and the host agent in one process: one interpreter's imports and memory
    # instead of two (docs/supervision.md); `neurondock worker` and `neurondock agent` run them apart.
    return Child("host", [sys.executable, "-m", "neurondock_workers", "host"], logs / "host.log")


def run_up(settings: Settings) -> int:
    """Run the platform until SIGINT/SIGTERM; returns the exit code."""
    lock = _locked(settings, "up", settings.public_url)
    if lock is None:
        return 1
    if port_in_use(settings.host, settings.port):
        lock.release()
        print(
            f"neurondock: cannot listen on {settings.host}:{settings.port}: another process uses that port "
            "(choose another with --port)",
            file=sys.stderr,
        )
        return 1
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    api = Child("api", [sys.executable, "-m", "neurondock_platform.cli", "api"], logs / "api.log", root_keys=True)
    supervisor = Supervisor(settings, [api, _host_child(logs)], lock)
    supervisor.install_signals()
    # Everything at once: the sandbox probe (a sandboxed interpreter) and the two children, which
    # import for seconds. The API then prepares the database (migrations, the root account) in a fork
    # that shares its imports, while the host process waits at its database gate: the worker is then
    # ready for the first CreateEndpoint, and the agent registers as soon as the database is
    # (docs/supervision.md, "Start-up").
    probe = probe_sandbox(settings)
    preparing = supervisor.start_preparing(api)
    for child in supervisor.children:
        if child is not api:
            supervisor.start(child, gated=True)
    failed = database_gate.prepared(preparing)
    if failed is None and not supervisor.stopping:
        supervisor.gates.open()
    if failed is not None or not _wait_ready(settings, api, lambda: supervisor.stopping):
        probe.kill()
        probe.wait()
        supervisor.stop()
        if failed is not None:
            print(f"neurondock: could not prepare the database:\n{failed}", file=sys.stderr)
        elif not supervisor.stopping:
            print(f"neurondock: the API server did not become ready; see {api.log_path}", file=sys.stderr)
        return 1 if failed is not None or not supervisor.stopping else 0
    print(banner(settings, sandbox_report(probe)), flush=True)
    print(f"Logs: {logs}", flush=True)
    return supervisor.run()


def run_host(settings: Settings) -> int:
    """Run a worker host (Celery worker and host agent, one process) until SIGINT/SIGTERM; returns the exit code."""
    lock = _locked(settings, "host")
    if lock is None:
        return 1
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(settings, [_host_child(logs)], lock)
    supervisor.install_signals()
    for child in supervisor.children:
        supervisor.start(child)
    print(f"neurondock host {settings.host_id} is running; logs: {logs}", flush=True)
    return supervisor.run()


def run_down(data_dir: Path, timeout: float) -> int:
    """Stop whatever holds ``data_dir``: its supervisor if alive, else the stale children; returns the exit code."""
    path = data_dir / LOCK_FILE
    owner = int(str(read_lock(data_dir).get("pid", 0)) or 0)
    targets = [owner] if owner and pid_alive(owner) else [h.pid for h in lock_holders(path)]
    if not targets:
        print(f"neurondock: nothing is running on {data_dir}")
        return 0
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (any(pid_alive(p) for p in targets) or lock_holders(path)):
        time.sleep(0.1)
    leftover = sorted({*(p for p in targets if pid_alive(p)), *(h.pid for h in lock_holders(path))})
    for pid in leftover:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    how = f"; killed {', '.join(map(str, leftover))} after {timeout:.0f} s" if leftover else ""
    print(f"neurondock: stopped {', '.join(map(str, targets))} on {data_dir}{how}")
    return 0
