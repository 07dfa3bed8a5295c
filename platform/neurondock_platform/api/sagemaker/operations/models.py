"""CreateModel, DescribeModel, DeleteModel, ListModels."""

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
from neurondock_platform.services import models

# Members stored as given and echoed by DescribeModel.
ECHOED = ("InferenceExecutionConfig", "VpcConfig")


@sagemaker_operation("CreateModel")
def create_model(params: dict[str, Any]) -> dict[str, Any]:
    model = models.create_model(
        context.db(),
        **owner(),
        name=params["ModelName"],
        primary_container=params.get("PrimaryContainer"),
        containers=params.get("Containers"),
        execution_role_arn=params.get("ExecutionRoleArn"),
        enable_network_isolation=bool(params.get("EnableNetworkIsolation", False)),
        extra={k: params[k] for k in ECHOED if params.get(k) is not None},
        tag_list=params.get("Tags"),
    )
    return {"ModelArn": model.arn}


@sagemaker_operation("DescribeModel")
def describe_model(params: dict[str, Any]) -> dict[str, Any]:
    return shapes.describe_model(models.get_model(context.db(), **owner(), name=params["ModelName"]))


@sagemaker_operation("DeleteModel")
def delete_model(params: dict[str, Any]) -> dict[str, Any]:
    models.delete_model(context.db(), **owner(), name=params["ModelName"])
    return {}


@sagemaker_operation("ListModels")
def list_models(params: dict[str, Any]) -> dict[str, Any]:
    page = models.list_models(
        context.db(),
        account_id=context.auth().account_id,
        page=page_request(params),
        name_contains=params.get("NameContains"),
        created_before=timestamp(params, "CreationTimeBefore"),
        created_after=timestamp(params, "CreationTimeAfter"),
    )
    return listing("Models", page, shapes.model_summary)
