"""A production-shaped neurondock on isolated hosts: PostgreSQL and Redis, an S3 store, API processes and
worker hosts, each in a network namespace of its own, every process started as an operator would.

    db      10.77.n.2   PostgreSQL and Redis of the fleet's own (see below)
    s3      10.77.n.3   ``neurondock store``: the embedded S3 store run standalone
    api<i>  10.77.n.1i  ``neurondock api``
    h<i>    10.77.n.2i  ``neurondock host`` (Celery worker + host agent, and the agent's replicas)

PostgreSQL and Redis are started here, in the ``db`` namespace, rather than reached on the machine:
the tests restart both mid-deploy, and the machine's servers are shared with every other test run.
The store is ``neurondock store`` rather than moto's server because it checks SigV4 against the same
keys as the APIs (moto accepts any key), so what it proves about access holds in production.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.multihost.netns import Network
from tests.support.platform import ACCESS_KEY, ACCOUNT_ID, REGION, SECRET_KEY
from tests.support.services import port_open
from tests.support.waiting import wait_for

API_PORT = 8780
STORE_PORT = 9000
PG_PORT = 5432
REDIS_PORT = 6379


def postgres_bin() -> Path | None:
    """The directory of this machine's PostgreSQL server binaries, if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def missing_servers() -> str | None:
    """Why the fleet's own PostgreSQL and Redis cannot be started here (None when they can)."""
    if postgres_bin() is None:
        return "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin)"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is missing: PostgreSQL must run as its own user"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user to run PostgreSQL as"
    return None


def _neurondock() -> list[str]:
    """The operator's command: the ``neurondock`` script of this environment."""
    script = Path(sys.executable).parent / "neurondock"
    return [str(script)] if script.exists() else [sys.executable, "-m", "neurondock_platform.cli"]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class FleetSpec:
    """How big a fleet to start, and the settings every neurondock process gets."""

    apis: int = 2
    hosts: int = 3
    host_chips: int = 4
    standby_pool_size: int = 0
    heartbeat_timeout: float = 3.0
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Fleet:
    """The running fleet: its network, its processes, and clients pointed at it from the test."""

    root: Path
    spec: FleetSpec = field(default_factory=FleetSpec)
    net: Network = field(default_factory=Network)
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    pg_dir: Path | None = None

    # --- addresses --------------------------------------------------------------------------------

    @property
    def db_address(self) -> str:
        return self.net.nodes["db"].address

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.db_address}:{PG_PORT}/postgres"

    @property
    def broker_url(self) -> str:
        return f"redis://{self.db_address}:{REDIS_PORT}/0"

    @property
    def store_url(self) -> str:
        return f"http://{self.net.nodes['s3'].address}:{STORE_PORT}/s3"

    def api_url(self, index: int) -> str:
        return f"http://{self.net.nodes[f'api{index}'].address}:{API_PORT}"

    @property
    def api_names(self) -> list[str]:
        return [f"api{i}" for i in range(1, self.spec.apis + 1)]

    @property
    def host_names(self) -> list[str]:
        return [f"h{i}" for i in range(1, self.spec.hosts + 1)]

    # --- configuration ----------------------------------------------------------------------------

    def env(self, role: str, **extra: str) -> dict[str, str]:
        """The configuration an operator gives one process: environment variables only."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NEURONDOCK_"))}
        base.update(
            NEURONDOCK_DATA_DIR=str(self.root / role),
            NEURONDOCK_DATABASE_URL=self.database_url,
            NEURONDOCK_BROKER_URL=self.broker_url,
            NEURONDOCK_S3_ENDPOINT_URL=self.store_url,
            # A `neurondock store` on the fleet's database: hosts read as the accounts, with their STS keys.
            NEURONDOCK_S3_STORE_KIND="neurondock",
            NEURONDOCK_ROOT_ACCESS_KEY_ID=ACCESS_KEY,
            NEURONDOCK_ROOT_SECRET_ACCESS_KEY=SECRET_KEY,
            NEURONDOCK_ACCOUNT_ID=ACCOUNT_ID,
            NEURONDOCK_REGION=REGION,
            NEURONDOCK_HEARTBEAT_TIMEOUT=str(self.spec.heartbeat_timeout),
            NEURONDOCK_STANDBY_POOL_SIZE=str(self.spec.standby_pool_size),
            # Hosts reach "the API" for anything they need from it through the first one.
            NEURONDOCK_PUBLIC_URL=self.api_url(1),
            PYTHONUNBUFFERED="1",
        )
        base.update(self.spec.env)
        base.update(extra)
        return base

    def _start(self, node: str, role: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[Any]:
        log_dir = self.root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with (log_dir / f"{role}.log").open("ab") as log:
            proc = self.net.popen(node, argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[role] = proc
        return proc

    # --- PostgreSQL and Redis -----------------------------------------------------------------------

    def _init_postgres(self) -> None:
        # PostgreSQL refuses to run as root and must reach its data dir: one outside the test's private tmp.
        self.pg_dir = Path(tempfile.mkdtemp(prefix="nd-fleet-pg-"))
        shutil.chown(self.pg_dir, "postgres", "postgres")
        bindir = postgres_bin()
        assert bindir is not None
        as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        result = subprocess.run(
            [*as_postgres, str(bindir / "initdb"), "-D", str(self.pg_dir / "data"), "-A", "trust", "-U", "postgres",
             "--no-sync"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        with (self.pg_dir / "data" / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all 10.77.{self.net.subnet}.0/24 trust\n")

    def start_postgres(self) -> None:
        """Start (or start again) the fleet's PostgreSQL in the db namespace."""
        bindir = postgres_bin()
        assert bindir is not None and self.pg_dir is not None
        argv = [
            "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
            str(bindir / "postgres"), "-D", str(self.pg_dir / "data"),
            "-c", f"listen_addresses={self.db_address}", "-c", f"port={PG_PORT}",
            "-c", f"unix_socket_directories={self.pg_dir}",
            # Test infrastructure, not the system under test: skip disk flushes, allow every pool.
            "-c", "fsync=off", "-c", "max_connections=400", "-c", "shared_buffers=64MB",
        ]  # fmt: skip
        self._start("db", "postgres", argv, os.environ.copy())
        wait_for(lambda: port_open(self.db_address, PG_PORT), 60, what="PostgreSQL", state=lambda: self.log("postgres"))

    def stop_postgres(self) -> None:
        """Fast shutdown: sessions are disconnected, the server stops cleanly."""
        proc = self.procs.pop("postgres")
        proc.send_signal(signal.SIGINT)
        proc.wait(30)

    def start_redis(self) -> None:
        """Start (or start again) the fleet's Redis, keeping nothing on disk, like the machine's."""
        argv = [
            "redis-server", "--bind", self.db_address, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--dir", str(self.root),
        ]  # fmt: skip
        self._start("db", "redis", argv, os.environ.copy())
        wait_for(lambda: port_open(self.db_address, REDIS_PORT), 60, what="Redis", state=lambda: self.log("redis"))

    def stop_redis(self) -> None:
        proc = self.procs.pop("redis")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    # --- neurondock processes -------------------------------------------------------------------------

    def start_store(self) -> None:
        node = self.net.nodes["s3"]
        env = self.env("store", NEURONDOCK_HOST=node.address, NEURONDOCK_PORT=str(STORE_PORT))
        self._start("s3", "store", [*_neurondock(), "store"], env)
        ping = f"http://{node.address}:{STORE_PORT}/ping"
        wait_for(lambda: http_ok(ping), 60, what="the store", state=lambda: self.log("store"))

    def start_api(self, index: int, wait: bool = True) -> None:
        name = f"api{index}"
        node = self.net.nodes[name]
        env = self.env(name, NEURONDOCK_HOST=node.address, NEURONDOCK_PORT=str(API_PORT),
                       NEURONDOCK_PUBLIC_URL=self.api_url(index))  # fmt: skip
        self._start(name, name, [*_neurondock(), "api"], env)
        if wait:
            self.wait_api(index)

    def wait_api(self, index: int) -> None:
        wait_for(
            lambda: http_ok(self.api_url(index) + "/ping"),
            60,
            what=f"api{index}",
            state=lambda: self.log(f"api{index}"),
        )

    def start_host(self, name: str) -> None:
        node = self.net.nodes[name]
        env = self.env(
            name,
            NEURONDOCK_HOST_ID=f"host-{name}",
            NEURONDOCK_HOST_ADDRESS=node.address,
            NEURONDOCK_HOST_CHIPS=str(self.spec.host_chips),
        )
        self._start(name, name, [*_neurondock(), "host"], env)

    def migrate(self) -> None:
        """``neurondock db upgrade`` once, from the first API's host, before any API starts."""
        proc = self.net.popen("api1", [*_neurondock(), "db", "upgrade"], env=self.env("migrate"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out

    def start(self) -> Fleet:
        """Bring the whole fleet up and wait until every API answers and every host heartbeats."""
        self.net.open()
        self.net.add("db", 2)
        self.net.add("s3", 3)
        for i in range(1, self.spec.apis + 1):
            self.net.add(f"api{i}", 10 + i)
        for i, name in enumerate(self.host_names, start=1):
            self.net.add(name, 20 + i)
        self._init_postgres()
        self.start_postgres()
        self.start_redis()
        self.migrate()
        self.start_store()
        for i in range(1, self.spec.apis + 1):
            self.start_api(i, wait=False)
        for name in self.host_names:
            self.start_host(name)
        for i in range(1, self.spec.apis + 1):
            self.wait_api(i)
        self.wait_hosts(self.host_names)
        return self

    def close(self) -> None:
        self.net.close()
        if self.pg_dir is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)
            self.pg_dir = None

    # --- observing ----------------------------------------------------------------------------------

    def sql(self, query: str, **params: Any) -> list[Any]:
        """Run one query against the fleet's database from the test."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.database_url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(query), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            engine.dispose()

    def live_hosts(self) -> set[str]:
        rows = self.sql(
            "select id from hosts where last_heartbeat > now() - make_interval(secs => :t)",
            t=self.spec.heartbeat_timeout,
        )
        return {r[0] for r in rows}

    def wait_hosts(self, names: list[str], timeout: float = 90) -> None:
        wanted = {f"host-{n}" for n in names}
        wait_for(lambda: wanted <= self.live_hosts(), timeout, what=f"hosts {sorted(wanted)}", state=self.logs)

    def log(self, role: str, tail: int = 4000) -> str:
        path = self.root / "logs" / f"{role}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def logs(self) -> str:
        paths = sorted(self.root.glob("*/logs/*.log")) + sorted((self.root / "logs").glob("*.log"))
        return "\n".join(
            f"--- {p.parent.parent.name}/{p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in paths
        )

    # --- clients ------------------------------------------------------------------------------------

    def client(self, service: str, api: int = 1, **config: Any) -> Any:
        """A real boto3 client; ``s3`` goes to the fleet's store, everything else to API ``api``."""
        import boto3
        from botocore.config import Config

        url = self.store_url if service == "s3" else self.api_url(api)
        options: dict[str, Any] = {"retries": {"max_attempts": 2, "mode": "standard"}, "read_timeout": 90}
        options.update(config)
        if service == "s3":
            options["s3"] = {"addressing_style": "path"}
        return boto3.client(
            service,
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(**options),
        )

    def replicas(self, endpoint: str) -> list[dict[str, Any]]:
        rows = self.sql(
            "select r.id, r.host_id, r.state, r.desired_state, r.address, r.pid from replicas r "
            "join endpoints e on e.id = r.endpoint_id where e.name = :n order by r.id",
            n=endpoint,
        )
        keys = ("id", "host_id", "state", "desired_state", "address", "pid")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def describe(fleet: Fleet) -> str:
    """A one-screen summary for failure messages."""
    return json.dumps({"nodes": {n: v.address for n, v in fleet.net.nodes.items()}}, indent=1)


@contextlib.contextmanager
def running_fleet(root: Path, spec: FleetSpec | None = None) -> Any:
    """Start a fleet and always take it down again (processes, namespaces, PostgreSQL's directory)."""
    fleet = Fleet(root, spec or FleetSpec())
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.close()
