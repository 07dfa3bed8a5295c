"""``StoreCore``: where a bucket's files live, the lock that serialises commits in it, and the one commit step.

Layout under the store root::

    <root>/.locks/<bucket>.lock             flock held while committing in that bucket (cross-process)
    <root>/.trash/                          deleted buckets, removed after the rename
    <root>/<bucket>/keys/<name>.json        one sidecar per object: key, etag, size, metadata, tags, blob id.
                                            Replacing it (os.replace) is the commit point of a write.
    <root>/<bucket>/blobs/<id>              object bytes under a random id; unreferenced until committed
    <root>/<bucket>/uploads/<upload-id>/    upload.json, part-NNNNN.json sidecars and their part blobs
    <root>/<bucket>/completed/<upload-id>.json   what a completion answered, for a retried completion
    <root>/<bucket>/tmp/, trash/            sidecars being written; removed uploads

Keys never become paths: ``<name>`` is the key's UTF-8 bytes with everything outside ``[A-Za-z0-9_-]``
percent-encoded (so ``/``, ``.`` and ``..`` cannot form path segments), or ``~<sha256>`` when that would
be too long for a file name (the key is then read back from the sidecar).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from neurondock_platform.services.objects.blobs import BlobWriter, new_id, read_json
from neurondock_platform.services.objects.errors import NoSuchBucket, NoSuchKey, S3Error
from neurondock_platform.services.objects.keys import encode_key, validate_bucket_name
from neurondock_platform.services.objects.records import ObjectInfo, ObjectMeta

BUCKET_DIRS = ("keys", "blobs", "uploads", "completed", "tmp", "trash")

# Called under the bucket lock with the record about to be replaced (None when there is none); raises to
# refuse the commit (a failed precondition).
Precondition = Callable[[dict[str, Any] | None], None]


def http_time(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


class StoreCore:
    """The parts of the store every operation shares: paths, the bucket lock, sidecar commits, reads."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()

    def _bucket_dir(self, bucket: str) -> Path:
        validate_bucket_name(bucket)
        return self.root / bucket

    def _existing_bucket_dir(self, bucket: str) -> Path:
        path = self._bucket_dir(bucket)
        if not (path / "keys").is_dir():
            raise NoSuchBucket(bucket=bucket)
        return path

    @contextlib.contextmanager
    def _locked(self, bucket: str) -> Iterator[None]:
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{bucket}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _sidecar(self, bucket_dir: Path, key: str) -> Path:
        return bucket_dir / "keys" / f"{encode_key(key)}.json"

    def new_blob(self, bucket: str, algorithms: Iterable[str] = ("MD5",)) -> BlobWriter:
        """Open a writer for new object bytes; commit it with ``commit_object``."""
        path = self._existing_bucket_dir(bucket)
        return BlobWriter(path / "blobs" / new_id(), algorithms)

    @contextlib.contextmanager
    def _swap_sidecar(
        self,
        bucket: str,
        sidecar: Path,
        record: Mapping[str, Any],
        *,
        guard: Path,
        missing: S3Error,
        precondition: Precondition | None = None,
    ) -> Iterator[dict[str, Any] | None]:
        """Make ``record`` the sidecar at ``sidecar`` under the bucket lock while ``guard`` still exists.

        ``precondition`` sees the record being replaced under the same lock, so a conditional write
        cannot race another writer. Yields the record replaced (None for a new one) with the lock still
        held, so the caller can retire what the swap made obsolete in the same critical section; raises
        ``missing`` when a concurrent delete, complete or abort removed ``guard`` first.
        """
        tmp = self.root / bucket / "tmp" / f"{new_id()}.json"
        try:
            tmp.write_text(json.dumps(record, separators=(",", ":")))
        except FileNotFoundError as exc:
            raise NoSuchBucket(bucket=bucket) from exc
        try:
            with self._locked(bucket):
                if not guard.exists():
                    raise missing
                old = read_json(sidecar)
                if precondition is not None:
                    precondition(old)
                os.replace(tmp, sidecar)
                yield old
        finally:
            tmp.unlink(missing_ok=True)

    def _info(self, bucket: str, record: Mapping[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            bucket=bucket,
            key=str(record["key"]),
            size=int(record["size"]),
            etag=str(record["etag"]),
            last_modified=http_time(float(record["last_modified"])),
            meta=ObjectMeta.from_json(record),
            checksums=dict(record.get("checksums") or {}),
            parts_count=record.get("parts_count"),
            blob=str(record["blob"]),
            part_sizes=tuple(int(n) for n in record.get("part_sizes") or ()),
            part_checksums=tuple(dict(c) for c in record.get("part_checksums") or ()),
        )

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        """Return an object's metadata, raising ``NoSuchKey``."""
        path = self._existing_bucket_dir(bucket)
        record = read_json(self._sidecar(path, key))
        if record is None:
            raise NoSuchKey(key=key)
        return self._info(bucket, record)
