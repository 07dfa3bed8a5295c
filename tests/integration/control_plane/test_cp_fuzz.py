"""No request a client can send makes the control plane answer 5xx: malformed bodies and wrong types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.conftest import sign
from tests.integration.control_plane.cp_helpers import IMAGE, arn, variant

from neurondock_platform import catalog

WEIRD: list[Any] = [None, 0, -1, 1.5, True, "", "x" * 70_000, "bad name!", [], [1, "a"], {}, {"a": {"b": []}}]

VALID: dict[str, dict[str, Any]] = {
    "CreateModel": {
        "ModelName": "fz",
        "PrimaryContainer": {"Image": IMAGE},
        "Tags": [{"Key": "k", "Value": "v"}],
    },
    "DescribeModel": {"ModelName": "m1"},
    "DeleteModel": {"ModelName": "m1"},
    "ListModels": {"MaxResults": 5, "SortBy": "Name", "NameContains": "m", "CreationTimeAfter": 0},
    "CreateEndpointConfig": {"EndpointConfigName": "fz", "ProductionVariants": [variant()]},
    "DescribeEndpointConfig": {"EndpointConfigName": "c1"},
    "DeleteEndpointConfig": {"EndpointConfigName": "c1"},
    "ListEndpointConfigs": {"MaxResults": 5, "SortOrder": "Ascending"},
    "CreateEndpoint": {"EndpointName": "fz", "EndpointConfigName": "c1"},
    "DescribeEndpoint": {"EndpointName": "e1"},
    "DeleteEndpoint": {"EndpointName": "e1"},
    "ListEndpoints": {"StatusEquals": "Creating", "LastModifiedTimeBefore": 2_000_000_000},
    "UpdateEndpoint": {"EndpointName": "e1", "EndpointConfigName": "c1", "RetainAllVariantProperties": True},
    "UpdateEndpointWeightsAndCapacities": {
        "EndpointName": "e1",
        "DesiredWeightsAndCapacities": [{"VariantName": "AllTraffic", "DesiredWeight": 1}],
    },
    "AddTags": {"ResourceArn": arn("model", "m1"), "Tags": [{"Key": "k", "Value": "v"}]},
    "ListTags": {"ResourceArn": arn("model", "m1"), "MaxResults": 50},
    "DeleteTags": {"ResourceArn": arn("model", "m1"), "TagKeys": ["k"]},
}


@pytest.fixture
def raw(client):
    """POST a raw body as a signed SageMaker request; return (status, json)."""

    def post(operation: str, body: bytes) -> tuple[int, dict[str, Any]]:
        headers = {"X-Amz-Target": f"SageMaker.{operation}", "Content-Type": "application/x-amz-json-1.1"}
        signed = sign("POST", "http://localhost/", body=body, headers=headers)
        resp = client.post("/", data=body, headers=signed)
        return resp.status_code, resp.get_json(force=True, silent=True) or {}

    return post


def _members(operation: str) -> list[str]:
    shape = catalog.sagemaker_service_model().operation_model(operation).input_shape
    return list(shape.members)


def test_wrong_types_in_every_top_level_member_never_5xx(deployed, raw):
    deployed("e1")
    for operation in sorted(VALID):
        for member in _members(operation):
            for value in WEIRD:
                body = {**VALID[operation], member: value}
                status, out = raw(operation, json.dumps(body).encode())
                assert status < 500, (operation, member, value, out)
                if status != 200:
                    assert out["__type"] == "ValidationException", (operation, member, out)
                    assert len(out["message"]) < 20_000


NESTED = [
    ("CreateModel", ("PrimaryContainer",)),
    ("CreateEndpointConfig", ("ProductionVariants", 0)),
    ("UpdateEndpointWeightsAndCapacities", ("DesiredWeightsAndCapacities", 0)),
    ("AddTags", ("Tags", 0)),
]


def test_wrong_types_in_nested_members_never_5xx(deployed, raw):
    deployed("e1")
    for operation, path in NESTED:
        shape = catalog.sagemaker_service_model().operation_model(operation).input_shape
        nested = shape.members[path[0]]
        if nested.type_name == "list":
            nested = nested.member
        for member in nested.members:
            for value in WEIRD:
                body = json.loads(json.dumps(VALID[operation]))
                target = body[path[0]]
                if len(path) > 1:
                    target = target[path[1]]
                target[member] = value
                status, out = raw(operation, json.dumps(body).encode())
                assert status < 500, (operation, member, value, out)


BROKEN_BODIES = [
    b"[]",
    b'"text"',
    b"1",
    b"null",
    b"true",
    b"{",
    b"{'single': 'quotes'}",
    b"\xff\xfe",
    b'{"a": NaN}',
]


def test_non_object_or_broken_json_is_a_400(raw):
    for body in BROKEN_BODIES:
        status, out = raw("CreateModel", body)
        assert status == 400, out
        assert out["__type"] in {"SerializationException", "ValidationException"}


def test_nan_and_infinity_are_rejected_as_numbers(make_model, raw):
    make_model("m1")
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        body = (
            b'{"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "v", "ModelName": "m1", '
            b'"InstanceType": "ml.c5.large", "InitialInstanceCount": 1, "InitialVariantWeight": ' + literal + b"}]}"
        )
        status, out = raw("CreateEndpointConfig", body)
        assert status == 400, out
        assert "initialVariantWeight' failed to satisfy constraint: Member must be of type number" in out["message"]


def test_empty_body_means_no_parameters(raw):
    status, out = raw("ListModels", b"")
    assert (status, out) == (200, {"Models": []})
    status, out = raw("DescribeModel", b"")
    assert status == 400 and "Value null at 'modelName'" in out["message"]


def test_unknown_members_are_ignored(ok):
    ok(
        "CreateModel",
        {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "FutureField": 1}, "Other": [1]},
    )
    assert ok("ListModels", {"SomethingNew": True})["Models"][0]["ModelName"] == "m"


def test_huge_values_are_cut_in_the_message(fails):
    message = fails("DescribeEndpoint", {"EndpointName": "e" * 1_000_000})
    assert message.startswith("1 validation error detected: Value 'eeee")
    expected = "...' at 'endpointName' failed to satisfy constraint: Member must have length less than or equal"
    assert expected in message
    assert len(message) < 1_000


def test_deeply_nested_json_is_a_400(raw):
    status, out = raw("ListModels", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400, out
