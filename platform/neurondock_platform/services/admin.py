"""Operator views over the stored state: endpoint history, replica logs, errors, metrics, compile reports.

The verbs that change models, configs and endpoints live in their own services; the two composite
verbs here (``create_model``, ``deploy_model`` = CreateEndpointConfig + CreateEndpoint) only check
their input against botocore's SageMaker shapes, exactly as the SageMaker API does, and call them.
What this module adds is what operators look at:

- ``endpoint_history``: one timeline of the endpoint's recorded status changes (``endpoint_events``)
  and its replicas' placements, health checks and failures (from the replica records, which keep
  only each replica's latest state);
- ``read_replica_logs``: each replica's ``replica.log`` under ``settings.replicas_dir/<id>/`` when the
  replica runs on this host, else the ``log_tail`` its host agent stored; a cursor lets a client
  follow the logs;
- ``metric_series``: time series per endpoint and variant with SageMaker's metric names, read from the
  metrics store the data plane writes (``services.metrics``); ModelSetupTime falls back to the
  replicas' own setup times when the store has none. Extra sources can be registered with
  ``register_metrics_source``;
- compile reports and projections of compilation jobs, and which job an endpoint's artifact came from;
- artifacts (upload, download, listing), owned per account: buckets of the embedded object store, or
  the account's one artifact bucket in an external S3 (``services/external_artifacts.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.config import Settings
from neurondock_platform.db import utcnow
from neurondock_platform.errors import AlreadyExistsError, PlatformError, ValidationException
from neurondock_platform.models import CompilationJob, CompilationJobStatus, Endpoint, EndpointEvent, Model
from neurondock_platform.s3_client import make_s3_client
from neurondock_platform.services import compilation_jobs, endpoint_configs, models, objects, pagination, validation
from neurondock_platform.services import endpoints as endpoint_service
from neurondock_platform.services import metrics as metrics_store
from neurondock_platform.services.external_artifacts import ExternalArtifacts
from neurondock_platform.services.fleet import ReplicaView, iso

LOG_FILE = "replica.log"
MAX_TAIL_LINES = 5000
DEFAULT_TAIL_LINES = 200
_TAIL_BYTES = 512 * 1024
_FOLLOW_BYTES = 1024 * 1024

# SageMaker's endpoint metric names and units, plus neurondock's additions (services.metrics).
METRICS: dict[str, str] = dict(metrics_store.METRIC_UNITS)
STATISTICS = ("Sum", "Average", "Minimum", "Maximum", "SampleCount", "p50", "p99")
STORE_SOURCE = "metrics store (period summaries flushed by the data plane)"


# ------------------------------------------------------------------------------------------ history


def endpoint_history(
    endpoint: Endpoint, replicas: Iterable[ReplicaView], status_changes: Iterable[EndpointEvent] = ()
) -> list[dict[str, Any]]:
    """Return the endpoint's timeline, oldest first: recorded status changes beside replica records."""
    events: list[tuple[dt.datetime, str, str]] = []
    for change in status_changes:
        moved = f"{change.previous_status} → {change.status}" if change.previous_status else change.status
        events.append((change.occurred_at, "StatusChanged", moved + (f": {change.reason}" if change.reason else "")))
    pending = endpoint_service.pending_update(endpoint)
    if pending is not None:
        events.append((pending.started_at, "UpdateAccepted", f"UpdateEndpoint to config {pending.config_name}"))
    for variant in endpoint.variants:
        if variant.status_started_at is not None and variant.variant_status:
            detail = f"variant {variant.name}: {variant.variant_status}"
            if variant.status_message:
                detail += f" ({variant.status_message})"
            events.append((variant.status_started_at, "VariantStatus", detail))
    for replica in replicas:
        where = f"replica {replica.id} of {replica.variant_name} on host {replica.host_id}"
        events.append((replica.created_at, "ReplicaPlaced", where))
        if replica.state == "Ready":
            setup = f" after {replica.setup_seconds:.2f} s" if replica.setup_seconds is not None else ""
            events.append((replica.updated_at, "ReplicaReady", f"{where} passed its health check{setup}"))
        elif replica.state == "Failed":
            events.append((replica.updated_at, "ReplicaFailed", f"{where}: {replica.failure_reason or 'exited'}"))
        elif replica.state == "Stopped":
            events.append((replica.updated_at, "ReplicaStopped", where))
    events.sort(key=lambda e: e[0])
    return [{"time": iso(t), "event": kind, "detail": detail} for t, kind, detail in events]


HISTORY_NOTE = (
    "Status changes come from the endpoint's event log (also at /endpoints/{name}/events); replica events are "
    "derived from the replica records, which keep each replica's latest state only."
)


# --------------------------------------------------------------------------------------------- logs


@dataclass
class LogChunk:
    """Lines of one replica's log and where they came from."""

    replica_id: int
    variant_name: str | None
    host_id: str
    state: str
    source: str
    lines: list[str]
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "variant_name": self.variant_name,
            "host_id": self.host_id,
            "state": self.state,
            "source": self.source,
            "lines": self.lines,
        }


def replica_log_path(settings: Settings, replica_id: int) -> Path:
    """Return where the host agent writes a replica's log on its host."""
    return settings.replicas_dir / str(replica_id) / LOG_FILE


def _tail(path: Path, lines: int) -> tuple[list[str], int]:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        data = f.read()
    text = data.decode("utf-8", "replace").splitlines()
    if size > _TAIL_BYTES and text:
        text = text[1:]  # the first line was cut by the seek
    return text[-lines:] if lines else [], size


def _since(path: Path, offset: int) -> tuple[list[str], int]:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        if offset > size:
            offset = 0  # the log was rotated: start over
        f.seek(offset)
        data = f.read(_FOLLOW_BYTES)
    # Only hand out whole lines; a partial last line waits for the next call.
    cut = data.rfind(b"\n") + 1
    return data[:cut].decode("utf-8", "replace").splitlines(), offset + cut


def encode_log_cursor(endpoint_id: int, offsets: dict[int, int]) -> str:
    """Return an opaque cursor holding each replica log's read position."""
    return pagination.encode_token({"s": f"logs:{endpoint_id}", "o": {str(k): v for k, v in offsets.items()}})


def decode_log_cursor(endpoint_id: int, cursor: str) -> dict[int, int]:
    """Return the read positions of a cursor issued for this endpoint."""
    payload = pagination.decode_token(cursor)
    raw = payload.get("o")
    if payload.get("s") != f"logs:{endpoint_id}" or not isinstance(raw, dict):
        raise ValidationException(
            "Invalid log cursor: pass back the cursor a previous call for this endpoint returned."
        )
    try:
        return {int(k): int(v) for k, v in raw.items() if int(v) >= 0}
    except (TypeError, ValueError) as exc:
        raise ValidationException("Invalid log cursor.") from exc


def read_replica_logs(
    settings: Settings,
    replicas: Iterable[ReplicaView],
    log_tails: dict[int, str | None],
    *,
    lines: int = DEFAULT_TAIL_LINES,
    offsets: dict[int, int] | None = None,
) -> tuple[list[LogChunk], dict[int, int]]:
    """Return each replica's last ``lines`` lines (or what was appended since ``offsets``) and new offsets."""
    lines = max(0, min(MAX_TAIL_LINES, lines))
    chunks = []
    positions: dict[int, int] = {}
    for replica in replicas:
        path = replica_log_path(settings, replica.id)
        local = replica.host_id == settings.host_id and path.is_file()
        if local:
            try:
                if offsets is not None and replica.id in offsets:
                    text, position = _since(path, offsets[replica.id])
                else:
                    text, position = _tail(path, lines)
            except OSError:
                local = False
            else:
                positions[replica.id] = position
                chunks.append(
                    LogChunk(replica.id, replica.variant_name, replica.host_id, replica.state, "file", text, position)
                )
                continue
        stored = (log_tails.get(replica.id) or "").splitlines()
        if offsets is not None and replica.id in offsets:
            stored = []  # a stored tail has no positions to follow: it was sent with the first call
        positions[replica.id] = 0
        chunks.append(
            LogChunk(
                replica.id,
                replica.variant_name,
                replica.host_id,
                replica.state,
                "database" if stored or log_tails.get(replica.id) else "none",
                stored[-lines:] if lines else [],
            )
        )
    return chunks, positions


# ------------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class MetricQuery:
    """One time series: an endpoint's (or one variant's) metric, aggregated per period."""

    endpoint_id: int
    endpoint_name: str
    account_id: str
    variant_name: str | None
    metric: str
    statistic: str
    start: dt.datetime
    end: dt.datetime
    period_seconds: int


@dataclass
class Series:
    query: MetricQuery
    available: bool
    points: list[tuple[dt.datetime, float]] = field(default_factory=list)
    source: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint_name": self.query.endpoint_name,
            "variant_name": self.query.variant_name,
            "metric": self.query.metric,
            "statistic": self.query.statistic,
            "unit": METRICS[self.query.metric],
            "period_seconds": self.query.period_seconds,
            "start": iso(self.query.start),
            "end": iso(self.query.end),
            "available": self.available,
            "source": self.source,
            "reason": self.reason,
            "points": [{"time": iso(t), "value": v} for t, v in self.points],
        }


MetricsSource = Callable[[Session, MetricQuery], "list[tuple[dt.datetime, float]] | None"]
_SOURCES: list[MetricsSource] = []


def register_metrics_source(source: MetricsSource) -> None:
    """Install an extra metrics source, asked before the store; the first answer (not None) wins."""
    if source not in _SOURCES:
        _SOURCES.append(source)


def _statistic(point: metrics_store.Datapoint, statistic: str) -> float | None:
    values: dict[str, float | None] = {
        "Sum": point.sum,
        "SampleCount": float(point.sample_count),
        "Average": point.average,
        "Minimum": point.minimum,
        "Maximum": point.maximum,
        "p50": point.p50,
        "p99": point.p99,
    }
    return values[statistic]


def check_metric_query(metric: str, statistic: str) -> None:
    """Raise ValidationException for an unknown metric or statistic."""
    if metric not in METRICS:
        raise ValidationException(f"Unknown metric {metric!r}; neurondock records {', '.join(METRICS)}.")
    if statistic not in STATISTICS:
        raise ValidationException(f"Unknown statistic {statistic!r}; use one of {', '.join(STATISTICS)}.")


def metric_series(session: Session, query: MetricQuery, replicas: Iterable[ReplicaView] = ()) -> Series:
    """Return a metric's points per period (periods without data have none, as in CloudWatch)."""
    check_metric_query(query.metric, query.statistic)
    for source in _SOURCES:
        found = source(session, query)
        if found is not None:
            return Series(query, True, sorted(found), source=getattr(source, "__module__", "metrics"))
    datapoints = metrics_store.series(
        session,
        query.account_id,
        query.endpoint_name,
        query.metric,
        query.start,
        query.end,
        query.period_seconds,
        variant_name=query.variant_name,
    )
    points = [(p.timestamp, v) for p in datapoints if (v := _statistic(p, query.statistic)) is not None]
    if points or query.metric != "ModelSetupTime":
        return Series(query, True, points, source=STORE_SOURCE)
    if query.metric == "ModelSetupTime":
        points = [
            (r.updated_at, round(r.setup_seconds * 1e6, 1))
            for r in replicas
            if r.setup_seconds is not None
            and (query.variant_name is None or r.variant_name == query.variant_name)
            and query.start <= r.updated_at <= query.end
        ]
        return Series(
            query,
            True,
            sorted(points),
            source="replicas (one point per replica start, not aggregated)",
        )
    return Series(query, True, [], source=STORE_SOURCE)


def invocations_last_hour(session: Session, endpoint: Endpoint) -> tuple[float | None, str]:
    """Return the invocations the endpoint served in the last hour and the source of the number."""
    end = utcnow()
    query = MetricQuery(
        endpoint_id=endpoint.id,
        endpoint_name=endpoint.name,
        account_id=endpoint.account_id,
        variant_name=None,
        metric="Invocations",
        statistic="Sum",
        start=end - dt.timedelta(hours=1),
        end=end,
        period_seconds=3600,
    )
    series = metric_series(session, query)
    if not series.available:
        return None, series.reason or "no metrics recorded"
    return float(sum(v for _, v in series.points)), f"Invocations over the last hour ({series.source})"


# ---------------------------------------------------------------------------------------- artifacts


def artifact_bucket_name(account_id: str) -> str:
    """Return the bucket the console and CLI use for an account's uploads."""
    return f"nd-artifacts-{account_id}"


def embedded_store(settings: Settings) -> objects.ObjectStore:
    """Return the embedded object store."""
    return objects.ObjectStore(settings.objects_dir)


@functools.cache
def _external_client(endpoint: str, region: str, access_key: str, secret_key: str) -> Any:
    # One client per configuration: building a boto3 client costs tens of milliseconds; calls are thread-safe.
    settings = Settings(
        s3_endpoint_url=endpoint, region=region, s3_access_key_id=access_key, s3_secret_access_key=secret_key
    )
    return make_s3_client(settings)


def external_artifacts(settings: Settings, account_id: str) -> ExternalArtifacts | None:
    """Return the account's artifact bucket in the external S3 store, or None when the store is embedded."""
    if not settings.s3_endpoint_url:
        return None
    key = (settings.s3_endpoint_url, settings.region, settings.s3_access_key_id, settings.s3_secret_access_key)
    return ExternalArtifacts(lambda: _external_client(*key), artifact_bucket_name(account_id), settings.s3_endpoint_url)


@dataclass(frozen=True)
class ObjectPage:
    items: list[objects.ObjectInfo]
    next_token: str | None


def list_artifacts(
    session: Session,
    settings: Settings,
    *,
    account_id: str,
    bucket: str,
    prefix: str = "",
    limit: int = 100,
    next_token: str | None = None,
) -> ObjectPage:
    """List one of the account's buckets (S3's NoSuchBucket / AccessDenied otherwise)."""
    after = ""
    if next_token:
        payload = pagination.decode_token(next_token)
        if payload.get("s") != f"objects:{bucket}:{prefix}" or not isinstance(payload.get("a"), str):
            raise pagination.invalid_token()
        after = payload["a"]
    external = external_artifacts(settings, account_id)
    if external is not None:
        items, s3_token = external.list(bucket, prefix=prefix, limit=limit, token=after or None)
        token = pagination.encode_token({"s": f"objects:{bucket}:{prefix}", "a": s3_token}) if s3_token else None
        return ObjectPage(items, token)
    store = embedded_store(settings)
    objects.owned_bucket(session, bucket, account_id)
    page = store.list_objects(bucket, prefix=prefix, after=after, max_keys=limit)
    token = None
    if page.is_truncated and page.last is not None:
        token = pagination.encode_token({"s": f"objects:{bucket}:{prefix}", "a": page.last})
    return ObjectPage(page.contents, token)


def put_artifact(
    session: Session,
    settings: Settings,
    *,
    account_id: str,
    bucket: str,
    key: str,
    body: IO[bytes] | bytes,
    content_type: str | None = None,
) -> objects.ObjectInfo:
    """Store an object in one of the account's buckets, creating the bucket when it does not exist."""
    external = external_artifacts(settings, account_id)
    if external is not None:
        objects.validate_key(key)
        return external.put(bucket, key, body, content_type)
    store = embedded_store(settings)
    objects.ensure_bucket(session, store, name=bucket, account_id=account_id, region=settings.region)
    meta = objects.ObjectMeta(content_type=content_type or objects.DEFAULT_CONTENT_TYPE)
    return store.put_object(bucket, key, body, meta)


def open_artifact(
    session: Session, settings: Settings, *, account_id: str, bucket: str, key: str
) -> tuple[objects.ObjectInfo, IO[bytes]]:
    """Open an object of one of the account's buckets for reading."""
    objects.validate_key(key)
    external = external_artifacts(settings, account_id)
    if external is not None:
        return external.open(bucket, key)
    store = embedded_store(settings)
    objects.owned_bucket(session, bucket, account_id)
    return store.open_object(bucket, key)


def iter_file(handle: IO[bytes], chunk: int = 256 * 1024) -> Iterator[bytes]:
    """Yield a file's bytes in chunks and close it."""
    with handle:
        while True:
            data = handle.read(chunk)
            if not data:
                return
            yield data


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


# ------------------------------------------------------------------------------ composite verbs


def create_model(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    image: str,
    model_data_url: str | None,
    environment: dict[str, str] | None = None,
    execution_role_arn: str | None = None,
) -> Model:
    """CreateModel with one container, checked exactly as the SageMaker API checks it."""
    container: dict[str, Any] = {"Image": image}
    if model_data_url:
        container["ModelDataUrl"] = model_data_url
    if environment:
        container["Environment"] = environment
    request: dict[str, Any] = {"ModelName": name, "PrimaryContainer": container}
    if execution_role_arn:
        request["ExecutionRoleArn"] = execution_role_arn
    validation.validate_input("CreateModel", request)
    return models.create_model(
        session,
        account_id=account_id,
        region=region,
        name=name,
        primary_container=container,
        execution_role_arn=execution_role_arn,
    )


def config_name_for(endpoint_name: str, now: dt.datetime | None = None) -> str:
    """Return a new endpoint-config name for a one-step deploy of ``endpoint_name`` (at most 63 chars)."""
    stamp = (now or utcnow()).strftime("%Y%m%d%H%M%S")
    return f"{endpoint_name[:48].rstrip('-')}-{stamp}"


def deploy_model(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    model_name: str,
    instance_type: str,
    instance_count: int = 1,
    variant_name: str = "AllTraffic",
    config_name: str | None = None,
) -> Endpoint:
    """CreateEndpointConfig (one variant) + CreateEndpoint, checked as the SageMaker API checks them."""
    config_name = config_name or config_name_for(name)
    variant = {
        "VariantName": variant_name,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
        "InitialVariantWeight": 1.0,
    }
    validation.validate_input("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": config_name})
    validation.validate_input(
        "CreateEndpointConfig", {"EndpointConfigName": config_name, "ProductionVariants": [variant]}
    )
    # Refuse before the config is created, so a taken name leaves no orphan config behind.
    arn = endpoint_service.endpoint_arn(region, account_id, name)
    if endpoint_service.find_endpoint(session, account_id, arn) is not None:
        raise AlreadyExistsError(kind=endpoint_service.KIND, arn=arn)
    endpoint_configs.create_endpoint_config(
        session, account_id=account_id, region=region, name=config_name, production_variants=[variant]
    )
    return endpoint_service.create_endpoint(
        session, account_id=account_id, region=region, name=name, config_name=config_name
    )


# -------------------------------------------------------------------------------- compilation jobs

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


def compile_log(settings: Settings, job: CompilationJob) -> tuple[str, str]:
    """Return a job's compile log and where it came from (the stored object, else the stored tail)."""
    uri = compilation_jobs.report_uris(job.model_artifacts).get("compile.log") if job.model_artifacts else None
    if uri and not settings.s3_endpoint_url:
        bucket, key = compilation_jobs.split_s3_uri(uri)
        try:
            data = objects.ObjectStore(settings.objects_dir).get_object(bucket, key)
        except (PlatformError, OSError):
            pass
        else:
            return data.decode("utf-8", "replace"), uri
    return job.log_tail or "", "log tail stored with the job"


def projection_for_endpoint(session: Session, endpoint: Endpoint) -> tuple[dict[str, Any] | None, str | None]:
    """Return the projection of the compile job whose artifact the endpoint serves, and the job's name."""
    urls = [v.container.get("ModelDataUrl") for v in endpoint.variants if v.container.get("ModelDataUrl")]
    if not urls:
        return None, None
    job = session.scalar(
        select(CompilationJob)
        .where(
            CompilationJob.account_id == endpoint.account_id,
            CompilationJob.status == CompilationJobStatus.COMPLETED,
            CompilationJob.model_artifacts.in_(urls),
        )
        .order_by(CompilationJob.last_modified_at.desc())
        .limit(1)
    )
    projection = _get(job.report, "projection") if job is not None else None
    if job is None or not isinstance(projection, dict):
        return None, None
    return projection, f"compilation job {job.name}"
