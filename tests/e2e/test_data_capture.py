"""Data Capture on a live platform with unmodified boto3: files in SageMaker's layout whose records match
the requests, sampling within binomial bounds, and no way for another account to write where it could not."""

from __future__ import annotations

import base64
import http.client
import json
import math
import re
import uuid

import pytest

from tests.support.platform import ACCOUNT_ID, running_platform
from tests.support.torch_models import pack_model
from tests.support.waiting import wait_for

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
WAIT = {"Delay": 0.2, "MaxAttempts": 600}
# Answers the request upper-cased, in the request's content type: every output is checkable.
HANDLER = """
def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    raw = data if isinstance(data, (bytes, bytearray)) else str(data).encode()
    return bytes(raw).upper(), content_type or "application/octet-stream"
"""
REQUESTS = 240
PERCENT = 50
KEY_RE = re.compile(
    r"^(?P<prefix>capture/run-1)/(?P<ep>[^/]+)/AllTraffic/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl$"
)
BODIES = [  # (content type, body, the encoding the record must carry)
    ("text/csv", lambda i: f"{i},0.5,abc\n".encode(), "CSV"),
    ("application/json", lambda i: json.dumps({"request": i, "text": "hi"}).encode(), "JSON"),
    ("application/x-npy", lambda i: bytes([0x93, i % 256, 0xFF]) + b"npy", "BASE64"),
]


# The API process's sampler is seeded, so how many of the requests it samples is known in advance.
SEED = 20261206


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    env = {
        "NEURONDOCK_CAPTURE_FLUSH_SECONDS": "0.5",
        "NEURONDOCK_CAPTURE_SAMPLING_SEED": str(SEED),
        "NEURONDOCK_METRICS_FLUSH_SECONDS": "1",
    }
    yield from running_platform(tmp_path_factory.mktemp("nd-capture"), extra_env=env)


def _admin(platform, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _deploy(sm, s3, tmp_path, model_bucket: str, capture: dict, role: str) -> str:
    name = f"cap-{uuid.uuid4().hex[:8]}"
    path = pack_model(tmp_path / f"{name}.tar.gz", None, code={"inference.py": HANDLER})
    s3.upload_file(str(path), model_bucket, f"{name}/model.tar.gz")
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{model_bucket}/{name}/model.tar.gz"},
        ExecutionRoleArn=role,
    )
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], DataCaptureConfig=capture)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return name


def _records(s3, bucket: str, prefix: str) -> list[tuple[str, dict]]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
            out += [(item["Key"], json.loads(line)) for line in body.splitlines()]
    return out


def _decoded(side: dict) -> bytes:
    return base64.b64decode(side["data"]) if side["encoding"] == "BASE64" else side["data"].encode()


def test_capture_files_match_the_requests_and_another_account_cannot_aim_them(platform, tmp_path):
    sm, rt, s3 = platform.client("sagemaker"), platform.client("sagemaker-runtime"), platform.client("s3")
    s3.create_bucket(Bucket="cap-models")
    s3.create_bucket(Bucket="cap-a-data")
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": PERCENT,
        "DestinationS3Uri": "s3://cap-a-data/capture/run-1/",
        "CaptureOptions": [{"CaptureMode": "InputAndOutput"}],
        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
    }
    name = _deploy(sm, s3, tmp_path, "cap-models", capture, f"arn:aws:iam::{ACCOUNT_ID}:role/SageMakerRole")

    # Account B: its own model, but a capture destination in A's bucket, which B cannot write to itself.
    token = platform.api_token()
    status, created = _admin(platform, "POST", "/api/v1/accounts", token, {"name": "capture-other-team"})
    assert status == 201, created
    keys = created["access_key"]
    as_b = {"access_key": keys["access_key_id"], "secret_key": keys["secret_access_key"]}
    sm_b, rt_b, s3_b = (platform.client(s, **as_b) for s in ("sagemaker", "sagemaker-runtime", "s3"))
    with pytest.raises(s3_b.exceptions.ClientError) as denied:
        s3_b.put_object(Bucket="cap-a-data", Key="capture/run-1/direct.jsonl", Body=b"{}")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    s3_b.create_bucket(Bucket="cap-b-models")
    stolen = {**capture, "InitialSamplingPercentage": 100, "DestinationS3Uri": "s3://cap-a-data/stolen"}
    b_name = _deploy(sm_b, s3_b, tmp_path, "cap-b-models", stolen, f"arn:aws:iam::{keys['account_id']}:role/R")

    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    summary = sm.describe_endpoint(EndpointName=name)["DataCaptureConfig"]
    assert summary == {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": PERCENT,
        "DestinationS3Uri": "s3://cap-a-data/capture/run-1/",
    }

    sent: dict[str, tuple[str, bytes, str]] = {}
    for i in range(REQUESTS):
        content_type, make, encoding = BODIES[i % len(BODIES)]
        body, inference_id = make(i), f"req-{i:04d}"
        answer = rt.invoke_endpoint(EndpointName=name, ContentType=content_type, Body=body, InferenceId=inference_id)
        assert answer["Body"].read() == body.upper()
        sent[inference_id] = (content_type, body, encoding)

    # Files arrive in batches (every 0.5 s here): wait for all of the sampled requests, which the seeded
    # sampler fixes; the sampler itself must keep to the binomial bounds. Every record is one of the
    # requests, whole.
    from neurondock_platform.dataplane.capture import Sampler

    replay = Sampler(SEED)
    expected = sum(replay(PERCENT) for _ in range(REQUESTS))
    assert abs(expected - REQUESTS * PERCENT / 100) <= 5 * math.sqrt(REQUESTS * 0.25), expected

    def captured() -> list[tuple[str, dict]] | None:
        found = _records(s3, "cap-a-data", "capture/run-1/")
        _, described = _admin(platform, "GET", f"/api/v1/endpoints/{name}", token)
        done = len(found) == expected and described["data_capture"]["records_written"] == expected
        return found if done else None

    records = wait_for(captured, 30, what="capture files and their counts", interval=0.2, state=platform.logs)
    event_ids = set()
    for key, rec in records:
        match = KEY_RE.match(key)
        assert match and match["ep"] == name, key
        assert rec["eventVersion"] == "0" and set(rec) == {"captureData", "eventMetadata", "eventVersion"}
        meta = rec["eventMetadata"]
        event_ids.add(meta["eventId"])
        content_type, body, encoding = sent[meta["inferenceId"]]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", meta["inferenceTime"])
        request, response = rec["captureData"]["endpointInput"], rec["captureData"]["endpointOutput"]
        assert (request["mode"], response["mode"]) == ("INPUT", "OUTPUT")
        assert request["observedContentType"] == response["observedContentType"] == content_type
        assert request["encoding"] == response["encoding"] == encoding
        assert (_decoded(request), _decoded(response)) == (body, body.upper())
    assert len(event_ids) == expected
    status, described = _admin(platform, "GET", f"/api/v1/endpoints/{name}", token)
    assert described["data_capture"]["capture_status"] == "Started" and described["data_capture"]["records_failed"] == 0

    # B's invocations all succeed; their captures are refused by the store and counted, never written.
    sm_b.get_waiter("endpoint_in_service").wait(EndpointName=b_name, WaiterConfig=WAIT)
    for i in range(5):
        answer = rt_b.invoke_endpoint(EndpointName=b_name, ContentType="text/csv", Body=f"{i}\n".encode())
        assert answer["Body"].read() == f"{i}\n".encode()
    b_token = platform.api_token(keys["access_key_id"], keys["secret_access_key"])

    def failed() -> int | None:
        _, described = _admin(platform, "GET", f"/api/v1/endpoints/{b_name}", b_token)
        count = described["data_capture"]["records_failed"]
        return count if count >= 5 else None

    assert wait_for(failed, 30, what="B's lost captures to be counted", interval=0.2, state=platform.logs) == 5
    _, _, text = platform.metrics(keys["access_key_id"], keys["secret_access_key"])
    assert re.search(rf'DataCaptureFailed\{{[^}}]*EndpointName="{b_name}"[^}}]*reason="write_failed"\}} 5', text)
    assert _records(s3, "cap-a-data", "stolen") == []
    assert "Access Denied" in platform.logs() or "AccessDenied" in platform.logs()
    for client, endpoint in ((sm, name), (sm_b, b_name)):
        client.delete_endpoint(EndpointName=endpoint)


@pytest.mark.slow
def test_async_invocations_are_captured_in_the_same_format(platform, tmp_path):
    sm, rt, s3 = platform.client("sagemaker"), platform.client("sagemaker-runtime"), platform.client("s3")
    s3.create_bucket(Bucket="cap-async")
    name = f"cap-async-{uuid.uuid4().hex[:8]}"
    path = pack_model(tmp_path / f"{name}.tar.gz", None, code={"inference.py": HANDLER})
    s3.upload_file(str(path), "cap-async", f"{name}/model.tar.gz")
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://cap-async/{name}/model.tar.gz"},
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/SageMakerRole",
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://cap-async/{name}/out"}},
        DataCaptureConfig={
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": "s3://cap-async/capture",
            "CaptureOptions": [{"CaptureMode": "InputAndOutput"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        },
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    body = json.dumps({"async": True}).encode()
    sent = rt.invoke_endpoint_async(EndpointName=name, Body=body, ContentType="application/json")

    def record() -> dict | None:
        found = _records(s3, "cap-async", f"capture/{name}/AllTraffic/")
        return found[0][1] if found else None

    rec = wait_for(record, 60, what="the async invocation's capture record", interval=0.2, state=platform.logs)
    assert rec["eventMetadata"]["inferenceId"] == sent["InferenceId"]
    assert rec["captureData"]["endpointInput"] == {
        "observedContentType": "application/json",
        "mode": "INPUT",
        "data": body.decode(),
        "encoding": "JSON",
    }
    assert _decoded(rec["captureData"]["endpointOutput"]) == body.upper()
    out_bucket, _, out_key = sent["OutputLocation"].removeprefix("s3://").partition("/")
    assert s3.get_object(Bucket=out_bucket, Key=out_key)["Body"].read() == body.upper()
    sm.delete_endpoint(EndpointName=name)
