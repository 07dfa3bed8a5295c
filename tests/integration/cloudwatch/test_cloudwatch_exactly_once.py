"""Exactly one evaluation per alarm and period, however many evaluators race for it (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading

from tests.integration.cloudwatch import cw_helpers


def test_exactly_one_evaluation_per_period_with_concurrent_evaluators(cw, db, session_factory):
    """Eight evaluators (as in eight worker processes) race for the same period: one judges it."""
    from neurondock_platform.services.cloudwatch import evaluator

    now = cw_helpers.soon()
    cw_helpers.alarm(
        cw, EvaluationPeriods=1, DatapointsToAlarm=1, AlarmActions=["arn:aws:sns:us-east-1:123456789012:t"]
    )
    cw_helpers.backdate(db, cw_helpers.minute(now, -3), "jobs-high")
    cw_helpers.put(cw, cw_helpers.minute(now, -1), 50.0)
    results: list[int] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        results.append(evaluator.evaluate_due(session_factory, now + dt.timedelta(seconds=11), cw_helpers.AWS_TIMING))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [0] * 7 + [1]
    history = cw.describe_alarm_history(AlarmName="jobs-high")["AlarmHistoryItems"]
    kinds = [h["HistoryItemType"] for h in history]
    assert kinds.count("StateUpdate") == 1 and kinds.count("Action") == 1
    # An action neurondock cannot run is recorded as failed, never dropped silently.
    action = next(h for h in history if h["HistoryItemType"] == "Action")
    assert action["HistorySummary"] == "Failed to execute action arn:aws:sns:us-east-1:123456789012:t"
