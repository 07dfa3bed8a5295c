"""``ObjectStore``: buckets and objects on local disk, safe for many threads and processes at once.

It knows nothing of accounts or HTTP: ``buckets`` adds ownership (the ``buckets`` table) on top. Where its
files live and how a write commits is in ``core``; multipart uploads are in ``uploads``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from neurondock_platform.services.objects.blobs import BlobWriter, new_id, read_json, unlink, write_json_atomic
from neurondock_platform.services.objects.checksums import verify_checksums
from neurondock_platform.services.objects.conditions import DeleteCondition, WriteCondition
from neurondock_platform.services.objects.core import BUCKET_DIRS
from neurondock_platform.services.objects.errors import BucketNotEmpty, NoSuchBucket, NoSuchKey
from neurondock_platform.services.objects.keys import check_metadata, decode_name, validate_key
from neurondock_platform.services.objects.records import ListPage, ObjectInfo, ObjectMeta
from neurondock_platform.services.objects.tags import Tags, validate_tags
from neurondock_platform.services.objects.uploads import (
    MAX_OBJECT_SIZE,
    MAX_PART_NUMBER,
    MIN_PART_SIZE,
    UploadStore,
)

MAX_PUT_SIZE = 5 * 1024**3

__all__ = ["MAX_OBJECT_SIZE", "MAX_PART_NUMBER", "MAX_PUT_SIZE", "MIN_PART_SIZE", "ObjectStore"]


class ObjectStore(UploadStore):
    """Buckets and objects under one directory; safe for many threads and processes at once."""

    # -- buckets

    def create_bucket(self, bucket: str) -> bool:
        """Create the bucket's directories; return False if it already existed."""
        path = self._bucket_dir(bucket)
        existed = (path / "keys").is_dir()
        for sub in BUCKET_DIRS:
            (path / sub).mkdir(parents=True, exist_ok=True)
        return not existed

    def bucket_exists(self, bucket: str) -> bool:
        return (self._bucket_dir(bucket) / "keys").is_dir()

    def list_bucket_names(self) -> list[str]:
        """Return the buckets present on disk, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / "keys").is_dir())

    def is_empty(self, bucket: str) -> bool:
        path = self._existing_bucket_dir(bucket)
        with os.scandir(path / "keys") as it:
            return not any(e.name.endswith(".json") for e in it)

    def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket (and any unfinished uploads), raising ``BucketNotEmpty`` otherwise."""
        path = self._bucket_dir(bucket)
        if not path.exists():
            return
        trash = self.root / ".trash"
        trash.mkdir(parents=True, exist_ok=True)
        with self._locked(bucket):
            if (path / "keys").is_dir() and not self.is_empty(bucket):
                raise BucketNotEmpty(bucket=bucket)
            target = trash / f"{bucket}-{new_id()}"
            os.replace(path, target)
        shutil.rmtree(target, ignore_errors=True)

    # -- writing objects

    def commit_object(
        self,
        bucket: str,
        key: str,
        blob: BlobWriter,
        meta: ObjectMeta | None = None,
        *,
        etag: str | None = None,
        checksums: Mapping[str, str] | None = None,
        parts_count: int | None = None,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        """Make ``blob`` the object at ``key``, atomically replacing any previous version.

        ``condition`` (If-Match / If-None-Match) is checked against the object being replaced under the
        bucket lock: of two conditional writers, exactly one can win.
        """
        meta = meta or ObjectMeta()
        check_metadata(meta.metadata)
        path = self._existing_bucket_dir(bucket)
        blob.close()
        if blob.path.parent != path / "blobs":
            raise ValueError("blob belongs to another bucket")
        record = {
            "key": key,
            "blob": blob.name,
            "size": blob.size,
            "etag": etag if etag is not None else blob.digests.hexdigest("MD5"),
            "last_modified": round(time.time(), 3),
            "checksums": dict(checksums if checksums is not None else blob.digests.checksums()),
            "parts_count": parts_count,
            **meta.to_json(),
        }
        guard = path / "keys"
        precondition = (lambda old: condition.check(key, old)) if condition is not None else None
        with self._swap_sidecar(
            bucket,
            self._sidecar(path, key),
            record,
            guard=guard,
            missing=NoSuchBucket(bucket=bucket),
            precondition=precondition,
        ) as old:
            pass
        blob.committed = True
        if old is not None and old.get("blob") != blob.name:
            unlink(path / "blobs" / str(old["blob"]))
        return self._info(bucket, record)

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | IO[bytes] | Iterable[bytes],
        meta: ObjectMeta | None = None,
        *,
        checksums: Mapping[str, str] | None = None,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        """Store ``body`` at ``key``; verify the given base64 checksums (``{"CRC32": ...}``) first."""
        validate_key(key)
        expected = dict(checksums or {})
        with self.new_blob(bucket, ["MD5", "CRC32", *expected]) as blob:
            if isinstance(body, bytes | bytearray | memoryview):
                blob.write(bytes(body))
            elif hasattr(body, "read"):
                blob.write_from(body)  # type: ignore[arg-type]
            else:
                for chunk in body:
                    blob.write(chunk)
            verify_checksums(blob.digests, expected)
            return self.commit_object(bucket, key, blob, meta, condition=condition)

    def copy_object(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        meta: ObjectMeta | None = None,
        *,
        condition: WriteCondition | None = None,
    ) -> ObjectInfo:
        """Copy an object; ``meta=None`` keeps the source's metadata and tags (S3's COPY directive)."""
        validate_key(dst_key)
        info, source = self.open_object(src_bucket, src_key)
        with source, self.new_blob(dst_bucket, ["MD5", "CRC32"]) as blob:
            blob.write_from(source)
            return self.commit_object(dst_bucket, dst_key, blob, meta or info.meta, condition=condition)

    def _update_record(self, bucket: str, key: str, change: Callable[[dict[str, Any]], None]) -> ObjectInfo:
        """Rewrite an object's sidecar (same bytes) under the bucket lock, raising ``NoSuchKey``."""
        path = self._existing_bucket_dir(bucket)
        sidecar = self._sidecar(path, key)
        with self._locked(bucket):
            record = read_json(sidecar)
            if record is None:
                raise NoSuchKey(key=key)
            change(record)
            write_json_atomic(path / "tmp", sidecar, record)
        return self._info(bucket, record)

    def set_tags(self, bucket: str, key: str, tags: Iterable[tuple[str, str]]) -> ObjectInfo:
        """Replace an object's tag set (an empty one deletes it), keeping its bytes and ETag."""
        valid: Tags = validate_tags(tags)

        def change(record: dict[str, Any]) -> None:
            record["tags"] = [list(pair) for pair in valid]

        return self._update_record(bucket, key, change)

    # -- reading objects

    def open_object(self, bucket: str, key: str) -> tuple[ObjectInfo, IO[bytes]]:
        """Open an object for reading: the handle keeps this version even if it is replaced."""
        path = self._existing_bucket_dir(bucket)
        for _ in range(20):
            info = self.head_object(bucket, key)
            try:
                return info, open(path / "blobs" / info.blob, "rb")
            except FileNotFoundError:
                continue  # replaced between reading the sidecar and opening the blob
        raise NoSuchKey(key=key)

    def object_path(self, bucket: str, key: str) -> Path:
        """Return the file holding the object's bytes (valid until the object is replaced)."""
        info = self.head_object(bucket, key)
        return self._existing_bucket_dir(bucket) / "blobs" / info.blob

    def get_object(self, bucket: str, key: str) -> bytes:
        """Return an object's bytes (small objects; use ``open_object`` to stream)."""
        _, f = self.open_object(bucket, key)
        with f:
            return f.read()

    def delete_object(self, bucket: str, key: str, *, condition: DeleteCondition | None = None) -> bool:
        """Delete an object; return whether it existed (deleting a missing key is not an error).

        ``condition`` is checked against the object under the bucket lock; a missing key passes it.
        """
        path = self._existing_bucket_dir(bucket)
        sidecar = self._sidecar(path, key)
        with self._locked(bucket):
            old = read_json(sidecar)
            if old is None:
                return False
            if condition is not None:
                condition.check(old)
            unlink(sidecar)
        unlink(path / "blobs" / str(old["blob"]))
        return True

    # -- listing

    def iter_keys(self, bucket: str) -> list[str]:
        """Return every key in the bucket, sorted in S3's (UTF-8 byte) order."""
        path = self._existing_bucket_dir(bucket)
        keys: list[str] = []
        with os.scandir(path / "keys") as it:
            for entry in it:
                if not entry.name.endswith(".json"):
                    continue
                key = decode_name(entry.name[:-5])
                if key is None:
                    record = read_json(Path(entry.path))
                    if record is None:
                        continue
                    key = str(record["key"])
                keys.append(key)
        # Code-point order equals UTF-8 byte order.
        keys.sort()
        return keys

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        after: str = "",
        after_is_prefix: bool = False,
        max_keys: int = 1000,
    ) -> ListPage:
        """List keys after ``after`` (skipping a whole common prefix when ``after_is_prefix``).

        ``max_keys=0`` lists nothing and is not truncated, as S3 answers it.
        """
        path = self._existing_bucket_dir(bucket)
        if max_keys <= 0:
            return ListPage([], [], False, None, False)
        contents: list[ObjectInfo] = []
        prefixes: list[str] = []
        last: str | None = None
        last_is_prefix = False
        truncated = False
        for key in self.iter_keys(bucket):
            if not key.startswith(prefix) or key <= after:
                continue
            if after_is_prefix and after and key.startswith(after):
                continue
            common: str | None = None
            if delimiter:
                idx = key.find(delimiter, len(prefix))
                if idx >= 0:
                    common = key[: idx + len(delimiter)]
                    if last_is_prefix and common == last:
                        continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            if common is not None:
                prefixes.append(common)
                last, last_is_prefix = common, True
                continue
            record = read_json(self._sidecar(path, key))
            if record is None:
                continue
            contents.append(self._info(bucket, record))
            last, last_is_prefix = key, False
        return ListPage(contents, prefixes, truncated, last, last_is_prefix)
