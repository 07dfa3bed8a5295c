"""Artifacts (model archives, compile outputs) an account uploads, lists and downloads outside S3's API.

The admin API and the console use these verbs; they act on the embedded object store's buckets the
account owns, or on a store apart from this process as the account (``services/external_artifacts.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import IO

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.config import Settings
from neurondock_platform.s3_client import OwnerClients, StoreOwner
from neurondock_platform.services import objects, pagination
from neurondock_platform.services.external_artifacts import ExternalArtifacts


def embedded_store(settings: Settings) -> objects.ObjectStore:
    """Return the embedded object store."""
    return objects.ObjectStore(settings.objects_dir)


@functools.cache
def _owner_clients(settings: Settings, bind: Engine) -> OwnerClients:
    # One per process and database: it keeps one S3 client per owner (building one costs tens of ms).
    return OwnerClients(settings, sessionmaker(bind=bind), session_name="neurondock-artifacts")


def external_artifacts(session: Session, settings: Settings, account_id: str) -> ExternalArtifacts | None:
    """Return the account's view of a store apart from this process, or None for the embedded store.

    The store is reached as the account (``s3_client.OwnerClients``): with its own short-lived STS
    credentials on a ``neurondock store``, with its own store credentials or only its mapped buckets on
    an external S3. The embedded store is used in process, with the same ownership check.
    """
    if not settings.s3_endpoint_url:
        return None
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    clients = _owner_clients(settings, engine)
    return ExternalArtifacts(lambda: clients(StoreOwner(account_id)), settings.s3_endpoint_url)


@dataclass(frozen=True)
class ObjectPage:
    items: list[objects.ObjectInfo]
    next_token: str | None


def list_artifacts(
    session: Session,
    settings: Settings,
    *,
    account_id: str,
    bucket: str,
    prefix: str = "",
    limit: int = 100,
    next_token: str | None = None,
) -> ObjectPage:
    """List one of the account's buckets (S3's NoSuchBucket / AccessDenied otherwise)."""
    after = ""
    if next_token:
        payload = pagination.decode_token(next_token)
        if payload.get("s") != f"objects:{bucket}:{prefix}" or not isinstance(payload.get("a"), str):
            raise pagination.invalid_token()
        after = payload["a"]
    external = external_artifacts(session, settings, account_id)
    if external is not None:
        items, s3_token = external.list(bucket, prefix=prefix, limit=limit, token=after or None)
        token = pagination.encode_token({"s": f"objects:{bucket}:{prefix}", "a": s3_token}) if s3_token else None
        return ObjectPage(items, token)
    store = embedded_store(settings)
    objects.owned_bucket(session, bucket, account_id)
    page = store.list_objects(bucket, prefix=prefix, after=after, max_keys=limit)
    token = None
    if page.is_truncated and page.last is not None:
        token = pagination.encode_token({"s": f"objects:{bucket}:{prefix}", "a": page.last})
    return ObjectPage(page.contents, token)


def put_artifact(
    session: Session,
    settings: Settings,
    *,
    account_id: str,
    bucket: str,
    key: str,
    body: IO[bytes] | bytes,
    content_type: str | None = None,
) -> objects.ObjectInfo:
    """Store an object in one of the account's buckets, creating the bucket when it does not exist."""
    external = external_artifacts(session, settings, account_id)
    if external is not None:
        objects.validate_key(key)
        return external.put(bucket, key, body, content_type)
    store = embedded_store(settings)
    objects.ensure_bucket(session, store, name=bucket, account_id=account_id, region=settings.region)
    meta = objects.ObjectMeta(content_type=content_type or objects.DEFAULT_CONTENT_TYPE)
    return store.put_object(bucket, key, body, meta)


def open_artifact(
    session: Session, settings: Settings, *, account_id: str, bucket: str, key: str
) -> tuple[objects.ObjectInfo, IO[bytes]]:
    """Open an object of one of the account's buckets for reading."""
    objects.validate_key(key)
    external = external_artifacts(session, settings, account_id)
    if external is not None:
        return external.open(bucket, key)
    store = embedded_store(settings)
    objects.owned_bucket(session, bucket, account_id)
    return store.open_object(bucket, key)


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"
