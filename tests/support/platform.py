"""Run the real platform (`neurondock up`) on a loopback port for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_for

ACCESS_KEY = "AKNDE2EROOT000000001"
SECRET_KEY = "e2e-secret-key-neurondock-000000000001"
ACCOUNT_ID = "210987654321"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Platform:
    """A `neurondock up` process tree and clients pointed at it."""

    data_dir: Path
    database_url: str = ""
    broker_url: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NEURONDOCK_"))}
        env.update(
            NEURONDOCK_DATA_DIR=str(self.data_dir),
            NEURONDOCK_PORT=str(self.port),
            NEURONDOCK_ROOT_ACCESS_KEY_ID=ACCESS_KEY,
            NEURONDOCK_ROOT_SECRET_ACCESS_KEY=SECRET_KEY,
            NEURONDOCK_ACCOUNT_ID=ACCOUNT_ID,
            NEURONDOCK_HOST_ID="host-e2e",
            # A queue of its own: platforms of concurrent test runs may share one Redis.
            NEURONDOCK_QUEUE=f"neurondock-{self.port}-{os.getpid()}",
            PYTHONUNBUFFERED="1",
        )
        if self.database_url:
            env["NEURONDOCK_DATABASE_URL"] = self.database_url
        if self.broker_url:
            env["NEURONDOCK_BROKER_URL"] = self.broker_url
        env.update(self.extra_env)
        return env

    def start_agent(self, host_id: str) -> subprocess.Popen[bytes]:
        """Start one more host agent (another 'host') sharing this platform's database."""
        env = self.env()
        env["NEURONDOCK_HOST_ID"] = host_id
        log = (self.data_dir / "logs" / f"agent-{host_id}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "neurondock_workers", "agent"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return proc

    def start(self, timeout: float = 90.0) -> None:
        """Start `neurondock up` and wait until it prints its banner."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "neurondock_platform.cli", "up"],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        lines: list[str] = []
        self.output = lines

        def pump(stream: Any) -> None:
            for line in stream:
                lines.append(line)
                if "Ctrl-C stops everything." in line:
                    ready.set()

        threading.Thread(target=pump, args=(self.process.stdout,), daemon=True).start()
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"neurondock up exited early:\n{''.join(lines)}\n{self.logs()}")
            return ready.is_set()

        wait_for(
            up, timeout, what="neurondock up to be ready", interval=0.02, state=lambda: "".join(lines) + self.logs()
        )

    def stop(self, timeout: float = 30.0) -> int:
        """Send SIGTERM to `up` and wait for the whole tree to exit."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def logs(self) -> str:
        """Every child's log, for failure messages."""
        out = []
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            out.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def errors(self, limit: int = 40) -> str:
        """The last ``limit`` error lines and tracebacks of every child's log, for a failed test's report."""
        picked: list[str] = []
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            in_traceback = False
            for line in path.read_text(errors="replace").splitlines():
                starts = line.startswith("Traceback") or " ERROR " in line or " CRITICAL " in line
                in_traceback = starts or (in_traceback and (line.startswith((" ", "\t")) or ":" in line[:60]))
                if in_traceback:
                    picked.append(f"{path.stem}: {line[:300]}")
        return "\n".join(picked[-limit:])

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def metrics(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> tuple[int, str, str]:
        """``GET /metrics`` signed with SigV4 (root by default); returns status, content type and text."""
        import http.client

        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(method="GET", url=self.url + "/metrics")
        SigV4Auth(Credentials(access_key, secret_key), "sagemaker", REGION).add_auth(request)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics", headers=dict(request.headers.items()))
            response = conn.getresponse()
            return response.status, response.getheader("content-type") or "", response.read().decode()
        finally:
            conn.close()

    def api_token(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> str:
        """An admin API bearer token (``POST /api/v1/tokens`` with the key pair), e.g. for the data plane."""
        import http.client
        import json

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = json.dumps({"access_key_id": access_key, "secret_access_key": secret_key})
            conn.request("POST", "/api/v1/tokens", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            issued = json.loads(response.read())
            assert response.status == 201, issued
            return str(issued["token"])
        finally:
            conn.close()

    def invoke_when_served(self, endpoint: str, body: str, timeout: float = 60.0) -> bytes:
        """Invoke until the endpoint answers (its replicas may still be coming back); return the body."""
        rt = self.client("sagemaker-runtime")

        def answer() -> bytes:
            resp = rt.invoke_endpoint(EndpointName=endpoint, ContentType="application/json", Body=body)
            return bytes(resp["Body"].read())

        return wait_for(
            answer,
            timeout,
            what=f"{endpoint} to answer",
            interval=0.1,
            ignoring=(rt.exceptions.ClientError,),
            state=self.logs,
        )

    def client(self, service: str, **kwargs: Any) -> Any:
        """A real boto3 client pointed at the platform."""
        import boto3
        from botocore.config import Config

        url = {"s3": self.url + "/s3", "sts": self.url + "/sts"}.get(service, self.url)
        return boto3.client(
            service,
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=kwargs.pop("access_key", ACCESS_KEY),
            aws_secret_access_key=kwargs.pop("secret_key", SECRET_KEY),
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, read_timeout=90, **kwargs),
        )

    def cli_env(self) -> dict[str, str]:
        """Environment for the AWS CLI: the export lines `up` prints."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL_SAGEMAKER=self.url,
            AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=self.url,
            AWS_ENDPOINT_URL_S3=self.url + "/s3",
            AWS_ENDPOINT_URL_STS=self.url + "/sts",
            AWS_ENDPOINT_URL_CLOUDWATCH=self.url,
            AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING=self.url,
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        )
        return env


def running_platform(data_dir: Path, **kwargs: Any) -> Iterator[Platform]:
    """Start a platform and stop it afterwards, for a fixture to ``yield from``."""
    plat = Platform(data_dir, **kwargs)
    plat.start()
    try:
        yield plat
    finally:
        plat.stop()
