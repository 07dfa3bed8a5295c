"""Model.compile and Model.deploy: the SageMaker SDK v2 call sequences, under moto and with Stubber.

moto completes compilation jobs at once (no STARTING/INPROGRESS), creates endpoints InService at once
(no Creating), and implements neither UpdateEndpoint nor StopCompilationJob; those paths use Stubber.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY

from neurondock import ConfigurationError, Model, NumpySerializer, Predictor, Session, UnexpectedStatusError
from neurondock.model import default_image_uri

from .conftest import ACCOUNT, BUCKET, IMAGE, REGION, ROLE, Stubbed, make_model_tar, tar_members

TIMESTAMP = r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}"
S3_MODEL = "s3://models/resnet/model.tar.gz"
MODEL_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/m"
CONFIG_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/c"
ENDPOINT_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ep"
JOB_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:compilation-job/j"


def _endpoint(name: str, status: str, config: str, reason: str | None = None) -> dict[str, Any]:
    description = {
        "EndpointName": name,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": 0,
        "LastModifiedTime": 0,
    }
    if reason:
        description["FailureReason"] = reason
    return description


def _job(name: str, status: str, reason: str = "", artifacts: str = "s3://out/model.tar.gz") -> dict[str, Any]:
    return {
        "CompilationJobName": name,
        "CompilationJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:compilation-job/{name}",
        "CompilationJobStatus": status,
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
        "CreationTime": 0,
        "LastModifiedTime": 0,
        "FailureReason": reason,
        "ModelArtifacts": {"S3ModelArtifacts": artifacts},
        "RoleArn": ROLE,
        "InputConfig": {"S3Uri": S3_MODEL, "DataInputConfig": "{}", "Framework": "PYTORCH"},
        "OutputConfig": {"S3OutputLocation": "s3://out/", "TargetDevice": "ml_inf1"},
        "InferenceImage": "123.dkr.ecr.us-east-1.amazonaws.com/neo-inf1:1",
    }


# -- compile -------------------------------------------------------------------------------------


def test_compile_under_moto_adopts_artifact_and_image(session: Session, s3_model: str) -> None:
    model = Model(model_data=s3_model, role=ROLE, session=session)
    out = model.compile(
        "ml_inf1",
        {"input0": [1, 3, 224, 224]},
        "s3://models/compiled/",
        framework_version="1.13.1",
        compiler_options={"dtype": "fp32"},
        job_name="resnet-neo",
    )
    assert out is model
    job = session.sagemaker_client.describe_compilation_job(CompilationJobName="resnet-neo")
    assert job["InputConfig"] == {
        "S3Uri": s3_model,
        "DataInputConfig": '{"input0": [1, 3, 224, 224]}',
        "Framework": "PYTORCH",
        "FrameworkVersion": "1.13",
    }
    assert job["OutputConfig"]["TargetDevice"] == "ml_inf1"
    assert json.loads(job["OutputConfig"]["CompilerOptions"]) == {"dtype": "fp32"}
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 900
    assert job["RoleArn"] == ROLE
    # moto: S3ModelArtifacts is the output prefix and InferenceImage the literal "InferenceImage".
    assert model.model_data == "s3://models/compiled/"
    assert model.image_uri == "InferenceImage"
    assert model.compiled_target == "ml_inf1"


def test_compile_request_is_exactly_the_sagemaker_sdks(stubbed: Stubbed) -> None:
    expected = {
        "CompilationJobName": "j",
        "RoleArn": ROLE,
        "InputConfig": {
            "S3Uri": S3_MODEL,
            "DataInputConfig": '{"input0": [1, 3, 224, 224]}',
            "Framework": "PYTORCH",
            "FrameworkVersion": "2.1",
        },
        "OutputConfig": {
            "S3OutputLocation": "s3://out/",
            "TargetDevice": "ml_inf1",
            "CompilerOptions": "--fast-math",
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    stubbed.sagemaker.add_response("create_compilation_job", {"CompilationJobArn": JOB_ARN}, expected)
    model = Model(model_data=S3_MODEL, role=ROLE, session=stubbed.session)
    model.compile(
        "ml_inf1",
        {"input0": [1, 3, 224, 224]},
        "s3://out/",
        framework_version="2.1.0",
        compiler_options="--fast-math",
        job_name="j",
        compile_max_run=600,
        wait=False,
    )
    assert model.compilation_job_name == "j"
    assert model.model_data == S3_MODEL  # unchanged until the job completes


@pytest.mark.parametrize(
    ("target", "framework", "sends"),
    [
        ("ml_inf1", "pytorch", True),
        ("ml_inf1", "mxnet", True),
        ("ml_inf2", "mxnet", False),
        ("ml_c5", "pytorch", True),
        ("ml_c5", "onnx", False),
        ("jetson_nano", "pytorch", False),
    ],
)
def test_framework_version_rule(stubbed: Stubbed, target: str, framework: str, sends: bool) -> None:
    seen: dict[str, Any] = {}

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.update(params)

    stubbed.session.sagemaker_client.meta.events.register(
        "provide-client-params.sagemaker.CreateCompilationJob", record
    )
    stubbed.sagemaker.add_response("create_compilation_job", {"CompilationJobArn": JOB_ARN})
    Model(model_data=S3_MODEL, role=ROLE, session=stubbed.session).compile(
        target,
        "[[1, 3]]",
        "s3://out/",
        framework=framework,
        framework_version="1.13.1",
        job_name="j",
        wait=False,
    )
    assert ("FrameworkVersion" in seen["InputConfig"]) is sends
    assert seen["InputConfig"]["DataInputConfig"] == "[[1, 3]]"


def test_compile_waits_through_starting_and_inprogress(stubbed: Stubbed) -> None:
    """moto jumps straight to COMPLETED; the real lifecycle is STARTING -> INPROGRESS -> COMPLETED."""
    sm = stubbed.sagemaker
    sm.add_response("create_compilation_job", {"CompilationJobArn": JOB_ARN})
    for status in ("STARTING", "INPROGRESS", "INPROGRESS", "COMPLETED"):
        sm.add_response("describe_compilation_job", _job("j", status), {"CompilationJobName": "j"})
    model = Model(model_data=S3_MODEL, role=ROLE, session=stubbed.session)
    model.compile("ml_inf1", {"input0": [1, 3]}, "s3://out/", job_name="j")
    assert model.model_data == "s3://out/model.tar.gz"
    assert model.image_uri == "123.dkr.ecr.us-east-1.amazonaws.com/neo-inf1:1"


def test_compile_failure_raises_with_failure_reason(stubbed: Stubbed) -> None:
    reason = "ClientError: CompilationError: Unable to compile model for ml_inf1: No operations were partitioned"
    stubbed.sagemaker.add_response("create_compilation_job", {"CompilationJobArn": JOB_ARN})
    stubbed.sagemaker.add_response("describe_compilation_job", _job("j", "FAILED", reason))
    model = Model(model_data=S3_MODEL, role=ROLE, session=stubbed.session)
    with pytest.raises(UnexpectedStatusError) as caught:
        model.compile("ml_inf1", {"input0": [1, 3]}, "s3://out/", job_name="j")
    assert caught.value.status == "FAILED"
    assert caught.value.failure_reason == reason
    assert reason in str(caught.value)
    assert model.model_data == S3_MODEL


def test_stop_compilation_with_stubber(stubbed: Stubbed) -> None:
    """moto does not implement StopCompilationJob."""
    sm = stubbed.sagemaker
    sm.add_response("create_compilation_job", {"CompilationJobArn": JOB_ARN})
    sm.add_response("stop_compilation_job", {}, {"CompilationJobName": "j"})
    sm.add_response("describe_compilation_job", _job("j", "STOPPING"))
    sm.add_response("describe_compilation_job", _job("j", "STOPPED"))
    model = Model(model_data=S3_MODEL, role=ROLE, session=stubbed.session)
    model.compile("ml_inf1", {"input0": [1, 3]}, "s3://out/", job_name="j", wait=False)
    model.stop_compilation()


def test_compile_validation(session: Session, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="framework"):
        Model(model_data=S3_MODEL, session=session).compile("ml_inf1", {}, "s3://o/", framework="jax")
    with pytest.raises(ConfigurationError, match="model_data"):
        Model(session=session).compile("ml_inf1", {}, "s3://o/")
    with pytest.raises(ConfigurationError, match="compile"):
        Model(session=session).wait_for_compilation()
    with pytest.raises(ConfigurationError, match="neither an s3:// URI nor a local path"):
        Model(model_data=tmp_path / "missing.tar.gz", session=session).compile("ml_inf1", {}, "s3://o/")


def test_compile_uploads_local_artifact_and_names_the_job(session: Session, model_tar: Path) -> None:
    model = Model(model_data=model_tar, session=session)
    model.compile("ml_inf1", {"input0": [1, 4]}, "s3://models/out/", wait=False)
    assert model.compilation_job_name is not None
    assert re.fullmatch(rf"pytorch-inference-ml-inf1-{TIMESTAMP}", model.compilation_job_name)
    job = session.sagemaker_client.describe_compilation_job(CompilationJobName=model.compilation_job_name)
    uri = job["InputConfig"]["S3Uri"]
    assert uri == f"s3://sagemaker-{REGION}-{ACCOUNT}/{model.compilation_job_name}/model.tar.gz"
    # No role given: the account's default role name is used.
    assert job["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/NeurondockExecutionRole"


# -- deploy --------------------------------------------------------------------------------------


def test_deploy_under_moto(session: Session, s3_model: str) -> None:
    model = Model(model_data=s3_model, role=ROLE, env={"MY_FLAG": "1"}, session=session)
    predictor = model.deploy(1, "ml.inf1.xlarge", serializer=NumpySerializer())
    assert isinstance(predictor, Predictor) and predictor.session is session
    assert model.name is not None and re.fullmatch(rf"pytorch-inference-{TIMESTAMP}", model.name)
    assert predictor.endpoint_name == model.endpoint_name
    assert re.fullmatch(rf"pytorch-inference-{TIMESTAMP}", predictor.endpoint_name)
    client = session.sagemaker_client
    described = client.describe_model(ModelName=model.name)
    assert described["PrimaryContainer"]["Image"] == default_image_uri(REGION) == IMAGE
    assert described["PrimaryContainer"]["ModelDataUrl"] == s3_model
    assert described["PrimaryContainer"]["Environment"] == {"MY_FLAG": "1"}
    assert described["ExecutionRoleArn"] == ROLE
    # The SageMaker SDK names the endpoint config after the endpoint.
    config = client.describe_endpoint_config(EndpointConfigName=predictor.endpoint_name)
    (variant,) = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        model.name,
        "ml.inf1.xlarge",
        1,
    )
    assert variant["InitialVariantWeight"] == 1
    endpoint = client.describe_endpoint(EndpointName=predictor.endpoint_name)
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == (
        "InService",
        predictor.endpoint_name,
    )


def test_deploy_names_fit_63_characters(session: Session, s3_model: str) -> None:
    model = Model(model_data=s3_model, name="x" * 80, session=session)
    predictor = model.deploy(
        1,
        "ml.c5.xlarge",
        endpoint_name="explicit-ep",
        variant_name="v1",
        tags=[{"Key": "team", "Value": "ml"}],
    )
    assert model.name == "x" * 80  # an explicit name is used as given
    assert predictor.endpoint_name == "explicit-ep"
    from neurondock import name_from_base

    assert len(name_from_base("y" * 100)) == 63


def test_deploy_after_compile_uses_compiled_artifact(
    session: Session, s3_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = Model(model_data=s3_model, role=ROLE, session=session)
    model.compile("ml_inf1", {"input0": [1, 3, 224, 224]}, "s3://models/compiled/", job_name="neo")
    with caplog.at_level(logging.WARNING):
        predictor = model.deploy(1, "ml.inf1.xlarge")
    assert "not compiled" not in caplog.text
    assert model.name is not None and model.name.startswith("InferenceImage-ml-inf1-")
    container = session.sagemaker_client.describe_model(ModelName=model.name)["PrimaryContainer"]
    assert (container["Image"], container["ModelDataUrl"]) == ("InferenceImage", "s3://models/compiled/")
    assert predictor.endpoint_name.startswith("InferenceImage-ml-inf1-")


def test_deploy_uncompiled_to_inferentia_warns(
    session: Session, s3_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        Model(model_data=s3_model, session=session).deploy(1, "ml.inf1.xlarge", wait=False)
    assert "Your model is not compiled" in caplog.text


def test_deploy_repacks_a_local_entry_point(session: Session, s3_model: str, tmp_path: Path) -> None:
    script = tmp_path / "serve.py"
    script.write_text("def model_fn(model_dir):\n    return 'custom'\n")
    model = Model(model_data=s3_model, entry_point=str(script), session=session)
    model.deploy(1, "ml.c5.xlarge")
    assert model.name is not None
    container = session.sagemaker_client.describe_model(ModelName=model.name)["PrimaryContainer"]
    assert container["Environment"] == {
        "SAGEMAKER_PROGRAM": "serve.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": REGION,
    }
    repacked = container["ModelDataUrl"]
    assert repacked == f"s3://sagemaker-{REGION}-{ACCOUNT}/{model.name}/model.tar.gz"
    bucket, key = repacked[5:].split("/", 1)
    members = tar_members(session.s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert set(members) == {"model.pt", "code/inference.py", "code/serve.py"}
    assert members["code/serve.py"].startswith(b"def model_fn")


def test_deploy_packages_and_uploads_a_local_folder(session: Session, tmp_path: Path) -> None:
    folder = tmp_path / "artifact"
    (folder / "code").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "code" / "inference.py").write_text("")
    model = Model(model_data=folder, entry_point="inference.py", session=session)
    model.deploy(1, "ml.c5.xlarge", wait=False)
    assert model.name is not None
    container = session.sagemaker_client.describe_model(ModelName=model.name)["PrimaryContainer"]
    bucket, key = container["ModelDataUrl"][5:].split("/", 1)
    members = tar_members(session.s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert set(members) == {"model.pt", "code/inference.py"}
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"


def test_deploy_with_no_model_data_omits_model_data_url(session: Session) -> None:
    model = Model(image_uri="my/image:1", name="img-only", session=session)
    model.deploy(1, "ml.c5.xlarge", endpoint_name="img-ep")
    assert "ModelDataUrl" not in session.sagemaker_client.describe_model(ModelName="img-only")["PrimaryContainer"]
    model.delete_model()
    assert session.sagemaker_client.list_models()["Models"] == []


def test_deploy_waits_through_creating(stubbed: Stubbed) -> None:
    """moto creates endpoints InService at once; a real server goes through Creating."""
    sm = stubbed.sagemaker
    sm.add_response(
        "create_model",
        {"ModelArn": MODEL_ARN},
        {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "Environment": {}, "ModelDataUrl": S3_MODEL}},
    )
    sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": CONFIG_ARN},
        {
            "EndpointConfigName": "ep",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "m",
                    "InitialInstanceCount": 2,
                    "InstanceType": "ml.inf1.2xlarge",
                    "InitialVariantWeight": 1,
                }
            ],
        },
    )
    sm.add_response(
        "create_endpoint",
        {"EndpointArn": ENDPOINT_ARN},
        {"EndpointName": "ep", "EndpointConfigName": "ep", "Tags": []},
    )
    for status in ("Creating", "Creating", "InService"):
        sm.add_response("describe_endpoint", _endpoint("ep", status, "ep"), {"EndpointName": "ep"})
    Model(model_data=S3_MODEL, name="m", session=stubbed.session).deploy(2, "ml.inf1.2xlarge", endpoint_name="ep")


def test_deploy_failure_raises_with_failure_reason(stubbed: Stubbed) -> None:
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    sm = stubbed.sagemaker
    sm.add_response("create_model", {"ModelArn": MODEL_ARN})
    sm.add_response("create_endpoint_config", {"EndpointConfigArn": CONFIG_ARN})
    sm.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN})
    sm.add_response("describe_endpoint", _endpoint("ep", "Creating", "ep"))
    sm.add_response("describe_endpoint", _endpoint("ep", "Failed", "ep", reason))
    with pytest.raises(UnexpectedStatusError) as caught:
        Model(model_data=S3_MODEL, name="m", session=stubbed.session).deploy(1, "ml.c5.xlarge", endpoint_name="ep")
    assert (caught.value.status, caught.value.failure_reason, caught.value.resource_name) == (
        "Failed",
        reason,
        "ep",
    )


def test_existing_model_is_reused(stubbed: Stubbed) -> None:
    sm = stubbed.sagemaker
    sm.add_client_error(
        "create_model",
        "ValidationException",
        f'Cannot create already existing model "arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/m".',
        400,
    )
    sm.add_response("create_endpoint_config", {"EndpointConfigArn": CONFIG_ARN})
    sm.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN})
    Model(model_data=S3_MODEL, name="m", session=stubbed.session).deploy(
        1, "ml.c5.xlarge", endpoint_name="ep", wait=False
    )


# -- update_endpoint -----------------------------------------------------------------------------


FIXED_TS = "2024-05-01-12-00-00-123"
NEW_CONFIG = f"m2-{FIXED_TS}"


@pytest.fixture
def fixed_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("neurondock._names.sagemaker_timestamp", lambda: FIXED_TS)


def _stub_update_prefix(sm: Any) -> None:
    sm.add_response("create_model", {"ModelArn": MODEL_ARN}, {"ModelName": "m2", "PrimaryContainer": ANY})
    sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": CONFIG_ARN},
        {
            "EndpointConfigName": NEW_CONFIG,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "m2",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.inf1.xlarge",
                    "InitialVariantWeight": 1,
                }
            ],
        },
    )


@pytest.mark.usefixtures("fixed_timestamp")
def test_update_endpoint_with_stubber(stubbed: Stubbed) -> None:
    """moto does not implement UpdateEndpoint. Sequence: CreateModel, CreateEndpointConfig (a new
    timestamped name), DescribeEndpoint (must exist), UpdateEndpoint, then wait through Updating."""
    sm = stubbed.sagemaker
    _stub_update_prefix(sm)
    sm.add_response("describe_endpoint", _endpoint("ep", "InService", "ep"), {"EndpointName": "ep"})
    sm.add_response(
        "update_endpoint",
        {"EndpointArn": ENDPOINT_ARN},
        {"EndpointName": "ep", "EndpointConfigName": NEW_CONFIG},
    )
    sm.add_response("describe_endpoint", _endpoint("ep", "Updating", "ep"))
    sm.add_response("describe_endpoint", _endpoint("ep", "InService", NEW_CONFIG))
    model = Model(model_data=S3_MODEL, name="m2", session=stubbed.session)
    predictor = model.deploy(1, "ml.inf1.xlarge", endpoint_name="ep", update_endpoint=True)
    assert predictor.endpoint_name == "ep"


@pytest.mark.usefixtures("fixed_timestamp")
def test_update_waits_while_the_old_config_still_shows(stubbed: Stubbed) -> None:
    """A server may report the old config InService for a moment after UpdateEndpoint returns."""
    sm = stubbed.sagemaker
    _stub_update_prefix(sm)
    sm.add_response("describe_endpoint", _endpoint("ep", "InService", "ep"))
    sm.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN})
    sm.add_response("describe_endpoint", _endpoint("ep", "InService", "ep"))
    sm.add_response("describe_endpoint", _endpoint("ep", "InService", NEW_CONFIG))
    Model(model_data=S3_MODEL, name="m2", session=stubbed.session).deploy(
        1, "ml.inf1.xlarge", endpoint_name="ep", update_endpoint=True
    )


@pytest.mark.usefixtures("fixed_timestamp")
def test_failed_update_raises_with_failure_reason(stubbed: Stubbed) -> None:
    """A failed update leaves the endpoint InService on the old config with FailureReason set."""
    sm = stubbed.sagemaker
    _stub_update_prefix(sm)
    sm.add_response("describe_endpoint", _endpoint("ep", "InService", "old"))
    sm.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN})
    sm.add_response("describe_endpoint", _endpoint("ep", "Updating", "old"))
    sm.add_response("describe_endpoint", _endpoint("ep", "InService", "old", "new fleet failed its ping check"))
    with pytest.raises(UnexpectedStatusError, match="still serves 'old'") as caught:
        Model(model_data=S3_MODEL, name="m2", session=stubbed.session).deploy(
            1, "ml.inf1.xlarge", endpoint_name="ep", update_endpoint=True
        )
    assert caught.value.failure_reason == "new fleet failed its ping check"
    assert caught.value.status == "InService"


@pytest.mark.usefixtures("fixed_timestamp")
def test_update_of_missing_endpoint_is_a_configuration_error(stubbed: Stubbed) -> None:
    sm = stubbed.sagemaker
    _stub_update_prefix(sm)
    sm.add_client_error(
        "describe_endpoint", "ValidationException", 'Could not find endpoint "arn:...:endpoint/ep".', 400
    )
    with pytest.raises(ConfigurationError, match="does not exist"):
        Model(model_data=S3_MODEL, name="m2", session=stubbed.session).deploy(
            1, "ml.inf1.xlarge", endpoint_name="ep", update_endpoint=True
        )


def test_update_needs_an_endpoint_name(session: Session) -> None:
    with pytest.raises(ConfigurationError, match="endpoint_name"):
        Model(model_data=S3_MODEL, session=session).deploy(1, "ml.c5.xlarge", update_endpoint=True)


def test_session_is_created_lazily(tmp_path: Path) -> None:
    model = Model(model_data=make_model_tar(tmp_path / "m.tar.gz"))
    assert model._session is None
    assert "m.tar.gz" in repr(model)
    assert BUCKET == "models"
