"""Fill a sandbox's slot from the host side: the artifact's files, and the artifact's shared weights.

A sandboxed replica sees its model at ``/opt/ml/model`` and its weights directory at
``/opt/ml/weights`` — bind mounts of its slot (``hosting/standby.py``). The slot's model directory
is a tree of hard links to the artifact's one unpacked copy on the host (no bytes copied; the
sandbox mounts it read-only). The weights directory is the replica's own; sharing a weights file
between replicas of one artifact (``hosting/weights.py``) therefore goes through the host cache:
the first replica writes ``<key>-<layout>.pt`` into its slot, the agent links it into the cache
(``harvest``), makes it read-only and root's, and links it into the slots of the artifact's other
replicas (``distribute``), which map it instead of writing their own. A key names one artifact as
loaded by one account with one environment (``weights_cache.weights_key``), so only that account's
replicas of that artifact ever share a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

WEIGHTS_SUFFIX = ".pt"


def link_tree(source: Path, dest: Path) -> None:
    """Recreate ``source``'s directories under ``dest`` and hard-link its files there (copy across devices)."""
    dest.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(source):
        relative = Path(dirpath).relative_to(source)
        for name in dirnames:
            (dest / relative / name).mkdir(exist_ok=True)
        for name in filenames:
            src, dst = Path(dirpath) / name, dest / relative / name
            try:
                os.link(src, dst)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                shutil.copy2(src, dst)


def _weights_files(directory: Path, key: str) -> dict[str, Path]:
    try:
        entries = list(directory.iterdir())
    except OSError:
        return {}
    return {
        p.name: p
        for p in entries
        if p.name.startswith(f"{key}-") and p.name.endswith(WEIGHTS_SUFFIX) and p.is_file() and not p.is_symlink()
    }


def cached(cache_dir: Path, key: str) -> bool:
    """Whether the host cache already holds a weights file of ``key``."""
    return bool(_weights_files(cache_dir, key))


def harvest(slot_weights: Path, cache_dir: Path, key: str) -> list[Path]:
    """Link the weights files a replica wrote into its slot into the host cache; return what was added."""
    added: list[Path] = []
    have = _weights_files(cache_dir, key)
    for name, path in _weights_files(slot_weights, key).items():
        if name in have:
            continue
        cache_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            # Read-only and the platform's: no replica may change a file other replicas map.
            if os.geteuid() == 0:
                os.chown(path, 0, 0, follow_symlinks=False)
            os.chmod(path, 0o444, follow_symlinks=False)
            os.link(path, cache_dir / name)
            added.append(cache_dir / name)
    return added


def distribute(cache_dir: Path, slot_weights: Path, key: str) -> list[Path]:
    """Link the host cache's weights files of ``key`` into a replica's slot; return what was added."""
    added: list[Path] = []
    have = _weights_files(slot_weights, key)
    for name, path in _weights_files(cache_dir, key).items():
        if name not in have:
            with contextlib.suppress(OSError):
                os.link(path, slot_weights / name)
                added.append(slot_weights / name)
    return added
