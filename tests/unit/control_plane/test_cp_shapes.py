"""Describe/List shaping from ORM rows (transient objects, no database)."""

from __future__ import annotations

import datetime as dt

from neurondock_platform.api import shapes
from neurondock_platform.models import Endpoint, EndpointStatus, EndpointVariant

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _variant(**fields) -> EndpointVariant:
    base: dict[str, object] = {
        "name": "AllTraffic",
        "current_instance_count": 0,
        "desired_instance_count": 2,
        "current_weight": 0.0,
        "desired_weight": 1.0,
        "variant_status": None,
        "status_message": None,
        "status_started_at": None,
        "extra": {},
    }
    return EndpointVariant(**{**base, **fields})


def _endpoint(**fields) -> Endpoint:
    base: dict[str, object] = {
        "name": "Ep",
        "arn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep",
        "endpoint_config_name": "c1",
        "status": EndpointStatus.CREATING,
        "failure_reason": None,
        "extra": {},
        "created_at": T0,
        "last_modified_at": T0 + dt.timedelta(seconds=1.5),
    }
    return Endpoint(**{**base, **fields})


def test_epoch():
    assert shapes.epoch(T0) == 1704067200.0
    assert shapes.epoch(None) is None


def test_variant_summary_hides_images_until_instances_run():
    images = [{"SpecifiedImage": "i", "ResolvedImage": "i@sha256:0", "ResolutionTime": 1.0}]
    creating = _variant(
        extra={"deployed_images": images},
        variant_status="Creating",
        status_message="placing",
        status_started_at=T0,
    )
    assert shapes.variant_summary(creating) == {
        "VariantName": "AllTraffic",
        "CurrentWeight": 0.0,
        "DesiredWeight": 1.0,
        "CurrentInstanceCount": 0,
        "DesiredInstanceCount": 2,
        "VariantStatus": [{"Status": "Creating", "StatusMessage": "placing", "StartTime": 1704067200.0}],
    }
    running = _variant(extra={"deployed_images": images}, current_instance_count=2, current_weight=1.0)
    assert shapes.variant_summary(running)["DeployedImages"] == images
    assert "VariantStatus" not in shapes.variant_summary(running)


def test_describe_endpoint_with_pending_update_and_echoes():
    endpoint = _endpoint(
        status=EndpointStatus.UPDATING,
        failure_reason="earlier failure",
        extra={
            "DeploymentConfig": {"BlueGreenUpdatePolicy": {}},
            "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://b/o"}},
            "pending": {
                "EndpointConfigName": "c2",
                "StartTime": 1704067300.0,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "m2",
                        "InstanceType": "ml.inf1.2xlarge",
                        "DesiredInstanceCount": 3,
                        "DesiredWeight": 2.0,
                        "Container": {"Image": "i"},
                        "CurrentInstanceCount": 1,
                    }
                ],
            },
        },
    )
    endpoint.variants = [_variant()]
    out = shapes.describe_endpoint(endpoint)
    assert out["EndpointStatus"] == "Updating"
    assert out["FailureReason"] == "earlier failure"
    assert (out["CreationTime"], out["LastModifiedTime"]) == (1704067200.0, 1704067201.5)
    assert out["LastDeploymentConfig"] == {"BlueGreenUpdatePolicy": {}}
    assert out["AsyncInferenceConfig"] == {"OutputConfig": {"S3OutputPath": "s3://b/o"}}
    assert out["PendingDeploymentSummary"] == {
        "EndpointConfigName": "c2",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "CurrentWeight": 0.0,
                "DesiredWeight": 2.0,
                "CurrentInstanceCount": 1,
                "DesiredInstanceCount": 3,
                "InstanceType": "ml.inf1.2xlarge",
            }
        ],
        "StartTime": 1704067300.0,
    }


def test_endpoint_summary_has_exactly_the_required_members():
    assert shapes.endpoint_summary(_endpoint()) == {
        "EndpointName": "Ep",
        "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep",
        "CreationTime": 1704067200.0,
        "LastModifiedTime": 1704067201.5,
        "EndpointStatus": "Creating",
    }
