"""SigV4 verification against signatures made by botocore itself."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from tests.conftest import ACCESS_KEY, SECRET_KEY, sign

from neurondock_platform import errors, sigv4

CRED = sigv4.Credential(secret_access_key=SECRET_KEY, account_id="123456789012")


def lookup(key: str) -> sigv4.Credential | None:
    return CRED if key == ACCESS_KEY else None


def _verify(method, url, body, headers, **kw):
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    headers = {"Host": parts.netloc, **headers}  # what an HTTP client puts on the wire
    return sigv4.verify(
        method=method,
        path=unquote(parts.path),
        query=parts.query,
        headers=headers,
        body=body,
        lookup=lookup,
        **kw,
    )


def test_accepts_botocore_signature_for_sagemaker():
    body = b'{"EndpointName": "x"}'
    headers = sign("POST", "http://localhost:8780/", body=body, headers={"X-Amz-Target": "SageMaker.DescribeEndpoint"})
    signed, cred = _verify("POST", "http://localhost:8780/", body, headers)
    assert signed.service == "sagemaker" and cred.account_id == "123456789012"


def test_accepts_runtime_path_and_query():
    url = "http://localhost:8780/endpoints/my-ep/invocations"
    headers = sign("POST", url, body=b"\x00\x01binary", headers={"X-Amzn-SageMaker-Custom-Attributes": "a=1  b=2"})
    _verify("POST", url, b"\x00\x01binary", headers)


def test_accepts_s3_signature_with_content_hash():
    body = b"hello"
    url = "http://localhost:8780/s3/bucket/some%20key?uploads="
    headers = sign(
        "POST",
        url,
        service="s3",
        body=body,
        headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()},
    )
    _verify("POST", url, None, headers)


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (lambda h, b: (h, b + b"x"), errors.InvalidSignatureException),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "Authorization"}, b),
            errors.MissingAuthenticationTokenException,
        ),
        (
            lambda h, b: (
                {**h, "Authorization": h["Authorization"].replace(ACCESS_KEY, "AKNDUNKNOWN000000000")},
                b,
            ),
            errors.UnrecognizedClientException,
        ),
        (
            lambda h, b: ({**h, "Authorization": "AWS4-HMAC-SHA256 Credential=broken"}, b),
            errors.IncompleteSignatureException,
        ),
        (lambda h, b: ({**h, "Authorization": "Bearer abc"}, b), errors.IncompleteSignatureException),
    ],
)
def test_rejects_tampered_requests(tamper, error):
    body = b"{}"
    headers = sign("POST", "http://localhost/", body=body)
    headers, body = tamper(headers, body)
    with pytest.raises(error):
        _verify("POST", "http://localhost/", body, headers)


def test_rejects_wrong_secret():
    headers = sign("POST", "http://localhost/", body=b"{}", secret_key="not-the-secret")
    with pytest.raises(errors.InvalidSignatureException):
        _verify("POST", "http://localhost/", b"{}", headers)


def test_rejects_clock_skew_over_15_minutes():
    headers = sign("POST", "http://localhost/", body=b"{}")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)
    with pytest.raises(errors.SignatureExpiredException, match="Signature expired"):
        _verify("POST", "http://localhost/", b"{}", headers, now=later)
    # 14 minutes is inside the window.
    _verify("POST", "http://localhost/", b"{}", headers, now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=14))


def test_errors_pickle():
    import pickle

    err = errors.NotFoundError(kind="endpoint", arn="arn:aws:sagemaker:us-east-1:1:endpoint/x")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is errors.NotFoundError and again.message == err.message
    model_err = errors.ModelError("m", original_status_code=400, original_message="o", log_stream_arn="l")
    again = pickle.loads(pickle.dumps(model_err))
    assert again.body()["OriginalStatusCode"] == 400
