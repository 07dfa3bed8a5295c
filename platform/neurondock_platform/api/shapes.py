"""Shaping ORM rows into SageMaker's Describe*/List* output structures (epoch-second timestamps)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from neurondock_platform.models import Endpoint, EndpointConfig, EndpointVariant, Model
from neurondock_platform.services import data_capture

# EndpointConfig members echoed by DescribeEndpointConfig when they were given (never Tags).
CONFIG_ECHO = (
    "DataCaptureConfig",
    "KmsKeyId",
    "AsyncInferenceConfig",
    "ExplainerConfig",
    "ExecutionRoleArn",
    "VpcConfig",
    "EnableNetworkIsolation",
    "MetricsConfig",
    "CrossRegionTrafficConfig",
)
MODEL_ECHO = ("InferenceExecutionConfig", "VpcConfig", "DeploymentRecommendation")


def epoch(value: dt.datetime | None) -> float | None:
    """Return a timestamp as epoch seconds, the way AWS's JSON protocol sends it."""
    return None if value is None else value.timestamp()


def _container(container: dict[str, Any]) -> dict[str, Any]:
    return {"Mode": "SingleModel", "Environment": {}, **container}


def describe_model(model: Model) -> dict[str, Any]:
    out: dict[str, Any] = {"ModelName": model.name}
    if model.primary_container is not None:
        out["PrimaryContainer"] = _container(model.primary_container)
    if model.containers:
        out["Containers"] = [_container(c) for c in model.containers]
    out.update({k: model.extra[k] for k in MODEL_ECHO if k in model.extra})
    if model.execution_role_arn:
        out["ExecutionRoleArn"] = model.execution_role_arn
    out["CreationTime"] = epoch(model.created_at)
    out["ModelArn"] = model.arn
    out["EnableNetworkIsolation"] = model.enable_network_isolation
    return out


def model_summary(model: Model) -> dict[str, Any]:
    return {"ModelName": model.name, "ModelArn": model.arn, "CreationTime": epoch(model.created_at)}


def describe_endpoint_config(config: EndpointConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "EndpointConfigName": config.name,
        "EndpointConfigArn": config.arn,
        "ProductionVariants": config.production_variants,
    }
    out.update({k: config.extra[k] for k in CONFIG_ECHO if k in config.extra})
    out["CreationTime"] = epoch(config.created_at)
    return out


def endpoint_config_summary(config: EndpointConfig) -> dict[str, Any]:
    return {
        "EndpointConfigName": config.name,
        "EndpointConfigArn": config.arn,
        "CreationTime": epoch(config.created_at),
    }


def _variant_status(variant: EndpointVariant) -> list[dict[str, Any]]:
    if not variant.variant_status:
        return []
    status: dict[str, Any] = {"Status": variant.variant_status}
    if variant.status_message:
        status["StatusMessage"] = variant.status_message
    if variant.status_started_at is not None:
        status["StartTime"] = epoch(variant.status_started_at)
    return [status]


def variant_summary(variant: EndpointVariant) -> dict[str, Any]:
    """Return a ProductionVariantSummary; DeployedImages appear once instances run."""
    out: dict[str, Any] = {"VariantName": variant.name}
    images = variant.extra.get("deployed_images")
    if images and variant.current_instance_count > 0:
        out["DeployedImages"] = images
    out.update(
        {
            "CurrentWeight": variant.current_weight,
            "DesiredWeight": variant.desired_weight,
            "CurrentInstanceCount": variant.current_instance_count,
            "DesiredInstanceCount": variant.desired_instance_count,
        }
    )
    status = _variant_status(variant)
    if status:
        out["VariantStatus"] = status
    return out


def pending_variant_summary(variant: dict[str, Any]) -> dict[str, Any]:
    """Return a PendingProductionVariantSummary from a pending variant (see services.endpoints)."""
    out: dict[str, Any] = {"VariantName": variant["VariantName"]}
    if variant.get("DeployedImages"):
        out["DeployedImages"] = variant["DeployedImages"]
    out.update(
        {
            "CurrentWeight": float(variant.get("CurrentWeight", 0.0)),
            "DesiredWeight": float(variant["DesiredWeight"]),
            "CurrentInstanceCount": int(variant.get("CurrentInstanceCount", 0)),
            "DesiredInstanceCount": int(variant["DesiredInstanceCount"]),
            "InstanceType": variant["InstanceType"],
        }
    )
    if variant.get("VariantStatus"):
        out["VariantStatus"] = variant["VariantStatus"]
    return out


def describe_endpoint(endpoint: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "EndpointName": endpoint.name,
        "EndpointArn": endpoint.arn,
        "EndpointConfigName": endpoint.endpoint_config_name,
    }
    if endpoint.variants:
        out["ProductionVariants"] = [variant_summary(v) for v in endpoint.variants]
    out["EndpointStatus"] = str(endpoint.status)
    if endpoint.failure_reason:
        out["FailureReason"] = endpoint.failure_reason
    out["CreationTime"] = epoch(endpoint.created_at)
    out["LastModifiedTime"] = epoch(endpoint.last_modified_at)
    extra = endpoint.extra
    if extra.get("DeploymentConfig"):
        out["LastDeploymentConfig"] = extra["DeploymentConfig"]
    capture = data_capture.summary(extra.get("DataCaptureConfig"))
    if capture is not None:
        out["DataCaptureConfig"] = capture
    for key in ("AsyncInferenceConfig", "ExplainerConfig"):
        if extra.get(key):
            out[key] = extra[key]
    pending = extra.get("pending")
    if pending:
        out["PendingDeploymentSummary"] = {
            "EndpointConfigName": pending["EndpointConfigName"],
            "ProductionVariants": [pending_variant_summary(v) for v in pending["ProductionVariants"]],
            "StartTime": pending["StartTime"],
        }
    return out


def endpoint_summary(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "EndpointName": endpoint.name,
        "EndpointArn": endpoint.arn,
        "CreationTime": epoch(endpoint.created_at),
        "LastModifiedTime": epoch(endpoint.last_modified_at),
        "EndpointStatus": str(endpoint.status),
    }
