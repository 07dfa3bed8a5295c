"""Application Auto Scaling schedule expressions: ``at(…)``, ``rate(…)`` and ``cron(…)``.

``cron`` has AWS's six fields (minutes, hours, day of month, month, day of week 1-7 = SUN-SAT,
year), one of the two day fields being ``?``; ``*``, lists, ranges, steps and names are supported.
``L``, ``W`` and ``#`` are refused as not implemented. Times are in the action's Timezone (UTC by
default). ``next_run`` returns the first run strictly after a moment, in UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from neurondock_platform.services.autoscaling.errors import NotImplementedFeature, ValidationException

_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\(([^)]*)\)$")
_MONTHS = {
    m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
_DAYS = {d: i + 1 for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2199, {}),
)
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
SEARCH_DAYS = 366 * 5


@dataclass(frozen=True)
class Schedule:
    kind: str  # at, rate, cron
    at: dt.datetime | None = None
    every: dt.timedelta | None = None
    fields: tuple[frozenset[int] | None, ...] = ()


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationException(f"Timezone {name} is not a valid time zone name.") from exc


def parse(expression: str) -> Schedule:
    """Parse a schedule expression; ValidationException (or NotImplemented for L/W/#) when it is not one."""
    at = _AT.match(expression)
    if at:
        return Schedule("at", at=dt.datetime.fromisoformat(at[1]))
    rate = _RATE.match(expression)
    if rate:
        value, unit = int(rate[1]), rate[2].rstrip("s")
        if value < 1:
            raise ValidationException(f"Schedule {expression}: the rate must be a positive number.")
        if (value == 1) != (rate[2] == unit):
            raise ValidationException(f"Schedule {expression}: use {unit} for 1 and {unit}s otherwise.")
        return Schedule("rate", every=dt.timedelta(seconds=value * _UNIT_SECONDS[unit]))
    cron = _CRON.match(expression)
    if not cron:
        raise ValidationException(
            f"Schedule {expression} is not valid: use at(yyyy-mm-ddThh:mm:ss), rate(value unit) or cron(fields)."
        )
    parts = cron[1].split()
    if len(parts) != 6:
        raise ValidationException(f"Schedule {expression}: a cron expression has 6 fields, got {len(parts)}.")
    if (parts[2] == "?") == (parts[4] == "?"):
        raise ValidationException(f"Schedule {expression}: exactly one of day-of-month and day-of-week must be '?'.")
    fields = tuple(_field(text, spec, expression) for text, spec in zip(parts, _FIELDS, strict=True))
    return Schedule("cron", fields=fields)


def _field(text: str, spec: tuple[str, int, int, dict[str, int]], expression: str) -> frozenset[int] | None:
    name, low, high, names = spec
    if text in ("*", "?"):
        return None
    if any(c in text for c in "LW#"):
        raise NotImplementedFeature(
            f"Schedule {expression}: L, W and # in cron fields are not implemented by neurondock."
        )
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, raw_step = part.split("/", 1)
            step = _number(raw_step, names, name, expression)
            if step < 1:
                raise ValidationException(f"Schedule {expression}: bad step in the {name} field.")
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _number(a, names, name, expression), _number(b, names, name, expression)
        else:
            start = _number(part, names, name, expression)
            end = high if step > 1 else start
        if not low <= start <= end <= high:
            raise ValidationException(f"Schedule {expression}: {part} is out of range for the {name} field.")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _number(text: str, names: dict[str, int], field: str, expression: str) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ValidationException(f"Schedule {expression}: {text} is not valid in the {field} field.")
    return int(text)


def _matches(fields: tuple[frozenset[int] | None, ...], when: dt.datetime) -> bool:
    minute, hour, dom, month, dow, year = fields
    weekday = when.isoweekday() % 7 + 1  # AWS: 1 = Sunday
    return (
        (minute is None or when.minute in minute)
        and (hour is None or when.hour in hour)
        and (dom is None or when.day in dom)
        and (month is None or when.month in month)
        and (dow is None or weekday in dow)
        and (year is None or when.year in year)
    )


def next_run(
    schedule: Schedule, after: dt.datetime, tz: ZoneInfo, *, anchor: dt.datetime | None = None
) -> dt.datetime | None:
    """The first run strictly after ``after`` (UTC), or None when there is none."""
    if schedule.kind == "at":
        assert schedule.at is not None
        when = schedule.at.replace(tzinfo=tz).astimezone(dt.UTC)
        return when if when > after else None
    if schedule.kind == "rate":
        assert schedule.every is not None
        start = anchor or after
        if start > after:
            return start
        steps = (after - start) // schedule.every + 1
        return start + steps * schedule.every
    local = after.astimezone(tz).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    limit = local + dt.timedelta(days=SEARCH_DAYS)
    _, hour, dom, month, dow, year = schedule.fields
    while local < limit:
        if (year is not None and local.year not in year) or (month is not None and local.month not in month):
            local = (local.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            continue
        weekday = local.isoweekday() % 7 + 1
        if (dom is not None and local.day not in dom) or (dow is not None and weekday not in dow):
            local = local.replace(hour=0, minute=0) + dt.timedelta(days=1)
            continue
        if hour is not None and local.hour not in hour:
            local = local.replace(minute=0) + dt.timedelta(hours=1)
            continue
        if _matches(schedule.fields, local):
            return local.astimezone(dt.UTC)
        local += dt.timedelta(minutes=1)
    return None
