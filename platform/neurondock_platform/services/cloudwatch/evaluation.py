"""How a metric alarm judges its datapoints: M out of N, the four ways to treat missing data, and
AWS's wording for the reason (docs/cloudwatch.md, "Alarm evaluation").

Pure logic: ``judge`` takes the datapoints of the evaluation range (oldest first, None where a
period has no data) and returns the state they call for. The evaluation range is N + 2 periods, as
in AWS's published examples (3 of 3 → 5); with fewer than N real datapoints the missing ones are
filled as TreatMissingData says, and the "premature alarm" rule of those examples applies.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neurondock_platform.models import AlarmState

EXTRA_PERIODS = 2
OPERATORS = {
    "GreaterThanThreshold": ("greater than", lambda v, t: v > t),
    "GreaterThanOrEqualToThreshold": ("greater than or equal to", lambda v, t: v >= t),
    "LessThanThreshold": ("less than", lambda v, t: v < t),
    "LessThanOrEqualToThreshold": ("less than or equal to", lambda v, t: v <= t),
}
TREATMENTS = ("breaching", "notBreaching", "ignore", "missing")


@dataclass(frozen=True)
class Timing:
    """How fast alarms and cooldowns run: AWS's own timing, or faster by the operator's knob.

    With ``speedup`` above 1 a period of P seconds is judged over P / speedup seconds of data
    (at least one metric flush, and a whole number of them); Sum and SampleCount are scaled back to
    a whole period so thresholds keep their meaning. ``settle`` is how long after a period ends its
    data is complete: one flush of every API process, plus a second.
    """

    speedup: float = 1.0
    flush_seconds: int = 10

    def period(self, seconds: int) -> int:
        if self.speedup <= 1:
            return seconds
        flushes = max(1, round(seconds / self.speedup / self.flush_seconds))
        return min(seconds, flushes * self.flush_seconds)

    def scale(self, seconds: int) -> float:
        """How many judged periods make one configured period (Sum/SampleCount are multiplied by it)."""
        return seconds / self.period(seconds)

    def duration(self, seconds: float) -> float:
        """A configured duration (a cooldown, a retry interval) as it runs here."""
        return seconds / max(1.0, self.speedup)

    @property
    def settle(self) -> float:
        return self.flush_seconds + 1.0


@dataclass(frozen=True)
class Datapoint:
    timestamp: dt.datetime
    value: float
    sample_count: float


@dataclass(frozen=True)
class Outcome:
    """What the alarm's datapoints call for; ``state`` None means keep the current state."""

    state: AlarmState | None
    reason: str
    evaluated: list[Datapoint]
    recent: list[float | None]


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%d/%m/%y %H:%M:%S")


def iso_millis(when: dt.datetime) -> str:
    """A timestamp as alarm reason data spells it: ``2026-12-05T20:31:00.000+0000``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else str(value)


def _plural(n: int, word: str = "datapoint") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def judge(
    points: Sequence[Datapoint | None],
    *,
    evaluation_periods: int,
    datapoints_to_alarm: int,
    threshold: float,
    operator: str,
    treat_missing: str,
    current: AlarmState,
) -> Outcome:
    """Judge the evaluation range (oldest first). Raises KeyError for an unknown operator."""
    words, compare = OPERATORS[operator]
    n, m = evaluation_periods, datapoints_to_alarm
    recent = [p.value if p is not None else None for p in points[-n:]]
    real = [p for p in points if p is not None]

    def breaches(p: Datapoint) -> bool:
        return bool(compare(p.value, threshold))

    if len(real) >= n:
        window = real[-n:]
        return _counted(window, sum(breaches(p) for p in window), n, m, words, threshold, current, recent)
    if not real:
        if treat_missing == "breaching":
            reason = (
                f"Threshold Crossed: no datapoints were received for {_plural(n, 'period')} and "
                f"{n} missing datapoints were treated as [Breaching]."
            )
            return Outcome(AlarmState.ALARM, reason, [], recent)
        if treat_missing == "notBreaching":
            reason = (
                f"Threshold Crossed: no datapoints were received for {_plural(n, 'period')} and "
                f"{n} missing datapoints were treated as [NonBreaching]."
            )
            return Outcome(AlarmState.OK, reason, [], recent)
        if treat_missing == "ignore":
            return Outcome(None, "", [], recent)
        return Outcome(AlarmState.INSUFFICIENT_DATA, f"Insufficient Data: {_plural(n)} were unknown.", [], recent)
    fills = n - len(real)
    hits = sum(breaches(p) for p in real)
    if treat_missing == "breaching":
        return _counted(real, hits + fills, n, m, words, threshold, current, recent, fills=fills)
    if treat_missing in ("missing", "ignore") and _premature_alarm(points[-n:], real, breaches, m):
        if treat_missing == "ignore":
            return Outcome(None, "", [], recent)
        return _counted(real, max(hits, m), n, m, words, threshold, current, recent, fills=fills)
    return _counted(real, hits, n, m, words, threshold, current, recent, fills=fills)


def _premature_alarm(last_n: Sequence[Datapoint | None], real: Sequence[Datapoint], breaches: Any, m: int) -> bool:
    # AWS's examples: every real datapoint in the range breaches, and the oldest breaching one among
    # the last N periods is at least M periods old (everything newer being missing or breaching).
    if not all(breaches(p) for p in real):
        return False
    for index, point in enumerate(last_n):
        if point is not None:
            return len(last_n) - index >= m
    return False


def _counted(
    window: Sequence[Datapoint],
    hits: int,
    n: int,
    m: int,
    words: str,
    threshold: float,
    current: AlarmState,
    recent: list[float | None],
    *,
    fills: int = 0,
) -> Outcome:
    listed = ", ".join(f"{_number(p.value)} ({_stamp(p.timestamp)})" for p in reversed(window))
    evaluated = list(reversed(window))
    if hits >= m:
        new = AlarmState.ALARM
        count, verb, minimum = hits, "were" if hits != 1 else "was", m
        relation = words
    else:
        new = AlarmState.OK
        count = n - hits
        verb = "were" if count != 1 else "was"
        minimum = n - m + 1
        relation = f"not {words}"
    subject = f"{_plural(count)}" if n == 1 else f"{count} out of the last {_plural(n)}"
    filled = f" and {_plural(fills, 'missing datapoint')} treated as filled" if fills else ""
    reason = (
        f"Threshold Crossed: {subject} [{listed}]{filled} {verb} {relation} the threshold ({_number(threshold)}) "
        f"(minimum {_plural(minimum)} for {current} -> {new} transition)."
    )
    return Outcome(new, reason, evaluated, recent)


def reason_data(
    outcome: Outcome, *, statistic: str, period: int, threshold: float, query_date: dt.datetime, start: dt.datetime
) -> str:
    """StateReasonData JSON, as AWS writes it for a threshold alarm."""
    data: dict[str, Any] = {
        "version": "1.0",
        "queryDate": iso_millis(query_date),
        "startDate": iso_millis(start),
        **({"statistic": statistic} if statistic in _SIMPLE else {"extendedStatistic": statistic}),
        "period": period,
        "recentDatapoints": outcome.recent,
        "threshold": threshold,
        "evaluatedDatapoints": [
            {"timestamp": iso_millis(p.timestamp), "sampleCount": p.sample_count, "value": p.value}
            for p in outcome.evaluated
        ],
    }
    return json.dumps(data, separators=(",", ":"))


_SIMPLE = frozenset({"SampleCount", "Average", "Sum", "Minimum", "Maximum"})
