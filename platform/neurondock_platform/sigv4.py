"""AWS Signature Version 4: the one verifier every front door uses (SageMaker, runtime, OIP, S3, STS, admin).

It also signs, for the host process's model-data reads (``neurondock_workers.hosting.s3``): ``sign``
writes the canonical request and string to sign the verifier checks (``string_to_sign``, one grammar).

What it accepts follows what botocore sends and AWS answers (docs/sigv4.md): the request's own
SignedHeaders list; a request time from ``X-Amz-Date`` or, when that is absent, from ``Date`` (botocore
signs that way whenever a ``Date`` header is present); a credential scope whose region is the
platform's and whose service is one the front door serves; the body's SHA-256 as the payload hash,
with ``X-Amz-Content-SHA256: UNSIGNED-PAYLOAD`` (and the streaming forms) only where the caller says
AWS accepts it (S3); temporary credentials only with their ``X-Amz-Security-Token`` and before they
expire; and a request time at most 15 minutes off.

The verifier is on the invocation hot path, so it parses the request time by slicing (cached), keeps
the derived signing keys in an LRU cache and gets credentials from the cache it is given without a
thread hop unless they expired (``averify``). Header values are canonicalised as the client saw
them: a value whose bytes are UTF-8 is read as UTF-8 (HTTP servers hand them over as latin-1).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import email.utils
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, quote

from neurondock_platform.errors import (
    AuthError,
    ExpiredTokenException,
    IncompleteSignatureException,
    InvalidSecurityTokenException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    SignatureExpiredException,
    UnrecognizedClientException,
)

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOADS = frozenset(
    {
        "UNSIGNED-PAYLOAD",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    }
)
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600
DEFAULT_SKEW_SECONDS = 15 * 60
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<ak>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<svc>[^/]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<sh>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})"
)
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Credential:
    """A secret and the account it belongs to; temporary credentials also carry their token and expiry."""

    secret_access_key: str
    account_id: str
    # STS credentials: the SHA-256 of the session token (hex) and when they expire (epoch seconds).
    session_token_sha256: str | None = None
    expires_at: float | None = None
    # What GetCallerIdentity names for these keys (an assumed-role ARN); None means the account itself.
    arn: str | None = None

    @property
    def temporary(self) -> bool:
        return self.session_token_sha256 is not None


class CredentialSource(Protocol):
    """Where the verifier gets secrets: ``services.credentials.CredentialCache``."""

    def cached(self, access_key_id: str) -> Credential | None: ...

    def lookup(self, access_key_id: str) -> Credential | None: ...


# Request, Signature and Verified are made per request on the invocation path: plain slotted classes,
# as a frozen dataclass's __init__ costs ~0.1 µs more per field.
@dataclass(slots=True)
class Request:
    """The parts of an HTTP request the verifier reads (``headers`` with lower-case names).

    ``body`` is None when the payload hash comes from ``X-Amz-Content-SHA256`` and the caller (S3)
    checks the body against it while streaming it.
    """

    method: str
    path: str  # decoded
    query: str  # as sent
    headers: Mapping[str, str]
    body: bytes | None
    # The body's SHA-256 (hex) when the front door hashed it as it arrived; else computed from ``body``.
    body_sha256: str | None = None


@dataclass(slots=True)
class Signature:
    """A parsed signature: from the ``Authorization`` header, or from a presigned URL's query."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str = ""  # the request time in the string to sign (YYYYMMDDTHHMMSSZ)
    presigned: bool = False
    security_token: str | None = None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(slots=True)
class Verified:
    """A request whose signature checked out: what it was signed with, and by whom."""

    signature: Signature
    credential: Credential

    @property
    def account_id(self) -> str:
        return self.credential.account_id

    @property
    def access_key_id(self) -> str:
        return self.signature.access_key_id


class CredentialScopeError(InvalidSignatureException):
    """A credential scope naming another region or service than the front door's."""

    s3_code = "AuthorizationHeaderMalformed"
    fmt = "Credential should be scoped to {what}."


class RequestExpired(AuthError):
    """A presigned URL used after its ``X-Amz-Expires`` (or before its time)."""

    code = "AccessDeniedException"
    s3_code = "AccessDenied"
    fmt = "Request has expired"


class QueryAuthMalformed(IncompleteSignatureException):
    """Presigned-URL parameters that are missing or malformed."""

    s3_code = "AuthorizationQueryParametersError"


def _presigned_expires(value: str) -> int:
    """X-Amz-Expires in seconds, refused with S3's messages for each way it can be wrong (docs/s3.md)."""
    if not re.fullmatch(r"-?[0-9]{1,18}", value):
        raise QueryAuthMalformed("X-Amz-Expires should be a number")
    seconds = int(value)
    if seconds < 0:
        raise QueryAuthMalformed("X-Amz-Expires must be non-negative")
    if seconds > MAX_PRESIGNED_EXPIRES:
        raise QueryAuthMalformed(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be "
            f"less than {MAX_PRESIGNED_EXPIRES} seconds"
        )
    return seconds


@functools.lru_cache(maxsize=4096)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Derive the SigV4 signing key (cached: one per secret, day, region and service)."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class _Signer:
    """HMAC-SHA256 under one signing key, its keyed start computed once (``hmac.HMAC.copy``).

    ``hmac.digest`` keys a fresh HMAC for every message, which OpenSSL 3 makes the dearest step of a
    signature check (docs/measured.md, "The API's request path, leaner"); a copy of the keyed HMAC
    starts from the key's inner and outer hash states instead.
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def hexdigest(self, message: bytes) -> str:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.hexdigest()


@functools.lru_cache(maxsize=4096)
def _signer(secret: str, date: str, region: str, service: str) -> _Signer:
    return _Signer(signing_key(secret, date, region, service))


def parse_authorization(value: str | None, *, amz_date: str = "", security_token: str | None = None) -> Signature:
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
    access_key_id, date, region, service, signed, sig = m.groups()
    return Signature(
        access_key_id, date, region, service, tuple(signed.split(";")), sig, amz_date, security_token=security_token
    )


@functools.lru_cache(maxsize=256)
def _epoch(amz_date: str) -> int:
    # 20260101T120000Z; strptime costs ~10 µs, slicing ~1 µs, and clients reuse one date per second.
    if len(amz_date) != 16 or amz_date[8] != "T" or amz_date[15] != "Z" or not amz_date[:8].isdigit():
        raise IncompleteSignatureException(f"Invalid X-Amz-Date {amz_date!r}")
    try:
        parts = tuple(int(amz_date[a:b]) for a, b in ((0, 4), (4, 6), (6, 8), (9, 11), (11, 13), (13, 15)))
    except ValueError as exc:
        raise IncompleteSignatureException(f"Invalid X-Amz-Date {amz_date!r}") from exc
    if not (1 <= parts[1] <= 12 and 1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60 and parts[5] < 61):
        raise IncompleteSignatureException(f"Invalid X-Amz-Date {amz_date!r}")
    return calendar.timegm((*parts, 0, 0, 0))


@functools.lru_cache(maxsize=256)
def _from_date_header(value: str) -> str:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError) as exc:
        raise IncompleteSignatureException(f"Invalid Date header {value[:64]!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def request_time(headers: Mapping[str, str]) -> str:
    """Return the signed request time: ``X-Amz-Date``, else the ``Date`` header in SigV4's format."""
    amz_date = headers.get("x-amz-date")
    if amz_date:
        return amz_date
    date = headers.get("date")
    if date:
        return _from_date_header(date)
    raise IncompleteSignatureException(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
    )


def _check_clock(amz_date: str, now: float, skew_seconds: int) -> None:
    when = _epoch(amz_date)
    if abs(now - when) > skew_seconds:
        fmt = "%Y%m%dT%H%M%SZ"
        raise SignatureExpiredException(
            request_time=amz_date,
            earliest=time.strftime(fmt, time.gmtime(now - skew_seconds)),
            now=time.strftime(fmt, time.gmtime(now)),
        )


@functools.lru_cache(maxsize=1024)
def _canonical_path(path: str, service: str) -> str:
    # S3 signs the path URI-encoded once; every other service twice (botocore's auth.py).
    once = quote(path or "/", safe="/~")
    return once if service == "s3" else quote(once, safe="/~")


def _canonical_query(query: str, *, drop: str | None = None) -> str:
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs if k != drop)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _utf8(value: str) -> str:
    # Servers decode header bytes as latin-1; a client that sent UTF-8 (curl, aiohttp) signed the
    # characters those bytes spell, so read them back as UTF-8 when they are.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        return value.encode("latin-1").decode("utf-8")
    return value


def _canonical_headers(names: tuple[str, ...], headers: Mapping[str, str]) -> str:
    # One pass over the signed names (a lookup pass and a formatting pass cost twice as much here).
    lines = []
    for name in names:
        value = headers.get(name)
        if value is None:
            raise InvalidSignatureException(
                f"The request signature names header '{name}', which the request does not carry."
            )
        lines.append(f"{name}:{' '.join((value if value.isascii() else _utf8(value)).split())}\n")
    return "".join(lines)


def _payload_hash(request: Request, unsigned_payload: bool) -> str:
    declared = request.headers.get("x-amz-content-sha256")
    if declared in UNSIGNED_PAYLOADS:
        if not unsigned_payload:
            raise InvalidSignatureException(
                f"x-amz-content-sha256 {declared} is accepted by S3 only; sign the SHA-256 of the body."
            )
        return declared
    if request.body is None:
        if not declared:
            raise InvalidSignatureException("Missing required header for this request: x-amz-content-sha256.")
        return declared
    computed = request.body_sha256 or hashlib.sha256(request.body).hexdigest()
    if declared and not (_HEX_SHA256.fullmatch(declared) and hmac.compare_digest(declared.lower(), computed)):
        # The declared hash is signed, the body is not: a captured request must not carry another body.
        raise InvalidSignatureException("The provided 'x-amz-content-sha256' header does not match what was computed.")
    return computed


def string_to_sign(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    payload_hash: str,
    signature: Signature,
) -> bytes:
    """The string a request's signature is the HMAC of: its canonical request, time and scope.

    ``path`` decoded, ``query`` canonical (``_canonical_query``), ``headers`` with lower-case names, of
    which ``signature.signed_headers`` are signed. The one grammar the verifier checks and ``sign`` writes.
    """
    names = signature.signed_headers
    creq = "\n".join(
        (
            method.upper(),
            _canonical_path(path, signature.service),
            query,
            _canonical_headers(names, headers),
            ";".join(names),
            payload_hash,
        )
    )
    digest = hashlib.sha256(creq.encode()).hexdigest()
    return f"{ALGORITHM}\n{signature.amz_date}\n{signature.scope}\n{digest}".encode()


def sign(
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    service: str,
    payload_hash: str,
    session_token: str | None = None,
    now: float | None = None,
) -> None:
    """Sign a request with no query string in its headers, as botocore does: adds X-Amz-*, Authorization.

    ``headers`` has lower-case names and holds ``host``; every header in it is signed.
    """
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    if session_token:
        headers["x-amz-security-token"] = session_token
    names = tuple(sorted(headers))
    signature = Signature(access_key_id, amz_date[:8], region, service, names, "", amz_date)
    to_sign = string_to_sign(method, path, "", headers, payload_hash, signature)
    signed = _signer(secret_access_key, signature.date, region, service).hexdigest(to_sign)
    headers["authorization"] = (
        f"{ALGORITHM} Credential={access_key_id}/{signature.scope}, SignedHeaders={';'.join(names)}, Signature={signed}"
    )


def token_sha256(token: str) -> str:
    """Return how a session token is stored and compared: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_credential(
    credential: Credential | None, security_token: str | None, *, now: float | None = None
) -> Credential:
    """Return the credential when the key exists and the session token (if any) belongs to it and is current."""
    if credential is None:
        raise UnrecognizedClientException()
    if credential.session_token_sha256 is not None:
        if not security_token:
            raise UnrecognizedClientException()
        if not hmac.compare_digest(token_sha256(security_token), credential.session_token_sha256):
            raise InvalidSecurityTokenException()
        if credential.expires_at is not None and credential.expires_at <= (time.time() if now is None else now):
            raise ExpiredTokenException()
    elif security_token:
        # A long-term key with a session token: AWS refuses the pair.
        raise InvalidSecurityTokenException()
    return credential


class Verifier:
    """Verifies SigV4 requests for one platform (its region and clock) against a credential source."""

    def __init__(
        self,
        credentials: CredentialSource,
        *,
        region: str,
        skew_seconds: int = DEFAULT_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.skew_seconds = skew_seconds
        self.clock = clock

    # -- parsing (no secrets needed) ------------------------------------------------------------

    def _check_scope(self, signature: Signature, services: Collection[str]) -> None:
        if signature.service not in services:
            expected = " or ".join(f"'{s}'" for s in sorted(services))
            raise CredentialScopeError(
                what=f"correct service: {expected}",
                reason=f'incorrect service "{signature.service}". This endpoint belongs to {expected}.',
            )
        if signature.region != self.region:
            raise CredentialScopeError(
                what="a valid region",
                reason=f"the region '{signature.region}' is wrong; expecting '{self.region}'",
                region=self.region,
            )

    def parse(self, request: Request, *, services: Collection[str]) -> Signature:
        """Parse the ``Authorization`` header and check its time and credential scope."""
        headers = request.headers
        authorization = headers.get("authorization")
        if not authorization:
            raise MissingAuthenticationTokenException()
        amz_date = request_time(headers)
        signature = parse_authorization(
            authorization, amz_date=amz_date, security_token=headers.get("x-amz-security-token")
        )
        _check_clock(amz_date, self.clock(), self.skew_seconds)
        self._check_scope(signature, services)
        return signature

    def parse_presigned(self, request: Request, args: Mapping[str, str], *, services: Collection[str]) -> Signature:
        """Parse a presigned URL's ``X-Amz-*`` query parameters and check its validity window and scope."""
        if args.get("X-Amz-Algorithm") != ALGORITHM:
            raise QueryAuthMalformed(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
        parts = args.get("X-Amz-Credential", "").split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise QueryAuthMalformed(
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
                'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
            )
        amz_date = args.get("X-Amz-Date", "")
        try:
            when = _epoch(amz_date)
        except IncompleteSignatureException as exc:
            raise QueryAuthMalformed(f"X-Amz-Date must be in the ISO8601 format: {amz_date!r}") from exc
        expires = _presigned_expires(args.get("X-Amz-Expires", ""))
        now = self.clock()
        # A URL lives for X-Amz-Expires seconds from X-Amz-Date: zero seconds is expired on arrival.
        if now >= when + expires:
            raise RequestExpired()
        if when - now > self.skew_seconds:
            raise RequestExpired("Request is not valid yet")
        signature = Signature(
            access_key_id=parts[0],
            date=parts[1],
            region=parts[2],
            service=parts[3],
            signed_headers=tuple(args.get("X-Amz-SignedHeaders", "host").split(";")),
            signature=args.get("X-Amz-Signature", ""),
            amz_date=amz_date,
            presigned=True,
            security_token=args.get("X-Amz-Security-Token"),
        )
        self._check_scope(signature, services)
        return signature

    # -- checking (needs the credential) ---------------------------------------------------------

    def check(
        self, request: Request, signature: Signature, credential: Credential | None, *, unsigned_payload: bool = False
    ) -> Verified:
        """Check the signature with the credential the access key id named; return who signed it."""
        if credential is None or credential.session_token_sha256 is not None or signature.security_token:
            credential = check_credential(credential, signature.security_token, now=self.clock())
        if signature.presigned:
            payload_hash = request.headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            query = _canonical_query(request.query, drop="X-Amz-Signature")
        else:
            payload_hash = _payload_hash(request, unsigned_payload)
            query = _canonical_query(request.query)
        to_sign = string_to_sign(request.method, request.path, query, request.headers, payload_hash, signature)
        signer = _signer(credential.secret_access_key, signature.date, signature.region, signature.service)
        expected = signer.hexdigest(to_sign)
        if not hmac.compare_digest(expected, signature.signature):
            raise InvalidSignatureException()
        return Verified(signature, credential)

    # -- the whole check -------------------------------------------------------------------------

    def verify(self, request: Request, *, services: Collection[str], unsigned_payload: bool = False) -> Verified:
        """Verify a header-signed request (may read the database on a cache miss)."""
        signature = self.parse(request, services=services)
        credential = self.credentials.lookup(signature.access_key_id)
        return self.check(request, signature, credential, unsigned_payload=unsigned_payload)

    def verify_presigned(self, request: Request, args: Mapping[str, str], *, services: Collection[str]) -> Verified:
        """Verify a request signed in its query string (a presigned URL)."""
        signature = self.parse_presigned(request, args, services=services)
        credential = self.credentials.lookup(signature.access_key_id)
        return self.check(request, signature, credential)

    async def averify(self, request: Request, *, services: Collection[str]) -> Verified:
        """``verify`` for the event loop: a cached credential costs no thread hop."""
        signature = self.parse(request, services=services)
        credential = self.credentials.cached(signature.access_key_id)
        if credential is None:
            credential = await asyncio.to_thread(self.credentials.lookup, signature.access_key_id)
        return self.check(request, signature, credential)
