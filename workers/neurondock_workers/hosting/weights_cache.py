"""The host's cache of shared weight files: what the agent tells a replica, and what it cleans up.

Torch-free on purpose: the host agent imports this, the replica's ``hosting/weights.py`` does the
mapping. A file is named ``<key>-<layout>.pt``; the key identifies the artifact (S3 URL and ETag)
and the container environment that loaded it, so two variants of one archive whose ``model_fn``
reads the environment never meet in one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

CACHE_ENV = "NEURONDOCK_WEIGHTS_CACHE"
KEY_ENV = "NEURONDOCK_WEIGHTS_KEY"
SHARE_ENV = "NEURONDOCK_SHARE_WEIGHTS"
# Seconds a sandboxed replica waits for a sibling's weights file before writing its own (hosting/slots.py).
WAIT_ENV = "NEURONDOCK_WEIGHTS_WAIT"


def weights_key(artifact_digest: str, environment: Mapping[str, Any] | None, account_id: str = "") -> str:
    """Return the cache key of an artifact as loaded by one account with one container environment."""
    material = {"artifact": artifact_digest, "env": dict(environment or {}), "account": account_id}
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def prune(cache_dir: Path, keep: Collection[str]) -> list[Path]:
    """Delete weight files whose key is not in ``keep``; return what went.

    A replica still mapping a deleted file keeps its pages (the inode lives on until unmapped); only
    a replica started later would write a fresh file, so ``keep`` must hold every running key.
    """
    removed: list[Path] = []
    if not cache_dir.is_dir():
        return removed
    for path in cache_dir.iterdir():
        key = path.name.lstrip(".").split("-", 1)[0]
        if key in keep:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed
