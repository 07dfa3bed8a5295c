"""The root account's identity (account id and key pair): from settings, else kept in the data dir.

Apart from ``accounts.py`` so that ``neurondock up``'s supervisor, which prints it and hands it to the
API process, imports no database code (docs/runtime.md, "Start-up").
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
from dataclasses import dataclass
from pathlib import Path

from neurondock_platform.config import Settings

CREDENTIALS_FILE = "credentials.json"

# The OS's randomness, as ``secrets`` draws it; ``secrets`` itself imports hmac and with it OpenSSL's
# libcrypto, which `up`'s supervisor would map for its whole life (~3 MB RSS, docs/measured.md).
_system_random = random.SystemRandom()


@dataclass(frozen=True)
class RootIdentity:
    """The root account and its key pair, as ``neurondock up`` prints them."""

    account_id: str
    access_key_id: str
    secret_access_key: str


def new_access_key_id() -> str:
    """A fresh access key id (AKND + 16 characters)."""
    return "AKND" + "".join(_system_random.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def new_secret() -> str:
    """A fresh 40-character secret access key."""
    return base64.urlsafe_b64encode(os.urandom(30)).decode()


def new_account_id() -> str:
    """A fresh 12-digit account id."""
    return "".join(_system_random.choice(string.digits) for _ in range(12))


def root_identity(settings: Settings) -> RootIdentity:
    """Return the root identity from settings, else from the data dir, else a new one kept there."""
    path: Path = settings.data_dir / CREDENTIALS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    identity = RootIdentity(
        account_id=settings.account_id or stored.get("account_id") or new_account_id(),
        access_key_id=settings.root_access_key_id or stored.get("access_key_id") or new_access_key_id(),
        secret_access_key=settings.root_secret_access_key or stored.get("secret_access_key") or new_secret(),
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
