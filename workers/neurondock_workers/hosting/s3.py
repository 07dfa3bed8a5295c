"""The S3 client the host agent fetches model data with (built by the platform, shared with its API)."""

from __future__ import annotations

from neurondock_platform.s3_client import make_s3_client

__all__ = ["make_s3_client"]
