"""The metric store: the one place metric data is written, aggregated, rolled up and read.

Writers are the data plane (a row per stream per flush, ``dataplane/metrics.py``), the host agent
(instance CPU and memory) and CloudWatch's PutMetricData; readers are CloudWatch's
GetMetricStatistics / GetMetricData / ListMetrics, the alarm evaluator, the console's charts and the
admin API (``series``), and the fleet and neuron-monitor views (``replica_points``).

Rows are period aggregates (sample count, sum, extremes, a percentile sketch). Any period a reader
asks for is the merge of the rows inside it; a row coarser than the asked period is left out, as
CloudWatch returns no finer data than it keeps. Retention follows CloudWatch's rules
(docs/cloudwatch.md, "Retention"): sub-minute rows are kept 3 hours, then rolled up into 1-minute
rows kept 15 days, 5-minute rows kept 63 days and 1-hour rows kept 455 days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.orm import Session

from neurondock_platform import sagemaker_metrics as sm
from neurondock_platform.errors import ValidationException
from neurondock_platform.models import MetricDatapoint, MetricStream
from neurondock_platform.services import statistics
from neurondock_platform.sketch import Sketch, merged

# Kept for the admin API and console: the endpoint metrics and their units.
METRIC_UNITS: dict[str, str] = {name: unit for name, (_, unit) in sm.METRICS.items() if name not in sm.PER_REPLICA}
METRIC_UNITS["NeuronCoreUtilization"] = "Percent"
MIN_PERIOD = 10
MAX_DATAPOINTS = 1440
# (resolution, age): rows finer than the resolution and older than the age are rolled up into it.
ROLLUPS = (
    (60, dt.timedelta(hours=3)),
    (300, dt.timedelta(days=15)),
    (3600, dt.timedelta(days=63)),
)
RETENTION = dt.timedelta(days=455)
ROLLUP_CHUNK = 20_000

Dimensions = sm.Dimensions


@dataclass(frozen=True)
class StreamKey:
    """An account's metric: namespace, name and its dimension set in canonical (sorted) order."""

    account_id: str
    namespace: str
    metric_name: str
    dimensions: Dimensions


def canonical(dimensions: Iterable[tuple[str, str]]) -> Dimensions:
    """Return a dimension set in CloudWatch's order (by name); a set is the same metric in any order."""
    return tuple(sorted((str(n), str(v)) for n, v in dimensions))


def dimensions_hash(dimensions: Dimensions) -> str:
    raw = "\x1e".join(f"{name}\x1f{value}" for name, value in dimensions)
    return hashlib.sha256(raw.encode()).hexdigest()


def dimension_dicts(dimensions: Iterable[Sequence[str]]) -> list[dict[str, str]]:
    """Return dimensions as CloudWatch's ``[{"Name": …, "Value": …}]``."""
    return [{"Name": n, "Value": v} for n, v in dimensions]


# ------------------------------------------------------------------------------------------- writes


def _stream_values(key: StreamKey, digest: str) -> dict[str, Any]:
    named = dict(key.dimensions)
    replica = named.get(sm.REPLICA)
    return {
        "account_id": key.account_id,
        "namespace": key.namespace,
        "metric_name": key.metric_name,
        "dimensions": dimension_dicts(key.dimensions),
        "dimensions_hash": digest,
        "endpoint_name": named.get(sm.ENDPOINT, "")[:63] or None,
        "variant_name": named.get(sm.VARIANT, "")[:63] or None,
        "replica_id": int(replica) if replica is not None and replica.isdigit() else None,
        "created_at": dt.datetime.now(dt.UTC),
    }


def _upsert_streams(session: Session, todo: Mapping[StreamKey, str]) -> None:
    # The database's own dialect, already loaded by its engine: importing both here cost every process
    # PostgreSQL's dialect (~2 MB it kept) on SQLite, and SQLite's on PostgreSQL (docs/measured.md).
    upsert: Any  # the two dialects' insert constructs, each with its own on_conflict_do_nothing
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    statement = (
        upsert(MetricStream)
        .values([_stream_values(key, digest) for key, digest in todo.items()])
        .on_conflict_do_nothing(index_elements=["account_id", "namespace", "metric_name", "dimensions_hash"])
    )
    session.execute(statement)


# Streams looked up or created per statement: four bound values each, well under SQLite's limit.
STREAM_CHUNK = 200


def _look_streams(session: Session, todo: Mapping[StreamKey, str]) -> dict[StreamKey, int]:
    wanted = {(key.account_id, key.namespace, key.metric_name, digest): key for key, digest in todo.items()}
    columns = (MetricStream.account_id, MetricStream.namespace, MetricStream.metric_name, MetricStream.dimensions_hash)
    rows = session.execute(select(MetricStream.id, *columns).where(tuple_(*columns).in_(list(wanted))))
    return {wanted[(account, namespace, name, digest)]: id_ for id_, account, namespace, name, digest in rows}


def stream_ids(
    session: Session, keys: Iterable[StreamKey], cache: dict[StreamKey, int] | None = None
) -> dict[StreamKey, int]:
    """Return the ids of many streams, creating those that do not exist (safe against a concurrent writer).

    In at most three statements per ``STREAM_CHUNK`` unknown streams (look, create the missing, look
    again), not three per stream: a new endpoint's first metric flush creates a dozen or more.
    """
    found: dict[StreamKey, int] = {}
    todo: dict[StreamKey, str] = {}
    for key in keys:
        if cache is not None and key in cache:
            found[key] = cache[key]
        elif key not in todo:
            todo[key] = dimensions_hash(key.dimensions)
    pending = list(todo.items())
    for start in range(0, len(pending), STREAM_CHUNK):
        chunk = dict(pending[start : start + STREAM_CHUNK])
        looked = _look_streams(session, chunk)
        missing = {key: digest for key, digest in chunk.items() if key not in looked}
        if missing:
            _upsert_streams(session, missing)
            looked.update(_look_streams(session, missing))
        assert len(looked) == len(chunk)
        found.update(looked)
    if cache is not None:
        cache.update(found)
    return found


def write_points(session: Session, rows: Sequence[Mapping[str, Any]], cache: dict[StreamKey, int] | None = None) -> int:
    """Insert datapoints given as dicts (stream fields plus the aggregate); returns how many.

    Keys: ``account_id, namespace, metric_name, dimensions`` (name/value pairs), ``period_start,
    period_seconds, sample_count, sum, minimum, maximum, unit`` and optionally ``sketch`` (JSON of
    ``sketch.Sketch``), ``buckets`` and ``source``.
    """
    if not rows:
        return 0
    keys = [
        StreamKey(row["account_id"], row["namespace"], row["metric_name"], canonical(row["dimensions"])) for row in rows
    ]
    ids = stream_ids(session, keys, cache)
    values = []
    for row, key in zip(rows, keys, strict=True):
        values.append(
            {
                "stream_id": ids[key],
                "period_start": row["period_start"],
                "period_seconds": int(row["period_seconds"]),
                "sample_count": float(row["sample_count"]),
                "sum": float(row["sum"]),
                "minimum": row.get("minimum"),
                "maximum": row.get("maximum"),
                "unit": row.get("unit") or "None",
                "sketch": row.get("sketch") or None,
                "buckets": row.get("buckets") or None,
                "source": str(row.get("source") or "")[:64],
            }
        )
    session.execute(insert(MetricDatapoint), values)
    return len(values)


# -------------------------------------------------------------------------------------- aggregation


@dataclass
class PeriodData:
    """The merge of the rows inside one period."""

    aggregate: statistics.Aggregate
    unit: str
    buckets: dict[str, Any] = field(default_factory=dict)


def merge_buckets(into: dict[str, Any], other: Mapping[str, Any] | None) -> None:
    """Add numeric leaves (histograms, counters); other leaves (labels, percentiles) keep the newest."""
    for key, value in (other or {}).items():
        mine = into.get(key)
        if isinstance(value, bool) or value is None:
            into[key] = value
        elif isinstance(value, int | float) and isinstance(mine, int | float) and not isinstance(mine, bool):
            into[key] = mine + value
        elif isinstance(value, dict) and isinstance(mine, dict) and key not in _LATEST_WINS:
            merge_buckets(mine, value)
        else:
            into[key] = dict(value) if isinstance(value, dict) else value


# Nested payloads that describe one period rather than count it (a replica's latency percentiles).
_LATEST_WINS = frozenset({"total_latency", "device_latency"})


def merge_rows(rows: Sequence[MetricDatapoint]) -> PeriodData:
    """Merge datapoints into one period aggregate."""
    minima = [r.minimum for r in rows if r.minimum is not None]
    maxima = [r.maximum for r in rows if r.maximum is not None]
    units = [r.unit for r in rows]
    buckets: dict[str, Any] = {}
    for r in sorted(rows, key=lambda r: r.period_start):
        merge_buckets(buckets, r.buckets)
    return PeriodData(
        aggregate=statistics.Aggregate(
            sample_count=sum(r.sample_count for r in rows),
            sum=sum(r.sum for r in rows),
            minimum=min(minima) if minima else None,
            maximum=max(maxima) if maxima else None,
            sketch=merged(r.sketch for r in rows),
        ),
        unit=max(set(units), key=units.count) if units else "None",
        buckets=buckets,
    )


def bucketed(rows: Iterable[MetricDatapoint], start: dt.datetime, period: int) -> dict[dt.datetime, PeriodData]:
    """Group rows into ``period``-second buckets counted from ``start``; rows coarser than a bucket are left out."""
    groups: dict[int, list[MetricDatapoint]] = {}
    for row in rows:
        if row.period_seconds > period:
            continue
        index = int((row.period_start - start).total_seconds() // period)
        groups.setdefault(index, []).append(row)
    return {start + dt.timedelta(seconds=i * period): merge_rows(g) for i, g in sorted(groups.items())}


def points_of(
    session: Session, stream_ids: Sequence[int], start: dt.datetime, end: dt.datetime, unit: str | None = None
) -> list[MetricDatapoint]:
    """Return the rows of the given streams with ``start <= period_start < end``."""
    if not stream_ids:
        return []
    query = select(MetricDatapoint).where(
        MetricDatapoint.stream_id.in_(list(stream_ids)),
        MetricDatapoint.period_start >= start,
        MetricDatapoint.period_start < end,
    )
    if unit is not None:
        query = query.where(MetricDatapoint.unit == unit)
    return list(session.scalars(query.order_by(MetricDatapoint.period_start)))


def find_stream(session: Session, key: StreamKey) -> MetricStream | None:
    """Return the stream of exactly this metric and dimension set, or None."""
    return session.scalar(
        select(MetricStream).where(
            MetricStream.account_id == key.account_id,
            MetricStream.namespace == key.namespace,
            MetricStream.metric_name == key.metric_name,
            MetricStream.dimensions_hash == dimensions_hash(key.dimensions),
        )
    )


def periods(
    session: Session, key: StreamKey, start: dt.datetime, end: dt.datetime, period: int, unit: str | None = None
) -> dict[dt.datetime, PeriodData]:
    """Return one metric's data per ``period`` in [start, end): only periods that have data."""
    stream = find_stream(session, key)
    if stream is None:
        return {}
    return bucketed(points_of(session, [stream.id], start, end, unit), start, period)


# ------------------------------------------------------------------------------- platform readers


@dataclass
class Datapoint:
    """One period of one endpoint metric, for the charts and the admin API."""

    timestamp: dt.datetime
    sample_count: float
    sum: float
    minimum: float | None
    maximum: float | None
    p50: float | None
    p99: float | None
    unit: str
    buckets: dict[str, int] = field(default_factory=dict)

    @property
    def average(self) -> float:
        return self.sum / self.sample_count if self.sample_count else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the datapoint with CloudWatch's member names (plus p50, p99 and Buckets)."""
        out: dict[str, Any] = {
            "Timestamp": self.timestamp,
            "SampleCount": self.sample_count,
            "Sum": self.sum,
            "Average": self.average,
            "Minimum": self.minimum,
            "Maximum": self.maximum,
            "p50": self.p50,
            "p99": self.p99,
            "Unit": self.unit,
        }
        if self.buckets:
            out["Buckets"] = dict(self.buckets)
        return out


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def endpoint_streams(
    session: Session,
    account_id: str,
    endpoint_name: str,
    metric: str,
    *,
    variant_name: str | None = None,
    replica_id: int | None = None,
) -> list[int]:
    """Return the ids of an endpoint's streams of one platform metric (all variants unless narrowed)."""
    query = select(MetricStream.id).where(
        MetricStream.account_id == account_id,
        MetricStream.endpoint_name == endpoint_name,
        MetricStream.namespace == sm.namespace(metric),
        MetricStream.metric_name == metric,
    )
    if variant_name is not None:
        query = query.where(MetricStream.variant_name == variant_name)
    if replica_id is not None:
        query = query.where(MetricStream.replica_id == replica_id)
    return list(session.scalars(query))


def series(
    session: Session,
    account_id: str,
    endpoint_name: str,
    metric: str,
    start: dt.datetime,
    end: dt.datetime,
    period: int,
    *,
    variant_name: str | None = None,
    replica_id: int | None = None,
) -> list[Datapoint]:
    """Return one datapoint per ``period`` seconds in [start, end) that has data, oldest first.

    ``variant_name`` narrows to one variant (all variants add up otherwise); ``replica_id`` to one
    replica for per-replica metrics (NeuronCoreUtilization averages over replicas otherwise).

    Raises:
        ValidationException: an unknown metric, a period under 10 s or not a multiple of 10, an
            empty range, or more than 1,440 datapoints (CloudWatch's limit).
    """
    if metric not in METRIC_UNITS:
        raise ValidationException(f"Unknown metric {metric!r}; known: {', '.join(METRIC_UNITS)}.")
    if period < MIN_PERIOD or period % MIN_PERIOD:
        raise ValidationException(f"The period must be a multiple of {MIN_PERIOD} seconds, got {period}.")
    start, end = _aware(start), _aware(end)
    if end <= start:
        raise ValidationException("The end time must be after the start time.")
    if (end - start).total_seconds() / period > MAX_DATAPOINTS:
        raise ValidationException(f"At most {MAX_DATAPOINTS} datapoints per call; use a longer period.")
    ids = endpoint_streams(session, account_id, endpoint_name, metric, variant_name=variant_name, replica_id=replica_id)
    out = []
    for timestamp, data in bucketed(points_of(session, ids, start, end), start, period).items():
        agg = data.aggregate
        histogram = {
            k: int(v) for k, v in data.buckets.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        out.append(
            Datapoint(
                timestamp=timestamp,
                sample_count=agg.sample_count,
                sum=agg.sum,
                minimum=agg.minimum,
                maximum=agg.maximum,
                p50=statistics.value(agg, "p50"),
                p99=statistics.value(agg, "p99"),
                unit=METRIC_UNITS[metric],
                buckets=histogram,
            )
        )
    return out


def endpoint_sums(
    session: Session, metric: str, endpoints: Iterable[tuple[str, str]], start: dt.datetime, end: dt.datetime
) -> dict[tuple[str, str], float]:
    """Return the Sum of a platform metric over [start, end) per (account id, endpoint name), in two queries.

    Endpoints without data are left out. Rows coarser than the range are left out, as ``series`` does
    for a period as long as the range.
    """
    wanted = set(endpoints)
    if not wanted:
        return {}
    start, end = _aware(start), _aware(end)
    owners: dict[int, tuple[str, str]] = {}
    for sid, account_id, name in session.execute(
        select(MetricStream.id, MetricStream.account_id, MetricStream.endpoint_name).where(
            MetricStream.account_id.in_({a for a, _ in wanted}),
            MetricStream.endpoint_name.in_({n for _, n in wanted}),
            MetricStream.namespace == sm.namespace(metric),
            MetricStream.metric_name == metric,
        )
    ):
        if name is not None and (account_id, name) in wanted:
            owners[sid] = (account_id, name)
    span = (end - start).total_seconds()
    out: dict[tuple[str, str], float] = {}
    for row in points_of(session, list(owners), start, end):
        if row.period_seconds <= span:
            key = owners[row.stream_id]
            out[key] = out.get(key, 0.0) + row.sum
    return out


def list_metrics(session: Session, account_id: str, endpoint_name: str) -> list[tuple[str, str]]:
    """Return the (metric, variant) pairs an endpoint has streams for."""
    rows = session.execute(
        select(MetricStream.metric_name, MetricStream.variant_name)
        .where(MetricStream.account_id == account_id, MetricStream.endpoint_name == endpoint_name)
        .distinct()
        .order_by(MetricStream.metric_name, MetricStream.variant_name)
    ).all()
    return [(str(m), str(v)) for m, v in rows]


def replica_points(
    session: Session, metric: str, replica_ids: Sequence[int], since: dt.datetime
) -> dict[int, list[MetricDatapoint]]:
    """Return each replica's rows of a per-replica metric since ``since``, oldest first."""
    if not replica_ids:
        return {}
    streams: dict[int, int] = {}
    for sid, rid in session.execute(
        select(MetricStream.id, MetricStream.replica_id).where(
            MetricStream.metric_name == metric,
            MetricStream.namespace == sm.namespace(metric),
            MetricStream.replica_id.in_(list(replica_ids)),
        )
    ):
        if rid is not None:
            streams[sid] = rid
    out: dict[int, list[MetricDatapoint]] = {}
    for row in points_of(session, list(streams), since, dt.datetime.max.replace(tzinfo=dt.UTC)):
        out.setdefault(streams[row.stream_id], []).append(row)
    return out


# ---------------------------------------------------------------------------------------- retention


def retain(session: Session, now: dt.datetime) -> dict[str, int]:
    """Apply CloudWatch's retention: roll aging rows up into coarser ones, delete the oldest.

    Returns how many rows were rolled up per resolution and how many deleted. Safe to run from
    several processes at once only under the monitor's lease (``services/monitor.py``).
    """
    done: dict[str, int] = {}
    for resolution, age in ROLLUPS:
        cutoff = _floor(now - age, resolution)
        done[f"rolled_into_{resolution}"] = _roll_up(session, resolution, cutoff)
    result = session.execute(delete(MetricDatapoint).where(MetricDatapoint.period_start < now - RETENTION))
    done["deleted"] = int(getattr(result, "rowcount", 0) or 0)
    return done


def _floor(when: dt.datetime, seconds: int) -> dt.datetime:
    epoch = int(when.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.UTC)


def _roll_up(session: Session, resolution: int, cutoff: dt.datetime) -> int:
    rolled = 0
    while True:
        rows = list(
            session.scalars(
                select(MetricDatapoint)
                .where(MetricDatapoint.period_seconds < resolution, MetricDatapoint.period_start < cutoff)
                .order_by(MetricDatapoint.stream_id, MetricDatapoint.period_start)
                .limit(ROLLUP_CHUNK)
            )
        )
        if not rows:
            return rolled
        groups: dict[tuple[int, dt.datetime], list[MetricDatapoint]] = {}
        for row in rows:
            groups.setdefault((row.stream_id, _floor(row.period_start, resolution)), []).append(row)
        merged_rows = []
        for (sid, start), members in groups.items():
            data = merge_rows(members)
            agg = data.aggregate
            merged_rows.append(
                {
                    "stream_id": sid,
                    "period_start": start,
                    "period_seconds": resolution,
                    "sample_count": agg.sample_count,
                    "sum": agg.sum,
                    "minimum": agg.minimum,
                    "maximum": agg.maximum,
                    "unit": data.unit,
                    "sketch": agg.sketch.to_json() if agg.sketch is not None else None,
                    "buckets": data.buckets or None,
                    "source": "rollup",
                }
            )
        session.execute(delete(MetricDatapoint).where(MetricDatapoint.id.in_([r.id for r in rows])))
        session.execute(insert(MetricDatapoint), merged_rows)
        session.flush()
        rolled += len(rows)


def sketch_of_counts(counts: Mapping[float, float]) -> dict[str, Any]:
    """A stored sketch of exact (value → count) samples (counters: ones, zeros, 1/instances)."""
    return Sketch.of(counts.items()).to_json()
