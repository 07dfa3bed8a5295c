"""SigV4 on every front door, on a real server: what AWS accepts is accepted, what it refuses is refused.

Each case is signed by botocore (or curl) and sent over HTTP to the whole front served by uvicorn.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from tests.support.identity import Keys, assume, error_code

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

SAGEMAKER_TARGET = {"X-Amz-Target": "SageMaker.ListModels", "Content-Type": "application/x-amz-json-1.1"}


class UnsignedPayloadAuth(SigV4Auth):
    """A signer that declares UNSIGNED-PAYLOAD, as S3 clients may (and nothing else may)."""

    def payload(self, request: Any) -> str:
        return "UNSIGNED-PAYLOAD"


def send(
    front: Any,
    method: str,
    path: str,
    *,
    keys: Keys,
    service: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    region: str = "us-east-1",
    auth_cls: type[SigV4Auth] | None = None,
    send_body: bytes | None = None,
    wire_headers: dict[str, bytes] | None = None,
) -> tuple[int, bytes]:
    """Sign a request with botocore and send it over http.client; return status and body."""
    request = AWSRequest(method=method, url=front.url + path, data=body, headers=dict(headers or {}))
    cls = auth_cls or (S3SigV4Auth if service == "s3" else SigV4Auth)
    cls(Credentials(keys.access_key_id, keys.secret_access_key, keys.session_token), service, region).add_auth(request)
    port = urlsplit(front.url).port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True, skip_host=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        payload = body if send_body is None else send_body
        for name, value in request.headers.items():
            if name.lower() != "host":
                conn.putheader(name, (wire_headers or {}).get(name.lower(), value))
        conn.putheader("Content-Length", str(len(payload)))
        conn.endheaders(payload)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _code(body: bytes) -> str:
    text = body.decode(errors="replace")
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        return str(data.get("__type") or data.get("error", {}).get("code"))
    return text.split("<Code>", 1)[-1].split("</Code>", 1)[0]


# --- the credential scope: the platform's region, the front door's service --------------------------


@pytest.mark.parametrize(
    ("path", "service", "headers", "expected"),
    [
        ("/", "sagemaker", SAGEMAKER_TARGET, "InvalidSignatureException"),
        ("/endpoints/ep/invocations", "sagemaker", {"Content-Type": "application/json"}, "InvalidSignatureException"),
        ("/s3/", "s3", {}, "AuthorizationHeaderMalformed"),
        ("/sts", "sts", {"Content-Type": "application/x-www-form-urlencoded"}, "SignatureDoesNotMatch"),
        ("/api/v1/whoami", "neurondock", {}, "Unauthenticated"),
    ],
)
def test_a_credential_scope_for_another_region_is_refused_on_every_front(
    live_front, ordinary, path, service, headers, expected
):
    method, body = ("GET", b"") if path in ("/s3/", "/api/v1/whoami") else ("POST", b"Action=GetCallerIdentity")
    if path in ("/", "/endpoints/ep/invocations"):
        body = b"{}"
    ok_status, _ = send(live_front, method, path, keys=ordinary, service=service, body=body, headers=headers)
    assert ok_status in (200, 400), ok_status  # 400: the runtime's endpoint-not-found, past the signature
    status, answer = send(
        live_front, method, path, keys=ordinary, service=service, body=body, headers=headers, region="eu-west-1"
    )
    assert status in (400, 401, 403) and _code(answer) == expected, answer
    assert b"region" in answer
    if service == "s3":
        assert b"<Region>us-east-1</Region>" in answer  # botocore's region redirector reads it


@pytest.mark.parametrize(
    ("path", "signed_for", "headers"),
    [
        ("/", "s3", SAGEMAKER_TARGET),
        ("/", "execute-api", SAGEMAKER_TARGET),
        ("/endpoints/ep/invocations", "s3", {"Content-Type": "application/json"}),
        ("/api/v1/whoami", "sagemaker", {}),
    ],
)
def test_a_credential_scope_for_another_service_is_refused(live_front, ordinary, path, signed_for, headers):
    method = "GET" if path.startswith("/api") else "POST"
    status, answer = send(
        live_front, method, path, keys=ordinary, service=signed_for, body=b"{}" if method == "POST" else b"",
        headers=headers,
    )  # fmt: skip
    assert status in (400, 401, 403), answer
    assert "service" in answer.decode().lower(), answer


# --- UNSIGNED-PAYLOAD: S3 only ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"), [("/", SAGEMAKER_TARGET), ("/endpoints/ep/invocations", {"Content-Type": "application/json"})]
)
def test_unsigned_payload_is_refused_outside_s3_so_a_body_cannot_be_swapped(live_front, ordinary, path, headers):
    headers = {**headers, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    signed_body = b"{}"
    swapped = b'{"NameContains": "not what was signed"}'
    for wire_body in (signed_body, swapped):
        status, answer = send(
            live_front, "POST", path, keys=ordinary, service="sagemaker", body=signed_body, headers=headers,
            auth_cls=UnsignedPayloadAuth, send_body=wire_body,
        )  # fmt: skip
        assert status == 403 and _code(answer) == "InvalidSignatureException", answer
        assert b"S3 only" in answer


def test_unsigned_payload_is_accepted_by_s3(live_front, ordinary):
    s3 = live_front.client("s3", ordinary)
    s3.create_bucket(Bucket="unsigned")
    status, answer = send(
        live_front, "PUT", "/s3/unsigned/k", keys=ordinary, service="s3", body=b"data",
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )  # fmt: skip
    assert status == 200, answer
    assert s3.get_object(Bucket="unsigned", Key="k")["Body"].read() == b"data"


# --- requests dated by a Date header (botocore signs so whenever one is present) --------------------


def _with_date_header(client: Any) -> Any:
    def add_date(request: Any, **_: Any) -> None:
        request.headers["Date"] = "Thu, 01 Jan 2026 00:00:00 GMT"  # botocore rewrites it to now

    client.meta.events.register_first("before-sign.*.*", add_date)
    return client


def test_a_date_header_without_x_amz_date_verifies_everywhere(live_front, ordinary):
    temp = assume(live_front, ordinary, "arn:aws:iam::111122223333:role/Dated")
    for keys in (ordinary, temp):
        sent: list[dict[str, str]] = []
        clients = {
            service: _with_date_header(live_front.client(service, keys))
            for service in ("sagemaker", "s3", "sts", "sagemaker-runtime")
        }
        record = sent.append
        for client in clients.values():
            client.meta.events.register(
                "before-send.*.*", lambda request, record=record, **_: record(dict(request.headers))
            )
        clients["sagemaker"].list_models()
        clients["s3"].list_buckets()
        assert clients["sts"].get_caller_identity()["Account"] == ordinary.account_id
        with pytest.raises(ClientError) as caught:  # past the signature: the endpoint does not exist
            clients["sagemaker-runtime"].invoke_endpoint(EndpointName="nope", Body=b"{}")
        assert error_code(caught) == "ValidationError"
        assert sent and all("Date" in h and "X-Amz-Date" not in h for h in sent)
        status, _ = send(
            live_front, "GET", "/api/v1/whoami", keys=keys, service="neurondock",
            headers={"Date": "Thu, 01 Jan 2026 00:00:00 GMT"},
        )  # fmt: skip
        assert status == 200


# --- header values as clients send them -------------------------------------------------------------


def test_a_non_ascii_metadata_value_verifies_from_botocore_and_curl(live_front, ordinary):
    s3 = live_front.client("s3", ordinary)
    s3.create_bucket(Bucket="meta")
    value = "Grüße aus Köln"
    # botocore signs the characters; the wire carries their UTF-8 bytes (as aiohttp and curl send them).
    status, answer = send(
        live_front, "PUT", "/s3/meta/a", keys=ordinary, service="s3", body=b"x",
        headers={"x-amz-meta-greeting": value}, wire_headers={"x-amz-meta-greeting": value.encode()},
    )  # fmt: skip
    assert status == 200, answer
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", "y",
            "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", f"{ordinary.access_key_id}:{ordinary.secret_access_key}",
            "-H", f"x-amz-meta-greeting: {value}", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            f"{live_front.url}/s3/meta/b",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.stdout == "200", (done.stdout, done.stderr)
    assert s3.get_object(Bucket="meta", Key="b")["Body"].read() == b"y"


def test_an_empty_signed_content_type_verifies(live_front, ordinary):
    s3 = live_front.client("s3", ordinary)
    s3.create_bucket(Bucket="empty-type")
    status, answer = send(
        live_front, "PUT", "/s3/empty-type/k", keys=ordinary, service="s3", body=b"x", headers={"Content-Type": ""}
    )
    assert status == 200, answer


# --- /metrics names endpoints: only to those allowed to see them ------------------------------------


def test_metrics_are_not_served_to_anonymous_callers_and_each_account_sees_its_own(
    live_front, ordinary, root_keys, settings
):
    import dataclasses

    collector = live_front.asgi.runtime.metrics
    for account, endpoint in ((root_keys.account_id, "admins-secret-project"), (ordinary.account_id, "their-ep")):
        collector.invocation(
            (account, endpoint, "AllTraffic"), outcome="ok", instances=1, total_us=900.0, model_us=800.0
        )
    port = urlsplit(live_front.url).port

    def anonymous() -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read()

    status, body = anonymous()
    assert status == 403 and b"admins-secret-project" not in body and b"their-ep" not in body
    status, body = send(live_front, "GET", "/metrics", keys=ordinary, service="sagemaker")
    assert status == 200 and b'EndpointName="their-ep"' in body and b"admins-secret-project" not in body
    status, body = send(live_front, "GET", "/metrics", keys=root_keys, service="sagemaker")
    assert status == 200 and b"admins-secret-project" in body and b"their-ep" in body

    # A Prometheus scrape config sends an admin API token.
    api = live_front.flask_app.test_client()
    pair = {"access_key_id": root_keys.access_key_id, "secret_access_key": root_keys.secret_access_key}
    token = api.post("/api/v1/tokens", json=pair).get_json()["token"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    assert response.status == 200 and b"admins-secret-project" in response.read()
    conn.close()

    # An operator may open it to anonymous scrapers.
    runtime = live_front.asgi.runtime
    runtime.settings = dataclasses.replace(runtime.settings, metrics_public=True)
    status, body = anonymous()
    assert status == 200 and b"admins-secret-project" in body
    assert settings.metrics_public is False  # the default
