"""The web console at ``/console`` (stub)."""

from __future__ import annotations

from flask import Blueprint

from neurondock_platform.api.auth import CredentialCache


def make_blueprint(credentials: CredentialCache) -> Blueprint:
    return Blueprint("console", __name__)
