"""AWS Signature Version 4 verification for the SageMaker, runtime and S3 APIs.

Follows what boto3 sends (sagemaker-api.md §1.3, s3-wire.md): always honour the request's own
SignedHeaders list, use ``X-Amz-Content-SHA256`` as the payload hash when present (S3) and
``sha256(body)`` otherwise, and reject a request time more than 15 minutes off.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from neurondock_platform.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    SignatureExpiredException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<ak>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<svc>[^/]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<sh>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})"
)
UNSIGNED_PAYLOADS = {"UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _same_hash(declared: str, body: bytes) -> bool:
    return hmac.compare_digest(declared.lower(), hashlib.sha256(body).hexdigest())


@dataclass(frozen=True)
class SignedRequest:
    """The parts of a signed request the verifier looks at."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


@dataclass(frozen=True)
class Credential:
    """A secret and the account it belongs to."""

    secret_access_key: str
    account_id: str


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Derive the SigV4 signing key."""
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")


def parse_authorization(value: str | None) -> SignedRequest:
    """Parse an ``Authorization`` header, raising the AWS error a client would get."""
    if not value:
        raise MissingAuthenticationTokenException()
    m = _AUTH_RE.fullmatch(value.strip())
    if not m:
        if value.startswith(ALGORITHM):
            raise IncompleteSignatureException(
                f"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                f"parameters. Authorization={value[:200]}"
            )
        raise IncompleteSignatureException(f"Only {ALGORITHM} signatures are supported. Authorization={value[:64]}")
    return SignedRequest(
        access_key_id=m["ak"],
        date=m["date"],
        region=m["region"],
        service=m["svc"],
        signed_headers=tuple(m["sh"].split(";")),
        signature=m["sig"],
    )


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _canonical_path(path: str, service: str) -> str:
    # S3 signs the path encoded once; other services encode it twice (botocore's auth.py).
    once = quote(path, safe="/~")
    return once if service == "s3" else quote(once, safe="/~")


def check_clock(amz_date: str, now: dt.datetime, skew_seconds: int) -> None:
    """Reject a request signed more than ``skew_seconds`` away from ``now``."""
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise IncompleteSignatureException(f"Invalid X-Amz-Date {amz_date!r}") from exc
    if abs((now - when).total_seconds()) > skew_seconds:
        earliest = now - dt.timedelta(seconds=skew_seconds)
        raise SignatureExpiredException(
            request_time=amz_date,
            earliest=earliest.strftime("%Y%m%dT%H%M%SZ"),
            now=now.strftime("%Y%m%dT%H%M%SZ"),
        )


def verify(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes | None,
    lookup: Callable[[str], Credential | None],
    now: dt.datetime | None = None,
    skew_seconds: int = 15 * 60,
) -> tuple[SignedRequest, Credential]:
    """Verify a SigV4-signed request; return the parsed signature and the matching credential.

    ``path`` is the decoded request path; ``body`` may be None when the payload hash comes from
    ``X-Amz-Content-SHA256`` and the caller checks the body against it separately.
    """
    h = {k.lower(): v for k, v in headers.items()}
    signed = parse_authorization(h.get("authorization"))
    amz_date = h.get("x-amz-date") or ""
    if not amz_date:
        raise IncompleteSignatureException(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    check_clock(amz_date, now or dt.datetime.now(dt.UTC), skew_seconds)
    credential = lookup(signed.access_key_id)
    if credential is None:
        raise UnrecognizedClientException()
    missing = [n for n in signed.signed_headers if n not in h]
    if missing:
        raise InvalidSignatureException()
    canon_headers = "".join(f"{n}:{' '.join(h[n].split())}\n" for n in signed.signed_headers)
    payload_hash = h.get("x-amz-content-sha256")
    if not payload_hash:
        payload_hash = hashlib.sha256(body or b"").hexdigest()
    elif body is not None and _HEX_SHA256.fullmatch(payload_hash) and not _same_hash(payload_hash, body):
        # The declared hash is signed, the body is not: a captured request must not carry another body.
        raise InvalidSignatureException(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
    creq = "\n".join(
        [
            method.upper(),
            _canonical_path(path or "/", signed.service),
            _canonical_query(query),
            canon_headers,
            ";".join(signed.signed_headers),
            payload_hash,
        ]
    )
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    sts = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = signing_key(credential.secret_access_key, signed.date, signed.region, signed.service)
    expected = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signed.signature):
        raise InvalidSignatureException()
    return signed, credential
