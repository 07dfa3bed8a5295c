"""Shaping rows into the admin API's JSON (snake_case keys, ISO 8601 UTC times); the console reuses it."""

from __future__ import annotations

from typing import Any

from neurondock_platform import catalog
from neurondock_platform.models import (
    AccessKey,
    Account,
    CompilationJob,
    Endpoint,
    EndpointConfig,
    EndpointVariant,
    Model,
)
from neurondock_platform.services import costs, data_capture
from neurondock_platform.services import endpoints as endpoint_service
from neurondock_platform.services import models as model_service
from neurondock_platform.services.fleet import ReplicaView, iso
from neurondock_platform.services.metric_series import METRICS, Series
from neurondock_platform.services.replica_logs import LogChunk
from neurondock_platform.services.timelines import TimelineEvent


def model_summary(model: Model) -> dict[str, Any]:
    container = model_service.primary(model)
    return {
        "name": model.name,
        "arn": model.arn,
        "created_at": iso(model.created_at),
        "image": container.get("Image"),
    }


def model_detail(model: Model) -> dict[str, Any]:
    snapshot = model_service.container_snapshot(model)
    return {
        **model_summary(model),
        "model_data_url": snapshot.get("ModelDataUrl"),
        "environment": snapshot.get("Environment") or {},
        "execution_role_arn": model.execution_role_arn,
        "enable_network_isolation": model.enable_network_isolation,
    }


def config_summary(config: EndpointConfig) -> dict[str, Any]:
    return {
        "name": config.name,
        "arn": config.arn,
        "created_at": iso(config.created_at),
        "variant_count": len(config.production_variants),
    }


def config_detail(config: EndpointConfig) -> dict[str, Any]:
    return {
        **config_summary(config),
        "production_variants": [
            {
                "variant_name": v.get("VariantName"),
                "model_name": v.get("ModelName"),
                "instance_type": v.get("InstanceType"),
                "initial_instance_count": v.get("InitialInstanceCount"),
                "initial_variant_weight": v.get("InitialVariantWeight"),
            }
            for v in config.production_variants
        ],
    }


def hardware(instance_type: str) -> dict[str, Any] | None:
    """Return what one instance of the type offers (None for a type outside the catalog)."""
    entry = catalog.get(instance_type)
    return None if entry is None else costs.hardware_json(entry)


def endpoint_summary(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "arn": endpoint.arn,
        "status": str(endpoint.status),
        "created_at": iso(endpoint.created_at),
        "last_modified_at": iso(endpoint.last_modified_at),
        "endpoint_config_name": endpoint.endpoint_config_name,
        "instance_types": sorted({v.instance_type for v in endpoint.variants}),
        "instance_count": sum(v.desired_instance_count for v in endpoint.variants),
    }


def variant_json(variant: EndpointVariant, replicas: list[ReplicaView]) -> dict[str, Any]:
    return {
        "name": variant.name,
        "model_name": variant.model_name,
        "instance_type": variant.instance_type,
        "hardware": hardware(variant.instance_type),
        "desired_instance_count": variant.desired_instance_count,
        "current_instance_count": variant.current_instance_count,
        "desired_weight": variant.desired_weight,
        "current_weight": variant.current_weight,
        "status": variant.variant_status,
        "status_message": variant.status_message,
        "image": variant.container.get("Image"),
        "model_data_url": variant.container.get("ModelDataUrl"),
        "replicas": [r.to_json() for r in replicas if r.variant_name == variant.name],
    }


def endpoint_detail(endpoint: Endpoint, replicas: list[ReplicaView], public_url: str) -> dict[str, Any]:
    pending = endpoint_service.pending_update(endpoint)
    return {
        **endpoint_summary(endpoint),
        "failure_reason": endpoint.failure_reason,
        "invoke_url": f"{public_url.rstrip('/')}/endpoints/{endpoint.name}/invocations",
        "variants": [variant_json(v, replicas) for v in endpoint.variants],
        "pending_update": None
        if pending is None
        else {
            "endpoint_config_name": pending.config_name,
            "started_at": iso(pending.started_at),
            "variants": [
                {
                    "name": s.name,
                    "model_name": s.model_name,
                    "instance_type": s.instance_type,
                    "desired_instance_count": s.instance_count,
                    "desired_weight": s.weight,
                }
                for s in pending.variants
            ],
        },
    }


def data_capture_json(endpoint: Endpoint, counts: dict[str, Any]) -> dict[str, Any] | None:
    """The endpoint's live DataCaptureConfig and the records written and lost lately (None without capture)."""
    config = endpoint.extra.get("DataCaptureConfig")
    summary = data_capture.summary(config)
    if config is None or summary is None:
        return None
    header = config.get("CaptureContentTypeHeader") or {}
    return {
        "enable_capture": summary["EnableCapture"],
        "capture_status": summary["CaptureStatus"],
        "sampling_percentage": summary["CurrentSamplingPercentage"],
        "destination_s3_uri": summary["DestinationS3Uri"],
        "capture_modes": [o["CaptureMode"] for o in config.get("CaptureOptions") or []],
        "csv_content_types": list(header.get("CsvContentTypes") or []),
        "json_content_types": list(header.get("JsonContentTypes") or []),
        **counts,
    }


def account_json(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "is_admin": account.is_admin,
        "created_at": iso(account.created_at),
    }


def access_key_json(key: AccessKey, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "access_key_id": key.access_key_id,
        "account_id": key.account_id,
        "status": str(key.status),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }
    if with_secret:
        out["secret_access_key"] = key.secret_access_key
    return out


def timeline_json(events: list[TimelineEvent]) -> list[dict[str, Any]]:
    return [{"time": iso(e.time), "event": e.event, "detail": e.detail} for e in events]


def log_chunk_json(chunk: LogChunk) -> dict[str, Any]:
    return {
        "replica_id": chunk.replica_id,
        "variant_name": chunk.variant_name,
        "host_id": chunk.host_id,
        "state": chunk.state,
        "source": chunk.source,
        "lines": chunk.lines,
    }


def series_json(series: Series) -> dict[str, Any]:
    query = series.query
    return {
        "endpoint_name": query.endpoint_name,
        "variant_name": query.variant_name,
        "metric": query.metric,
        "statistic": query.statistic,
        "unit": METRICS[query.metric],
        "period_seconds": query.period_seconds,
        "start": iso(query.start),
        "end": iso(query.end),
        "available": series.available,
        "source": series.source,
        "reason": series.reason,
        "points": [{"time": iso(t), "value": v} for t, v in series.points],
    }


# ------------------------------------------------------------------ compilation jobs' reports

PROJECTION_FAMILIES = ("inf1", "g4dn", "c5")


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def compile_report_view(job: CompilationJob) -> dict[str, Any] | None:
    """Return the headline of a job's compile report (None until the job has one)."""
    report = job.report
    if not isinstance(report, dict):
        return None
    fallbacks = []
    for segment in _get(report, "partition", "segments") or []:
        if not isinstance(segment, dict) or segment.get("target") == "neuron":
            continue
        for operator, info in (segment.get("why_cpu") or {}).items():
            fallbacks.append(
                {
                    "segment": segment.get("name"),
                    "operator": operator,
                    "count": _get(info, "count"),
                    "reason": _get(info, "reason") or "",
                }
            )
    drift = _get(report, "numerics", "drift") or {}
    resources = report.get("resources") or {}
    execution = report.get("execution") or {}
    return {
        "emulated": bool(report.get("emulated", True)),
        "device": report.get("device"),
        "target": report.get("target"),
        "compiler": report.get("compiler"),
        "percent_supported": _get(report, "analyze", "percent_supported"),
        "supported_count": _get(report, "analyze", "supported_count"),
        "total_count": _get(report, "analyze", "total_count"),
        "unsupported_operators": _get(report, "analyze", "unsupported_operators") or [],
        "percent_compiled": _get(report, "partition", "percent_compiled"),
        "neuron_subgraphs": _get(report, "partition", "neuron_subgraphs"),
        "cpu_segments": _get(report, "partition", "cpu_segments"),
        "partition_warnings": _get(report, "partition", "warnings") or [],
        "cpu_fallbacks": fallbacks,
        "numerics": {
            "cast_mode": _get(report, "numerics", "cast_mode"),
            "dtype": _get(report, "numerics", "dtype"),
            "max_abs_error": drift.get("max_abs_error"),
            "mean_abs_error": drift.get("mean_abs_error"),
            "cosine_similarity": drift.get("cosine_similarity"),
            "label": _get(report, "numerics", "drift_label") or "emulated numerics vs FP32",
        },
        "resources": {
            "label": resources.get("label") or "estimate",
            "device_memory_per_replica_bytes": resources.get("device_memory_per_replica_bytes"),
            "device_memory_per_chip_bytes": resources.get("device_memory_per_chip_bytes"),
            "fits_one_chip": resources.get("fits_one_chip"),
            "replicas_per_chip": resources.get("replicas_per_chip"),
            "neuroncores_per_replica": resources.get("neuroncores_per_replica"),
            "suggested_batch_size": resources.get("suggested_batch_size"),
            "suggested_pipeline_cores": resources.get("suggested_pipeline_cores"),
            "weights_on_device_bytes": resources.get("weights_on_device_bytes"),
        },
        "execution": {
            "label": execution.get("label") or "measured on this host (CPU)",
            "selected": execution.get("selected"),
            "selected_p50_ms": execution.get("selected_p50_ms"),
            "uncompiled_p50_ms": execution.get("uncompiled_p50_ms"),
            "speedup_vs_uncompiled": execution.get("speedup_vs_uncompiled"),
        },
    }


def projections_view(job: CompilationJob) -> dict[str, Any] | None:
    """Return a job's projections per instance type beside the CPU measurement (None without a report)."""
    projection = _get(job.report, "projection")
    if not isinstance(projection, dict):
        return None
    rows = []
    for family in PROJECTION_FAMILIES:
        for row in projection.get(family) or []:
            if not isinstance(row, dict):
                continue
            rows.append(
                {
                    "family": family,
                    "instance_type": row.get("instance_type"),
                    "label": row.get("label") or "projected",
                    "batch_size": row.get("batch_size"),
                    "latency_ms": row.get("latency_ms"),
                    "throughput_per_s": row.get("throughput_per_s"),
                    "usd_per_hour": row.get("usd_per_hour"),
                    "cost_per_million_usd": row.get("cost_per_million_usd"),
                    "fits": row.get("fits", True),
                    "basis": row.get("basis"),
                }
            )
    calibration = projection.get("calibration") or {}
    return {
        "label": projection.get("label") or "projected, not measured on Inferentia",
        "measured_cpu": projection.get("measured_cpu"),
        "prices": projection.get("prices"),
        "rows": rows,
        "calibration": {
            "source": calibration.get("source"),
            "max_abs_residual_pct": calibration.get("max_abs_residual_pct"),
            "within_25pct": calibration.get("within_25pct"),
            "compared": calibration.get("compared"),
        },
        "assumptions": projection.get("assumptions"),
    }
