"""Typed errors: botocore ClientErrors keep their AWS code and gain a class per meaning."""

from __future__ import annotations

import pickle

import pytest
from botocore.exceptions import ClientError

from neurondock import errors
from neurondock.session import Session


def _client_error(code: str, message: str, status: int = 400, **extra: object) -> ClientError:
    response: dict[str, object] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    response.update(extra)
    return ClientError(response, "Op")


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        (
            "ValidationException",
            'Could not find endpoint "arn:aws:sagemaker:...:endpoint/x".',
            400,
            errors.ResourceNotFound,
        ),
        ("ValidationError", "Endpoint x of account 123456789012 not found.", 400, errors.ResourceNotFound),
        ("ResourceNotFound", "Could not find compilation job 'j'.", 400, errors.ResourceNotFound),
        (
            "ValidationException",
            "Value 'ml.x' at 'instanceType' failed to satisfy constraint",
            400,
            errors.ValidationError,
        ),
        ("ResourceInUse", "exists", 400, errors.ResourceInUse),
        ("ResourceLimitExceeded", "quota", 400, errors.ResourceLimitExceeded),
        ("ThrottlingException", "slow down", 400, errors.ThrottlingError),
        ("InternalFailure", "boom", 500, errors.ServiceError),
        ("SomethingNew", "?", 503, errors.ServiceError),
        ("SomethingNew", "?", 400, errors.AwsError),
    ],
)
def test_from_client_error_picks_class_and_keeps_code(code, message, status, expected) -> None:
    error = errors.from_client_error(_client_error(code, message, status))
    assert type(error) is expected
    assert isinstance(error, ClientError)
    assert isinstance(error, errors.SdkError)
    assert (error.code, error.message, error.status_code) == (code, message, status)
    assert error.response["Error"]["Code"] == code


def test_model_error_exposes_original_fields() -> None:
    error = errors.from_client_error(
        _client_error(
            "ModelError",
            "Received client error (400) from primary",
            424,
            OriginalStatusCode=400,
            OriginalMessage="bad input",
            LogStreamArn="arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/ep",
        )
    )
    assert isinstance(error, errors.ModelError)
    assert error.original_status_code == 400
    assert error.original_message == "bad input"
    assert error.log_stream_arn is not None and error.log_stream_arn.endswith("/Endpoints/ep")


def test_errors_pickle_as_their_own_class() -> None:
    error = errors.from_client_error(_client_error("ValidationException", "Could not find model 'm'."))
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is errors.ResourceNotFound and again.code == "ValidationException"
    failed = errors.UnexpectedStatusError(
        "x", resource_name="ep", status="Failed", failure_reason="ping", log_lines=["a", "b"]
    )
    again_failed = pickle.loads(pickle.dumps(failed))
    assert (again_failed.failure_reason, again_failed.log_lines, again_failed.status) == (
        "ping",
        ["a", "b"],
        "Failed",
    )
    timeout = pickle.loads(pickle.dumps(errors.WaitTimeoutError("t", resource_name="j", status="STARTING", timeout=2)))
    assert isinstance(timeout, errors.WaitTimeoutError) and isinstance(timeout, TimeoutError)
    assert timeout.timeout == 2


def test_hierarchy_is_drawn_in_the_module_docstring() -> None:
    public = [name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)]
    for name in public:
        if name != "ClientError":
            assert name in (errors.__doc__ or ""), name


def test_real_not_found_from_moto_is_resource_not_found(session: Session) -> None:
    """moto answers a missing endpoint with ValidationException "Could not find endpoint ..."."""
    with pytest.raises(errors.ResourceNotFound) as caught, errors.translate_client_errors():
        session.sagemaker_client.describe_endpoint(EndpointName="nope")
    assert caught.value.code == "ValidationException"
    with pytest.raises(errors.ResourceNotFound) as job, errors.translate_client_errors():
        session.sagemaker_client.describe_compilation_job(CompilationJobName="nope")
    assert job.value.code == "ResourceNotFound"
