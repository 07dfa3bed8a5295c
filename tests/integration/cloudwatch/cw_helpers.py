"""Helpers shared by the CloudWatch and autoscaling integration tests: alarms, datapoints, time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from neurondock_platform.services.cloudwatch.evaluation import Timing

AWS_TIMING = Timing(speedup=1.0, flush_seconds=10)
DIMS = [{"Name": "Queue", "Value": "jobs"}]


def alarm(cw: Any, name: str = "jobs-high", **overrides):
    params = {
        "AlarmName": name,
        "Namespace": "App",
        "MetricName": "Backlog",
        "Dimensions": DIMS,
        "Statistic": "Maximum",
        "Period": 60,
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "Threshold": 10.0,
        "ComparisonOperator": "GreaterThanThreshold",
        **overrides,
    }
    cw.put_metric_alarm(**{k: v for k, v in params.items() if v is not None})


def put(cw: Any, at: dt.datetime, value: float) -> None:
    cw.put_metric_data(
        Namespace="App",
        MetricData=[{"MetricName": "Backlog", "Dimensions": DIMS, "Value": value, "Timestamp": at}],
    )


def evaluate(session_factory: Any, now: dt.datetime) -> int:
    from neurondock_platform.services.cloudwatch import evaluator

    return evaluator.evaluate_due(session_factory, now, AWS_TIMING)


def backdate(db: Any, to: dt.datetime, name: str | None = None) -> None:
    """Pretend the alarm (every alarm, without ``name``) was judged up to ``to``: its next period follows."""
    from sqlalchemy import update

    from neurondock_platform.models import MetricAlarm

    statement = update(MetricAlarm).values(evaluated_through=to)
    if name is not None:
        statement = statement.where(MetricAlarm.name == name)
    db(lambda s: s.execute(statement))


def soon() -> dt.datetime:
    """15 s into the next minute: a fixed place inside a whole period, after anything the API records now."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).replace(second=15, microsecond=0)


def minute(at: dt.datetime, offset: int) -> dt.datetime:
    return at.replace(second=0, microsecond=0) + dt.timedelta(minutes=offset)
