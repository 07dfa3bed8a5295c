"""Identity test helpers: key pairs, a served front with boto3 clients, accounts, AssumeRole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Keys:
    """An account and one of its key pairs (a session token for temporary ones)."""

    account_id: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


@dataclass
class LiveFront:
    """The platform's ASGI app served by uvicorn on a loopback port, with the app for direct access."""

    url: str
    asgi: Any

    @property
    def flask_app(self) -> Any:
        return self.asgi.flask_app

    def client(self, service: str, keys: Keys, **config: Any) -> Any:
        """A real boto3 client of ``service`` signed with ``keys``."""
        import boto3
        from botocore.config import Config

        url = {"s3": self.url + "/s3", "sts": self.url + "/sts"}.get(service, self.url)
        return boto3.session.Session().client(
            service,
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            aws_session_token=keys.session_token,
            config=Config(retries={"max_attempts": 1}, **config),
        )


def new_account(session_factory: Any, name: str, *, is_admin: bool = False) -> Keys:
    """Create an account with one active key."""
    from neurondock_platform.db import session_scope
    from neurondock_platform.services.accounts import create_account

    with session_scope(session_factory) as session:
        account, key = create_account(session, name, is_admin=is_admin)
        return Keys(account.id, key.access_key_id, key.secret_access_key)


def assume(front: LiveFront, keys: Keys, role_arn: str, **kw: Any) -> Keys:
    """Assume a role with boto3's STS client; return the temporary keys."""
    sts = front.client("sts", keys)
    got = sts.assume_role(RoleArn=role_arn, RoleSessionName=kw.pop("session_name", "test-session"), **kw)
    creds = got["Credentials"]
    return Keys(keys.account_id, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])


def error_code(exc_info: Any) -> str:
    """The AWS error code of a botocore ClientError."""
    return str(exc_info.value.response["Error"]["Code"])
