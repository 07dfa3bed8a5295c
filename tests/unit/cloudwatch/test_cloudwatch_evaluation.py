"""Alarm judgement against AWS's published examples, statistics from sketches, schedule expressions."""

from __future__ import annotations

import datetime as dt

import pytest

from neurondock_platform.models import AlarmState
from neurondock_platform.services import statistics
from neurondock_platform.services.cloudwatch.evaluation import Datapoint, Timing, judge
from neurondock_platform.sketch import Sketch

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
RETAIN = "retain"


def _points(pattern: str) -> list[Datapoint | None]:
    """'0 - X - X' (oldest first): 0 within the threshold, X breaching, - missing."""
    out: list[Datapoint | None] = []
    for index, mark in enumerate(pattern.split()):
        when = T0 + dt.timedelta(minutes=index)
        out.append(None if mark == "-" else Datapoint(when, 5.0 if mark == "X" else 0.0, 1))
    return out


def _state(pattern: str, m: int, treat: str, current: AlarmState = AlarmState.OK) -> str:
    outcome = judge(
        _points(pattern),
        evaluation_periods=3,
        datapoints_to_alarm=m,
        threshold=1.0,
        operator="GreaterThanThreshold",
        treat_missing=treat,
        current=current,
    )
    return RETAIN if outcome.state is None else str(outcome.state)


# AWS's "How alarm state is evaluated when data is missing" tables: (data points, MISSING, IGNORE,
# BREACHING, NOT BREACHING), Evaluation Periods 3 and an evaluation range of 5.
THREE_OF_THREE = [
    ("0 - X - X", "OK", "OK", "OK", "OK"),
    ("0 - - - -", "OK", "OK", "OK", "OK"),
    ("- - - - -", "INSUFFICIENT_DATA", RETAIN, "ALARM", "OK"),
    ("0 X X - X", "ALARM", "ALARM", "ALARM", "ALARM"),
    ("- - X - -", "ALARM", RETAIN, "ALARM", "OK"),
]
TWO_OF_THREE = [
    ("0 - X - X", "ALARM", "ALARM", "ALARM", "ALARM"),
    ("0 0 X 0 X", "ALARM", "ALARM", "ALARM", "ALARM"),
    ("0 - X - -", "OK", "OK", "ALARM", "OK"),
    ("- - - - 0", "OK", "OK", "ALARM", "OK"),
    ("- - - X -", "ALARM", RETAIN, "ALARM", "OK"),
]


@pytest.mark.parametrize(("m", "row"), [(3, r) for r in THREE_OF_THREE] + [(2, r) for r in TWO_OF_THREE])
def test_judgement_matches_aws_published_tables(m, row):
    pattern, *expected = row
    got = [_state(pattern, m, treat) for treat in ("missing", "ignore", "breaching", "notBreaching")]
    assert got == expected, pattern


def test_premature_alarm_waits_for_the_next_datapoint():
    # "- - - - X" with 3 of 3: the next datapoint may be fine, so no ALARM yet (AWS's example).
    assert _state("- - - - X", 3, "missing") == "OK"
    assert _state("- - - X -", 3, "missing") == "OK"


def test_reason_text_and_transition_wording():
    outcome = judge(
        _points("0 0 X X X"),
        evaluation_periods=3,
        datapoints_to_alarm=3,
        threshold=1.0,
        operator="GreaterThanThreshold",
        treat_missing="missing",
        current=AlarmState.OK,
    )
    assert outcome.state == AlarmState.ALARM
    assert outcome.reason == (
        "Threshold Crossed: 3 out of the last 3 datapoints [5.0 (01/12/26 10:04:00), 5.0 (01/12/26 10:03:00), "
        "5.0 (01/12/26 10:02:00)] were greater than the threshold (1.0) (minimum 3 datapoints for OK -> ALARM "
        "transition)."
    )
    back = judge(
        _points("X X X X 0"),
        evaluation_periods=3,
        datapoints_to_alarm=3,
        threshold=1.0,
        operator="GreaterThanThreshold",
        treat_missing="missing",
        current=AlarmState.ALARM,
    )
    assert back.state == AlarmState.OK
    assert "1 out of the last 3 datapoints" in back.reason and "was not greater than" in back.reason
    assert "(minimum 1 datapoint for ALARM -> OK transition)" in back.reason
    empty = judge(
        _points("- - - - -"),
        evaluation_periods=3,
        datapoints_to_alarm=3,
        threshold=1.0,
        operator="GreaterThanThreshold",
        treat_missing="missing",
        current=AlarmState.OK,
    )
    assert empty.reason == "Insufficient Data: 3 datapoints were unknown."


def test_timing_scales_periods_to_whole_flushes():
    aws = Timing()
    assert (aws.period(60), aws.scale(60), aws.duration(300), aws.settle) == (60, 1.0, 300, 11.0)
    fast = Timing(speedup=10, flush_seconds=1)
    assert (fast.period(60), fast.scale(60), fast.duration(300)) == (6, 10.0, 30.0)
    assert Timing(speedup=30, flush_seconds=1).period(60) == 2
    # Never finer than one flush, never longer than the configured period.
    assert Timing(speedup=100, flush_seconds=10).period(60) == 10
    assert Timing(speedup=2, flush_seconds=10).period(10) == 10


def test_statistics_from_sketches_within_one_percent():
    values = [float(v) for v in range(1, 1001)]
    aggregate = statistics.Aggregate(1000, sum(values), 1.0, 1000.0, Sketch.of((v, 1) for v in values))
    assert statistics.value(aggregate, "p50") == pytest.approx(500, rel=0.011)
    assert statistics.value(aggregate, "p99.9") == pytest.approx(999, rel=0.011)
    assert statistics.value(aggregate, "p100") == 1000.0 and statistics.value(aggregate, "p0") == 1.0
    assert statistics.value(aggregate, "tm99") == pytest.approx(sum(values[:990]) / 990, rel=0.011)
    assert statistics.value(aggregate, "TM(10%:90%)") == pytest.approx(500.5, rel=0.011)
    assert statistics.value(aggregate, "IQM") == pytest.approx(500.5, rel=0.011)
    assert statistics.value(aggregate, "tc90") == pytest.approx(900, abs=12)
    assert statistics.value(aggregate, "PR(:100)") == pytest.approx(10.0, abs=0.3)
    assert statistics.value(aggregate, "wm98") == pytest.approx(500.5, rel=0.011)
    assert statistics.value(aggregate, "Average") == 500.5
    no_sketch = statistics.Aggregate(3, 6.0, 1.0, 3.0, None)
    assert statistics.value(no_sketch, "p90") is None and statistics.value(no_sketch, "Sum") == 6.0
    for bad in ("p101", "q50", "TM(90%:10%)", "TM(:)", "p"):
        assert not statistics.is_statistic(bad)
    assert statistics.low_sample_count(statistics.Aggregate(999, 0, None, None, None), "p99")
    assert not statistics.low_sample_count(statistics.Aggregate(1000, 0, None, None, None), "p99")


def test_sketches_merge_across_periods_and_processes():
    left, right = Sketch.of([(1.0, 10), (0.0, 2)]), Sketch.of([(1.0, 5), (-3.0, 1), (1e6, 1)])
    left.merge(right)
    again = Sketch.from_json(left.to_json())
    assert again.count == 19 and again.zero == 2
    ordered = [v for v, _ in again.weighted_values()]
    assert ordered == sorted(ordered) and ordered[0] == pytest.approx(-3.0, rel=0.01)


def test_schedule_expressions():
    from neurondock_platform.services.autoscaling import schedules
    from neurondock_platform.services.autoscaling.errors import NotImplementedFeature, ValidationException

    utc = schedules.zone(None)
    after = dt.datetime(2026, 12, 1, 10, 7, 30, tzinfo=dt.UTC)  # a Tuesday
    cron = schedules.parse("cron(0 9-17/4 ? * MON-FRI *)")
    assert schedules.next_run(cron, after, utc) == dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.UTC)
    weekend = schedules.parse("cron(30 2 ? * SAT *)")
    assert schedules.next_run(weekend, after, utc) == dt.datetime(2026, 12, 5, 2, 30, tzinfo=dt.UTC)
    berlin = schedules.zone("Europe/Berlin")  # 11:07 there: noon on the 1st is still to come today
    assert schedules.next_run(schedules.parse("cron(0 12 1 * ? *)"), after, berlin) == dt.datetime(
        2026, 12, 1, 11, 0, tzinfo=dt.UTC
    )
    assert schedules.next_run(schedules.parse("cron(0 9 1 * ? *)"), after, berlin) == dt.datetime(
        2027, 1, 1, 8, 0, tzinfo=dt.UTC
    )
    once = schedules.parse("at(2026-12-01T12:00:00)")
    assert schedules.next_run(once, after, utc) == dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    assert schedules.next_run(once, after + dt.timedelta(days=1), utc) is None
    rate = schedules.parse("rate(5 minutes)")
    assert schedules.next_run(rate, after, utc, anchor=after - dt.timedelta(minutes=7)) == after + dt.timedelta(
        minutes=3
    )
    for bad in ("cron(0 9 * * MON *)", "rate(1 minutes)", "every day", "cron(0 9 * * ?)", "cron(61 9 * * ? *)"):
        with pytest.raises(ValidationException):
            schedules.parse(bad)
    with pytest.raises(NotImplementedFeature):
        schedules.parse("cron(0 9 L * ? *)")
    with pytest.raises(ValidationException):
        schedules.zone("Mars/Olympus")
