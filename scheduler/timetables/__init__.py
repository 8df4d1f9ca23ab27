"""Schedules turned into runs and data intervals; pure: ``now`` is always passed in.

``make_timetable(schedule, timezone)`` turns what a DAG author writes into a Timetable:

- None: ``NullTimetable`` (manual runs only)
- "@once": ``OnceTimetable`` (one run at start_date)
- a cron expression or preset ("0 6 * * 1-5", "@daily"): ``CronTriggerTimetable``
- a ``timedelta``: ``DeltaTimetable``
- a Timetable (e.g. ``CronDataIntervalTimetable`` for Airflow 2's behaviour): itself
"""

from __future__ import annotations

from datetime import timedelta, tzinfo
from typing import Any

from scheduler.exceptions import ScheduleError
from scheduler.timetables.base import DagRunInfo, DataInterval, Timetable
from scheduler.timetables.cron import PRESETS, CronDataIntervalTimetable, CronTriggerTimetable, parse_cron
from scheduler.timetables.interval import DeltaTimetable
from scheduler.timetables.simple import NullTimetable, OnceTimetable

__all__ = [
    "PRESETS",
    "CronDataIntervalTimetable",
    "CronTriggerTimetable",
    "DagRunInfo",
    "DataInterval",
    "DeltaTimetable",
    "NullTimetable",
    "OnceTimetable",
    "Timetable",
    "deserialize_timetable",
    "make_timetable",
    "parse_cron",
]


def make_timetable(schedule: str | timedelta | Timetable | None, timezone: tzinfo | str) -> Timetable:
    """The timetable for a DAG's ``schedule`` in its ``timezone``; ScheduleError naming the problem."""
    if schedule is None:
        return NullTimetable()
    if isinstance(schedule, Timetable):
        return schedule
    if isinstance(schedule, timedelta):
        return DeltaTimetable(schedule)
    if isinstance(schedule, str):
        if schedule.strip().lower() == "@once":
            return OnceTimetable()
        return CronTriggerTimetable(schedule, timezone)
    raise ScheduleError(
        f"schedule {schedule!r}: expected a cron expression, a preset such as '@daily', "
        "a timedelta, a Timetable or None"
    )


def deserialize_timetable(data: dict[str, Any]) -> Timetable:
    """The timetable ``Timetable.serialize`` wrote; ScheduleError if ``data`` is not one."""
    kind = data.get("__type") if isinstance(data, dict) else None
    try:
        if kind == "cron":
            return CronTriggerTimetable(data["expression"], data["timezone"])
        if kind == "cron_data_interval":
            return CronDataIntervalTimetable(data["expression"], data["timezone"])
        if kind == "delta":
            return DeltaTimetable(timedelta(days=data["days"], seconds=data["seconds"], microseconds=data["microseconds"]))
        if kind == "null":
            return NullTimetable()
        if kind == "once":
            return OnceTimetable()
    except (KeyError, TypeError) as exc:
        raise ScheduleError(f"serialized timetable {data!r} is missing or has a bad field: {exc}") from None
    raise ScheduleError(f"serialized timetable {data!r}: unknown type {kind!r}")
