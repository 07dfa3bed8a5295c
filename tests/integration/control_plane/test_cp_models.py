"""CreateModel / DescribeModel / DeleteModel / ListModels through the signed awsJson1.1 API."""

from __future__ import annotations

import time

from tests.integration.control_plane.cp_helpers import ACCOUNT, ENV, IMAGE, MODEL_DATA, ROLE, arn

PATTERN_MODEL = r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?"


def test_create_and_describe_model_exact_shape(ok):
    before = time.time()
    out = ok(
        "CreateModel",
        {
            "ModelName": "resnet",
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": MODEL_DATA, "Environment": ENV},
            "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
        },
    )
    assert out == {"ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/resnet"}
    described = ok("DescribeModel", {"ModelName": "resnet"})
    assert set(described) == {
        "ModelName",
        "PrimaryContainer",
        "ExecutionRoleArn",
        "VpcConfig",
        "CreationTime",
        "ModelArn",
        "EnableNetworkIsolation",
    }
    assert described["ModelName"] == "resnet"
    assert described["ModelArn"] == out["ModelArn"]
    assert described["PrimaryContainer"] == {
        "Image": IMAGE,
        "ModelDataUrl": MODEL_DATA,
        "Environment": ENV,
        "Mode": "SingleModel",
    }
    assert described["ExecutionRoleArn"] == ROLE
    assert described["VpcConfig"] == {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}
    assert described["EnableNetworkIsolation"] is False
    assert isinstance(described["CreationTime"], float)
    assert before - 1 <= described["CreationTime"] <= time.time() + 1


def test_model_with_containers_list_describes_containers(ok):
    ok("CreateModel", {"ModelName": "pipe", "Containers": [{"Image": IMAGE, "ModelDataUrl": MODEL_DATA}]})
    described = ok("DescribeModel", {"ModelName": "pipe"})
    assert "PrimaryContainer" not in described
    assert "ExecutionRoleArn" not in described
    assert described["Containers"] == [
        {"Image": IMAGE, "ModelDataUrl": MODEL_DATA, "Mode": "SingleModel", "Environment": {}}
    ]


def test_model_arn_lowercases_the_name(ok):
    out = ok("CreateModel", {"ModelName": "ResNet-50", "PrimaryContainer": {"Image": IMAGE}})
    assert out["ModelArn"] == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/resnet-50"
    assert ok("DescribeModel", {"ModelName": "ResNet-50"})["ModelName"] == "ResNet-50"


def test_duplicate_model_message_is_verbatim(make_model, fails):
    make_model("m1")
    message = fails("CreateModel", {"ModelName": "m1", "PrimaryContainer": {"Image": IMAGE}})
    assert message == f'Cannot create already existing model "{arn("model", "m1")}".'
    # Names differing only in case share the ARN, so they collide too.
    assert fails("CreateModel", {"ModelName": "M1", "PrimaryContainer": {"Image": IMAGE}}).startswith(
        "Cannot create already existing model"
    )


def test_describe_and_delete_missing_model_message_is_verbatim(fails):
    expected = f'Could not find model "{arn("model", "nope")}".'
    assert fails("DescribeModel", {"ModelName": "nope"}) == expected
    assert fails("DeleteModel", {"ModelName": "nope"}) == expected


def test_delete_model_returns_empty_and_removes_it(make_model, ok, fails):
    make_model("m1")
    assert ok("DeleteModel", {"ModelName": "m1"}) == {}
    assert fails("DescribeModel", {"ModelName": "m1"}).startswith("Could not find model")
    assert ok("ListModels")["Models"] == []


def test_tags_given_at_create_are_listed_and_deleted_with_the_model(make_model, ok, fails):
    model_arn = make_model("m1", Tags=[{"Key": "team", "Value": "ml"}, {"Key": "env", "Value": ""}])
    assert ok("ListTags", {"ResourceArn": model_arn})["Tags"] == [
        {"Key": "team", "Value": "ml"},
        {"Key": "env", "Value": ""},
    ]
    ok("DeleteModel", {"ModelName": "m1"})
    assert fails("ListTags", {"ResourceArn": model_arn}) == f'Could not find model "{model_arn}".'
    make_model("m1")
    assert ok("ListTags", {"ResourceArn": model_arn})["Tags"] == []


INVALID_MODELS = [
    (
        {"PrimaryContainer": {"Image": IMAGE}},
        "1 validation error detected: Value null at 'modelName' failed to satisfy constraint: Member must not be null",
    ),
    (
        {"ModelName": "bad_name!", "PrimaryContainer": {"Image": IMAGE}},
        "1 validation error detected: Value 'bad_name!' at 'modelName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {PATTERN_MODEL}",
    ),
    (
        {"ModelName": "a" * 64, "PrimaryContainer": {"Image": IMAGE}},
        f"1 validation error detected: Value '{'a' * 64}' at 'modelName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63",
    ),
    (
        {"ModelName": "m-", "PrimaryContainer": {"Image": IMAGE}},
        "1 validation error detected: Value 'm-' at 'modelName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {PATTERN_MODEL}",
    ),
    (
        {
            "ModelName": "m",
            "ExecutionRoleArn": "arn:aws:iam::12:role/x",
            "PrimaryContainer": {"Image": IMAGE},
        },
        "1 validation error detected: Value 'arn:aws:iam::12:role/x' at 'executionRoleArn' "
        "failed to satisfy constraint: Member must satisfy regular expression pattern: "
        r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+",
    ),
    (
        {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "ftp://x/y"}},
        "1 validation error detected: Value 'ftp://x/y' at 'primaryContainer.modelDataUrl' failed to "
        "satisfy constraint: Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)",
    ),
    (
        {"ModelName": "m", "PrimaryContainer": {"Image": "has space"}},
        "1 validation error detected: Value 'has space' at 'primaryContainer.image' failed to satisfy "
        r"constraint: Member must satisfy regular expression pattern: ^[\S]+",
    ),
    (
        {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "Mode": "Single"}},
        "1 validation error detected: Value 'Single' at 'primaryContainer.mode' "
        "failed to satisfy constraint: Member must satisfy enum value set: [SingleModel, MultiModel]",
    ),
    (
        {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE}, "EnableNetworkIsolation": "yes"},
        "1 validation error detected: Value 'yes' at 'enableNetworkIsolation' "
        "failed to satisfy constraint: Member must be of type boolean",
    ),
    (
        {"ModelName": "m", "PrimaryContainer": "img"},
        "1 validation error detected: Value 'img' at 'primaryContainer' failed to satisfy constraint: "
        "Member must be of type structure",
    ),
]


def test_create_model_validation_messages(fails):
    for params, expected in INVALID_MODELS:
        assert fails("CreateModel", params) == expected


def test_environment_limits(fails, ok):
    too_many = {f"K{i}": "v" for i in range(101)}
    message = fails("CreateModel", {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "Environment": too_many}})
    assert "at 'primaryContainer.environment' failed to satisfy constraint: Member must have length" in message
    assert message.endswith("equal to 100")
    bad_key = fails(
        "CreateModel", {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "Environment": {"1BAD": "v"}}}
    )
    assert bad_key == (
        "1 validation error detected: Value '1BAD' at 'primaryContainer.environment' failed to satisfy "
        "constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: "
        "^[a-zA-Z_][a-zA-Z0-9_]*]"
    )
    assert "Map value must satisfy constraint: [Member must be of type string]" in fails(
        "CreateModel", {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "Environment": {"K": 1}}}
    )
    ok(
        "CreateModel",
        {
            "ModelName": "m",
            "PrimaryContainer": {"Image": IMAGE, "Environment": dict(list(too_many.items())[:100])},
        },
    )


CONTAINER_RULES = [
    ({"ModelName": "m"}, "at 'primaryContainer' failed to satisfy constraint: Member must not be null"),
    (
        {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE}, "Containers": [{"Image": IMAGE}]},
        "at 'containers' failed to satisfy constraint: Member must be empty when PrimaryContainer is given",
    ),
    (
        {"ModelName": "m", "Containers": [{"Image": IMAGE}, {"Image": IMAGE}]},
        "neurondock serves one container per model",
    ),
    ({"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": MODEL_DATA}}, "at 'primaryContainer.image'"),
    (
        {"ModelName": "m", "Containers": [{"ModelDataUrl": MODEL_DATA}]},
        "Value null at 'containers.1.member.image' failed to satisfy constraint: Member must not be null",
    ),
    (
        {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "Mode": "MultiModel"}},
        "Multi-model containers are not supported by neurondock",
    ),
    (
        {
            "ModelName": "m",
            "PrimaryContainer": {
                "Image": IMAGE,
                "ModelDataSource": {
                    "S3DataSource": {
                        "S3Uri": "s3://b/p/",
                        "S3DataType": "S3Prefix",
                        "CompressionType": "None",
                    }
                },
            },
        },
        "neurondock loads one model.tar.gz",
    ),
    (
        {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE}, "Containers": [{"Image": IMAGE}] * 16},
        "at 'containers' failed to satisfy constraint: Member must have length less than or equal to 15",
    ),
]


def test_create_model_container_rules(fails):
    for params, fragment in CONTAINER_RULES:
        assert fragment in fails("CreateModel", params)


def test_model_data_source_gzip_object_is_accepted_and_snapshotted(ok, db):
    from neurondock_platform.services import models

    source = {"S3DataSource": {"S3Uri": MODEL_DATA, "S3DataType": "S3Object", "CompressionType": "Gzip"}}
    ok("CreateModel", {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "ModelDataSource": source}})
    snapshot = db(
        lambda s: models.container_snapshot(models.get_model(s, account_id=ACCOUNT, region="us-east-1", name="m"))
    )
    assert snapshot == {"Image": IMAGE, "ModelDataUrl": MODEL_DATA, "Environment": {}}
