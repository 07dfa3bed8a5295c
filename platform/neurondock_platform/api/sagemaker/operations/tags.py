"""AddTags, ListTags, DeleteTags."""

from __future__ import annotations

from typing import Any

from neurondock_platform.api import context
from neurondock_platform.api.sagemaker.operations._common import (
    listing,
    owner,
    page_request,
    sagemaker_operation,
)
from neurondock_platform.services import pagination, tags

# ListTags' MaxResults has a minimum of 50 and no maximum; a resource has at most 50 tags.
LIST_TAGS_DEFAULT_MAX = 50


@sagemaker_operation("AddTags")
def add_tags(params: dict[str, Any]) -> dict[str, Any]:
    added = tags.add_tags(context.db(), **owner(), resource_arn=params["ResourceArn"], tags=params["Tags"])
    return {"Tags": added}


@sagemaker_operation("ListTags")
def list_tags(params: dict[str, Any]) -> dict[str, Any]:
    page = tags.list_tags(
        context.db(),
        **owner(),
        resource_arn=params["ResourceArn"],
        page=page_request(
            {k: params.get(k) for k in ("MaxResults", "NextToken")},
            default_sort="Position",
            default_order=pagination.ASCENDING,
            default_max=LIST_TAGS_DEFAULT_MAX,
        ),
    )
    return listing("Tags", page, lambda t: {"Key": t.key, "Value": t.value})


@sagemaker_operation("DeleteTags")
def delete_tags(params: dict[str, Any]) -> dict[str, Any]:
    tags.delete_tags(context.db(), **owner(), resource_arn=params["ResourceArn"], keys=params["TagKeys"])
    return {}
