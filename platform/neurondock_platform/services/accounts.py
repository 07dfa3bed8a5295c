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
