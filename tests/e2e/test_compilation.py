"""Compile for ml_inf1 and ml_c5 with unmodified boto3, deploy the artifacts, invoke, delete."""

from __future__ import annotations

import io
import json
import tarfile
import uuid

import pytest

from tests.e2e.conftest import BACKEND_NEUTRAL, BOTH_BACKENDS
from tests.support.torch_models import pack_model, small_cnn, tiny_mlp
from tests.support.waiting import wait_for

ROLE = "arn:aws:iam::210987654321:role/SageMakerRole"
WAIT = {"Delay": 0.2, "MaxAttempts": 600}
COMPILE_DEADLINE_S = 180
IN_PROGRESS = ("STARTING", "INPROGRESS", "STOPPING")

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"), BOTH_BACKENDS]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _wait_for_job(platform, sm, name: str) -> dict:
    def finished() -> dict | None:
        desc = sm.describe_compilation_job(CompilationJobName=name)
        return None if desc["CompilationJobStatus"] in IN_PROGRESS else desc

    return wait_for(finished, COMPILE_DEADLINE_S, what=f"compilation job {name}", interval=0.25, state=platform.logs)


def _compile(platform, sm, s3, bucket, tmp_path, model, name: str, shapes: str, target: str) -> dict:
    """Upload ``model`` packed as a model.tar.gz, compile it under ``<name>/out`` and wait for the job to end."""
    key = f"{name}/model.tar.gz"
    s3.upload_file(str(pack_model(tmp_path / f"{name}.tar.gz", model)), bucket, key)
    sm.create_compilation_job(
        CompilationJobName=name,
        RoleArn=ROLE,
        InputConfig={"S3Uri": f"s3://{bucket}/{key}", "DataInputConfig": shapes, "Framework": "PYTORCH"},
        OutputConfig={"S3OutputLocation": f"s3://{bucket}/{name}/out", "TargetDevice": target},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )
    return _wait_for_job(platform, sm, name)


@BACKEND_NEUTRAL
def test_compile_for_inf1_then_deploy_and_invoke_the_artifact(platform, sm, rt, s3, bucket, tmp_path):
    import numpy as np
    import torch

    from neurondock_workers.compiler import load_compiled

    model = small_cnn(seed=5)
    name = _name("neo")
    key = f"{name}/model.tar.gz"
    s3.upload_file(str(pack_model(tmp_path / "model.tar.gz", model)), bucket, key)
    arn = sm.create_compilation_job(
        CompilationJobName=name,
        RoleArn=ROLE,
        InputConfig={
            "S3Uri": f"s3://{bucket}/{key}",
            "DataInputConfig": json.dumps({"input0": [1, 3, 32, 32]}),
            "Framework": "PYTORCH",
            "FrameworkVersion": "1.13",
        },
        OutputConfig={"S3OutputLocation": f"s3://{bucket}/{name}/compiled", "TargetDevice": "ml_inf1"},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )["CompilationJobArn"]
    assert arn.endswith(f":compilation-job/{name}")

    desc = _wait_for_job(platform, sm, name)
    assert desc["CompilationJobStatus"] == "COMPLETED", (desc["FailureReason"], platform.logs())
    assert desc["FailureReason"] == ""
    artifact = desc["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{bucket}/{name}/compiled/model-ml_inf1.tar.gz"
    assert desc["InferenceImage"].endswith("/pytorch-inference-neuron:1.13.1-neuron-py310")
    assert desc["CompilationStartTime"] <= desc["CompilationEndTime"]
    summaries = sm.list_compilation_jobs(NameContains=name)["CompilationJobSummaries"]
    assert [(s["CompilationJobName"], s["CompilationJobStatus"]) for s in summaries] == [(name, "COMPLETED")]

    body = s3.get_object(Bucket=bucket, Key=f"{name}/compiled/model-ml_inf1.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        tar.extractall(tmp_path / "artifact", filter="data")
    emulated = load_compiled(tmp_path / "artifact")
    for report_file in ("manifest.json", "report.json", "compile.log"):
        s3.head_object(Bucket=bucket, Key=f"{name}/compiled/model-ml_inf1/{report_file}")

    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": desc["InferenceImage"], "ModelDataUrl": artifact},
        ExecutionRoleArn=ROLE,
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.inf1.xlarge",
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)

    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype("float32")
    buf = io.BytesIO()
    np.save(buf, x)
    resp = rt.invoke_endpoint(
        EndpointName=name, ContentType="application/x-npy", Accept="application/x-npy", Body=buf.getvalue()
    )
    got = np.load(io.BytesIO(resp["Body"].read()))
    with torch.no_grad():
        expected = emulated(torch.from_numpy(x)).numpy()
        fp32 = model(torch.from_numpy(x)).numpy()
    # The endpoint serves the emulated device numerics; against FP32 they differ by BF16 rounding.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, fp32, rtol=0.05, atol=0.05)

    # Compiled shapes are static: another batch size is refused by the model, with a clear message.
    wrong = io.BytesIO()
    np.save(wrong, np.zeros((2, 3, 32, 32), dtype="float32"))
    with pytest.raises(rt.exceptions.ModelError) as err:
        rt.invoke_endpoint(EndpointName=name, ContentType="application/x-npy", Body=wrong.getvalue())
    assert err.value.response["OriginalStatusCode"] == 400
    assert "static shape [1, 3, 32, 32]" in err.value.response["OriginalMessage"]

    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=WAIT)
    sm.delete_endpoint_config(EndpointConfigName=name)
    sm.delete_model(ModelName=name)
    sm.delete_compilation_job(CompilationJobName=name)
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.describe_compilation_job(CompilationJobName=name)
    # Deleting the job keeps its output, as on AWS.
    s3.head_object(Bucket=bucket, Key=f"{name}/compiled/model-ml_inf1.tar.gz")


@BACKEND_NEUTRAL
def test_compile_for_c5_then_deploy_and_invoke_the_artifact(platform, sm, rt, s3, bucket, tmp_path):
    """ml_c5 compiles to optimised FP32 TorchScript for the CPU; it serves on ml.c5 with the model's answers."""
    import numpy as np
    import torch

    model = tiny_mlp(seed=7)
    name = _name("neo-c5")
    desc = _compile(platform, sm, s3, bucket, tmp_path, model, name, "[[2, 16]]", "ml_c5")
    assert desc["CompilationJobStatus"] == "COMPLETED", (desc["FailureReason"], platform.logs())
    artifact = desc["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{bucket}/{name}/out/model-ml_c5.tar.gz"
    assert desc["InferenceImage"].endswith("/pytorch-inference:2.1.0-cpu-py310")
    report = json.loads(s3.get_object(Bucket=bucket, Key=f"{name}/out/model-ml_c5/report.json")["Body"].read())
    assert report["summary"]["target"] == "ml_c5" and report["summary"]["neuron_subgraphs"] is None

    container = {"Image": desc["InferenceImage"], "ModelDataUrl": artifact}
    sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=ROLE)
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    x = np.random.default_rng(7).standard_normal((3, 16)).astype("float32")
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=json.dumps(x.tolist()))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    # No device shapes on the CPU: a batch of 3 is served although the job compiled [2, 16].
    np.testing.assert_allclose(np.array(json.loads(resp["Body"].read())), expected, rtol=1e-5, atol=1e-5)
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=WAIT)


@BACKEND_NEUTRAL
def test_a_bad_model_fails_and_unknown_compiler_flags_are_refused(platform, sm, s3, bucket, tmp_path):
    name = _name("neo-bad")
    key = f"{name}/model.tar.gz"
    pack_model(tmp_path / "two.tar.gz", small_cnn(), extra={"second.pth": b"not a model"})
    s3.upload_file(str(tmp_path / "two.tar.gz"), bucket, key)
    request = {
        "RoleArn": ROLE,
        "InputConfig": {"S3Uri": f"s3://{bucket}/{key}", "DataInputConfig": "[[1,3,32,32]]", "Framework": "PYTORCH"},
        "OutputConfig": {"S3OutputLocation": f"s3://{bucket}/{name}/out", "TargetDevice": "ml_inf1"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
    }
    sm.create_compilation_job(CompilationJobName=name, **request)
    desc = _wait_for_job(platform, sm, name)
    assert desc["CompilationJobStatus"] == "FAILED"
    assert desc["FailureReason"] == (
        "ClientError: InputConfiguration: Exactly one .pt or .pth file is allowed for PyTorch model."
    )

    with pytest.raises(sm.exceptions.ClientError) as err:
        sm.create_compilation_job(
            CompilationJobName=_name("neo-c"),
            **{**request, "OutputConfig": {**request["OutputConfig"], "CompilerOptions": "--turbo"}},
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "unknown flag '--turbo'" in err.value.response["Error"]["Message"]


@BACKEND_NEUTRAL
def test_a_model_with_an_unsupported_operator_compiles_with_cpu_fallback_and_serves(
    platform, sm, rt, s3, bucket, tmp_path
):
    """aten::gather is not supported on Inf1: it stays on the CPU and the model still deploys and serves."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    class GatherNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 32)
            self.c, self.d = nn.Linear(32, 16), nn.Linear(16, 8)
            self.register_buffer("idx", torch.randint(0, 32, (4, 32), generator=torch.Generator().manual_seed(1)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(self.b(F.relu(self.a(x))))
            h = torch.gather(h, 1, self.idx)
            return self.d(F.relu(self.c(h)))

    torch.manual_seed(3)
    model = torch.jit.trace(GatherNet().eval(), torch.randn(4, 16))
    name = _name("neo-gather")
    desc = _compile(platform, sm, s3, bucket, tmp_path, model, name, "[[4,16]]", "ml_inf1")
    assert desc["CompilationJobStatus"] == "COMPLETED", (desc["FailureReason"], platform.logs())
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{name}/out/model-ml_inf1/manifest.json")["Body"].read())
    assert "aten::gather" in json.dumps(manifest["analyze"]["unsupported_operators"])
    assert manifest["emulated"] is True

    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": desc["InferenceImage"], "ModelDataUrl": desc["ModelArtifacts"]["S3ModelArtifacts"]},
        ExecutionRoleArn=ROLE,
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.inf1.xlarge",
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    x = np.random.default_rng(3).standard_normal((4, 16)).astype("float32")
    buf = io.BytesIO()
    np.save(buf, x)
    resp = rt.invoke_endpoint(
        EndpointName=name, ContentType="application/x-npy", Accept="application/x-npy", Body=buf.getvalue()
    )
    got = np.load(io.BytesIO(resp["Body"].read()))
    with torch.no_grad():
        fp32 = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, fp32, rtol=0.05, atol=0.05)
    sm.delete_endpoint(EndpointName=name)
