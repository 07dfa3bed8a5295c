"""Hosting: the host agent, the replica model server and the SageMaker PyTorch handler contract.

Names resolve lazily: ``python -m neurondock_workers.hosting.replica`` imports this package first,
and a replica should load neither the agent's SQLAlchemy nor a second copy of itself.
``handler`` (and so torch) is never imported here; only replica processes need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neurondock_workers.hosting.agent import HostAgent, replica_dir, run_agent
    from neurondock_workers.hosting.artifacts import (
        ModelDataError,
        UnsafeArchiveError,
        fetch_model,
        safe_extract,
    )
    from neurondock_workers.hosting.host import AgentConflictError
    from neurondock_workers.hosting.process import ReplicaProcess, ReplicaStartError

_EXPORTS = {
    "AgentConflictError": "host",
    "HostAgent": "agent",
    "ReplicaProcess": "process",
    "ReplicaStartError": "process",
    "replica_dir": "agent",
    "run_agent": "agent",
    "ModelDataError": "artifacts",
    "UnsafeArchiveError": "artifacts",
    "fetch_model": "artifacts",
    "safe_extract": "artifacts",
}

__all__ = [
    "AgentConflictError",
    "HostAgent",
    "ModelDataError",
    "ReplicaProcess",
    "ReplicaStartError",
    "UnsafeArchiveError",
    "fetch_model",
    "replica_dir",
    "run_agent",
    "safe_extract",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
