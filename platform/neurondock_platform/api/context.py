"""Per-request access to the platform's session factory, settings and the signed-in account."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.config import Settings

EXTENSION = "neurondock"


@dataclass
class PlatformState:
    """What the Flask app carries in ``app.extensions["neurondock"]``."""

    settings: Settings
    session_factory: sessionmaker[Session]


@dataclass(frozen=True)
class AuthContext:
    """Who sent the request, as established by SigV4 (or a bearer token)."""

    account_id: str
    access_key_id: str
    region: str
    service: str
    # Temporary (STS) credentials: the assumed-role ARN GetCallerIdentity answers.
    arn: str | None = None
    temporary: bool = False


def state() -> PlatformState:
    """Return the platform state of the current app."""
    value: PlatformState = current_app.extensions[EXTENSION]
    return value


def settings() -> Settings:
    """Return the current app's settings."""
    return state().settings


def db() -> Session:
    """Return this request's session, opening it on first use."""
    if "db_session" not in g:
        g.db_session = state().session_factory()
    session: Session = g.db_session
    return session


def auth() -> AuthContext:
    """Return the signed-in caller; the auth hook guarantees it is set on protected routes."""
    value: AuthContext = g.auth
    return value


def close_db(exc: BaseException | None = None) -> None:
    """Close this request's session (rolling back anything uncommitted)."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()
