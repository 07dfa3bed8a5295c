"""Artifacts in a store apart from the API process, through the admin API and the console, as the account.

With ``NEURONDOCK_S3_ENDPOINT_URL`` set, the platform reads and writes for an account with a client
acting as it (``s3_client.OwnerClients``): the account's own STS credentials on a ``neurondock store``,
its own store credentials on an external S3, or the platform's external key limited to the buckets
mapped to it. What the store (or that limit) refuses is ``AccessDenied``, which the admin API reports
like a missing bucket, as for another account's bucket in the embedded store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from neurondock_platform.errors import PlatformError
from neurondock_platform.services import objects

_MISSING = ("NoSuchBucket", "NoSuchKey", "404", "NotFound")


class ExternalStoreError(PlatformError):
    code = "BadGateway"
    http_status = 502
    fmt = "The external S3 store at {endpoint} could not complete the request: {reason}"


def _info(bucket: str, key: str, size: int, etag: str, modified: dt.datetime, content_type: str) -> objects.ObjectInfo:
    return objects.ObjectInfo(
        bucket=bucket,
        key=key,
        size=int(size),
        etag=etag.strip('"'),
        last_modified=modified,
        meta=objects.ObjectMeta(content_type=content_type or objects.DEFAULT_CONTENT_TYPE),
        checksums={},
        parts_count=None,
        blob="",
    )


class ExternalArtifacts:
    """What one account reaches in a store apart from this process."""

    def __init__(self, client_factory: Callable[[], Any], endpoint: str) -> None:
        self._client_factory = client_factory
        self.endpoint = endpoint

    def _check(self, bucket: str) -> Any:
        objects.validate_bucket_name(bucket)
        return self._client_factory()

    def _error(self, exc: Exception, bucket: str, key: str | None = None) -> PlatformError:
        code = str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""
        if code in _MISSING:
            if key is None or code == "NoSuchBucket":
                return objects.NoSuchBucket(bucket=bucket)
            return objects.NoSuchKey(key=key)
        if code in ("AccessDenied", "403"):
            # The store refused the account's own keys: the account may not reach this.
            return objects.AccessDenied()
        return ExternalStoreError(endpoint=self.endpoint, reason=code or type(exc).__name__)

    def list(
        self, bucket: str, *, prefix: str, limit: int, token: str | None
    ) -> tuple[list[objects.ObjectInfo], str | None]:
        """List objects under ``prefix``; return them and S3's continuation token for the next page."""
        client = self._check(bucket)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": limit}
        if token:
            kwargs["ContinuationToken"] = token
        try:
            page = client.list_objects_v2(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, bucket) from exc
        items = [
            _info(bucket, o["Key"], o["Size"], o.get("ETag", ""), o["LastModified"], "")
            for o in page.get("Contents", [])
        ]
        return items, page.get("NextContinuationToken") if page.get("IsTruncated") else None

    def put(self, bucket: str, key: str, body: IO[bytes] | bytes, content_type: str | None) -> objects.ObjectInfo:
        """Upload an object (multipart when large or of unknown size), creating the bucket if needed."""
        client = self._check(bucket)
        extra = {"ContentType": content_type or objects.DEFAULT_CONTENT_TYPE}
        try:
            try:
                client.head_bucket(Bucket=bucket)
            except ClientError:
                client.create_bucket(Bucket=bucket)
            if isinstance(body, bytes):
                client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
            else:
                client.upload_fileobj(body, bucket, key, ExtraArgs=extra)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, bucket, key) from exc
        info, handle = self.open(bucket, key)
        handle.close()
        return info

    def open(self, bucket: str, key: str) -> tuple[objects.ObjectInfo, IO[bytes]]:
        """Open an object for reading; the body streams from the store."""
        client = self._check(bucket)
        try:
            got = client.get_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, bucket, key) from exc
        info = _info(
            bucket, key, got["ContentLength"], got.get("ETag", ""), got["LastModified"], got.get("ContentType", "")
        )
        return info, got["Body"]
