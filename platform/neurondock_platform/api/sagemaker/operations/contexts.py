"""ListContexts and DescribeContext, for the lineage context of each endpoint (services/contexts.py).

The lineage operations the SageMaker SDK's context helpers call next (``EndpointContext.models()``
lists associations, the others query lineage) answer ``NotImplemented`` rather than an empty graph.
"""

from __future__ import annotations

from typing import Any

from neurondock_platform.api import context
from neurondock_platform.api.sagemaker.operations._common import (
    listing,
    owner,
    page_request,
    sagemaker_operation,
    timestamp,
)
from neurondock_platform.api.shapes import epoch
from neurondock_platform.services import contexts


def _summary(ctx: contexts.EndpointContext) -> dict[str, Any]:
    return {
        "ContextArn": ctx.arn,
        "ContextName": ctx.name,
        "Source": {"SourceUri": ctx.source_uri, "SourceType": contexts.SOURCE_TYPE},
        "ContextType": contexts.CONTEXT_TYPE,
        "CreationTime": epoch(ctx.created_at),
        # The context is made with its endpoint and never changed after.
        "LastModifiedTime": epoch(ctx.created_at),
    }


@sagemaker_operation("ListContexts")
def list_contexts(params: dict[str, Any]) -> dict[str, Any]:
    page = contexts.list_contexts(
        context.db(),
        **owner(),
        page=page_request(params),
        source_uri=params.get("SourceUri"),
        context_type=params.get("ContextType"),
        created_after=timestamp(params, "CreatedAfter"),
        created_before=timestamp(params, "CreatedBefore"),
    )
    return listing("ContextSummaries", page, _summary)


@sagemaker_operation("DescribeContext")
def describe_context(params: dict[str, Any]) -> dict[str, Any]:
    found = contexts.describe_context(context.db(), **owner(), name=params["ContextName"])
    return {**_summary(found), "Properties": {}}


@sagemaker_operation("ListAssociations")
def list_associations(params: dict[str, Any]) -> dict[str, Any]:
    raise contexts.LineageNotImplemented(operation="ListAssociations")


@sagemaker_operation("QueryLineage")
def query_lineage(params: dict[str, Any]) -> dict[str, Any]:
    raise contexts.LineageNotImplemented(operation="QueryLineage")
