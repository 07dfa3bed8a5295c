"""Presigned URLs for the S3 store, as ``generate_presigned_url`` makes them.

boto3 presigns S3 URLs with the legacy query-string signature (``AWSAccessKeyId``/``Signature``/
``Expires``, HMAC-SHA1) unless the client is configured with ``signature_version="s3v4"``
(``X-Amz-Signature`` …); both are accepted, and only for the request they were made for.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from urllib.parse import parse_qsl, quote, unquote

from flask import g, request

from neurondock_platform import sigv4
from neurondock_platform.api import context
from neurondock_platform.api.auth import CredentialCache
from neurondock_platform.errors import InvalidSignatureException, UnrecognizedClientException
from neurondock_platform.services.objects import AccessDenied, S3Error

MAX_EXPIRES = 7 * 24 * 3600


class AuthorizationQueryParametersError(S3Error):
    code = s3_code = "AuthorizationQueryParametersError"
    http_status = 400
    fmt = "{message}"


# Query arguments botocore's HmacV1Auth includes in the string to sign (its QSAOfInterest).
_V2_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
        "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
        "response-content-type", "response-content-language", "response-expires", "response-cache-control",
        "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging",
        "restore", "storageClass", "notification", "replication", "analytics", "metrics", "inventory",
        "select", "select-type", "object-lock",
    }
)  # fmt: skip


def is_presigned() -> bool:
    """Whether the request carries its signature in the query string instead of a header."""
    if "Authorization" in request.headers:
        return False
    return "X-Amz-Signature" in request.args or "Signature" in request.args


def authenticate_query(credentials: CredentialCache) -> context.AuthContext:
    """Verify a presigned request (either signature version) and record the caller."""
    if "X-Amz-Signature" in request.args:
        return authenticate_presigned(credentials)
    return authenticate_presigned_v2(credentials)


def _v2_resource(path: str) -> str:
    pairs = []
    for item in request.query_string.decode("latin-1").split("&"):
        name, sep, value = item.partition("=")
        if name in _V2_SUBRESOURCES:
            pairs.append((name, sep + unquote(value)))
    pairs.sort(key=lambda p: p[0])
    query = "&".join(name + value for name, value in pairs)
    return path + ("?" + query if query else "")


def authenticate_presigned_v2(credentials: CredentialCache) -> context.AuthContext:
    """Verify a legacy (HMAC-SHA1) query-string signature."""
    args = request.args
    access_key, signature, expires = (
        args.get("AWSAccessKeyId"),
        args.get("Signature"),
        args.get("Expires", ""),
    )
    if not access_key or not signature or not expires.isdigit():
        raise AuthorizationQueryParametersError(
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
        )
    if dt.datetime.now(dt.UTC).timestamp() > int(expires):
        raise AccessDenied("Request has expired")
    credential = credentials.lookup(access_key)
    if credential is None:
        raise UnrecognizedClientException()
    amz_headers = sorted(
        (name.lower(), " ".join(value.split()))
        for name, value in request.headers.items()
        if name.lower().startswith("x-amz-")
    )
    canonical_amz = "".join(f"{name}:{value}\n" for name, value in amz_headers)
    quoted = quote(request.path or "/", safe="/~")
    # botocore signs the URL path, or for some bucket operations the bucket path without the
    # endpoint's own prefix (``auth_path``).
    rest = quote(str(g.get("s3_resource") or "/"), safe="/~")
    candidates = dict.fromkeys([quoted, rest, rest if rest.count("/") > 1 else rest.rstrip("/") + "/"])
    for path in candidates:
        sts = "\n".join(
            [
                request.method.upper(),
                request.headers.get("Content-MD5", ""),
                request.headers.get("Content-Type", ""),
                expires,
                canonical_amz + _v2_resource(path),
            ]
        )
        digest = hmac.new(credential.secret_access_key.encode(), sts.encode(), hashlib.sha1).digest()
        if hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            break
    else:
        raise InvalidSignatureException()
    auth = context.AuthContext(
        account_id=credential.account_id, access_key_id=access_key, region="us-east-1", service="s3"
    )
    g.auth = auth
    g.s3_presigned = True
    return auth


def _canonical_query(query: str) -> str:
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "X-Amz-Signature"]
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _parse_time(value: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise AuthorizationQueryParametersError(
            f"X-Amz-Date must be in the ISO8601 format: {value!r}"
        ) from exc


def authenticate_presigned(credentials: CredentialCache) -> context.AuthContext:
    """Verify a presigned request and record the caller in ``g.auth``."""
    args = request.args
    if args.get("X-Amz-Algorithm") != sigv4.ALGORITHM:
        raise AuthorizationQueryParametersError('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    scope_parts = args.get("X-Amz-Credential", "").split("/")
    if len(scope_parts) != 5 or scope_parts[4] != "aws4_request":
        raise AuthorizationQueryParametersError(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key, date, region, service, _ = scope_parts
    amz_date = args.get("X-Amz-Date", "")
    when = _parse_time(amz_date)
    expires_text = args.get("X-Amz-Expires", "")
    if not expires_text.isdigit() or not 1 <= int(expires_text) <= MAX_EXPIRES:
        raise AuthorizationQueryParametersError(
            "X-Amz-Expires must be a number of seconds between 1 and 604800 (seven days)."
        )
    now = dt.datetime.now(dt.UTC)
    if now > when + dt.timedelta(seconds=int(expires_text)):
        raise AccessDenied("Request has expired")
    if when - now > dt.timedelta(seconds=context.settings().clock_skew_seconds):
        raise AccessDenied("Request is not valid yet")
    credential = credentials.lookup(access_key)
    if credential is None:
        raise UnrecognizedClientException()
    headers = {k.lower(): v for k, v in request.headers.items()}
    signed_headers = args.get("X-Amz-SignedHeaders", "").split(";")
    if any(name not in headers for name in signed_headers):
        raise InvalidSignatureException()
    canonical_headers = "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in signed_headers)
    creq = "\n".join(
        [
            request.method.upper(),
            quote(request.path or "/", safe="/~"),
            _canonical_query(request.query_string.decode("latin-1")),
            canonical_headers,
            ";".join(signed_headers),
            headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    sts = "\n".join([sigv4.ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = sigv4.signing_key(credential.secret_access_key, date, region, service)
    expected = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, args.get("X-Amz-Signature", "")):
        raise InvalidSignatureException()
    auth = context.AuthContext(
        account_id=credential.account_id, access_key_id=access_key, region=region, service=service
    )
    g.auth = auth
    g.s3_presigned = True
    return auth
