"""CreateCompilationJob … DeleteCompilationJob through the Flask test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from tests.integration.compilation.compilation_helpers import (
    ACCOUNT,
    CPU_IMAGE,
    NEURON_IMAGE,
    OUTPUT,
    ROLE,
    job_arn,
    job_request,
    with_input,
    with_output,
)

COMPILE = "neurondock.compile_model"
DESCRIBE_KEYS = {
    "CompilationJobName",
    "CompilationJobArn",
    "CompilationJobStatus",
    "StoppingCondition",
    "CreationTime",
    "LastModifiedTime",
    "FailureReason",
    "ModelArtifacts",
    "RoleArn",
    "InputConfig",
    "OutputConfig",
    "DerivedInformation",
}


@pytest.fixture
def other_account(session_factory) -> dict[str, str]:
    """Signing keyword arguments for a second account."""
    from neurondock_platform.db import session_scope
    from neurondock_platform.services.accounts import create_account

    with session_scope(session_factory) as session:
        _, key = create_account(session, "other")
        return {"access_key": key.access_key_id, "secret_key": key.secret_access_key}


def _set_job(session_factory, name: str, **values) -> None:
    from sqlalchemy import update

    from neurondock_platform.db import session_scope
    from neurondock_platform.models import CompilationJob

    with session_scope(session_factory) as session:
        session.execute(update(CompilationJob).where(CompilationJob.name == name).values(**values))


def _claim(session_factory, job_id: int, owner: str = "host-test/1/t") -> None:
    from neurondock_platform.db import session_scope
    from neurondock_platform.services import compilation_jobs

    with session_scope(session_factory) as session:
        claim = compilation_jobs.claim_job(
            session, job_id, owner, lease_timeout=15, owner_state=lambda _owner: "unknown"
        )
    assert claim.outcome == "run"


# --- create and describe -----------------------------------------------------------------------------


def test_create_describes_a_starting_job_and_enqueues_it_after_commit(ok, dispatcher, job_id_of):
    before = time.time()
    arn = ok("CreateCompilationJob", job_request("Resnet-Neo"))["CompilationJobArn"]
    assert arn == job_arn("Resnet-Neo")
    assert dispatcher.sent == [(COMPILE, (job_id_of("Resnet-Neo"),))]

    desc = ok("DescribeCompilationJob", {"CompilationJobName": "Resnet-Neo"})
    assert set(desc) == DESCRIBE_KEYS
    assert desc["CompilationJobName"] == "Resnet-Neo"
    assert desc["CompilationJobArn"] == arn
    assert desc["CompilationJobStatus"] == "STARTING"
    assert desc["FailureReason"] == ""
    # The object the artifact will be: Neo's "<input stem>-<target>.tar.gz" under S3OutputLocation.
    assert desc["ModelArtifacts"] == {"S3ModelArtifacts": f"{OUTPUT}/model-ml_inf1.tar.gz"}
    assert desc["RoleArn"] == ROLE
    assert desc["InputConfig"] == job_request()["InputConfig"]
    assert desc["OutputConfig"] == job_request()["OutputConfig"]
    assert desc["StoppingCondition"] == {"MaxRuntimeInSeconds": 900}
    assert json.loads(desc["DerivedInformation"]["DerivedDataInputConfig"]) == {"input0": [1, 3, 32, 32]}
    assert before - 1 <= desc["CreationTime"] <= time.time() + 1
    assert desc["LastModifiedTime"] >= desc["CreationTime"]


def test_the_list_form_of_data_input_config_and_an_output_prefix_with_slash(ok):
    request = with_input(job_request("list-form"), DataInputConfig="[[1,3,224,224],[1,10]]", S3Uri="s3://b/in/net.pth")
    request = with_output(request, S3OutputLocation="s3://out-bucket/a/b/")
    ok("CreateCompilationJob", request)
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "list-form"})
    assert json.loads(desc["DerivedInformation"]["DerivedDataInputConfig"]) == {
        "input0": [1, 3, 224, 224],
        "input1": [1, 10],
    }
    assert desc["ModelArtifacts"]["S3ModelArtifacts"] == "s3://out-bucket/a/b/net-ml_inf1.tar.gz"


def test_a_refused_create_enqueues_nothing_and_stores_nothing(ok, fails, dispatcher):
    fails("CreateCompilationJob", with_output(job_request(), TargetDevice="ml_g4dn"))
    assert dispatcher.sent == []
    assert ok("ListCompilationJobs")["CompilationJobSummaries"] == []


def test_a_duplicate_name_is_resource_in_use_whatever_its_case(ok, fails, dispatcher):
    ok("CreateCompilationJob", job_request("dup"))
    message = fails("CreateCompilationJob", job_request("dup"), code="ResourceInUse")
    assert message == "Resource Already Exists: Compilation job with name dup already exists. Choose a different name."
    fails("CreateCompilationJob", job_request("DUP"), code="ResourceInUse")
    assert len(dispatcher.sent) == 1


def test_a_missing_job_is_resource_not_found(fails):
    for operation in ("DescribeCompilationJob", "StopCompilationJob", "DeleteCompilationJob"):
        message = fails(operation, {"CompilationJobName": "nope"}, code="ResourceNotFound")
        assert message == "Could not find compilation job 'nope'.", operation


# --- what neurondock compiles --------------------------------------------------------------------------


def test_only_ml_inf1_and_ml_c5_are_supported_targets(fails, dispatcher):
    for target in ("ml_g4dn", "ml_inf2", "jetson_nano"):
        message = fails("CreateCompilationJob", with_output(job_request(), TargetDevice=target))
        assert f"Value '{target}' at 'outputConfig.targetDevice'" in message
        assert "supported target devices: [ml_inf1, ml_c5]" in message
    message = fails("CreateCompilationJob", with_output(job_request(), TargetDevice="ml_tpu"))
    assert "Member must satisfy enum value set" in message
    request = with_output(job_request(), TargetDevice=None, TargetPlatform={"Os": "LINUX", "Arch": "X86_64"})
    message = fails("CreateCompilationJob", request)
    assert "outputConfig.targetPlatform" in message and "[ml_inf1, ml_c5]" in message
    assert dispatcher.sent == []


def test_only_pytorch_is_compiled(fails):
    for framework in ("TENSORFLOW", "ONNX", "MXNET"):
        message = fails("CreateCompilationJob", with_input(job_request(), Framework=framework))
        assert "neurondock compiles PyTorch models only" in message
        assert f"Value '{framework}' at 'inputConfig.framework'" in message


BAD_DATA_INPUT_CONFIGS = [
    ("{input0: [1,3]}", "DataInputConfig is not valid JSON"),
    ("{}", "DataInputConfig must name at least one input shape"),
    ("[]", "DataInputConfig must name at least one input shape"),
    ('{"input0": [1, -3]}', "every dimension must be a positive integer"),
    ('{"input0": [1, 3.5]}', "every dimension must be a positive integer"),
    ('{"input0": "1,3"}', "the shape must be a non-empty list of integers"),
    ('{"ids": {"shape": [1, 8], "dtype": "complex64"}}', "dtype 'complex64' is not one of"),
    ("[[1,1,1,1,1,1,1,1,1]]", "at most 8 dimensions"),
    ('"x"', "DataInputConfig must name at least one input shape"),
]


def test_data_input_config_is_validated_up_front(fails, dispatcher):
    for config, reason in BAD_DATA_INPUT_CONFIGS:
        message = fails("CreateCompilationJob", with_input(job_request(), DataInputConfig=config))
        assert "'inputConfig.dataInputConfig'" in message, config
        assert reason in message, (config, message)
    assert dispatcher.sent == []


def test_data_input_config_is_required_for_pytorch(fails):
    message = fails("CreateCompilationJob", with_input(job_request(), DataInputConfig=None))
    assert "Value null at 'inputConfig.dataInputConfig'" in message


def test_the_dtype_extension_is_accepted(ok):
    config = '{"ids": {"shape": [1, 32], "dtype": "int64"}}'
    ok("CreateCompilationJob", with_input(job_request("ids"), DataInputConfig=config))
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "ids"})
    assert json.loads(desc["DerivedInformation"]["DerivedDataInputConfig"]) == {
        "ids": {"shape": [1, 32], "dtype": "int64"}
    }


GOOD_COMPILER_OPTIONS = [
    '"--verbose 1 --num-neuroncores 2 -O2"',  # the SageMaker API documentation's own example
    "--fast-math none",
    '["--fp32-cast", "matmult-bf16", "--dynamic-batch-size"]',
    '{"--fast-math": "fp32-cast-matmult no-fast-relayout", "--neuroncore-pipeline-cores": 4}',
    '{"dynamic_batch_size": true, "O": 3}',
    "--enable-saturate-infinity",
]
BAD_COMPILER_OPTIONS = [
    ("--frobnicate", "unknown flag '--frobnicate'. Supported: --fast-math"),
    ('"--fast-math turbo"', "--fast-math value 'turbo' is not one of all, none"),
    ("--neuroncore-pipeline-cores 65", "--neuroncore-pipeline-cores takes an integer from 1 to 64, got '65'"),
    ("-O7", "-O takes an integer from 1 to 3, got '7'"),
    ("--fp32-cast everything", "--fp32-cast takes one of all, matmult"),
    ("123", "expected a JSON string, list or object, got int"),
    ("--dynamic-batch-size maybe", "--dynamic-batch-size takes true or false, got 'maybe'"),
    ("fast-math", "unexpected value 'fast-math' (every setting starts with a flag)"),
]


def test_compiler_options_that_neuron_takes_are_accepted(ok):
    for index, options in enumerate(GOOD_COMPILER_OPTIONS):
        ok("CreateCompilationJob", with_output(job_request(f"opts{index}"), CompilerOptions=options))


def test_unknown_or_bad_compiler_options_are_refused_with_the_reason(fails, dispatcher):
    for options, reason in BAD_COMPILER_OPTIONS:
        message = fails("CreateCompilationJob", with_output(job_request(), CompilerOptions=options))
        assert "'outputConfig.compilerOptions'" in message, options
        assert reason in message, (options, message)
    assert dispatcher.sent == []


def test_the_model_must_be_an_s3_object(fails):
    for uri in ("https://example.com/model.tar.gz", "s3://bucket-only/"):
        message = fails("CreateCompilationJob", with_input(job_request(), S3Uri=uri))
        assert "'inputConfig.s3Uri'" in message and "s3://<bucket>/<key>" in message, uri


def test_the_output_location_must_be_an_s3_uri(fails):
    message = fails("CreateCompilationJob", with_output(job_request(), S3OutputLocation="https://example.com/out"))
    assert "'outputConfig.s3OutputLocation'" in message


def test_model_package_versions_and_a_missing_input_config_are_refused(fails):
    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/pkg/1"
    request = job_request()
    request.pop("InputConfig")
    message = fails("CreateCompilationJob", request)
    assert "Value null at 'inputConfig'" in message
    message = fails("CreateCompilationJob", {**request, "ModelPackageVersionArn": package})
    assert "ModelPackageVersionArn is not supported" in message


def test_every_violation_is_reported_at_once(fails):
    request = with_output(with_input(job_request(), Framework="ONNX"), TargetDevice="ml_p3", CompilerOptions="--x")
    message = fails("CreateCompilationJob", request)
    assert message.startswith("3 validation errors detected: ")


def test_botocore_shape_rules_apply(fails):
    for overrides, fragment in (
        ({"CompilationJobName": "bad_name!"}, "at 'compilationJobName' failed to satisfy constraint"),
        ({"StoppingCondition": {"MaxRuntimeInSeconds": 0}}, "'stoppingCondition.maxRuntimeInSeconds'"),
        ({"RoleArn": "not-a-role"}, "at 'roleArn'"),
    ):
        assert fragment in fails("CreateCompilationJob", job_request(**overrides)), overrides


def test_max_runtime_defaults_to_900_seconds_when_not_given(ok, session_factory):
    from sqlalchemy import select

    from neurondock_platform.models import CompilationJob

    ok("CreateCompilationJob", job_request("no-limit", StoppingCondition={}))
    with session_factory() as session:
        job = session.scalar(select(CompilationJob).where(CompilationJob.name == "no-limit"))
        assert job is not None and job.max_runtime_seconds == 900
    assert ok("DescribeCompilationJob", {"CompilationJobName": "no-limit"})["StoppingCondition"] == {}


# --- stop and delete -----------------------------------------------------------------------------------


def test_stop_moves_a_running_job_to_stopping_and_repeating_it_is_harmless(ok, session_factory, job_id_of):
    ok("CreateCompilationJob", job_request("stop-me"))
    created = ok("DescribeCompilationJob", {"CompilationJobName": "stop-me"})
    _claim(session_factory, job_id_of("stop-me"))
    assert ok("DescribeCompilationJob", {"CompilationJobName": "stop-me"})["CompilationJobStatus"] == "INPROGRESS"
    assert ok("StopCompilationJob", {"CompilationJobName": "stop-me"}) == {}
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "stop-me"})
    assert desc["CompilationJobStatus"] == "STOPPING"
    assert desc["LastModifiedTime"] >= created["LastModifiedTime"]
    ok("StopCompilationJob", {"CompilationJobName": "stop-me"})
    assert ok("DescribeCompilationJob", {"CompilationJobName": "stop-me"})["CompilationJobStatus"] == "STOPPING"


def test_stop_of_a_finished_job_changes_nothing(ok, session_factory):
    ok("CreateCompilationJob", job_request("done"))
    _set_job(session_factory, "done", status="FAILED", failure_reason="ClientError: x")
    ok("StopCompilationJob", {"CompilationJobName": "done"})
    assert ok("DescribeCompilationJob", {"CompilationJobName": "done"})["CompilationJobStatus"] == "FAILED"


def test_an_unfinished_job_cannot_be_deleted(ok, fails, session_factory):
    ok("CreateCompilationJob", job_request("busy"))
    for status in ("STARTING", "INPROGRESS", "STOPPING"):
        _set_job(session_factory, "busy", status=status)
        message = fails("DeleteCompilationJob", {"CompilationJobName": "busy"})
        assert f"while its status is {status}" in message and "StopCompilationJob" in message


def test_a_finished_job_is_deleted_with_its_tags(ok, fails, session_factory):
    tags = [{"Key": "team", "Value": "ml"}]
    for status in ("COMPLETED", "FAILED", "STOPPED"):
        arn = ok("CreateCompilationJob", job_request("gone", Tags=tags))["CompilationJobArn"]
        assert ok("ListTags", {"ResourceArn": arn})["Tags"] == tags
        _set_job(session_factory, "gone", status=status)
        assert ok("DeleteCompilationJob", {"CompilationJobName": "gone"}) == {}
        fails("DescribeCompilationJob", {"CompilationJobName": "gone"}, code="ResourceNotFound")
        fails("ListTags", {"ResourceArn": arn})
    # The name is free again, without the old tags.
    arn = ok("CreateCompilationJob", job_request("gone"))["CompilationJobArn"]
    assert ok("ListTags", {"ResourceArn": arn})["Tags"] == []


def test_tags_address_a_job_by_its_arn(ok):
    arn = ok("CreateCompilationJob", job_request("tagged"))["CompilationJobArn"]
    ok("AddTags", {"ResourceArn": arn, "Tags": [{"Key": "k", "Value": "v"}]})
    assert ok("ListTags", {"ResourceArn": arn})["Tags"] == [{"Key": "k", "Value": "v"}]


# --- the outcome fields --------------------------------------------------------------------------------


def test_a_completed_job_has_image_digest_and_times(ok, session_factory, job_id_of):
    from neurondock_platform.db import session_scope
    from neurondock_platform.services import compilation_jobs

    ok("CreateCompilationJob", job_request("done-inf1"))
    ok("CreateCompilationJob", with_output(job_request("done-c5"), TargetDevice="ml_c5"))
    for name in ("done-inf1", "done-c5"):
        _claim(session_factory, job_id_of(name), owner=f"host-test/1/{name}")
        with session_scope(session_factory) as session:
            status = compilation_jobs.finish_completed(
                session, job_id_of(name), f"host-test/1/{name}", artifact_sha256="ab" * 32, report={}, extra={}
            )
        assert status == "COMPLETED"
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "done-inf1"})
    assert set(desc) == DESCRIBE_KEYS | {"CompilationStartTime", "CompilationEndTime", "InferenceImage", "ModelDigests"}
    assert desc["CompilationJobStatus"] == "COMPLETED"
    assert desc["FailureReason"] == ""
    assert desc["InferenceImage"] == NEURON_IMAGE
    assert desc["ModelDigests"] == {"ArtifactDigest": "sha256:" + "ab" * 32}
    assert desc["CreationTime"] <= desc["CompilationStartTime"] <= desc["CompilationEndTime"]
    c5 = ok("DescribeCompilationJob", {"CompilationJobName": "done-c5"})
    assert c5["InferenceImage"] == CPU_IMAGE
    assert c5["ModelArtifacts"]["S3ModelArtifacts"] == f"{OUTPUT}/model-ml_c5.tar.gz"


def test_a_failed_job_has_its_reason_and_log_tail(ok, session_factory, job_id_of):
    from neurondock_platform.db import session_scope
    from neurondock_platform.services import compilation_jobs

    ok("CreateCompilationJob", job_request("broken"))
    _claim(session_factory, job_id_of("broken"))
    reason = "ClientError: InputConfiguration: Exactly one .pt or .pth file is allowed for PyTorch model."
    with session_scope(session_factory) as session:
        compilation_jobs.finish_failed(
            session, job_id_of("broken"), "host-test/1/t", reason=reason, log_tail="line 1\nline 2"
        )
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "broken"})
    assert desc["CompilationJobStatus"] == "FAILED"
    assert desc["FailureReason"] == reason
    assert desc["LogTail"] == "line 1\nline 2"
    assert "InferenceImage" not in desc and "ModelDigests" not in desc
    assert "CompilationEndTime" in desc


# --- listing -------------------------------------------------------------------------------------------


@pytest.fixture
def three_jobs(ok, session_factory) -> list[str]:
    names = ["bert-b", "resnet-a", "bert-c"]
    for name in names:
        ok("CreateCompilationJob", job_request(name))
        time.sleep(0.01)
    _set_job(session_factory, "resnet-a", status="COMPLETED")
    return names


def test_list_summaries_default_to_creation_time_ascending(ok, three_jobs):
    summaries = ok("ListCompilationJobs")["CompilationJobSummaries"]
    assert [s["CompilationJobName"] for s in summaries] == three_jobs
    first = summaries[0]
    assert set(first) == {
        "CompilationJobName",
        "CompilationJobArn",
        "CreationTime",
        "CompilationTargetDevice",
        "LastModifiedTime",
        "CompilationJobStatus",
    }
    assert first["CompilationJobArn"] == job_arn("bert-b")
    assert first["CompilationTargetDevice"] == "ml_inf1"
    assert first["CompilationJobStatus"] == "STARTING"


def test_list_sorts_filters_and_pages(ok, three_jobs):
    def names(**params) -> list[str]:
        return [s["CompilationJobName"] for s in ok("ListCompilationJobs", params)["CompilationJobSummaries"]]

    assert names(SortOrder="Descending") == list(reversed(three_jobs))
    assert names(SortBy="Name") == ["bert-b", "bert-c", "resnet-a"]
    assert names(SortBy="Status", SortOrder="Descending")[-1] == "resnet-a"
    assert names(NameContains="BERT") == ["bert-b", "bert-c"]
    assert names(StatusEquals="COMPLETED") == ["resnet-a"]
    first = ok("ListCompilationJobs", {"MaxResults": 2})
    assert len(first["CompilationJobSummaries"]) == 2
    rest = ok("ListCompilationJobs", {"MaxResults": 2, "NextToken": first["NextToken"]})
    assert [s["CompilationJobName"] for s in rest["CompilationJobSummaries"]] == ["bert-c"]
    assert "NextToken" not in rest
    created = ok("ListCompilationJobs")["CompilationJobSummaries"][1]["CreationTime"]
    assert names(CreationTimeAfter=created) == ["bert-c"]
    assert names(CreationTimeBefore=created) == ["bert-b"]
    assert names(LastModifiedTimeAfter=time.time() + 60) == []


def test_a_token_from_another_query_is_refused(ok, fails, three_jobs):
    token = ok("ListCompilationJobs", {"MaxResults": 1})["NextToken"]
    assert "Invalid pagination token" in fails(
        "ListCompilationJobs", {"MaxResults": 1, "NextToken": token, "SortBy": "Name"}
    )


# --- accounts ------------------------------------------------------------------------------------------


def test_every_operation_stays_inside_the_callers_account(ok, fails, sagemaker, other_account, dispatcher):
    ok("CreateCompilationJob", job_request("mine"))
    for operation in ("DescribeCompilationJob", "StopCompilationJob", "DeleteCompilationJob"):
        status, body = sagemaker(operation, {"CompilationJobName": "mine"}, **other_account)
        assert (status, body["__type"]) == (400, "ResourceNotFound"), operation
    status, body = sagemaker("ListCompilationJobs", {}, **other_account)
    assert status == 200 and body["CompilationJobSummaries"] == []
    # The same name is free in another account, with that account's ARN.
    status, body = sagemaker("CreateCompilationJob", job_request("mine"), **other_account)
    assert status == 200 and ACCOUNT not in body["CompilationJobArn"]
    assert ok("DescribeCompilationJob", {"CompilationJobName": "mine"})["CompilationJobStatus"] == "STARTING"
    assert len(dispatcher.sent) == 2
