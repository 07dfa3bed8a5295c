"""The alarm evaluator: judge every alarm once per period, on the data of its whole periods.

An alarm with period P (as it runs: ``Timing.period``) is due once the period ending at a multiple
of P has been flushed by every API process (``Timing.settle`` later). Judging it starts with a
compare-and-set of ``evaluated_through`` from the last judged end to this one, in the transaction
that records the new state and runs the actions: whichever process wins the update judges, any
other finds nothing to do, so there is exactly one evaluation per alarm per period however many
evaluators run (docs/cloudwatch.md, "Where the evaluator runs").
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.models import MetricAlarm
from neurondock_platform.services import metrics, statistics
from neurondock_platform.services.cloudwatch import actions, alarms, evaluation
from neurondock_platform.services.cloudwatch.evaluation import Datapoint, Timing

log = logging.getLogger(__name__)

# Statistics that grow with the length of the period: scaled back to a whole period under the knob.
_EXTENSIVE = frozenset({"Sum", "SampleCount"})


def period_end(now: dt.datetime, period: int, timing: Timing) -> dt.datetime:
    """The end of the newest period whose data is complete at ``now``."""
    settled = now.timestamp() - timing.settle
    return dt.datetime.fromtimestamp(settled - settled % period, dt.UTC)


def due(session: Session, now: dt.datetime, timing: Timing) -> list[int]:
    """Ids of the alarms with a whole period not yet judged."""
    rows = session.execute(select(MetricAlarm.id, MetricAlarm.period, MetricAlarm.evaluated_through)).all()
    return [aid for aid, period, through in rows if period_end(now, timing.period(period), timing) > through]


def due_at(through: dt.datetime, period: int, timing: Timing) -> dt.datetime:
    """The first moment ``period_end`` passes ``through``: when an alarm judged through it is due again."""
    return dt.datetime.fromtimestamp((through.timestamp() // period + 1) * period + timing.settle, dt.UTC)


def next_due(session: Session, now: dt.datetime, timing: Timing) -> dt.datetime | None:
    """When the next alarm has a whole period not yet judged (``now`` if one has already); None without alarms."""
    rows = session.execute(select(MetricAlarm.period, MetricAlarm.evaluated_through)).all()
    return max(now, min(due_at(through, timing.period(period), timing) for period, through in rows)) if rows else None


def datapoints(
    session: Session, alarm: MetricAlarm, start: dt.datetime, periods: int, timing: Timing
) -> list[Datapoint | None]:
    """The alarm's statistic per period from ``start`` (None where a period has no data)."""
    step = timing.period(alarm.period)
    key = metrics.StreamKey(
        alarm.account_id,
        alarm.namespace,
        alarm.metric_name,
        metrics.canonical((d["Name"], d["Value"]) for d in alarm.dimensions),
    )
    end = start + dt.timedelta(seconds=step * periods)
    data = metrics.periods(session, key, start, end, step, unit=alarm.unit)
    stat = alarm.statistic or alarm.extended_statistic or "Average"
    out: list[Datapoint | None] = []
    for index in range(periods):
        when = start + dt.timedelta(seconds=step * index)
        found = data.get(when)
        value = statistics.value(found.aggregate, stat) if found is not None else None
        if found is None or value is None:
            out.append(None)
            continue
        if stat in _EXTENSIVE:
            value *= timing.scale(alarm.period)
        out.append(Datapoint(when, value, found.aggregate.sample_count))
    return out


def _low_samples(alarm: MetricAlarm, points: list[Datapoint | None]) -> bool:
    # EvaluateLowSampleCountPercentile=ignore: keep the state while a percentile has too few samples.
    if alarm.evaluate_low_sample_count_percentile != "ignore" or not alarm.extended_statistic:
        return False
    return any(
        statistics.low_sample_count(
            statistics.Aggregate(p.sample_count, 0.0, None, None, None), alarm.extended_statistic
        )
        for p in points[-alarm.evaluation_periods :]
        if p is not None
    )


def evaluate(session: Session, alarm_id: int, now: dt.datetime, timing: Timing) -> bool:
    """Judge one alarm's newest whole period if nobody has; returns whether this call judged it.

    The caller commits (or rolls back, which leaves the period to be judged again).
    """
    alarm = session.get(MetricAlarm, alarm_id)
    if alarm is None:
        return False
    step = timing.period(alarm.period)
    end = period_end(now, step, timing)
    won = session.execute(
        update(MetricAlarm)
        .where(MetricAlarm.id == alarm_id, MetricAlarm.evaluated_through < end)
        .values(evaluated_through=end)
        .execution_options(synchronize_session=False)
    )
    if not won.rowcount:  # type: ignore[attr-defined]
        return False
    session.refresh(alarm)
    periods = alarm.evaluation_periods + evaluation.EXTRA_PERIODS
    start = end - dt.timedelta(seconds=step * periods)
    points = datapoints(session, alarm, start, periods, timing)
    if _low_samples(alarm, points):
        outcome = evaluation.Outcome(None, "", [], [])
    else:
        outcome = evaluation.judge(
            points,
            evaluation_periods=alarm.evaluation_periods,
            datapoints_to_alarm=alarm.datapoints_to_alarm,
            threshold=alarm.threshold,
            operator=alarm.comparison_operator,
            treat_missing=alarm.treat_missing_data,
            current=alarm.state_value,
        )
    transitioned = False
    if outcome.state is not None:
        data = evaluation.reason_data(
            outcome,
            statistic=alarm.statistic or alarm.extended_statistic or "",
            period=alarm.period,
            threshold=alarm.threshold,
            query_date=now,
            start=end - dt.timedelta(seconds=step * alarm.evaluation_periods),
        )
        transitioned = alarms.transition(session, alarm, outcome.state, outcome.reason, data, now)
    newest = next((p for p in reversed(points) if p is not None), None)
    actions.run(session, alarm, transitioned=transitioned, newest=newest, now=now, timing=timing)
    return True


def latest(session: Session, alarm: MetricAlarm, now: dt.datetime, timing: Timing) -> Datapoint | None:
    """The alarm's newest datapoint over its evaluation range (for actions run by SetAlarmState)."""
    step = timing.period(alarm.period)
    periods = alarm.evaluation_periods + evaluation.EXTRA_PERIODS
    end = period_end(now, step, timing)
    points = datapoints(session, alarm, end - dt.timedelta(seconds=step * periods), periods, timing)
    return next((p for p in reversed(points) if p is not None), None)


def evaluate_due(factory: sessionmaker[Session], now: dt.datetime, timing: Timing) -> int:
    """Judge every due alarm, each in its own transaction; returns how many this process judged."""
    with factory() as session:
        ids = due(session, now, timing)
    judged = 0
    for alarm_id in ids:
        with factory() as session:
            try:
                if evaluate(session, alarm_id, now, timing):
                    judged += 1
                session.commit()
            except Exception:
                session.rollback()
                log.exception("evaluating alarm %s failed; its period is judged again next time", alarm_id)
    return judged
