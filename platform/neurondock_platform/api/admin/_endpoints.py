"""Admin routes for endpoints: list, describe (variants, replicas, cores), create, scale, delete, and what
operators look at — status history, logs, recent invocation errors, metrics and cost."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypedDict

from flask import Blueprint, Response

from neurondock_platform.api import context
from neurondock_platform.api.admin import _params as params
from neurondock_platform.api.admin import shapes
from neurondock_platform.api.admin._auth import caller
from neurondock_platform.api.admin._errors import BadRequest, json_body
from neurondock_platform.db import utcnow
from neurondock_platform.models import Endpoint, EndpointEvent, EndpointStatus, InvocationErrorRecord
from neurondock_platform.services import (
    costs,
    data_capture,
    deploy,
    endpoint_events,
    endpoints,
    fleet,
    invocation_errors,
    metric_series,
    pagination,
    replica_logs,
    timelines,
)
from neurondock_platform.services.fleet import iso

STATUSES = [s.value for s in EndpointStatus]
HISTORY_NOTE = (
    "Status changes come from the endpoint's event log (also at /endpoints/{name}/events); replica events are "
    "derived from the replica records, which keep each replica's latest state only."
)


class Owner(TypedDict):
    account_id: str
    region: str


def owner() -> Owner:
    return {"account_id": caller().account_id, "region": context.settings().region}


def load(name: str) -> Endpoint:
    """Return the caller's endpoint (404 for a missing one or another account's)."""
    return endpoints.get_endpoint(context.db(), **owner(), name=name)


def replicas_of(endpoint: Endpoint) -> list[fleet.ReplicaView]:
    return fleet.endpoint_replicas(context.db(), context.settings(), endpoint)


def detail(endpoint: Endpoint) -> dict[str, Any]:
    out = shapes.endpoint_detail(endpoint, replicas_of(endpoint), context.settings().public_url)
    # Records that could not be captured show here and on the console: AWS shows them nowhere.
    out["data_capture"] = shapes.data_capture_json(endpoint, data_capture.capture_counts(context.db(), endpoint))
    return out


def event_json(event: EndpointEvent) -> dict[str, Any]:
    return {
        "time": iso(event.occurred_at),
        "status": event.status,
        "previous_status": event.previous_status,
        "reason": event.reason,
    }


def error_json(error: InvocationErrorRecord) -> dict[str, Any]:
    return {
        "time": iso(error.occurred_at),
        "variant_name": error.variant_name,
        "replica_id": error.replica_id,
        "http_status": error.http_status,
        "error_code": error.error_code,
        "message": error.message,
        "original_status_code": error.original_status_code,
        "original_message": error.original_message,
        "request_id": error.request_id,
    }


def newest_first() -> pagination.PageRequest:
    """The page of a time-ordered list: ``limit`` and ``next_token``, newest first."""
    return pagination.PageRequest(
        max_results=params.integer("limit", params.DEFAULT_LIMIT, minimum=1, maximum=params.MAX_LIMIT),
        next_token=params.string("next_token", max_length=4096),
        sort_order=pagination.DESCENDING,
    )


def endpoint_record(name: str) -> dict[str, Any]:
    """Name, ARN and whether it is deleted, for the caller's endpoint or one deleted with its history kept."""
    known = endpoint_events.known_endpoint(context.db(), **owner(), name=name)
    return {"endpoint_name": known.name, "endpoint_arn": known.arn, "deleted": known.deleted}


def _period() -> int:
    period = params.integer("period", 60, minimum=10, maximum=86400)
    if period % 10:
        raise BadRequest("Query parameter 'period' must be a multiple of 10 seconds.")
    return period


def register(bp: Blueprint) -> None:
    @bp.get("/endpoints")
    def list_endpoints() -> Response:
        page = endpoints.list_endpoints(
            context.db(),
            account_id=caller().account_id,
            page=params.page(sort_fields=("name", "creation_time", "status")),
            status=params.choice("status", STATUSES),
            **params.list_filters(),
        )
        return json_body({"items": [shapes.endpoint_summary(e) for e in page.items], "next_token": page.next_token})

    @bp.post("/endpoints")
    def create_endpoint() -> Response:
        data = params.body()
        session = context.db()
        endpoint = deploy.deploy_model(
            session,
            **owner(),
            name=params.field(data, "name", str, required=True),
            model_name=params.field(data, "model_name", str, required=True),
            instance_type=params.field(data, "instance_type", str, required=True),
            instance_count=params.field(data, "instance_count", int, default=1),
            variant_name=params.field(data, "variant_name", str, default="AllTraffic"),
        )
        session.commit()
        return json_body(detail(endpoint), status=201)

    @bp.get("/endpoints/<name>")
    def describe_endpoint(name: str) -> Response:
        return json_body(detail(load(name)))

    @bp.delete("/endpoints/<name>")
    def delete_endpoint(name: str) -> Response:
        session = context.db()
        endpoints.delete_endpoint(session, **owner(), name=name)
        session.commit()
        return json_body({"name": name, "status": str(EndpointStatus.DELETING)}, status=202)

    @bp.post("/endpoints/<name>/capacity")
    def update_capacity(name: str) -> Response:
        data = params.body()
        variants = params.field(data, "variants", list, required=True)
        desired = []
        for item in variants:
            if not isinstance(item, dict):
                raise BadRequest("Each member of 'variants' must be an object.")
            entry: dict[str, Any] = {"VariantName": params.field(item, "name", str, required=True)}
            count = params.field(item, "instance_count", int)
            weight = item.get("weight")
            if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float)):
                raise BadRequest("Member 'weight' must be a number.")
            if count is not None:
                if count < 1:
                    raise BadRequest("Member 'instance_count' must be at least 1.")
                entry["DesiredInstanceCount"] = count
            if weight is not None:
                if weight < 0:
                    raise BadRequest("Member 'weight' must not be negative.")
                entry["DesiredWeight"] = float(weight)
            desired.append(entry)
        if not desired:
            raise BadRequest("Member 'variants' must name at least one variant.")
        session = context.db()
        endpoint = endpoints.update_weights_and_capacities(session, **owner(), name=name, desired=desired)
        session.commit()
        return json_body(detail(endpoint), status=202)

    @bp.post("/endpoints/<name>/update")
    def update_endpoint(name: str) -> Response:
        data = params.body()
        session = context.db()
        endpoint = endpoints.update_endpoint(
            session,
            **owner(),
            name=name,
            config_name=params.field(data, "endpoint_config_name", str, required=True),
            retain_all_variant_properties=params.field(data, "retain_all_variant_properties", bool, default=False),
        )
        session.commit()
        return json_body(detail(endpoint), status=202)

    @bp.get("/endpoints/<name>/replicas")
    def endpoint_replicas(name: str) -> Response:
        return json_body({"items": [r.to_json() for r in replicas_of(load(name))]})

    @bp.get("/endpoints/<name>/history")
    def endpoint_history(name: str) -> Response:
        endpoint = load(name)
        changes = endpoint_events.recent_events(context.db(), account_id=endpoint.account_id, name=endpoint.name)
        items = shapes.timeline_json(timelines.endpoint_timeline(endpoint, replicas_of(endpoint), changes))
        return json_body({"items": items, "note": HISTORY_NOTE})

    @bp.get("/endpoints/<name>/logs")
    def endpoint_logs(name: str) -> Response:
        endpoint = load(name)
        replica_id = params.integer("replica_id", 0, minimum=0, maximum=2**62)
        variant = params.string("variant", max_length=63)
        cursor = params.string("cursor", max_length=16384)
        lines = params.integer("lines", replica_logs.DEFAULT_TAIL_LINES, minimum=0, maximum=replica_logs.MAX_TAIL_LINES)
        replicas = [
            r
            for r in replicas_of(endpoint)
            if (not replica_id or r.id == replica_id) and (variant is None or r.variant_name == variant)
        ]
        chunks, next_cursor = replica_logs.endpoint_logs(
            context.db(), context.settings(), endpoint, replicas, lines=lines, cursor=cursor
        )
        return json_body(
            {
                "endpoint_name": endpoint.name,
                "replicas": [shapes.log_chunk_json(c) for c in chunks],
                "cursor": next_cursor,
            }
        )

    @bp.get("/endpoints/<name>/events")
    def endpoint_events_list(name: str) -> Response:
        record = endpoint_record(name)
        page = endpoint_events.list_events(context.db(), account_id=caller().account_id, name=name, page=newest_first())
        return json_body({**record, "items": [event_json(e) for e in page.items], "next_token": page.next_token})

    @bp.get("/endpoints/<name>/errors")
    def endpoint_errors(name: str) -> Response:
        record = endpoint_record(name)
        page = invocation_errors.list_errors(
            context.db(), account_id=caller().account_id, name=name, page=newest_first()
        )
        return json_body({**record, "items": [error_json(e) for e in page.items], "next_token": page.next_token})

    @bp.get("/endpoints/<name>/metrics")
    def endpoint_metrics(name: str) -> Response:
        endpoint = load(name)
        metric = params.choice("metric", list(metric_series.METRICS), "Invocations") or "Invocations"
        statistic = params.choice("statistic", list(metric_series.STATISTICS), "Sum") or "Sum"
        end = params.timestamp("end") or utcnow()
        start = params.timestamp("start") or end - dt.timedelta(hours=1)
        if start >= end:
            raise BadRequest("'start' must be before 'end'.")
        query = metric_series.MetricQuery(
            endpoint_id=endpoint.id,
            endpoint_name=endpoint.name,
            account_id=endpoint.account_id,
            variant_name=params.string("variant", max_length=63),
            metric=metric,
            statistic=statistic,
            start=start,
            end=end,
            period_seconds=_period(),
        )
        return json_body(shapes.series_json(metric_series.metric_series(context.db(), query, replicas_of(endpoint))))

    @bp.get("/endpoints/<name>/costs")
    def endpoint_costs(name: str) -> Response:
        return json_body(costs.endpoint_costs(context.db(), [load(name)])[0])

    @bp.get("/costs")
    def all_costs() -> Response:
        page = endpoints.list_endpoints(
            context.db(),
            account_id=caller().account_id,
            page=params.page(sort_fields=("name", "creation_time", "status")),
            name_contains=params.string("name_contains", max_length=63),
        )
        items = costs.endpoint_costs(context.db(), page.items)
        known = [i["usd_per_hour"] for i in items if i["usd_per_hour"] is not None]
        return json_body(
            {
                "items": items,
                "next_token": page.next_token,
                "page_usd_per_hour": round(sum(known), 4),
                "price_basis": "EC2 on-demand list price, us-east-1, Linux (not live; SageMaker hosting costs more)",
                "instance_types": costs.catalog_json(),
            }
        )
