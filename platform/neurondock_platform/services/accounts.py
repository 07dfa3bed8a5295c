"""Accounts and access keys: bootstrap the root account, look up secrets for SigV4."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.errors import ConflictException, NotFoundError
from neurondock_platform.models import AccessKey, AccessKeyStatus, Account, RevokedToken
from neurondock_platform.services import revocations, sts
from neurondock_platform.services.root_identity import RootIdentity, new_access_key_id, new_account_id, new_secret

# Callers ask this module for the root identity; it lives apart so the supervisor imports no database code.
from neurondock_platform.services.root_identity import root_identity as root_identity
from neurondock_platform.sigv4 import Credential

ROOT_ACCOUNT_NAME = "root"


def ensure_root_account(session: Session, identity: RootIdentity) -> Account:
    """Create (or re-activate) the root account and its key; safe to run on every start."""
    account = session.get(Account, identity.account_id)
    if account is None:
        account = Account(id=identity.account_id, name=ROOT_ACCOUNT_NAME, is_admin=True)
        session.add(account)
        session.flush()
    key = session.get(AccessKey, identity.access_key_id)
    if key is None:
        session.add(
            AccessKey(
                access_key_id=identity.access_key_id,
                secret_access_key=identity.secret_access_key,
                account_id=account.id,
            )
        )
    else:
        key.secret_access_key = identity.secret_access_key
        key.status = AccessKeyStatus.ACTIVE
    return account


def create_account(session: Session, name: str, *, is_admin: bool = False) -> tuple[Account, AccessKey]:
    """Create an account with one active access key."""
    account = Account(id=new_account_id(), name=name, is_admin=is_admin)
    session.add(account)
    session.flush()
    key = AccessKey(access_key_id=new_access_key_id(), secret_access_key=new_secret(), account_id=account.id)
    session.add(key)
    session.flush()
    return account, key


def lookup_credential(session: Session, access_key_id: str) -> Credential | None:
    """Return the secret and account of an active access key, or None."""
    row = session.execute(
        select(AccessKey.secret_access_key, AccessKey.account_id).where(
            AccessKey.access_key_id == access_key_id, AccessKey.status == AccessKeyStatus.ACTIVE
        )
    ).first()
    if row is None:
        return None
    return Credential(secret_access_key=row[0], account_id=row[1])


class AccountNotFound(NotFoundError):
    fmt = "Could not find account {account_id!r}."


class AccessKeyNotFound(NotFoundError):
    fmt = "Could not find access key {access_key_id!r}."


class RootKeyManaged(ConflictException):
    fmt = (
        "Access key {access_key_id} is the root key from the platform's settings (NEURONDOCK_ROOT_* or "
        "credentials.json) and is re-activated on every start; change it there instead."
    )


def list_accounts(session: Session) -> list[Account]:
    """Return every account, oldest first."""
    return list(session.scalars(select(Account).order_by(Account.created_at, Account.id)))


def get_account(session: Session, account_id: str) -> Account:
    """Return an account; raise AccountNotFound."""
    account = session.get(Account, account_id) if len(account_id) <= 12 else None
    if account is None:
        raise AccountNotFound(account_id=account_id)
    return account


def list_access_keys(session: Session, account_id: str | None = None) -> list[AccessKey]:
    """Return the access keys of one account (or of all accounts), oldest first."""
    stmt = select(AccessKey).order_by(AccessKey.created_at, AccessKey.access_key_id)
    if account_id is not None:
        stmt = stmt.where(AccessKey.account_id == account_id)
    return list(session.scalars(stmt))


def get_access_key(session: Session, access_key_id: str) -> AccessKey:
    """Return an access key; raise AccessKeyNotFound."""
    key = session.get(AccessKey, access_key_id) if len(access_key_id) <= 128 else None
    if key is None:
        raise AccessKeyNotFound(access_key_id=access_key_id)
    return key


def create_access_key(session: Session, account_id: str) -> AccessKey:
    """Add an active access key to an existing account."""
    get_account(session, account_id)
    key = AccessKey(access_key_id=new_access_key_id(), secret_access_key=new_secret(), account_id=account_id)
    session.add(key)
    session.flush()
    return key


@dataclass(frozen=True)
class KeyChange:
    """An access key after a status change, and what was ended with it (for the caches to forget)."""

    key: AccessKey
    # Disabling a key revokes every token and console session issued for it so far, so enabling the
    # key again does not bring them back; None when nothing was revoked.
    revocation: RevokedToken | None = None
    # Temporary (STS) keys the key had obtained, now deleted.
    ended_temporary: tuple[str, ...] = ()


def _end_issued(session: Session, key: AccessKey, now: dt.datetime | None) -> KeyChange:
    revocation = revocations.revoke_key_tokens(session, key.access_key_id, key.account_id, now=now)
    ended = tuple(sts.revoke_issued_by(session, key.access_key_id))
    return KeyChange(key, revocation, ended)


def set_access_key_status(
    session: Session,
    access_key_id: str,
    status: AccessKeyStatus,
    *,
    root_access_key_id: str | None = None,
    now: dt.datetime | None = None,
) -> KeyChange:
    """Enable or disable an access key (the root key from settings cannot be disabled here).

    Disabling ends what the key issued (tokens, console sessions, temporary credentials) for good.
    """
    key = get_access_key(session, access_key_id)
    if status != AccessKeyStatus.ACTIVE and access_key_id == root_access_key_id:
        raise RootKeyManaged(access_key_id=access_key_id)
    key.status = status
    change = _end_issued(session, key, now) if status != AccessKeyStatus.ACTIVE else KeyChange(key)
    session.flush()
    return change


def rotate_access_key(
    session: Session, access_key_id: str, *, root_access_key_id: str | None = None, now: dt.datetime | None = None
) -> tuple[AccessKey, KeyChange]:
    """Issue a new active key for the same account and disable the old one; returns (new, the old one's change)."""
    old = get_access_key(session, access_key_id)
    if access_key_id == root_access_key_id:
        raise RootKeyManaged(access_key_id=access_key_id)
    new = create_access_key(session, old.account_id)
    old.status = AccessKeyStatus.INACTIVE
    change = _end_issued(session, old, now)
    session.flush()
    return new, change
