"""CreateEndpointConfig, DescribeEndpointConfig, DeleteEndpointConfig, ListEndpointConfigs."""

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
from neurondock_platform.services import endpoint_configs

# Members stored as given and echoed by DescribeEndpointConfig.
ECHOED = (*shapes.CONFIG_ECHO, "ShadowProductionVariants")


@sagemaker_operation("CreateEndpointConfig")
def create_endpoint_config(params: dict[str, Any]) -> dict[str, Any]:
    config = endpoint_configs.create_endpoint_config(
        context.db(),
        **owner(),
        name=params["EndpointConfigName"],
        production_variants=params["ProductionVariants"],
        extra={k: params[k] for k in ECHOED if params.get(k) is not None},
        tag_list=params.get("Tags"),
    )
    return {"EndpointConfigArn": config.arn}


@sagemaker_operation("DescribeEndpointConfig")
def describe_endpoint_config(params: dict[str, Any]) -> dict[str, Any]:
    config = endpoint_configs.get_endpoint_config(context.db(), **owner(), name=params["EndpointConfigName"])
    return shapes.describe_endpoint_config(config)


@sagemaker_operation("DeleteEndpointConfig")
def delete_endpoint_config(params: dict[str, Any]) -> dict[str, Any]:
    endpoint_configs.delete_endpoint_config(context.db(), **owner(), name=params["EndpointConfigName"])
    return {}


@sagemaker_operation("ListEndpointConfigs")
def list_endpoint_configs(params: dict[str, Any]) -> dict[str, Any]:
    page = endpoint_configs.list_endpoint_configs(
        context.db(),
        account_id=context.auth().account_id,
        page=page_request(params),
        name_contains=params.get("NameContains"),
        created_before=timestamp(params, "CreationTimeBefore"),
        created_after=timestamp(params, "CreationTimeAfter"),
    )
    return listing("EndpointConfigs", page, shapes.endpoint_config_summary)
