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
from urllib.parse import quote, unquote

from flask import g, request

from neurondock_platform import sigv4
from neurondock_platform.api import auth, context
from neurondock_platform.errors import InvalidSignatureException
from neurondock_platform.services.credentials import CredentialCache
from neurondock_platform.services.objects import AccessDenied, S3Error

MAX_EXPIRES = sigv4.MAX_PRESIGNED_EXPIRES


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
    token = args.get("x-amz-security-token") or request.headers.get("x-amz-security-token")
    credential = sigv4.check_credential(credentials.lookup(access_key), token)
    # botocore moves the x-amz-* headers it signed (the security token, say) into the query string.
    amz = {name.lower(): value for name, value in request.headers.items() if name.lower().startswith("x-amz-")}
    amz.update({name.lower(): value for name, value in args.items() if name.lower().startswith("x-amz-")})
    amz_headers = sorted((name, " ".join(value.split())) for name, value in amz.items())
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
                request.headers.get("Content-MD5", args.get("content-md5", "")),
                request.headers.get("Content-Type", args.get("content-type", "")),
                expires,
                canonical_amz + _v2_resource(path),
            ]
        )
        digest = hmac.new(credential.secret_access_key.encode(), sts.encode(), hashlib.sha1).digest()
        if hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            break
    else:
        raise InvalidSignatureException()
    ctx = context.AuthContext(
        account_id=credential.account_id,
        access_key_id=access_key,
        region=context.settings().region,
        service="s3",
        arn=credential.arn,
        temporary=credential.temporary,
    )
    g.auth = ctx
    g.s3_presigned = True
    return ctx


def authenticate_presigned(credentials: CredentialCache) -> context.AuthContext:
    """Verify a SigV4 presigned request (the one verifier, query form) and record the caller in ``g.auth``."""
    verified = auth.verifier().verify_presigned(
        auth.signed_request(request, presigned=True), request.args, services={auth.S3}
    )
    ctx = auth.record(verified)
    g.s3_presigned = True
    return ctx
