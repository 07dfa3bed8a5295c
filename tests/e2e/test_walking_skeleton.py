"""The whole loop with unmodified boto3: upload, create, wait, invoke, compare, delete."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import BACKEND_NEUTRAL, BOTH_BACKENDS
from tests.support.processes import live_processes
from tests.support.torch_models import pack_model, small_cnn, tiny_mlp

pytestmark = BOTH_BACKENDS

PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
WAIT = {"Delay": 0.2, "MaxAttempts": 600}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def deploy(
    sm,
    s3,
    bucket,
    tmp_path,
    scripted=None,
    *,
    code=None,
    image=PYTORCH_IMAGE,
    count=1,
    instance_type="ml.c5.large",
    extra=None,
    env=None,
    wait=True,
):
    """Upload a model and create model → config → endpoint; returns the endpoint name."""
    name = _name("ep")
    key = f"{name}/model.tar.gz"
    path = pack_model(tmp_path / f"{name}.tar.gz", scripted, code=code, extra=extra)
    s3.upload_file(str(path), bucket, key)
    container = {"Image": image, "ModelDataUrl": f"s3://{bucket}/{key}"}
    if env:
        container["Environment"] = env
    sm.create_model(
        ModelName=name,
        PrimaryContainer=container,
        ExecutionRoleArn="arn:aws:iam::210987654321:role/SageMakerRole",
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": count,
                "InstanceType": instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    if wait:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    return name


# On PostgreSQL + Redis the restart test below deploys and invokes too; this one is in the slow run there.
@BACKEND_NEUTRAL
def test_deploy_invoke_json_and_npy_then_delete(platform, sm, rt, s3, bucket, tmp_path):
    import numpy as np
    import torch

    model = tiny_mlp(seed=3)
    name = deploy(sm, s3, bucket, tmp_path, model, count=2)
    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointStatus"] == "InService"
    assert desc["EndpointArn"] == f"arn:aws:sagemaker:us-east-1:210987654321:endpoint/{name.lower()}"
    variant = desc["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 2
    assert variant["DeployedImages"][0]["SpecifiedImage"] == PYTORCH_IMAGE

    x = np.random.default_rng(0).standard_normal((3, 16)).astype("float32")
    expected = model(torch.from_numpy(x)).detach().numpy()

    resp = rt.invoke_endpoint(
        EndpointName=name,
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps(x.tolist()),
        CustomAttributes="trace=1",
    )
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    got = np.array(json.loads(resp["Body"].read()), dtype="float32")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    buf = io.BytesIO()
    np.save(buf, x)
    resp = rt.invoke_endpoint(
        EndpointName=name, ContentType="application/x-npy", Accept="application/x-npy", Body=buf.getvalue()
    )
    assert resp["ContentType"] == "application/x-npy"
    got = np.load(io.BytesIO(resp["Body"].read()))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=WAIT)
    with pytest.raises(sm.exceptions.ClientError) as err:
        sm.describe_endpoint(EndpointName=name)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert err.value.response["Error"]["Message"].startswith("Could not find endpoint")


@BACKEND_NEUTRAL
def test_cnn_with_custom_handler_and_multipart_upload(platform, sm, rt, s3, bucket, tmp_path):
    import numpy as np
    import torch

    model = small_cnn(seed=1)
    handler = (
        "import io, json, numpy as np, torch\n"
        "def model_fn(model_dir):\n"
        "    return torch.jit.load(model_dir + '/model.pt')\n"
        "def input_fn(body, content_type):\n"
        "    return torch.from_numpy(np.load(io.BytesIO(body)))\n"
        "def predict_fn(x, model):\n"
        "    with torch.no_grad():\n"
        "        return model(x).softmax(-1)\n"
        "def output_fn(y, accept):\n"
        "    return json.dumps({'probabilities': y.tolist()}), 'application/json'\n"
    )
    # 9 MB of padding makes boto3's transfer manager use multipart (threshold 8 MB).
    padding = {"padding.bin": bytes(9 * 1024 * 1024)}
    name = deploy(sm, s3, bucket, tmp_path, model, code={"inference.py": handler}, extra=padding)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype("float32")
    buf = io.BytesIO()
    np.save(buf, x)
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="application/x-npy", Body=buf.getvalue())
    got = np.array(json.loads(resp["Body"].read())["probabilities"])
    expected = model(torch.from_numpy(x)).softmax(-1).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    sm.delete_endpoint(EndpointName=name)


@BACKEND_NEUTRAL
def test_runtime_errors(platform, sm, rt, s3, bucket, tmp_path):
    with pytest.raises(rt.exceptions.ValidationError) as err:
        rt.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"{}", ContentType="application/json")
    assert "no-such-endpoint" in err.value.response["Error"]["Message"]

    handler = (
        "def model_fn(model_dir):\n    return None\n"
        "def transform_fn(model, body, content_type, accept):\n"
        "    raise ValueError('bad input: expected 16 features')\n"
    )
    name = deploy(sm, s3, bucket, tmp_path, None, code={"inference.py": handler})
    with pytest.raises(rt.exceptions.ModelError) as err:
        rt.invoke_endpoint(EndpointName=name, Body=b"[1]", ContentType="application/json")
    resp = err.value.response
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["OriginalStatusCode"] == 500
    assert "bad input: expected 16 features" in resp["OriginalMessage"]
    assert resp["LogStreamArn"].startswith("arn:aws:logs:us-east-1:210987654321:log-group:/aws/sagemaker/Endpoints/")

    too_big = bytes(6 * 1024 * 1024 + 1)
    with pytest.raises(rt.exceptions.ClientError) as err:
        rt.invoke_endpoint(EndpointName=name, Body=too_big, ContentType="application/octet-stream")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "6 MiB" in err.value.response["Error"]["Message"]

    with pytest.raises(rt.exceptions.ValidationError):
        rt.invoke_endpoint(EndpointName=name, Body=b"[1]", ContentType="application/json", TargetVariant="nope")
    sm.delete_endpoint(EndpointName=name)


@BACKEND_NEUTRAL
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad_tarball", "not a gzip"),
        ("model_fn_raises", "model_fn"),
        ("unsupported_image", "is not supported by neurondock"),
    ],
)
def test_failed_endpoints_say_why(platform, sm, s3, bucket, tmp_path, case, expected):
    name = _name("bad")
    key = f"{name}/model.tar.gz"
    image = PYTORCH_IMAGE
    if case == "bad_tarball":
        s3.put_object(Bucket=bucket, Key=key, Body=b"this is not a tarball")
    else:
        code = {"inference.py": "def model_fn(model_dir):\n    raise RuntimeError('weights are corrupt')\n"}
        path = pack_model(tmp_path / "m.tar.gz", None, code=code)
        s3.upload_file(str(path), bucket, key)
        if case == "unsupported_image":
            image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own-server:1"
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": image, "ModelDataUrl": f"s3://{bucket}/{key}"},
        ExecutionRoleArn="arn:aws:iam::210987654321:role/SageMakerRole",
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.c5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    waiter = sm.get_waiter("endpoint_in_service")
    with pytest.raises(Exception, match="Failed"):
        waiter.wait(EndpointName=name, WaiterConfig=WAIT)
    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointStatus"] == "Failed"
    assert expected in desc["FailureReason"], desc["FailureReason"]
    if case == "model_fn_raises":
        assert "weights are corrupt" in desc["FailureReason"]
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=WAIT)


@BACKEND_NEUTRAL
def test_aws_cli_session(platform, sm, s3, bucket, tmp_path):
    import numpy as np

    name = deploy(sm, s3, bucket, tmp_path, tiny_mlp(seed=5))
    env = platform.cli_env()

    def aws(*args: str) -> str:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "aws"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    listed = json.loads(aws("sagemaker", "list-endpoints", "--name-contains", name))
    assert [e["EndpointName"] for e in listed["Endpoints"]] == [name]
    path = pack_model(tmp_path / "cli.tar.gz", tiny_mlp(seed=5))
    aws("s3", "cp", str(path), f"s3://{bucket}/cli/model.tar.gz")
    assert aws("s3", "ls", f"s3://{bucket}/cli/").split()[-1] == "model.tar.gz"
    body = tmp_path / "body.json"
    body.write_text(json.dumps(np.ones((1, 16)).tolist()))
    out = tmp_path / "out.json"
    aws(
        "sagemaker-runtime",
        "invoke-endpoint",
        "--endpoint-name",
        name,
        "--content-type",
        "application/json",
        "--body",
        f"fileb://{body}",
        str(out),
    )
    assert np.array(json.loads(out.read_text())).shape == (1, 4)
    aws("sagemaker", "delete-endpoint", "--endpoint-name", name)
    # The CLI's own waiter sleeps 30 s between polls; boto3's with a short delay checks the same thing.
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=WAIT)


def _platform_processes(platform):
    """Live processes started for this platform (their environment names its data dir)."""
    found = []
    data_dir = str(platform.data_dir)
    for entry, environ, cmdline in live_processes():
        try:
            status = (entry / "stat").read_text()
        except OSError:
            continue
        try:
            stdout = os.readlink(entry / "fd" / "1")
        except OSError:
            stdout = ""
        ours = f"NEURONDOCK_DATA_DIR={data_dir}".encode() in environ
        # Replicas (and warm standbys) get a clean environment; their log under the data dir gives them away.
        ours = ours or data_dir in cmdline or stdout.startswith(data_dir)
        if ours and ") Z " not in status:
            found.append(type("Proc", (), {"pid": int(entry.name)}))
    return found


def test_restart_brings_endpoints_back(platform, sm, rt, s3, bucket, tmp_path):
    import numpy as np

    name = deploy(sm, s3, bucket, tmp_path, tiny_mlp(seed=7))
    body = json.dumps(np.ones((1, 16)).tolist())
    before = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=body)["Body"].read()
    pids = [p.pid for p in _platform_processes(platform)]
    assert len(pids) >= 5  # up, api, worker, agent and at least one replica
    assert platform.stop() == 0
    assert not platform.ping()
    # SIGTERM to `up` stops every child, replicas included.
    assert [p.pid for p in _platform_processes(platform)] == []
    platform.start()
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    # Replicas come back under the host agent; poll with a deadline instead of sleeping.
    assert json.loads(platform.invoke_when_served(name, body)) == json.loads(before)
    sm.delete_endpoint(EndpointName=name)


@BACKEND_NEUTRAL
def test_sts_get_caller_identity(platform):
    ident = platform.client("sts").get_caller_identity()
    assert ident["Account"] == "210987654321"
    assert ident["Arn"] == "arn:aws:iam::210987654321:root"


@BACKEND_NEUTRAL
@pytest.mark.parametrize("service", ["sagemaker", "sagemaker-runtime", "s3"])
def test_wrong_credentials_are_rejected_everywhere(platform, service):
    from botocore.exceptions import ClientError

    bad_secret = platform.client(service, secret_key="not-the-secret")
    unknown_key = platform.client(service, access_key="AKNDUNKNOWNKEY000000")
    calls = {
        "sagemaker": lambda c: c.list_endpoints(),
        "sagemaker-runtime": lambda c: c.invoke_endpoint(EndpointName="x", Body=b"{}"),
        "s3": lambda c: c.list_buckets(),
    }
    expected = {
        "sagemaker": ("InvalidSignatureException", "UnrecognizedClientException"),
        "sagemaker-runtime": ("InvalidSignatureException", "UnrecognizedClientException"),
        "s3": ("SignatureDoesNotMatch", "InvalidAccessKeyId"),
    }[service]
    for client, code in zip((bad_secret, unknown_key), expected, strict=True):
        with pytest.raises(ClientError) as err:
            calls[service](client)
        assert err.value.response["Error"]["Code"] == code


@BACKEND_NEUTRAL
def test_unsigned_request_is_refused(platform):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        platform.url + "/",
        data=b"{}",
        headers={"X-Amz-Target": "SageMaker.ListEndpoints", "Content-Type": "application/x-amz-json-1.1"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
    assert json.loads(err.value.read())["__type"] == "MissingAuthenticationTokenException"
