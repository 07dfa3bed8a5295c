"""The data plane on the live platform: OIP v2 next to InvokeEndpoint, /metrics, and 429s boto3 retries."""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
import uuid

import pytest

from tests.support.oip import triton_client
from tests.support.platform import ACCESS_KEY, ACCOUNT_ID, REGION, SECRET_KEY
from tests.support.torch_models import pack_model, tiny_mlp

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
WAIT = {"Delay": 0.2, "MaxAttempts": 600}
SLOW_HANDLER = """
import time

def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    time.sleep(0.15)  # a slow model, so concurrent calls pile up in the replica's queue
    return b"done", "text/plain"
"""


def _deploy(sm, s3, bucket, tmp_path, scripted=None, *, code=None, env=None) -> str:
    name = f"oip-{uuid.uuid4().hex[:8]}"
    path = pack_model(tmp_path / f"{name}.tar.gz", scripted, code=code)
    s3.upload_file(str(path), bucket, f"{name}/model.tar.gz")
    container = {"Image": IMAGE, "ModelDataUrl": f"s3://{bucket}/{name}/model.tar.gz", "Environment": env or {}}
    sm.create_model(ModelName=name, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return name


@pytest.fixture(scope="module")
def endpoints(sm, s3, bucket, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oip-models")
    model = tiny_mlp(seed=5)
    mlp = _deploy(sm, s3, bucket, tmp, model)
    slow = _deploy(sm, s3, bucket, tmp, code={"inference.py": SLOW_HANDLER}, env={"NEURONDOCK_MAX_QUEUE_SIZE": "2"})
    for name in (mlp, slow):
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    yield {"mlp": mlp, "slow": slow, "model": model}
    for name in (mlp, slow):
        sm.delete_endpoint(EndpointName=name)


def _signed_request(platform, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=platform.url + path, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=dict(request.headers.items()))
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_oip_json_and_binary_infer_match_the_model(platform, endpoints):
    import numpy as np
    import torch

    name, model = endpoints["mlp"], endpoints["model"]
    x = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
    expected = model(torch.from_numpy(x)).detach().numpy()

    assert _signed_request(platform, "GET", "/v2/health/ready")[0] == 200
    status, _, body = _signed_request(platform, "GET", f"/v2/models/{name}/ready")
    assert (status, json.loads(body)) == (200, {"name": name, "ready": True})
    status, _, body = _signed_request(platform, "GET", f"/v2/models/{name}")
    assert status == 200 and json.loads(body)["platform"] == "pytorch_torchscript"

    request = {"id": "e2e", "inputs": [{"name": "x", "shape": [3, 16], "datatype": "FP32", "data": x.tolist()}]}
    status, _, body = _signed_request(platform, "POST", f"/v2/models/{name}/infer", json.dumps(request).encode())
    assert status == 200, body
    doc = json.loads(body)
    assert (doc["id"], doc["model_name"], doc["model_version"]) == ("e2e", name, "AllTraffic")
    out = doc["outputs"][0]
    assert (out["datatype"], out["shape"]) == ("FP32", [3, 4])
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(3, 4), expected, rtol=1e-5, atol=1e-5)

    raw = x.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [3, 16], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    status, headers, body = _signed_request(
        platform,
        "POST",
        f"/v2/models/{name}/versions/AllTraffic/infer",
        header + raw,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200, body
    split = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    out = json.loads(body[:split])["outputs"][0]
    assert out["parameters"]["binary_data_size"] == 3 * 4 * 4
    np.testing.assert_allclose(np.frombuffer(body[split:], "<f4").reshape(3, 4), expected, rtol=1e-5, atol=1e-5)

    missing = "/v2/models/no-such-endpoint/infer"
    status, _, body = _signed_request(platform, "POST", missing, json.dumps(request).encode())
    assert status == 404 and "not found" in json.loads(body)["error"]


def _metric(text: str, name: str, endpoint: str) -> float:
    labels = f'account_id="{ACCOUNT_ID}",EndpointName="{endpoint}",VariantName="AllTraffic"'
    match = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} for {endpoint} not in /metrics"
    return float(match.group(1))


def test_metrics_show_invocations_and_latency(platform, rt, endpoints):
    import numpy as np

    name = endpoints["mlp"]
    buffer = io.BytesIO()
    np.save(buffer, np.ones((1, 16), dtype=np.float32))
    _, _, before = platform.metrics()
    start = _metric(before, "Invocations", name) if f'EndpointName="{name}"' in before else 0.0

    for _ in range(5):
        rt.invoke_endpoint(EndpointName=name, ContentType="application/x-npy", Body=buffer.getvalue())
    with pytest.raises(rt.exceptions.ModelError):
        rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=b"[[1, 2]]")

    # Signed: the series name every account's endpoints, so anonymous callers get none (tests/security).
    status, content_type, text = platform.metrics()
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert _metric(text, "Invocations", name) == start + 6
    assert _metric(text, "Invocation5XXErrors", name) >= 1
    assert _metric(text, "ModelLatency_count", name) >= 6
    assert _metric(text, "ModelLatency_sum", name) > 0
    assert _metric(text, "OverheadLatency_sum", name) > 0
    assert _metric(text, "ModelSetupTime_count", name) == 1
    assert "# TYPE BatchSize histogram" in text and "NeuronCoreUtilization{" in text


def _runtime(platform, retries: dict):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=platform.url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries=retries, read_timeout=90, max_pool_connections=16),
    )


def test_a_flooded_replica_throttles_and_boto3_retries(platform, endpoints):
    from botocore.exceptions import ClientError

    name = endpoints["slow"]
    strict = _runtime(platform, {"max_attempts": 1, "mode": "standard"})
    patient = _runtime(platform, {"max_attempts": 10, "mode": "standard"})

    def flood(client, results: list) -> None:
        barrier = threading.Barrier(10)

        def one() -> None:
            barrier.wait()
            try:
                response = client.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=b"{}")
                results.append(("ok", response["ResponseMetadata"]["RetryAttempts"], response["Body"].read()))
            except ClientError as err:
                error, meta = err.response["Error"], err.response["ResponseMetadata"]
                results.append((error["Code"], meta["HTTPStatusCode"], error["Message"]))

        threads = [threading.Thread(target=one) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    refused: list = []
    flood(strict, refused)
    throttled = [r for r in refused if r[0] == "ThrottlingException"]
    assert throttled, refused
    assert all(status == 429 and "queue full" in message for _, status, message in throttled)
    assert {r[0] for r in refused} <= {"ok", "ThrottlingException"}

    retried: list = []
    flood(patient, retried)
    assert [r[0] for r in retried] == ["ok"] * 10, retried
    assert all(body == b"done" for _, _, body in retried)
    assert sum(attempts for _, attempts, _ in retried) > 0  # some got 429 first and botocore retried them


def _post_json(platform, path: str, body: dict, token: str) -> tuple[int, dict]:
    """POST to the admin API with a bearer token."""
    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _curl(platform, path: str, token: str, body: str, content_type: str = "application/json") -> tuple[int, bytes]:
    import subprocess

    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {token}"]
    args += ["-H", f"Content-Type: {content_type}", "--data-binary", body, platform.url + path]
    out = subprocess.run(args, capture_output=True, check=True, timeout=60).stdout
    payload, _, code = out.rpartition(b"\n")
    return int(code), payload


def test_tritonclient_and_curl_invoke_with_a_bearer_token_until_it_is_revoked(platform, endpoints):
    """tritonclient cannot sign SigV4: a header plugin sends an admin API token instead, as curl -H does."""
    import numpy as np
    import torch
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    name, model = endpoints["mlp"], endpoints["model"]
    token = platform.api_token()

    # Probes need no credentials and tell ready from not ready, nothing more.
    anonymous = triton_client(platform.port)
    assert anonymous.is_server_live() and anonymous.is_server_ready()
    assert anonymous.is_model_ready(name) and not anonymous.is_model_ready("no-such-endpoint")
    with pytest.raises(InferenceServerException) as refused:
        anonymous.get_model_metadata(name)
    assert refused.value.status() == "403"

    client = triton_client(platform.port, token)
    x = np.random.default_rng(11).standard_normal((3, 16)).astype(np.float32)
    tensor = triton.InferInput("input", [3, 16], "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer(name, [tensor], outputs=[triton.InferRequestedOutput("output0", binary_data=True)])
    np.testing.assert_allclose(result.as_numpy("output0"), model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)

    # Uncompiled TorchScript: names from its signature, dtypes and shapes from a successful request.
    metadata = client.get_model_metadata(name)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert metadata["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [-1, 4]}]

    wrong = triton.InferInput("input", [3, 16], "FP64")
    wrong.set_data_from_numpy(x.astype(np.float64), binary_data=True)
    with pytest.raises(InferenceServerException) as bad_type:
        client.infer(name, [wrong])
    assert bad_type.value.status() == "400"
    assert "got FP64 [3, 16]; the model expects input FP32 [-1, 16]" in bad_type.value.message()
    with pytest.raises(InferenceServerException) as bad_output:
        client.infer(name, [tensor], outputs=[triton.InferRequestedOutput("logits")])
    assert bad_output.value.status() == "400" and "its outputs: output0" in bad_output.value.message()

    row = json.dumps(x[:1].tolist())
    status, body = _curl(platform, f"/endpoints/{name}/invocations", token, row)
    assert status == 200, body
    np.testing.assert_allclose(np.array(json.loads(body)), model(torch.from_numpy(x[:1])).detach().numpy(), atol=1e-5)
    request = json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": x[:1].tolist()}]})
    status, body = _curl(platform, f"/v2/models/{name}/infer", token, request)
    assert status == 200 and json.loads(body)["outputs"][0]["shape"] == [1, 4]

    # Another account's token reaches none of this account's endpoints, by name or by probe metadata.
    status, created = _post_json(platform, "/api/v1/accounts", {"name": "oip-other-team"}, token)
    assert status == 201, created
    keys = created["access_key"]
    other_token = platform.api_token(keys["access_key_id"], keys["secret_access_key"])
    other = triton_client(platform.port, other_token)
    with pytest.raises(InferenceServerException) as hidden:
        other.infer(name, [tensor])
    assert hidden.value.status() == "404" and f"in account {keys['account_id']}" in hidden.value.message()
    with pytest.raises(InferenceServerException) as hidden:
        other.get_model_metadata(name)
    assert hidden.value.status() == "404"
    assert _curl(platform, f"/endpoints/{name}/invocations", other_token, row)[0] == 400

    # Revoked on the admin API: refused on both data-plane front doors at once (same process).
    status, revoked = _post_json(platform, "/api/v1/tokens/revoke", {}, token)
    assert status == 200 and revoked["revoked"], revoked
    with pytest.raises(InferenceServerException) as gone:
        client.infer(name, [tensor])
    assert gone.value.status() == "401" and "revoked" in gone.value.message()
    status, body = _curl(platform, f"/endpoints/{name}/invocations", token, row)
    assert status == 401 and json.loads(body)["__type"] == "InvalidToken"
