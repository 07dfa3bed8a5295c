"""Conditional requests: the ETag-list grammar of If-Match / If-None-Match, and the conditions a write or a
delete carries, checked against the current object under the bucket lock so two writers cannot both pass.

What S3 answers for each (412 PreconditionFailed, 404 NoSuchKey for If-Match on a missing key, a delete of a
missing key still succeeding) is in docs/s3.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neurondock_platform.services.objects.errors import NoSuchKey, PreconditionFailed


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match / If-None-Match value (``*`` or a list of quoted ETags) matches ``etag``."""
    candidates = [c.strip().removeprefix("W/").strip('"') for c in header.split(",")]
    return "*" in candidates or etag in candidates


@dataclass(frozen=True)
class WriteCondition:
    """If-Match / If-None-Match on PutObject, CopyObject or CompleteMultipartUpload."""

    if_match: str | None = None
    if_none_match: str | None = None

    def check(self, key: str, current: Mapping[str, Any] | None) -> None:
        """Raise unless a write may replace ``current`` (the key's sidecar record, None when absent)."""
        if self.if_match is not None:
            if current is None:
                raise NoSuchKey(key=key)
            if not etag_matches(self.if_match, str(current["etag"])):
                raise PreconditionFailed(condition="If-Match")
        if (
            self.if_none_match is not None
            and current is not None
            and etag_matches(self.if_none_match, str(current["etag"]))
        ):
            raise PreconditionFailed(condition="If-None-Match")


@dataclass(frozen=True)
class DeleteCondition:
    """If-Match, x-amz-if-match-last-modified-time and x-amz-if-match-size on a delete."""

    if_match: str | None = None
    last_modified: dt.datetime | None = None
    size: int | None = None

    def check(self, current: Mapping[str, Any]) -> None:
        """Raise unless the existing object ``current`` may be deleted (a missing one always may)."""
        if self.if_match is not None and not etag_matches(self.if_match, str(current["etag"])):
            raise PreconditionFailed(condition="If-Match")
        if self.last_modified is not None and int(float(current["last_modified"])) != int(
            self.last_modified.timestamp()
        ):
            raise PreconditionFailed(condition="x-amz-if-match-last-modified-time")
        if self.size is not None and int(current["size"]) != self.size:
            raise PreconditionFailed(condition="x-amz-if-match-size")
