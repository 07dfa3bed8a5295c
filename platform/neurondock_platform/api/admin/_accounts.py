"""Admin routes for identity: tokens, who am I, and (admins only) accounts and access keys."""

from __future__ import annotations

import datetime as dt
import time

from flask import Blueprint, Response, request

from neurondock_platform.api import context
from neurondock_platform.api.admin import _params as params
from neurondock_platform.api.admin import _tokens, shapes
from neurondock_platform.api.admin._auth import (
    apply_key_change,
    authenticate_request,
    bearer_claims,
    caller,
    credentials,
    require_admin,
)
from neurondock_platform.api.admin._errors import BadRequest, Forbidden, json_body
from neurondock_platform.errors import AuthError
from neurondock_platform.models import AccessKeyStatus, Account
from neurondock_platform.services import accounts, sessions, store_access
from neurondock_platform.services.accounts import root_identity
from neurondock_platform.services.fleet import iso
from neurondock_platform.services.rate_limits import ThrottlingException

MAX_ACCOUNT_NAME = 64


def _root_key() -> str:
    return root_identity(context.settings()).access_key_id


def token_json(issued: sessions.IssuedToken) -> dict[str, object]:
    return {
        "token": issued.value,
        "token_type": "Bearer",
        "access_key_id": issued.claims.access_key_id,
        "account_id": issued.claims.account_id,
        "expires_at": iso(_from_epoch(issued.claims.expires_at)),
        "expires_in": issued.claims.expires_at - issued.claims.issued_at,
    }


def _from_epoch(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def revoked_json(claims: sessions.Claims) -> dict[str, object]:
    return {
        "revoked": True,
        "token_id": claims.jti,
        "purpose": claims.purpose,
        "access_key_id": claims.access_key_id,
        "account_id": claims.account_id,
        "expires_at": iso(_from_epoch(claims.expires_at)),
    }


def _claims_to_revoke(data: dict[str, object]) -> sessions.Claims:
    """Return the claims of the token a revoke request names: the body's ``token``, else the caller's bearer."""
    value = params.field(data, "token", str)
    if value is None:
        own = bearer_claims()
        if own is None:
            raise BadRequest(
                "Name the token to revoke in member 'token', or send the request with that token as "
                "'Authorization: Bearer <token>'."
            )
        return own
    try:
        claims = sessions.signed_claims(value.strip(), credentials().lookup)
    except sessions.InvalidTokenError as exc:
        raise BadRequest(f"Member 'token' cannot be revoked: {exc.message}") from exc
    who = caller()
    if claims.account_id != who.account_id and not who.is_admin:
        raise Forbidden(message="Only the token's own account (or an admin) can revoke it.")
    return claims


def _store_json(view: store_access.StoreAccessView) -> dict[str, object]:
    settings = context.settings()
    store = "embedded" if not settings.s3_endpoint_url else settings.s3_store_kind
    return {
        "account_id": view.account_id,
        "store": store,
        # Only an external store is reached this way; the others verify the account's own keys.
        "in_effect": not settings.store_knows_accounts,
        "access_key_id": view.access_key_id,
        "has_credentials": view.access_key_id is not None,
        "buckets": list(view.buckets),
        "artifact_bucket": view.artifact_bucket,
    }


def register(bp: Blueprint) -> None:
    @bp.post("/tokens")
    def create_token() -> Response:
        data = params.body()
        ttl = params.field(data, "ttl_seconds", int)
        if ttl is not None and not sessions.MIN_TTL_SECONDS <= ttl <= sessions.MAX_TTL_SECONDS:
            raise BadRequest(
                f"Member 'ttl_seconds' must be between {sessions.MIN_TTL_SECONDS} and {sessions.MAX_TTL_SECONDS}."
            )
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            raise Forbidden(
                message="A bearer token cannot issue tokens: sign the request with SigV4 or send the key pair."
            )
        sigv4 = header.startswith("AWS4-HMAC-SHA256")
        if not sigv4:
            params.field(data, "access_key_id", str, required=True)
            params.field(data, "secret_access_key", str, required=True)
        hint = _tokens.sigv4_key_id() if sigv4 else data["access_key_id"]
        limiter, address = _tokens.sign_in_limiter(), _tokens.client_address()
        try:
            limiter.attempt(address, hint)
        except ThrottlingException as err:
            return _tokens.throttled_response(err)
        try:
            if sigv4:
                key_id = authenticate_request().access_key_id
                credential = credentials().lookup(key_id)
                if credential is None:  # disabled between the signature check and now
                    raise sessions.InvalidCredentialsError()
                if credential.temporary:
                    raise Forbidden(message="Temporary (STS) credentials cannot issue tokens: use a long-term key.")
            else:
                key_id = data["access_key_id"]
                credential = sessions.check_secret(key_id, data["secret_access_key"], credentials().lookup)
        except AuthError:
            limiter.failed(address, hint)
            raise
        issued = sessions.issue_token(key_id, credential, purpose=sessions.PURPOSE_API, ttl_seconds=ttl)
        return json_body(token_json(issued), status=201)

    @bp.post("/tokens/revoke")
    def revoke_token() -> Response:
        claims = _claims_to_revoke(params.body())
        if claims.expires_at > int(time.time()):
            _tokens.revoke(claims)
        return json_body(revoked_json(claims))

    @bp.get("/whoami")
    def whoami() -> Response:
        who = caller()
        account = context.db().get(Account, who.account_id)
        return json_body(
            {
                "account_id": who.account_id,
                "account_name": account.name if account is not None else None,
                "is_admin": who.is_admin,
                "access_key_id": who.access_key_id,
                "auth": who.method,
                "region": context.settings().region,
            }
        )

    @bp.get("/accounts")
    def list_accounts() -> Response:
        require_admin()
        rows = [shapes.account_json(a) for a in accounts.list_accounts(context.db())]
        items, token = params.slice_page(rows, scope="accounts")
        return json_body({"items": items, "next_token": token})

    @bp.post("/accounts")
    def create_account() -> Response:
        require_admin()
        data = params.body()
        name = params.field(data, "name", str, required=True).strip()
        if not name or len(name) > MAX_ACCOUNT_NAME:
            raise BadRequest(f"Member 'name' must be 1 to {MAX_ACCOUNT_NAME} characters.")
        is_admin = params.field(data, "is_admin", bool, default=False)
        session = context.db()
        account, key = accounts.create_account(session, name, is_admin=is_admin)
        session.commit()
        return json_body(
            {"account": shapes.account_json(account), "access_key": shapes.access_key_json(key, with_secret=True)},
            status=201,
        )

    @bp.get("/accounts/<account_id>")
    def describe_account(account_id: str) -> Response:
        require_admin()
        session = context.db()
        account = accounts.get_account(session, account_id)
        keys = accounts.list_access_keys(session, account.id)
        return json_body({**shapes.account_json(account), "access_keys": [shapes.access_key_json(k) for k in keys]})

    @bp.get("/accounts/<account_id>/access-keys")
    def list_keys(account_id: str) -> Response:
        require_admin()
        session = context.db()
        accounts.get_account(session, account_id)
        rows = [shapes.access_key_json(k) for k in accounts.list_access_keys(session, account_id)]
        items, token = params.slice_page(rows, scope=f"keys:{account_id}")
        return json_body({"items": items, "next_token": token})

    @bp.post("/accounts/<account_id>/access-keys")
    def create_key(account_id: str) -> Response:
        require_admin()
        session = context.db()
        key = accounts.create_access_key(session, account_id)
        session.commit()
        return json_body(shapes.access_key_json(key, with_secret=True), status=201)

    @bp.get("/access-keys")
    def list_all_keys() -> Response:
        require_admin()
        rows = [shapes.access_key_json(k) for k in accounts.list_access_keys(context.db())]
        items, token = params.slice_page(rows, scope="keys")
        return json_body({"items": items, "next_token": token})

    def _set_status(access_key_id: str, status: AccessKeyStatus) -> Response:
        require_admin()
        session = context.db()
        change = accounts.set_access_key_status(session, access_key_id, status, root_access_key_id=_root_key())
        session.commit()
        apply_key_change(change)
        return json_body(shapes.access_key_json(change.key))

    @bp.post("/access-keys/<access_key_id>/disable")
    def disable_key(access_key_id: str) -> Response:
        return _set_status(access_key_id, AccessKeyStatus.INACTIVE)

    @bp.post("/access-keys/<access_key_id>/enable")
    def enable_key(access_key_id: str) -> Response:
        return _set_status(access_key_id, AccessKeyStatus.ACTIVE)

    @bp.get("/accounts/<account_id>/store-access")
    def describe_store_access(account_id: str) -> Response:
        require_admin()
        return json_body(_store_json(store_access.describe(context.db(), account_id)))

    @bp.put("/accounts/<account_id>/store-access")
    def set_store_access(account_id: str) -> Response:
        require_admin()
        data = params.body()
        buckets = params.field(data, "buckets", list, default=[])
        if not all(isinstance(b, str) for b in buckets):
            raise BadRequest("Member 'buckets' must be a list of bucket names.")
        session = context.db()
        view = store_access.set_access(
            session,
            account_id,
            access_key_id=params.field(data, "access_key_id", str),
            secret_access_key=params.field(data, "secret_access_key", str),
            buckets=buckets,
        )
        session.commit()
        return json_body(_store_json(view))

    @bp.delete("/accounts/<account_id>/store-access")
    def clear_store_access(account_id: str) -> Response:
        require_admin()
        session = context.db()
        view = store_access.clear_access(session, account_id)
        session.commit()
        return json_body(_store_json(view))

    @bp.post("/access-keys/<access_key_id>/revoke-tokens")
    def revoke_key_tokens(access_key_id: str) -> Response:
        require_admin()
        key = accounts.get_access_key(context.db(), access_key_id)
        row = _tokens.revoke_key(key.access_key_id, key.account_id)
        return json_body(
            {
                "access_key_id": key.access_key_id,
                "account_id": key.account_id,
                "revoked_before": iso(row.revoked_at),
                "expires_at": iso(row.expires_at),
            }
        )

    @bp.post("/access-keys/<access_key_id>/rotate")
    def rotate_key(access_key_id: str) -> Response:
        require_admin()
        session = context.db()
        new, change = accounts.rotate_access_key(session, access_key_id, root_access_key_id=_root_key())
        session.commit()
        apply_key_change(change)
        return json_body(
            {
                "access_key": shapes.access_key_json(new, with_secret=True),
                "replaced": shapes.access_key_json(change.key),
            },
            status=201,
        )
