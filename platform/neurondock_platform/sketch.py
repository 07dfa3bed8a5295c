"""Mergeable value distributions for percentiles: log-spaced buckets with 1 % relative accuracy.

A value ``v > 0`` falls in bucket ``k = ceil(log(v) / log(GAMMA))``, which covers
``(GAMMA**(k-1), GAMMA**k]``; the bucket's representative value is within ``ACCURACY`` of every value
in it. Negative values use the same buckets on ``-v`` and zeros have a bucket of their own. Sketches
of different processes and periods merge by adding counts, so a percentile over any period is as
accurate as over one row (docs/cloudwatch.md, "Percentiles"). Stored as JSON:
``{"p": {"<k>": count}, "n": {"<k>": count}, "z": count}`` (empty parts omitted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

ACCURACY = 0.01
GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
_INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
_LOG = math.log
_CEIL = math.ceil


class Sketch:
    """Counts of values per log-spaced bucket; ``add`` is the hot path (a log and a dict update)."""

    __slots__ = ("negative", "positive", "zero")

    def __init__(self) -> None:
        self.positive: dict[int, float] = {}
        self.negative: dict[int, float] = {}
        self.zero = 0.0

    def add(self, value: float, count: float = 1.0) -> None:
        if value > 0.0:
            key = _CEIL(_LOG(value) * _INV_LOG_GAMMA)
            buckets = self.positive
        elif value < 0.0:
            key = _CEIL(_LOG(-value) * _INV_LOG_GAMMA)
            buckets = self.negative
        else:
            self.zero += count
            return
        buckets[key] = buckets.get(key, 0.0) + count

    @property
    def count(self) -> float:
        return self.zero + sum(self.positive.values()) + sum(self.negative.values())

    def merge(self, other: Sketch) -> None:
        """Add another sketch's counts to this one."""
        self.zero += other.zero
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0.0) + count

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.positive:
            out["p"] = {str(k): _compact(c) for k, c in self.positive.items()}
        if self.negative:
            out["n"] = {str(k): _compact(c) for k, c in self.negative.items()}
        if self.zero:
            out["z"] = _compact(self.zero)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sketch:
        sketch = cls()
        sketch.positive = {int(k): float(c) for k, c in (data.get("p") or {}).items()}
        sketch.negative = {int(k): float(c) for k, c in (data.get("n") or {}).items()}
        sketch.zero = float(data.get("z") or 0.0)
        return sketch

    @classmethod
    def of(cls, values: Iterable[tuple[float, float]]) -> Sketch:
        """Build a sketch from (value, count) pairs."""
        sketch = cls()
        for value, count in values:
            sketch.add(value, count)
        return sketch

    def weighted_values(self) -> Iterator[tuple[float, float]]:
        """Yield (representative value, count) in ascending value order."""
        for key in sorted(self.negative, reverse=True):
            yield -_representative(key), self.negative[key]
        if self.zero:
            yield 0.0, self.zero
        for key in sorted(self.positive):
            yield _representative(key), self.positive[key]


def _representative(key: int) -> float:
    # The value with the same relative distance to both bucket bounds.
    return 2.0 * GAMMA**key / (GAMMA + 1.0)


def _compact(count: float) -> float | int:
    return int(count) if float(count).is_integer() else count


def merged(sketches: Iterable[Mapping[str, Any] | None]) -> Sketch | None:
    """Merge stored sketches; None when any of them is missing (a percentile is then unknown)."""
    out = Sketch()
    for data in sketches:
        if data is None:
            return None
        out.merge(Sketch.from_json(data))
    return out
