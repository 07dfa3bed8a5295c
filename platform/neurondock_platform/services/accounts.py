"""Accounts and access keys: bootstrap the root account, look up secrets for SigV4."""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.config import Settings
from neurondock_platform.errors import ConflictException, NotFoundError
from neurondock_platform.models import AccessKey, AccessKeyStatus, Account
from neurondock_platform.sigv4 import Credential

ROOT_ACCOUNT_NAME = "root"
CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class RootIdentity:
    """The root account and its key pair, as ``neurondock up`` prints them."""

    account_id: str
    access_key_id: str
    secret_access_key: str


def _new_access_key_id() -> str:
    return "AKND" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def _new_secret() -> str:
    return secrets.token_urlsafe(30)[:40]


def _new_account_id() -> str:
    return "".join(secrets.choice(string.digits) for _ in range(12))


def root_identity(settings: Settings) -> RootIdentity:
    """Return the root identity from settings, else from the data dir, else a new one kept there."""
    path: Path = settings.data_dir / CREDENTIALS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    identity = RootIdentity(
        account_id=settings.account_id or stored.get("account_id") or _new_account_id(),
        access_key_id=settings.root_access_key_id or stored.get("access_key_id") or _new_access_key_id(),
        secret_access_key=settings.root_secret_access_key or stored.get("secret_access_key") or _new_secret(),
    )
    wanted = {
        "account_id": identity.account_id,
        "access_key_id": identity.access_key_id,
        "secret_access_key": identity.secret_access_key,
    }
    if stored != wanted:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(wanted, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
    return identity


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
    account = Account(id=_new_account_id(), name=name, is_admin=is_admin)
    session.add(account)
    session.flush()
    key = AccessKey(access_key_id=_new_access_key_id(), secret_access_key=_new_secret(), account_id=account.id)
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
    key = AccessKey(access_key_id=_new_access_key_id(), secret_access_key=_new_secret(), account_id=account_id)
    session.add(key)
    session.flush()
    return key


def set_access_key_status(
    session: Session, access_key_id: str, status: AccessKeyStatus, *, root_access_key_id: str | None = None
) -> AccessKey:
    """Enable or disable an access key (the root key from settings cannot be disabled here)."""
    key = get_access_key(session, access_key_id)
    if status != AccessKeyStatus.ACTIVE and access_key_id == root_access_key_id:
        raise RootKeyManaged(access_key_id=access_key_id)
    key.status = status
    session.flush()
    return key


def rotate_access_key(
    session: Session, access_key_id: str, *, root_access_key_id: str | None = None
) -> tuple[AccessKey, AccessKey]:
    """Issue a new active key for the same account and disable the old one; returns (new, old)."""
    old = get_access_key(session, access_key_id)
    if access_key_id == root_access_key_id:
        raise RootKeyManaged(access_key_id=access_key_id)
    new = create_access_key(session, old.account_id)
    old.status = AccessKeyStatus.INACTIVE
    session.flush()
    return new, old
