"""The endpoint operations: Create, Describe, Delete, List, Update and UpdateWeightsAndCapacities."""

from __future__ import annotations

from typing import Any

from neurondock_platform.api import context, shapes
from neurondock_platform.api.sagemaker.operations._common import (
    listing,
    owner,
    page_request,
    sagemaker_operation,
    timestamp,
)
from neurondock_platform.services import endpoints


@sagemaker_operation("CreateEndpoint")
def create_endpoint(params: dict[str, Any]) -> dict[str, Any]:
    endpoint = endpoints.create_endpoint(
        context.db(),
        **owner(),
        name=params["EndpointName"],
        config_name=params["EndpointConfigName"],
        deployment_config=params.get("DeploymentConfig"),
        tag_list=params.get("Tags"),
    )
    return {"EndpointArn": endpoint.arn}


@sagemaker_operation("DescribeEndpoint")
def describe_endpoint(params: dict[str, Any]) -> dict[str, Any]:
    return shapes.describe_endpoint(endpoints.get_endpoint(context.db(), **owner(), name=params["EndpointName"]))


@sagemaker_operation("DeleteEndpoint")
def delete_endpoint(params: dict[str, Any]) -> dict[str, Any]:
    endpoints.delete_endpoint(context.db(), **owner(), name=params["EndpointName"])
    return {}


@sagemaker_operation("ListEndpoints")
def list_endpoints(params: dict[str, Any]) -> dict[str, Any]:
    page = endpoints.list_endpoints(
        context.db(),
        account_id=context.auth().account_id,
        page=page_request(params),
        name_contains=params.get("NameContains"),
        status=params.get("StatusEquals"),
        created_before=timestamp(params, "CreationTimeBefore"),
        created_after=timestamp(params, "CreationTimeAfter"),
        modified_before=timestamp(params, "LastModifiedTimeBefore"),
        modified_after=timestamp(params, "LastModifiedTimeAfter"),
    )
    return listing("Endpoints", page, shapes.endpoint_summary)


@sagemaker_operation("UpdateEndpoint")
def update_endpoint(params: dict[str, Any]) -> dict[str, Any]:
    endpoint = endpoints.update_endpoint(
        context.db(),
        **owner(),
        name=params["EndpointName"],
        config_name=params["EndpointConfigName"],
        retain_all_variant_properties=bool(params.get("RetainAllVariantProperties", False)),
        exclude_retained_variant_properties=[
            p["VariantPropertyType"] for p in params.get("ExcludeRetainedVariantProperties") or []
        ],
        deployment_config=params.get("DeploymentConfig"),
        retain_deployment_config=bool(params.get("RetainDeploymentConfig", False)),
    )
    return {"EndpointArn": endpoint.arn}


@sagemaker_operation("UpdateEndpointWeightsAndCapacities")
def update_endpoint_weights_and_capacities(params: dict[str, Any]) -> dict[str, Any]:
    endpoint = endpoints.update_weights_and_capacities(
        context.db(), **owner(), name=params["EndpointName"], desired=params["DesiredWeightsAndCapacities"]
    )
    return {"EndpointArn": endpoint.arn}
