"""How the operator CLI reaches a running neurondock: endpoint URL, credentials, errors with exit codes.

The endpoint URL is ``--endpoint-url``, else ``AWS_ENDPOINT_URL_SAGEMAKER``, else ``AWS_ENDPOINT_URL``,
else ``NEURONDOCK_PUBLIC_URL``, else ``http://127.0.0.1:8780``. Credentials are the root key pair in
``--data-dir``'s ``credentials.json`` when ``--data-dir`` is given, else ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, else the default data dir's ``credentials.json``, else boto3's usual chain.
SageMaker calls go through boto3; everything else through the admin API (``/api/v1``), SigV4-signed.

Exit codes (``CliError.exit_code``): 0 ok, 1 the operation failed, 2 usage error, 3 not found,
4 not authenticated or not allowed, 5 neurondock cannot be reached, 6 timed out waiting.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import click

DEFAULT_URL = "http://127.0.0.1:8780"
DEFAULT_REGION = "us-east-1"
SIGNING_SERVICE = "neurondock"
USER_AGENT = "neurondock-cli"


class CliError(click.ClickException):
    """A failure the CLI reports with a message and an exit code scripts can rely on."""

    exit_code: ClassVar[int] = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"neurondock: {self.format_message()}", err=True)


class NotFound(CliError):
    exit_code = 3


class AuthFailed(CliError):
    exit_code = 4


class Unreachable(CliError):
    exit_code = 5


class TimedOut(CliError):
    exit_code = 6


@dataclass(frozen=True)
class Connection:
    """Where neurondock is and who we are there."""

    url: str
    access_key_id: str
    secret_access_key: str
    region: str
    credentials_from: str

    def admin(self) -> AdminClient:
        return AdminClient(self)

    def boto3_client(self, service: str) -> Any:
        """A boto3 client for neurondock's SageMaker, runtime or S3 endpoint."""
        import boto3
        from botocore.config import Config

        url = self.url
        if service == "s3":
            url = os.environ.get("AWS_ENDPOINT_URL_S3") or f"{self.url}/s3"
        elif service == "sagemaker-runtime":
            url = os.environ.get("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME") or self.url
        return boto3.client(
            service,
            endpoint_url=url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, read_timeout=120, user_agent_extra=USER_AGENT
            ),
        )


def _read_credentials_file(data_dir: Path) -> tuple[str, str] | None:
    path = data_dir.expanduser() / "credentials.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    key, secret = stored.get("access_key_id"), stored.get("secret_access_key")
    return (key, secret) if isinstance(key, str) and isinstance(secret, str) else None


def resolve(endpoint_url: str | None, data_dir: str | None, region: str | None) -> Connection:
    """Work out the connection from options, then the environment, then the defaults."""
    env = os.environ
    url = (
        endpoint_url
        or env.get("AWS_ENDPOINT_URL_SAGEMAKER")
        or env.get("AWS_ENDPOINT_URL")
        or env.get("NEURONDOCK_PUBLIC_URL")
        or DEFAULT_URL
    ).rstrip("/")
    found: tuple[str, str] | None = None
    source = ""
    if data_dir:
        found = _read_credentials_file(Path(data_dir))
        source = f"{data_dir}/credentials.json"
        if found is None:
            raise AuthFailed(f"No credentials.json with a key pair in {data_dir}.")
    if found is None and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        found, source = (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]), "AWS_ACCESS_KEY_ID"
    if found is None:
        default_dir = Path(env.get("NEURONDOCK_DATA_DIR") or "~/.neurondock")
        found = _read_credentials_file(default_dir)
        source = f"{default_dir}/credentials.json"
    if found is None:
        import boto3

        creds = boto3.Session().get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            found, source = (frozen.access_key, frozen.secret_key), "boto3's credential chain"
    if found is None:
        raise AuthFailed(
            "No credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (neurondock up prints them) "
            "or pass --data-dir of the platform."
        )
    return Connection(
        url=url,
        access_key_id=found[0],
        secret_access_key=found[1],
        region=region or env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or DEFAULT_REGION,
        credentials_from=source,
    )


class AdminClient:
    """A small SigV4-signing JSON client of the admin API."""

    def __init__(self, connection: Connection, timeout: float = 60.0) -> None:
        self.connection = connection
        self.timeout = timeout

    def _signed(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        creds = Credentials(self.connection.access_key_id, self.connection.secret_access_key)
        SigV4Auth(creds, SIGNING_SERVICE, self.connection.region).add_auth(request)
        return dict(request.headers.items())

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        json_body: Any = None,
        raw: bool = False,
    ) -> Any:
        """Call ``/api/v1<path>``; return the decoded JSON (or bytes when ``raw``)."""
        params = {k: v for k, v in (query or {}).items() if v is not None}
        url = f"{self.connection.url}/api/v1{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = json.dumps(json_body).encode() if json_body is not None else b""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            url, data=body if method != "GET" else None, headers=self._signed(method, url, body, headers), method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(
                f"Cannot reach neurondock at {self.connection.url} ({reason}). Is `neurondock up` running?"
            ) from None
        if raw:
            return data
        return json.loads(data) if data else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {})

    def pages(self, path: str, *, limit: int | None = None, **query: Any) -> Iterator[dict[str, Any]]:
        """Yield every item of a paged list route (at most ``limit``)."""
        token = None
        count = 0
        while True:
            page = self.get(path, next_token=token, limit=min(100, limit or 100), **query)
            for item in page.get("items", []):
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            token = page.get("next_token")
            if not token:
                return


def _error(exc: urllib.error.HTTPError) -> CliError:
    try:
        payload = json.loads(exc.read() or b"{}")
        error = payload.get("error") or {}
        message = error.get("message") or exc.reason
    except (ValueError, AttributeError):
        message = str(exc.reason)
    if exc.code == 404:
        return NotFound(str(message))
    if exc.code in (401, 403):
        return AuthFailed(str(message))
    return CliError(f"{message} (HTTP {exc.code})")


def boto_error(exc: Exception) -> CliError:
    """Map a botocore error to the CLI's exit codes."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, EndpointConnectionError):
        return Unreachable(f"Cannot reach neurondock: {exc}")
    if isinstance(exc, NoCredentialsError):
        return AuthFailed(str(exc))
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", str(exc))
        if message.startswith("Could not find") or code in ("ResourceNotFound", "NoSuchBucket", "NoSuchKey"):
            return NotFound(message)
        if code in (
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "MissingAuthenticationTokenException",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ):
            return AuthFailed(message)
        return CliError(f"{code}: {message}")
    return CliError(str(exc))
