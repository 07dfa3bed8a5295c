"""CreateEndpoint, DescribeEndpoint, DeleteEndpoint, UpdateEndpoint, UpdateEndpointWeightsAndCapacities."""

from __future__ import annotations

import time

from sqlalchemy import select
from tests.integration.control_plane.cp_helpers import ACCOUNT, ENV, IMAGE, MODEL_DATA, REGION, ROLE, arn, variant

from neurondock_platform.dispatch import RECONCILE_ENDPOINT
from neurondock_platform.models import Endpoint, EndpointStatus


def _endpoint(db, name="e1"):
    def load(session):
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
        if endpoint is None:
            return None
        return {
            "id": endpoint.id,
            "status": str(endpoint.status),
            "generation": endpoint.generation,
            "config": endpoint.endpoint_config_name,
            "extra": dict(endpoint.extra),
            "variant_ids": {v.name: v.id for v in endpoint.variants},
            "variants": [
                {
                    "name": v.name,
                    "position": v.position,
                    "model": v.model_name,
                    "container": v.container,
                    "instance_type": v.instance_type,
                    "count": v.desired_instance_count,
                    "weight": v.desired_weight,
                }
                for v in endpoint.variants
            ],
        }

    return db(load)


def test_create_endpoint_commits_creating_and_enqueues_reconcile(deployed, ok, db, dispatcher):
    before = time.time()
    endpoint_arn = deployed("e1", Tags=[{"Key": "team", "Value": "ml"}])
    assert endpoint_arn == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/e1"
    row = _endpoint(db)
    assert dispatcher.sent == [(RECONCILE_ENDPOINT, (row["id"],))]
    assert row["status"] == "Creating"
    assert row["generation"] == 1
    assert row["variants"] == [
        {
            "name": "AllTraffic",
            "position": 0,
            "model": "m1",
            "container": {"Image": IMAGE, "ModelDataUrl": MODEL_DATA, "Environment": ENV, "ExecutionRoleArn": ROLE},
            "instance_type": "ml.inf1.xlarge",
            "count": 1,
            "weight": 1.0,
        }
    ]
    described = ok("DescribeEndpoint", {"EndpointName": "e1"})
    assert set(described) == {
        "EndpointName",
        "EndpointArn",
        "EndpointConfigName",
        "ProductionVariants",
        "EndpointStatus",
        "CreationTime",
        "LastModifiedTime",
    }
    assert described["EndpointStatus"] == "Creating"
    assert described["EndpointConfigName"] == "c1"
    (pv,) = described["ProductionVariants"]
    assert set(pv) == {
        "VariantName",
        "CurrentWeight",
        "DesiredWeight",
        "CurrentInstanceCount",
        "DesiredInstanceCount",
        "VariantStatus",
    }
    assert (pv["CurrentInstanceCount"], pv["DesiredInstanceCount"], pv["DesiredWeight"]) == (0, 1, 1.0)
    assert pv["VariantStatus"][0]["Status"] == "Creating"
    assert before - 1 <= described["CreationTime"] <= described["LastModifiedTime"] <= time.time() + 1
    assert ok("ListTags", {"ResourceArn": endpoint_arn})["Tags"] == [{"Key": "team", "Value": "ml"}]


def test_variants_snapshot_each_model_and_weights(make_model, make_config, ok, db):
    make_model("m1")
    make_model("m2", PrimaryContainer=None, Containers=[{"Image": "img:2", "ModelDataUrl": "s3://b/two.tar.gz"}])
    make_config(
        "two",
        variants=[
            variant(name="a", InstanceType="ml.c5.xlarge", InitialInstanceCount=2),
            variant(model="m2", name="b", InitialVariantWeight=3),
        ],
    )
    ok("CreateEndpoint", {"EndpointName": "Two-Variants", "EndpointConfigName": "two"})
    row = _endpoint(db, "Two-Variants")
    assert [(v["name"], v["instance_type"], v["count"], v["weight"]) for v in row["variants"]] == [
        ("a", "ml.c5.xlarge", 2, 1.0),
        ("b", "ml.inf1.xlarge", 1, 3.0),
    ]
    assert row["variants"][1]["container"] == {
        "Image": "img:2",
        "ModelDataUrl": "s3://b/two.tar.gz",
        "Environment": {},
        "ExecutionRoleArn": ROLE,
    }
    # Deleting the model later does not touch the running endpoint's snapshot.
    ok("DeleteModel", {"ModelName": "m2"})
    assert _endpoint(db, "Two-Variants")["variants"][1]["container"]["Image"] == "img:2"
    described = ok("DescribeEndpoint", {"EndpointName": "Two-Variants"})
    assert described["EndpointArn"].endswith(":endpoint/two-variants")


def test_create_endpoint_errors_are_verbatim_and_enqueue_nothing(deployed, make_config, ok, fails, dispatcher):
    deployed("e1")
    dispatcher.sent.clear()
    assert fails("CreateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c1"}) == (
        f'Cannot create already existing endpoint "{arn("endpoint", "e1")}".'
    )
    assert fails("CreateEndpoint", {"EndpointName": "e2", "EndpointConfigName": "ghost"}) == (
        f'Could not find endpoint configuration "{arn("endpoint-config", "ghost")}".'
    )
    make_config("c2", variants=[variant(model="m1")])
    ok("DeleteModel", {"ModelName": "m1"})
    assert fails("CreateEndpoint", {"EndpointName": "e3", "EndpointConfigName": "c2"}) == (
        f'Could not find model "{arn("model", "m1")}".'
    )
    assert dispatcher.sent == []
    assert [e["EndpointName"] for e in ok("ListEndpoints")["Endpoints"]] == ["e1"]


def test_reconcile_is_sent_only_after_commit(app, deployed, session_factory, dispatcher):
    from neurondock_platform.services import endpoints

    deployed("e1")
    dispatcher.sent.clear()
    session = session_factory()
    try:
        endpoint = endpoints.create_endpoint(session, account_id=ACCOUNT, region=REGION, name="e2", config_name="c1")
        assert dispatcher.sent == []
        session.commit()
        assert dispatcher.sent == [(RECONCILE_ENDPOINT, (endpoint.id,))]
        endpoints.delete_endpoint(session, account_id=ACCOUNT, region=REGION, name="e2")
        session.rollback()
        assert dispatcher.sent == [(RECONCILE_ENDPOINT, (endpoint.id,))]
    finally:
        session.close()


def test_describe_and_delete_missing_endpoint(fails):
    expected = f'Could not find endpoint "{arn("endpoint", "nope")}".'
    assert fails("DescribeEndpoint", {"EndpointName": "nope"}) == expected
    assert fails("DeleteEndpoint", {"EndpointName": "nope"}) == expected


def test_delete_endpoint_marks_deleting_bumps_generation_and_enqueues(deployed, ok, db, dispatcher):
    deployed("e1")
    row = _endpoint(db)
    dispatcher.sent.clear()
    assert ok("DeleteEndpoint", {"EndpointName": "e1"}) == {}
    after = _endpoint(db)
    assert (after["status"], after["generation"]) == ("Deleting", 2)
    assert dispatcher.sent == [(RECONCILE_ENDPOINT, (row["id"],))]
    assert ok("DescribeEndpoint", {"EndpointName": "e1"})["EndpointStatus"] == "Deleting"
    # Deleting again is a success that changes nothing (the reconcile is nudged once more).
    assert ok("DeleteEndpoint", {"EndpointName": "e1"}) == {}
    again = _endpoint(db)
    assert (again["status"], again["generation"]) == ("Deleting", 2)
    assert dispatcher.sent[-1] == (RECONCILE_ENDPOINT, (row["id"],))
    # A Deleting endpoint still holds its name until the reconciler removes the row.
    assert ok("CreateEndpoint", {"EndpointName": "e2", "EndpointConfigName": "c1"})


def test_describe_running_endpoint_shows_deployed_images_and_failure_reason(deployed, in_service, endpoint_row, ok):
    deployed("e1")
    in_service("e1")
    endpoint_row("e1", failure_reason="last update failed: boom")
    described = ok("DescribeEndpoint", {"EndpointName": "e1"})
    assert described["EndpointStatus"] == "InService"
    assert described["FailureReason"] == "last update failed: boom"
    (pv,) = described["ProductionVariants"]
    assert "VariantStatus" not in pv
    assert pv["DeployedImages"] == [
        {
            "SpecifiedImage": IMAGE,
            "ResolvedImage": IMAGE + "@sha256:" + "0" * 64,
            "ResolutionTime": 1_700_000_000.5,
        }
    ]
    assert (pv["CurrentInstanceCount"], pv["CurrentWeight"]) == (1, 1.0)


def test_update_endpoint_requires_in_service(deployed, make_config, fails, endpoint_row):
    deployed("e1")
    make_config("c2")
    assert fails("UpdateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c2"}) == (
        f'Cannot update in-progress endpoint "{arn("endpoint", "e1")}".'
    )
    endpoint_row("e1", status=EndpointStatus.FAILED)
    assert fails("UpdateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c2"}).startswith(
        f'Cannot update failed endpoint "{arn("endpoint", "e1")}".'
    )
    assert fails("UpdateEndpoint", {"EndpointName": "nope", "EndpointConfigName": "c2"}).startswith(
        "Could not find endpoint"
    )


def test_update_endpoint_stores_pending_and_describes_it(
    deployed, make_model, make_config, in_service, ok, fails, db, dispatcher
):
    deployed("e1")
    in_service("e1")
    make_model("m2", PrimaryContainer={"Image": "img:new", "ModelDataUrl": "s3://b/new.tar.gz"})
    make_config("c2", variants=[variant(model="m2", InstanceType="ml.inf1.2xlarge", InitialInstanceCount=2)])
    assert fails("UpdateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "ghost"}) == (
        f'Could not find endpoint configuration "{arn("endpoint-config", "ghost")}".'
    )
    dispatcher.sent.clear()
    before = time.time()
    out = ok("UpdateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c2"})
    assert out == {"EndpointArn": arn("endpoint", "e1")}
    row = _endpoint(db)
    assert (row["status"], row["generation"], row["config"]) == ("Updating", 2, "c1")
    assert dispatcher.sent == [(RECONCILE_ENDPOINT, (row["id"],))]
    pending = row["extra"]["pending"]
    assert pending["EndpointConfigName"] == "c2"
    assert pending["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": "m2",
            "InstanceType": "ml.inf1.2xlarge",
            "DesiredInstanceCount": 2,
            "DesiredWeight": 1.0,
            "Container": {
                "Image": "img:new",
                "ModelDataUrl": "s3://b/new.tar.gz",
                "Environment": {},
                "ExecutionRoleArn": ROLE,
            },
        }
    ]
    described = ok("DescribeEndpoint", {"EndpointName": "e1"})
    assert described["EndpointStatus"] == "Updating"
    assert described["EndpointConfigName"] == "c1"
    summary = described["PendingDeploymentSummary"]
    assert summary["EndpointConfigName"] == "c2"
    assert before - 1 <= summary["StartTime"] <= time.time() + 1
    assert summary["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "CurrentWeight": 0.0,
            "DesiredWeight": 1.0,
            "CurrentInstanceCount": 0,
            "DesiredInstanceCount": 2,
            "InstanceType": "ml.inf1.2xlarge",
        }
    ]
    # A second update while this one runs is refused in AWS's words.
    assert fails("UpdateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c2"}).startswith(
        "Cannot update in-progress endpoint"
    )


RETAIN_CASES = [  # RetainAllVariantProperties, ExcludeRetainedVariantProperties, (count, weight)
    (False, [], (2, 1.0)),
    (True, [], (5, 4.0)),
    (True, ["DesiredInstanceCount"], (2, 4.0)),
    (True, ["DesiredInstanceCount", "DesiredWeight"], (2, 1.0)),
]


def test_update_endpoint_honours_retain_all_variant_properties(make_model, make_config, in_service, ok, db):
    make_model("m1")
    make_config("c1")
    make_config("c2", variants=[variant(InitialInstanceCount=2), variant(name="extra")])
    for index, (retain, exclude, expected) in enumerate(RETAIN_CASES):
        name = f"e{index}"
        ok("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": "c1"})
        in_service(name)
        ok(
            "UpdateEndpointWeightsAndCapacities",
            {
                "EndpointName": name,
                "DesiredWeightsAndCapacities": [
                    {"VariantName": "AllTraffic", "DesiredInstanceCount": 5, "DesiredWeight": 4}
                ],
            },
        )
        in_service(name)
        ok(
            "UpdateEndpoint",
            {
                "EndpointName": name,
                "EndpointConfigName": "c2",
                "RetainAllVariantProperties": retain,
                "ExcludeRetainedVariantProperties": [{"VariantPropertyType": p} for p in exclude],
            },
        )
        variants = _endpoint(db, name)["extra"]["pending"]["ProductionVariants"]
        assert (variants[0]["DesiredInstanceCount"], variants[0]["DesiredWeight"]) == expected
        # A variant the endpoint did not have takes the new config's values either way.
        assert (variants[1]["DesiredInstanceCount"], variants[1]["DesiredWeight"]) == (1, 1.0)


def test_apply_and_discard_pending_update(deployed, make_model, make_config, in_service, ok, db):
    from neurondock_platform.services import endpoints

    deployed("e1")
    in_service("e1")
    make_model("m2", PrimaryContainer={"Image": "img:new"})
    make_config("c2", variants=[variant(model="m2", name="AllTraffic", InitialInstanceCount=3), variant(name="b")])
    ok("UpdateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c2"})
    before = _endpoint(db)

    def apply(session):
        endpoint = endpoints.get_endpoint(session, account_id=ACCOUNT, region=REGION, name="e1")
        pending = endpoints.pending_update(endpoint)
        assert pending is not None and pending.config_name == "c2"
        applied = endpoints.apply_pending_update(session, endpoint)
        assert applied == pending
        assert endpoints.pending_update(endpoint) is None
        assert endpoints.apply_pending_update(session, endpoint) is None

    db(apply)
    row = _endpoint(db)
    assert row["config"] == "c2"
    assert row["status"] == "Updating"
    assert "pending" not in row["extra"]
    assert row["extra"]["previous"]["EndpointConfigName"] == "c1"
    assert [(v["name"], v["count"], v["container"]["Image"]) for v in row["variants"]] == [
        ("AllTraffic", 3, "img:new"),
        ("b", 1, IMAGE),
    ]
    # Same-named variants keep their row (and so their replicas' variant id).
    assert row["variant_ids"]["AllTraffic"] == before["variant_ids"]["AllTraffic"]
    described = ok("DescribeEndpoint", {"EndpointName": "e1"})
    assert "PendingDeploymentSummary" not in described

    def discard(session):
        endpoint = endpoints.get_endpoint(session, account_id=ACCOUNT, region=REGION, name="e1")
        endpoints.discard_pending_update(session, endpoint, "new fleet failed its health check")

    db(discard)
    described = ok("DescribeEndpoint", {"EndpointName": "e1"})
    assert described["EndpointStatus"] == "InService"
    assert described["FailureReason"] == "new fleet failed its health check"


def test_update_weights_and_capacities(make_model, make_config, in_service, ok, fails, db, dispatcher):
    make_model("m1")
    make_config("c1", variants=[variant(name="a"), variant(name="b")])
    ok("CreateEndpoint", {"EndpointName": "e1", "EndpointConfigName": "c1"})
    path = "desiredWeightsAndCapacities"
    req = {"EndpointName": "e1", "DesiredWeightsAndCapacities": [{"VariantName": "a", "DesiredWeight": 2}]}
    assert fails("UpdateEndpointWeightsAndCapacities", req) == (
        f'Cannot update in-progress endpoint "{arn("endpoint", "e1")}".'
    )
    in_service("e1")
    bad = {"EndpointName": "e1", "DesiredWeightsAndCapacities": [{"VariantName": "zz", "DesiredWeight": 1}]}
    assert fails("UpdateEndpointWeightsAndCapacities", bad) == (
        f'The variant name(s) "zz" is/are not present in endpoint "{arn("endpoint", "e1")}".'
    )
    dup = {
        "EndpointName": "e1",
        "DesiredWeightsAndCapacities": [{"VariantName": "a", "DesiredWeight": 1}] * 2,
    }
    assert "VariantName values must be unique" in fails("UpdateEndpointWeightsAndCapacities", dup)
    neither = {"EndpointName": "e1", "DesiredWeightsAndCapacities": [{"VariantName": "a"}]}
    assert f"at '{path}.1.member.desiredWeight'" in fails("UpdateEndpointWeightsAndCapacities", neither)
    zero = {
        "EndpointName": "e1",
        "DesiredWeightsAndCapacities": [{"VariantName": "a", "DesiredInstanceCount": 0}],
    }
    assert "Member must have value greater than or equal to 1" in fails("UpdateEndpointWeightsAndCapacities", zero)
    no_traffic = {
        "EndpointName": "e1",
        "DesiredWeightsAndCapacities": [
            {"VariantName": "a", "DesiredWeight": 0},
            {"VariantName": "b", "DesiredWeight": 0},
        ],
    }
    assert "must be greater than 0" in fails("UpdateEndpointWeightsAndCapacities", no_traffic)
    empty = {"EndpointName": "e1", "DesiredWeightsAndCapacities": []}
    expected = f"Value '[]' at '{path}' failed to satisfy constraint: Member must have length greater than"
    assert expected in fails("UpdateEndpointWeightsAndCapacities", empty)
    dispatcher.sent.clear()
    good = {
        "EndpointName": "e1",
        "DesiredWeightsAndCapacities": [
            {"VariantName": "b", "DesiredInstanceCount": 3},
            {"VariantName": "a", "DesiredWeight": 0.25},
        ],
    }
    assert ok("UpdateEndpointWeightsAndCapacities", good) == {"EndpointArn": arn("endpoint", "e1")}
    row = _endpoint(db)
    assert (row["status"], row["generation"]) == ("Updating", 2)
    assert [(v["name"], v["count"], v["weight"]) for v in row["variants"]] == [("a", 1, 0.25), ("b", 3, 1.0)]
    assert dispatcher.sent == [(RECONCILE_ENDPOINT, (row["id"],))]
    described = ok("DescribeEndpoint", {"EndpointName": "e1"})
    assert described["EndpointStatus"] == "Updating"
    assert [(p["DesiredWeight"], p["DesiredInstanceCount"]) for p in described["ProductionVariants"]] == [
        (0.25, 1),
        (1.0, 3),
    ]
    assert "PendingDeploymentSummary" not in described


INVALID_CREATE_ENDPOINT = [
    (
        {"EndpointConfigName": "c1"},
        "Value null at 'endpointName' failed to satisfy constraint: Member must not be null",
    ),
    (
        {"EndpointName": "e1"},
        "Value null at 'endpointConfigName' failed to satisfy constraint: Member must not be null",
    ),
    (
        {"EndpointName": "-e", "EndpointConfigName": "c1"},
        "Value '-e' at 'endpointName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    ),
    (
        {"EndpointName": "e" * 64, "EndpointConfigName": "c1"},
        "at 'endpointName' failed to satisfy constraint: Member must have length less than or equal to 63",
    ),
    (
        {
            "EndpointName": "e1",
            "EndpointConfigName": "c1",
            "DeploymentConfig": {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "SOMETIMES"}}},
        },
        "at 'deploymentConfig.blueGreenUpdatePolicy.trafficRoutingConfiguration.type' failed to satisfy "
        "constraint: Member must satisfy enum value set: [ALL_AT_ONCE, CANARY, LINEAR]",
    ),
]


def test_create_endpoint_validation(fails):
    for params, expected in INVALID_CREATE_ENDPOINT:
        assert expected in fails("CreateEndpoint", params)


def test_deployment_config_is_echoed_as_last_deployment_config(deployed, ok):
    policy = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
            "TerminationWaitInSeconds": 0,
        }
    }
    deployed("e1", DeploymentConfig=policy)
    assert ok("DescribeEndpoint", {"EndpointName": "e1"})["LastDeploymentConfig"] == policy
