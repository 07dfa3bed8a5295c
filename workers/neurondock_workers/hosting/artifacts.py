"""Fetch a variant's ``model.tar.gz`` from S3 and unpack it where a replica can load it."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError

# Read S3 bodies in pieces so a multi-GB artifact never sits in memory.
_CHUNK = 1024 * 1024


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


def safe_extract(tar_path: Path | str, dest: Path | str) -> Path:
    """Extract a gzip tarball into ``dest``, refusing anything that could escape it.

    Raises:
        UnsafeArchiveError: a member is absolute, contains ``..``, or is a link or device.
        ModelDataError: the file is not a readable gzip tarball.
    """
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    root = dest_path.resolve()
    try:
        # "r:gz" rather than "r:*": SageMaker's contract is a gzip tarball, and saying so is the fix.
        with tarfile.open(tar_path, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
                target = (root / member.name).resolve()
                if target != root and root not in target.parents:
                    raise UnsafeArchiveError(
                        f"Refusing to extract model.tar.gz member {member.name!r}: it resolves outside "
                        "the model directory."
                    )
            # The "data" filter re-checks all of the above and drops setuid bits and odd modes.
            tar.extractall(root, members=members, filter="data")
    except UnsafeArchiveError:
        raise
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"Refusing to extract model.tar.gz: {exc}") from exc
    except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise ModelDataError(f"model.tar.gz is not a gzip tarball (or is truncated): {exc}") from exc
    return dest_path


def _error_code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    code = str(err.get("Code") or "")
    # HEAD responses carry no body, so botocore only knows the status; name it the way GET would.
    return {"404": "NoSuchKey", "403": "AccessDenied", "400": "BadRequest"}.get(code, code) or "Unknown"


def _download_error(url: str, exc: Exception) -> ModelDataError:
    detail = _error_code(exc) if isinstance(exc, ClientError) else str(exc)
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        transient = status >= 500 or status == 429
    else:
        # Connection refused, timeouts, a closed connection: the store is away, not the data wrong.
        transient = True
    return ModelDataError(f"Could not download model data from {url}: {detail}", transient=transient)


def _download(s3_client: Any, url: str, cache_dir: Path) -> Path:
    bucket, key = parse_s3_url(url)
    try:
        head = s3_client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _error_code(exc) == "NoSuchKey":
            # A HEAD 404 cannot tell a missing bucket from a missing key; a GET's error body can.
            try:
                s3_client.get_object(Bucket=bucket, Key=key)["Body"].close()
            except (ClientError, BotoCoreError) as get_exc:
                raise _download_error(url, get_exc) from get_exc
        raise _download_error(url, exc) from exc
    except BotoCoreError as exc:
        raise _download_error(url, exc) from exc

    version = str(head.get("ETag") or f"{head.get('LastModified')}-{head.get('ContentLength')}")
    url_digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    version_digest = hashlib.sha256(version.encode()).hexdigest()[:16]
    cached = cache_dir / f"{url_digest}-{version_digest}.tar.gz"
    if cached.is_file():
        return cached

    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = s3_client.get_object(Bucket=bucket, Key=key)
                body = response["Body"]
                try:
                    while chunk := body.read(_CHUNK):
                        out.write(chunk)
                finally:
                    body.close()
            except (ClientError, BotoCoreError) as exc:
                raise _download_error(url, exc) from exc
        # Atomic: two replicas of one variant may download the same object at the same time.
        os.replace(tmp_name, cached)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # An older version of the same URL is dead weight once the new one is in.
    for stale in cache_dir.glob(f"{url_digest}-*.tar.gz"):
        if stale != cached:
            stale.unlink(missing_ok=True)
    return cached


def fetch_model_data(
    s3_client: Any, model_data_url: str, cache_dir: Path | str, dest: Path | str | None = None
) -> Path:
    """Download ``s3://bucket/key`` (cached by URL and ETag) and extract it into a fresh directory.

    The result is ``dest`` when given (replaced atomically), else a new directory under ``cache_dir``.

    Raises:
        ModelDataError: the object cannot be downloaded, or is not a safe gzip tarball.
    """
    return fetch_model(s3_client, model_data_url, cache_dir, dest)[0]


def fetch_model(
    s3_client: Any, model_data_url: str, cache_dir: Path | str, dest: Path | str | None = None
) -> tuple[Path, str]:
    """Like ``fetch_model_data``, and also return the artifact's digest (from its URL and ETag)."""
    cache = Path(cache_dir)
    tarball = _download(s3_client, model_data_url, cache / "downloads")
    digest = tarball.name.removesuffix(".tar.gz")
    if dest is None:
        (cache / "extracted").mkdir(parents=True, exist_ok=True)
        return safe_extract(tarball, tempfile.mkdtemp(prefix="model-", dir=cache / "extracted")), digest

    final = Path(dest)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        safe_extract(tarball, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Fresh every time: user code may have written into the previous copy before it crashed.
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    return final, digest
