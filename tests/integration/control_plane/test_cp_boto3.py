"""Unmodified boto3 against the control plane on a loopback port: shapes, errors, paginators, waiters."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.exceptions import ClientError, WaiterError
from tests.integration.control_plane.cp_helpers import IMAGE, MODEL_DATA, ROLE, arn

FAST = {"Delay": 0.05, "MaxAttempts": 20}


def test_deploy_flow_with_boto3(sm, in_service, db):
    sm.create_model(
        ModelName="resnet",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": MODEL_DATA},
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    described = sm.describe_model(ModelName="resnet")
    assert isinstance(described["CreationTime"], dt.datetime)
    assert described["ResponseMetadata"]["RequestId"]
    sm.create_endpoint_config(
        EndpointConfigName="resnet",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "resnet",
                "InstanceType": "ml.inf1.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    endpoint_arn = sm.create_endpoint(EndpointName="resnet", EndpointConfigName="resnet")["EndpointArn"]
    assert endpoint_arn == arn("endpoint", "resnet")
    assert sm.describe_endpoint(EndpointName="resnet")["EndpointStatus"] == "Creating"
    in_service("resnet")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="resnet", WaiterConfig=FAST)
    variant = sm.describe_endpoint(EndpointName="resnet")["ProductionVariants"][0]
    assert isinstance(variant["DeployedImages"][0]["ResolutionTime"], dt.datetime)
    assert sm.list_tags(ResourceArn=endpoint_arn)["Tags"] == []
    sm.delete_endpoint(EndpointName="resnet")
    with pytest.raises(WaiterError):  # still Deleting: the waiter keeps polling
        sm.get_waiter("endpoint_deleted").wait(EndpointName="resnet", WaiterConfig={"Delay": 0.01, "MaxAttempts": 2})

    from sqlalchemy import delete

    from neurondock_platform.models import Endpoint

    db(lambda s: s.execute(delete(Endpoint).where(Endpoint.name == "resnet")))  # what the reconciler does
    sm.get_waiter("endpoint_deleted").wait(EndpointName="resnet", WaiterConfig=FAST)


def test_errors_parse_into_client_errors(sm):
    with pytest.raises(ClientError) as info:
        sm.describe_endpoint(EndpointName="nope")
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == f'Could not find endpoint "{arn("endpoint", "nope")}".'
    with pytest.raises(ClientError) as info:
        sm.create_endpoint_config(
            EndpointConfigName="c",
            ProductionVariants=[
                {
                    "VariantName": "v",
                    "ModelName": "m",
                    "InstanceType": "ml.bogus.x",
                    "InitialInstanceCount": 1,
                }
            ],
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "Member must satisfy enum value set" in info.value.response["Error"]["Message"]


def test_paginators_walk_every_page(sm):
    for i in range(12):
        sm.create_model(ModelName=f"m{i:02d}", PrimaryContainer={"Image": IMAGE})
    pages = list(
        sm.get_paginator("list_models").paginate(SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 5})
    )
    assert [len(p["Models"]) for p in pages] == [5, 5, 2]
    assert [m["ModelName"] for p in pages for m in p["Models"]] == [f"m{i:02d}" for i in range(12)]
    created = sm.list_models(CreationTimeAfter=dt.datetime(2000, 1, 1, tzinfo=dt.UTC), MaxResults=100)
    assert len(created["Models"]) == 12
