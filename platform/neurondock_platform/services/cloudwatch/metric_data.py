"""CloudWatch's metric operations on the store: PutMetricData, GetMetricStatistics, GetMetricData,
ListMetrics (docs/cloudwatch.md, "Metrics").

Limits and wording follow CloudWatch: custom namespaces only (``AWS/`` is reserved), 1,000 datums a
call, values within ±1.174271e+108 and no smaller in magnitude than 8.515920e-109, timestamps at
most two weeks old and two hours ahead, 1,440 datapoints per GetMetricStatistics, 500 queries per
GetMetricData. A standard-resolution datum is kept at one minute, a high-resolution one
(``StorageResolution`` 1) at one second. Metric math in GetMetricData is refused as not implemented.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from neurondock_platform.models import MetricDatapoint, MetricStream
from neurondock_platform.services import metrics, pagination, statistics
from neurondock_platform.services.cloudwatch.errors import (
    InvalidNextToken,
    InvalidParameterCombination,
    InvalidParameterValue,
    MissingParameter,
    NotImplementedFeature,
)
from neurondock_platform.sketch import Sketch

MAX_DATUMS = 1000
MAX_VALUES = 150
MAX_VALUE = 1.174271e108
MIN_MAGNITUDE = 8.515920e-109
MAX_PAST = dt.timedelta(weeks=2)
MAX_FUTURE = dt.timedelta(hours=2)
MAX_STATISTIC_DATAPOINTS = 1440
MAX_QUERIES = 500
DEFAULT_MAX_DATAPOINTS = 100_800
LIST_PAGE = 500
LISTED_WITHIN = dt.timedelta(weeks=2)
RECENT = dt.timedelta(hours=3)
_QUERY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
HIGH_RESOLUTION_PERIODS = (1, 5, 10, 30)


def _floor(when: dt.datetime, seconds: int) -> dt.datetime:
    epoch = when.timestamp()
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.UTC)


def _check_value(value: float, where: str) -> None:
    if not math.isfinite(value) or abs(value) > MAX_VALUE or (value != 0 and abs(value) < MIN_MAGNITUDE):
        raise InvalidParameterValue(f"The value {value} for parameter {where} is invalid.")


# --------------------------------------------------------------------------------------- PutMetricData


def put_metric_data(
    session: Session,
    *,
    account_id: str,
    namespace: str,
    metric_data: Sequence[dict[str, Any]] | None,
    entity_metric_data: Sequence[dict[str, Any]] | None,
    now: dt.datetime,
) -> int:
    """Store each datum as one datapoint of its stream; returns how many were stored."""
    if entity_metric_data:
        raise NotImplementedFeature("EntityMetricData is not implemented by neurondock; send MetricData.")
    if namespace.startswith("AWS/"):
        raise InvalidParameterValue(f"The value {namespace} for parameter Namespace is invalid.")
    if not metric_data:
        raise MissingParameter("The parameter MetricData is required.")
    if len(metric_data) > MAX_DATUMS:
        raise InvalidParameterValue(f"The collection MetricData must not have a size greater than {MAX_DATUMS}.")
    rows = [
        _row(account_id, namespace, datum, f"MetricData.member.{i + 1}", now) for i, datum in enumerate(metric_data)
    ]
    return metrics.write_points(session, rows)


def _row(account_id: str, namespace: str, datum: dict[str, Any], where: str, now: dt.datetime) -> dict[str, Any]:
    given = [key for key in ("Value", "StatisticValues", "Values") if datum.get(key) is not None]
    if len(given) > 1:
        raise InvalidParameterCombination(
            f"The parameters {where}.{given[0]} and {where}.{given[1]} are mutually exclusive and you have "
            "specified both."
        )
    if not given:
        raise MissingParameter(f"One of {where}.Value, {where}.StatisticValues or {where}.Values is required.")
    when = datum.get("Timestamp") or now
    if when < now - MAX_PAST:
        raise InvalidParameterValue(f"The parameter {where}.Timestamp must specify a time no older than two weeks.")
    if when > now + MAX_FUTURE:
        raise InvalidParameterValue(
            f"The parameter {where}.Timestamp must specify a time no more than two hours in the future."
        )
    resolution = int(datum.get("StorageResolution") or 60)
    if resolution not in (1, 60):
        raise InvalidParameterValue(f"The value {resolution} for parameter {where}.StorageResolution is invalid.")
    dims = [(d["Name"], d["Value"]) for d in datum.get("Dimensions") or []]
    if len({n for n, _ in dims}) != len(dims):
        raise InvalidParameterValue(f"The dimension names of {where}.Dimensions must be unique.")
    sketch: Sketch | None
    low: float | None
    high: float | None
    if "Value" in given:
        value = float(datum["Value"])
        _check_value(value, f"{where}.Value")
        count, total, low, high, sketch = 1.0, value, value, value, Sketch.of([(value, 1.0)])
    elif "StatisticValues" in given:
        stats = datum["StatisticValues"]
        count, total = float(stats["SampleCount"]), float(stats["Sum"])
        low, high = float(stats["Minimum"]), float(stats["Maximum"])
        for key, number in (("SampleCount", count), ("Sum", total), ("Minimum", low), ("Maximum", high)):
            _check_value(number, f"{where}.StatisticValues.{key}")
        if count <= 0 or low > high:
            raise InvalidParameterValue(
                f"The parameter {where}.StatisticValues must have a positive SampleCount and Minimum <= Maximum."
            )
        # Percentiles are known only when every sample is known (one sample, or all equal).
        sketch = Sketch.of([(low, count)]) if count == 1 or low == high else None
    else:
        values = [float(v) for v in datum["Values"]]
        counts = [float(c) for c in datum.get("Counts") or [1.0] * len(values)]
        if len(values) > MAX_VALUES:
            raise InvalidParameterValue(
                f"The collection {where}.Values must not have a size greater than {MAX_VALUES}."
            )
        if len(counts) != len(values):
            raise InvalidParameterValue(f"The parameters {where}.Values and {where}.Counts must be of the same size.")
        for index, (value, weight) in enumerate(zip(values, counts, strict=True)):
            _check_value(value, f"{where}.Values.member.{index + 1}")
            if weight < 0 or not math.isfinite(weight):
                raise InvalidParameterValue(
                    f"The value {weight} for parameter {where}.Counts.member.{index + 1} is invalid."
                )
        count, total = sum(counts), sum(v * c for v, c in zip(values, counts, strict=True))
        present = [v for v, c in zip(values, counts, strict=True) if c > 0]
        low, high = (min(present), max(present)) if present else (None, None)
        sketch = Sketch.of(zip(values, counts, strict=True))
        if count <= 0:
            raise InvalidParameterValue(f"The parameter {where}.Counts must hold at least one positive count.")
    return {
        "account_id": account_id,
        "namespace": namespace,
        "metric_name": datum["MetricName"],
        "dimensions": dims,
        "period_start": _floor(when, resolution),
        "period_seconds": resolution,
        "sample_count": count,
        "sum": total,
        "minimum": low,
        "maximum": high,
        "unit": datum.get("Unit") or "None",
        "sketch": sketch.to_json() if sketch is not None else None,
        "source": "PutMetricData",
    }


# ------------------------------------------------------------------------------ GetMetricStatistics


def check_period(period: int) -> None:
    if period not in HIGH_RESOLUTION_PERIODS and period % 60:
        raise InvalidParameterValue("The parameter Period must be 1, 5, 10, 30 or a multiple of 60.")


def round_start(start: dt.datetime, now: dt.datetime) -> dt.datetime:
    """CloudWatch rounds StartTime down by its age: to the minute, 5 minutes, then the hour."""
    age = now - start
    if age < dt.timedelta(days=15):
        return _floor(start, 60)
    if age < dt.timedelta(days=63):
        return _floor(start, 300)
    return _floor(start, 3600)


def _check_range(start: dt.datetime, end: dt.datetime) -> None:
    if start >= end:
        raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")


def get_metric_statistics(
    session: Session,
    *,
    account_id: str,
    namespace: str,
    metric_name: str,
    dimensions: Sequence[dict[str, str]],
    start: dt.datetime,
    end: dt.datetime,
    period: int,
    statistic_names: Sequence[str],
    extended: Sequence[str],
    unit: str | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """One datapoint per period with data, oldest first, with the statistics asked for."""
    if not statistic_names and not extended:
        raise MissingParameter("The parameter Statistics or ExtendedStatistics is required.")
    if statistic_names and extended:
        raise InvalidParameterCombination("Statistics and ExtendedStatistics are mutually exclusive; give one of them.")
    for name in extended:
        if name in statistics.SIMPLE or not statistics.is_statistic(name):
            raise InvalidParameterValue(f"The value {name} for parameter ExtendedStatistics is not supported.")
    check_period(period)
    _check_range(start, end)
    start = round_start(start, now)
    wanted = math.ceil((end - start).total_seconds() / period)
    if wanted > MAX_STATISTIC_DATAPOINTS:
        raise InvalidParameterCombination(
            f"You have requested up to {wanted:,} datapoints, which exceeds the limit of {MAX_STATISTIC_DATAPOINTS:,}. "
            "You may reduce the datapoints requested by increasing Period, or decreasing the time range."
        )
    key = metrics.StreamKey(
        account_id, namespace, metric_name, metrics.canonical((d["Name"], d["Value"]) for d in dimensions)
    )
    out = []
    for when, data in metrics.periods(session, key, start, end, period, unit).items():
        point: dict[str, Any] = {"Timestamp": when, "Unit": unit or data.unit}
        for name in statistic_names:
            value = statistics.value(data.aggregate, name)
            if value is not None:
                point[name] = value
        if extended:
            known = {n: v for n in extended if (v := statistics.value(data.aggregate, n)) is not None}
            point["ExtendedStatistics"] = known
        out.append(point)
    return out


# ------------------------------------------------------------------------------------ GetMetricData


@dataclass(frozen=True)
class Query:
    id: str
    label: str
    key: metrics.StreamKey | None
    period: int
    stat: str
    unit: str | None
    return_data: bool
    forbidden: bool


def _queries(account_id: str, raw: Sequence[dict[str, Any]]) -> list[Query]:
    if not raw:
        raise MissingParameter("The parameter MetricDataQueries is required.")
    if len(raw) > MAX_QUERIES:
        raise InvalidParameterValue(
            f"The collection MetricDataQueries must not have a size greater than {MAX_QUERIES}."
        )
    seen: set[str] = set()
    out = []
    for index, query in enumerate(raw):
        where = f"MetricDataQueries.member.{index + 1}"
        qid = query["Id"]
        if not _QUERY_ID.match(qid):
            raise InvalidParameterValue(
                f"The value {qid} for parameter {where}.Id is invalid: it must start with a lowercase letter "
                "and hold only letters, digits and underscores."
            )
        if qid in seen:
            raise InvalidParameterValue(f"The value {qid} for parameter {where}.Id is used by another query.")
        seen.add(qid)
        if query.get("Expression") is not None:
            raise NotImplementedFeature(
                "Metric math and search expressions (Expression) are not implemented by neurondock; "
                "use MetricStat queries."
            )
        stat = query.get("MetricStat")
        if stat is None:
            raise MissingParameter(f"The parameter {where}.MetricStat (or Expression) is required.")
        if not statistics.is_statistic(stat["Stat"]):
            raise InvalidParameterValue(
                f"The value {stat['Stat']} for parameter {where}.MetricStat.Stat is not supported."
            )
        period = int(stat["Period"])
        check_period(period)
        metric = stat["Metric"]
        if not metric.get("Namespace") or not metric.get("MetricName"):
            raise MissingParameter(f"The parameters {where}.MetricStat.Metric.Namespace and MetricName are required.")
        dims = metrics.canonical((d["Name"], d["Value"]) for d in metric.get("Dimensions") or [])
        other_account = query.get("AccountId") not in (None, account_id)
        out.append(
            Query(
                id=qid,
                label=query.get("Label") or metric["MetricName"],
                key=metrics.StreamKey(account_id, metric["Namespace"], metric["MetricName"], dims),
                period=period,
                stat=stat["Stat"],
                unit=stat.get("Unit"),
                return_data=bool(query.get("ReturnData", True)),
                forbidden=other_account,
            )
        )
    return out


def get_metric_data(
    session: Session,
    *,
    account_id: str,
    queries: Sequence[dict[str, Any]],
    start: dt.datetime,
    end: dt.datetime,
    scan_by: str | None,
    max_datapoints: int | None,
    next_token: str | None,
    now: dt.datetime,
) -> tuple[list[dict[str, Any]], str | None]:
    """Each returned query's timestamps and values (newest first unless TimestampAscending), paged."""
    parsed = _queries(account_id, queries)
    _check_range(start, end)
    start = round_start(start, now)
    order = scan_by or "TimestampDescending"
    limit = max_datapoints or DEFAULT_MAX_DATAPOINTS
    if limit < 1:
        raise InvalidParameterValue("The parameter MaxDatapoints must be at least 1.")
    scope = pagination.fingerprint(
        op="GetMetricData", queries=[q.__dict__ for q in parsed], start=start, end=end, order=order
    )
    offset = 0
    if next_token:
        try:
            payload = pagination.decode_token(next_token)
        except Exception as exc:
            raise InvalidNextToken() from exc
        if payload.get("s") != scope or not isinstance(payload.get("o"), int):
            raise InvalidNextToken()
        offset = int(payload["o"])
    series: list[tuple[Query, list[tuple[dt.datetime, float]]]] = []
    for query in parsed:
        if not query.return_data:
            continue
        points: list[tuple[dt.datetime, float]] = []
        if not query.forbidden and query.key is not None:
            for when, data in metrics.periods(session, query.key, start, end, query.period, query.unit).items():
                value = statistics.value(data.aggregate, query.stat)
                if value is not None:
                    points.append((when, value))
        points.sort(key=lambda p: p[0], reverse=order == "TimestampDescending")
        series.append((query, points))
    total = sum(len(points) for _, points in series)
    page_end = min(total, offset + limit)
    results = []
    position = 0
    for query, points in series:
        first, last = max(offset - position, 0), min(page_end - position, len(points))
        chunk = points[first:last] if last > first else []
        position += len(points)
        result: dict[str, Any] = {
            "Id": query.id,
            "Label": query.label,
            "Timestamps": [when for when, _ in chunk],
            "Values": [value for _, value in chunk],
            "StatusCode": "Complete" if last >= len(points) else "PartialData",
            "Messages": [],
        }
        if query.forbidden:
            result["StatusCode"] = "Forbidden"
            result["Messages"] = [{"Code": "Forbidden", "Value": "Cross-account queries are not available here."}]
        results.append(result)
    token = pagination.encode_token({"s": scope, "o": page_end}) if page_end < total else None
    return results, token


# --------------------------------------------------------------------------------------- ListMetrics


def list_metrics(
    session: Session,
    *,
    account_id: str,
    namespace: str | None,
    metric_name: str | None,
    dimension_filters: Sequence[dict[str, str]],
    recently_active: bool,
    next_token: str | None,
    now: dt.datetime,
) -> tuple[list[MetricStream], str | None]:
    """The account's metrics with data in the last two weeks (three hours with RecentlyActive), 500 a page."""
    since = now - (RECENT if recently_active else LISTED_WITHIN)
    stmt = select(MetricStream).where(
        MetricStream.account_id == account_id,
        exists().where(MetricDatapoint.stream_id == MetricStream.id, MetricDatapoint.period_start >= since),
    )
    if namespace:
        stmt = stmt.where(MetricStream.namespace == namespace)
    if metric_name:
        stmt = stmt.where(MetricStream.metric_name == metric_name)
    scope = pagination.fingerprint(
        op="ListMetrics", ns=namespace, name=metric_name, dims=list(dimension_filters), recent=recently_active
    )
    after = 0
    if next_token:
        try:
            payload = pagination.decode_token(next_token)
        except Exception as exc:
            raise InvalidNextToken() from exc
        if payload.get("s") != scope or not isinstance(payload.get("i"), int):
            raise InvalidNextToken()
        after = int(payload["i"])
    found: list[MetricStream] = []
    for stream in session.scalars(stmt.where(MetricStream.id > after).order_by(MetricStream.id)):
        if _matches(stream, dimension_filters):
            found.append(stream)
            if len(found) > LIST_PAGE:
                break
    if len(found) > LIST_PAGE:
        found = found[:LIST_PAGE]
        return found, pagination.encode_token({"s": scope, "i": found[-1].id})
    return found, None


def _matches(stream: MetricStream, filters: Sequence[dict[str, str]]) -> bool:
    have = {d["Name"]: d["Value"] for d in stream.dimensions}
    return all(f["Name"] in have and (f.get("Value") is None or have[f["Name"]] == f["Value"]) for f in filters)
