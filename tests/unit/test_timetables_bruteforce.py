"""Cron timetables against a brute force that knows nothing of scheduler/timetables.

Two oracles, both written from DESIGN.md ("Time: schedules and daylight saving") alone:

- ``minute_walk``: walks every real instant, one UTC minute after another, at which the
  zone's wall clock reads a whole minute (``HH:MM:00``), converts it UTC -> local with
  zoneinfo (the only direction that is never ambiguous), and matches the five fields
  with the tiny matcher below. Offset changes are found on the way (an offset that
  differs between two consecutive minutes, bisected to the second) and give the gaps.
  The DST policy is then applied as written: (a) real matches fire; a wall time seen
  a second time fires again only when the minute or hour field begins with ``*``;
  (b) a matching wall time inside a gap fires at the transition instant (the first
  instant after the gap); (c) equal instants are one run (a set).
- ``day_walk``: for windows of several years and sparse expressions. It finds the
  zone's offset changes by scanning (every 6 hours, bisected to the second), then
  walks local days, and for a matching day only the hours x minutes of the fields;
  each wall time's real instants are worked out from that transition table.

The two oracles are checked against each other, then the timetables against them:
``fire_times`` over whole windows and ``next_dagrun_info`` chains (catchup on and off).

Scale with ``UPDRAFT_HYPOTHESIS_EXAMPLES=N`` (the main property runs N examples, the
others in proportion); the default run takes about ten seconds.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import os
import random
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from scheduler.exceptions import ScheduleError
from scheduler.timetables import CronDataIntervalTimetable, CronTriggerTimetable, make_timetable

# --- how many examples ------------------------------------------------------------------------

_BASE = 200  # the main property's default example count
_WANTED = int(os.environ.get("UPDRAFT_HYPOTHESIS_EXAMPLES", "0") or 0)


def scaled(default: int) -> settings:
    """Hypothesis settings: ``default`` examples, or in proportion to UPDRAFT_HYPOTHESIS_EXAMPLES."""
    count = default if _WANTED <= 0 else max(5, round(default * _WANTED / _BASE))
    return settings(max_examples=count, deadline=None, database=None, derandomize=_WANTED <= 0,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --- a tiny cron matcher (sets of allowed values per field) -------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)
_MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
#: (lowest value, highest value ``*`` covers, names) per field, in field order.
_FIELDS = ((0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTH_NAMES), (0, 6, _DAY_NAMES))
_MONTH_LENGTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _number(token: str, low: int, names: list[str] | None) -> int:
    if names and token.upper() in names:
        return names.index(token.upper()) + low
    return int(token)


def _allowed(text: str, low: int, star_high: int, names: list[str] | None) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = low, star_high
        elif "-" in span:
            a, b = span.split("-")
            first, last = _number(a, low, names), _number(b, low, names)
        else:
            first = _number(span, low, names)
            last = max(first, star_high) if step_text else first  # "a/n": a, a+n, ... up to the top
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(eq=False)
class Cron:
    """An expression as the DESIGN reads it: sets per field, the day rule and the overlap rule."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]  # Sunday = 0 (7 is read as 0)
    either_day: bool  # both day fields are something other than a bare "*": a day matches either
    every_instant: bool  # the minute or the hour field begins with "*": both passes of an overlap fire
    _days: dict[int, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = text.split()
        sets = [_allowed(f, *spec) for f, spec in zip(fields, _FIELDS, strict=True)]
        dows = frozenset(d % 7 for d in sets[4])
        return cls(text, sets[0], sets[1], sets[2], sets[3], dows,
                   either_day=fields[2] != "*" and fields[4] != "*",
                   every_instant=fields[0].startswith("*") or fields[1].startswith("*"))

    def can_ever_fire(self) -> bool:
        if self.either_day:
            return True
        return any(d <= _MONTH_LENGTH[m - 1] for m in self.months for d in self.doms)

    def day_matches(self, day_number: int) -> bool:
        """Whether the local date ``day_number`` days after 1970-01-01 matches (month and day fields)."""
        known = self._days.get(day_number)
        if known is None:
            day = _EPOCH_DATE + timedelta(days=day_number)
            dom = day.day in self.doms
            dow = (day_number + 4) % 7 in self.dows  # 1970-01-01 was a Thursday (4)
            known = day.month in self.months and ((dom or dow) if self.either_day else (dom and dow))
            self._days[day_number] = known
        return known

    def wall_matches(self, wall: int) -> bool:
        """``wall``: local wall-clock seconds since 1970-01-01T00:00 (whole minutes only)."""
        day_number, seconds = divmod(wall, 86400)
        return (seconds // 60) % 60 in self.minutes and seconds // 3600 in self.hours and self.day_matches(day_number)


# --- time as whole seconds ---------------------------------------------------------------------

def seconds_of(instant: datetime) -> float:
    return (instant - _EPOCH).total_seconds()


def instant_of(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


class Zone:
    """UTC offsets of a zone in whole seconds, UTC -> local only."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tz = zoneinfo.ZoneInfo(name)

    def offset(self, seconds: int) -> int:
        offset = instant_of(seconds).astimezone(self.tz).utcoffset()
        assert offset is not None
        return int(offset.total_seconds())

    def change_in(self, low: int, high: int) -> int:
        """The transition instant in (low, high]: offset(low) != offset(high), one change between."""
        before = self.offset(low)
        while high - low > 1:
            mid = (low + high) // 2
            if self.offset(mid) == before:
                low = mid
            else:
                high = mid
        return high


def Z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _expand(expression: str) -> str:
    presets = {"@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *", "@weekly": "0 0 * * 0",
               "@monthly": "0 0 1 * *", "@quarterly": "0 0 1 */3 *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
    return presets.get(expression, expression)


# --- oracle 1: every real instant, minute after minute -------------------------------------------

def minute_walk(cron: Cron, zone: Zone, start: datetime, end: datetime) -> list[datetime]:
    lo, hi = math.ceil(seconds_of(start)), math.floor(seconds_of(end))
    # Walk from far enough back that the first pass of any overlap whose second pass is in the
    # window has been seen: an overlap is at most (highest - lowest offset) long.
    samples = [zone.offset(s) for s in range(lo - 30 * 3600, max(hi, lo) + 3601, 3600)]
    walk = lo - (max(samples) - min(samples)) - 3600
    walk -= walk % 60
    fires: set[int] = set()
    seen: set[int] = set()

    def real(t: int, wall: int) -> None:
        if cron.wall_matches(wall):
            if cron.every_instant or wall not in seen:
                fires.add(t)
            seen.add(wall)

    here = zone.offset(walk)
    while walk <= hi:
        there = zone.offset(walk + 60)
        pieces = [(walk, walk + 60, here)]
        if there != here:
            change = zone.change_in(walk, walk + 60)
            pieces = [(walk, change, here), (change, walk + 60, there)]
            if there > here:  # a gap: walls [change + here, change + there) never show
                wall = change + here + (-(change + here)) % 60
                while wall < change + there:
                    if cron.wall_matches(wall):
                        fires.add(change)
                        break
                    wall += 60
        for a, b, offset in pieces:
            t = a + (-(a + offset)) % 60  # the instant in [a, b) whose wall clock reads :00 seconds
            if t < b:
                real(t, t + offset)
        walk, here = walk + 60, there
    return [instant_of(t) for t in sorted(fires) if lo <= t <= hi]


# --- oracle 2: a transition table and a walk over local days -------------------------------------

_SCAN = 6 * 3600  # the closest offset changes in tzdata are ~4 days apart (Africa/Freetown, 1939)
_FAR = 17 * 3600  # no zone has ever been more than 17 hours from UTC


@functools.lru_cache(maxsize=512)
def transitions(name: str, low: int, high: int) -> tuple[tuple[int, int, int], ...]:
    """(instant, offset before, offset after) for each offset change in (low, high], by scanning."""
    zone = Zone(name)
    found = []
    t, before = low, zone.offset(low)
    while t < high:
        following = min(t + _SCAN, high)
        after = zone.offset(following)
        if after != before:
            found.append((zone.change_in(t, following), before, after))
        t, before = following, after
    return tuple(found)


def day_walk(cron: Cron, zone: Zone, start: datetime, end: datetime) -> list[datetime]:
    lo, hi = math.ceil(seconds_of(start)), math.floor(seconds_of(end))
    table = transitions(zone.name, lo - 3 * 86400, hi + 3 * 86400)
    changes = [c[0] for c in table]
    offsets = [zone.offset(lo - 3 * 86400)] + [c[2] for c in table]  # offsets[k]: from changes[k-1] to changes[k]
    assert all(abs(o) < _FAR for o in offsets)
    bounds = [-(2**62), *changes, 2**62]
    fires: set[int] = set()
    day_times = sorted(h * 3600 + m * 60 for h in cron.hours for m in cron.minutes)
    first_day, last_day = (lo - _FAR) // 86400 - 1, (hi + _FAR) // 86400 + 1
    for day_number in range(first_day, last_day + 1):
        if not cron.day_matches(day_number):
            continue
        for time_of_day in day_times:
            wall = day_number * 86400 + time_of_day
            near = range(bisect.bisect_right(changes, wall - _FAR), bisect.bisect_right(changes, wall + _FAR) + 1)
            real = [wall - offsets[k] for k in near if bounds[k] <= wall - offsets[k] < bounds[k + 1]]
            if real:
                fires.update(real if cron.every_instant else real[:1])
            else:  # in a gap: the transition whose skipped walls contain this one
                gap = [changes[k] for k in near if k < len(changes)
                       and changes[k] + table[k][1] <= wall < changes[k] + table[k][2]]
                assert len(gap) == 1, (zone.name, instant_of(wall))
                fires.add(gap[0])
    return [instant_of(t) for t in sorted(fires) if lo <= t <= hi]


# --- expressions, zones and windows -----------------------------------------------------------------
#
# Drawn from a hypothesis-seeded ``random.Random``: hypothesis' own integers lean hard towards
# small values and first choices, which here meant windows without any offset change. The
# seed is reproducible (and printed on failure through ``note``).

_STEPS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 45, 59, 60, 90)


def _show(rng: random.Random, value: int, index: int) -> str:
    low, _, names = _FIELDS[index]
    if names and value - low < len(names) and rng.random() < 0.3:
        name = names[value - low]
        return rng.choice([name, name.lower(), name.title()])
    return str(value)


def _item(rng: random.Random, index: int) -> str:
    low, star_high, _ = _FIELDS[index]
    top = 7 if index == 4 else star_high  # day-of-week accepts 7 (Sunday)
    step = rng.choice([n for n in _STEPS if n <= star_high - low + 2])
    a, b = sorted((rng.randint(low, top), rng.randint(low, top)))
    kind = rng.choice(["value", "value", "range", "range/step", "start/step", "*/step"])
    if kind == "value":
        return _show(rng, a, index)
    if kind == "range":
        return f"{_show(rng, a, index)}-{_show(rng, b, index)}"
    if kind == "range/step":
        return f"{a}-{b}/{step}"
    if kind == "start/step":
        return f"{a}/{step}"
    return f"*/{step}"


def _random_field(rng: random.Random, index: int, star: float) -> str:
    if rng.random() < star:
        return "*"
    items = [_item(rng, index) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    if rng.random() < 0.05:  # a bare "*" inside a list: "*,5" (restricted for the day rule)
        items.insert(rng.randint(0, len(items)), "*")
    return ",".join(items)


def _until_usable(make):  # type: ignore[no-untyped-def]
    def draw(rng: random.Random) -> str:
        while True:
            text = make(rng)
            if Cron.parse(_expand(text)).can_ever_fire():
                return text
    return draw


@_until_usable
def any_expression(rng: random.Random) -> str:
    """Anything the grammar allows; the day and month fields are mostly '*' so windows of days see fires."""
    return " ".join(_random_field(rng, i, star) for i, star in enumerate((0.25, 0.35, 0.7, 0.75, 0.7)))


@_until_usable
def sparse_expression(rng: random.Random) -> str:
    """A few fire times a day at most, so that windows of years stay cheap."""
    if rng.random() < 0.3:
        return rng.choice(["@daily", "@monthly", "@yearly", "@weekly", "@quarterly", "@midnight", "0 0 29 2 *",
                           "30 2 * * 0", "45 1 * * *", "0 2 1 * *", "30 1 31 * *", "0 3 * * 1-5", "15 0 29 2 1",
                           "0 */6 * * *", "30 23 28-31 * *", "0 0 * * *", "0 1 * * *", "30 0 * * *"])
    minute = ",".join(str(m) for m in sorted(rng.sample(range(60), rng.choice([1, 1, 2]))))
    hour = rng.choice([str(rng.randint(0, 23)), str(rng.randint(0, 3)), "*/6", "*/8", "*/12", "0-23/7", "1,2",
                       "0,1,2,3", "22-23", f"{rng.randint(0, 12)}/{rng.choice([5, 6, 9, 12])}"])
    return " ".join([minute, hour, *(_random_field(rng, i, star) for i, star in ((2, 0.5), (3, 0.6), (4, 0.6)))])


_COMMON = [
    "* * * * *", "*/15 * * * *", "*/7 * * * *", "0 * * * *", "30 * * * *", "45 * * * *", "0 */2 * * *",
    "30 2 * * *", "0 2 * * *", "30 1 * * *", "0 0 * * *", "0 3 * * *", "0 1 * * *", "30 23 * * *", "@hourly",
    "0,15,30,45 * * * *", "0-59/15 * * * *", "*/10 0-3 * * *", "0,30 0-3 * * *", "59 * * * *", "@daily",
    "0 7-8 * * *", "0 7,9 * * *", "20 */4 * * *", "1 2 * * *", "0 8 * * 1-5", "*/5 0 * * *", "0 0 * * 0",
    "0,15,30,45 6-22 * * *", "15 2,3 * * *", "0 0 1 * *", "0 12 * * *", "*/30 * * * *", "15,45 * * * *",
]


def common_expression(rng: random.Random) -> str:
    """What people write."""
    return rng.choice(_COMMON)


ALL_ZONES = sorted(zoneinfo.available_timezones())
#: Zones with unusual transitions: half-hour or 45-minute offsets or shifts, midnight transitions,
#: negative DST, date-line jumps, two-hour DST, LMT offsets in odd seconds, Ramadan suspensions.
TRICKY_ZONES = [
    "America/New_York", "Europe/Brussels", "Australia/Lord_Howe", "America/Havana", "America/Santiago",
    "Pacific/Chatham", "Europe/Dublin", "Africa/Casablanca", "Pacific/Apia", "Asia/Kathmandu", "Asia/Kolkata",
    "America/St_Johns", "Antarctica/Troll", "Asia/Gaza", "Asia/Tehran", "Pacific/Kwajalein", "America/Sitka",
    "Africa/Monrovia", "Europe/Amsterdam", "America/Caracas", "Asia/Pyongyang", "Pacific/Norfolk",
    "America/Nuuk", "America/Scoresbysund", "Europe/Moscow", "America/Asuncion", "Asia/Beirut",
    "Australia/Adelaide", "America/Los_Angeles", "Europe/Berlin", "Pacific/Kiritimati", "Africa/Freetown",
    "Asia/Amman", "Europe/Chisinau", "America/Mexico_City", "America/Metlakatla", "America/Juneau",
]


@functools.lru_cache(maxsize=8192)
def changes_in_year(name: str, year: int) -> tuple[int, ...]:
    low = round(seconds_of(datetime(year, 1, 1, tzinfo=UTC)))
    high = round(seconds_of(datetime(year + 1, 1, 1, tzinfo=UTC)))
    return tuple(c[0] for c in transitions(name, low, high))


def _zone_and_year(rng: random.Random) -> tuple[str, int]:
    name = rng.choice(TRICKY_ZONES if rng.random() < 0.5 else ALL_ZONES)
    year = rng.randint(1960, 2040) if rng.random() < 0.7 else rng.randint(1850, 2100)
    return name, year


def _ragged(rng: random.Random, instant: datetime) -> datetime:
    """On a whole minute half of the time, else on an odd second or microsecond."""
    roll = rng.random()
    if roll < 0.5:
        return instant.replace(second=0, microsecond=0)
    if roll < 0.75:
        return instant.replace(microsecond=0)
    return instant


#: The most violent offset changes in tzdata (found once by scanning every zone): whole days
#: skipped or repeated at the date line, jumps from "-00" in Antarctica, LMT offsets in odd
#: seconds, half-hour national shifts.
EXTREME = [
    ("America/Sitka", 1867), ("America/Juneau", 1867), ("America/Adak", 1867), ("Pacific/Apia", 1892),
    ("Pacific/Apia", 2011), ("Pacific/Fakaofo", 2011), ("Pacific/Kwajalein", 1969), ("Pacific/Kwajalein", 1993),
    ("Pacific/Kiritimati", 1994), ("Pacific/Kanton", 1994), ("Pacific/Rarotonga", 1899), ("Asia/Manila", 1844),
    ("Pacific/Guam", 1844), ("Antarctica/Macquarie", 1919), ("Antarctica/DumontDUrville", 1952),
    ("Antarctica/Vostok", 1994), ("Antarctica/Casey", 2010), ("Antarctica/Casey", 2020), ("Asia/Ust-Nera", 1981),
    ("America/Danmarkshavn", 1996), ("Antarctica/Troll", 2024), ("Africa/Monrovia", 1972), ("Africa/Accra", 1915),
    ("Africa/Algiers", 1891), ("Africa/Abidjan", 1912), ("America/Caracas", 2007), ("America/Caracas", 2016),
    ("Asia/Pyongyang", 2015), ("Asia/Pyongyang", 2018), ("Europe/Amsterdam", 1937), ("America/Inuvik", 1953),
    ("Africa/Freetown", 1939), ("Asia/Kolkata", 1941), ("Asia/Kathmandu", 1985), ("Europe/Dublin", 1916),
]


def _extreme_zone_and_year(rng: random.Random) -> tuple[str, int]:
    return rng.choice(EXTREME)


def window(rng: random.Random, max_hours: int = 72, places=_zone_and_year) -> tuple[str, datetime, datetime]:  # type: ignore[no-untyped-def]
    """(zone, start, end): nine times in ten a window that holds a real offset change of the zone."""
    for _ in range(6):
        name, year = places(rng)
        near = changes_in_year(name, year)
        if near:
            break
    hours = rng.choice([rng.uniform(0, 3), rng.uniform(3, 30), rng.uniform(30, max_hours)])
    length = timedelta(seconds=hours * 3600)
    if near and rng.random() < 0.9:
        change = instant_of(rng.choice(near))
        roll = rng.random()
        if roll < 0.15:  # starting right at the change (the end of a gap, the start of a second pass)
            start = change + rng.choice([timedelta(0), timedelta(0), timedelta(seconds=-1), timedelta(microseconds=1)])
            return name, start, start + length
        if roll < 0.25:  # ending right at it
            end = change + rng.choice([timedelta(0), timedelta(0), timedelta(seconds=1), timedelta(microseconds=-1)])
            return name, end - length, end
        start = change - length * rng.random()
    else:
        start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 365 * 86400))
    start = _ragged(rng, start + timedelta(microseconds=rng.randint(0, 999_999)))
    return name, start, _ragged(rng, start + length)


def long_window(rng: random.Random) -> tuple[str, datetime, datetime]:
    """(zone, start, end) spanning 2 to 8 years."""
    for _ in range(6):  # preferably a zone that changes its offset in those years
        name, _ = _zone_and_year(rng)
        year = rng.randint(1880, 2090)
        if any(changes_in_year(name, y) for y in (year, year + 1, year + 2)):
            break
    start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 365 * 86400))
    return name, _ragged(rng, start), _ragged(rng, start + timedelta(days=rng.randint(2 * 365, 8 * 365)))


def _aim(rng: random.Random, expression: str, name: str, start: datetime, end: datetime) -> str:
    """``expression`` with its hour field set to the local hours around an offset change in the window."""
    low, high = math.ceil(seconds_of(start)), math.floor(seconds_of(end))
    table = transitions(name, low, max(low, high))
    if not table:
        return expression
    change, before, after = rng.choice(table)
    hours = sorted({(change + offset) // 3600 % 24 for offset in (before, after, before - 3600, after + 3600)})
    fields = _expand(expression).split()
    fields[1] = rng.choice([",".join(map(str, hours)), str(rng.choice(hours)), f"{hours[0]}-{hours[-1]}",
                            f"*/{rng.choice([1, 2, 3])}"])
    if rng.random() < 0.5:
        fields[2:] = ["*", "*", "*"]
    return " ".join(fields)


@st.composite
def cases(draw: st.DrawFn, *families, windows=window, aim: float = 0.0):  # type: ignore[no-untyped-def]
    """(expression, zone, start, end, rng): an expression from one of ``families``, a window.

    ``aim``: how often the expression's hours are moved onto an offset change in the window.
    """
    rng = draw(st.randoms(use_true_random=True))
    expression = rng.choice(families)(rng)
    name, start, end = windows(rng)
    if rng.random() < aim:
        expression = _aim(rng, expression, name, start, end)
    note(f"{expression!r} in {name} over [{start.isoformat()}, {end.isoformat()}]")
    return expression, name, start, end, rng


# --- the oracles agree with each other -----------------------------------------------------------

@scaled(60)
@given(cases(sparse_expression, windows=functools.partial(window, max_hours=96)))
def test_the_two_oracles_agree(case: tuple) -> None:
    expression, name, start, end, _ = case
    cron, zone = Cron.parse(_expand(expression)), Zone(name)
    assert minute_walk(cron, zone, start, end) == day_walk(cron, zone, start, end)


def test_the_oracles_know_the_policy() -> None:
    # Worked by hand (America/New_York 2024: EST->EDT 03-10 07:00Z, EDT->EST 11-03 06:00Z).
    ny = Zone("America/New_York")
    for oracle in (minute_walk, day_walk):
        assert oracle(Cron.parse("0 2 * * *"), ny, Z("2024-03-10T00:00"), Z("2024-03-11T00:00")) == [Z("2024-03-10T07:00")]
        assert oracle(Cron.parse("30 1 * * *"), ny, Z("2024-11-03T00:00"), Z("2024-11-04T00:00")) == [Z("2024-11-03T05:30")]
        assert oracle(Cron.parse("30 * * * *"), ny, Z("2024-11-03T05:00"), Z("2024-11-03T07:00")) == [
            Z("2024-11-03T05:30"), Z("2024-11-03T06:30")]
        assert oracle(Cron.parse("15 */1 * * *"), ny, Z("2024-11-03T05:00"), Z("2024-11-03T07:00")) == [
            Z("2024-11-03T05:15"), Z("2024-11-03T06:15")]
        assert oracle(Cron.parse("15 1 * * *"), ny, Z("2024-11-03T05:30"), Z("2024-11-03T07:00")) == []
    # Africa/Monrovia: -00:44:30 until 1972-01-07 00:00 local = 00:44:30Z, then +00:00: the wall
    # clock jumps from 00:00:00 to 00:44:30, so 00:30 on 7 January fires at the change, 00:44:30Z.
    monrovia = Zone("Africa/Monrovia")
    for oracle in (minute_walk, day_walk):
        assert oracle(Cron.parse("30 0 * * *"), monrovia, Z("1972-01-06T00:00"), Z("1972-01-08T01:00")) == [
            Z("1972-01-06T01:14:30"), Z("1972-01-07T00:44:30"), Z("1972-01-08T00:30")]
    # The matcher: "*/2" in a day field counts as restricted (OR with the other day field);
    # day-of-week 7 is Sunday; "a/n" runs to the top of the field.
    cron = Cron.parse("0 0 */2 * 7")
    assert cron.either_day and cron.dows == {0}
    assert Cron.parse("5/20 * * * *").minutes == {5, 25, 45}
    assert Cron.parse("* * * * 7/3").dows == {0}
    assert Cron.parse("* * * jan-mar,Dec sun,Sat").months == {1, 2, 3, 12}


# --- fire_times against the brute force -------------------------------------------------------------

def _check_fire_times(expression: str, name: str, start: datetime, end: datetime, rng: random.Random | None = None,
                      oracle=minute_walk) -> list[datetime]:  # type: ignore[no-untyped-def]
    zone: str | zoneinfo.ZoneInfo = name
    asked_start, asked_end = start, end
    if rng is not None and rng.random() < 0.3:  # the zone as a ZoneInfo, the window as local aware datetimes
        zone = zoneinfo.ZoneInfo(name)
        asked_start, asked_end = start.astimezone(zone), end.astimezone(zone)  # same instants (fold set)
    got = list(make_timetable(expression, zone).fire_times(asked_start, asked_end))
    assert all(x.tzinfo is UTC for x in got)
    assert all(b > a for a, b in itertools.pairwise(got)), "strictly increasing: no instant twice"
    expected = oracle(Cron.parse(_expand(expression)), Zone(name), start, end)
    low, high = math.ceil(seconds_of(start)), math.floor(seconds_of(end))
    kinds = {"gap" if after > before else "overlap" for _, before, after in transitions(name, low, max(low, high))}
    event(f"window holds: {' and '.join(sorted(kinds)) or 'no offset change'}")
    event(f"window length: {'< 1 day' if end - start < timedelta(days=1) else '< 1 year' if end - start < timedelta(days=365) else '>= 1 year'}")
    event(f"fire times: {'0' if not got else '1-9' if len(got) < 10 else '10-999' if len(got) < 1000 else '1000+'}")
    table = transitions(name, low, max(low, high))
    if any(instant_of(change) in got for change, before, after in table if after > before):
        event("a fire time lands on the end of a gap")
    walls = [t.astimezone(zoneinfo.ZoneInfo(name)).replace(tzinfo=None) for t in got]
    if len(set(walls)) < len(walls):
        event("a wall time fires twice (overlap, minute or hour field begins with *)")
    assert got == expected, (expression, name, start, end, sorted(set(got) ^ set(expected))[:5])
    return got


@scaled(_BASE)
@given(cases(any_expression, aim=0.5))
def test_fire_times_equal_the_minute_walk(case: tuple) -> None:
    _check_fire_times(*case)


@scaled(120)
@given(cases(common_expression))
def test_common_expressions_equal_the_minute_walk(case: tuple) -> None:
    _check_fire_times(*case)


@scaled(40)
@given(cases(sparse_expression, windows=long_window))
def test_sparse_expressions_over_years_equal_the_day_walk(case: tuple) -> None:
    _check_fire_times(*case, oracle=day_walk)


@scaled(80)
@given(cases(any_expression, common_expression, aim=0.5,
             windows=functools.partial(window, places=_extreme_zone_and_year)))
def test_extreme_offset_changes_equal_the_minute_walk(case: tuple) -> None:
    _check_fire_times(*case)


def test_invalid_expressions_the_matcher_rejects_are_refused() -> None:
    for text in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2-4/2 *"]:
        assert not Cron.parse(text).can_ever_fire()
        try:
            make_timetable(text, "UTC")
        except ScheduleError:
            continue
        raise AssertionError(f"{text!r} never fires and should be refused")


# --- next_dagrun_info against the brute force ---------------------------------------------------------

def _chain(timetable: CronTriggerTimetable, start: datetime, end: datetime) -> list[datetime]:
    """Every run catchup=True creates from start_date to end_date, with `now` long after."""
    now = end + timedelta(days=30)
    runs: list[datetime] = []
    info = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None,
                                      start_date=start, end_date=end, catchup=True, now=now)
    while info is not None:
        assert info.logical_date == info.run_after == info.data_interval.end
        if runs:
            assert info.logical_date > runs[-1], "next schedule earlier than (or equal to) the previous one"
            assert info.data_interval.start == runs[-1]
        runs.append(info.logical_date)
        assert len(runs) <= 10_000
        info = timetable.next_dagrun_info(last_automated_data_interval=info.data_interval,
                                          last_logical_date=info.logical_date, start_date=start, end_date=end,
                                          catchup=True, now=now)
    return runs


@scaled(50)
@given(cases(common_expression, sparse_expression, any_expression, windows=functools.partial(window, max_hours=60),
             aim=0.3))
def test_catchup_creates_exactly_the_brute_force_runs(case: tuple) -> None:
    expression, name, start, end, _ = case
    expected = minute_walk(Cron.parse(_expand(expression)), Zone(name), start, end)
    timetable = CronTriggerTimetable(expression, name)
    runs = _chain(timetable, start, end)
    assert runs == expected
    assert runs == list(timetable.fire_times(start, end))


@scaled(40)
@given(cases(common_expression, any_expression, windows=functools.partial(window, max_hours=60), aim=0.3))
def test_data_interval_timetable_chains_consecutive_brute_force_fire_times(case: tuple) -> None:
    # CronDataIntervalTimetable (Airflow 2 behaviour): a run per [fire, next fire], created at its end.
    expression, name, start, end, rng = case
    fires = minute_walk(Cron.parse(_expand(expression)), Zone(name), start, end)
    timetable = CronDataIntervalTimetable(expression, name)
    now = end + timedelta(days=30)
    seen: list[tuple[datetime, datetime]] = []
    info = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None,
                                      start_date=start, end_date=end, catchup=True, now=now)
    while info is not None and info.data_interval.end <= end:
        assert info.logical_date == info.data_interval.start and info.run_after == info.data_interval.end
        seen.append((info.data_interval.start, info.data_interval.end))
        info = timetable.next_dagrun_info(last_automated_data_interval=info.data_interval,
                                          last_logical_date=info.logical_date, start_date=start, end_date=end,
                                          catchup=True, now=now)
    assert seen == list(itertools.pairwise(fires))
    # catchup=False: the latest complete interval at `now`, but none that begins before start_date.
    now = start + (end - start) * rng.random()
    ended = [f for f in fires if f <= now]
    begin = ended[-2] if len(ended) >= 2 else fires[0] if fires else None
    if begin is None or begin == fires[-1]:
        return  # its end lies past what the brute force walked
    info = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None,
                                      start_date=start, end_date=None, catchup=False, now=now)
    assert info is not None
    assert (info.data_interval.start, info.data_interval.end) == (begin, fires[fires.index(begin) + 1])


@scaled(60)
@given(cases(common_expression, any_expression, windows=functools.partial(window, max_hours=48), aim=0.3))
def test_without_catchup_the_run_is_the_latest_due(case: tuple) -> None:
    expression, name, start, end, rng = case
    start_date, now = start - timedelta(days=1), start + (end - start) * rng.random()
    # Every fire time in [start_date - 1 day, end + 2 days]: the neighbours of anything in there.
    walked_from, walked_to = start_date - timedelta(days=1), end + timedelta(days=2)
    fires = minute_walk(Cron.parse(_expand(expression)), Zone(name), walked_from, walked_to)
    eligible = [f for f in fires if start_date <= f <= now]
    last = rng.choice(eligible) if eligible and rng.random() < 0.5 else None
    due = [f for f in fires if start_date <= f <= now and (last is None or f > last)]
    later = [f for f in fires if f >= start_date and (last is None or f > last)]
    if not due and not later:
        return  # the next fire time lies past what the brute force walked
    expected = due[-1] if due else later[0]
    event(f"without catchup: {'a run is due' if due else 'the next run is in the future'}, "
          f"{'after a last run' if last else 'no run yet'}")
    info = CronTriggerTimetable(expression, name).next_dagrun_info(
        last_automated_data_interval=None, last_logical_date=last, start_date=start_date, end_date=None,
        catchup=False, now=now)
    assert info is not None and info.logical_date == info.run_after == expected
    earlier = [f for f in fires if f < expected]
    if earlier:  # the brute force saw every fire time since walked_from: this is the previous one
        assert info.data_interval.start == earlier[-1]


@scaled(40)
@given(cases(common_expression, any_expression, windows=functools.partial(window, max_hours=48)))
def test_next_dagrun_info_is_stable_and_feeding_it_back_advances(case: tuple) -> None:
    expression, name, start, end, rng = case
    now = start + (end - start) * rng.random()
    timetable = CronTriggerTimetable(expression, name)
    kwargs = {"start_date": start, "end_date": None, "catchup": rng.random() < 0.5, "now": now}
    first = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None, **kwargs)
    again = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None, **kwargs)
    assert first == again, "no oscillation: the same question gets the same answer"
    assert first is not None
    info = first
    for _ in range(6):
        following = timetable.next_dagrun_info(last_automated_data_interval=info.data_interval,
                                               last_logical_date=info.logical_date, **kwargs)
        assert following is not None and following.logical_date > info.logical_date
        assert following.data_interval.start >= info.logical_date
        assert following == timetable.next_dagrun_info(last_automated_data_interval=info.data_interval,
                                                       last_logical_date=info.logical_date, **kwargs)
        info = following
