"""Buckets and their owners: the ``buckets`` table over ``ObjectStore``; names are global across accounts.

``nd-artifacts-<account id>`` is where the admin API, the console and ``neurondock deploy`` put an
account's uploads; only that account may create it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurondock_platform.models import Bucket
from neurondock_platform.services.objects.errors import (
    AccessDenied,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    NoSuchBucket,
)
from neurondock_platform.services.objects.keys import validate_bucket_name
from neurondock_platform.services.objects.store import ObjectStore

ARTIFACT_BUCKET_PREFIX = "nd-artifacts-"


def artifact_bucket_name(account_id: str) -> str:
    """Return the bucket the admin API, the console and the CLI use for an account's uploads."""
    return f"{ARTIFACT_BUCKET_PREFIX}{account_id}"


def reserved_owner(name: str) -> str | None:
    """Return the account a reserved bucket name belongs to, or None for an ordinary name."""
    if name.startswith(ARTIFACT_BUCKET_PREFIX) and len(name) > len(ARTIFACT_BUCKET_PREFIX):
        return name[len(ARTIFACT_BUCKET_PREFIX) :]
    return None


def create_bucket(session: Session, store: ObjectStore, *, name: str, account_id: str, region: str) -> Bucket:
    """Create a bucket owned by ``account_id`` (S3 bucket names are global across accounts)."""
    validate_bucket_name(name)
    reserved_for = reserved_owner(name)
    if reserved_for is not None and reserved_for != account_id:
        # Another account may not squat the name the owner's uploads will need.
        raise BucketAlreadyExists(bucket=name)
    existing = session.get(Bucket, name)
    if existing is not None:
        _raise_taken(existing, account_id)
    bucket = Bucket(name=name, account_id=account_id, region=region)
    session.add(bucket)
    try:
        session.flush()
    except IntegrityError:
        # Lost a race with a concurrent create of the same name.
        session.rollback()
        winner = session.get(Bucket, name)
        if winner is None:
            raise
        _raise_taken(winner, account_id)
    store.create_bucket(name)
    return bucket


def _raise_taken(bucket: Bucket, account_id: str) -> None:
    if bucket.account_id == account_id:
        raise BucketAlreadyOwnedByYou(bucket=bucket.name)
    raise BucketAlreadyExists(bucket=bucket.name)


def owned_bucket(session: Session, name: str, account_id: str) -> Bucket:
    """Return the caller's bucket, raising ``NoSuchBucket`` or ``AccessDenied`` (another account's)."""
    bucket = session.get(Bucket, name) if len(name) <= 63 else None
    if bucket is None:
        raise NoSuchBucket(bucket=name)
    if bucket.account_id != account_id:
        raise AccessDenied()
    return bucket


def list_buckets(session: Session, account_id: str, *, prefix: str = "") -> list[Bucket]:
    """Return the account's buckets by name."""
    query = select(Bucket).where(Bucket.account_id == account_id).order_by(Bucket.name)
    return [b for b in session.scalars(query) if b.name.startswith(prefix)]


def delete_bucket(session: Session, store: ObjectStore, *, name: str, account_id: str) -> None:
    """Delete the caller's empty bucket, raising ``BucketNotEmpty`` when it holds objects."""
    bucket = owned_bucket(session, name, account_id)
    store.delete_bucket(name)
    session.delete(bucket)
    session.flush()


def ensure_bucket(session: Session, store: ObjectStore, *, name: str, account_id: str, region: str) -> Bucket:
    """Return the account's bucket, creating it if needed (for platform code that writes artifacts)."""
    bucket = session.get(Bucket, name)
    if bucket is None:
        return create_bucket(session, store, name=name, account_id=account_id, region=region)
    if bucket.account_id != account_id:
        raise BucketAlreadyExists(bucket=name)
    store.create_bucket(name)
    return bucket
