"""SigV4 authentication of Flask requests: adapts a Werkzeug request to the one verifier (``sigv4``)."""

from __future__ import annotations

from collections.abc import Collection

from flask import Request, current_app, g

from neurondock_platform import sigv4
from neurondock_platform.api import context
from neurondock_platform.errors import PlatformError

VERIFIER_EXTENSION = "neurondock_verifier"
# The SigV4 service names the Flask fronts serve.
SAGEMAKER = "sagemaker"
S3 = "s3"
STS = "sts"
ADMIN = "neurondock"
MONITORING = "monitoring"  # CloudWatch
AUTOSCALING = "application-autoscaling"


def verifier() -> sigv4.Verifier:
    """Return the app's verifier (and through it the credential cache shared with the data plane)."""
    value: sigv4.Verifier = current_app.extensions[VERIFIER_EXTENSION]
    return value


def scoped_service(request: Request) -> str | None:
    """Return the service a request's credential scope names (unverified), or None."""
    try:
        return sigv4.parse_authorization(request.headers.get("Authorization")).service
    except PlatformError:
        return None


def _headers(request: Request) -> dict[str, str]:
    headers = {k.lower(): v for k, v in request.headers.items()}
    # Werkzeug leaves out an empty Content-Type or Content-Length; a client may have signed it.
    for name, key in (("content-type", "CONTENT_TYPE"), ("content-length", "CONTENT_LENGTH")):
        if name not in headers and key in request.environ:
            headers[name] = str(request.environ[key])
    return headers


def signed_request(
    request: Request, *, path: str | None = None, streamed_body: bool = False, presigned: bool = False
) -> sigv4.Request:
    """Return what the verifier reads of a Flask request.

    ``streamed_body``: the caller (S3) checks the body against ``X-Amz-Content-SHA256`` while it
    streams it; everywhere else the body is read here and must match a declared hash. A presigned
    URL signs no body, so none is read.
    """
    headers = _headers(request)
    skip_body = presigned or (streamed_body and bool(headers.get("x-amz-content-sha256")))
    body = None if skip_body else request.get_data(cache=True)
    return sigv4.Request(
        method=request.method,
        path=path if path is not None else request.path,
        query=request.query_string.decode("latin-1"),
        headers=headers,
        body=body,
    )


def record(verified: sigv4.Verified) -> context.AuthContext:
    """Record a verified caller in ``g.auth`` (and the signature in ``g.sigv4``) and return it."""
    credential, signature = verified.credential, verified.signature
    ctx = context.AuthContext(
        account_id=credential.account_id,
        access_key_id=signature.access_key_id,
        region=signature.region,
        service=signature.service,
        arn=credential.arn,
        temporary=credential.temporary,
    )
    g.auth = ctx
    g.sigv4 = verified
    return ctx


def authenticate(
    request: Request,
    *,
    services: Collection[str],
    path: str | None = None,
    streamed_body: bool = False,
    unsigned_payload: bool = False,
) -> context.AuthContext:
    """Verify the request's ``Authorization`` header for one of ``services``; record the caller in ``g.auth``."""
    req = signed_request(request, path=path, streamed_body=streamed_body)
    return record(verifier().verify(req, services=services, unsigned_payload=unsigned_payload))
