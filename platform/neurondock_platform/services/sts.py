"""STS ``AssumeRole``: short-lived credentials of one account, for its callers and for the platform itself.

A role is always assumed **within the caller's own account**: whatever account id the role ARN names,
the credentials belong to ``account_id`` (scripts written for AWS carry their AWS account id in role
ARNs and keep working unmodified; there is no cross-account assumption at all). There are no IAM
roles or policies here, so the credentials can do what the account's own keys can. The workers and the
host agent get their credentials through the same verb on a model's or job's execution role, so the
object store checks ownership for them exactly as for a direct call (docs/security.md).

Validation follows AWS's (docs/sts.md): ``DurationSeconds`` between 900 s and the role's maximum
session (``Settings.sts_max_session_seconds``), at most an hour when the caller itself uses temporary
credentials (role chaining), a role ARN of the form ``arn:aws:iam::<12 digits>:role/<path/name>`` and
a session name of 2-64 characters of ``[\\w+=,.@-]``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
import string
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.errors import PlatformError
from neurondock_platform.models import TemporaryCredential
from neurondock_platform.sigv4 import Credential, token_sha256

ACCESS_KEY_PREFIX = "ASIA"
MIN_DURATION_SECONDS = 900
DEFAULT_DURATION_SECONDS = 3600
MAX_DURATION_SECONDS = 43200
ROLE_CHAINING_MAX_SECONDS = 3600
# Expired rows stay this long, so their use is answered "expired" rather than "invalid".
KEEP_EXPIRED = dt.timedelta(days=1)
_ROLE_ARN = re.compile(r"arn:aws[a-z-]{0,16}:iam::(?P<account>\d{12}):role/(?P<resource>[\x21-\x7e]{1,2000})")
_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


class StsValidationError(PlatformError):
    """STS's ``ValidationError`` (the query protocol's code for bad parameters)."""

    code = "ValidationError"
    http_status = 400


class StsNotImplemented(PlatformError):
    """An AssumeRole feature neurondock does not have (session policies, MFA, tags)."""

    code = "NotImplemented"
    http_status = 501


@dataclass(frozen=True)
class IssuedCredentials:
    """What AssumeRole answers (the secret and token are shown this once)."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: dt.datetime
    account_id: str
    assumed_role_arn: str
    assumed_role_id: str


def role_name(role_arn: str) -> str:
    """Return the role's name (the last path segment of the ARN)."""
    m = _ROLE_ARN.fullmatch(role_arn)
    name = m["resource"].rsplit("/", 1)[-1] if m is not None else ""
    if not _ROLE_NAME.fullmatch(name):
        raise StsValidationError(
            f"RoleArn '{role_arn[:256]}' is not a valid IAM role ARN: use arn:aws:iam::<account id>:role/<name>."
        )
    return name


def assumed_role_arn(account_id: str, role_arn: str, session_name: str) -> str:
    """The ARN of an assumed-role session, in the owner's account."""
    return f"arn:aws:sts::{account_id}:assumed-role/{role_name(role_arn)}/{session_name}"


def role_id(account_id: str, name: str) -> str:
    """A stable ``AROA…`` id for a role name within an account (IAM's role ids look like this)."""
    digest = hashlib.sha256(f"{account_id}:{name}".encode()).digest()
    return "AROA" + base64.b32encode(digest).decode()[:17]


def caller_user_id(account_id: str, assumed_arn: str) -> str:
    """GetCallerIdentity's ``UserId`` for an assumed-role ARN: ``<role id>:<session name>``."""
    _, _, rest = assumed_arn.partition(":assumed-role/")
    name, _, session_name = rest.partition("/")
    return f"{role_id(account_id, name)}:{session_name}"


def _validate(role_arn: str, session_name: str, duration: int, *, max_seconds: int, chained: bool) -> None:
    if not 20 <= len(role_arn) <= 2048:
        raise StsValidationError(
            f"1 validation error detected: Value '{role_arn[:256]}' at 'roleArn' failed to satisfy constraint: "
            "Member must have length between 20 and 2048"
        )
    role_name(role_arn)
    if not _SESSION_NAME.fullmatch(session_name):
        raise StsValidationError(
            f"1 validation error detected: Value '{session_name[:128]}' at 'roleSessionName' failed to satisfy "
            "constraint: Member must have length between 2 and 64 and satisfy regular expression pattern: [\\w+=,.@-]*"
        )
    if duration < MIN_DURATION_SECONDS or duration > MAX_DURATION_SECONDS:
        raise StsValidationError(
            f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy constraint: "
            f"Member must have value {'greater' if duration < MIN_DURATION_SECONDS else 'less'} than or equal to "
            f"{MIN_DURATION_SECONDS if duration < MIN_DURATION_SECONDS else MAX_DURATION_SECONDS}"
        )
    if chained and duration > ROLE_CHAINING_MAX_SECONDS:
        raise StsValidationError(
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
        )
    if duration > max_seconds:
        raise StsValidationError("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")


def _new_key_id() -> str:
    return ACCESS_KEY_PREFIX + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def assume_role(
    session: Session,
    *,
    account_id: str,
    role_arn: str,
    role_session_name: str,
    duration_seconds: int | None = None,
    source_access_key_id: str | None = None,
    chained: bool = False,
    max_session_seconds: int = MAX_DURATION_SECONDS,
    now: dt.datetime | None = None,
) -> IssuedCredentials:
    """Issue temporary credentials of ``account_id`` for a role (always in that account); flushes the row.

    ``chained``: the caller signed with temporary credentials itself (AWS caps those sessions at an hour).
    """
    duration = DEFAULT_DURATION_SECONDS if duration_seconds is None else duration_seconds
    _validate(role_arn, role_session_name, duration, max_seconds=max_session_seconds, chained=chained)
    now = now or utcnow()
    purge_expired(session, now=now)
    token = secrets.token_urlsafe(96)
    row = TemporaryCredential(
        access_key_id=_new_key_id(),
        secret_access_key=secrets.token_urlsafe(30)[:40],
        session_token_sha256=token_sha256(token),
        account_id=account_id,
        role_arn=role_arn,
        role_session_name=role_session_name,
        source_access_key_id=source_access_key_id,
        issued_at=now,
        expires_at=now + dt.timedelta(seconds=duration),
    )
    session.add(row)
    session.flush()
    return IssuedCredentials(
        access_key_id=row.access_key_id,
        secret_access_key=row.secret_access_key,
        session_token=token,
        expiration=row.expires_at,
        account_id=account_id,
        assumed_role_arn=assumed_role_arn(account_id, role_arn, role_session_name),
        assumed_role_id=f"{role_id(account_id, role_name(role_arn))}:{role_session_name}",
    )


def lookup_temporary(session: Session, access_key_id: str) -> Credential | None:
    """Return the credential of temporary keys (expired ones too: the verifier says so), or None."""
    row = session.execute(
        select(
            TemporaryCredential.secret_access_key,
            TemporaryCredential.account_id,
            TemporaryCredential.session_token_sha256,
            TemporaryCredential.expires_at,
            TemporaryCredential.role_arn,
            TemporaryCredential.role_session_name,
        ).where(TemporaryCredential.access_key_id == access_key_id)
    ).first()
    if row is None:
        return None
    secret, account_id, token_hash, expires_at, arn, session_name = row
    return Credential(
        secret_access_key=secret,
        account_id=account_id,
        session_token_sha256=token_hash,
        expires_at=expires_at.timestamp(),
        arn=assumed_role_arn(account_id, arn, session_name),
    )


def source_key_of(session: Session, access_key_id: str) -> str | None:
    """Return the long-term key behind temporary keys (so a chained session is ended with it)."""
    return session.scalar(
        select(TemporaryCredential.source_access_key_id).where(TemporaryCredential.access_key_id == access_key_id)
    )


def revoke_issued_by(session: Session, access_key_id: str) -> list[str]:
    """End every temporary credential a long-term key obtained; return their key ids (to forget in caches)."""
    ids = list(
        session.scalars(
            select(TemporaryCredential.access_key_id).where(TemporaryCredential.source_access_key_id == access_key_id)
        )
    )
    if ids:
        session.execute(delete(TemporaryCredential).where(TemporaryCredential.access_key_id.in_(ids)))
    return ids


def purge_expired(session: Session, *, now: dt.datetime | None = None) -> int:
    """Delete rows that expired more than a day ago; return how many went."""
    cutoff = (now or utcnow()) - KEEP_EXPIRED
    result = session.execute(delete(TemporaryCredential).where(TemporaryCredential.expires_at <= cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
