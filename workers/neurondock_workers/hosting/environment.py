"""The environment a replica process runs with: SageMaker's variables, the container's, and ours.

A SageMaker container sees its ``Environment`` over the toolkit's defaults; a replica here sees the
same, plus the platform's per-variant defaults (memory growth limit, weight sharing) that the
container may override, and never the platform's own credentials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import neurondock_platform
import neurondock_workers
from neurondock_platform.config import Settings
from neurondock_workers.hosting import neuron
from neurondock_workers.hosting.memory import LIMIT_ENV
from neurondock_workers.hosting.weights_cache import CACHE_ENV, KEY_ENV, SHARE_ENV

# The replica's intra-op thread count; set at run time, so warm standby interpreters (imported with
# OMP_NUM_THREADS=1) still fit every replica.
THREADS_ENV = "NEURONDOCK_TORCH_THREADS"
# The model timeout (seconds): an execution running past it ends its replica (replica.HangWatchdog).
TIMEOUT_ENV = "NEURONDOCK_MODEL_TIMEOUT"


def replica_environment(
    settings: Settings,
    container: Mapping[str, Any],
    model_dir: Path,
    replica_id: int,
    neuron_assignment: Mapping[str, Any] | None = None,
    weights_key: str | None = None,
    weights_dir: Path | None = None,
) -> dict[str, str]:
    """Return the environment a replica runs with: the container's Environment over SageMaker defaults."""
    # Never hand the platform's own credentials to user code.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONDOCK_", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join([*_source_roots(), *filter(None, [env.get("PYTHONPATH")])])
    env.update(
        {
            # Set before the interpreter starts: torch reads OMP_NUM_THREADS at import.
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "SAGEMAKER_REGION": settings.region,
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(int(settings.model_timeout)),
            "SAGEMAKER_BASE_DIR": str(model_dir.parent),
            "SM_MODEL_DIR": str(model_dir),
            # Platform defaults a container's Environment may override for its variant.
            LIMIT_ENV: str(settings.replica_max_memory_growth_mb),
            SHARE_ENV: "1",
        }
    )
    environment = container.get("Environment") or {}
    env.update({str(k): str(v) for k, v in environment.items()})
    if not settings.share_weights:
        env[SHARE_ENV] = "0"
    elif weights_key and weights_dir is not None:
        env[CACHE_ENV] = str(weights_dir)
        env[KEY_ENV] = weights_key
    # The SDK sends /opt/ml/model/code; here the code lives under this replica's model dir.
    env["SAGEMAKER_SUBMIT_DIRECTORY"] = str(model_dir / "code")
    env["NEURONDOCK_REPLICA_ID"] = str(replica_id)
    # The platform's own limit, which the router enforces too: a container's Environment cannot move it.
    env[TIMEOUT_ENV] = str(settings.model_timeout)
    cores = (neuron_assignment or {}).get("cores")
    if cores:
        # libnrt semantics: the process owns exactly these cores (docs/runtime.md, "NeuronCore ownership").
        env["NEURON_RT_VISIBLE_CORES"] = neuron.core_range(cores)
    env[THREADS_ENV] = str(torch_threads(environment))
    return env


def torch_threads(environment: Mapping[str, Any]) -> int:
    """Return the intra-op threads a replica runs with: the container's ``OMP_NUM_THREADS``, else one.

    One thread per replica process is the default on every instance type: a replica on NeuronCores
    stands for one core's worth of compute, and on a CPU instance more workers beat more threads per
    worker (docs/runtime.md, "NeuronCore ownership"); measured here, two threads halved a tiny MLP's
    in-process rate. ``SAGEMAKER_MODEL_SERVER_WORKERS`` adds workers instead.
    """
    own = str(environment.get("OMP_NUM_THREADS") or "").strip()
    return int(own) if own.isdigit() and int(own) > 0 else 1


def _source_roots() -> list[str]:
    # A source checkout run without an install still has to import us in the replica. Installed
    # packages are found anyway, and site-packages on PYTHONPATH would outrank the standard library.
    roots = set()
    for package in (neurondock_platform, neurondock_workers):
        for entry in package.__path__:
            root = Path(entry).resolve().parent
            if root.name not in ("site-packages", "dist-packages"):
                roots.add(str(root))
    return sorted(roots)
