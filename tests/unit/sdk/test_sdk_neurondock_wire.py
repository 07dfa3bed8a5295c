"""The SDK against a fake neurondock on a loopback port: one endpoint_url, real HTTP, no moto.

Checks what neither moto nor Stubber can: S3 under ``<url>/s3`` (path style), STS falling back when
the server does not speak it, the ``LogTail`` key surviving botocore's parser, and a real 424 ModelError.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from neurondock import JSONSerializer, ModelError, Predictor, Session, UnexpectedStatusError, waiters

PING_FAILURE = "The primary container for production variant AllTraffic did not pass the ping health check."
NO_STS = b"<ErrorResponse><Error><Code>InvalidAction</Code><Message>no STS</Message></Error></ErrorResponse>"
LOG_TAIL = ["Loading model from /opt/ml/model/model.pt", "RuntimeError: NRT_RESOURCE: out of device memory"]


class _FakeNeurondock(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # so Expect: 100-continue is answered, as boto3 uploads send it
    seen: list[tuple[str, str, str]] = []
    buckets: set[str] = set()

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.command, self.path.split("?")[0], self.headers.get("X-Amz-Target", "")))

    def do_HEAD(self) -> None:
        self._record()
        bucket = self.path.removeprefix("/s3/").strip("/")
        self._reply(200 if bucket in self.buckets else 404)

    def do_PUT(self) -> None:
        self._record()
        parts = self.path.removeprefix("/s3/").split("?")[0].split("/", 1)
        if len(parts) == 1:
            self.buckets.add(parts[0])
        self._reply(200, headers={"ETag": '"0123456789abcdef"'})

    def do_POST(self) -> None:
        self._record()
        target = self.headers.get("X-Amz-Target", "")
        if self.path.startswith("/endpoints/"):
            body = {
                "__type": "ModelError",
                "Message": 'Received client error (400) from primary with message "bad shape".',
                "OriginalStatusCode": 400,
                "OriginalMessage": "bad shape",
                "LogStreamArn": "arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/ep",
            }
            self._reply(424, json.dumps(body).encode(), {"Content-Type": "application/json"})
        elif target == "SageMaker.DescribeEndpoint":
            body = {
                "EndpointName": "ep",
                "EndpointArn": "arn:aws:sagemaker:us-east-1:000000000000:endpoint/ep",
                "EndpointConfigName": "ep",
                "EndpointStatus": "Failed",
                "FailureReason": PING_FAILURE,
                "CreationTime": 1700000000.0,
                "LastModifiedTime": 1700000001.0,
                waiters.LOG_TAIL_KEY: LOG_TAIL,
            }
            self._reply(200, json.dumps(body).encode(), {"Content-Type": "application/x-amz-json-1.1"})
        else:  # STS (query protocol): this fake, like a bare neurondock, does not implement it
            self._reply(400, NO_STS, {"Content-Type": "text/xml"})


@pytest.fixture
def neurondock_url() -> Iterator[str]:
    _FakeNeurondock.seen = []
    _FakeNeurondock.buckets = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeNeurondock)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_one_url_serves_s3_sts_fallback_and_upload(neurondock_url: str, tmp_path: Path) -> None:
    session = Session(endpoint_url=neurondock_url, progress=False)
    file = tmp_path / "input.json"
    file.write_text("[1]")
    assert session.upload_data(file) == "s3://sagemaker-us-east-1-neurondock/data/input.json"
    assert [(method, path) for method, path, _ in _FakeNeurondock.seen] == [
        ("POST", "/"),  # STS GetCallerIdentity, refused
        ("HEAD", "/s3/sagemaker-us-east-1-neurondock"),
        ("PUT", "/s3/sagemaker-us-east-1-neurondock"),
        ("PUT", "/s3/sagemaker-us-east-1-neurondock/data/input.json"),
    ]


def test_failed_endpoint_brings_its_log_tail(neurondock_url: str) -> None:
    session = Session(endpoint_url=neurondock_url, poll_interval=0.001, progress=False)
    with pytest.raises(UnexpectedStatusError) as caught:
        session.wait_for_endpoint("ep")
    assert caught.value.log_lines == LOG_TAIL
    assert "out of device memory" in str(caught.value)
    assert _FakeNeurondock.seen == [("POST", "/", "SageMaker.DescribeEndpoint")]


def test_model_error_over_the_wire(neurondock_url: str) -> None:
    session = Session(endpoint_url=neurondock_url, progress=False)
    with pytest.raises(ModelError) as caught:
        Predictor("ep", session, serializer=JSONSerializer()).predict([[1, 2]])
    error = caught.value
    assert (error.status_code, error.original_status_code, error.original_message) == (424, 400, "bad shape")
    assert error.log_stream_arn is not None
    assert _FakeNeurondock.seen == [("POST", "/endpoints/ep/invocations", "")]
