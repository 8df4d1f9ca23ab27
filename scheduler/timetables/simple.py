"""Timetables without a recurring schedule: manual only (None) and a single run (@once)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.timetables.base import DagRunInfo, DataInterval, Timetable, as_utc


class NullTimetable(Timetable):
    """schedule=None: the scheduler never creates a run; runs come from triggers."""

    summary = None
    description = "Never, external triggers only"
    periodic = False
    can_be_scheduled = False

    def api_schedule(self) -> None:
        return None

    def serialize(self) -> dict[str, Any]:
        return {"__type": "null"}

    def _next_run(
        self, *, last: datetime | None, start: datetime | None, end: datetime | None, catchup: bool, now: datetime
    ) -> DagRunInfo | None:
        return None

    def infer_manual_data_interval(self, *, run_after: datetime) -> DataInterval:
        return DataInterval.exact(as_utc(run_after, "run_after"))


class OnceTimetable(Timetable):
    """schedule="@once": one scheduled run, at start_date, and none after it (catchup or not)."""

    summary = "@once"
    description = "Once"
    periodic = False
    can_be_scheduled = True

    def api_schedule(self) -> dict[str, Any]:
        return {"__type": "CronExpression", "value": "@once"}

    def serialize(self) -> dict[str, Any]:
        return {"__type": "once"}

    def _next_run(
        self, *, last: datetime | None, start: datetime | None, end: datetime | None, catchup: bool, now: datetime
    ) -> DagRunInfo | None:
        if last is not None:
            return None
        if start is None or (end is not None and start > end):
            return None
        return DagRunInfo.exact(start)

    def infer_manual_data_interval(self, *, run_after: datetime) -> DataInterval:
        return DataInterval.exact(as_utc(run_after, "run_after"))
