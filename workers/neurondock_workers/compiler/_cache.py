"""Compile cache keyed by input hash, options, input shapes, target and compiler version."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._grammar import CompilerOptions, InputShape

ARTIFACT = "artifact.tar.gz"
RESULT = "result.json"
LOG = "compile.log"


@dataclass(frozen=True)
class CacheEntry:
    """A cached compile: the artifact, its log and the CompileResult fields."""

    artifact: Path
    log: Path
    result: dict[str, Any]


class CompileCache:
    """A directory of finished compiles; entries are written atomically and never modified."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(
        input_sha256: str,
        options: CompilerOptions,
        specs: Sequence[InputShape],
        target: str,
        compiler_version: str,
    ) -> str:
        """Return the cache key for one compile."""
        material = json.dumps(
            {
                "input": input_sha256,
                "options": options.cache_key(),
                "inputs": [s.to_dict() for s in specs],
                "target": target,
                "compiler": compiler_version,
            },
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def get(self, key: str) -> CacheEntry | None:
        """Return the entry for `key`, or None."""
        entry = self.root / key
        try:
            result = json.loads((entry / RESULT).read_text())
        except (OSError, ValueError):
            return None
        artifact = entry / ARTIFACT
        return CacheEntry(artifact, entry / LOG, result) if artifact.is_file() else None

    def put(self, key: str, artifact: Path, log: Path, result: dict[str, Any]) -> None:
        """Store a finished compile (a concurrent put of the same key keeps the first)."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.root))
        try:
            shutil.copyfile(artifact, staging / ARTIFACT)
            shutil.copyfile(log, staging / LOG)
            (staging / RESULT).write_text(json.dumps(result, default=str))
            # Another worker may have stored the same key first: equal inputs, equal content.
            with contextlib.suppress(OSError):
                os.rename(staging, self.root / key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
