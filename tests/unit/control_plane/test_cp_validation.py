"""The shape-driven validator and the rules beyond botocore's model, without a database."""

from __future__ import annotations

import datetime as dt

import pytest

from neurondock_platform import catalog
from neurondock_platform.errors import ValidationException
from neurondock_platform.services import validation


def message(operation: str, params: dict) -> str:
    with pytest.raises(ValidationException) as info:
        validation.validate_input(operation, params)
    return info.value.message


def test_camel_and_paths():
    assert validation.camel("ProductionVariants") == "productionVariants"
    assert validation.join_path("", "EndpointName") == "endpointName"
    assert validation.join_path(validation.item_path("productionVariants", 0), "InstanceType") == (
        "productionVariants.1.member.instanceType"
    )


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        (validation.MISSING, "null"),
        (None, "null"),
        ("abc", "'abc'"),
        (0, "'0'"),
        (True, "'true'"),
        ([1, "a"], "'[1,\"a\"]'"),
        ("x" * 300, "'" + "x" * 256 + "...'"),
    ],
)
def test_render_value(value, rendered):
    assert validation.render_value(value) == rendered


def test_format_errors_counts_and_pluralises():
    assert validation.format_errors(["a"]) == "1 validation error detected: a"
    assert validation.format_errors(["a", "b"]) == "2 validation errors detected: a; b"


def test_valid_requests_pass():
    validation.validate_input("ListModels", {})
    validation.validate_input(
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "cfg-1",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "m",
                    "InstanceType": "ml.inf1.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
            "Tags": [{"Key": "équipe", "Value": "données 1"}],
        },
    )


def test_pattern_and_length_are_both_reported():
    assert message("DescribeEndpoint", {"EndpointName": "_" * 64}) == (
        f"2 validation errors detected: Value '{'_' * 64}' at 'endpointName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63; "
        f"Value '{'_' * 64}' at 'endpointName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
    )


def test_required_member_is_named():
    assert message("DescribeEndpoint", {}) == (
        "1 validation error detected: Value null at 'endpointName' failed to satisfy constraint: "
        "Member must not be null"
    )


@pytest.mark.parametrize(
    ("params", "constraint"),
    [
        ({"MaxResults": "10"}, "Member must be of type integer"),
        ({"MaxResults": 1.0}, "Member must be of type integer"),
        ({"MaxResults": False}, "Member must be of type integer"),
        ({"NameContains": 5}, "Member must be of type string"),
        ({"CreationTimeAfter": True}, "Member must be a timestamp"),
        ({"CreationTimeAfter": [1]}, "Member must be a timestamp"),
        ({"CreationTimeAfter": "soon"}, "Member must be a timestamp"),
    ],
)
def test_wrong_json_types(params, constraint):
    assert constraint in message("ListModels", params)


def test_nested_list_map_and_structure_paths():
    msg = message(
        "CreateModel",
        {
            "ModelName": "m",
            "Containers": [{"Image": "i"}, {"Image": "i", "Environment": {"OK": "x" * 1025}}],
            "VpcConfig": {"Subnets": []},
        },
    )
    assert msg.startswith("3 validation errors detected: ")
    assert (
        "at 'containers.2.member.environment' failed to satisfy constraint: "
        "Map value must satisfy constraint: [Member must have length less than or equal to 1024]"
    ) in msg
    assert "Value null at 'vpcConfig.securityGroupIds' failed to satisfy constraint: Member must not be null" in msg
    assert "Value '[]' at 'vpcConfig.subnets' failed to satisfy constraint: Member must have length greater than" in msg


def test_null_list_elements_are_violations():
    assert "Value null at 'tagKeys.1.member' failed to satisfy constraint: Member must not be null" in message(
        "DeleteTags",
        {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m", "TagKeys": [None]},
    )


def test_non_finite_numbers_are_not_numbers():
    for value in (float("nan"), float("inf")):
        msg = message(
            "UpdateEndpointWeightsAndCapacities",
            {
                "EndpointName": "e",
                "DesiredWeightsAndCapacities": [{"VariantName": "v", "DesiredWeight": value}],
            },
        )
        assert "at 'desiredWeightsAndCapacities.1.member.desiredWeight'" in msg


def test_tag_pattern_uses_unicode_categories():
    matches = validation.compile_pattern(r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)")
    assert matches("équipe données ナ 12 _.:/=+-@")
    assert matches("")
    assert not matches("a*b")
    assert not matches("semi;colon")
    assert not matches("new\nline")


def test_patterns_match_the_whole_value():
    matches = validation.compile_pattern("[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
    assert matches("a-b--c")
    assert not matches("a-")
    assert not matches("ab!")
    assert validation.display_pattern("[a-z]+") == "^[a-z]+"
    assert validation.display_pattern("^x") == "^x"


def test_huge_strings_skip_the_regex_but_not_the_length_check():
    msg = message("DescribeModel", {"ModelName": "!" * 100_000})
    assert msg.startswith("1 validation error detected: ")
    assert "Member must have length less than or equal to 63" in msg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
        (1_700_000_000.5, dt.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=dt.UTC)),
        ("1700000000", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
        ("2023-11-14T22:13:20Z", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
        ("2023-11-15T00:13:20+02:00", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
        ("2023-11-14T22:13:20", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
    ],
)
def test_to_datetime(value, expected):
    assert validation.to_datetime(value) == expected


@pytest.mark.parametrize("value", [True, None, [], "yesterday", float("nan")])
def test_to_datetime_rejects(value):
    with pytest.raises((TypeError, ValueError)):
        validation.to_datetime(value)


def test_without_nulls():
    assert validation.without_nulls({"a": None, "b": {"c": None, "d": 1}, "e": [{"f": None}]}) == {
        "b": {"d": 1},
        "e": [{}],
    }


def test_check_tags_reserved_prefix_and_duplicates():
    validation.check_tags([{"Key": "awsome", "Value": ""}, {"Key": "k", "Value": "v"}])
    with pytest.raises(ValidationException, match=r"tags\.2\.member\.key.*reserved prefix 'aws:'"):
        validation.check_tags([{"Key": "ok", "Value": ""}, {"Key": "AWS:x", "Value": ""}])
    with pytest.raises(ValidationException, match="Tag keys must be unique"):
        validation.check_tags([{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}])


def test_check_unique_names():
    validation.check_unique_names([{"VariantName": "a"}, {"VariantName": "b"}], "VariantName", "pv")
    with pytest.raises(ValidationException) as info:
        validation.check_unique_names([{"VariantName": "a"}, {"VariantName": "a"}], "VariantName", "pv")
    assert info.value.message == (
        "1 validation error detected: Value 'a' at 'pv.2.member.variantName' failed to satisfy constraint: "
        "VariantName values must be unique"
    )


def test_check_instance_type_tells_unsupported_from_invalid():
    validation.check_instance_type("ml.inf1.6xlarge", "it")
    with pytest.raises(ValidationException, match=r"not supported by neurondock; supported: \[ml\.inf1\.xlarge, "):
        validation.check_instance_type("ml.p4d.24xlarge", "it")
    with pytest.raises(ValidationException) as info:
        validation.check_instance_type("ml.nope", "it")
    assert info.value.message.startswith(
        "1 validation error detected: Value 'ml.nope' at 'it' failed to satisfy constraint: "
        f"Member must satisfy enum value set: [{catalog.all_instance_types()[0]}, "
    )
