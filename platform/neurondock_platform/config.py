"""One frozen, typed settings object per process, built from ``NEURONDOCK_*`` variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_PORT = 8780
DEFAULT_REGION = "us-east-1"


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything a neurondock process needs to know, passed explicitly, never read at import time."""

    data_dir: Path = field(default_factory=lambda: Path("~/.neurondock").expanduser())
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    region: str = DEFAULT_REGION
    database_url: str = ""
    broker_url: str = ""
    # Celery queue name: platforms sharing one Redis (or one test machine) stay apart by it.
    queue: str = "neurondock"
    # Empty means the platform's own embedded store at ``<public_url>/s3``.
    s3_endpoint_url: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    public_url: str = ""
    root_access_key_id: str = ""
    root_secret_access_key: str = ""
    account_id: str = ""
    host_id: str = ""
    host_address: str = "127.0.0.1"
    # Emulated Inferentia chips this host offers (an ml.inf1.24xlarge needs 16 on one host).
    host_chips: int = 16
    host_vcpus: int = field(default_factory=lambda: os.cpu_count() or 2)
    host_memory_mb: int = 24 * 1024
    api_workers: int = 1
    # Seconds between the host agent's looks at its desired replicas.
    agent_poll_interval: float = 0.1
    heartbeat_timeout: float = 15.0
    model_timeout: float = 60.0
    # Seconds between writes of each API process's metric periods and invocation errors to the database.
    metrics_flush_seconds: float = 10.0
    max_payload_bytes: int = 6 * 1024 * 1024
    clock_skew_seconds: int = 15 * 60
    # A replica whose RSS grows this much past its size when it became ready asks to be replaced (0: never).
    replica_max_memory_growth_mb: int = 1024
    # Replicas of one artifact on a host map its weights from one file instead of holding a copy each.
    share_weights: bool = True
    # Warm interpreters (torch imported) kept for replica starts: 4 covers an ml.inf1.xlarge (0: none).
    standby_pool_size: int = 4
    # Sign-in attempts (console and POST /api/v1/tokens) per client address and per access key id, per
    # period; each API process counts on its own. 0 turns a limit off. A wrong secret costs this many.
    sign_in_limit_per_address: int = 30
    sign_in_limit_per_key: int = 10
    sign_in_limit_period_seconds: float = 60.0
    sign_in_failure_cost: int = 2
    # How stale a process's copy of the revoked-token list may get before it is re-read.
    token_revocation_refresh_seconds: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``NEURONDOCK_*`` variables, then apply explicit overrides."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            return env.get(f"NEURONDOCK_{name}", default)

        data_dir = Path(get("DATA_DIR", "~/.neurondock")).expanduser()
        base = cls(
            data_dir=data_dir,
            host=get("HOST", "127.0.0.1"),
            port=int(get("PORT", str(DEFAULT_PORT))),
            region=get("REGION", DEFAULT_REGION),
            database_url=get("DATABASE_URL"),
            broker_url=get("BROKER_URL"),
            queue=get("QUEUE", "neurondock"),
            s3_endpoint_url=get("S3_ENDPOINT_URL"),
            s3_access_key_id=get("S3_ACCESS_KEY_ID"),
            s3_secret_access_key=get("S3_SECRET_ACCESS_KEY"),
            public_url=get("PUBLIC_URL"),
            root_access_key_id=get("ROOT_ACCESS_KEY_ID"),
            root_secret_access_key=get("ROOT_SECRET_ACCESS_KEY"),
            account_id=get("ACCOUNT_ID"),
            host_id=get("HOST_ID"),
            host_address=get("HOST_ADDRESS", "127.0.0.1"),
            host_chips=int(get("HOST_CHIPS", "16")),
            api_workers=int(get("API_WORKERS", "1")),
            heartbeat_timeout=float(get("HEARTBEAT_TIMEOUT", "15")),
            metrics_flush_seconds=float(get("METRICS_FLUSH_SECONDS", "10")),
            replica_max_memory_growth_mb=int(get("REPLICA_MAX_MEMORY_GROWTH_MB", "1024")),
            share_weights=_flag(get("SHARE_WEIGHTS") or None, True),
            standby_pool_size=int(get("STANDBY_POOL_SIZE", "4")),
            sign_in_limit_per_address=int(get("SIGN_IN_LIMIT_PER_ADDRESS", "30")),
            sign_in_limit_per_key=int(get("SIGN_IN_LIMIT_PER_KEY", "10")),
            sign_in_limit_period_seconds=float(get("SIGN_IN_LIMIT_PERIOD_SECONDS", "60")),
            sign_in_failure_cost=int(get("SIGN_IN_FAILURE_COST", "2")),
            token_revocation_refresh_seconds=float(get("TOKEN_REVOCATION_REFRESH_SECONDS", "1")),
        )
        return base.with_overrides(**overrides)

    def with_overrides(self, **overrides: object) -> Settings:
        """Return a copy with the given fields replaced and the derived defaults filled in."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in clean:
            clean["data_dir"] = Path(str(clean["data_dir"])).expanduser()
        return replace(self, **clean).resolved()  # type: ignore[arg-type]

    def resolved(self) -> Settings:
        """Fill the defaults that depend on other fields (URLs under the data dir, host id)."""
        data_dir = self.data_dir.expanduser().absolute()
        return replace(
            self,
            data_dir=data_dir,
            database_url=self.database_url or f"sqlite:///{data_dir / 'neurondock.db'}",
            broker_url=self.broker_url or f"sqla+sqlite:///{data_dir / 'broker.db'}",
            public_url=self.public_url or f"http://{self.host}:{self.port}",
            host_id=self.host_id or f"host-{socket.gethostname()}",
        )

    @property
    def artifact_store_url(self) -> str:
        """S3 endpoint the workers use: an external one, or the embedded store."""
        return self.s3_endpoint_url or f"{self.public_url}/s3"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def replicas_dir(self) -> Path:
        return self.data_dir / "replicas"
