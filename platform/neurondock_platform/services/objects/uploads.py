"""``UploadStore``: multipart uploads (create, parts, complete, abort, list) on top of ``StoreCore``.

A completion leaves a record of what it answered under ``completed/`` for ``COMPLETION_RETRY_WINDOW``
seconds, so an SDK that retries CompleteMultipartUpload after losing the response gets the same 200 again
instead of ``NoSuchUpload`` (docs/s3.md).
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from neurondock_platform.services.objects.blobs import BlobWriter, new_id, read_json, unlink, write_json_atomic
from neurondock_platform.services.objects.checksums import (
    CHECKSUM_ALGORITHMS,
    CRC_MODELS,
    checksum_of,
    full_object_crc,
    multipart_etag,
)
from neurondock_platform.services.objects.conditions import WriteCondition
from neurondock_platform.services.objects.core import StoreCore, http_time
from neurondock_platform.services.objects.errors import (
    BadDigest,
    EntityTooLarge,
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    InvalidRequest,
    MalformedXML,
    NoSuchUpload,
)
from neurondock_platform.services.objects.keys import check_metadata, validate_key
from neurondock_platform.services.objects.records import (
    CompletedPart,
    ObjectInfo,
    ObjectMeta,
    PartInfo,
    UploadInfo,
)

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000
MAX_OBJECT_SIZE = 5 * 1024**4
CHECKSUM_TYPES = ("COMPOSITE", "FULL_OBJECT")
# How long a completed upload still answers a retried CompleteMultipartUpload with its result.
COMPLETION_RETRY_WINDOW = 3600.0

_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")


def _fingerprint(parts: Sequence[CompletedPart]) -> list[list[Any]]:
    return [[p.part_number, p.etag.strip().strip('"')] for p in parts]


def checksum_type_for(algorithm: str | None, requested: str | None) -> str | None:
    """Return the checksum type of a new upload, raising ``InvalidRequest`` for a combination S3 refuses."""
    if requested is not None and requested not in CHECKSUM_TYPES:
        raise InvalidRequest(f"Value for x-amz-checksum-type header is invalid: {requested}")
    if algorithm is None:
        if requested is not None:
            raise InvalidRequest(
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header."
            )
        return None
    if requested is None:
        # CRC64NVME exists only as a full-object checksum; the others default to composite.
        return "FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE"
    if requested == "FULL_OBJECT" and algorithm not in CRC_MODELS:
        raise InvalidRequest(f"The FULL_OBJECT checksum type cannot be used with the {algorithm} checksum algorithm.")
    if requested == "COMPOSITE" and algorithm == "CRC64NVME":
        raise InvalidRequest("The COMPOSITE checksum type cannot be used with the CRC64NVME checksum algorithm.")
    return requested


class UploadStore(StoreCore):
    """Multipart uploads of one store root."""

    def _upload_dir(self, bucket: str, key: str, upload_id: str) -> tuple[Path, dict[str, Any]]:
        path = self._existing_bucket_dir(bucket)
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise NoSuchUpload(upload_id=upload_id)
        upload_dir = path / "uploads" / upload_id
        record = read_json(upload_dir / "upload.json")
        if record is None or record.get("key") != key:
            raise NoSuchUpload(upload_id=upload_id)
        return upload_dir, record

    def _upload_info(self, bucket: str, record: Mapping[str, Any]) -> UploadInfo:
        return UploadInfo(
            bucket=bucket,
            key=str(record["key"]),
            upload_id=str(record["upload_id"]),
            initiated=http_time(float(record["initiated"])),
            meta=ObjectMeta.from_json(record),
            checksum_algorithm=record.get("checksum_algorithm"),
            checksum_type=record.get("checksum_type") or ("COMPOSITE" if record.get("checksum_algorithm") else None),
        )

    def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        meta: ObjectMeta | None = None,
        *,
        checksum_algorithm: str | None = None,
        checksum_type: str | None = None,
    ) -> UploadInfo:
        """Start a multipart upload and return it (with its new upload id)."""
        validate_key(key)
        meta = meta or ObjectMeta()
        check_metadata(meta.metadata)
        if checksum_algorithm is not None and checksum_algorithm not in CHECKSUM_ALGORITHMS:
            raise InvalidRequest(f"Checksum algorithm {checksum_algorithm} is not supported.")
        checksum_type = checksum_type_for(checksum_algorithm, checksum_type)
        path = self._existing_bucket_dir(bucket)
        upload_id = secrets.token_urlsafe(48)
        upload_dir = path / "uploads" / upload_id
        upload_dir.mkdir()
        record = {
            "key": key,
            "upload_id": upload_id,
            "initiated": round(time.time(), 3),
            "checksum_algorithm": checksum_algorithm,
            "checksum_type": checksum_type,
            **meta.to_json(),
        }
        write_json_atomic(path / "tmp", upload_dir / "upload.json", record)
        return self._upload_info(bucket, record)

    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        """Return an upload in progress, raising ``NoSuchUpload``."""
        _, record = self._upload_dir(bucket, key, upload_id)
        return self._upload_info(bucket, record)

    def new_part_blob(self, bucket: str, key: str, upload_id: str, algorithms: Iterable[str] = ("MD5",)) -> BlobWriter:
        """Open a writer for a part's bytes; commit it with ``commit_part``."""
        upload_dir, _ = self._upload_dir(bucket, key, upload_id)
        return BlobWriter(upload_dir / f"blob-{new_id()}", algorithms)

    def commit_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        blob: BlobWriter,
        *,
        checksums: Mapping[str, str] | None = None,
    ) -> PartInfo:
        """Record ``blob`` as part ``part_number``, replacing an earlier upload of that part."""
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive",
                name="partNumber",
                value=str(part_number),
            )
        upload_dir, _ = self._upload_dir(bucket, key, upload_id)
        blob.close()
        record = {
            "part_number": part_number,
            "etag": blob.digests.hexdigest("MD5"),
            "size": blob.size,
            "last_modified": round(time.time(), 3),
            "checksums": dict(checksums if checksums is not None else blob.digests.checksums()),
            "blob": blob.name,
        }
        sidecar = upload_dir / f"part-{part_number:05d}.json"
        guard, missing = upload_dir / "upload.json", NoSuchUpload(upload_id=upload_id)
        with self._swap_sidecar(bucket, sidecar, record, guard=guard, missing=missing) as old:
            pass
        blob.committed = True
        if old is not None and old.get("blob") != blob.name:
            unlink(upload_dir / str(old["blob"]))
        return self._part_info(record)

    def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, body: bytes | IO[bytes]) -> PartInfo:
        """Store one part from bytes or a file."""
        upload = self.get_upload(bucket, key, upload_id)
        algorithms = ["MD5", *([upload.checksum_algorithm] if upload.checksum_algorithm else [])]
        with self.new_part_blob(bucket, key, upload_id, algorithms) as blob:
            if isinstance(body, bytes | bytearray | memoryview):
                blob.write(bytes(body))
            else:
                blob.write_from(body)
            return self.commit_part(bucket, key, upload_id, part_number, blob)

    @staticmethod
    def _part_info(record: Mapping[str, Any]) -> PartInfo:
        return PartInfo(
            part_number=int(record["part_number"]),
            etag=str(record["etag"]),
            size=int(record["size"]),
            last_modified=http_time(float(record["last_modified"])),
            checksums=dict(record.get("checksums") or {}),
            blob=str(record["blob"]),
        )

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        """Return the parts uploaded so far, by part number."""
        upload_dir, _ = self._upload_dir(bucket, key, upload_id)
        parts = []
        for sidecar in sorted(upload_dir.glob("part-*.json")):
            record = read_json(sidecar)
            if record is not None:
                parts.append(self._part_info(record))
        return parts

    def _chosen_parts(self, bucket: str, key: str, upload_id: str, parts: Sequence[CompletedPart]) -> list[PartInfo]:
        if not parts:
            raise MalformedXML()
        numbers = [p.part_number for p in parts]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InvalidPartOrder(upload_id=upload_id)
        stored = {p.part_number: p for p in self.list_parts(bucket, key, upload_id)}
        chosen: list[PartInfo] = []
        for wanted in parts:
            part = stored.get(wanted.part_number)
            if part is None or wanted.etag.strip().strip('"') != part.etag:
                raise InvalidPart(upload_id=upload_id, part_number=wanted.part_number, etag=wanted.etag)
            for algorithm, value in wanted.checksums.items():
                if part.checksums.get(algorithm, value) != value:
                    raise InvalidPart(upload_id=upload_id, part_number=wanted.part_number, etag=wanted.etag)
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < MIN_PART_SIZE:
                raise EntityTooSmall(size=part.size, min_size=MIN_PART_SIZE, part_number=part.part_number)
        total = sum(p.size for p in chosen)
        if total > MAX_OBJECT_SIZE:
            raise EntityTooLarge(size=total, max_size=MAX_OBJECT_SIZE)
        return chosen

    @staticmethod
    def _object_checksums(upload: UploadInfo, chosen: Sequence[PartInfo]) -> dict[str, str]:
        algorithm = upload.checksum_algorithm
        if not algorithm or not all(algorithm in p.checksums for p in chosen):
            return {}
        if upload.checksum_type == "FULL_OBJECT":
            return {algorithm: full_object_crc(algorithm, [(p.checksums[algorithm], p.size) for p in chosen])}
        # S3's composite checksum: the checksum of the parts' raw checksums, then "-N".
        joined = b"".join(base64.b64decode(p.checksums[algorithm]) for p in chosen)
        return {algorithm: f"{checksum_of(joined, algorithm)}-{len(chosen)}"}

    @staticmethod
    def _verify_expected(
        upload: UploadInfo, computed: Mapping[str, str], expected: Mapping[str, str], checksum_type: str | None
    ) -> None:
        if checksum_type is not None and checksum_type != upload.checksum_type:
            raise InvalidRequest(
                f"The upload was created using the {upload.checksum_type or 'null'} checksum mode. "
                f"The complete request must use the same checksum mode ({checksum_type} given)."
            )
        for algorithm, value in expected.items():
            if algorithm != upload.checksum_algorithm:
                raise InvalidRequest(
                    f"The upload was created using a {upload.checksum_algorithm or 'null'} checksum. "
                    f"The complete request must use the same checksum algorithm ({algorithm} given)."
                )
            actual = computed.get(algorithm)
            # A composite checksum may be given with or without its "-N" suffix.
            if actual is None or value not in (actual, actual.rpartition("-")[0]):
                raise BadDigest(algorithm=algorithm)

    def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        *,
        condition: WriteCondition | None = None,
        expected_checksums: Mapping[str, str] | None = None,
        checksum_type: str | None = None,
        expected_size: int | None = None,
    ) -> ObjectInfo:
        """Assemble the named parts into the object; the upload disappears.

        A retry of a completion that already succeeded (same key, same parts) answers the same result
        for ``COMPLETION_RETRY_WINDOW`` seconds; its preconditions were checked by the first attempt.
        """
        try:
            return self._complete(
                bucket, key, upload_id, parts, condition, dict(expected_checksums or {}), checksum_type, expected_size
            )
        except NoSuchUpload:
            done = self._completed(bucket, key, upload_id, parts)
            if done is None:
                raise
            return done

    def _complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        condition: WriteCondition | None,
        expected_checksums: dict[str, str],
        checksum_type: str | None,
        expected_size: int | None,
    ) -> ObjectInfo:
        upload_dir, record = self._upload_dir(bucket, key, upload_id)
        upload = self._upload_info(bucket, record)
        chosen = self._chosen_parts(bucket, key, upload_id, parts)
        total = sum(p.size for p in chosen)
        if expected_size is not None and expected_size != total:
            raise InvalidRequest(
                f"The provided 'x-amz-mp-object-size' header value {expected_size} does not match what was "
                f"computed: {total}"
            )
        checksums = self._object_checksums(upload, chosen)
        self._verify_expected(upload, checksums, expected_checksums, checksum_type)
        path = self._existing_bucket_dir(bucket)
        with self.new_blob(bucket, ()) as blob:
            for part in chosen:
                try:
                    with open(upload_dir / part.blob, "rb") as f:
                        blob.write_from(f)
                except FileNotFoundError as exc:
                    raise NoSuchUpload(upload_id=upload_id) from exc
            blob.close()
            object_record = {
                "key": key,
                "blob": blob.name,
                "size": blob.size,
                "etag": multipart_etag([p.etag for p in chosen]),
                "last_modified": round(time.time(), 3),
                "checksums": checksums,
                "parts_count": len(chosen),
                "part_sizes": [p.size for p in chosen],
                "part_checksums": [dict(p.checksums) for p in chosen],
                **upload.meta.to_json(),
            }
            completion = {
                "key": key,
                "parts": _fingerprint(parts),
                "completed": time.time(),
                "object": object_record,
            }
            gone = path / "trash" / new_id()
            # The guard is re-checked under the lock: a concurrent complete or abort may have won.
            guard, missing = upload_dir / "upload.json", NoSuchUpload(upload_id=upload_id)
            precondition = (lambda old: condition.check(key, old)) if condition is not None else None
            sidecar = self._sidecar(path, key)
            with self._swap_sidecar(
                bucket, sidecar, object_record, guard=guard, missing=missing, precondition=precondition
            ) as old:
                (path / "completed").mkdir(exist_ok=True)
                write_json_atomic(path / "tmp", path / "completed" / f"{upload_id}.json", completion)
                os.replace(upload_dir, gone)
            blob.committed = True
        shutil.rmtree(gone, ignore_errors=True)
        if old is not None:
            unlink(path / "blobs" / str(old["blob"]))
        self._prune_completed(path)
        return self._info(bucket, object_record)

    def _completed(self, bucket: str, key: str, upload_id: str, parts: Sequence[CompletedPart]) -> ObjectInfo | None:
        """Return what an earlier completion of this upload answered, if it is recent and asked the same."""
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            return None
        path = self._existing_bucket_dir(bucket)
        record = read_json(path / "completed" / f"{upload_id}.json")
        if record is None or record.get("key") != key or record.get("parts") != _fingerprint(parts):
            return None
        if time.time() - float(record["completed"]) > COMPLETION_RETRY_WINDOW:
            return None
        return self._info(bucket, record["object"])

    @staticmethod
    def _prune_completed(bucket_dir: Path) -> None:
        cutoff = time.time() - COMPLETION_RETRY_WINDOW
        with os.scandir(bucket_dir / "completed") as it:
            for entry in it:
                try:
                    if entry.stat().st_mtime < cutoff:
                        unlink(Path(entry.path))
                except FileNotFoundError:
                    continue

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Discard an upload and its parts."""
        upload_dir, _ = self._upload_dir(bucket, key, upload_id)
        path = self._existing_bucket_dir(bucket)
        gone = path / "trash" / new_id()
        with self._locked(bucket):
            if not (upload_dir / "upload.json").exists():
                raise NoSuchUpload(upload_id=upload_id)
            os.replace(upload_dir, gone)
        shutil.rmtree(gone, ignore_errors=True)

    def list_uploads(self, bucket: str, *, prefix: str = "") -> list[UploadInfo]:
        """Return the uploads in progress, ordered by key then initiation time."""
        path = self._existing_bucket_dir(bucket)
        uploads = []
        with os.scandir(path / "uploads") as it:
            for entry in it:
                record = read_json(Path(entry.path) / "upload.json")
                if record is not None and str(record["key"]).startswith(prefix):
                    uploads.append(self._upload_info(bucket, record))
        uploads.sort(key=lambda u: (u.key, u.initiated, u.upload_id))
        return uploads
