"""One frozen, typed settings object per process, built from ``NEURONDOCK_*`` variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_PORT = 8780
DEFAULT_REGION = "us-east-1"


# How often a doorbell's listener looks unrung (wakeup.py): writers on other machines (a shared
# PostgreSQL) ring nobody here, so every second; SQLite is one machine's, where every writer rings
# and the slow look only covers a lost ring.
SHARED_DB_IDLE_POLL = 1.0
LOCAL_DB_IDLE_POLL = 10.0


def idle_poll(database_url: str) -> float:
    """Seconds between unrung looks of a listener on this database (the default, SQLite, is local)."""
    return LOCAL_DB_IDLE_POLL if not database_url or database_url.startswith("sqlite") else SHARED_DB_IDLE_POLL


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
    # What the store at s3_endpoint_url is: "external" (any S3; accounts reach it with the store
    # credentials an admin set, or the buckets mapped to them) or "neurondock" (a standalone
    # ``neurondock store`` sharing this database, which verifies the accounts' own STS credentials).
    s3_store_kind: str = "external"
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
    # Between passes of an agent with nothing in flight; a doorbell wakes it sooner (wakeup.py).
    # ``from_env`` defaults it by database (``idle_poll``).
    agent_idle_poll_interval: float = 1.0
    heartbeat_timeout: float = 15.0
    # Seconds a SIGTERMed supervisor (or agent) gives its children before SIGKILL: under Docker's
    # default 10 s stop timeout, so a container stop never ends in the runtime's own SIGKILL.
    stop_timeout: float = 8.0
    model_timeout: float = 60.0
    # Seconds between writes of each API process's metric periods and invocation errors to the database.
    metrics_flush_seconds: float = 10.0
    # Operator knob for demos and tests: CloudWatch alarm periods and Application Auto Scaling cooldowns
    # run this many times faster (1 = AWS's timing; docs/autoscaling.md, "The speed-up knob").
    scaling_speedup: float = 1.0
    max_payload_bytes: int = 6 * 1024 * 1024
    clock_skew_seconds: int = 15 * 60
    # A replica whose RSS grows this much past its size when it became ready asks to be replaced (0: never).
    replica_max_memory_growth_mb: int = 1024
    # Replicas of one artifact on a host map its weights from one file instead of holding a copy each.
    share_weights: bool = True
    # Warm interpreters (torch imported) kept for replica starts (0: none); 4 covers an ml.inf1.xlarge
    # starting at once. By default the host agent keeps them only while it serves no replica, so the
    # first endpoint starts warm and a serving host holds no interpreter it may never use (about 220 MB
    # each, docs/measured.md); ``standby_while_serving`` keeps them while replicas serve too, for warm
    # scale-out and replacements (docs/runtime.md, "Start-up").
    standby_pool_size: int = 1
    standby_while_serving: bool = False
    # User code (replicas, compile children) runs in bubblewrap (docs/sandbox.md). True runs it as the
    # platform's own user instead — able to read every account's data — for every account.
    unsafe_unsandboxed_user_code: bool = False
    # The bubblewrap executable (a name on PATH or a path).
    sandbox_bwrap: str = "bwrap"
    # A model.tar.gz may unpack to at most this much on a host.
    max_model_extracted_mb: int = 10 * 1024
    # Sign-in attempts (console and POST /api/v1/tokens) per client address and per (address, access
    # key id), per period; each API process counts on its own. 0 turns a limit off. A wrong secret
    # costs ``sign_in_failure_cost``.
    sign_in_limit_per_address: int = 30
    sign_in_limit_per_address_and_key: int = 10
    sign_in_limit_period_seconds: float = 60.0
    sign_in_failure_cost: int = 2
    # How stale a process's copy of the revoked-token list may get before it is re-read.
    token_revocation_refresh_seconds: float = 1.0
    # Serve /metrics to anonymous scrapers (every account's endpoint names): only where the network
    # keeps /metrics private. Otherwise it needs SigV4 or an admin API token.
    metrics_public: bool = False
    # The longest AssumeRole session (every role's MaxSessionDuration; AWS allows 3600 to 43200).
    sts_max_session_seconds: int = 43200
    # Data Capture (docs/data-capture.md): each API process writes its captured records every this many
    # seconds, or sooner once this many are waiting; it holds at most this many records and megabytes
    # (more are dropped and counted, never waited for).
    capture_flush_seconds: float = 5.0
    capture_batch_records: int = 1000
    capture_queue_records: int = 10_000
    capture_queue_mb: int = 64
    # Seeds the per-request sampler (tests); empty draws a fresh seed.
    capture_sampling_seed: int | None = None

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
            s3_store_kind=get("S3_STORE_KIND", "external"),
            public_url=get("PUBLIC_URL"),
            root_access_key_id=get("ROOT_ACCESS_KEY_ID"),
            root_secret_access_key=get("ROOT_SECRET_ACCESS_KEY"),
            account_id=get("ACCOUNT_ID"),
            host_id=get("HOST_ID"),
            host_address=get("HOST_ADDRESS", "127.0.0.1"),
            host_chips=int(get("HOST_CHIPS", "16")),
            api_workers=int(get("API_WORKERS", "1")),
            heartbeat_timeout=float(get("HEARTBEAT_TIMEOUT", "15")),
            agent_idle_poll_interval=float(get("AGENT_IDLE_POLL_INTERVAL", str(idle_poll(get("DATABASE_URL"))))),
            stop_timeout=float(get("STOP_TIMEOUT", "8")),
            model_timeout=float(get("MODEL_TIMEOUT", "60")),
            metrics_flush_seconds=float(get("METRICS_FLUSH_SECONDS", "10")),
            scaling_speedup=max(1.0, float(get("SCALING_SPEEDUP", "1"))),
            replica_max_memory_growth_mb=int(get("REPLICA_MAX_MEMORY_GROWTH_MB", "1024")),
            share_weights=_flag(get("SHARE_WEIGHTS") or None, True),
            standby_pool_size=int(get("STANDBY_POOL_SIZE", "1")),
            standby_while_serving=_flag(get("STANDBY_WHILE_SERVING") or None, False),
            unsafe_unsandboxed_user_code=_flag(get("UNSAFE_UNSANDBOXED_USER_CODE") or None, False),
            sandbox_bwrap=get("SANDBOX_BWRAP", "bwrap"),
            max_model_extracted_mb=int(get("MAX_MODEL_EXTRACTED_MB", str(10 * 1024))),
            sign_in_limit_per_address=int(get("SIGN_IN_LIMIT_PER_ADDRESS", "30")),
            sign_in_limit_per_address_and_key=int(get("SIGN_IN_LIMIT_PER_ADDRESS_AND_KEY", "10")),
            sign_in_limit_period_seconds=float(get("SIGN_IN_LIMIT_PERIOD_SECONDS", "60")),
            sign_in_failure_cost=int(get("SIGN_IN_FAILURE_COST", "2")),
            token_revocation_refresh_seconds=float(get("TOKEN_REVOCATION_REFRESH_SECONDS", "1")),
            sts_max_session_seconds=int(get("STS_MAX_SESSION_SECONDS", "43200")),
            metrics_public=_flag(get("METRICS_PUBLIC") or None, False),
            capture_flush_seconds=float(get("CAPTURE_FLUSH_SECONDS", "5")),
            capture_batch_records=int(get("CAPTURE_BATCH_RECORDS", "1000")),
            capture_queue_records=int(get("CAPTURE_QUEUE_RECORDS", "10000")),
            capture_queue_mb=int(get("CAPTURE_QUEUE_MB", "64")),
            capture_sampling_seed=int(seed) if (seed := get("CAPTURE_SAMPLING_SEED")) else None,
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
        if self.s3_store_kind not in ("external", "neurondock"):
            raise ValueError(f"NEURONDOCK_S3_STORE_KIND must be 'external' or 'neurondock', not {self.s3_store_kind!r}")
        return replace(
            self,
            data_dir=data_dir,
            database_url=self.database_url or f"sqlite:///{data_dir / 'neurondock.db'}",
            broker_url=self.broker_url or f"sqla+sqlite:///{data_dir / 'broker.db'}",
            public_url=self.public_url or f"http://{self.host}:{self.port}",
            host_id=self.host_id or f"host-{socket.gethostname()}",
        )

    @property
    def store_knows_accounts(self) -> bool:
        """Whether the artifact store verifies the platform's accounts' keys (embedded or a neurondock store)."""
        return not self.s3_endpoint_url or self.s3_store_kind == "neurondock"

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
