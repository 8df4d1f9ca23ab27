"""TEMPORARY stub (the timetables module is being written); replaced by the real package API."""
from __future__ import annotations

from datetime import timedelta
from typing import Any


class _Stub:
    def __init__(self, schedule: Any, tz: Any) -> None:
        self.schedule = schedule
        self.summary = None if schedule is None else str(schedule)
        self.description = "stub"
        self.can_be_scheduled = schedule is not None
        self.periodic = schedule is not None

    def serialize(self) -> dict[str, Any]:
        return {"stub": self.summary}

    def api_schedule(self) -> Any:
        return None if self.summary is None else {"__type": "CronExpression", "value": self.summary}

    def infer_manual_data_interval(self, *, run_after: Any) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(start=run_after - timedelta(days=1), end=run_after)


def make_timetable(schedule: Any, timezone: Any) -> Any:
    return schedule if hasattr(schedule, "serialize") else _Stub(schedule, timezone)


def deserialize_timetable(data: dict[str, Any]) -> Any:
    return _Stub(data.get("stub"), None)
