"""CloudWatch's operations: request members in, response members out, for either protocol."""

from __future__ import annotations

import datetime as dt
from typing import Any

from neurondock_platform.api import context
from neurondock_platform.api.aws_json import OperationTable
from neurondock_platform.db import utcnow
from neurondock_platform.models import AlarmHistoryItem
from neurondock_platform.services import monitor, validation
from neurondock_platform.services.cloudwatch import actions, alarms, evaluator, metric_data
from neurondock_platform.services.cloudwatch.errors import InvalidParameterValue, MissingParameter

OPERATIONS = OperationTable()
operation = OPERATIONS.operation


def _account() -> str:
    return context.auth().account_id


def _time(value: Any, name: str) -> dt.datetime:
    try:
        return validation.to_datetime(value)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise InvalidParameterValue(f"The value {value} for parameter {name} is not a valid timestamp.") from exc


def _required_time(params: dict[str, Any], name: str) -> dt.datetime:
    if params.get(name) is None:
        raise MissingParameter(f"The parameter {name} is required.")
    return _time(params[name], name)


# ------------------------------------------------------------------------------------------ metrics


@operation("PutMetricData")
def put_metric_data(params: dict[str, Any]) -> dict[str, Any]:
    data = []
    for index, datum in enumerate(params.get("MetricData") or []):
        datum = dict(datum)
        if datum.get("Timestamp") is not None:
            datum["Timestamp"] = _time(datum["Timestamp"], f"MetricData.member.{index + 1}.Timestamp")
        data.append(datum)
    metric_data.put_metric_data(
        context.db(),
        account_id=_account(),
        namespace=params["Namespace"],
        metric_data=data,
        entity_metric_data=params.get("EntityMetricData"),
        now=utcnow(),
    )
    return {}


@operation("GetMetricStatistics")
def get_metric_statistics(params: dict[str, Any]) -> dict[str, Any]:
    points = metric_data.get_metric_statistics(
        context.db(),
        account_id=_account(),
        namespace=params["Namespace"],
        metric_name=params["MetricName"],
        dimensions=params.get("Dimensions") or [],
        start=_required_time(params, "StartTime"),
        end=_required_time(params, "EndTime"),
        period=int(params["Period"]),
        statistic_names=params.get("Statistics") or [],
        extended=params.get("ExtendedStatistics") or [],
        unit=params.get("Unit"),
        now=utcnow(),
    )
    return {"Label": params["MetricName"], "Datapoints": points}


@operation("GetMetricData")
def get_metric_data(params: dict[str, Any]) -> dict[str, Any]:
    results, token = metric_data.get_metric_data(
        context.db(),
        account_id=_account(),
        queries=params.get("MetricDataQueries") or [],
        start=_required_time(params, "StartTime"),
        end=_required_time(params, "EndTime"),
        scan_by=params.get("ScanBy"),
        max_datapoints=params.get("MaxDatapoints"),
        next_token=params.get("NextToken"),
        now=utcnow(),
    )
    out: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
    if token:
        out["NextToken"] = token
    return out


@operation("ListMetrics")
def list_metrics(params: dict[str, Any]) -> dict[str, Any]:
    account = _account()
    owner = params.get("OwningAccount")
    streams, token = (
        ([], None)
        if owner not in (None, account)
        else metric_data.list_metrics(
            context.db(),
            account_id=account,
            namespace=params.get("Namespace"),
            metric_name=params.get("MetricName"),
            dimension_filters=params.get("Dimensions") or [],
            recently_active=params.get("RecentlyActive") == "PT3H",
            next_token=params.get("NextToken"),
            now=utcnow(),
        )
    )
    out: dict[str, Any] = {
        "Metrics": [
            {"Namespace": s.namespace, "MetricName": s.metric_name, "Dimensions": list(s.dimensions)} for s in streams
        ]
    }
    if params.get("IncludeLinkedAccounts"):
        out["OwningAccounts"] = [account] * len(streams)
    if token:
        out["NextToken"] = token
    return out


# ------------------------------------------------------------------------------------------- alarms


@operation("PutMetricAlarm")
def put_metric_alarm(params: dict[str, Any]) -> dict[str, Any]:
    alarms.put_metric_alarm(
        context.db(),
        account_id=_account(),
        region=context.settings().region,
        spec=alarms.check_spec(params),
        now=utcnow(),
        timing=monitor.timing(context.settings()),
    )
    return {}


@operation("DescribeAlarms")
def describe_alarms(params: dict[str, Any]) -> dict[str, Any]:
    types = params.get("AlarmTypes") or ["MetricAlarm"]
    related = params.get("ChildrenOfAlarmName") or params.get("ParentsOfAlarmName")
    out: dict[str, Any] = {"MetricAlarms": []}
    if "CompositeAlarm" in types:
        # Composite alarms are not implemented (PutCompositeAlarm answers NotImplemented): there are none.
        out["CompositeAlarms"] = []
    if "MetricAlarm" in types and not related:
        page = alarms.describe_alarms(
            context.db(),
            account_id=_account(),
            names=params.get("AlarmNames") or [],
            prefix=params.get("AlarmNamePrefix"),
            state=params.get("StateValue"),
            action_prefix=params.get("ActionPrefix"),
            max_records=params.get("MaxRecords"),
            next_token=params.get("NextToken"),
        )
        out["MetricAlarms"] = [alarms.describe(a) for a in page.items]
        if page.next_token:
            out["NextToken"] = page.next_token
    return out


@operation("DescribeAlarmsForMetric")
def describe_alarms_for_metric(params: dict[str, Any]) -> dict[str, Any]:
    found = alarms.alarms_for_metric(
        context.db(),
        account_id=_account(),
        namespace=params["Namespace"],
        metric_name=params["MetricName"],
        dimensions=params.get("Dimensions") or [],
        statistic=params.get("Statistic"),
        extended_statistic=params.get("ExtendedStatistic"),
        period=params.get("Period"),
        unit=params.get("Unit"),
    )
    return {"MetricAlarms": [alarms.describe(a) for a in found]}


@operation("DeleteAlarms")
def delete_alarms(params: dict[str, Any]) -> dict[str, Any]:
    alarms.delete_alarms(context.db(), account_id=_account(), names=params["AlarmNames"], now=utcnow())
    return {}


@operation("SetAlarmState")
def set_alarm_state(params: dict[str, Any]) -> dict[str, Any]:
    session, now = context.db(), utcnow()
    timing = monitor.timing(context.settings())
    alarm, changed = alarms.set_alarm_state(
        session,
        account_id=_account(),
        name=params["AlarmName"],
        state=params["StateValue"],
        reason=params["StateReason"],
        reason_data=params.get("StateReasonData"),
        now=now,
    )
    if changed:
        newest = evaluator.latest(session, alarm, now, timing)
        actions.run(session, alarm, transitioned=True, newest=newest, now=now, timing=timing)
    return {}


def _history_item(item: AlarmHistoryItem) -> dict[str, Any]:
    return {
        "AlarmName": item.alarm_name,
        "AlarmType": item.alarm_type,
        "Timestamp": item.timestamp,
        "HistoryItemType": item.item_type,
        "HistorySummary": item.summary,
        "HistoryData": item.data,
    }


@operation("DescribeAlarmHistory")
def describe_alarm_history(params: dict[str, Any]) -> dict[str, Any]:
    types = params.get("AlarmTypes")
    if types is not None and "MetricAlarm" not in types:
        return {"AlarmHistoryItems": []}
    page = alarms.describe_history(
        context.db(),
        account_id=_account(),
        alarm_name=params.get("AlarmName"),
        item_type=params.get("HistoryItemType"),
        start=_time(params["StartDate"], "StartDate") if params.get("StartDate") is not None else None,
        end=_time(params["EndDate"], "EndDate") if params.get("EndDate") is not None else None,
        max_records=params.get("MaxRecords"),
        next_token=params.get("NextToken"),
        scan_by=params.get("ScanBy") or "TimestampDescending",
    )
    out: dict[str, Any] = {"AlarmHistoryItems": [_history_item(i) for i in page.items]}
    if page.next_token:
        out["NextToken"] = page.next_token
    return out
