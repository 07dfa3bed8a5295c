"""CloudWatch metric alarms: PutMetricAlarm, DescribeAlarms(ForMetric), DeleteAlarms, SetAlarmState,
DescribeAlarmHistory, and the state changes the evaluator makes (docs/cloudwatch.md, "Alarms").

Static-threshold alarms on one metric are implemented; metric math (``Metrics``), anomaly
detection (``ThresholdMetricId`` and the band operators), PromQL criteria, evaluation windows,
warm-up and tag propagation are refused with ``NotImplemented``, never ignored.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from neurondock_platform.models import AlarmHistoryItem, AlarmState, MetricAlarm
from neurondock_platform.services import pagination, statistics
from neurondock_platform.services.cloudwatch import evaluation
from neurondock_platform.services.cloudwatch.errors import (
    InvalidFormat,
    InvalidNextToken,
    InvalidParameterCombination,
    InvalidParameterValue,
    MissingParameter,
    NotImplementedFeature,
    ResourceNotFound,
)

HISTORY_RETENTION = dt.timedelta(days=30)
DESCRIBE_MAX_RECORDS = 50
HISTORY_MAX_RECORDS = 100
MAX_NAMES = 100
CREATED_REASON = "Unchecked: Initial alarm creation"
_UNSUPPORTED = {
    "Metrics": "Metric math alarms (Metrics)",
    "ThresholdMetricId": "Anomaly detection alarms (ThresholdMetricId)",
    "EvaluationWindow": "EvaluationWindow",
    "WarmUpConfiguration": "WarmUpConfiguration",
    "EvaluationCriteria": "PromQL alarms (EvaluationCriteria)",
    "EvaluationInterval": "EvaluationInterval",
    "ActionConfiguration": "ActionConfiguration",
}


def alarm_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{name}"


@dataclass(frozen=True)
class AlarmSpec:
    """A checked PutMetricAlarm request."""

    name: str
    namespace: str
    metric_name: str
    dimensions: list[dict[str, str]]
    statistic: str | None
    extended_statistic: str | None
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    comparison_operator: str
    treat_missing_data: str = "missing"
    unit: str | None = None
    description: str | None = None
    actions_enabled: bool = True
    ok_actions: list[str] = field(default_factory=list)
    alarm_actions: list[str] = field(default_factory=list)
    insufficient_data_actions: list[str] = field(default_factory=list)
    evaluate_low_sample_count_percentile: str | None = None
    tags: list[dict[str, str]] = field(default_factory=list)

    @property
    def stat(self) -> str:
        return self.statistic or self.extended_statistic or ""


def check_period(period: int, name: str = "Period") -> None:
    """CloudWatch's periods: 10, 20, 30 or a multiple of 60 for alarms."""
    if period not in (10, 20, 30) and period % 60:
        raise InvalidParameterValue(f"The parameter {name} must be 10, 20, 30 or a multiple of 60.")


def check_spec(params: dict[str, Any]) -> AlarmSpec:
    """Check a PutMetricAlarm request beyond its shape; raise CloudWatch's errors."""
    for key, what in _UNSUPPORTED.items():
        if params.get(key) is not None:
            raise NotImplementedFeature(f"{what} is not implemented by neurondock; use a static-threshold alarm.")
    for key in ("MetricName", "Namespace", "Period", "EvaluationPeriods", "Threshold", "ComparisonOperator"):
        if params.get(key) is None:
            raise MissingParameter(f"The parameter {key} is required.")
    statistic, extended = params.get("Statistic"), params.get("ExtendedStatistic")
    if statistic is None and extended is None:
        raise MissingParameter("The parameter Statistic or ExtendedStatistic is required.")
    if statistic is not None and extended is not None:
        raise InvalidParameterCombination("Statistic and ExtendedStatistic are mutually exclusive; give one of them.")
    if extended is not None and (extended in statistics.SIMPLE or not statistics.is_statistic(extended)):
        raise InvalidParameterValue(f"The value {extended} for parameter ExtendedStatistic is not supported.")
    operator = params["ComparisonOperator"]
    if operator not in evaluation.OPERATORS:
        raise NotImplementedFeature(
            f"ComparisonOperator {operator} (anomaly detection bands) is not implemented by neurondock."
        )
    period, evaluations = int(params["Period"]), int(params["EvaluationPeriods"])
    check_period(period)
    limit = 86_400 if period < 3600 else 604_800
    if period * evaluations > limit:
        raise InvalidParameterValue(
            f"The evaluation period (Period x EvaluationPeriods = {period * evaluations} seconds) must not exceed "
            f"{limit} seconds."
        )
    datapoints = int(params.get("DatapointsToAlarm") or evaluations)
    if datapoints > evaluations:
        raise InvalidParameterValue("DatapointsToAlarm must be less than or equal to EvaluationPeriods.")
    treat = params.get("TreatMissingData") or "missing"
    if treat not in evaluation.TREATMENTS:
        choices = ", ".join(evaluation.TREATMENTS)
        raise InvalidParameterValue(
            f"The value {treat} for parameter TreatMissingData is invalid; use one of {choices}."
        )
    low_sample = params.get("EvaluateLowSampleCountPercentile")
    if low_sample is not None:
        if low_sample not in ("evaluate", "ignore"):
            raise InvalidParameterValue(
                f"The value {low_sample} for parameter EvaluateLowSampleCountPercentile is invalid; "
                "use evaluate or ignore."
            )
        if extended is None or not extended.startswith("p"):
            raise InvalidParameterCombination("EvaluateLowSampleCountPercentile applies to percentile statistics only.")
    dimensions = [{"Name": d["Name"], "Value": d["Value"]} for d in params.get("Dimensions") or []]
    if len({d["Name"] for d in dimensions}) != len(dimensions):
        raise InvalidParameterValue("The dimension names of an alarm's metric must be unique.")
    actions = {key: list(params.get(key) or []) for key in ("OKActions", "AlarmActions", "InsufficientDataActions")}
    for key, arns in actions.items():
        for arn in arns:
            if not arn.startswith("arn:"):
                raise InvalidParameterValue(f"Invalid arn syntax: {arn} (in {key}).")
    return AlarmSpec(
        name=params["AlarmName"],
        namespace=params["Namespace"],
        metric_name=params["MetricName"],
        dimensions=dimensions,
        statistic=statistic,
        extended_statistic=extended,
        period=period,
        evaluation_periods=evaluations,
        datapoints_to_alarm=datapoints,
        threshold=float(params["Threshold"]),
        comparison_operator=operator,
        treat_missing_data=treat,
        unit=params.get("Unit"),
        description=params.get("AlarmDescription"),
        actions_enabled=bool(params.get("ActionsEnabled", True)),
        ok_actions=actions["OKActions"],
        alarm_actions=actions["AlarmActions"],
        insufficient_data_actions=actions["InsufficientDataActions"],
        evaluate_low_sample_count_percentile=low_sample,
        tags=list(params.get("Tags") or []),
    )


def _floor(when: dt.datetime, seconds: int) -> dt.datetime:
    epoch = when.timestamp()
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.UTC)


def get_alarm(session: Session, account_id: str, name: str) -> MetricAlarm | None:
    return session.scalar(select(MetricAlarm).where(MetricAlarm.account_id == account_id, MetricAlarm.name == name))


def put_metric_alarm(
    session: Session,
    *,
    account_id: str,
    region: str,
    spec: AlarmSpec,
    now: dt.datetime,
    timing: evaluation.Timing,
    managed_by: str | None = None,
) -> MetricAlarm:
    """Create the alarm in INSUFFICIENT_DATA, or overwrite an existing one's configuration (its state stays)."""
    alarm = get_alarm(session, account_id, spec.name)
    created = alarm is None
    if alarm is None:
        alarm = MetricAlarm(
            account_id=account_id,
            name=spec.name,
            arn=alarm_arn(region, account_id, spec.name),
            state_value=AlarmState.INSUFFICIENT_DATA,
            state_reason=CREATED_REASON,
            state_updated_at=now,
            state_transitioned_at=now,
            created_at=now,
            extra={},
        )
        session.add(alarm)
    before = describe(alarm) if not created else None
    alarm.description = spec.description
    alarm.actions_enabled = spec.actions_enabled
    alarm.ok_actions = spec.ok_actions
    alarm.alarm_actions = spec.alarm_actions
    alarm.insufficient_data_actions = spec.insufficient_data_actions
    alarm.namespace, alarm.metric_name, alarm.dimensions = spec.namespace, spec.metric_name, spec.dimensions
    alarm.statistic, alarm.extended_statistic = spec.statistic, spec.extended_statistic
    alarm.period, alarm.unit = spec.period, spec.unit
    alarm.evaluation_periods, alarm.datapoints_to_alarm = spec.evaluation_periods, spec.datapoints_to_alarm
    alarm.threshold, alarm.comparison_operator = spec.threshold, spec.comparison_operator
    alarm.treat_missing_data = spec.treat_missing_data
    alarm.evaluate_low_sample_count_percentile = spec.evaluate_low_sample_count_percentile
    alarm.configuration_updated_at = now
    # The first judgement covers the first whole period after this change.
    alarm.evaluated_through = _floor(now, timing.period(spec.period))
    extra = dict(alarm.extra or {})
    if created and spec.tags:
        extra["Tags"] = spec.tags
    if managed_by is not None:
        extra["ManagedBy"] = managed_by
    alarm.extra = extra
    session.flush()
    after = describe(alarm)
    if created:
        record(
            session,
            alarm,
            "ConfigurationUpdate",
            f'Alarm "{alarm.name}" created',
            {"version": "1.0", "type": "Create", "createdAlarm": after},
            now,
        )
    else:
        changed = sorted(
            k
            for k in after
            if before is not None and before.get(k) != after[k] and k != "AlarmConfigurationUpdatedTimestamp"
        )
        record(
            session,
            alarm,
            "ConfigurationUpdate",
            f'Alarm "{alarm.name}" updated',
            {"version": "1.0", "type": "Update", "updatedAlarm": after, "originalUpdatedFields": changed},
            now,
        )
    return alarm


def describe(alarm: MetricAlarm) -> dict[str, Any]:
    """The alarm as a MetricAlarm structure (timestamps as datetimes)."""
    out: dict[str, Any] = {
        "AlarmName": alarm.name,
        "AlarmArn": alarm.arn,
        "AlarmConfigurationUpdatedTimestamp": alarm.configuration_updated_at,
        "ActionsEnabled": alarm.actions_enabled,
        "OKActions": list(alarm.ok_actions),
        "AlarmActions": list(alarm.alarm_actions),
        "InsufficientDataActions": list(alarm.insufficient_data_actions),
        "StateValue": str(alarm.state_value),
        "StateReason": alarm.state_reason,
        "StateUpdatedTimestamp": alarm.state_updated_at,
        "MetricName": alarm.metric_name,
        "Namespace": alarm.namespace,
        "Dimensions": list(alarm.dimensions),
        "Period": alarm.period,
        "EvaluationPeriods": alarm.evaluation_periods,
        "DatapointsToAlarm": alarm.datapoints_to_alarm,
        "Threshold": alarm.threshold,
        "ComparisonOperator": alarm.comparison_operator,
        "TreatMissingData": alarm.treat_missing_data,
        "StateTransitionedTimestamp": alarm.state_transitioned_at,
    }
    if alarm.description is not None:
        out["AlarmDescription"] = alarm.description
    if alarm.state_reason_data:
        out["StateReasonData"] = alarm.state_reason_data
    if alarm.statistic:
        out["Statistic"] = alarm.statistic
    if alarm.extended_statistic:
        out["ExtendedStatistic"] = alarm.extended_statistic
    if alarm.unit:
        out["Unit"] = alarm.unit
    if alarm.evaluate_low_sample_count_percentile:
        out["EvaluateLowSampleCountPercentile"] = alarm.evaluate_low_sample_count_percentile
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return evaluation.iso_millis(value)
    return str(value)


def record(
    session: Session, alarm: MetricAlarm, item_type: str, summary: str, data: dict[str, Any], now: dt.datetime
) -> None:
    """Add one history item (HistoryData is JSON, at most 4,095 characters as in the model)."""
    text = json.dumps(data, default=_json_default, separators=(",", ":"))
    session.add(
        AlarmHistoryItem(
            account_id=alarm.account_id,
            alarm_name=alarm.name,
            timestamp=now,
            item_type=item_type,
            summary=summary[:255],
            data=text[:4095],
        )
    )


def transition(
    session: Session,
    alarm: MetricAlarm,
    state: AlarmState,
    reason: str,
    reason_data: str | None,
    now: dt.datetime,
) -> bool:
    """Move the alarm to ``state``; records a StateUpdate when the state changes. Returns whether it did."""
    alarm.state_updated_at = now
    if state == alarm.state_value:
        return False
    old = {"stateValue": str(alarm.state_value), "stateReason": alarm.state_reason}
    if alarm.state_reason_data:
        old["stateReasonData"] = json.loads(alarm.state_reason_data)
    alarm.state_value = state
    alarm.state_reason = reason[:1023]
    alarm.state_reason_data = reason_data
    alarm.state_transitioned_at = now
    new: dict[str, Any] = {"stateValue": str(state), "stateReason": alarm.state_reason}
    if reason_data:
        new["stateReasonData"] = json.loads(reason_data)
    record(
        session,
        alarm,
        "StateUpdate",
        f"Alarm updated from {old['stateValue']} to {state}",
        {"version": "1.0", "oldState": old, "newState": new},
        now,
    )
    return True


def set_alarm_state(
    session: Session,
    *,
    account_id: str,
    name: str,
    state: str,
    reason: str,
    reason_data: str | None,
    now: dt.datetime,
) -> tuple[MetricAlarm, bool]:
    """SetAlarmState: force a state until the next evaluation. Returns the alarm and whether it changed."""
    alarm = get_alarm(session, account_id, name)
    if alarm is None:
        raise ResourceNotFound(f"Alarm {name} not found")
    if reason_data is not None:
        try:
            json.loads(reason_data)
        except ValueError as exc:
            raise InvalidFormat(f"StateReasonData must be a valid JSON document: {exc}") from exc
    return alarm, transition(session, alarm, AlarmState(state), reason, reason_data, now)


def delete_alarms(session: Session, *, account_id: str, names: Sequence[str], now: dt.datetime) -> list[str]:
    """DeleteAlarms: delete the named alarms that exist (unknown names are ignored); returns those deleted."""
    if len(names) > MAX_NAMES:
        raise InvalidParameterValue(f"The collection AlarmNames must not have a size greater than {MAX_NAMES}.")
    rows = list(
        session.scalars(select(MetricAlarm).where(MetricAlarm.account_id == account_id, MetricAlarm.name.in_(names)))
    )
    for alarm in rows:
        record(
            session,
            alarm,
            "ConfigurationUpdate",
            f'Alarm "{alarm.name}" deleted',
            {"version": "1.0", "type": "Delete", "deletedAlarm": describe(alarm)},
            now,
        )
        session.delete(alarm)
    session.flush()
    return [a.name for a in rows]


def describe_alarms(
    session: Session,
    *,
    account_id: str,
    names: Sequence[str] = (),
    prefix: str | None = None,
    state: str | None = None,
    action_prefix: str | None = None,
    max_records: int | None = None,
    next_token: str | None = None,
) -> pagination.Page[MetricAlarm]:
    """DescribeAlarms for metric alarms, by name; filters combine."""
    if names and prefix:
        raise InvalidParameterCombination("AlarmNames and AlarmNamePrefix are mutually exclusive; give one of them.")
    stmt = select(MetricAlarm).where(MetricAlarm.account_id == account_id)
    if names:
        stmt = stmt.where(MetricAlarm.name.in_(list(names)))
    if prefix:
        stmt = stmt.where(func.substr(MetricAlarm.name, 1, len(prefix)) == prefix)
    if state:
        stmt = stmt.where(MetricAlarm.state_value == state)
    scope = pagination.fingerprint(
        op="DescribeAlarms", names=sorted(names), prefix=prefix, state=state, action=action_prefix
    )
    if action_prefix:
        # Actions live in JSON lists: filter in Python over the (already narrowed) rows, then page.
        rows = [
            a
            for a in session.scalars(stmt.order_by(MetricAlarm.name))
            if any(
                arn.startswith(action_prefix) for arn in (*a.ok_actions, *a.alarm_actions, *a.insufficient_data_actions)
            )
        ]
        stmt = select(MetricAlarm).where(MetricAlarm.id.in_([a.id for a in rows]))
    return pagination.keyset_page(
        session,
        stmt,
        sort_column=MetricAlarm.name,
        id_column=MetricAlarm.id,
        max_results=max_records or DESCRIBE_MAX_RECORDS,
        next_token=next_token,
        scope=scope,
        invalid_token=InvalidNextToken,
    )


def alarms_for_metric(
    session: Session,
    *,
    account_id: str,
    namespace: str,
    metric_name: str,
    dimensions: Sequence[dict[str, str]] = (),
    statistic: str | None = None,
    extended_statistic: str | None = None,
    period: int | None = None,
    unit: str | None = None,
) -> list[MetricAlarm]:
    """DescribeAlarmsForMetric: the alarms on exactly this metric, narrowed by the optional filters."""
    wanted = sorted((d["Name"], d["Value"]) for d in dimensions)
    out = []
    for alarm in session.scalars(
        select(MetricAlarm)
        .where(
            MetricAlarm.account_id == account_id,
            MetricAlarm.namespace == namespace,
            MetricAlarm.metric_name == metric_name,
        )
        .order_by(MetricAlarm.name)
    ):
        if sorted((d["Name"], d["Value"]) for d in alarm.dimensions) != wanted:
            continue
        if statistic and alarm.statistic != statistic:
            continue
        if extended_statistic and alarm.extended_statistic != extended_statistic:
            continue
        if period and alarm.period != period:
            continue
        if unit and alarm.unit != unit:
            continue
        out.append(alarm)
    return out


def describe_history(
    session: Session,
    *,
    account_id: str,
    alarm_name: str | None = None,
    item_type: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    max_records: int | None = None,
    next_token: str | None = None,
    scan_by: str = "TimestampDescending",
) -> pagination.Page[AlarmHistoryItem]:
    """DescribeAlarmHistory: an account's items (30 days), newest first unless asked otherwise."""
    if start is not None and end is not None and start > end:
        raise InvalidParameterValue("The parameter StartDate must be less than the parameter EndDate.")
    stmt = select(AlarmHistoryItem).where(AlarmHistoryItem.account_id == account_id)
    if alarm_name:
        stmt = stmt.where(AlarmHistoryItem.alarm_name == alarm_name)
    if item_type:
        stmt = stmt.where(AlarmHistoryItem.item_type == item_type)
    if start is not None:
        stmt = stmt.where(AlarmHistoryItem.timestamp >= start)
    if end is not None:
        stmt = stmt.where(AlarmHistoryItem.timestamp <= end)
    order = pagination.DESCENDING if scan_by == "TimestampDescending" else pagination.ASCENDING
    scope = pagination.fingerprint(
        op="DescribeAlarmHistory", name=alarm_name, type=item_type, start=start, end=end, order=order
    )
    return pagination.keyset_page(
        session,
        stmt,
        sort_column=AlarmHistoryItem.timestamp,
        id_column=AlarmHistoryItem.id,
        max_results=max_records or HISTORY_MAX_RECORDS,
        next_token=next_token,
        scope=scope,
        order=order,
        invalid_token=InvalidNextToken,
    )


def prune_history(session: Session, now: dt.datetime) -> int:
    """Delete history items older than CloudWatch keeps them (30 days)."""
    result = session.execute(delete(AlarmHistoryItem).where(AlarmHistoryItem.timestamp < now - HISTORY_RETENTION))
    return int(getattr(result, "rowcount", 0) or 0)


def endpoint_alarms(session: Session, *, account_id: str, endpoint_name: str) -> list[MetricAlarm]:
    """The account's alarms on an endpoint's metrics (an EndpointName dimension naming it), by name."""
    rows = session.scalars(select(MetricAlarm).where(MetricAlarm.account_id == account_id).order_by(MetricAlarm.name))
    return [a for a in rows if {"Name": "EndpointName", "Value": endpoint_name} in a.dimensions]


def recent_changes(
    session: Session, *, account_id: str, alarm_names: Sequence[str], limit: int
) -> list[AlarmHistoryItem]:
    """The newest state changes of some alarms, newest first."""
    if not alarm_names:
        return []
    return list(
        session.scalars(
            select(AlarmHistoryItem)
            .where(
                AlarmHistoryItem.account_id == account_id,
                AlarmHistoryItem.alarm_name.in_(list(alarm_names)),
                AlarmHistoryItem.item_type == "StateUpdate",
            )
            .order_by(AlarmHistoryItem.timestamp.desc(), AlarmHistoryItem.id.desc())
            .limit(limit)
        )
    )
