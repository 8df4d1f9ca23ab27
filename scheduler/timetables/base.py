"""The timetable protocol: a schedule turned into runs and data intervals.

A timetable is pure. It never reads the clock, the database or a file: the caller
passes ``now`` and what it knows about the last scheduled run, and gets value
objects back. Every datetime in and out is timezone-aware; everything returned is
in UTC.

The scheduler asks ``next_dagrun_info`` what the next scheduled run is. The
answer's ``run_after`` may be in the future: the scheduler creates the run once
``now >= run_after``. ``None`` means "no more scheduled runs".
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def as_utc(value: datetime, what: str = "datetime") -> datetime:
    """``value`` in UTC; ValueError naming ``what`` if it is naive."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value.isoformat()} is naive; timetables need timezone-aware datetimes")
    return value.astimezone(UTC)


def optional_utc(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else as_utc(value, what)


@dataclass(frozen=True)
class DataInterval:
    """The span of data a run covers: ``[start, end]``, aware, normalised to UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start = as_utc(self.start, "data interval start")
        end = as_utc(self.end, "data interval end")
        if end < start:
            raise ValueError(f"data interval ends ({end.isoformat()}) before it starts ({start.isoformat()})")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @classmethod
    def exact(cls, at: datetime) -> DataInterval:
        """A zero-length interval at one instant."""
        return cls(at, at)


@dataclass(frozen=True)
class DagRunInfo:
    """What the scheduler needs to create one scheduled run.

    ``logical_date`` identifies the run (one scheduled run per DAG and logical date);
    ``run_after`` is the earliest instant the run may be created.
    """

    logical_date: datetime
    data_interval: DataInterval
    run_after: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "logical_date", as_utc(self.logical_date, "logical_date"))
        object.__setattr__(self, "run_after", as_utc(self.run_after, "run_after"))

    @classmethod
    def exact(cls, at: datetime) -> DagRunInfo:
        """A run at ``at`` whose data interval is the single instant ``at``."""
        return cls(logical_date=at, data_interval=DataInterval.exact(at), run_after=at)


class Timetable(abc.ABC):
    """A DAG's schedule.

    Attributes every timetable has:

    - ``summary``: the schedule as the user wrote it ("0 6 * * *", "@daily",
      "1 day, 0:00:00", "@once"), or None for manual-only DAGs.
    - ``description``: a sentence for people ("At 06:00, Monday through Friday, Europe/Berlin").
    - ``periodic``: runs repeat on a schedule.
    - ``can_be_scheduled``: the scheduler ever creates runs by itself.
    """

    summary: str | None = None
    description: str = ""
    periodic: bool = False
    can_be_scheduled: bool = True

    @abc.abstractmethod
    def api_schedule(self) -> dict[str, Any] | None:
        """The schedule in Airflow REST API v1 ``schedule_interval`` form, or None."""

    @abc.abstractmethod
    def serialize(self) -> dict[str, Any]:
        """A JSON-compatible dict that ``deserialize_timetable`` turns back into an equal timetable."""

    #: True when a run's logical_date is the start of its data interval (Airflow 2 style)
    _logical_date_is_interval_start: bool = False

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        last_logical_date: datetime | None,
        start_date: datetime | None,
        end_date: datetime | None,
        catchup: bool,
        now: datetime,
    ) -> DagRunInfo | None:
        """The next scheduled run after the last one, or None when there are no more.

        ``last_automated_data_interval`` and ``last_logical_date`` describe the last
        scheduled run (either or both may be given; they must belong to the same
        run). With no last run, the first run is the first fire time at or after
        ``start_date``. With ``catchup=False`` runs that are already overdue are
        skipped up to the latest one due at ``now``. Nothing after ``end_date``.
        """
        last = optional_utc(last_logical_date, "last_logical_date")
        if last is None and last_automated_data_interval is not None:
            interval = last_automated_data_interval
            last = interval.start if self._logical_date_is_interval_start else interval.end
        return self._next_run(
            last=last,
            start=optional_utc(start_date, "start_date"),
            end=optional_utc(end_date, "end_date"),
            catchup=catchup,
            now=as_utc(now, "now"),
        )

    @abc.abstractmethod
    def _next_run(
        self, *, last: datetime | None, start: datetime | None, end: datetime | None, catchup: bool, now: datetime
    ) -> DagRunInfo | None:
        """``next_dagrun_info`` with its inputs in UTC; ``last`` is the last scheduled run's logical date."""

    @abc.abstractmethod
    def infer_manual_data_interval(self, *, run_after: datetime) -> DataInterval:
        """The data interval of a run triggered by hand at ``run_after``."""

    def fire_times(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every instant in ``[start, end]`` at which this schedule fires, in UTC, strictly increasing.

        Timetables without a recurring schedule fire never.
        """
        return iter(())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timetable):
            return NotImplemented
        return type(self) is type(other) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.serialize().items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.summary!r})"
