"""The embedded S3-compatible object store: buckets and objects on local disk.

``ObjectStore`` is the on-disk half and knows nothing of accounts or HTTP; the bucket functions at the
end of this module add ownership (the ``buckets`` table) on top of it. The S3 blueprint and any other
platform code (the compiler upload path, the console) share both.

Layout under the store root::

    <root>/.locks/<bucket>.lock             flock held while committing in that bucket (cross-process)
    <root>/.trash/                          deleted buckets, removed after the rename
    <root>/<bucket>/keys/<name>.json        one sidecar per object: key, etag, size, metadata, blob id.
                                            Replacing it (os.replace) is the commit point of a write.
    <root>/<bucket>/blobs/<id>              object bytes under a random id; unreferenced until committed
    <root>/<bucket>/uploads/<upload-id>/    upload.json, part-NNNNN.json sidecars and their part blobs
    <root>/<bucket>/tmp/, trash/            sidecars being written; removed uploads

Keys never become paths: ``<name>`` is the key's UTF-8 bytes with everything outside ``[A-Za-z0-9_-]``
percent-encoded (so ``/``, ``.`` and ``..`` cannot form path segments), or ``~<sha256>`` when that would
be too long for a file name (the key is then read back from the sidecar).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurondock_platform.errors import PlatformError
from neurondock_platform.models import Bucket

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
MAX_KEY_BYTES = 1024
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000
MAX_OBJECT_SIZE = 5 * 1024**4
MAX_PUT_SIZE = 5 * 1024**3
MAX_METADATA_BYTES = 2048
# Headers S3 stores with an object and returns on GET/HEAD.
STORED_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires")

_COPY_CHUNK = 1024 * 1024
_MAX_NAME = 200
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")


# --------------------------------------------------------------------------------------------- errors


class S3Error(PlatformError):
    """An error S3 reports with its own code; ``xml_fields`` maps kwargs to extra ``<Error>`` elements."""

    code: ClassVar[str] = "InternalError"
    s3_code: ClassVar[str | None] = "InternalError"
    http_status: ClassVar[int] = 500
    fmt: ClassVar[str] = "We encountered an internal error. Please try again."
    xml_fields: ClassVar[dict[str, str]] = {}

    def details(self) -> dict[str, str]:
        """Return the extra elements S3 puts in this error's XML body."""
        return {
            element: str(self.kwargs[name])
            for name, element in self.xml_fields.items()
            if self.kwargs.get(name) is not None
        }


class AccessDenied(S3Error):
    code = s3_code = "AccessDenied"
    http_status = 403
    fmt = "Access Denied"


class NoSuchBucket(S3Error):
    code = s3_code = "NoSuchBucket"
    http_status = 404
    fmt = "The specified bucket does not exist"
    xml_fields = {"bucket": "BucketName"}


class NoSuchKey(S3Error):
    code = s3_code = "NoSuchKey"
    http_status = 404
    fmt = "The specified key does not exist."
    xml_fields = {"key": "Key"}


class NoSuchUpload(S3Error):
    code = s3_code = "NoSuchUpload"
    http_status = 404
    fmt = (
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
        "aborted or completed."
    )
    xml_fields = {"upload_id": "UploadId"}


class BucketNotEmpty(S3Error):
    code = s3_code = "BucketNotEmpty"
    http_status = 409
    fmt = "The bucket you tried to delete is not empty"
    xml_fields = {"bucket": "BucketName"}


class BucketAlreadyExists(S3Error):
    code = s3_code = "BucketAlreadyExists"
    http_status = 409
    fmt = (
        "The requested bucket name is not available. The bucket namespace is shared by all users of the "
        "system. Please select a different name and try again."
    )
    xml_fields = {"bucket": "BucketName"}


class BucketAlreadyOwnedByYou(S3Error):
    code = s3_code = "BucketAlreadyOwnedByYou"
    http_status = 409
    fmt = "Your previous request to create the named bucket succeeded and you already own it."
    xml_fields = {"bucket": "BucketName"}


class InvalidBucketName(S3Error):
    code = s3_code = "InvalidBucketName"
    http_status = 400
    fmt = "The specified bucket is not valid."
    xml_fields = {"bucket": "BucketName"}


class KeyTooLongError(S3Error):
    code = s3_code = "KeyTooLongError"
    http_status = 400
    fmt = "Your key is too long"
    xml_fields = {"size": "Size", "max_size": "MaxSizeAllowed"}


class InvalidArgument(S3Error):
    code = s3_code = "InvalidArgument"
    http_status = 400
    fmt = "{message}"
    xml_fields = {"name": "ArgumentName", "value": "ArgumentValue"}


class InvalidRequest(S3Error):
    code = s3_code = "InvalidRequest"
    http_status = 400
    fmt = "{message}"


class InvalidRange(S3Error):
    code = s3_code = "InvalidRange"
    http_status = 416
    fmt = "The requested range is not satisfiable"
    xml_fields = {"range": "RangeRequested", "size": "ActualObjectSize"}


class InvalidPart(S3Error):
    code = s3_code = "InvalidPart"
    http_status = 400
    fmt = (
        "One or more of the specified parts could not be found.  The part may not have been uploaded, "
        "or the specified entity tag may not match the part's entity tag."
    )
    xml_fields = {"upload_id": "UploadId", "part_number": "PartNumber", "etag": "ETag"}


class InvalidPartOrder(S3Error):
    code = s3_code = "InvalidPartOrder"
    http_status = 400
    fmt = "The list of parts was not in ascending order. Parts must be ordered by part number."
    xml_fields = {"upload_id": "UploadId"}


class EntityTooSmall(S3Error):
    code = s3_code = "EntityTooSmall"
    http_status = 400
    fmt = "Your proposed upload is smaller than the minimum allowed object size."
    xml_fields = {"size": "ProposedSize", "min_size": "MinSizeAllowed", "part_number": "PartNumber"}


class EntityTooLarge(S3Error):
    code = s3_code = "EntityTooLarge"
    http_status = 400
    fmt = "Your proposed upload exceeds the maximum allowed size"
    xml_fields = {"size": "ProposedSize", "max_size": "MaxSizeAllowed"}


class BadDigest(S3Error):
    code = s3_code = "BadDigest"
    http_status = 400
    fmt = "The {algorithm} you specified did not match the calculated checksum."


class InvalidDigest(S3Error):
    code = s3_code = "InvalidDigest"
    http_status = 400
    fmt = "The Content-MD5 you specified is not valid."


class XAmzContentSHA256Mismatch(S3Error):
    code = s3_code = "XAmzContentSHA256Mismatch"
    http_status = 400
    fmt = "The provided 'x-amz-content-sha256' header does not match what was computed."
    xml_fields = {"client": "ClientComputedContentSHA256", "server": "S3ComputedContentSHA256"}


class IncompleteBody(S3Error):
    code = s3_code = "IncompleteBody"
    http_status = 400
    fmt = "You did not provide the number of bytes specified by the Content-Length HTTP header"


class MalformedXML(S3Error):
    code = s3_code = "MalformedXML"
    http_status = 400
    fmt = "The XML you provided was not well-formed or did not validate against our published schema"


class MetadataTooLarge(S3Error):
    code = s3_code = "MetadataTooLarge"
    http_status = 400
    fmt = "Your metadata headers exceed the maximum allowed metadata size"
    xml_fields = {"size": "Size", "max_size": "MaxSizeAllowed"}


class PreconditionFailed(S3Error):
    code = s3_code = "PreconditionFailed"
    http_status = 412
    fmt = "At least one of the pre-conditions you specified did not hold"
    xml_fields = {"condition": "Condition"}


class NotImplementedFeature(S3Error):
    code = s3_code = "NotImplemented"
    http_status = 501
    fmt = "A header or query you provided implies functionality that is not implemented"


class MethodNotAllowed(S3Error):
    code = s3_code = "MethodNotAllowed"
    http_status = 405
    fmt = "The specified method is not allowed against this resource."
    xml_fields = {"method": "Method", "resource_type": "ResourceType"}


class SignatureDoesNotMatch(S3Error):
    code = s3_code = "SignatureDoesNotMatch"
    http_status = 403
    fmt = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )


class AuthorizationHeaderMalformed(S3Error):
    code = s3_code = "AuthorizationHeaderMalformed"
    http_status = 400
    fmt = "The authorization header is malformed; {reason}"


class InvalidLocationConstraint(S3Error):
    code = s3_code = "InvalidLocationConstraint"
    http_status = 400
    fmt = "The specified location-constraint is not valid"
    xml_fields = {"location": "LocationConstraint"}


# ------------------------------------------------------------------------------------------ checksums


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _ZlibCrc32:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return (self._crc & 0xFFFFFFFF).to_bytes(4, "big")


def _reflected_table(poly: int) -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


class _TableCrc:
    """A reflected CRC in pure Python: slow (tens of MB/s) but only used when a client asks for it."""

    table: ClassVar[tuple[int, ...]] = ()
    width: ClassVar[int] = 32

    def __init__(self) -> None:
        self._mask = (1 << self.width) - 1
        self._crc = self._mask

    def update(self, data: bytes) -> None:
        crc, table = self._crc, self.table
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._crc = crc

    def digest(self) -> bytes:
        return (self._crc ^ self._mask).to_bytes(self.width // 8, "big")


class _Crc32c(_TableCrc):
    table = _reflected_table(0x82F63B78)
    width = 32


class _Crc64Nvme(_TableCrc):
    table = _reflected_table(0x9A6C9329AC4BC9B5)
    width = 64


# S3's flexible checksum algorithms and the size of their digests.
CHECKSUM_ALGORITHMS: dict[str, int] = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}


def _new_hash(algorithm: str) -> _Hash:
    if algorithm == "MD5":
        return hashlib.md5(usedforsecurity=False)
    if algorithm == "SHA1":
        return hashlib.sha1(usedforsecurity=False)
    if algorithm == "SHA256":
        return hashlib.sha256()
    if algorithm == "CRC32":
        return _ZlibCrc32()
    if algorithm == "CRC32C":
        return _Crc32c()
    if algorithm == "CRC64NVME":
        return _Crc64Nvme()
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


class Digests:
    """Running digests of a body: MD5 for the ETag plus whichever checksums were asked for."""

    def __init__(self, algorithms: Iterable[str] = ("MD5",)) -> None:
        self._hashes = {name: _new_hash(name) for name in dict.fromkeys(algorithms)}
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)
        for h in self._hashes.values():
            h.update(data)

    @property
    def active(self) -> bool:
        """Whether any digest is being computed (an empty set only counts bytes)."""
        return bool(self._hashes)

    def __contains__(self, algorithm: object) -> bool:
        return algorithm in self._hashes

    def digest(self, algorithm: str) -> bytes:
        return self._hashes[algorithm].digest()

    def hexdigest(self, algorithm: str) -> str:
        return self.digest(algorithm).hex()

    def b64digest(self, algorithm: str) -> str:
        return base64.b64encode(self.digest(algorithm)).decode("ascii")

    def checksums(self) -> dict[str, str]:
        """Return the flexible checksums computed (not MD5), base64 as S3 shows them."""
        return {name: self.b64digest(name) for name in self._hashes if name in CHECKSUM_ALGORITHMS}


def checksum_of(data: bytes, algorithm: str) -> str:
    """Return the base64 checksum of ``data`` as S3 shows it (``x-amz-checksum-<algorithm>``)."""
    digests = Digests([algorithm])
    digests.update(data)
    return digests.b64digest(algorithm)


def verify_checksums(digests: Digests, expected: Mapping[str, str]) -> None:
    """Raise ``BadDigest`` unless every expected base64 checksum matches the computed one."""
    for algorithm, value in expected.items():
        if digests.b64digest(algorithm) != value:
            raise BadDigest(algorithm=algorithm)


# -------------------------------------------------------------------------------------------- records


def _http_time(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@dataclass(frozen=True)
class ObjectMeta:
    """What a client sets on an object besides its bytes."""

    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "content_type": self.content_type,
            "metadata": dict(self.metadata),
            "headers": dict(self.headers),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectMeta:
        return cls(
            content_type=data.get("content_type") or DEFAULT_CONTENT_TYPE,
            metadata=dict(data.get("metadata") or {}),
            headers=dict(data.get("headers") or {}),
        )


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as its sidecar describes it."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: dt.datetime
    meta: ObjectMeta
    checksums: Mapping[str, str]
    parts_count: int | None
    blob: str
    # Sizes of the parts a multipart object was assembled from (for GetObject ?partNumber=).
    part_sizes: tuple[int, ...] = ()

    @property
    def quoted_etag(self) -> str:
        return f'"{self.etag}"'

    @property
    def content_type(self) -> str:
        return self.meta.content_type

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.meta.metadata


@dataclass(frozen=True)
class ListPage:
    """One page of a listing: objects and common prefixes in key order."""

    contents: list[ObjectInfo]
    common_prefixes: list[str]
    is_truncated: bool
    # The last entry returned (a key, or a common prefix when ``last_is_prefix``).
    last: str | None
    last_is_prefix: bool


@dataclass(frozen=True)
class UploadInfo:
    """A multipart upload in progress."""

    bucket: str
    key: str
    upload_id: str
    initiated: dt.datetime
    meta: ObjectMeta
    checksum_algorithm: str | None


@dataclass(frozen=True)
class PartInfo:
    """One uploaded part of a multipart upload."""

    part_number: int
    etag: str
    size: int
    last_modified: dt.datetime
    checksums: Mapping[str, str]
    blob: str

    @property
    def quoted_etag(self) -> str:
        return f'"{self.etag}"'


@dataclass(frozen=True)
class CompletedPart:
    """A part as named in CompleteMultipartUpload."""

    part_number: int
    etag: str
    checksums: Mapping[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ validation


def validate_bucket_name(name: str) -> None:
    """Raise ``InvalidBucketName`` unless ``name`` follows S3's general-purpose bucket rules."""
    ok = (
        _BUCKET_RE.fullmatch(name) is not None
        and ".." not in name
        and ".-" not in name
        and "-." not in name
        and _IP_RE.fullmatch(name) is None
        and not name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )
    if not ok:
        raise InvalidBucketName(bucket=name)


def validate_key(key: str) -> bytes:
    """Return the key's UTF-8 bytes, raising S3's error for an empty, undecodable or too long key."""
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument("Object key is not valid UTF-8.") from exc
    if not raw:
        raise InvalidArgument("Object key must not be empty.", name="key", value="")
    if len(raw) > MAX_KEY_BYTES:
        raise KeyTooLongError(size=len(raw), max_size=MAX_KEY_BYTES)
    return raw


def encode_key(key: str) -> str:
    """Map a key to a file-name stem that is never a path segment other than itself."""
    raw = validate_key(key)
    name = "".join(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in raw)
    if len(name) > _MAX_NAME:
        return "~" + hashlib.sha256(raw).hexdigest()
    return name


def _decode_name(name: str) -> str | None:
    """Invert ``encode_key`` for percent-encoded names; None for hashed names."""
    if name.startswith("~"):
        return None
    out = bytearray()
    i = 0
    while i < len(name):
        if name[i] == "%":
            out.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(name[i]))
            i += 1
    return out.decode("utf-8")


def check_metadata(metadata: Mapping[str, str]) -> None:
    """Raise ``MetadataTooLarge`` when user metadata exceeds S3's 2 KB limit."""
    size = sum(len(k.encode()) + len(v.encode("utf-8", "replace")) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise MetadataTooLarge(size=size, max_size=MAX_METADATA_BYTES)


def multipart_etag(part_etags: Sequence[str]) -> str:
    """Return S3's ETag for a multipart object: md5 of the concatenated part md5s, then ``-N``."""
    joined = b"".join(binascii.unhexlify(e) for e in part_etags)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(part_etags)}"


def _new_id() -> str:
    return secrets.token_hex(16)


def _write_json_atomic(tmp_dir: Path, target: Path, data: Mapping[str, Any]) -> None:
    tmp = tmp_dir / f"{_new_id()}.json"
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, target)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# ---------------------------------------------------------------------------------------------- blobs


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
        _unlink(self.path)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.committed:
            self.close()
        else:
            self.discard()


# ---------------------------------------------------------------------------------------------- store


class ObjectStore:
    """Buckets and objects under one directory; safe for many threads and processes at once."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()

    # -- paths and locks

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

    # -- buckets

    def create_bucket(self, bucket: str) -> bool:
        """Create the bucket's directories; return False if it already existed."""
        path = self._bucket_dir(bucket)
        existed = (path / "keys").is_dir()
        for sub in ("keys", "blobs", "uploads", "tmp", "trash"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        return not existed

    def bucket_exists(self, bucket: str) -> bool:
        return (self._bucket_dir(bucket) / "keys").is_dir()

    def list_bucket_names(self) -> list[str]:
        """Return the buckets present on disk, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / "keys").is_dir()
        )

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
            target = trash / f"{bucket}-{_new_id()}"
            os.replace(path, target)
        shutil.rmtree(target, ignore_errors=True)

    # -- writing objects

    def new_blob(self, bucket: str, algorithms: Iterable[str] = ("MD5",)) -> BlobWriter:
        """Open a writer for new object bytes; commit it with ``commit_object``."""
        path = self._existing_bucket_dir(bucket)
        return BlobWriter(path / "blobs" / _new_id(), algorithms)

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
    ) -> ObjectInfo:
        """Make ``blob`` the object at ``key``, atomically replacing any previous version."""
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
        sidecar = self._sidecar(path, key)
        old = self._replace_sidecar(bucket, path, sidecar, record)
        blob.committed = True
        if old is not None and old.get("blob") != blob.name:
            _unlink(path / "blobs" / str(old["blob"]))
        return self._info(bucket, record)

    def _replace_sidecar(
        self, bucket: str, path: Path, sidecar: Path, record: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        tmp = path / "tmp" / f"{_new_id()}.json"
        try:
            tmp.write_text(json.dumps(record, separators=(",", ":")))
        except FileNotFoundError as exc:
            raise NoSuchBucket(bucket=bucket) from exc
        with self._locked(bucket):
            if not (path / "keys").is_dir():
                _unlink(tmp)
                raise NoSuchBucket(bucket=bucket)
            old = _read_json(sidecar)
            os.replace(tmp, sidecar)
        return old

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | IO[bytes] | Iterable[bytes],
        meta: ObjectMeta | None = None,
        *,
        checksums: Mapping[str, str] | None = None,
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
            return self.commit_object(bucket, key, blob, meta)

    def copy_object(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        meta: ObjectMeta | None = None,
    ) -> ObjectInfo:
        """Copy an object; ``meta=None`` keeps the source's metadata (S3's COPY directive)."""
        validate_key(dst_key)
        info, source = self.open_object(src_bucket, src_key)
        with source, self.new_blob(dst_bucket, ["MD5", "CRC32"]) as blob:
            blob.write_from(source)
            return self.commit_object(dst_bucket, dst_key, blob, meta or info.meta)

    # -- reading objects

    def _info(self, bucket: str, record: Mapping[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            bucket=bucket,
            key=str(record["key"]),
            size=int(record["size"]),
            etag=str(record["etag"]),
            last_modified=_http_time(float(record["last_modified"])),
            meta=ObjectMeta.from_json(record),
            checksums=dict(record.get("checksums") or {}),
            parts_count=record.get("parts_count"),
            blob=str(record["blob"]),
            part_sizes=tuple(int(n) for n in record.get("part_sizes") or ()),
        )

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        """Return an object's metadata, raising ``NoSuchKey``."""
        path = self._existing_bucket_dir(bucket)
        record = _read_json(self._sidecar(path, key))
        if record is None:
            raise NoSuchKey(key=key)
        return self._info(bucket, record)

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

    def delete_object(self, bucket: str, key: str) -> bool:
        """Delete an object; return whether it existed (deleting a missing key is not an error)."""
        path = self._existing_bucket_dir(bucket)
        sidecar = self._sidecar(path, key)
        with self._locked(bucket):
            old = _read_json(sidecar)
            if old is None:
                return False
            _unlink(sidecar)
        _unlink(path / "blobs" / str(old["blob"]))
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
                key = _decode_name(entry.name[:-5])
                if key is None:
                    record = _read_json(Path(entry.path))
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
        """List keys after ``after`` (skipping a whole common prefix when ``after_is_prefix``)."""
        path = self._existing_bucket_dir(bucket)
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
            record = _read_json(self._sidecar(path, key))
            if record is None:
                continue
            contents.append(self._info(bucket, record))
            last, last_is_prefix = key, False
        return ListPage(contents, prefixes, truncated, last, last_is_prefix)

    # -- multipart uploads

    def _upload_dir(self, bucket: str, key: str, upload_id: str) -> tuple[Path, dict[str, Any]]:
        path = self._existing_bucket_dir(bucket)
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise NoSuchUpload(upload_id=upload_id)
        upload_dir = path / "uploads" / upload_id
        record = _read_json(upload_dir / "upload.json")
        if record is None or record.get("key") != key:
            raise NoSuchUpload(upload_id=upload_id)
        return upload_dir, record

    def _upload_info(self, bucket: str, record: Mapping[str, Any]) -> UploadInfo:
        return UploadInfo(
            bucket=bucket,
            key=str(record["key"]),
            upload_id=str(record["upload_id"]),
            initiated=_http_time(float(record["initiated"])),
            meta=ObjectMeta.from_json(record),
            checksum_algorithm=record.get("checksum_algorithm"),
        )

    def create_multipart_upload(
        self, bucket: str, key: str, meta: ObjectMeta | None = None, *, checksum_algorithm: str | None = None
    ) -> UploadInfo:
        """Start a multipart upload and return it (with its new upload id)."""
        validate_key(key)
        meta = meta or ObjectMeta()
        check_metadata(meta.metadata)
        path = self._existing_bucket_dir(bucket)
        upload_id = secrets.token_urlsafe(48)
        upload_dir = path / "uploads" / upload_id
        upload_dir.mkdir()
        record = {
            "key": key,
            "upload_id": upload_id,
            "initiated": round(time.time(), 3),
            "checksum_algorithm": checksum_algorithm,
            **meta.to_json(),
        }
        _write_json_atomic(path / "tmp", upload_dir / "upload.json", record)
        return self._upload_info(bucket, record)

    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        """Return an upload in progress, raising ``NoSuchUpload``."""
        _, record = self._upload_dir(bucket, key, upload_id)
        return self._upload_info(bucket, record)

    def new_part_blob(
        self, bucket: str, key: str, upload_id: str, algorithms: Iterable[str] = ("MD5",)
    ) -> BlobWriter:
        """Open a writer for a part's bytes; commit it with ``commit_part``."""
        upload_dir, _ = self._upload_dir(bucket, key, upload_id)
        return BlobWriter(upload_dir / f"blob-{_new_id()}", algorithms)

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
        tmp = self.root / bucket / "tmp" / f"{_new_id()}.json"
        tmp.write_text(json.dumps(record, separators=(",", ":")))
        with self._locked(bucket):
            if not (upload_dir / "upload.json").exists():
                _unlink(tmp)
                raise NoSuchUpload(upload_id=upload_id)
            old = _read_json(sidecar)
            os.replace(tmp, sidecar)
        blob.committed = True
        if old is not None and old.get("blob") != blob.name:
            _unlink(upload_dir / str(old["blob"]))
        return self._part_info(record)

    def upload_part(
        self, bucket: str, key: str, upload_id: str, part_number: int, body: bytes | IO[bytes]
    ) -> PartInfo:
        """Store one part from bytes or a file."""
        with self.new_part_blob(bucket, key, upload_id) as blob:
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
            last_modified=_http_time(float(record["last_modified"])),
            checksums=dict(record.get("checksums") or {}),
            blob=str(record["blob"]),
        )

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        """Return the parts uploaded so far, by part number."""
        upload_dir, _ = self._upload_dir(bucket, key, upload_id)
        parts = []
        for sidecar in sorted(upload_dir.glob("part-*.json")):
            record = _read_json(sidecar)
            if record is not None:
                parts.append(self._part_info(record))
        return parts

    def complete_multipart_upload(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[CompletedPart]
    ) -> ObjectInfo:
        """Assemble the named parts into the object; the upload disappears."""
        upload_dir, record = self._upload_dir(bucket, key, upload_id)
        upload = self._upload_info(bucket, record)
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
        path = self._existing_bucket_dir(bucket)
        with self.new_blob(bucket, ()) as blob:
            for part in chosen:
                try:
                    with open(upload_dir / part.blob, "rb") as f:
                        blob.write_from(f)
                except FileNotFoundError as exc:
                    raise NoSuchUpload(upload_id=upload_id) from exc
            checksums: dict[str, str] = {}
            composite = upload.checksum_algorithm
            if composite and all(composite in p.checksums for p in chosen):
                # S3's composite checksum: the checksum of the parts' raw checksums, then "-N".
                joined = b"".join(base64.b64decode(p.checksums[composite]) for p in chosen)
                checksums[composite] = f"{checksum_of(joined, composite)}-{len(chosen)}"
            blob.close()
            sidecar = self._sidecar(path, key)
            object_record = {
                "key": key,
                "blob": blob.name,
                "size": blob.size,
                "etag": multipart_etag([p.etag for p in chosen]),
                "last_modified": round(time.time(), 3),
                "checksums": checksums,
                "parts_count": len(chosen),
                "part_sizes": [p.size for p in chosen],
                **upload.meta.to_json(),
            }
            tmp = path / "tmp" / f"{_new_id()}.json"
            tmp.write_text(json.dumps(object_record, separators=(",", ":")))
            gone = path / "trash" / _new_id()
            with self._locked(bucket):
                # Re-check under the lock: a concurrent complete or abort may have won.
                if not (upload_dir / "upload.json").exists():
                    _unlink(tmp)
                    raise NoSuchUpload(upload_id=upload_id)
                old = _read_json(sidecar)
                os.replace(tmp, sidecar)
                os.replace(upload_dir, gone)
            blob.committed = True
        shutil.rmtree(gone, ignore_errors=True)
        if old is not None:
            _unlink(path / "blobs" / str(old["blob"]))
        return self._info(bucket, object_record)

    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Discard an upload and its parts."""
        upload_dir, _ = self._upload_dir(bucket, key, upload_id)
        path = self._existing_bucket_dir(bucket)
        gone = path / "trash" / _new_id()
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
                record = _read_json(Path(entry.path) / "upload.json")
                if record is not None and str(record["key"]).startswith(prefix):
                    uploads.append(self._upload_info(bucket, record))
        uploads.sort(key=lambda u: (u.key, u.initiated, u.upload_id))
        return uploads


# ------------------------------------------------------------------------------ buckets and their owners


def create_bucket(session: Session, store: ObjectStore, *, name: str, account_id: str, region: str) -> Bucket:
    """Create a bucket owned by ``account_id`` (S3 bucket names are global across accounts)."""
    validate_bucket_name(name)
    existing = session.get(Bucket, name)
    if existing is not None:
        _raise_taken(existing, account_id)
    bucket = Bucket(name=name, account_id=account_id, region=region)
    session.add(bucket)
    try:
        session.flush()
    except IntegrityError:
        # Lost a race with a concurrent create of the same name.
        session.rollback()
        winner = session.get(Bucket, name)
        if winner is None:
            raise
        _raise_taken(winner, account_id)
    store.create_bucket(name)
    return bucket


def _raise_taken(bucket: Bucket, account_id: str) -> None:
    if bucket.account_id == account_id:
        raise BucketAlreadyOwnedByYou(bucket=bucket.name)
    raise BucketAlreadyExists(bucket=bucket.name)


def owned_bucket(session: Session, name: str, account_id: str) -> Bucket:
    """Return the caller's bucket, raising ``NoSuchBucket`` or ``AccessDenied`` (another account's)."""
    bucket = session.get(Bucket, name) if len(name) <= 63 else None
    if bucket is None:
        raise NoSuchBucket(bucket=name)
    if bucket.account_id != account_id:
        raise AccessDenied()
    return bucket


def list_buckets(session: Session, account_id: str, *, prefix: str = "") -> list[Bucket]:
    """Return the account's buckets by name."""
    query = select(Bucket).where(Bucket.account_id == account_id).order_by(Bucket.name)
    return [b for b in session.scalars(query) if b.name.startswith(prefix)]


def delete_bucket(session: Session, store: ObjectStore, *, name: str, account_id: str) -> None:
    """Delete the caller's empty bucket, raising ``BucketNotEmpty`` when it holds objects."""
    bucket = owned_bucket(session, name, account_id)
    store.delete_bucket(name)
    session.delete(bucket)
    session.flush()


def ensure_bucket(session: Session, store: ObjectStore, *, name: str, account_id: str, region: str) -> Bucket:
    """Return the account's bucket, creating it if needed (for platform code that writes artifacts)."""
    bucket = session.get(Bucket, name)
    if bucket is None:
        return create_bucket(session, store, name=name, account_id=account_id, region=region)
    if bucket.account_id != account_id:
        raise BucketAlreadyExists(bucket=name)
    store.create_bucket(name)
    return bucket
