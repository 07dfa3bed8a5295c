"""Lineage contexts of endpoints with unmodified boto3: ListContexts, DescribeContext, and what is not implemented."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.exceptions import ClientError
from tests.integration.control_plane.cp_helpers import arn


def test_each_endpoint_has_a_lineage_context_found_by_its_arn(sm, deployed):
    first = deployed("Scoring-A", config="c1")
    deployed("scoring-b", config="c2")
    found = sm.list_contexts(SourceUri=first)["ContextSummaries"]
    assert len(found) == 1
    (summary,) = found
    assert summary["ContextName"] == "Scoring-A-aws-endpoint"
    assert summary["ContextArn"] == arn("context", "scoring-a-aws-endpoint")
    assert summary["Source"] == {"SourceUri": first, "SourceType": "ARN"}
    assert summary["ContextType"] == "Endpoint" and isinstance(summary["CreationTime"], dt.datetime)

    described = sm.describe_context(ContextName=summary["ContextName"])
    assert {k: described[k] for k in summary} == summary
    # By ARN too, as the SDK's lineage queries do.
    assert sm.describe_context(ContextName=summary["ContextArn"])["ContextName"] == "Scoring-A-aws-endpoint"

    names = [c["ContextName"] for c in sm.list_contexts(SortBy="Name", SortOrder="Ascending")["ContextSummaries"]]
    assert names == ["Scoring-A-aws-endpoint", "scoring-b-aws-endpoint"]
    pages = sm.get_paginator("list_contexts").paginate(PaginationConfig={"PageSize": 1})
    assert sorted(c["ContextName"] for page in pages for c in page["ContextSummaries"]) == sorted(names)
    assert sm.list_contexts(ContextType="ModelPackageGroup")["ContextSummaries"] == []
    later = summary["CreationTime"] + dt.timedelta(days=1)
    assert sm.list_contexts(CreatedAfter=later)["ContextSummaries"] == []
    assert len(sm.list_contexts(CreatedBefore=later)["ContextSummaries"]) == 2


# The queries and time filters run on both engines above; the rest needs SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_a_context_goes_with_its_endpoint_and_bad_names_are_refused(sm, deployed, db):
    from sqlalchemy import delete

    from neurondock_platform.models import Endpoint

    deployed("e1")
    assert sm.describe_context(ContextName="e1-aws-endpoint")["Source"]["SourceUri"] == arn("endpoint", "e1")
    db(lambda session: session.execute(delete(Endpoint).where(Endpoint.name == "e1")))
    for name in ("e1-aws-endpoint", "e1", arn("context", "e1-aws-endpoint", "210987654321")):
        with pytest.raises(ClientError) as missing:
            sm.describe_context(ContextName=name)
        assert missing.value.response["Error"]["Code"] == "ResourceNotFound"
    with pytest.raises(ClientError) as invalid:
        sm.describe_context(ContextName="not a name!")
    assert invalid.value.response["Error"]["Code"] == "ValidationException"
    assert sm.list_contexts(SourceUri=arn("endpoint", "e1"))["ContextSummaries"] == []


@SQLITE_ONLY
def test_another_account_sees_no_context(deployed, ok, fails, as_other):
    endpoint_arn = deployed("e1")
    assert ok("ListContexts", {}, **as_other) == {"ContextSummaries": []}
    assert ok("ListContexts", {"SourceUri": endpoint_arn}, **as_other) == {"ContextSummaries": []}
    fails("DescribeContext", {"ContextName": "e1-aws-endpoint"}, code="ResourceNotFound", **as_other)
    fails("DescribeContext", {"ContextName": arn("context", "e1-aws-endpoint")}, code="ResourceNotFound", **as_other)


@SQLITE_ONLY
def test_lineage_graph_operations_answer_not_implemented(sm, deployed):
    context_arn = arn("context", "e1-aws-endpoint")
    deployed("e1")
    for call, kwargs in (
        (sm.list_associations, {"SourceArn": context_arn, "DestinationType": "ModelDeployment"}),
        (sm.query_lineage, {"StartArns": [context_arn], "Direction": "Descendants"}),
    ):
        with pytest.raises(ClientError) as refused:
            call(**kwargs)
        error = refused.value.response
        assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == ("NotImplemented", 501)
        assert "not implemented by neurondock" in error["Error"]["Message"]
