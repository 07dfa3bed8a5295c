"""One account never sees, changes or tags another account's resources."""

from __future__ import annotations

from tests.integration.control_plane.cp_helpers import IMAGE, arn, variant


def test_other_account_sees_nothing_of_root(deployed, ok, fails, as_other, other_account):
    endpoint_arn = deployed("e1")
    other = other_account["account_id"]
    for operation, key in [
        ("ListModels", "Models"),
        ("ListEndpointConfigs", "EndpointConfigs"),
        ("ListEndpoints", "Endpoints"),
    ]:
        assert ok(operation, {}, **as_other)[key] == []
    assert fails("DescribeModel", {"ModelName": "m1"}, **as_other) == (
        f'Could not find model "{arn("model", "m1", other)}".'
    )
    assert fails("DescribeEndpointConfig", {"EndpointConfigName": "c1"}, **as_other).startswith("Could not find")
    assert fails("DescribeEndpoint", {"EndpointName": "e1"}, **as_other) == (
        f'Could not find endpoint "{arn("endpoint", "e1", other)}".'
    )
    assert fails("DeleteEndpoint", {"EndpointName": "e1"}, **as_other).startswith("Could not find")
    assert fails("DeleteModel", {"ModelName": "m1"}, **as_other).startswith("Could not find")
    assert fails("UpdateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c1"}, **as_other).startswith(
        "Could not find"
    )
    # Root's ARNs are not the other account's to tag or read.
    for params in ({"ResourceArn": endpoint_arn}, {"ResourceArn": arn("model", "m1")}):
        assert fails("ListTags", params, **as_other).startswith("Could not find")
        assert fails("AddTags", {**params, "Tags": [{"Key": "k", "Value": "v"}]}, **as_other).startswith(
            "Could not find"
        )
        assert fails("DeleteTags", {**params, "TagKeys": ["k"]}, **as_other).startswith("Could not find")
    # ...and root's resources are untouched.
    assert ok("DescribeEndpoint", {"EndpointName": "e1"})["EndpointStatus"] == "Creating"
    assert ok("DescribeModel", {"ModelName": "m1"})["ModelName"] == "m1"


def test_a_config_cannot_use_another_accounts_model(make_model, fails, as_other, other_account):
    make_model("m1")
    message = fails("CreateEndpointConfig", {"EndpointConfigName": "c1", "ProductionVariants": [variant()]}, **as_other)
    assert message == f'Could not find model "{arn("model", "m1", other_account["account_id"])}".'


def test_same_names_live_side_by_side_in_two_accounts(deployed, ok, as_other, other_account, dispatcher):
    root_arn = deployed("e1")
    other = other_account["account_id"]
    ok("CreateModel", {"ModelName": "m1", "PrimaryContainer": {"Image": "other:1"}}, **as_other)
    ok("CreateEndpointConfig", {"EndpointConfigName": "c1", "ProductionVariants": [variant()]}, **as_other)
    other_arn = ok("CreateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c1"}, **as_other)["EndpointArn"]
    assert other_arn == arn("endpoint", "e1", other) != root_arn
    assert ok("DescribeModel", {"ModelName": "m1"}, **as_other)["PrimaryContainer"]["Image"] == "other:1"
    assert ok("DescribeModel", {"ModelName": "m1"})["PrimaryContainer"]["Image"] == IMAGE
    assert [e["EndpointArn"] for e in ok("ListEndpoints", {}, **as_other)["Endpoints"]] == [other_arn]
    assert [e["EndpointArn"] for e in ok("ListEndpoints")["Endpoints"]] == [root_arn]
    ok("AddTags", {"ResourceArn": other_arn, "Tags": [{"Key": "owner", "Value": "other"}]}, **as_other)
    assert ok("ListTags", {"ResourceArn": root_arn})["Tags"] == []
    ok("DeleteEndpoint", {"EndpointName": "e1"}, **as_other)
    assert ok("DescribeEndpoint", {"EndpointName": "e1"})["EndpointStatus"] == "Creating"
    assert len(dispatcher.sent) == 3


def test_next_tokens_do_not_leak_across_accounts(ok, as_other):
    for i in range(3):
        ok("CreateModel", {"ModelName": f"m{i}", "PrimaryContainer": {"Image": IMAGE}})
    token = ok("ListModels", {"MaxResults": 1})["NextToken"]
    assert ok("ListModels", {"MaxResults": 1, "NextToken": token}, **as_other) == {"Models": []}
