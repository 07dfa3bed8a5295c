"""How the host agent builds one replica: its model data, its sandbox and limits, its environment.

The agent (``agent.py``) decides *when* a replica starts, is recycled or stops; this module holds
*what* starts: nothing here reads or writes the agent's records or the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from neurondock_platform.config import Settings
from neurondock_workers import sandbox as sandboxing
from neurondock_workers.hosting.artifacts import ModelDataError, ObjectStore, fetch_model
from neurondock_workers.hosting.environment import replica_environment
from neurondock_workers.hosting.process import HeadStart, ReplicaProcess, ReplicaStartError, append_log
from neurondock_workers.hosting.s3 import StoreOwner
from neurondock_workers.sandbox import WEIGHTS_DIR, Sandbox

logger = logging.getLogger(__name__)


class ReplicaLauncher:
    """Fetches a replica's model data as its owner and builds its (sandboxed) process."""

    def __init__(
        self,
        settings: Settings,
        sandbox: Sandbox,
        stores: Callable[[StoreOwner], ObjectStore],
        host_dir: Path,
        *,
        process_cls: type[ReplicaProcess] = ReplicaProcess,
        fetch_retry_seconds: float = 60.0,
    ) -> None:
        self.settings = settings
        # How user code runs on this host (probed once per process; docs/sandbox.md).
        self.sandbox = sandbox
        # Object readers acting as a model's owner (s3.ModelStores): never the platform's keys.
        self.stores = stores
        self.process_cls = process_cls
        self.fetch_retry_seconds = fetch_retry_seconds
        self.cache_dir = host_dir / "model-data"
        self.weights_dir = host_dir / "weights"
        self.slots_dir = host_dir / "sandboxes"

    def environment(
        self,
        container: Mapping[str, Any],
        model_dir: Path,
        replica_id: int,
        neuron_assignment: Mapping[str, Any] | None = None,
        weights_key: str | None = None,
        *,
        sandboxed: bool | None = None,
    ) -> dict[str, str]:
        """Return the environment a replica runs with: the container's Environment over SageMaker defaults.

        ``model_dir`` is the host path; the environment names directories as the replica sees them.
        """
        inside = self.sandbox.enabled if sandboxed is None else sandboxed
        view = ReplicaProcess.view_of(model_dir, self.sandbox if inside else None)
        weights = Path(WEIGHTS_DIR) if inside else self.weights_dir
        return replica_environment(self.settings, container, view, replica_id, neuron_assignment, weights_key, weights)

    def sandbox_for(self, *, trusted: bool) -> Sandbox | None:
        """The sandbox a replica runs in, None to run it unsandboxed, or ReplicaStartError."""
        if self.sandbox.enabled:
            return self.sandbox
        if self.sandbox.mode == sandboxing.MODE_OFF or trusted:
            return None
        raise ReplicaStartError(
            f"The sandbox for model code cannot start on host {self.settings.host_id} "
            f"({self.sandbox.reason}), and only admin accounts may run model code outside it. "
            "Ask the operator to install bubblewrap, or to start neurondock with "
            "--unsafe-unsandboxed-user-code (NEURONDOCK_UNSAFE_UNSANDBOXED_USER_CODE=1)."
        )

    def process(
        self,
        replica_id: int,
        container: Mapping[str, Any],
        neuron_assignment: Mapping[str, Any],
        *,
        instance_type: str,
        trusted: bool,
        model_dir: Path,
        log_path: Path,
        weights: str | None,
    ) -> ReplicaProcess:
        """Build the replica process of one launch, sandboxed as this host and its owner require."""
        sandbox = self.sandbox_for(trusted=trusted)
        environment = container.get("Environment") or {}
        share = int(neuron_assignment.get("replicas_per_instance") or 0) or model_server_workers(environment)
        limits = sandboxing.limits_for(instance_type, share, per_uid=sandbox.per_uid if sandbox is not None else False)
        if sandbox is None:
            append_log(log_path, f"neurondock: running unsandboxed: the sandbox is {self.sandbox.describe()}")
        env = self.environment(
            container, model_dir, replica_id, neuron_assignment, weights, sandboxed=sandbox is not None
        )
        return self.process_cls(
            replica_id,
            model_dir,
            log_path,
            env,
            bind=self.settings.host_address,
            sandbox=sandbox,
            network=not container.get("EnableNetworkIsolation"),
            limits=limits,
            weights=(self.weights_dir, weights) if weights else None,
            slots_dir=self.slots_dir,
        )

    def head_start(
        self,
        replica_id: int,
        container: Mapping[str, Any],
        neuron_assignment: Mapping[str, Any],
        *,
        trusted: bool,
        log_path: Path,
    ) -> HeadStart | None:
        """Acquire a replica's interpreter before its model data is fetched (None: ``process`` will say why not).

        A cold start's torch import then overlaps the download; the interpreter starts with the
        environment ``process`` builds once the data is there, up to where the model lies (which it
        reads only once activated).
        """
        try:
            sandbox = self.sandbox_for(trusted=trusted)
        except ReplicaStartError:
            return None
        env = self.environment(container, self.cache_dir, replica_id, neuron_assignment, sandboxed=sandbox is not None)
        return self.process_cls.head_start(
            replica_id,
            log_path,
            env,
            sandbox=sandbox,
            network=not container.get("EnableNetworkIsolation"),
            slots_dir=self.slots_dir,
        )

    def _fetch_once(self, owner: StoreOwner, url: str, limit: int) -> tuple[Path, str]:
        return fetch_model(self.stores(owner), url, self.cache_dir, max_bytes=limit)

    def fetch(self, owner: StoreOwner, url: str, cancel: threading.Event) -> tuple[Path, str]:
        """Fetch model data as its owner, riding out a store that is briefly unreachable (an API restart)."""
        deadline = time.monotonic() + self.fetch_retry_seconds
        delay = 0.1
        limit = self.settings.max_model_extracted_mb * 1024 * 1024
        while True:
            try:
                return self._fetch_once(owner, url, limit)
            except ModelDataError as exc:
                if not exc.transient or time.monotonic() + delay > deadline or cancel.is_set():
                    raise
                logger.info("model data store unreachable (%s); retrying in %.1fs", exc.message, delay)
                if cancel.wait(delay):
                    raise
                delay = min(delay * 2, 2.0)


def model_server_workers(environment: Mapping[str, Any]) -> int:
    """SAGEMAKER_MODEL_SERVER_WORKERS of a container's Environment (1 when unset or not a count)."""
    raw = str(environment.get("SAGEMAKER_MODEL_SERVER_WORKERS") or "1").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1
