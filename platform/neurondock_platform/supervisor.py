"""``neurondock up``: migrate, then run the API, a worker and a host agent as supervised children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from neurondock_platform.config import Settings

RESTART_LIMIT = 5  # restarts of one child within RESTART_WINDOW before `up` gives up
RESTART_WINDOW = 60.0


def child_env(settings: Settings) -> dict[str, str]:
    """The environment that hands this process's resolved settings to a child process."""
    from neurondock_platform.services.accounts import root_identity

    identity = root_identity(settings)
    env = dict(os.environ)
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
            "NEURONDOCK_ROOT_ACCESS_KEY_ID": identity.access_key_id,
            "NEURONDOCK_ROOT_SECRET_ACCESS_KEY": identity.secret_access_key,
            "NEURONDOCK_ACCOUNT_ID": identity.account_id,
        }
    )
    if settings.s3_endpoint_url:
        env["NEURONDOCK_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


@dataclass
class Child:
    """One supervised child process and its restart history."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _wait_ready(url: str, child: Child, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process is not None and child.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/ping", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def banner(settings: Settings) -> str:
    """What `up` prints: where the platform is and how to point boto3 and the AWS CLI at it."""
    from neurondock_platform.services.accounts import root_identity

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
            "",
            "Point boto3 and the AWS CLI at it:",
            f"export AWS_ENDPOINT_URL_SAGEMAKER={url} AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url} "
            f"AWS_ENDPOINT_URL_S3={url}/s3 AWS_ENDPOINT_URL_STS={url}/sts",
            f"export AWS_ACCESS_KEY_ID={identity.access_key_id} AWS_SECRET_ACCESS_KEY={identity.secret_access_key} "
            f"AWS_DEFAULT_REGION={settings.region}",
            "",
            "Ctrl-C stops everything.",
        ]
    )


def run_up(settings: Settings) -> int:
    """Run the platform until SIGINT/SIGTERM; returns the exit code."""
    from neurondock_platform.db import make_engine, make_sessionmaker, session_scope
    from neurondock_platform.migrate import upgrade
    from neurondock_platform.services.accounts import ensure_root_account, root_identity

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings)
    engine = make_engine(settings.database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        ensure_root_account(session, root_identity(settings))
    engine.dispose()

    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    python = sys.executable
    children = [
        Child("api", [python, "-m", "neurondock_platform.cli", "api"], logs / "api.log"),
        Child("worker", [python, "-m", "neurondock_workers", "worker"], logs / "worker.log"),
        Child("agent", [python, "-m", "neurondock_workers", "agent"], logs / "agent.log"),
    ]
    env = child_env(settings)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # The API (and its S3 store) first: the agent fetches model data from it as soon as it starts.
    children[0].start(env)
    ready = _wait_ready(settings.public_url, children[0])
    for child in children[1:]:
        child.start(env)
    if not ready:
        print(f"neurondock: the API server did not become ready; see {children[0].log_path}", file=sys.stderr)
        for child in children:
            child.stop()
        return 1
    print(banner(settings), flush=True)
    print(f"Logs: {logs}", flush=True)
    code = 0
    while not stopping:
        for child in children:
            assert child.process is not None
            if child.process.poll() is None:
                continue
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW] + [now]
            if len(child.restarts) > RESTART_LIMIT:
                print(f"neurondock: {child.name} keeps exiting; see {child.log_path}", file=sys.stderr)
                stopping, code = True, 1
                break
            print(f"neurondock: {child.name} exited ({child.process.returncode}); restarting", file=sys.stderr)
            child.start(env)
        time.sleep(0.2)
    print("neurondock: stopping", file=sys.stderr, flush=True)
    for child in reversed(children):
        child.stop()
    return code
