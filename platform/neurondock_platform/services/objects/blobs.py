"""The store's on-disk primitives: blob writers that hash on the way, and the JSON sidecars beside them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from neurondock_platform.services.objects.checksums import Digests

_COPY_CHUNK = 1024 * 1024


def new_id() -> str:
    return secrets.token_hex(16)


def write_json_atomic(tmp_dir: Path, target: Path, data: Mapping[str, Any]) -> None:
    tmp = tmp_dir / f"{new_id()}.json"
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, target)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class BlobWriter:
    """New bytes written to an unreferenced file, hashed on the way; discarded unless committed."""

    def __init__(self, path: Path, algorithms: Iterable[str]) -> None:
        self.path = path
        self.digests = Digests(algorithms)
        self._file: IO[bytes] | None = open(path, "xb")  # noqa: SIM115 (closed in close/discard)
        self.committed = False

    @property
    def size(self) -> int:
        return self.digests.size

    @property
    def name(self) -> str:
        return self.path.name

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("blob is closed")
        self.digests.update(data)
        self._file.write(data)

    def write_from(self, source: IO[bytes], length: int | None = None) -> None:
        """Copy ``length`` bytes (or all) from an open file, hashing them."""
        if not self.digests.active and self._copy_in_kernel(source, length):
            return
        remaining = length
        while remaining is None or remaining > 0:
            chunk = source.read(_COPY_CHUNK if remaining is None else min(_COPY_CHUNK, remaining))
            if not chunk:
                break
            self.write(chunk)
            if remaining is not None:
                remaining -= len(chunk)

    def _copy_in_kernel(self, source: IO[bytes], length: int | None) -> bool:
        # Assembling a multipart object needs no hashing: let the kernel copy (copy_file_range).
        if self._file is None or length is not None or not hasattr(os, "copy_file_range"):
            return False
        self._file.flush()
        src, dst = source.fileno(), self._file.fileno()
        copied = 0
        try:
            while True:
                n = os.copy_file_range(src, dst, 64 * 1024 * 1024)
                if n == 0:
                    break
                copied += n
        except OSError:
            if copied:
                raise
            return False
        self.digests.size += copied
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        self.close()
        unlink(self.path)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.committed:
            self.close()
        else:
            self.discard()
