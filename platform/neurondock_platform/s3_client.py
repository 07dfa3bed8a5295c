"""The S3 client for the artifact store (embedded or external): the host agent, the compile runner and the admin API."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from neurondock_platform.config import Settings


def make_s3_client(settings: Settings) -> Any:
    """Return a path-style boto3 S3 client for the artifact store, signed with the configured keys."""
    # An external store has its own keys; the embedded one accepts the platform's root pair.
    access_key = settings.s3_access_key_id or settings.root_access_key_id or None
    secret_key = settings.s3_secret_access_key or settings.root_secret_access_key or None
    config = Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    # A session of its own: boto3's default session is not safe to build clients from in several threads.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.artifact_store_url,
        region_name=settings.region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )
