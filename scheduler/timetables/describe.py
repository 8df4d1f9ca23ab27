"""Schedules in words: "At 06:00, Monday through Friday, Europe/Berlin".

Covers the common shapes (every minute, every N minutes, hourly at :MM, every N hours,
a few times a day, weekday and day-of-month lists or ranges, months). Anything else is
described as "Cron: <expression> (<time zone>)", which is never wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.timetables.cron import CronSpec

_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = ("", "January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_NUMBER = re.compile(r"\d+")
_EVERY = re.compile(r"\*/(\d+)")
_RANGE = re.compile(r"(\d+)-(\d+)")


class _Unsupported(Exception):
    pass


def _join(words: Sequence[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def _runs(values: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted values: [1,2,3,5] -> [(1,3),(5,5)]."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _time_part(spec: CronSpec) -> str:
    minute, hour = spec.fields[0], spec.fields[1]
    minutes, hours = spec.minutes, spec.hours
    if minute == "*" or _EVERY.fullmatch(minute):
        step = 1 if minute == "*" else int(minute[2:])
        if 60 % step and step < 60:  # "*/7" restarts at :00, not every 7 minutes
            raise _Unsupported
        every = "Every minute" if step == 1 else f"Every {step} minutes"
        if len(minutes) == 1:  # "*/90": only minute 0
            every = "Every hour at :00"
        if hour == "*":
            return every
        runs = _runs(hours)
        if len(runs) == 1:
            low, high = runs[0]
            return f"{every}, between {low:02d}:00 and {high:02d}:59"
        raise _Unsupported
    if _NUMBER.fullmatch(minute) or (len(minutes) <= 4 and "/" not in minute):
        at = _join([f":{m:02d}" for m in minutes])
        if hour == "*":
            return f"Every hour at {at}"
        match = _EVERY.fullmatch(hour)
        if match and len(hours) > 1 and 24 % int(match.group(1)) == 0:
            return f"Every {match.group(1)} hours at {at}"
        if len(hours) * len(minutes) <= 6:
            return "At " + _join([f"{h:02d}:{m:02d}" for h in hours for m in minutes])
        runs = _runs(hours)
        if len(runs) == 1:
            low, high = runs[0]
            return f"Every hour at {at}, from {low:02d}:{minutes[0]:02d} through {high:02d}:{minutes[-1]:02d}"
    raise _Unsupported


def _weekdays(days: frozenset[int], alternative: bool = False) -> str:
    ordered = sorted(days, key=lambda d: (d + 6) % 7)  # Monday first
    monday_first = [(d + 6) % 7 for d in ordered]
    runs = _runs(monday_first)
    if len(runs) == 1 and runs[0][1] - runs[0][0] >= 2:
        low, high = runs[0]
        return f"{_WEEKDAYS[(low + 1) % 7]} through {_WEEKDAYS[(high + 1) % 7]}"
    names = [_WEEKDAYS[d] for d in ordered]
    return ("only on " if len(names) == 1 and not alternative else "on ") + _join(names)


def _days_of_month(days: frozenset[int]) -> str:
    ordered = sorted(days)
    runs = _runs(ordered)
    if len(ordered) == 1:
        return f"on day {ordered[0]} of the month"
    if len(runs) == 1:
        return f"on days {runs[0][0]} through {runs[0][1]} of the month"
    if len(ordered) <= 8:
        return f"on days {_join([str(d) for d in ordered])} of the month"
    raise _Unsupported


def _months(months: Sequence[int]) -> str:
    runs = _runs(months)
    if len(months) == 1:
        return f"only in {_MONTHS[months[0]]}"
    if len(runs) == 1 and len(months) >= 3:
        return f"{_MONTHS[runs[0][0]]} through {_MONTHS[runs[0][1]]}"
    return "in " + _join([_MONTHS[m] for m in months])


def describe_cron(spec: CronSpec, timezone: str) -> str:
    """A sentence for a parsed cron expression in ``timezone``."""
    try:
        parts = [_time_part(spec)]
        dom, dow = spec.fields[2], spec.fields[4]
        if dom != "*" and dow != "*":
            parts.append(f"{_days_of_month(spec.days_of_month)} or {_weekdays(spec.days_of_week, alternative=True)}")
        elif dom != "*":
            parts.append(_days_of_month(spec.days_of_month))
        elif dow != "*":
            parts.append(_weekdays(spec.days_of_week))
        if spec.fields[3] != "*" and len(spec.months) < 12:
            parts.append(_months(spec.months))
    except _Unsupported:
        return f"Cron: {spec.expression} ({timezone})"
    parts.append(timezone)
    return ", ".join(parts)


def describe_delta(delta: timedelta) -> str:
    """ "Every 2 hours", "Every day", "Every 1 day and 6 hours"."""
    if delta.microseconds:
        return f"Every {delta}"
    total = int(delta.total_seconds())
    units = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
    pieces: list[tuple[int, str]] = []
    for unit, size in units:
        count, total = divmod(total, size)
        if count:
            pieces.append((count, unit))
    if len(pieces) == 1:
        count, unit = pieces[0]
        return f"Every {unit}" if count == 1 else f"Every {count} {unit}s"
    return "Every " + _join([_plural(count, unit) for count, unit in pieces])
