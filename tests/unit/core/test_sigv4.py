"""The one SigV4 verifier, against signatures made by botocore itself."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from tests.conftest import ACCESS_KEY, SECRET_KEY, sign

from neurondock_platform import errors, sigv4
from neurondock_platform.dataplane.auth import IncomingRequest, SigV4Authenticator

ACCOUNT = "123456789012"
CRED = sigv4.Credential(secret_access_key=SECRET_KEY, account_id=ACCOUNT)
TEMP_KEY, TEMP_SECRET, TOKEN = "ASIANDTEMP0000000001", "temporary-secret-0000000000000000000001", "session-token-1"


class Source:
    """A credential source holding the test key and one temporary key."""

    def __init__(self, temp_expires_at: float | None = None) -> None:
        self.entries = {
            ACCESS_KEY: CRED,
            TEMP_KEY: sigv4.Credential(
                TEMP_SECRET,
                ACCOUNT,
                session_token_sha256=sigv4.token_sha256(TOKEN),
                expires_at=temp_expires_at if temp_expires_at is not None else time.time() + 3600,
                arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s",
            ),
        }

    def cached(self, key: str) -> sigv4.Credential | None:
        return self.entries.get(key)

    def lookup(self, key: str) -> sigv4.Credential | None:
        return self.entries.get(key)


def verifier(source: Source | None = None, **kw: Any) -> sigv4.Verifier:
    return sigv4.Verifier(source or Source(), region="us-east-1", **kw)


def request(method: str, url: str, headers: dict[str, str], body: bytes | None) -> sigv4.Request:
    parts = urlsplit(url)
    wire = {"host": parts.netloc, **{k.lower(): v for k, v in headers.items()}}  # what a client puts on the wire
    return sigv4.Request(method, unquote(parts.path), parts.query, wire, body)


def verify(method, url, body, headers, *, services=("sagemaker",), **kw):
    return verifier(**kw).verify(request(method, url, headers, body), services=services)


def botocore_sign(
    method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None, token: str | None = None,
    key: str = TEMP_KEY, secret: str = TEMP_SECRET, service: str = "sagemaker",
) -> dict[str, str]:  # fmt: skip
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    cls = S3SigV4Auth if service == "s3" else SigV4Auth
    cls(Credentials(key, secret, token), service, "us-east-1").add_auth(req)
    return dict(req.headers.items())


def test_accepts_botocore_signature_for_sagemaker():
    body = b'{"EndpointName": "x"}'
    headers = sign("POST", "http://localhost:8780/", body=body, headers={"X-Amz-Target": "SageMaker.DescribeEndpoint"})
    verified = verify("POST", "http://localhost:8780/", body, headers)
    assert verified.signature.service == "sagemaker" and verified.account_id == ACCOUNT


def test_accepts_runtime_path_and_query():
    url = "http://localhost:8780/endpoints/my-ep/invocations?a=b&c=d%20e"
    headers = sign("POST", url, body=b"\x00\x01binary", headers={"X-Amzn-SageMaker-Custom-Attributes": "a=1  b=2"})
    verify("POST", url, b"\x00\x01binary", headers)


def test_accepts_s3_signature_with_content_hash_and_a_streamed_body():
    body = b"hello"
    url = "http://localhost:8780/s3/bucket/some%20key?uploads="
    headers = sign(
        "POST", url, service="s3", body=body, headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    )
    verify("POST", url, None, headers, services=("s3",))


def test_a_date_header_dates_the_request_when_there_is_no_x_amz_date():
    # botocore signs with the Date header whenever one is present (and then sends no X-Amz-Date).
    from email.utils import formatdate

    body = b"{}"
    headers = sign("POST", "http://localhost/", body=body, headers={"Date": formatdate(usegmt=True)})
    assert "X-Amz-Date" not in headers and "date" in headers["Authorization"]
    verify("POST", "http://localhost/", body, headers)
    # The Date header is the request time the clock check reads, too.
    with pytest.raises(errors.SignatureExpiredException):
        verify("POST", "http://localhost/", body, headers, clock=lambda: time.time() + 3600)


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (lambda h, b: (h, b + b"x"), errors.InvalidSignatureException),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "Authorization"}, b),
            errors.MissingAuthenticationTokenException,
        ),
        (
            lambda h, b: ({**h, "Authorization": h["Authorization"].replace(ACCESS_KEY, "AKNDUNKNOWN000000000")}, b),
            errors.UnrecognizedClientException,
        ),
        (
            lambda h, b: ({**h, "Authorization": "AWS4-HMAC-SHA256 Credential=broken"}, b),
            errors.IncompleteSignatureException,
        ),
        (lambda h, b: ({**h, "Authorization": "Bearer abc"}, b), errors.IncompleteSignatureException),
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-Amz-Date"}, b), errors.IncompleteSignatureException),
    ],
)
def test_rejects_tampered_requests(tamper, error):
    body = b"{}"
    headers = sign("POST", "http://localhost/", body=body)
    headers, body = tamper(headers, body)
    with pytest.raises(error):
        verify("POST", "http://localhost/", body, headers)


def test_rejects_wrong_secret():
    headers = sign("POST", "http://localhost/", body=b"{}", secret_key="not-the-secret")
    with pytest.raises(errors.InvalidSignatureException):
        verify("POST", "http://localhost/", b"{}", headers)


def test_the_cached_signer_is_hmac_sha256_of_each_message_alone():
    # One keyed start serves every request signed with that key: a message must not see the one before.
    signer = sigv4._signer(SECRET_KEY, "20260101", "us-east-1", "sagemaker")
    key = sigv4.signing_key(SECRET_KEY, "20260101", "us-east-1", "sagemaker")
    for message in (b"first", b"first", b"", b"x" * 200):
        assert signer.hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()
    assert sigv4._signer(SECRET_KEY, "20260101", "us-east-1", "sagemaker") is signer


def test_rejects_clock_skew_over_15_minutes():
    headers = sign("POST", "http://localhost/", body=b"{}")
    later = time.time() + 16 * 60
    with pytest.raises(errors.SignatureExpiredException, match="Signature expired"):
        verify("POST", "http://localhost/", b"{}", headers, clock=lambda: later)
    # 14 minutes is inside the window.
    verify("POST", "http://localhost/", b"{}", headers, clock=lambda: time.time() + 14 * 60)


@pytest.mark.parametrize(
    ("region", "service", "message"),
    [("eu-west-1", "sagemaker", "valid region"), ("us-east-1", "execute-api", "correct service: 'sagemaker'")],
)
def test_the_credential_scope_must_name_the_platforms_region_and_the_fronts_service(region, service, message):
    headers = sign("POST", "http://localhost/", body=b"{}", region=region, service=service)
    with pytest.raises(sigv4.CredentialScopeError, match=message) as caught:
        verify("POST", "http://localhost/", b"{}", headers)
    assert caught.value.code == "InvalidSignatureException" and caught.value.s3_code == "AuthorizationHeaderMalformed"


def test_unsigned_payload_is_accepted_for_s3_only():
    url = "http://localhost/endpoints/ep/invocations"
    headers = sign("POST", url, body=b"payload", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    with pytest.raises(errors.InvalidSignatureException, match="S3 only"):
        verify("POST", url, b"payload", headers)
    s3_url = "http://localhost/s3/b/k"
    s3_headers = sign(
        "PUT", s3_url, service="s3", body=b"payload", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    )
    verifier().verify(request("PUT", s3_url, s3_headers, None), services=("s3",), unsigned_payload=True)


def test_a_non_ascii_header_value_sent_as_utf8_verifies():
    # curl and aiohttp send header values as UTF-8 bytes; HTTP servers hand them over as latin-1.
    url = "http://localhost/s3/b/k"
    value = "Grüße aus Köln €"
    headers = sign("PUT", url, service="s3", body=b"x", headers={"x-amz-meta-greeting": value})
    on_the_wire = {**headers, "x-amz-meta-greeting": value.encode().decode("latin-1")}
    verify("PUT", url, b"x", on_the_wire, services=("s3",))


def test_an_empty_signed_header_verifies():
    url = "http://localhost/s3/b/k"
    headers = sign("PUT", url, service="s3", body=b"x", headers={"Content-Type": ""})
    assert "content-type" in headers["Authorization"]
    verify("PUT", url, b"x", headers, services=("s3",))


def test_temporary_credentials_need_their_own_current_session_token():
    url = "http://localhost/"
    good = botocore_sign("POST", url, body=b"{}", token=TOKEN)
    assert verify("POST", url, b"{}", good).credential.temporary
    with pytest.raises(errors.InvalidSecurityTokenException):
        verify("POST", url, b"{}", botocore_sign("POST", url, body=b"{}", token="another-token"))
    with pytest.raises(errors.UnrecognizedClientException):
        verify("POST", url, b"{}", botocore_sign("POST", url, body=b"{}"))  # no token at all
    with pytest.raises(errors.ExpiredTokenException):
        verifier(Source(temp_expires_at=time.time() - 1)).verify(
            request("POST", url, good, b"{}"), services=("sagemaker",)
        )
    # A long-term key presented with a session token is refused too, as AWS does.
    long_term = botocore_sign("POST", url, body=b"{}", token=TOKEN, key=ACCESS_KEY, secret=SECRET_KEY)
    with pytest.raises(errors.InvalidSecurityTokenException):
        verify("POST", url, b"{}", long_term)


def _presign(url: str, *, expires: int = 60, token: str | None = None, key: str = ACCESS_KEY, secret: str = SECRET_KEY):
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(Credentials(key, secret, token), "s3", "us-east-1", expires=expires).add_auth(req)
    return req.url


def test_presigned_urls_verify_with_long_term_and_temporary_keys():
    from urllib.parse import parse_qsl

    for signed_url in (
        _presign("http://localhost/s3/b/k"),
        _presign("http://localhost/s3/b/k", key=TEMP_KEY, secret=TEMP_SECRET, token=TOKEN),
    ):
        req = request("GET", signed_url, {}, None)
        args = dict(parse_qsl(req.query))
        verified = verifier().verify_presigned(req, args, services=("s3",))
        assert verified.account_id == ACCOUNT
        with pytest.raises(sigv4.RequestExpired):
            verifier(clock=lambda: time.time() + 120).verify_presigned(req, args, services=("s3",))


# --- the data plane verifies with the same verifier on the event loop -----------------------------


@pytest.mark.parametrize(
    "case",
    ["good", "bad-secret", "other-service", "missing-header", "query", "unknown-key", "skewed", "swapped-body"],
)
def test_the_data_plane_and_the_flask_front_agree(case):
    body = b"\x93NUMPY payload"
    url = "http://localhost/endpoints/ep/invocations" + ("?a=b&c=d%20e" if case == "query" else "")
    kw: dict[str, Any] = {}
    if case == "bad-secret":
        kw["secret_key"] = "wrong"
    if case == "other-service":
        kw["service"] = "execute-api"
    if case == "unknown-key":
        kw["access_key"] = "AKNDNOTAKEY000000000"
    signed_headers = {"Content-Type": "application/x-npy"}
    if case == "swapped-body":
        # The declared payload hash is signed; the body that arrives is another one.
        signed_headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    headers = sign("POST", url, body=body, headers=signed_headers, **kw)
    if case == "swapped-body":
        body = b"\x93NUMPY another payload"
    req = request("POST", url, headers, body)
    lower = dict(req.headers)
    if case == "missing-header":
        del lower["content-type"]
    if case == "skewed":
        lower["x-amz-date"] = "20200101T000000Z"
    shared = verifier()

    def flask_front() -> str:
        shared.verify(sigv4.Request("POST", req.path, req.query, lower, body), services=("sagemaker",))
        return "ok"

    def data_plane() -> str:
        principal = asyncio.run(
            SigV4Authenticator(shared).authenticate(IncomingRequest("POST", req.path, req.query, lower, body))
        )
        assert (principal.account_id, principal.access_key_id) == (ACCOUNT, ACCESS_KEY)
        return "ok"

    outcomes = []
    for check in (flask_front, data_plane):
        try:
            outcomes.append(check())
        except errors.AuthError as err:
            outcomes.append(err.code)
    assert outcomes[0] == outcomes[1], outcomes
    assert (outcomes[0] == "ok") == (case in ("good", "query")), outcomes


def test_errors_pickle():
    import pickle

    err = errors.NotFoundError(kind="endpoint", arn="arn:aws:sagemaker:us-east-1:1:endpoint/x")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is errors.NotFoundError and again.message == err.message
    model_err = errors.ModelError("m", original_status_code=400, original_message="o", log_stream_arn="l")
    again = pickle.loads(pickle.dumps(model_err))
    assert again.body()["OriginalStatusCode"] == 400
