"""Bucket names and object keys: S3's rules for them, and how a key becomes a file name that is never a path.

``encode_key`` keeps ``[A-Za-z0-9_-]`` and percent-encodes every other UTF-8 byte, so ``/``, ``.`` and
``..`` cannot form path segments; a name that would be too long for the file system becomes
``~<sha256>`` and the key is read back from its sidecar instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from neurondock_platform.services.objects.errors import (
    InvalidArgument,
    InvalidBucketName,
    KeyTooLongError,
    MetadataTooLarge,
)

MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048

_MAX_NAME = 200
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")


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


def decode_name(name: str) -> str | None:
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
