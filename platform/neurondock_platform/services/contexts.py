"""Lineage contexts: the one SageMaker creates for each endpoint, derived here from the endpoint itself.

SageMaker's lineage tracking makes a context of type ``Endpoint`` for every endpoint, its source URI
the endpoint's ARN; the SageMaker Python SDK's ``Predictor.endpoint_context()`` finds it with
``ListContexts(SourceUri=<endpoint ARN>)`` and loads it with ``DescribeContext`` (docs/lineage.md).
neurondock stores no lineage graph: each of an account's endpoints *is* its context, named
``<endpoint name>-aws-endpoint`` (the ``-aws-<kind>`` suffix SageMaker gives the entities it creates
for a resource), so a context lives exactly as long as its endpoint row and needs no table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import false, select
from sqlalchemy.orm import Session

from neurondock_platform.errors import PlatformError, ResourceNotFound
from neurondock_platform.models import Endpoint
from neurondock_platform.services import arns, endpoints, pagination

CONTEXT_TYPE = "Endpoint"
SOURCE_TYPE = "ARN"
SUFFIX = "-aws-endpoint"
ARN_KIND = "context"
SORT_COLUMNS = {"Name": Endpoint.name, "CreationTime": Endpoint.created_at}


class ContextNotFound(ResourceNotFound):
    """DescribeContext of a context the caller's account does not have."""

    fmt = "Context {arn} does not exist."


class LineageNotImplemented(PlatformError):
    """A lineage operation beyond the endpoint contexts (associations, actions, artifacts, queries)."""

    code = "NotImplemented"
    http_status = 501
    fmt = (
        "SageMaker.{operation} is not implemented by neurondock: its lineage is one context per endpoint "
        "(ListContexts, DescribeContext), with no associations, actions, artifacts or lineage queries."
    )


@dataclass(frozen=True)
class EndpointContext:
    """The lineage context of one endpoint."""

    name: str
    arn: str
    source_uri: str
    created_at: dt.datetime


def context_of(endpoint: Endpoint, region: str) -> EndpointContext:
    """Return the lineage context of an endpoint."""
    name = endpoint.name + SUFFIX
    return EndpointContext(
        name, arns.make_arn(region, endpoint.account_id, ARN_KIND, name), endpoint.arn, endpoint.created_at
    )


def list_contexts(
    session: Session,
    *,
    account_id: str,
    region: str,
    page: pagination.PageRequest,
    source_uri: str | None = None,
    context_type: str | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
) -> pagination.Page[EndpointContext]:
    """ListContexts over the account's endpoint contexts (the time bounds include their instant, as AWS's)."""
    stmt = select(Endpoint).where(Endpoint.account_id == account_id)
    if context_type is not None and context_type != CONTEXT_TYPE:
        stmt = stmt.where(false())  # every context here is an endpoint's
    if source_uri is not None:
        stmt = stmt.where(Endpoint.arn == source_uri)
    if created_after is not None:
        stmt = stmt.where(Endpoint.created_at >= created_after)
    if created_before is not None:
        stmt = stmt.where(Endpoint.created_at <= created_before)
    scope = pagination.fingerprint(
        op="ListContexts",
        sort=page.sort_by,
        order=page.sort_order,
        source=source_uri,
        type=context_type,
        created=[created_after, created_before],
    )
    rows = pagination.paginate(
        session, stmt, sort_column=SORT_COLUMNS[page.sort_by], id_column=Endpoint.id, request=page, scope=scope
    )
    return pagination.Page([context_of(e, region) for e in rows.items], rows.next_token)


def describe_context(session: Session, *, account_id: str, region: str, name: str) -> EndpointContext:
    """DescribeContext by name or ARN; raise ContextNotFound unless it is one of the account's endpoints'."""
    parsed = arns.parse_arn(name)
    if parsed is not None:
        if parsed.account_id != account_id or parsed.region != region or parsed.kind != ARN_KIND:
            raise ContextNotFound(arn=name)
        name = parsed.name
    arn = arns.make_arn(region, account_id, ARN_KIND, name)
    if not name.lower().endswith(SUFFIX):
        raise ContextNotFound(arn=arn)
    endpoint = endpoints.find_endpoint(
        session, account_id, endpoints.endpoint_arn(region, account_id, name[: -len(SUFFIX)])
    )
    if endpoint is None:
        raise ContextNotFound(arn=arn)
    return context_of(endpoint, region)
