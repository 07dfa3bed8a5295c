"""CreateEndpointConfig / DescribeEndpointConfig / DeleteEndpointConfig / ListEndpointConfigs."""

from __future__ import annotations

import re

import pytest
from tests.integration.control_plane.cp_helpers import ACCOUNT, arn, variant

from neurondock_platform import catalog

PV = "productionVariants.1.member"


@pytest.fixture(autouse=True)
def _model(make_model):
    make_model("m1")


def test_create_and_describe_config_exact_shape(ok):
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 50,
        "DestinationS3Uri": "s3://b/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}],
    }
    out = ok(
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "cfg-1",
            "ProductionVariants": [variant(VolumeSizeInGB=30)],
            "DataCaptureConfig": capture,
            "KmsKeyId": "key-1",
            "Tags": [{"Key": "k", "Value": "v"}],
        },
    )
    assert out == {"EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/cfg-1"}
    described = ok("DescribeEndpointConfig", {"EndpointConfigName": "cfg-1"})
    assert set(described) == {
        "EndpointConfigName",
        "EndpointConfigArn",
        "ProductionVariants",
        "DataCaptureConfig",
        "KmsKeyId",
        "CreationTime",
    }
    assert described["EndpointConfigArn"] == out["EndpointConfigArn"]
    assert described["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": "m1",
            "InstanceType": "ml.inf1.xlarge",
            "InitialInstanceCount": 1,
            "VolumeSizeInGB": 30,
            "InitialVariantWeight": 1.0,
        }
    ]
    assert described["DataCaptureConfig"] == capture
    assert described["KmsKeyId"] == "key-1"
    assert isinstance(described["CreationTime"], float)


def test_weights_are_echoed_as_given(ok, make_model):
    make_model("m2")
    ok(
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "ab",
            "ProductionVariants": [
                variant(name="a", InitialVariantWeight=3),
                variant(model="m2", name="b", InitialVariantWeight=0.5, InstanceType="ml.c5.xlarge"),
            ],
        },
    )
    variants = ok("DescribeEndpointConfig", {"EndpointConfigName": "ab"})["ProductionVariants"]
    assert [(v["VariantName"], v["InitialVariantWeight"], v["ModelName"]) for v in variants] == [
        ("a", 3.0, "m1"),
        ("b", 0.5, "m2"),
    ]


def test_variant_naming_a_missing_model_is_rejected_verbatim(fails):
    message = fails("CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": [variant(model="ghost")]})
    assert message == f'Could not find model "{arn("model", "ghost")}".'


def test_duplicate_and_missing_config_messages(make_config, fails):
    make_config("c1")
    assert fails("CreateEndpointConfig", {"EndpointConfigName": "c1", "ProductionVariants": [variant()]}) == (
        f'Cannot create already existing endpoint configuration "{arn("endpoint-config", "c1")}".'
    )
    expected = f'Could not find endpoint configuration "{arn("endpoint-config", "nope")}".'
    assert fails("DescribeEndpointConfig", {"EndpointConfigName": "nope"}) == expected
    assert fails("DeleteEndpointConfig", {"EndpointConfigName": "nope"}) == expected


def test_delete_config_even_while_an_endpoint_uses_it(make_config, ok, fails):
    make_config("c1")
    ok("CreateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c1"})
    assert ok("DeleteEndpointConfig", {"EndpointConfigName": "c1"}) == {}
    assert fails("DescribeEndpointConfig", {"EndpointConfigName": "c1"}).startswith("Could not find")
    assert ok("DescribeEndpoint", {"EndpointName": "e1"})["EndpointConfigName"] == "c1"


def test_every_supported_instance_type_is_accepted(ok):
    for index, instance_type in enumerate(catalog.SUPPORTED_INSTANCE_TYPES):
        ok(
            "CreateEndpointConfig",
            {"EndpointConfigName": f"c{index}", "ProductionVariants": [variant(InstanceType=instance_type)]},
        )


UNSUPPORTED_TYPES = [
    "ml.g5.xlarge",
    "ml.inf2.xlarge",
    "ml.trn1.2xlarge",
    "ml.t2.medium",
]


def test_valid_but_unsupported_instance_type_lists_what_neurondock_runs(fails):
    for instance_type in UNSUPPORTED_TYPES:
        message = fails(
            "CreateEndpointConfig",
            {"EndpointConfigName": "c", "ProductionVariants": [variant(InstanceType=instance_type)]},
        )
        assert message == (
            f"1 validation error detected: Value '{instance_type}' at '{PV}.instanceType' failed to satisfy "
            "constraint: Instance type is not supported by neurondock; supported: ["
            + ", ".join(catalog.SUPPORTED_INSTANCE_TYPES)
            + "]"
        )


def test_invalid_instance_type_gets_aws_enum_message(fails):
    message = fails(
        "CreateEndpointConfig",
        {"EndpointConfigName": "c", "ProductionVariants": [variant(InstanceType="ml.bogus.xlarge")]},
    )
    assert message == (
        f"1 validation error detected: Value 'ml.bogus.xlarge' at '{PV}.instanceType' failed to satisfy "
        "constraint: Member must satisfy enum value set: [" + ", ".join(catalog.all_instance_types()) + "]"
    )


NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"


INVALID_CONFIGS = [
    (
        {"EndpointConfigName": "c"},
        "Value null at 'productionVariants' failed to satisfy constraint: Member must not be null",
    ),
    (
        {"ProductionVariants": [variant()]},
        "Value null at 'endpointConfigName' failed to satisfy constraint: Member must not be null",
    ),
    (
        {"EndpointConfigName": "c_1", "ProductionVariants": [variant()]},
        "Value 'c_1' at 'endpointConfigName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {NAME_PATTERN}",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": []},
        "Value '[]' at 'productionVariants' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(name=f"v{i}") for i in range(11)]},
        "at 'productionVariants' failed to satisfy constraint: Member must have length less than or equal to 10",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(InitialInstanceCount=0)]},
        f"Value '0' at '{PV}.initialInstanceCount' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(InitialVariantWeight=-0.5)]},
        f"Value '-0.5' at '{PV}.initialVariantWeight' failed to satisfy constraint: "
        "Member must have value greater than or equal to 0",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(VolumeSizeInGB=513)]},
        f"Value '513' at '{PV}.volumeSizeInGB' failed to satisfy constraint: "
        "Member must have value less than or equal to 512",
    ),
    (
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [variant(ModelDataDownloadTimeoutInSeconds=59)],
        },
        f"at '{PV}.modelDataDownloadTimeoutInSeconds' failed to satisfy constraint: "
        "Member must have value greater than or equal to 60",
    ),
    (
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [variant(ContainerStartupHealthCheckTimeoutInSeconds=3601)],
        },
        "Member must have value less than or equal to 3600",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(name="bad name")]},
        f"Value 'bad name' at '{PV}.variantName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {NAME_PATTERN}",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(InitialInstanceCount="1")]},
        f"Value '1' at '{PV}.initialInstanceCount' failed to satisfy constraint: Member must be of type integer",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(InitialVariantWeight=True)]},
        f"Value 'true' at '{PV}.initialVariantWeight' failed to satisfy constraint: Member must be of type number",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(), variant()]},
        "Value 'AllTraffic' at 'productionVariants.2.member.variantName' failed to satisfy constraint: "
        "VariantName values must be unique",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "v", "ModelName": "m1"}]},
        f"Value null at '{PV}.instanceType' failed to satisfy constraint: Member must not be null",
    ),
    (
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [{"VariantName": "v", "InstanceType": "ml.c5.large"}],
        },
        f"Value null at '{PV}.modelName' failed to satisfy constraint: Member must not be null",
    ),
    (
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [
                {
                    "VariantName": "v",
                    "ModelName": "m1",
                    "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1},
                }
            ],
        },
        "Serverless is not supported by neurondock",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(AcceleratorType="ml.eia2.medium")]},
        "Elastic Inference is not supported by neurondock",
    ),
    (
        {"EndpointConfigName": "c", "ProductionVariants": [variant(InitialVariantWeight=0)]},
        "must be greater than 0",
    ),
    (
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [variant()],
            "ShadowProductionVariants": [variant()],
        },
        "Shadow variants are not supported by neurondock",
    ),
    (
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [variant()],
            "DataCaptureConfig": {"InitialSamplingPercentage": 101, "DestinationS3Uri": "s3://b/x"},
        },
        "Value null at 'dataCaptureConfig.captureOptions' failed to satisfy constraint: Member must not be null",
    ),
]


def test_create_config_validation(fails):
    for params, expected in INVALID_CONFIGS:
        message = fails("CreateEndpointConfig", params)
        assert re.match(r"\d+ validation errors? detected: ", message)
        assert expected in message


def test_all_violations_are_reported_together(fails):
    message = fails(
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "bad_name",
            "ProductionVariants": [variant(InitialInstanceCount=0, InstanceType="ml.nope")],
        },
    )
    assert message.startswith("3 validation errors detected: ")
    assert message.count("; ") == 2
