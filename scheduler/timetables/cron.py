"""Cron schedules: a 5-field parser, the wall-clock walk with our DST policy, and the cron timetables.

The policy (docs: DESIGN.md, "Time: schedules and daylight saving"):

- The schedule fires at every wall-clock time in the DAG's time zone that matches
  the expression.
- A matching wall time that does not exist (spring forward, a gap) fires at the
  first instant after the gap. Times that land on the same instant are one run.
- A matching wall time that exists twice (fall back, an overlap) fires once, at
  its first occurrence, when the minute and hour fields both do not begin with
  ``*``; otherwise it fires at both occurrences (Vixie cron's rule).

How: we enumerate matching *naive* wall-clock datetimes (our own matcher, so the
policy is ours, not a library's), map each one to UTC instants with zoneinfo's
``fold`` (a gap shows as fold=0 having a smaller offset than fold=1, an overlap
as a larger one), and merge the results into one strictly increasing stream.
"""

from __future__ import annotations

import calendar
import heapq
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from scheduler.clock import get_timezone, timezone_name
from scheduler.exceptions import ScheduleError
from scheduler.timetables.base import DagRunInfo, DataInterval, Timetable, as_utc
from scheduler.timetables.describe import describe_cron

#: Presets accepted wherever a cron expression is (case-insensitive). ``@once`` is not a cron
#: expression; ``make_timetable`` handles it.
PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

MONTH_NAMES = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
DOW_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
FIELD_ORDER = "minute hour day-of-month month day-of-week"

# The walk stays inside years where every zone's conversion is defined.
MIN_INSTANT = datetime(2, 1, 1, tzinfo=UTC)
MAX_YEAR = 9998
MAX_INSTANT = datetime(MAX_YEAR, 12, 31, tzinfo=UTC)
_MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_ONE_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


class _FieldError(ValueError):
    pass


@dataclass(frozen=True)
class _FieldKind:
    name: str
    low: int
    high: int  # highest value accepted in the text (7 for day-of-week)
    star_high: int  # highest value `*` and `a/n` cover (6 for day-of-week)
    names: dict[str, int] | None = None


_FIELDS = (
    _FieldKind("minute", 0, 59, 59),
    _FieldKind("hour", 0, 23, 23),
    _FieldKind("day-of-month", 1, 31, 31),
    _FieldKind("month", 1, 12, 12, MONTH_NAMES),
    _FieldKind("day-of-week", 0, 7, 6, DOW_NAMES),
)


def _parse_value(token: str, kind: _FieldKind) -> int:
    upper = token.upper()
    if kind.names and upper in kind.names:
        return kind.names[upper]
    if token.isdigit():
        value = int(token)
        if not kind.low <= value <= kind.high:
            raise _FieldError(f"{value} out of range {kind.low}-{kind.high}")
        return value
    if "#" in token:
        raise _FieldError(f"{token!r}: '#' (nth weekday of the month) is not supported")
    if token == "?":
        raise _FieldError("'?' is not supported; use '*'")
    if upper == "L" or (upper.endswith("L") and upper[:-1].isdigit()):
        raise _FieldError(f"{token!r}: 'L' (last day) is not supported")
    if upper.endswith("W") and upper[:-1].isdigit():
        raise _FieldError(f"{token!r}: 'W' (nearest weekday) is not supported")
    if token == "":
        raise _FieldError("a range or step is missing a number")
    if kind.names:
        examples = "JAN-DEC" if kind.name == "month" else "SUN-SAT"
        raise _FieldError(f"{token!r} is neither a number nor a name ({examples})")
    raise _FieldError(f"{token!r} is not a number")


def _parse_field(text: str, kind: _FieldKind) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _FieldError("empty item in the list (two commas, or one at the start or end)")
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit():
                raise _FieldError(f"step {step_text!r} in {item!r} is not a whole number")
            step = int(step_text)
            if step < 1:
                raise _FieldError(f"step 0 in {item!r} must be at least 1")
        if span == "*":
            low, high = kind.low, kind.star_high
        elif "-" in span:
            first, _, last = span.partition("-")
            low, high = _parse_value(first, kind), _parse_value(last, kind)
            if high < low:
                raise _FieldError(
                    f"range {span!r} runs backwards; write it as two ranges, e.g. "
                    f"'{low}-{kind.high if kind.name != 'day-of-week' else 6},{kind.low}-{high}'"
                )
        else:
            low = _parse_value(span, kind)
            high = kind.star_high if slash else low
            if slash and low > high:  # "7/2" in day-of-week
                high = low
        values.update(range(low, high + 1, step))
    if kind.name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


@dataclass(eq=False)
class CronSpec:
    """A parsed 5-field cron expression: the sets of values each field matches."""

    expression: str  #: as written (stripped), e.g. "@daily" or "0 6 * * 1-5"
    fields: tuple[str, str, str, str, str]  #: the five field texts (a preset expanded)
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: tuple[int, ...]
    days_of_week: frozenset[int]  #: 0 = Sunday ... 6 = Saturday
    _day_cache: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        #: Both day fields other than a bare "*": a day matches either (POSIX, croniter/Airflow;
        #: "*/2" counts as restricted, unlike Vixie cron). Otherwise a day must match both.
        self.day_or = self.fields[2] != "*" and self.fields[4] != "*"
        #: Overlap rule: minute or hour field begins with "*" -> fire at every real instant.
        self.wildcard_time = self.fields[0].startswith("*") or self.fields[1].startswith("*")
        self.day_minutes = tuple(sorted(h * 60 + m for h in self.hours for m in self.minutes))
        self.day_offsets = tuple(timedelta(minutes=x) for x in self.day_minutes)

    def days(self, year: int, month: int) -> tuple[int, ...]:
        """The days of ``month`` that match (month field not checked)."""
        first_weekday, ndays = calendar.monthrange(year, month)  # Monday = 0
        key = (first_weekday, ndays)
        cached = self._day_cache.get(key)
        if cached is None:
            matched = []
            for day in range(1, ndays + 1):
                dom = day in self.days_of_month
                dow = (first_weekday + day) % 7 in self.days_of_week  # cron: Sunday = 0
                if (dom or dow) if self.day_or else (dom and dow):
                    matched.append(day)
            cached = self._day_cache[key] = tuple(matched)
        return cached

    def matches(self, wall: datetime) -> bool:
        """Whether a naive wall-clock datetime matches (seconds ignored)."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and wall.day in self.days(wall.year, wall.month)
        )


def expand_preset(expression: str) -> str:
    return PRESETS.get(expression.strip().lower(), expression.strip())


def parse_cron(expression: str) -> CronSpec:
    """Parse a 5-field cron expression or a preset; ScheduleError naming it and the reason."""
    if not isinstance(expression, str):
        raise ScheduleError(f"{expression!r}: a cron expression must be a string")
    text = expression.strip()
    if not text:
        raise ScheduleError("'': empty cron expression; use schedule=None for a DAG that only runs when triggered")
    if text.startswith("@"):
        key = text.lower()
        if key == "@reboot":
            raise ScheduleError(f"{text!r}: not supported: updraft schedules by the clock, not at machine start")
        if key not in PRESETS:
            known = ", ".join([*PRESETS, "@once"])
            raise ScheduleError(f"{text!r}: unknown preset; use one of {known}")
        parts = PRESETS[key].split()
    else:
        parts = text.split()
    if len(parts) != 5:
        extra = "; a seconds or year field is not supported" if len(parts) in (6, 7) else ""
        raise ScheduleError(f"{text!r}: expected 5 fields ({FIELD_ORDER}), got {len(parts)}{extra}")
    sets = []
    for part, kind in zip(parts, _FIELDS, strict=True):
        try:
            sets.append(_parse_field(part, kind))
        except _FieldError as exc:
            raise ScheduleError(f"{text!r}: {kind.name} field: {exc}") from None
    spec = CronSpec(
        expression=text,
        fields=(parts[0], parts[1], parts[2], parts[3], parts[4]),
        minutes=tuple(sorted(sets[0])),
        hours=tuple(sorted(sets[1])),
        days_of_month=sets[2],
        months=tuple(sorted(sets[3])),
        days_of_week=sets[4],
    )
    if not spec.day_or and not any(d <= _MAX_DAYS[m] for m in spec.months for d in spec.days_of_month):
        raise ScheduleError(f"{text!r}: never fires: no month in the month field has any of the days of the day-of-month field")
    return spec


class CronSchedule:
    """The fire instants of a cron spec in a time zone, per our DST policy."""

    def __init__(self, spec: CronSpec, tz: tzinfo) -> None:
        self.spec = spec
        self.tz = tz

    # -- the wall -> instant mapping ------------------------------------------------

    def _plain_offset(self, wall: datetime) -> timedelta | None:
        """The UTC offset of ``wall`` if it exists exactly once, else None."""
        first = wall.replace(tzinfo=self.tz).utcoffset()
        second = wall.replace(tzinfo=self.tz, fold=1).utcoffset()
        return first if first == second else None

    def _uniform_offset(self, midnight: datetime) -> timedelta | None:
        """The one offset of a whole local day, or None if the day has a transition.

        Checks midnight, noon and the next midnight. tzdata (every zone, all of history
        and the rules beyond) never has two offset changes less than 3 days apart (the
        closest are Africa/Freetown's, 1939, about 4 days), so one change inside the
        day shows as a difference here.
        """
        offset = self._plain_offset(midnight)
        if offset is None:
            return None
        if self._plain_offset(midnight + timedelta(hours=12)) != offset:
            return None
        if self._plain_offset(midnight + _ONE_DAY) != offset:
            return None
        return offset

    def _gap_end(self, wall: datetime, before: timedelta, after: timedelta) -> datetime:
        """The first instant after the gap containing ``wall`` (the transition instant).

        The transition T satisfies T + before <= wall < T + after, and tzdata transitions
        fall on whole seconds: a binary search over (wall - after, wall - before].
        """
        low = wall - after  # naive UTC, still before T
        lo_s, hi_s = 0, int((after - before).total_seconds())
        while hi_s - lo_s > 1:
            mid = (lo_s + hi_s) // 2
            probe = (low + timedelta(seconds=mid)).replace(tzinfo=UTC)
            if probe.astimezone(self.tz).replace(tzinfo=None) > wall:
                hi_s = mid
            else:
                lo_s = mid
        return (low + timedelta(seconds=hi_s)).replace(tzinfo=UTC)

    def _day_instants(self, year: int, month: int, day: int, from_minute: int, gaps: list[Any]) -> Iterator[tuple[datetime, datetime | None]]:
        """(first instant, second instant or None) for each matching time of one local day, by wall time."""
        spec = self.spec
        offsets = spec.day_offsets
        start = bisect_left(spec.day_minutes, from_minute) if from_minute else 0
        midnight = datetime(year, month, day)
        if len(offsets) - start > 2:
            offset = self._uniform_offset(midnight)
            if offset is not None:
                base = (midnight - offset).replace(tzinfo=UTC)
                for k in range(start, len(offsets)):
                    yield base + offsets[k], None
                return
        tz = self.tz
        for k in range(start, len(offsets)):
            wall = midnight + offsets[k]
            first = wall.replace(tzinfo=tz).utcoffset()
            second = wall.replace(tzinfo=tz, fold=1).utcoffset()
            assert first is not None and second is not None
            if first == second:
                yield (wall - first).replace(tzinfo=UTC), None
            elif first > second:  # overlap: the wall time happens twice
                again = (wall - second).replace(tzinfo=UTC) if spec.wildcard_time else None
                yield (wall - first).replace(tzinfo=UTC), again
            else:  # gap: the wall time never happens
                if gaps and gaps[0] <= wall < gaps[1]:
                    yield gaps[2], None
                    continue
                end = self._gap_end(wall, first, second)
                gaps[:] = [end.replace(tzinfo=None) + first, end.replace(tzinfo=None) + second, end]
                yield end, None

    def instants(self, start: datetime, end: datetime | None = None) -> Iterator[datetime]:
        """Every fire instant in ``[start, end]`` (``end`` None: until year 9998), strictly increasing."""
        start = max(as_utc(start, "start"), MIN_INSTANT)
        if start > MAX_INSTANT:
            return
        if end is not None:
            end = min(as_utc(end, "end"), MAX_INSTANT)
            if end < start:
                return
        # The lowest wall time that can map to an instant >= start: the wall clock may read
        # less than at `start` shortly after it (an overlap), or a gap may end right at start.
        probes = (-timedelta(seconds=1), timedelta(0), timedelta(hours=3), timedelta(hours=6), timedelta(hours=12), _ONE_DAY)
        lowest = min(self._offset_at(start + p) for p in probes)
        first_wall = start.replace(tzinfo=None) + lowest
        spec = self.spec
        pending: list[datetime] = []  # second occurrences, emitted once the walk passes them
        gaps: list[Any] = []
        last: datetime | None = None
        for year in range(first_wall.year, MAX_YEAR + 1):
            for month in spec.months:
                if year == first_wall.year and month < first_wall.month:
                    continue
                for day in spec.days(year, month):
                    from_minute = 0
                    if year == first_wall.year and month == first_wall.month:
                        if day < first_wall.day:
                            continue
                        if day == first_wall.day:
                            from_minute = first_wall.hour * 60 + first_wall.minute
                    for instant, again in self._day_instants(year, month, day, from_minute, gaps):
                        while pending and pending[0] <= instant:
                            earlier = heapq.heappop(pending)
                            if end is not None and earlier > end:
                                return
                            if earlier >= start and (last is None or earlier > last):
                                last = earlier
                                yield earlier
                        if end is not None and instant > end:
                            return
                        if instant >= start and (last is None or instant > last):
                            last = instant
                            yield instant
                        if again is not None:
                            heapq.heappush(pending, again)
        while pending:
            earlier = heapq.heappop(pending)
            if end is not None and earlier > end:
                return
            if earlier >= start and (last is None or earlier > last):
                last = earlier
                yield earlier

    def _offset_at(self, instant: datetime) -> timedelta:
        offset = instant.astimezone(self.tz).utcoffset()
        assert offset is not None
        return offset

    # -- neighbours of an instant ---------------------------------------------------

    def next_at_or_after(self, instant: datetime) -> datetime | None:
        return next(self.instants(instant), None)

    def next_after(self, instant: datetime) -> datetime | None:
        return next(self.instants(as_utc(instant) + _TINY), None)

    def prev_at_or_before(self, instant: datetime) -> datetime | None:
        """The latest fire instant <= ``instant``: look back in growing windows."""
        instant = min(as_utc(instant), MAX_INSTANT)
        for span in _LOOKBACK:
            low = instant - span if instant - MIN_INSTANT > span else MIN_INSTANT
            found = None
            for found in self.instants(low, instant):  # noqa: B007 - keep the last one
                pass
            if found is not None:
                return found
            if low == MIN_INSTANT:
                return None
        return None

    def prev_before(self, instant: datetime) -> datetime | None:
        return self.prev_at_or_before(as_utc(instant) - _TINY)


_LOOKBACK = tuple(timedelta(hours=h) for h in (1, 8, 50, 400, 3000, 20000, 150000, 1200000, 4000000))


def _latest_of(*candidates: datetime | None) -> datetime | None:
    present = [c for c in candidates if c is not None]
    return max(present) if present else None


def _resolve_timezone(timezone: str | tzinfo, expression: str) -> tuple[tzinfo, str]:
    try:
        tz = get_timezone(timezone) if isinstance(timezone, str) else timezone
        return tz, timezone_name(tz)
    except ValueError as exc:
        raise ScheduleError(f"{expression!r}: {exc}") from None


class _CronTimetable(Timetable):
    periodic = True
    can_be_scheduled = True
    _type: str = ""

    def __init__(self, expression: str, timezone: str | tzinfo = "UTC") -> None:
        self._spec = parse_cron(expression)
        self._tz, self._tz_name = _resolve_timezone(timezone, self._spec.expression)
        self._schedule = CronSchedule(self._spec, self._tz)
        self.summary = self._spec.expression
        self.description = describe_cron(self._spec, self._tz_name)

    @property
    def expression(self) -> str:
        return self._spec.expression

    @property
    def timezone(self) -> tzinfo:
        return self._tz

    def api_schedule(self) -> dict[str, Any]:
        return {"__type": "CronExpression", "value": self._spec.expression}

    def serialize(self) -> dict[str, Any]:
        return {"__type": self._type, "expression": self._spec.expression, "timezone": self._tz_name}

    def fire_times(self, start: datetime, end: datetime) -> Iterator[datetime]:
        return self._schedule.instants(as_utc(start, "start"), as_utc(end, "end"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._spec.expression!r}, timezone={self._tz_name!r})"


class CronTriggerTimetable(_CronTimetable):
    """The default for cron strings and presets: a run at each fire time.

    logical_date = run_after = the fire time; the data interval runs from the previous
    fire time to this one (for the first run too, even if that is before start_date).
    """

    _type = "cron"

    def _next_run(
        self, *, last: datetime | None, start: datetime | None, end: datetime | None, catchup: bool, now: datetime
    ) -> DagRunInfo | None:
        schedule = self._schedule
        fire = _latest_of(
            schedule.next_after(last) if last is not None else None,
            schedule.next_at_or_after(start) if start is not None else None,  # never before start_date
        )
        anchored = last is not None or start is not None
        if anchored and fire is None:  # the calendar ran out
            return None
        if not catchup or not anchored:
            latest = schedule.prev_at_or_before(now if end is None else min(now, end))
            if latest is not None and (fire is None or latest > fire):
                fire = latest
            if fire is None:
                fire = schedule.next_at_or_after(now)
        if fire is None or (end is not None and fire > end):
            return None
        previous = schedule.prev_before(fire) or fire
        return DagRunInfo(logical_date=fire, data_interval=DataInterval(previous, fire), run_after=fire)

    def infer_manual_data_interval(self, *, run_after: datetime) -> DataInterval:
        run_after = as_utc(run_after, "run_after")
        previous = self._schedule.prev_before(run_after)
        return DataInterval(previous or run_after, run_after)


class CronDataIntervalTimetable(_CronTimetable):
    """Airflow 2's cron behaviour, by explicit opt-in: a run per interval, created when it ends.

    Consecutive fire times a < b make the interval [a, b]; its run has logical_date = a
    and run_after = b.
    """

    _type = "cron_data_interval"
    _logical_date_is_interval_start = True

    def _next_run(
        self, *, last: datetime | None, start: datetime | None, end: datetime | None, catchup: bool, now: datetime
    ) -> DagRunInfo | None:
        schedule = self._schedule
        begin = _latest_of(
            schedule.next_after(last) if last is not None else None,
            schedule.next_at_or_after(start) if start is not None else None,  # never before start_date
        )
        anchored = last is not None or start is not None
        if anchored and begin is None:  # the calendar ran out
            return None
        if not catchup or not anchored:
            ended = schedule.prev_at_or_before(now)  # the end of the latest complete interval
            latest = schedule.prev_before(ended) if ended is not None else None
            if latest is not None and end is not None and latest > end:
                latest = schedule.prev_at_or_before(end)
            if latest is not None and (begin is None or latest > begin):
                begin = latest
            if begin is None:
                begin = schedule.next_at_or_after(now)
        if begin is None or (end is not None and begin > end):
            return None
        finish = schedule.next_after(begin)
        if finish is None:
            return None
        return DagRunInfo(logical_date=begin, data_interval=DataInterval(begin, finish), run_after=finish)

    def infer_manual_data_interval(self, *, run_after: datetime) -> DataInterval:
        run_after = as_utc(run_after, "run_after")
        ended = self._schedule.prev_at_or_before(run_after)
        if ended is None:
            return DataInterval.exact(run_after)
        began = self._schedule.prev_before(ended)
        return DataInterval(began or ended, ended)
