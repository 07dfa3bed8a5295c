"""Console pages for endpoints: list and search, create, detail with live progress, scale, delete, invoke."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import urllib.error
import urllib.request
from typing import Any

from flask import Blueprint, Response, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from neurondock_platform import catalog
from neurondock_platform.api import context
from neurondock_platform.api.admin import shapes
from neurondock_platform.console import _session
from neurondock_platform.console._common import form_float, form_int, form_str, owner, page_request, render, search
from neurondock_platform.db import utcnow
from neurondock_platform.errors import NotFoundError, ValidationException
from neurondock_platform.models import Endpoint, EndpointStatus
from neurondock_platform.sagemaker_metrics import aligned_interval
from neurondock_platform.services import (
    costs,
    data_capture,
    deploy,
    endpoint_configs,
    endpoint_events,
    endpoints,
    fleet,
    invocation_errors,
    metric_series,
    models,
    pagination,
    replica_logs,
    timelines,
)
from neurondock_platform.services.autoscaling import activities as scaling_activities
from neurondock_platform.services.autoscaling import policies as scaling_policies
from neurondock_platform.services.autoscaling import targets as scalable_targets
from neurondock_platform.services.cloudwatch import alarms

IN_PROGRESS = sorted(s.value for s in endpoints.IN_PROGRESS)
CHARTS = [
    {"metric": "Invocations", "stats": ["Sum"], "title": "Invocations", "unit": "count"},
    {"metric": "InstanceCount", "stats": ["Maximum"], "title": "Instances", "unit": "count"},
    {"metric": "ModelLatency", "stats": ["p50", "p99"], "title": "ModelLatency", "unit": "µs"},
    {"metric": "OverheadLatency", "stats": ["p50", "p99"], "title": "OverheadLatency", "unit": "µs"},
    {"metric": "Invocation4XXErrors", "stats": ["Sum"], "title": "4XX errors", "unit": "count"},
    {"metric": "Invocation5XXErrors", "stats": ["Sum"], "title": "5XX errors", "unit": "count"},
    {"metric": "ModelSetupTime", "stats": ["Maximum"], "title": "ModelSetupTime", "unit": "µs"},
]
INVOKE_CONTENT_TYPES = ["application/json", "text/csv", "text/plain", "application/x-npy", "application/octet-stream"]
MAX_INVOKE_BODY = 1024 * 1024
# The endpoint page shows the newest status changes and failed invocations; the admin API pages the rest.
EVENTS_SHOWN = 20
ERRORS_SHOWN = 20
# ... and its newest scaling activities and alarm state changes (DescribeScalingActivities and
# DescribeAlarmHistory have the rest).
SCALING_SHOWN = 10
MAX_SHOWN_BODY = 64 * 1024
# The endpoint page's log panel shows (and follows) each replica's last lines.
LOG_LINES = 100


def load(name: str) -> Endpoint:
    return endpoints.get_endpoint(context.db(), **owner(), name=name)


def replicas_of(endpoint: Endpoint) -> list[fleet.ReplicaView]:
    return fleet.endpoint_replicas(context.db(), context.settings(), endpoint)


def instance_choices() -> list[dict[str, Any]]:
    """Instance types the create form offers, grouped by family, with their price caption."""
    out = []
    for entry in catalog.CATALOG.values():
        if not entry.deployable:
            continue
        price = costs.hourly(entry)
        hardware = (
            f"{entry.chips} Inferentia chip(s), {entry.neuron_cores} NeuronCores (emulated)"
            if entry.has_neuron
            else f"{entry.gpus} GPU (runs on CPU here)"
            if entry.gpus
            else "CPU"
        )
        out.append(
            {
                "name": entry.name,
                "family": entry.family,
                "label": f"{entry.name} — {entry.vcpus} vCPU, {hardware}"
                + (f", ${price:g}/h" if price is not None else ", price unknown"),
            }
        )
    return out


def _local_url(path: str) -> str:
    settings = context.settings()
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{path}"


def invoke_endpoint(name: str, body: bytes, content_type: str, accept: str, variant: str | None) -> dict[str, Any]:
    """InvokeEndpoint as the signed-in account, over HTTP to this server's runtime front door."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    me = _session.current()
    url = _local_url(f"/endpoints/{name}/invocations")
    headers = {"Content-Type": content_type, "Accept": accept}
    if variant:
        headers["X-Amzn-SageMaker-Target-Variant"] = variant
    aws = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(
        Credentials(me.access_key_id, me.credential.secret_access_key), "sagemaker", context.settings().region
    ).add_auth(aws)
    started = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers=dict(aws.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=context.settings().model_timeout + 5) as resp:
            status, reply, reply_headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        status, reply, reply_headers = exc.code, exc.read(), exc.headers
    except OSError as exc:
        return {
            "status": 502,
            "ok": False,
            "error": f"Could not reach the runtime at {url}: {exc}",
            "latency_ms": round((time.perf_counter() - started) * 1e3, 2),
        }
    latency = round((time.perf_counter() - started) * 1e3, 2)
    reply_type = reply_headers.get("Content-Type", "")
    shown = reply[:MAX_SHOWN_BODY]
    try:
        text: str | None = shown.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "status": status,
        "ok": 200 <= status < 300,
        "content_type": reply_type,
        "invoked_variant": reply_headers.get("X-Amzn-Invoked-Production-Variant"),
        "latency_ms": latency,
        "size": len(reply),
        "truncated": len(reply) > MAX_SHOWN_BODY,
        "body": text,
        "body_base64": None if text is not None else base64.b64encode(shown).decode(),
    }


def status_json(endpoint: Endpoint) -> dict[str, Any]:
    replicas = replicas_of(endpoint)
    detail = shapes.endpoint_detail(endpoint, replicas, context.settings().public_url)
    detail["in_progress"] = str(endpoint.status) in IN_PROGRESS
    detail["gone"] = False
    changes = endpoint_events.recent_events(context.db(), account_id=endpoint.account_id, name=endpoint.name)
    detail["history"] = shapes.timeline_json(timelines.endpoint_timeline(endpoint, replicas, changes))
    return detail


def json_response(payload: Any, status: int = 200) -> BaseResponse:
    return Response(json.dumps(payload, default=str), status=status, content_type="application/json")


def _scaling(row: Endpoint) -> dict[str, Any]:
    """The endpoint's autoscaling and alarms: targets with their policies, alarms, recent changes."""
    session = context.db()
    targets = scalable_targets.for_endpoint(session, account_id=row.account_id, endpoint_name=row.name)
    policies = [(t, p, scaling_policies.alarms_of(session, p)) for t in targets for p in t.policies]
    watching = alarms.endpoint_alarms(session, account_id=row.account_id, endpoint_name=row.name)
    names = [a.name for a in watching]
    return {
        "targets": targets,
        "policies": policies,
        "alarms": watching,
        "changes": alarms.recent_changes(session, account_id=row.account_id, alarm_names=names, limit=SCALING_SHOWN),
        "activities": scaling_activities.for_resources(
            session, row.account_id, [t.resource_id for t in targets], limit=SCALING_SHOWN
        ),
    }


def register(bp: Blueprint) -> None:
    @bp.get("/endpoints", endpoint="endpoints")
    def endpoints_page() -> str:
        status = request.args.get("status") or None
        if status is not None and status not in {s.value for s in EndpointStatus}:
            raise ValidationException(f"Unknown status {status!r}.")
        session = context.db()
        page = endpoints.list_endpoints(
            session, account_id=owner()["account_id"], page=page_request(), name_contains=search(), status=status
        )
        rows = []
        for endpoint in page.items:
            summary = shapes.endpoint_summary(endpoint)
            summary["usd_per_hour"] = costs.endpoint_cost(endpoint, traffic=costs.Traffic(None, ""))["usd_per_hour"]
            rows.append(summary)
        return render(
            "endpoints.html",
            section="endpoints",
            items=rows,
            next_token=page.next_token,
            q=search() or "",
            status=status or "",
            statuses=[s.value for s in EndpointStatus],
            first_page=not request.args.get("page"),
        )

    @bp.get("/new/endpoint")
    def new_endpoint() -> str:
        model_names = models.model_names(context.db(), account_id=owner()["account_id"])
        return render(
            "endpoint_new.html",
            section="endpoints",
            model_names=model_names,
            instance_types=instance_choices(),
            values={"model_name": request.args.get("model", ""), "instance_type": "ml.c5.large"},
            error=None,
        )

    @bp.post("/endpoints")
    def create_endpoint() -> BaseResponse | tuple[str, int]:
        session = context.db()
        try:
            endpoint = deploy.deploy_model(
                session,
                **owner(),
                name=form_str("name", max_length=63),
                model_name=form_str("model_name", max_length=63),
                instance_type=form_str("instance_type", max_length=64),
                instance_count=form_int("instance_count", minimum=1, maximum=64, default=1),
            )
            session.commit()
        except (ValidationException, NotFoundError) as exc:
            session.rollback()
            model_names = models.model_names(session, account_id=owner()["account_id"])
            page = render(
                "endpoint_new.html",
                section="endpoints",
                model_names=model_names,
                instance_types=instance_choices(),
                values=request.form,
                error=exc.message,
            )
            return page, 400
        return redirect(url_for("console.endpoint", name=endpoint.name))

    @bp.get("/endpoints/<name>")
    def endpoint(name: str) -> str:
        row = load(name)
        replicas = replicas_of(row)
        detail = shapes.endpoint_detail(row, replicas, context.settings().public_url)
        session = context.db()
        [cost] = costs.endpoint_costs(session, [row])
        chunks, _ = replica_logs.endpoint_logs(session, context.settings(), row, replicas, lines=LOG_LINES)
        config_names = endpoint_configs.config_names(
            session, account_id=row.account_id, exclude=row.endpoint_config_name
        )
        return render(
            "endpoint.html",
            section="endpoints",
            ep=detail,
            in_progress=str(row.status) in IN_PROGRESS,
            events=endpoint_events.list_events(
                session, account_id=row.account_id, name=row.name, page=pagination.PageRequest(EVENTS_SHOWN)
            ).items,
            errors=invocation_errors.list_errors(
                session, account_id=row.account_id, name=row.name, page=pagination.PageRequest(ERRORS_SHOWN)
            ).items,
            logs=chunks,
            cost=cost,
            charts=CHARTS,
            # A period and a half: each refresh then finds the period flushed since the last one.
            chart_refresh_ms=int(1500 * aligned_interval(context.settings().metrics_flush_seconds)),
            content_types=INVOKE_CONTENT_TYPES,
            can_update=row.status == EndpointStatus.IN_SERVICE,
            config_names=config_names,
            scaling=_scaling(row),
            capture=shapes.data_capture_json(row, data_capture.capture_counts(session, row)),
        )

    @bp.get("/endpoints/<name>/status.json")
    def endpoint_status(name: str) -> BaseResponse:
        try:
            row = load(name)
        except NotFoundError:
            # 200, not 404: the page polls this while a delete finishes, and "gone" is the expected answer.
            return json_response({"name": name, "status": "Deleted", "in_progress": False, "gone": True})
        return json_response(status_json(row))

    @bp.get("/endpoints/<name>/metrics.json")
    def endpoint_metrics(name: str) -> BaseResponse:
        try:
            row = load(name)
        except NotFoundError:
            # The page keeps refreshing its charts while a delete finishes: gone is an answer, not an error.
            return json_response({"available": False, "reason": "The endpoint is gone.", "points": [], "gone": True})
        metric = request.args.get("metric", "Invocations")
        statistic = request.args.get("stat", "Sum")
        metric_series.check_metric_query(metric, statistic)
        end = utcnow()
        raw_minutes = request.args.get("minutes", "60")
        minutes = min(max(int(raw_minutes), 5), 1440) if raw_minutes.isdigit() else 60
        query = metric_series.MetricQuery(
            endpoint_id=row.id,
            endpoint_name=row.name,
            account_id=row.account_id,
            variant_name=request.args.get("variant") or None,
            metric=metric,
            statistic=statistic,
            start=end - dt.timedelta(minutes=minutes),
            end=end,
            period_seconds=60,
        )
        return json_response(shapes.series_json(metric_series.metric_series(context.db(), query, replicas_of(row))))

    @bp.get("/endpoints/<name>/logs.json")
    def endpoint_logs(name: str) -> BaseResponse:
        try:
            row = load(name)
        except NotFoundError:
            return json_response({"replicas": [], "cursor": None, "gone": True})
        chunks, cursor = replica_logs.endpoint_logs(
            context.db(), context.settings(), row, replicas_of(row), lines=LOG_LINES, cursor=request.args.get("cursor")
        )
        return json_response({"replicas": [shapes.log_chunk_json(c) for c in chunks], "cursor": cursor})

    @bp.post("/endpoints/<name>/capacity")
    def update_capacity(name: str) -> BaseResponse:
        row = load(name)
        desired = []
        for variant in row.variants:
            count = form_int(f"count-{variant.name}", minimum=1, maximum=64, default=variant.desired_instance_count)
            weight = form_float(f"weight-{variant.name}", minimum=0.0, maximum=1e6)
            entry: dict[str, Any] = {"VariantName": variant.name}
            if count != variant.desired_instance_count:
                entry["DesiredInstanceCount"] = count
            if weight is not None and weight != variant.desired_weight:
                entry["DesiredWeight"] = weight
            if len(entry) > 1:
                desired.append(entry)
        if not desired:
            raise ValidationException("Nothing to change: give a new instance count or weight.")
        session = context.db()
        endpoints.update_weights_and_capacities(session, **owner(), name=name, desired=desired)
        session.commit()
        return redirect(url_for("console.endpoint", name=name))

    @bp.post("/endpoints/<name>/update")
    def update_endpoint(name: str) -> BaseResponse:
        session = context.db()
        endpoints.update_endpoint(
            session,
            **owner(),
            name=name,
            config_name=form_str("endpoint_config_name", max_length=63),
            retain_all_variant_properties=request.form.get("retain") == "on",
        )
        session.commit()
        return redirect(url_for("console.endpoint", name=name))

    @bp.post("/endpoints/<name>/delete")
    def delete_endpoint(name: str) -> BaseResponse:
        session = context.db()
        endpoints.delete_endpoint(session, **owner(), name=name)
        session.commit()
        return redirect(url_for("console.endpoint", name=name))

    @bp.post("/endpoints/<name>/invoke")
    def invoke(name: str) -> BaseResponse:
        load(name)
        content_type = request.form.get("content_type") or "application/json"
        if content_type not in INVOKE_CONTENT_TYPES:
            raise ValidationException(f"Content type must be one of {', '.join(INVOKE_CONTENT_TYPES)}.")
        accept = request.form.get("accept") or "application/json"
        if len(accept) > 256:
            raise ValidationException("Accept is too long.")
        upload = request.files.get("body_file")
        body = upload.read(MAX_INVOKE_BODY + 1) if upload is not None and upload.filename else None
        if body is None:
            body = (request.form.get("body") or "").encode()
        if len(body) > MAX_INVOKE_BODY:
            raise ValidationException("The console sends at most 1 MiB; use the SDK or boto3 for larger bodies.")
        variant = (request.form.get("variant") or "").strip() or None
        return json_response(invoke_endpoint(name, body, content_type, accept, variant))
