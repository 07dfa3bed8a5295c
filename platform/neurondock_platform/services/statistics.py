"""CloudWatch's statistic names and how each is computed from a period's aggregate.

Simple statistics (SampleCount, Average, Sum, Minimum, Maximum) come from the sums; extended ones
(``p99``, ``p99.9``, ``tm90``, ``TM(10%:90%)``, ``wm``, ``tc``, ``ts``, ``PR(n:m)``, ``IQM``) from the
merged percentile sketch (``sketch.py``), so they are known only when every sample of the period
came with one (docs/cloudwatch.md, "Statistics").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from neurondock_platform.sketch import Sketch

SIMPLE = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
_NUMBER = r"\d+(?:\.\d{1,10})?"
_SHORT = re.compile(rf"^(?P<kind>p|tm|wm|tc|ts)(?P<value>{_NUMBER})$")
_BOUND = rf"(?:{_NUMBER}%?)?"
_RANGE = re.compile(rf"^(?P<kind>TM|WM|TC|TS|PR)\((?P<low>{_BOUND}):(?P<high>{_BOUND})\)$")


class StatisticError(ValueError):
    """A name that is not one of CloudWatch's statistics."""


@dataclass(frozen=True)
class Bound:
    value: float
    percent: bool


@dataclass(frozen=True)
class Extended:
    """A parsed extended statistic: a percentile, or a trimmed/winsorized figure over a range."""

    name: str
    kind: str  # p, tm, wm, tc, ts, pr
    low: Bound | None
    high: Bound | None


@dataclass
class Aggregate:
    """One period of one metric: the sums every statistic starts from."""

    sample_count: float
    sum: float
    minimum: float | None
    maximum: float | None
    sketch: Sketch | None

    @property
    def average(self) -> float:
        return self.sum / self.sample_count if self.sample_count else 0.0


def parse_extended(name: str) -> Extended:
    """Parse ``p99``, ``tm90``, ``TM(10%:90%)``, ``PR(:300)``, ``IQM`` …; raise StatisticError otherwise."""
    if name == "IQM":
        return Extended(name, "tm", Bound(25.0, True), Bound(75.0, True))
    short = _SHORT.match(name)
    if short:
        value = float(short["value"])
        if not 0 <= value <= 100:
            raise StatisticError(name)
        kind = short["kind"]
        if kind == "p":
            return Extended(name, "p", None, Bound(value, True))
        return Extended(name, kind, None, Bound(value, True))
    ranged = _RANGE.match(name)
    if not ranged:
        raise StatisticError(name)
    low, high = _bound(ranged["low"]), _bound(ranged["high"])
    if low is None and high is None:
        raise StatisticError(name)
    for bound in (low, high):
        if bound is not None and bound.percent and not 0 <= bound.value <= 100:
            raise StatisticError(name)
    if low is not None and high is not None and low.percent == high.percent and low.value > high.value:
        raise StatisticError(name)
    return Extended(name, ranged["kind"].lower(), low, high)


def _bound(text: str) -> Bound | None:
    if not text:
        return None
    return Bound(float(text.rstrip("%")), text.endswith("%"))


def is_statistic(name: str) -> bool:
    """Whether ``name`` is a simple statistic or a valid extended one."""
    if name in SIMPLE:
        return True
    try:
        parse_extended(name)
    except StatisticError:
        return False
    return True


def value(aggregate: Aggregate, statistic: str) -> float | None:
    """Return one statistic of a period; None when it cannot be known (no sketch, no samples)."""
    if statistic == "SampleCount":
        return aggregate.sample_count
    if statistic == "Sum":
        return aggregate.sum
    if statistic == "Average":
        return aggregate.average if aggregate.sample_count else None
    if statistic == "Minimum":
        return aggregate.minimum
    if statistic == "Maximum":
        return aggregate.maximum
    return extended_value(aggregate, parse_extended(statistic))


def extended_value(aggregate: Aggregate, stat: Extended) -> float | None:
    """Compute an extended statistic from the period's sketch (clamped to its true extremes)."""
    sketch = aggregate.sketch
    if sketch is None:
        return None
    pairs = list(sketch.weighted_values())
    total = sum(c for _, c in pairs)
    if total <= 0:
        return None
    lo_v = aggregate.minimum if aggregate.minimum is not None else pairs[0][0]
    hi_v = aggregate.maximum if aggregate.maximum is not None else pairs[-1][0]
    if stat.kind == "p":
        assert stat.high is not None
        q = stat.high.value / 100.0
        # The ends are known exactly: the period's own minimum and maximum.
        if q <= 0:
            return lo_v
        if q >= 1:
            return hi_v
        return _clamp(_percentile(pairs, total, q), lo_v, hi_v)
    if stat.kind == "pr":
        low = -math.inf if stat.low is None else stat.low.value
        high = math.inf if stat.high is None else stat.high.value
        inside = sum(c for v, c in pairs if low < v <= high)
        return 100.0 * inside / total
    if all(bound is None or bound.percent for bound in (stat.low, stat.high)) and stat.kind != "wm":
        chosen = _by_rank(pairs, total, stat.low, stat.high)
    else:
        low_v = _resolve(stat.low, pairs, total, -math.inf)
        high_v = _resolve(stat.high, pairs, total, math.inf)
        if stat.kind == "wm":
            clamped = [(min(max(v, low_v), high_v), c) for v, c in pairs]
            return _clamp(sum(v * c for v, c in clamped) / total, lo_v, hi_v)
        chosen = [(v, c) for v, c in pairs if low_v < v <= high_v]
    count = sum(c for _, c in chosen)
    if stat.kind == "tc":
        return count
    summed = sum(v * c for v, c in chosen)
    if stat.kind == "ts":
        return summed
    return _clamp(summed / count, lo_v, hi_v) if count else None


def _by_rank(
    pairs: list[tuple[float, float]], total: float, low: Bound | None, high: Bound | None
) -> list[tuple[float, float]]:
    # The samples ranked in (low%, high%]: whole buckets inside, the overlapping share of the edge ones.
    lo_rank = 0.0 if low is None else total * low.value / 100.0
    hi_rank = total if high is None else total * high.value / 100.0
    out, seen = [], 0.0
    for v, c in pairs:
        share = min(seen + c, hi_rank) - max(seen, lo_rank)
        if share > 0:
            out.append((v, share))
        seen += c
    return out


def _resolve(bound: Bound | None, pairs: list[tuple[float, float]], total: float, default: float) -> float:
    if bound is None:
        return default
    if bound.percent:
        return _percentile(pairs, total, bound.value / 100.0)
    return bound.value


def _percentile(pairs: list[tuple[float, float]], total: float, q: float) -> float:
    if q <= 0:
        return pairs[0][0]
    rank = q * total
    seen = 0.0
    for v, c in pairs:
        seen += c
        if seen >= rank - 1e-9:
            return v
    return pairs[-1][0]


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def low_sample_count(aggregate: Aggregate, statistic: str) -> bool:
    """Whether a percentile has too few samples to be significant: fewer than 10 / (1 - p)."""
    try:
        stat = parse_extended(statistic)
    except StatisticError:
        return False
    if stat.kind != "p" or stat.high is None:
        return False
    q = stat.high.value / 100.0
    needed = math.inf if q >= 1 else 10.0 / (1.0 - q)
    return aggregate.sample_count < needed


def describe(stat: str) -> dict[str, Any]:
    """A statistic as the alarm's StateReasonData names it."""
    return {"statistic": stat} if stat in SIMPLE else {"extendedStatistic": stat}
