"""CreateEndpointConfig with AsyncInferenceConfig: stored, echoed, and checked as AWS checks it."""

from __future__ import annotations

import pytest
from tests.integration.control_plane.cp_helpers import ACCOUNT, variant

ASYNC = {
    "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
    "OutputConfig": {
        "S3OutputPath": "s3://results/async-out",
        "S3FailurePath": "s3://results/async-failed",
        "NotificationConfig": {
            "SuccessTopic": f"arn:aws:sns:us-east-1:{ACCOUNT}:ok",
            "ErrorTopic": f"arn:aws:sns:us-east-1:{ACCOUNT}:error",
            "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
        },
    },
}


@pytest.fixture(autouse=True)
def _model(make_model):
    make_model("m1")


def _create(sagemaker, config):
    return sagemaker(
        "CreateEndpointConfig",
        {"EndpointConfigName": "async-cfg", "ProductionVariants": [variant()], "AsyncInferenceConfig": config},
    )


def test_async_config_is_stored_and_described_as_given(sagemaker, ok):
    status, body = _create(sagemaker, ASYNC)
    assert status == 200, body
    described = ok("DescribeEndpointConfig", {"EndpointConfigName": "async-cfg"})
    assert described["AsyncInferenceConfig"] == ASYNC


@pytest.mark.parametrize(
    ("config", "status", "code", "words"),
    [
        ({"OutputConfig": {"S3OutputPath": "s3://r/o", "KmsKeyId": "key-1"}}, 501, "NotImplemented", "KmsKeyId"),
        ({"OutputConfig": {"S3FailurePath": "s3://r/f"}}, 400, "ValidationException", "s3OutputPath"),
        ({"OutputConfig": {"S3OutputPath": "https://r/o"}}, 400, "ValidationException", "s3://bucket/prefix"),
        (
            {
                "OutputConfig": {
                    "S3OutputPath": "s3://r/o",
                    "NotificationConfig": {"IncludeInferenceResponseIn": ["ERROR_NOTIFICATION_TOPIC"]},
                }
            },
            400,
            "ValidationException",
            "ErrorTopic",
        ),
        (
            {"ClientConfig": {"MaxConcurrentInvocationsPerInstance": 0}, "OutputConfig": {"S3OutputPath": "s3://r/o"}},
            400,
            "ValidationException",
            "greater than or equal to 1",
        ),
    ],
)
def test_bad_async_configs_are_refused_and_nothing_is_stored(sagemaker, config, status, code, words):
    got, body = _create(sagemaker, config)
    assert (got, body["__type"]) == (status, code), body
    assert words in body["message"]
    got, body = sagemaker("DescribeEndpointConfig", {"EndpointConfigName": "async-cfg"})
    assert got == 400 and body["message"].startswith("Could not find endpoint configuration")
