"""S3 clients that act as an account: the host agent's model downloads, the compile runner's input and output.

Every read or write of an object on behalf of an account is signed with that account's own credentials,
never the platform's root pair, so the store enforces ownership exactly as for the account's direct
calls (docs/security.md):

- **A store that knows the platform's accounts** (the embedded store at ``<url>/s3``, or a standalone
  ``neurondock store`` sharing the database: ``NEURONDOCK_S3_STORE_KIND=neurondock``): short-lived
  credentials from STS ``AssumeRole`` on the model's or job's execution role, always within the owner's
  account (``services/sts.py``), refreshed by botocore before they expire.
- **An external S3 store** (``NEURONDOCK_S3_ENDPOINT_URL``): the store credentials an admin set for the
  account (``services/store_access.py``); an account without them gets the platform's external key
  (``NEURONDOCK_S3_ACCESS_KEY_ID``) limited to the buckets the operator mapped to it, checked here
  before any request leaves (the external store cannot tell tenants of one key apart).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from neurondock_platform.config import Settings

if TYPE_CHECKING:
    import boto3
    import botocore.session
    from botocore.config import Config
    from botocore.credentials import RefreshableCredentials
    from sqlalchemy.orm import Session, sessionmaker

    from neurondock_platform.services import store_access, sts

# boto3 and botocore are imported where a client is built, not here: importing them costs a process
# ~10 MB that the API and the Celery worker keep for good, and both import this module at start but
# build an S3 client only for an artifact request, a compile or an async job (docs/measured.md).
# SQLAlchemy and the services are imported where keys are issued. The host process reads model data
# with ``StoreKeys`` and a client of its own (neurondock_workers/hosting/s3.py), without botocore.

# How long each AssumeRole session the platform takes for a worker lasts; botocore refreshes it when
# less than 15 minutes remain, so a long download or multipart upload never signs with expired keys.
SESSION_SECONDS = 3600
DEFAULT_ROLE_NAME = "neurondock-execution-role"


@dataclass(frozen=True)
class StoreOwner:
    """Whose object a worker reads or writes: the account, and the execution role it runs with."""

    account_id: str
    role_arn: str | None = None

    @property
    def role(self) -> str:
        """The role to assume: the model's or job's execution role, else the account's default one."""
        return self.role_arn or f"arn:aws:iam::{self.account_id}:role/{DEFAULT_ROLE_NAME}"


# A factory of S3 clients acting as one owner (``OwnerClients``; tests pass their own).
OwnerClientFactory = Callable[[StoreOwner], Any]


def client_config() -> Config:
    """Path-style SigV4 with bounded retries and timeouts."""
    from botocore.config import Config

    return Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )


@functools.cache
def _shared_loader() -> Any:
    import botocore.session

    from neurondock_platform.botocore_models import UndocumentedFiles

    loader = botocore.session.Session().get_component("data_loader")
    # Every client of this loader is an S3 client (``_session``'s callers).
    loader.file_loader = UndocumentedFiles(endpoint_services={"s3"})
    return loader


_loader_lock = threading.Lock()


def _session(core: botocore.session.Session | None = None) -> boto3.session.Session:
    """A boto3 session of its own (the default one is not thread-safe) sharing the process's data loader.

    Each botocore session parses S3's service model and endpoint rules again, 0.15-0.4 s here (0.9 s
    under load), which each new client waited for; one loader parses them once per
    process (docs/runtime.md, "Start-up").
    """
    import boto3.session
    import botocore.session

    core = core or botocore.session.Session()
    loader = _shared_loader()
    core.register_component("data_loader", loader)
    with _loader_lock:
        session = boto3.session.Session(botocore_session=core)
        # boto3 appends its own data directory to the loader's search paths per session: keep one.
        loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))
    return session


def make_s3_client(
    endpoint_url: str,
    region: str,
    *,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None = None,
) -> Any:
    """Return a path-style boto3 S3 client for a store, signed with the keys given."""
    return _session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id or None,
        aws_secret_access_key=secret_access_key or None,
        aws_session_token=session_token,
        config=client_config(),
    )


class _AssumedRole:
    """Credentials of one (account, role), from the AssumeRole service verb, refreshed before they expire.

    Duck-typed as botocore's ``CredentialProvider`` (``METHOD``, ``load``), which it replaces in the
    client's resolver, so that importing this module needs no botocore.
    """

    METHOD = "neurondock-assume-role"
    CANONICAL_NAME = None

    def __init__(self, session_factory: sessionmaker[Session], owner: StoreOwner, session_name: str) -> None:
        self._factory = session_factory
        self._owner = owner
        self._session_name = session_name

    def _fetch(self) -> dict[str, str]:
        issued = self.issue()
        return {
            "access_key": issued.access_key_id,
            "secret_key": issued.secret_access_key,
            "token": issued.session_token,
            "expiry_time": issued.expiration.astimezone(dt.UTC).isoformat(),
        }

    def issue(self) -> sts.IssuedCredentials:
        """Fresh credentials of the owner's role (AssumeRole, SESSION_SECONDS long)."""
        from neurondock_platform.db import session_scope
        from neurondock_platform.services import sts

        with session_scope(self._factory) as session:
            issued = sts.assume_role(
                session,
                account_id=self._owner.account_id,
                role_arn=self._owner.role,
                role_session_name=self._session_name,
                duration_seconds=SESSION_SECONDS,
            )
        return issued

    def load(self) -> RefreshableCredentials:
        from botocore.credentials import RefreshableCredentials

        return RefreshableCredentials.create_from_metadata(self._fetch(), self._fetch, self.METHOD)


def unmapped(keys: StoreKeys, bucket: str) -> str | None:
    """Why ``keys`` may not reach ``bucket`` (an external store's shared key, not mapped to it), else None."""
    if keys.buckets is None or bucket in keys.buckets:
        return None
    return (
        f"Access Denied: bucket {bucket} is not mapped to account {keys.account_id} and the account has no "
        "store credentials of its own (an admin sets either: neurondock accounts store-access)"
    )


def _refuse_unmapped(keys: StoreKeys) -> Callable[..., None]:
    def check(params: dict[str, Any], model: Any, **_: Any) -> None:
        from botocore.exceptions import ClientError

        bucket = params.get("Bucket")
        message = None if bucket is None else unmapped(keys, bucket)
        if message is not None:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 403}},
                model.name,
            )

    return check


@dataclass(frozen=True)
class StoreKeys:
    """What one owner's requests are signed with: the store, the owner's keys, the buckets they may reach.

    ``buckets`` None: any bucket (the store itself checks ownership); a tuple: only those, checked here
    before a request leaves (an external store's shared key). Never the platform's root pair.
    """

    account_id: str
    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    buckets: tuple[str, ...] | None = None
    # When temporary keys expire (seconds since the epoch); None for an external store's lasting keys.
    expires: float | None = None


def client_for(keys: StoreKeys) -> Any:
    """An S3 client signed with ``keys`` that refuses, before sending, any bucket they are not mapped to."""
    client = make_s3_client(
        keys.endpoint_url,
        keys.region,
        access_key_id=keys.access_key_id,
        secret_access_key=keys.secret_access_key,
        session_token=keys.session_token,
    )
    if keys.buckets is not None:
        client.meta.events.register("before-parameter-build.s3.*", _refuse_unmapped(keys))
    return client


# Temporary keys handed out by ``OwnerClients.keys`` are issued afresh once less than this remains:
# what they sign (a HEAD, a download) must finish before they expire, as botocore's refresh assures.
KEYS_MARGIN_SECONDS = 15 * 60


class OwnerClients:
    """S3 clients acting as their owner (one per owner, kept: building a client costs tens of milliseconds)."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *, session_name: str) -> None:
        self.settings = settings
        self.session_factory = session_factory
        # AssumeRole's RoleSessionName: 2-64 characters of [\w+=,.@-].
        self.session_name = re.sub(r"[^\w+=,.@-]", "-", session_name, flags=re.ASCII)[:64].ljust(2, "-")
        self._lock = threading.Lock()
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._keys: dict[tuple[str, str], StoreKeys] = {}

    def __call__(self, owner: StoreOwner) -> Any:
        if self.settings.store_knows_accounts:
            return self._cached((owner.account_id, owner.role), lambda: self._assumed(owner))
        grant = self._grant(owner)
        # Keyed by the grant itself: new store credentials or a new mapping get a new client.
        return self._cached(
            (owner.account_id, grant.access_key_id, grant.secret_access_key, grant.buckets),
            lambda: client_for(self._external_keys(owner, grant)),
        )

    def keys(self, owner: StoreOwner, now: float | None = None) -> StoreKeys:
        """The keys a client acting as ``owner`` signs with, for a client built elsewhere (``client_for``).

        The same keys as ``__call__``'s clients: the owner's role's own temporary credentials on a store
        that knows the accounts (kept until ``KEYS_MARGIN_SECONDS`` before they expire), else the
        account's external-store grant and its bucket mapping.
        """
        if not self.settings.store_knows_accounts:
            return self._external_keys(owner, self._grant(owner))
        now = time.time() if now is None else now
        key = (owner.account_id, owner.role)
        with self._lock:
            kept = self._keys.get(key)
        if kept is not None and kept.expires is not None and kept.expires - now > KEYS_MARGIN_SECONDS:
            return kept
        issued = _AssumedRole(self.session_factory, owner, self.session_name).issue()
        fresh = StoreKeys(
            owner.account_id,
            self.settings.artifact_store_url,
            self.settings.region,
            issued.access_key_id,
            issued.secret_access_key,
            issued.session_token,
            expires=issued.expiration.timestamp(),
        )
        with self._lock:
            self._keys[key] = fresh
        return fresh

    def _grant(self, owner: StoreOwner) -> store_access.StoreGrant:
        from neurondock_platform.db import session_scope
        from neurondock_platform.services import store_access

        with session_scope(self.session_factory) as session:
            return store_access.grant(session, self.settings, owner.account_id)

    def _external_keys(self, owner: StoreOwner, grant: store_access.StoreGrant) -> StoreKeys:
        return StoreKeys(
            owner.account_id,
            self.settings.artifact_store_url,
            self.settings.region,
            grant.access_key_id,
            grant.secret_access_key,
            buckets=grant.buckets,
        )

    def _cached(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = build()
            return client

    def _assumed(self, owner: StoreOwner) -> Any:
        import botocore.session

        core = botocore.session.Session()
        resolver = core.get_component("credential_provider")
        resolver.providers = [_AssumedRole(self.session_factory, owner, self.session_name)]
        return _session(core).client(
            "s3",
            endpoint_url=self.settings.artifact_store_url,
            region_name=self.settings.region,
            config=client_config(),
        )
