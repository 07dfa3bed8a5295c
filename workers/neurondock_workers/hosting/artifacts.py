"""Fetch a variant's ``model.tar.gz`` from S3 and unpack it, once per artifact per host, for its replicas."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Collection, Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlparse

from isal import igzip, isal_zlib

from neurondock_workers.hosting.s3 import ObjectBody, ObjectHead, StoreError

# Read S3 bodies in pieces so a multi-GB artifact never sits in memory.
_CHUNK = 1024 * 1024
EXTRACTED = "extracted"
# An archive of more files than this is refused (each one costs an inode and a hard link per replica).
MAX_MEMBERS = 100_000
# What ISA-L raises on a corrupt deflate stream (its stub calls it an instance; it is igzip_lib.IsalError).
_INFLATE_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]


class ObjectStore(Protocol):
    """What fetch_model reads objects with: ``s3.ObjectReader``, as the model's owner (tests pass fakes)."""

    def head(self, bucket: str, key: str) -> ObjectHead: ...

    def get(self, bucket: str, key: str) -> ObjectBody: ...


class ModelDataError(Exception):
    """The model data cannot be fetched or unpacked; the message tells the user what to fix."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # True when the store could not be reached (not a problem with the data): worth retrying.
        self.transient = transient


class UnsafeArchiveError(ModelDataError):
    """A tarball member would land outside the model directory or is not a plain file or directory."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key."""
    parsed = urlparse(url)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not bucket or not key:
        raise ModelDataError(f"ModelDataUrl must look like s3://bucket/key/model.tar.gz, got {url!r}")
    return bucket, key


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    why = ""
    if name.startswith(("/", "\\")):
        why = "absolute path"
    elif ".." in PurePosixPath(name.replace("\\", "/")).parts:
        why = "path traversal ('..')"
    elif member.issym():
        why = f"symbolic link to {member.linkname!r}"
    elif member.islnk():
        why = f"hard link to {member.linkname!r}"
    elif member.ischr() or member.isblk():
        why = "device file"
    elif member.isfifo():
        why = "FIFO"
    elif not (member.isfile() or member.isdir()):
        why = f"unsupported member type {member.type!r}"
    if why:
        raise UnsafeArchiveError(
            f"Refusing to extract model.tar.gz member {name!r}: {why}. "
            "Model archives may only contain regular files and directories under the archive root."
        )


def safe_extract(
    tar_path: Path | str, dest: Path | str, *, max_bytes: int | None = None, max_members: int = MAX_MEMBERS
) -> Path:
    """Extract a gzip tarball into ``dest``, refusing anything that could escape it or outgrow the host.

    One pass over the stream: each member is checked when its header is read, before its data is
    written, and the declared sizes summed, so a tarball that would unpack to more than ``max_bytes``
    (a gzip bomb: 200 MB of zeros compress to 200 KB) never gets more than that onto the disk. A
    refused archive leaves nothing behind: what it had written is removed. (Checking every member
    first and extracting afterwards decompressed the stream twice, the slowest step of a replica's
    start after importing torch: docs/runtime.md, "Start-up".)

    Raises:
        UnsafeArchiveError: a member is absolute, contains ``..``, or is a link or device.
        ModelDataError: the file is not a readable gzip tarball, or unpacks to more than allowed.
    """
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    root = dest_path.resolve()
    existing = set(os.listdir(root))
    free = shutil.disk_usage(root).free
    try:
        # gzip named, not guessed ("r|*"): SageMaker's contract is a gzip tarball, and saying so is the fix.
        # ISA-L's inflate rather than zlib's: the same stream and the same checks (tarfile still reads
        # every header before extractall writes the member), at about 0.05 s less CPU per 43 MB
        # ResNet-18 archive here, on the replica's start path (docs/runtime.md, "Start-up").
        with igzip.open(tar_path, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            # The "data" filter re-checks all of the above and drops setuid bits and odd modes.
            tar.extractall(root, members=_checked(tar, root, max_bytes, max_members, free), filter="data")
    except BaseException as exc:
        for name in set(os.listdir(root)) - existing:
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if isinstance(exc, tarfile.FilterError):
            raise UnsafeArchiveError(f"Refusing to extract model.tar.gz: {exc}") from exc
        if isinstance(exc, (tarfile.TarError, gzip.BadGzipFile, zlib.error, _INFLATE_ERROR, EOFError)):
            raise ModelDataError(f"model.tar.gz is not a gzip tarball (or is truncated): {exc}") from exc
        raise
    return dest_path


def _checked(
    tar: tarfile.TarFile, root: Path, max_bytes: int | None, max_members: int, free: int
) -> Iterator[tarfile.TarInfo]:
    """Yield the stream's members one by one, each checked before extractall writes it."""
    total = 0
    for count, member in enumerate(tar, 1):
        _check_member(member)
        target = (root / member.name).resolve()
        if target != root and root not in target.parents:
            raise UnsafeArchiveError(
                f"Refusing to extract model.tar.gz member {member.name!r}: it resolves outside the model directory."
            )
        total += member.size
        if max_bytes is not None and total > max_bytes:
            raise ModelDataError(
                f"model.tar.gz unpacks to more than {_mib(max_bytes)} (this host's limit, "
                "NEURONDOCK_MAX_MODEL_EXTRACTED_MB); nothing of it was kept. Ship a smaller model "
                "archive, or ask the operator to raise the limit."
            )
        if count > max_members:
            raise ModelDataError(
                f"model.tar.gz holds more than {max_members} files and directories; nothing of it was kept."
            )
        if total > free:
            raise ModelDataError(
                f"model.tar.gz unpacks to more than the {_mib(free)} of disk the host has free; "
                "nothing of it was kept.",
                transient=True,
            )
        yield member


def _mib(size: int) -> str:
    return f"{size / 1024**2:,.0f} MiB"


def _make_readable(root: Path) -> None:
    # Replicas read the unpacked model as an unprivileged sandbox uid: every file readable, every
    # directory searchable, nothing writable but by its owner (and the sandbox mounts it read-only).
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode & 0o777
            os.chmod(path, (mode | 0o444) & ~0o022)


def _download_error(url: str, exc: StoreError) -> ModelDataError:
    # A store that answered 5xx or 429 is busy; one not reached (status 0: refused, timed out, closed)
    # is away, not the data wrong: both are worth retrying.
    transient = exc.status == 0 or exc.status >= 500 or exc.status == 429
    return ModelDataError(f"Could not download model data from {url}: {exc.code}", transient=transient)


def _too_large(max_bytes: int) -> ModelDataError:
    return ModelDataError(
        f"model.tar.gz is larger than {_mib(max_bytes)}, this host's limit on what a model unpacks to "
        "(NEURONDOCK_MAX_MODEL_EXTRACTED_MB), so it cannot unpack to less; nothing of it was kept. "
        "Ship a smaller model archive, or ask the operator to raise the limit."
    )


def _head(store: ObjectStore, url: str) -> str:
    """Return the artifact's digest (URL and ETag); a HEAD with the caller's own credentials, every time."""
    bucket, key = parse_s3_url(url)
    try:
        head = store.head(bucket, key)
    except StoreError as exc:
        if exc.code == "NoSuchKey":
            # A HEAD 404 cannot tell a missing bucket from a missing key; a GET's error body can.
            try:
                store.get(bucket, key).close()
            except StoreError as get_exc:
                raise _download_error(url, get_exc) from get_exc
        raise _download_error(url, exc) from exc
    version = head.etag or f"{head.last_modified}-{head.length}"
    url_digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    version_digest = hashlib.sha256(version.encode()).hexdigest()[:16]
    return f"{url_digest}-{version_digest}"


def _download(store: ObjectStore, url: str, directory: Path, max_bytes: int | None) -> Path:
    """Download the archive into ``directory``, reading no byte past ``max_bytes``."""
    bucket, key = parse_s3_url(url)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".tar.gz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                body = store.get(bucket, key)
            except StoreError as exc:
                raise _download_error(url, exc) from exc
            try:
                # A gzip tarball unpacks to at least about its own size: one larger than the limit is
                # refused as it starts, or as soon as it has sent more than the limit.
                if max_bytes is not None and body.length is not None and body.length > max_bytes:
                    raise _too_large(max_bytes)
                total = 0
                while chunk := body.read(_CHUNK if max_bytes is None else min(_CHUNK, max_bytes - total + 1)):
                    total += len(chunk)
                    if max_bytes is not None and total > max_bytes:
                        raise _too_large(max_bytes)
                    out.write(chunk)
            except StoreError as exc:
                raise _download_error(url, exc) from exc
            finally:
                body.close()
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Path(tmp_name)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as lock:
        # Replicas of one artifact starting together wait for the first to unpack it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fetch_model(
    store: ObjectStore, model_data_url: str, cache_dir: Path | str, *, max_bytes: int | None = None
) -> tuple[Path, str]:
    """Return the artifact's unpacked directory on this host, and its digest (from its URL and ETag).

    Every call asks the store (HEAD, with the caller's credentials) which version the URL names; a
    version already unpacked on this host is reused — one directory per artifact per host, read-only
    to the replicas that load it — else it is downloaded (no more than ``max_bytes`` read), checked,
    unpacked (at most ``max_bytes``) and the tarball dropped. ``prune`` removes directories no replica uses any more.

    Raises:
        ModelDataError: the object cannot be downloaded, or is not a safe gzip tarball.
    """
    cache = Path(cache_dir)
    digest = _head(store, model_data_url)
    extracted = cache / EXTRACTED
    final = extracted / digest
    with _locked(cache / "locks" / f"{digest}.lock"):
        if final.is_dir():
            return final, digest
        tarball = _download(store, model_data_url, cache / "downloads", max_bytes)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=_ensure(extracted)))
        try:
            safe_extract(tarball, staging, max_bytes=max_bytes)
            _make_readable(staging)
            # Atomic: a directory under its digest is always complete.
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            tarball.unlink(missing_ok=True)
    return final, digest


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def prune(cache_dir: Path | str, keep: Collection[str]) -> list[Path]:
    """Delete unpacked artifacts (and stray downloads) whose digest is not in ``keep``; return what went."""
    cache = Path(cache_dir)
    removed: list[Path] = []
    extracted = cache / EXTRACTED
    if extracted.is_dir():
        for path in extracted.iterdir():
            digest = path.name.lstrip(".").split("-", 2)
            name = "-".join(digest[:2])
            if name in keep:
                continue
            with _locked(cache / "locks" / f"{name}.lock"):
                shutil.rmtree(path, ignore_errors=True)
            (cache / "locks" / f"{name}.lock").unlink(missing_ok=True)
            removed.append(path)
    downloads = cache / "downloads"
    if downloads.is_dir() and not keep:
        shutil.rmtree(downloads, ignore_errors=True)
    return removed
