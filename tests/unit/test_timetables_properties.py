"""Property tests: random 5-field expressions x random zones x windows near real transitions.

The oracle below is independent of the code under test: it matches wall times with the
sets croniter expands, finds the real instants of a wall time by converting candidate
instants UTC -> local (never local -> UTC with fold), and applies the policy as written.
"""

from __future__ import annotations

import functools
import itertools
import os
import zoneinfo
from datetime import UTC, datetime, timedelta

from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler.timetables import CronTriggerTimetable, make_timetable

# UPDRAFT_HYPOTHESIS_EXAMPLES=5000 for a long soak; the default keeps the suite fast.
EXAMPLES = int(os.environ.get("UPDRAFT_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ZONES = sorted(zoneinfo.available_timezones() - {"Factory"})
LISTED = ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe",
          "America/Santiago", "America/Havana", "Asia/Beirut", "Africa/Casablanca", "Europe/Dublin", "Pacific/Apia"]
MINUTE = timedelta(minutes=1)


# --- expressions ---------------------------------------------------------------------

def _field(low: int, high: int, star_high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    step = st.integers(1, max(2, (star_high - low) // 2 + 1))
    # a < b: croniter reads a degenerate range "a-a" as "*" (a croniter bug; we read it as a).
    pair = st.tuples(value, value).filter(lambda p: p[0] != p[1]).map(sorted)
    item = st.one_of(
        value.map(str),
        pair.map(lambda p: f"{p[0]}-{p[1]}"),
        st.tuples(pair, step).map(lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"),
        st.tuples(st.integers(low, star_high), step).map(lambda t: f"{t[0]}/{t[1]}"),
    )
    return st.one_of(
        st.just("*"),
        step.map(lambda n: f"*/{n}"),
        st.lists(item, min_size=1, max_size=3).map(",".join),
    )


def _valid(expression: str) -> bool:
    try:
        make_timetable(expression, "UTC")
    except ValueError:
        return False
    return True


EXPRESSIONS = st.tuples(
    _field(0, 59, 59), _field(0, 23, 23), _field(1, 31, 31), _field(1, 12, 12), _field(0, 7, 6)
).map(" ".join).filter(_valid)


# --- windows near transitions ----------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def transitions(zone: str, year: int) -> tuple[datetime, ...]:
    """Instants where the zone's UTC offset changes in ``year`` (offset changes are >= 7 days apart)."""
    tz = zoneinfo.ZoneInfo(zone)
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    before = day.astimezone(tz).utcoffset()
    while day.year == year:
        following = day + timedelta(days=1)
        after = following.astimezone(tz).utcoffset()
        if after != before:
            low, high = day, following
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                if mid.astimezone(tz).utcoffset() == before:
                    low = mid
                else:
                    high = mid
            found.append(high.replace(microsecond=0))
            before = after
        day = following
    return tuple(found)


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, datetime, datetime]:
    zone = draw(st.one_of(st.sampled_from(LISTED), st.sampled_from(ZONES)))
    year = draw(st.integers(1890, 2040))
    near = transitions(zone, year)
    if near and draw(st.integers(0, 3)) > 0:  # mostly right next to a transition
        centre = draw(st.sampled_from(near))
    else:
        centre = datetime(year, 1, 1, tzinfo=UTC) + timedelta(minutes=draw(st.integers(0, 365 * 24 * 60)))
    start = centre + timedelta(seconds=draw(st.sampled_from([0, 0, 0, 30, 59])) + 60 * draw(st.integers(-30 * 60, 30 * 60)))
    length = timedelta(minutes=draw(st.integers(0, 40 * 60)))
    return zone, start, start + length


# --- the oracle ----------------------------------------------------------------------------

def _sets(expression: str) -> tuple[list[set[int]], bool]:
    expanded = croniter.expand(expression)[0]
    full = [range(0, 60), range(0, 24), range(1, 32), range(1, 13), range(0, 7)]
    sets = [set(full[i]) if "*" in values else {int(v) % 7 if i == 4 else int(v) for v in values}
            for i, values in enumerate(expanded)]
    fields = expression.split()
    return sets, fields[2] != "*" and fields[4] != "*"


def _wall(instant: datetime, tz: zoneinfo.ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def oracle(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    tz = zoneinfo.ZoneInfo(zone)
    (minutes, hours, doms, months, dows), day_or = _sets(expression)
    fields = expression.split()
    both = not fields[0].startswith("*") and not fields[1].startswith("*")
    span_hours = int((end - start).total_seconds() // 3600)
    offsets: set[timedelta] = set()
    for h in range(-30, span_hours + 31):
        offset = (start + timedelta(hours=h)).astimezone(tz).utcoffset()
        assert offset is not None
        offsets.add(offset)
    lowest, highest = min(offsets), max(offsets)
    wall = (start.replace(tzinfo=None) + lowest).replace(second=0, microsecond=0)
    last_wall = end.replace(tzinfo=None) + highest
    expected: set[datetime] = set()
    while wall <= last_wall:
        day_ok = (wall.day in doms or (wall.weekday() + 1) % 7 in dows) if day_or else (
            wall.day in doms and (wall.weekday() + 1) % 7 in dows)
        if wall.minute in minutes and wall.hour in hours and wall.month in months and day_ok:
            real = sorted({(wall - o).replace(tzinfo=UTC) for o in offsets
                           if _wall((wall - o).replace(tzinfo=UTC), tz) == wall})
            if real:
                chosen = real[:1] if both else real
            else:  # a gap: the first instant whose wall clock reads later than `wall`
                low, high = (wall - highest).replace(tzinfo=UTC), (wall - lowest).replace(tzinfo=UTC)
                while high - low > timedelta(seconds=1):
                    mid = low + timedelta(seconds=(high - low).total_seconds() // 2)
                    if _wall(mid, tz) > wall:
                        high = mid
                    else:
                        low = mid
                chosen = [high]
            expected.update(x for x in chosen if start <= x <= end)
        wall += MINUTE
    return sorted(expected)


# --- the properties ----------------------------------------------------------------------------

@SETTINGS
@given(EXPRESSIONS, windows())
def test_fire_times_equal_the_oracle(expression: str, window: tuple[str, datetime, datetime]) -> None:
    zone, start, end = window
    got = list(make_timetable(expression, zone).fire_times(start, end))
    assert all(b > a for a, b in itertools.pairwise(got)), "strictly increasing, no instant twice"
    assert all(x.tzinfo is UTC for x in got)
    assert got == oracle(expression, zone, start, end)


@SETTINGS
@given(st.sampled_from(["* * * * *", "*/15 * * * *", "0 * * * *", "30 2 * * *", "0 0 * * *", "*/10 1-3 * * *",
                        "0,30 0-3 * * *", "45 1 * * *", "0 23 * * *", "*/5 0 * * *"]), windows())
def test_common_expressions_near_transitions_equal_the_oracle(expression: str, window: tuple[str, datetime, datetime]) -> None:
    zone, start, end = window
    assert list(make_timetable(expression, zone).fire_times(start, end)) == oracle(expression, zone, start, end)


@SETTINGS
@given(EXPRESSIONS, st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 1, 1)))
def test_in_utc_the_matcher_agrees_with_croniter(expression: str, start: datetime) -> None:
    # croniter reads a day field listing every value ("*/1", "0-6") as "*" when the other day
    # field contains "*", which turns OR into AND; we only treat a bare "*" as unrestricted.
    expanded, fields = croniter.expand(expression)[0], expression.split()
    assume(not any(expanded[i] == ["*"] and fields[i] != "*" for i in (2, 4)))
    start = start.replace(second=0, microsecond=0)
    ours = make_timetable(expression, "UTC")._schedule.instants(start.replace(tzinfo=UTC) + MINUTE)  # type: ignore[attr-defined]
    theirs = croniter(expression, start)
    for got in itertools.islice(ours, 5):
        assert got.replace(tzinfo=None) == theirs.get_next(datetime)


@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None, database=None)
@given(st.sampled_from(["*/15 * * * *", "30 2 * * *", "0 * * * *", "0 0 * * *", "30 1 * * 0", "*/20 0-3 * * *"]),
       windows())
def test_catchup_walks_exactly_the_fire_times_and_intervals_chain(expression: str, window: tuple[str, datetime, datetime]) -> None:
    zone, start, end = window
    timetable = CronTriggerTimetable(expression, zone)
    expected = list(timetable.fire_times(start, end))
    seen: list[datetime] = []
    info = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None, start_date=start,
                                      end_date=end, catchup=True, now=end + timedelta(days=400))
    while info is not None:
        assert info.run_after == info.logical_date == info.data_interval.end
        if seen:
            assert info.logical_date > seen[-1]
            assert info.data_interval.start == seen[-1]
        seen.append(info.logical_date)
        info = timetable.next_dagrun_info(last_automated_data_interval=info.data_interval,
                                          last_logical_date=info.logical_date, start_date=start,
                                          end_date=end, catchup=True, now=end + timedelta(days=400))
    assert seen == expected


@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None, database=None)
@given(st.sampled_from(["*/15 * * * *", "30 2 * * *", "0 * * * *", "0 0 * * *", "45 1 * * *"]), windows())
def test_without_catchup_the_run_is_the_latest_due_fire_time(expression: str, window: tuple[str, datetime, datetime]) -> None:
    zone, start, now = window
    timetable = CronTriggerTimetable(expression, zone)
    anchor = start - timedelta(days=3)
    info = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None, start_date=anchor,
                                      end_date=None, catchup=False, now=now)
    assert info is not None
    due = list(timetable.fire_times(anchor, now))
    assert info.logical_date == due[-1]
    assert list(timetable.fire_times(info.logical_date, now)) == [info.logical_date]
