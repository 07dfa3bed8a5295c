"""Act as the owner, on a live `neurondock up`: the host agent and the compile runner read and write as the account.

An ordinary (non-admin) account deploys, invokes and compiles from its own buckets through boto3, the
neurondock SDK and the admin API's upload flow; pointed at the admin's bucket, its endpoint fails with
AccessDenied (never serving the admin's model, never telling a missing key from a bad archive) and its
compile job fails without writing anything there. The worker and the agent run without the root keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.support.identity import Keys
from tests.support.platform import ACCESS_KEY, ACCOUNT_ID, REGION, SECRET_KEY, Platform, running_platform
from tests.support.torch_models import pack_model, tiny_mlp

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
# Scripts carry their AWS account id in role ARNs: the role is the caller's own, whatever the id says.
ROLE = "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole"
WAIT = {"Delay": 0.2, "MaxAttempts": 600}
ADMIN = Keys(ACCOUNT_ID, ACCESS_KEY, SECRET_KEY)
FINAL = ("COMPLETED", "FAILED", "STOPPED")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from running_platform(tmp_path_factory.mktemp("nd-owner"))


def client(platform: Platform, service: str, keys: Keys) -> Any:
    return platform.client(service, access_key=keys.access_key_id, secret_key=keys.secret_access_key)


@pytest.fixture(scope="module")
def tenant(platform: Platform) -> Keys:
    """An ordinary account, created the way an operator does: `neurondock accounts create`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NEURONDOCK_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    done = subprocess.run(
        [sys.executable, "-m", "neurondock_platform.cli", "accounts", "create", "team-a", "-o", "json",
         "--endpoint-url", platform.url],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    created = json.loads(done.stdout)
    assert created["account"]["is_admin"] is False
    key = created["access_key"]
    return Keys(created["account"]["id"], key["access_key_id"], key["secret_access_key"])


@pytest.fixture(scope="module")
def admin_model(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The admin's model archive, in the admin's own bucket."""
    s3 = client(platform, "s3", ADMIN)
    s3.create_bucket(Bucket="admin-private")
    archive = pack_model(tmp_path_factory.mktemp("admin") / "m.tar.gz", tiny_mlp(seed=7))
    s3.upload_file(str(archive), "admin-private", "models/m.tar.gz")
    return "s3://admin-private/models/m.tar.gz"


def _deploy(sm: Any, name: str, model_data_url: str) -> dict[str, Any]:
    sm.create_model(
        ModelName=name, PrimaryContainer={"Image": IMAGE, "ModelDataUrl": model_data_url}, ExecutionRoleArn=ROLE
    )
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    deadline = time.monotonic() + 120
    while (desc := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] in ("Creating", "Updating"):
        assert time.monotonic() < deadline, desc
        time.sleep(0.2)
    return desc


def _npy(rows: int = 1) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.ones((rows, 16), dtype=np.float32))
    return buffer.getvalue()


def test_the_worker_and_the_agent_run_without_the_root_keys(platform: Platform):
    for child in ("host",):
        pids = subprocess.run(
            ["pgrep", "-f", f"neurondock_workers {child}"], capture_output=True, text=True, check=False
        ).stdout.split()
        environs = []
        for pid in pids:
            try:
                environs.append((Path(f"/proc/{pid}/environ").read_bytes(), pid))
            except OSError:
                continue
        mine = [env for env, _ in environs if f"NEURONDOCK_DATA_DIR={platform.data_dir}".encode() in env]
        assert mine, f"no {child} process of this platform found"
        for env in mine:
            assert SECRET_KEY.encode() not in env and b"NEURONDOCK_ROOT_SECRET_ACCESS_KEY" not in env


def test_an_ordinary_account_deploys_and_invokes_its_own_model_with_boto3(platform, tenant, tmp_path):
    s3, sm, rt = (client(platform, s, tenant) for s in ("s3", "sagemaker", "sagemaker-runtime"))
    s3.create_bucket(Bucket="team-a-models")
    s3.upload_file(str(pack_model(tmp_path / "m.tar.gz", tiny_mlp(seed=1))), "team-a-models", "m.tar.gz")
    desc = _deploy(sm, "team-a-own", "s3://team-a-models/m.tar.gz")
    assert desc["EndpointStatus"] == "InService", (desc.get("FailureReason"), platform.logs())
    answer = rt.invoke_endpoint(EndpointName="team-a-own", ContentType="application/x-npy", Body=_npy())
    assert len(json.loads(answer["Body"].read())[0]) == 4  # the model's four outputs
    assert sm.describe_model(ModelName="team-a-own")["ExecutionRoleArn"] == ROLE  # as given


@pytest.mark.parametrize("what", ["the admin's model", "a key the admin does not have"])
def test_a_model_in_another_accounts_bucket_fails_with_access_denied(platform, tenant, admin_model, what):
    sm = client(platform, "sagemaker", tenant)
    url = admin_model if what == "the admin's model" else "s3://admin-private/models/no-such-key.tar.gz"
    name = f"steal-{uuid.uuid4().hex[:6]}"
    desc = _deploy(sm, name, url)
    assert desc["EndpointStatus"] == "Failed", desc
    # Denied before the key is looked at: the reason cannot tell a missing key from a present one.
    assert "AccessDenied" in desc["FailureReason"] and "NoSuchKey" not in desc["FailureReason"], desc
    # The tenant's direct read is refused the same way.
    with pytest.raises(ClientError) as caught:
        client(platform, "s3", tenant).head_object(Bucket="admin-private", Key="models/m.tar.gz")
    assert caught.value.response["Error"]["Code"] in ("403", "AccessDenied")


def _compile(sm: Any, name: str, input_uri: str, output: str) -> dict[str, Any]:
    sm.create_compilation_job(
        CompilationJobName=name,
        RoleArn=ROLE,
        InputConfig={
            "S3Uri": input_uri,
            "DataInputConfig": json.dumps({"input0": [1, 16]}),
            "Framework": "PYTORCH",
            "FrameworkVersion": "1.13",
        },
        OutputConfig={"S3OutputLocation": output, "TargetDevice": "ml_inf1"},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )
    deadline = time.monotonic() + 240
    while (desc := sm.describe_compilation_job(CompilationJobName=name))["CompilationJobStatus"] not in FINAL:
        assert time.monotonic() < deadline, desc
        time.sleep(0.25)
    return desc


def test_an_ordinary_account_compiles_its_own_model_and_cannot_write_into_anothers_bucket(
    platform, tenant, admin_model, tmp_path
):
    s3, sm = client(platform, "s3", tenant), client(platform, "sagemaker", tenant)
    s3.create_bucket(Bucket="team-a-compile")
    s3.upload_file(str(pack_model(tmp_path / "m.tar.gz", tiny_mlp(seed=2))), "team-a-compile", "in/m.tar.gz")

    own = _compile(sm, "team-a-neo", "s3://team-a-compile/in/m.tar.gz", "s3://team-a-compile/out")
    assert own["CompilationJobStatus"] == "COMPLETED", (own["FailureReason"], platform.logs())
    s3.head_object(Bucket="team-a-compile", Key="out/m-ml_inf1.tar.gz")

    admin_s3 = client(platform, "s3", ADMIN)
    before = admin_s3.list_objects_v2(Bucket="admin-private").get("KeyCount")
    into = _compile(sm, "team-a-into-admin", "s3://team-a-compile/in/m.tar.gz", "s3://admin-private/out")
    assert into["CompilationJobStatus"] == "FAILED" and "AccessDenied" in into["FailureReason"], into
    from_admin = _compile(sm, "team-a-from-admin", admin_model, "s3://team-a-compile/stolen")
    assert from_admin["CompilationJobStatus"] == "FAILED" and "AccessDenied" in from_admin["FailureReason"]
    assert admin_s3.list_objects_v2(Bucket="admin-private").get("KeyCount") == before
    assert "Contents" not in admin_s3.list_objects_v2(Bucket="admin-private", Prefix="out")


def test_an_ordinary_account_deploys_compiles_and_predicts_with_the_neurondock_sdk(platform, tenant):
    import boto3
    import numpy as np
    import torch

    import neurondock

    boto_session = boto3.Session(
        aws_access_key_id=tenant.access_key_id, aws_secret_access_key=tenant.secret_access_key, region_name=REGION
    )
    session = neurondock.Session(
        boto_session=boto_session, endpoint_url=platform.url, poll_interval=0.1, progress=False
    )
    torch.manual_seed(3)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    package = neurondock.package_module(mlp, torch.zeros(1, 16), upload=True, session=session)
    assert package.model_data.startswith(f"s3://sagemaker-{REGION}-{tenant.account_id}/")
    predictor = neurondock.Model(model_data=package.model_data, role=ROLE, session=session).deploy(1, "ml.c5.large")
    x = np.ones((1, 16), dtype=np.float32)
    with torch.no_grad():
        expected = mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(predictor.predict(x), expected, rtol=1e-5, atol=1e-5)

    # Neo compile for ml_inf1, from and into the account's own default bucket.
    model = neurondock.Model(model_data=package.model_data, role=ROLE, session=session)
    output = f"s3://{session.default_bucket()}/compiled-{uuid.uuid4().hex[:8]}"
    model.compile("ml_inf1", package.input_shape, output, framework_version="1.13.1")
    assert model.model_data == f"{output}/model-ml_inf1.tar.gz"
    bucket, key = model.model_data.removeprefix("s3://").split("/", 1)
    assert session.s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0


def test_an_ordinary_account_deploys_through_the_admin_api_upload_flow(platform, tenant, tmp_path):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def call(method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> Any:
        import urllib.error
        import urllib.request

        request = AWSRequest(method=method, url=platform.url + "/api/v1" + path, data=body,
                             headers={"Content-Type": content_type})  # fmt: skip
        SigV4Auth(Credentials(tenant.access_key_id, tenant.secret_access_key), "neurondock", REGION).add_auth(request)
        req = urllib.request.Request(
            request.url, data=body or None, headers=dict(request.headers.items()), method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError((method, path, exc.code, exc.read())) from exc

    bucket = f"nd-artifacts-{tenant.account_id}"
    archive = pack_model(tmp_path / "m.tar.gz", tiny_mlp(seed=4)).read_bytes()
    up = call("PUT", f"/artifacts/{bucket}/object?key=upload%2Fm.tar.gz", archive, "application/gzip")
    call("POST", "/models", json.dumps({"name": "team-a-upload", "image": IMAGE, "model_data_url": up["s3_uri"],
                                        "execution_role_arn": ROLE}).encode())  # fmt: skip
    call("POST", "/endpoints", json.dumps({"name": "team-a-upload", "model_name": "team-a-upload",
                                           "instance_type": "ml.c5.large"}).encode())  # fmt: skip
    deadline = time.monotonic() + 120
    while (desc := call("GET", "/endpoints/team-a-upload"))["status"] in ("Creating", "Updating"):
        assert time.monotonic() < deadline, desc
        time.sleep(0.2)
    assert desc["status"] == "InService", (desc, platform.logs())
    answer = client(platform, "sagemaker-runtime", tenant).invoke_endpoint(
        EndpointName="team-a-upload", ContentType="application/x-npy", Body=_npy()
    )
    assert len(json.loads(answer["Body"].read())[0]) == 4
