"""AddTags / ListTags / DeleteTags by ResourceArn, and tag limits everywhere tags are accepted."""

from __future__ import annotations

import pytest
from tests.integration.control_plane.cp_helpers import ACCOUNT, IMAGE, arn, variant

TAG_PATTERN = r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)"


@pytest.fixture
def model_arn(make_model) -> str:
    return make_model("m1")


def test_add_list_delete_tags_on_every_resource_kind(deployed, ok):
    endpoint_arn = deployed("e1")
    for resource in (arn("model", "m1"), arn("endpoint-config", "c1"), endpoint_arn):
        added = ok(
            "AddTags",
            {"ResourceArn": resource, "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}]},
        )
        assert added == {"Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}]}
        assert ok("ListTags", {"ResourceArn": resource}) == {
            "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}]
        }
        assert ok("DeleteTags", {"ResourceArn": resource, "TagKeys": ["a", "not-there"]}) == {}
        assert ok("ListTags", {"ResourceArn": resource})["Tags"] == [{"Key": "b", "Value": ""}]


def test_add_tags_overwrites_values_and_keeps_first_added_order(model_arn, ok):
    ok(
        "AddTags",
        {"ResourceArn": model_arn, "Tags": [{"Key": "x", "Value": "1"}, {"Key": "y", "Value": "2"}]},
    )
    ok(
        "AddTags",
        {"ResourceArn": model_arn, "Tags": [{"Key": "z", "Value": "3"}, {"Key": "x", "Value": "new"}]},
    )
    assert ok("ListTags", {"ResourceArn": model_arn})["Tags"] == [
        {"Key": "x", "Value": "new"},
        {"Key": "y", "Value": "2"},
        {"Key": "z", "Value": "3"},
    ]


def test_unicode_and_symbol_tags_are_accepted(model_arn, ok):
    tags = [{"Key": "équipe données", "Value": "ナ 1"}, {"Key": "a_b.c:d/e=f+g-h@i", "Value": "ok"}]
    ok("AddTags", {"ResourceArn": model_arn, "Tags": tags})
    assert ok("ListTags", {"ResourceArn": model_arn})["Tags"] == tags


def test_resource_arn_with_upper_case_name_resolves(make_model, ok):
    make_model("MyModel")
    upper = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/MyModel"
    ok("AddTags", {"ResourceArn": upper, "Tags": [{"Key": "k", "Value": "v"}]})
    assert ok("ListTags", {"ResourceArn": arn("model", "mymodel")})["Tags"] == [{"Key": "k", "Value": "v"}]


MISSING_RESOURCES = [
    (arn("endpoint", "ghost"), f'Could not find endpoint "{arn("endpoint", "ghost")}".'),
    (
        arn("endpoint-config", "ghost"),
        f'Could not find endpoint configuration "{arn("endpoint-config", "ghost")}".',
    ),
    (
        f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:model/m1",
        f'Could not find model "arn:aws:sagemaker:eu-west-1:{ACCOUNT}:model/m1".',
    ),
    (
        f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:notebook-instance/nb",
        f'Could not find resource "arn:aws:sagemaker:us-east-1:{ACCOUNT}:notebook-instance/nb".',
    ),
    (
        f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model",
        f'Could not find resource "arn:aws:sagemaker:us-east-1:{ACCOUNT}:model".',
    ),
]


def test_tags_on_missing_resources(model_arn, fails):
    for resource, expected in MISSING_RESOURCES:
        assert fails("AddTags", {"ResourceArn": resource, "Tags": [{"Key": "k", "Value": "v"}]}) == expected
        assert fails("ListTags", {"ResourceArn": resource}) == expected
        assert fails("DeleteTags", {"ResourceArn": resource, "TagKeys": ["k"]}) == expected


INVALID_ADD_TAGS = [
    ({}, "Value null at 'tags' failed to satisfy constraint: Member must not be null"),
    (
        {"Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]},
        "at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50",
    ),
    (
        {"Tags": [{"Key": "k" * 129, "Value": "v"}]},
        "at 'tags.1.member.key' failed to satisfy constraint: Member must have length less than or equal to 128",
    ),
    (
        {"Tags": [{"Key": "", "Value": "v"}]},
        "Value '' at 'tags.1.member.key' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
    ),
    (
        {"Tags": [{"Key": "k", "Value": "v" * 257}]},
        "at 'tags.1.member.value' failed to satisfy constraint: Member must have length less than or equal to 256",
    ),
    (
        {"Tags": [{"Key": "ok", "Value": "v"}, {"Key": "a*b", "Value": "v"}]},
        "Value 'a*b' at 'tags.2.member.key' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {TAG_PATTERN}",
    ),
    (
        {"Tags": [{"Key": "k", "Value": "semi;colon"}]},
        "Value 'semi;colon' at 'tags.1.member.value' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {TAG_PATTERN}",
    ),
    (
        {"Tags": [{"Key": "k"}]},
        "Value null at 'tags.1.member.value' failed to satisfy constraint: Member must not be null",
    ),
    (
        {"Tags": [{"Key": "aws:cloudformation:stack", "Value": "v"}]},
        "Value 'aws:cloudformation:stack' at 'tags.1.member.key' failed to satisfy constraint: "
        "Member must not start with the reserved prefix 'aws:'",
    ),
    (
        {"Tags": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]},
        "Value 'k' at 'tags.2.member.key' failed to satisfy constraint: Tag keys must be unique within a request",
    ),
    ({"Tags": "k=v"}, "Value 'k=v' at 'tags' failed to satisfy constraint: Member must be of type list"),
]


def test_add_tags_validation(model_arn, fails):
    for params, expected in INVALID_ADD_TAGS:
        assert expected in fails("AddTags", {"ResourceArn": model_arn, **params})


def test_add_tags_without_resource_arn(fails):
    assert fails("AddTags", {"Tags": []}) == (
        "1 validation error detected: Value null at 'resourceArn' failed to satisfy constraint: Member must not be null"
    )


def test_resource_arn_pattern(fails):
    assert fails("ListTags", {"ResourceArn": "arn:aws:s3:::bucket"}) == (
        "1 validation error detected: Value 'arn:aws:s3:::bucket' at 'resourceArn' "
        "failed to satisfy constraint: Member must satisfy regular expression pattern: "
        "^arn:aws[a-z-]*:sagemaker:[a-z0-9-]*:[0-9]{12}:.+"
    )


def test_a_resource_holds_at_most_50_tags(model_arn, ok, fails):
    ok("AddTags", {"ResourceArn": model_arn, "Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(40)]})
    too_many = [{"Key": f"n{i}", "Value": "v"} for i in range(11)]
    assert "at most 50 are allowed" in fails("AddTags", {"ResourceArn": model_arn, "Tags": too_many})
    # Overwriting existing keys does not count against the limit.
    ok(
        "AddTags",
        {
            "ResourceArn": model_arn,
            "Tags": [{"Key": f"k{i}", "Value": "w"} for i in range(40)] + too_many[:10],
        },
    )
    page = ok("ListTags", {"ResourceArn": model_arn, "MaxResults": 50})
    assert len(page["Tags"]) == 50 and "NextToken" not in page


def test_list_and_delete_tags_validation(model_arn, fails):
    assert "Member must have value greater than or equal to 50" in fails(
        "ListTags", {"ResourceArn": model_arn, "MaxResults": 10}
    )
    assert (
        "Value '[]' at 'tagKeys' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
        in (fails("DeleteTags", {"ResourceArn": model_arn, "TagKeys": []}))
    )
    assert "Value null at 'tagKeys' failed to satisfy constraint: Member must not be null" in fails(
        "DeleteTags", {"ResourceArn": model_arn}
    )
    assert "Invalid pagination token" in fails("ListTags", {"ResourceArn": model_arn, "NextToken": "abc"})


CREATES_WITH_TAGS = [
    ("CreateModel", {"ModelName": "m2", "PrimaryContainer": {"Image": IMAGE}}),
    ("CreateEndpointConfig", {"EndpointConfigName": "c2", "ProductionVariants": [variant()]}),
    ("CreateEndpoint", {"EndpointName": "e2", "EndpointConfigName": "c2"}),
]


def test_create_operations_apply_the_same_tag_rules(model_arn, fails):
    for operation, params in CREATES_WITH_TAGS:
        for tags, fragment in [
            ([{"Key": "aws:x", "Value": "v"}], "reserved prefix 'aws:'"),
            (
                [{"Key": f"k{i}", "Value": "v"} for i in range(51)],
                "Member must have length less than or equal to 50",
            ),
            ([{"Key": "bad|key", "Value": "v"}], "at 'tags.1.member.key'"),
        ]:
            assert fragment in fails(operation, {**params, "Tags": tags})
