"""What each account may reach in an external S3 store, and with which keys (docs/security.md).

With ``NEURONDOCK_S3_ENDPOINT_URL`` the platform cannot mint credentials the store understands, so an
admin gives it the account's own store credentials (``neurondock accounts store-access``, the admin
API): the platform then reads and writes for that account with those keys only, and the store checks
ownership itself. An account without them may use only what the operator mapped to it: the buckets
listed for it, plus its own artifact bucket ``nd-artifacts-<account id>``, reached with the platform's
external key (``NEURONDOCK_S3_ACCESS_KEY_ID``) and checked by the platform before any request leaves.
A bucket is mapped to one account at most.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.config import Settings
from neurondock_platform.errors import ConflictException, ValidationException
from neurondock_platform.models import StoreAccess
from neurondock_platform.services import objects
from neurondock_platform.services.accounts import get_account

MAX_BUCKETS = 100


@dataclass(frozen=True)
class StoreGrant:
    """The keys to reach an external store for one account, and the buckets they are limited to (None: any)."""

    access_key_id: str
    secret_access_key: str
    buckets: tuple[str, ...] | None


@dataclass(frozen=True)
class StoreAccessView:
    """An account's store access as admins see it (never the secret)."""

    account_id: str
    access_key_id: str | None
    buckets: tuple[str, ...]
    artifact_bucket: str


class BucketMappedElsewhere(ConflictException):
    fmt = "Bucket {bucket} is mapped to account {account_id} already; a bucket is mapped to one account at most."


def _row(session: Session, account_id: str) -> StoreAccess | None:
    return session.get(StoreAccess, account_id)


def grant(session: Session, settings: Settings, account_id: str) -> StoreGrant:
    """Return how the platform reaches the external store for ``account_id``."""
    row = _row(session, account_id)
    if row is not None and row.access_key_id and row.secret_access_key:
        return StoreGrant(row.access_key_id, row.secret_access_key, None)
    mapped = set(row.buckets if row is not None else ())
    mapped.add(objects.artifact_bucket_name(account_id))
    return StoreGrant(settings.s3_access_key_id, settings.s3_secret_access_key, tuple(sorted(mapped)))


def describe(session: Session, account_id: str) -> StoreAccessView:
    """Return an account's store access (raises AccountNotFound)."""
    get_account(session, account_id)
    row = _row(session, account_id)
    return StoreAccessView(
        account_id=account_id,
        access_key_id=row.access_key_id if row is not None else None,
        buckets=tuple(row.buckets) if row is not None else (),
        artifact_bucket=objects.artifact_bucket_name(account_id),
    )


def set_access(
    session: Session,
    account_id: str,
    *,
    access_key_id: str | None,
    secret_access_key: str | None,
    buckets: list[str],
) -> StoreAccessView:
    """Replace an account's store access: its own store credentials (both or neither) and its mapped buckets."""
    get_account(session, account_id)
    if bool(access_key_id) != bool(secret_access_key):
        raise ValidationException(
            "Give both access_key_id and secret_access_key of the account's store credentials, or neither."
        )
    if access_key_id is not None and not 1 <= len(access_key_id) <= 128:
        raise ValidationException("access_key_id must be 1 to 128 characters.")
    if secret_access_key is not None and not 1 <= len(secret_access_key) <= 256:
        raise ValidationException("secret_access_key must be 1 to 256 characters.")
    if len(buckets) > MAX_BUCKETS:
        raise ValidationException(f"At most {MAX_BUCKETS} buckets can be mapped to one account.")
    names = sorted(set(buckets))
    for name in names:
        objects.validate_bucket_name(name)
    for other in session.scalars(select(StoreAccess).where(StoreAccess.account_id != account_id)):
        for name in set(names) & set(other.buckets):
            raise BucketMappedElsewhere(bucket=name, account_id=other.account_id)
    row = _row(session, account_id)
    if row is None:
        row = StoreAccess(account_id=account_id, buckets=[])
        session.add(row)
    row.access_key_id = access_key_id or None
    row.secret_access_key = secret_access_key or None
    row.buckets = names
    session.flush()
    return describe(session, account_id)


def clear_access(session: Session, account_id: str) -> StoreAccessView:
    """Remove an account's store credentials and mapped buckets (its artifact bucket stays reachable)."""
    get_account(session, account_id)
    row = _row(session, account_id)
    if row is not None:
        session.delete(row)
        session.flush()
    return describe(session, account_id)
