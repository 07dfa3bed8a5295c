"""What the store returns: objects, listings, uploads and parts, as immutable records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neurondock_platform.services.objects.tags import Tags

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
# Headers S3 stores with an object and returns on GET/HEAD.
STORED_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires")


@dataclass(frozen=True)
class ObjectMeta:
    """What a client sets on an object besides its bytes."""

    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: Tags = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "content_type": self.content_type,
            "metadata": dict(self.metadata),
            "headers": dict(self.headers),
            "tags": [list(pair) for pair in self.tags],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectMeta:
        return cls(
            content_type=data.get("content_type") or DEFAULT_CONTENT_TYPE,
            metadata=dict(data.get("metadata") or {}),
            headers=dict(data.get("headers") or {}),
            tags=tuple((str(k), str(v)) for k, v in data.get("tags") or ()),
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
    # Sizes and checksums of the parts a multipart object was assembled from (GetObject ?partNumber=,
    # GetObjectAttributes).
    part_sizes: tuple[int, ...] = ()
    part_checksums: tuple[Mapping[str, str], ...] = ()

    @property
    def quoted_etag(self) -> str:
        return f'"{self.etag}"'

    @property
    def content_type(self) -> str:
        return self.meta.content_type

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.meta.metadata

    @property
    def checksum_type(self) -> str | None:
        """FULL_OBJECT or COMPOSITE (a composite checksum ends in ``-<parts>``); None without checksums."""
        if not self.checksums:
            return None
        return "COMPOSITE" if any("-" in v for v in self.checksums.values()) else "FULL_OBJECT"


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
    checksum_type: str | None = None


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
