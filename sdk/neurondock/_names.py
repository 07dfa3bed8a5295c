"""Resource names the way the SageMaker Python SDK builds them (``name_from_base`` and friends)."""

from __future__ import annotations

import re
import time

MAX_NAME_LENGTH = 63
# SageMaker names allow only letters, digits and hyphens, and must start with a letter or digit.
_INVALID = re.compile(r"[^a-zA-Z0-9-]+")
_TIMESTAMPED = re.compile(r"^(.+)-(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}|\d{6}-\d{4})")


def sagemaker_timestamp() -> str:
    """Return a UTC timestamp with milliseconds, e.g. ``2024-05-01-12-00-00-123``."""
    moment = time.time()
    millis = int(moment * 1000) % 1000
    return time.strftime(f"%Y-%m-%d-%H-%M-%S-{millis:03d}", time.gmtime(moment))


def name_from_base(base: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """Append a timestamp to ``base``, trimming it so the result fits in ``max_length``."""
    timestamp = sagemaker_timestamp()
    cleaned = _INVALID.sub("-", base).strip("-") or "neurondock"
    trimmed = cleaned[: max_length - len(timestamp) - 1]
    return f"{trimmed}-{timestamp}"


def base_name_from_image(image: str) -> str:
    """Return the repository part of an image URI (``…/pytorch-inference:2.1`` → ``pytorch-inference``)."""
    match = re.match(r"^(.+/)?([^:/]+)(:[^:]+)?$", image)
    return match.group(2) if match else image


def base_from_name(name: str) -> str:
    """Strip a ``name_from_base`` timestamp from ``name``."""
    match = _TIMESTAMPED.match(name)
    return match.group(1) if match else name
