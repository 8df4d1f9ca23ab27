"""timedelta schedules: fire at start_date, start_date + delta, ... in elapsed time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from scheduler.exceptions import ScheduleError
from scheduler.timetables.base import DagRunInfo, DataInterval, Timetable, as_utc
from scheduler.timetables.describe import describe_delta


class DeltaTimetable(Timetable):
    """A run every ``delta`` of elapsed time (UTC arithmetic: daylight saving does not move it).

    Fire times are start_date + k * delta. A run's logical_date = run_after = its fire
    time, and its data interval is [fire time - delta, fire time]. Without a start_date
    the grid is anchored on the last run; with neither there is nothing to schedule.
    """

    periodic = True
    can_be_scheduled = True

    def __init__(self, delta: timedelta) -> None:
        if not isinstance(delta, timedelta):
            raise ScheduleError(f"{delta!r}: a timedelta schedule must be a datetime.timedelta")
        if delta <= timedelta(0):
            raise ScheduleError(f"{delta!r}: a timedelta schedule must be positive, got {delta}")
        self.delta = delta
        self.summary = str(delta)
        self.description = describe_delta(delta)

    def api_schedule(self) -> dict[str, Any]:
        return {
            "__type": "TimeDelta",
            "days": self.delta.days,
            "seconds": self.delta.seconds,
            "microseconds": self.delta.microseconds,
        }

    def serialize(self) -> dict[str, Any]:
        return {
            "__type": "delta",
            "days": self.delta.days,
            "seconds": self.delta.seconds,
            "microseconds": self.delta.microseconds,
        }

    def fire_times(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """start, start + delta, ... up to end: the grid anchored on ``start``."""
        current, end = as_utc(start, "start"), as_utc(end, "end")
        while current <= end:
            yield current
            current += self.delta

    def _latest_on_grid(self, anchor: datetime, at_or_before: datetime) -> datetime | None:
        if at_or_before < anchor:
            return None
        return anchor + ((at_or_before - anchor) // self.delta) * self.delta

    def _next_run(
        self, *, last: datetime | None, start: datetime | None, end: datetime | None, catchup: bool, now: datetime
    ) -> DagRunInfo | None:
        anchor = last if last is not None else start
        if anchor is None:
            return None
        fire = anchor if last is None else last + self.delta
        if start is not None and fire < start:  # never before start_date
            fire = start
        if not catchup:
            latest = self._latest_on_grid(anchor, now if end is None else min(now, end))
            if latest is not None and latest > fire:
                fire = latest
        if end is not None and fire > end:
            return None
        return DagRunInfo(logical_date=fire, data_interval=DataInterval(fire - self.delta, fire), run_after=fire)

    def infer_manual_data_interval(self, *, run_after: datetime) -> DataInterval:
        run_after = as_utc(run_after, "run_after")
        return DataInterval(run_after - self.delta, run_after)

    def __repr__(self) -> str:
        return f"DeltaTimetable({self.delta!r})"
