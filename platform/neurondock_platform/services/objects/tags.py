"""Object tags: S3's limits on them (AWS validates exactly these and answers ``InvalidTag``).

Tags are stored with the object (its sidecar) and kept in key order, as S3 returns them; docs/s3.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from neurondock_platform.services.objects.errors import InvalidTag

MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
_RESERVED_PREFIX = "aws:"

Tags = tuple[tuple[str, str], ...]


def validate_tags(pairs: Iterable[tuple[str, str]]) -> Tags:
    """Return the tag set sorted by key, raising ``InvalidTag`` for what S3 refuses."""
    tags = list(pairs)
    if len(tags) > MAX_TAGS:
        raise InvalidTag(f"Object tags cannot be greater than {MAX_TAGS}")
    seen: set[str] = set()
    for key, value in tags:
        if not key or len(key) > MAX_TAG_KEY:
            raise InvalidTag(f"The TagKey you have provided is invalid (1 to {MAX_TAG_KEY} characters): {key[:40]!r}")
        if len(value) > MAX_TAG_VALUE:
            raise InvalidTag(f"The TagValue you have provided is too long, max {MAX_TAG_VALUE}")
        if key.lower().startswith(_RESERVED_PREFIX):
            raise InvalidTag("Your TagKey cannot be prefixed with aws:")
        if key in seen:
            raise InvalidTag("Cannot provide multiple Tags with the same key")
        seen.add(key)
    return tuple(sorted(tags))
