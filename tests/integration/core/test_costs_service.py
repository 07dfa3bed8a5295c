"""What endpoints cost, as a service: list prices times instances, per million at observed traffic, the
alternatives, the projection an endpoint serves, and a page of endpoints in a fixed number of queries."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event, select
from tests.conftest import ACCOUNT_ID
from tests.support.world import build_endpoint

from neurondock_platform import catalog
from neurondock_platform import sagemaker_metrics as sm
from neurondock_platform.db import session_scope
from neurondock_platform.models import CompilationJob, CompilationJobStatus, Endpoint, EndpointStatus
from neurondock_platform.services import costs, endpoint_status
from neurondock_platform.services import metrics as metric_store


def _endpoints(session_factory, names):
    with session_scope(session_factory) as session:
        rows = list(session.scalars(select(Endpoint).where(Endpoint.name.in_(names)).order_by(Endpoint.name)))
        for row in rows:
            _ = [v.container for v in row.variants]  # loaded before the session closes
        return rows


def _invocations(session_factory, name: str, count: int) -> None:
    """What the data plane's flush writes for ``count`` invocations five minutes ago."""
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=5)
    row = {
        "account_id": ACCOUNT_ID,
        "namespace": sm.namespace("Invocations"),
        "metric_name": "Invocations",
        "dimensions": sm.variant_dimensions(name, "AllTraffic"),
        "period_start": start,
        "period_seconds": 10,
        "sum": float(count),
        "sample_count": count,
        "minimum": 1.0,
        "maximum": 1.0,
        "unit": sm.unit("Invocations"),
        "source": "test",
    }
    with session_scope(session_factory) as session:
        metric_store.write_points(session, [row])


def test_hourly_cost_is_list_price_times_instances_with_its_basis(session_factory, settings):
    build_endpoint(session_factory, settings, "c5x2", instance_type="ml.c5.xlarge", count=2)
    (endpoint,) = _endpoints(session_factory, ["c5x2"])
    price = catalog.get("ml.c5.xlarge").ec2_on_demand
    assert price is not None
    cost = costs.endpoint_cost(endpoint, traffic=costs.Traffic(3600.0, "test"))
    assert cost["usd_per_hour"] == pytest.approx(price.usd_per_hour * 2)
    assert cost["usd_per_month_730h"] == pytest.approx(round(price.usd_per_hour * 2 * 730, 2))
    (variant,) = cost["variants"]
    assert variant["instance_count"] == 2 and variant["price"]["as_of"] == price.as_of
    observed = cost["per_million_at_observed_traffic"]
    assert observed["usd"] == pytest.approx(price.usd_per_hour * 2 * 1e6 / 3600, rel=1e-3)
    assert {a["family"] for a in cost["alternatives"]} == set(costs.FAMILIES)
    (current,) = [a for a in cost["alternatives"] if a["is_current"]]
    assert current["instance_type"] == "ml.c5.xlarge" and current["delta_usd_per_hour"] == 0
    # No traffic recorded: no cost per million rather than an infinite one.
    assert (
        costs.endpoint_cost(endpoint, traffic=costs.Traffic(0.0, "none"))["per_million_at_observed_traffic"]["usd"]
        is None
    )


def test_a_failed_endpoint_costs_what_it_runs(session_factory, settings):
    build_endpoint(session_factory, settings, "broken", instance_type="ml.c5.large", running=False)
    with session_scope(session_factory) as session:
        row = session.scalars(select(Endpoint).where(Endpoint.name == "broken")).one()
        endpoint_status.transition(session, row, EndpointStatus.FAILED, failure_reason="no capacity")
    (endpoint,) = _endpoints(session_factory, ["broken"])
    assert costs.endpoint_cost(endpoint, traffic=costs.Traffic(None, ""))["usd_per_hour"] == 0


def test_a_page_of_endpoints_costs_a_fixed_number_of_queries(session_factory, settings, engine):
    names = [f"page-{i}" for i in range(6)]
    for i, name in enumerate(names):
        build_endpoint(
            session_factory, settings, name, instance_type="ml.c5.large", model_data_url=f"s3://m/{name}.tar.gz"
        )
        _invocations(session_factory, name, 100 * (i + 1))
    # The newest completed compile job that wrote page-0's artifact is the projection it serves.
    projection = {"inf1": [{"instance_type": "ml.inf1.xlarge", "label": "projected", "cost_per_million_usd": 1.5}]}
    with session_scope(session_factory) as session:
        for age, report in ((2, {"projection": {"inf1": []}}), (1, {"projection": projection})):
            session.add(
                CompilationJob(
                    account_id=ACCOUNT_ID,
                    name=f"job-{age}",
                    arn=f"arn:aws:sagemaker:us-east-1:123456789012:compilation-job/job-{age}",
                    status=CompilationJobStatus.COMPLETED,
                    model_artifacts="s3://m/page-0.tar.gz",
                    report=report,
                    last_modified_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=age),
                    role_arn=f"arn:aws:iam::{ACCOUNT_ID}:role/R",
                    input_config={},
                    output_config={},
                    stopping_condition={},
                    target_device="ml_inf1",
                    max_runtime_seconds=900,
                    derived_data_input_config="{}",
                )
            )
    endpoints = _endpoints(session_factory, names)

    def statements(rows) -> tuple[int, list]:
        seen: list[str] = []

        def count(*args) -> None:
            seen.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        try:
            with session_factory() as session:
                result = costs.endpoint_costs(session, rows)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(seen), result

    one, _ = statements(endpoints[:1])
    many, result = statements(endpoints)
    assert many == one, "the query count grows with the number of endpoints"
    by_name = {c["endpoint_name"]: c for c in result}
    assert [by_name[n]["per_million_at_observed_traffic"]["invocations_per_hour"] for n in names] == [
        100.0 * (i + 1) for i in range(6)
    ]
    served = by_name["page-0"]
    assert served["projection_source"] == "compilation job job-1"
    inf1 = next(a for a in served["alternatives"] if a["family"] == "inf1")
    assert inf1["projected"]["cost_per_million_usd"] == 1.5 and inf1["projected"]["label"] == "projected"
    assert by_name["page-1"]["projection_source"] is None
