"""The DST policy (DESIGN.md, "Time: schedules and daylight saving") as a table of exact instants.

Every expectation below was worked out by hand from the tzdata rules of the zone (the
transition instants are noted in each comment), not by running the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.timetables import CronTriggerTimetable, make_timetable


def Z(text: str) -> datetime:
    """An instant in UTC from 'YYYY-MM-DDTHH:MM'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expression: str, zone: str, start: str, end: str) -> list[datetime]:
    return list(make_timetable(expression, zone).fire_times(Z(start), Z(end)))


CASES = [
    # --- Europe/Berlin 2024: CET->CEST at 2024-03-31 01:00Z (02:00-02:59 missing),
    #     CEST->CET at 2024-10-27 01:00Z (02:00-02:59 twice).
    pytest.param("30 2 * * *", "Europe/Berlin", "2024-03-30T00:00", "2024-04-01T23:59",
                 ["2024-03-30T01:30", "2024-03-31T01:00", "2024-04-01T00:30"], id="berlin-gap-daily"),
    pytest.param("*/15 * * * *", "Europe/Berlin", "2024-03-31T00:30", "2024-03-31T01:30",
                 ["2024-03-31T00:30", "2024-03-31T00:45", "2024-03-31T01:00", "2024-03-31T01:15", "2024-03-31T01:30"],
                 id="berlin-gap-every-15-collapses"),
    pytest.param("0 2 * * *", "Europe/Berlin", "2024-03-31T00:00", "2024-03-31T23:59",
                 ["2024-03-31T01:00"], id="berlin-gap-0200"),
    pytest.param("0,30 2,3 * * *", "Europe/Berlin", "2024-03-31T00:00", "2024-03-31T23:59",
                 ["2024-03-31T01:00", "2024-03-31T01:30"], id="berlin-gap-and-0300-are-one-run"),
    pytest.param("30 2 * * 0", "Europe/Berlin", "2024-03-24T00:00", "2024-04-08T00:00",
                 ["2024-03-24T01:30", "2024-03-31T01:00", "2024-04-07T00:30"], id="berlin-gap-weekly"),
    pytest.param("30 2 * * *", "Europe/Berlin", "2024-10-26T00:00", "2024-10-28T23:59",
                 ["2024-10-26T00:30", "2024-10-27T00:30", "2024-10-28T01:30"], id="berlin-overlap-fixed-once"),
    pytest.param("30 * * * *", "Europe/Berlin", "2024-10-26T23:00", "2024-10-27T02:59",
                 ["2024-10-26T23:30", "2024-10-27T00:30", "2024-10-27T01:30", "2024-10-27T02:30"],
                 id="berlin-overlap-hour-star-twice"),
    pytest.param("0 * * * *", "Europe/Berlin", "2024-10-26T23:00", "2024-10-27T02:00",
                 ["2024-10-26T23:00", "2024-10-27T00:00", "2024-10-27T01:00", "2024-10-27T02:00"],
                 id="berlin-overlap-0-star-twice"),
    pytest.param("*/15 2 * * *", "Europe/Berlin", "2024-10-26T23:00", "2024-10-27T03:00",
                 ["2024-10-27T00:00", "2024-10-27T00:15", "2024-10-27T00:30", "2024-10-27T00:45",
                  "2024-10-27T01:00", "2024-10-27T01:15", "2024-10-27T01:30", "2024-10-27T01:45"],
                 id="berlin-overlap-minute-star-twice"),
    pytest.param("0-59/15 2 * * *", "Europe/Berlin", "2024-10-26T23:00", "2024-10-27T03:00",
                 ["2024-10-27T00:00", "2024-10-27T00:15", "2024-10-27T00:30", "2024-10-27T00:45"],
                 id="berlin-overlap-range-once"),
    # --- America/New_York 2024: EST->EDT 2024-03-10 07:00Z, EDT->EST 2024-11-03 06:00Z (01:00-01:59 twice).
    pytest.param("30 2 * * *", "America/New_York", "2024-03-09T00:00", "2024-03-11T23:59",
                 ["2024-03-09T07:30", "2024-03-10T07:00", "2024-03-11T06:30"], id="new-york-gap"),
    pytest.param("30 1 * * *", "America/New_York", "2024-11-02T00:00", "2024-11-04T23:59",
                 ["2024-11-02T05:30", "2024-11-03T05:30", "2024-11-04T06:30"], id="new-york-overlap-once"),
    pytest.param("30 * * * *", "America/New_York", "2024-11-03T04:00", "2024-11-03T08:00",
                 ["2024-11-03T04:30", "2024-11-03T05:30", "2024-11-03T06:30", "2024-11-03T07:30"],
                 id="new-york-overlap-twice"),
    pytest.param("0 9 * * 1-5", "America/New_York", "2024-03-08T00:00", "2024-03-12T00:00",
                 ["2024-03-08T14:00", "2024-03-11T13:00"], id="new-york-weekdays-shift"),
    # --- UTC: no transitions at all.
    pytest.param("0 6 * * *", "UTC", "2024-03-30T00:00", "2024-04-01T23:59",
                 ["2024-03-30T06:00", "2024-03-31T06:00", "2024-04-01T06:00"], id="utc-daily"),
    pytest.param("*/20 1 * * *", "UTC", "2024-10-27T00:00", "2024-10-27T23:59",
                 ["2024-10-27T01:00", "2024-10-27T01:20", "2024-10-27T01:40"], id="utc-no-overlap"),
    # --- Asia/Kolkata: +05:30 now; war time +06:30 from 1941-09-30 18:30Z (midnight gap),
    #     back to +05:30 on 1942-05-14 17:30Z (23:00-23:59 twice).
    pytest.param("0 6 * * *", "Asia/Kolkata", "2024-01-01T00:00", "2024-01-02T23:59",
                 ["2024-01-01T00:30", "2024-01-02T00:30"], id="kolkata-half-hour-offset"),
    pytest.param("0 0 * * *", "Asia/Kolkata", "1941-09-29T00:00", "1941-10-01T23:59",
                 ["1941-09-29T18:30", "1941-09-30T18:30", "1941-10-01T17:30"], id="kolkata-1941-midnight-gap"),
    pytest.param("30 23 * * *", "Asia/Kolkata", "1942-05-14T00:00", "1942-05-14T23:59",
                 ["1942-05-14T17:00"], id="kolkata-1942-overlap-once"),
    pytest.param("30 * * * *", "Asia/Kolkata", "1942-05-14T16:00", "1942-05-14T19:00",
                 ["1942-05-14T16:00", "1942-05-14T17:00", "1942-05-14T18:00", "1942-05-14T19:00"],
                 id="kolkata-1942-overlap-twice"),
    # --- Asia/Kathmandu: +05:45 now; +05:30 -> +05:45 at 1985-12-31 18:30Z (00:00-00:14 missing).
    pytest.param("0 6 * * *", "Asia/Kathmandu", "2024-01-01T00:00", "2024-01-01T23:59",
                 ["2024-01-01T00:15"], id="kathmandu-45-minute-offset"),
    pytest.param("0 0 * * *", "Asia/Kathmandu", "1985-12-30T00:00", "1986-01-01T23:59",
                 ["1985-12-30T18:30", "1985-12-31T18:30", "1986-01-01T18:15"], id="kathmandu-1986-midnight-gap"),
    pytest.param("*/5 * * * *", "Asia/Kathmandu", "1985-12-31T18:25", "1985-12-31T18:35",
                 ["1985-12-31T18:25", "1985-12-31T18:30", "1985-12-31T18:35"], id="kathmandu-15-minute-gap"),
    # --- Australia/Lord_Howe 2024: a 30-minute DST shift. +11 -> +10:30 at 2024-04-06 15:00Z
    #     (01:30-01:59 twice); +10:30 -> +11 at 2024-10-05 15:30Z (02:00-02:29 missing).
    pytest.param("0 2 * * *", "Australia/Lord_Howe", "2024-10-04T00:00", "2024-10-06T23:59",
                 ["2024-10-04T15:30", "2024-10-05T15:30", "2024-10-06T15:00"], id="lord-howe-gap-0200"),
    pytest.param("30 2 * * *", "Australia/Lord_Howe", "2024-10-05T00:00", "2024-10-05T23:59",
                 ["2024-10-05T15:30"], id="lord-howe-0230-exists"),
    pytest.param("*/15 * * * *", "Australia/Lord_Howe", "2024-10-05T15:00", "2024-10-05T16:00",
                 ["2024-10-05T15:00", "2024-10-05T15:15", "2024-10-05T15:30", "2024-10-05T15:45", "2024-10-05T16:00"],
                 id="lord-howe-gap-every-15"),
    pytest.param("45 1 * * *", "Australia/Lord_Howe", "2024-04-06T00:00", "2024-04-06T23:59",
                 ["2024-04-06T14:45"], id="lord-howe-overlap-once"),
    pytest.param("*/15 * * * *", "Australia/Lord_Howe", "2024-04-06T14:00", "2024-04-06T15:30",
                 ["2024-04-06T14:00", "2024-04-06T14:15", "2024-04-06T14:30", "2024-04-06T14:45",
                  "2024-04-06T15:00", "2024-04-06T15:15", "2024-04-06T15:30"], id="lord-howe-overlap-every-15"),
    pytest.param("45 * * * *", "Australia/Lord_Howe", "2024-04-06T14:00", "2024-04-06T15:30",
                 ["2024-04-06T14:45", "2024-04-06T15:15"], id="lord-howe-overlap-half-hour-twice"),
    # --- America/Santiago 2024: -03 -> -04 at 2024-04-07 03:00Z (Sat 23:00-23:59 twice);
    #     -04 -> -03 at 2024-09-08 04:00Z (Sunday 00:00-00:59 missing: no midnight).
    pytest.param("0 0 * * *", "America/Santiago", "2024-09-07T00:00", "2024-09-09T23:59",
                 ["2024-09-07T04:00", "2024-09-08T04:00", "2024-09-09T03:00"], id="santiago-no-midnight"),
    pytest.param("0 0 * * *", "America/Santiago", "2024-04-06T00:00", "2024-04-07T23:59",
                 ["2024-04-06T03:00", "2024-04-07T04:00"], id="santiago-overlap-midnight-once"),
    pytest.param("30 23 * * *", "America/Santiago", "2024-04-06T00:00", "2024-04-07T23:59",
                 ["2024-04-06T02:30", "2024-04-07T02:30"], id="santiago-overlap-2330-once"),
    pytest.param("30 * * * *", "America/Santiago", "2024-04-07T01:00", "2024-04-07T05:00",
                 ["2024-04-07T01:30", "2024-04-07T02:30", "2024-04-07T03:30", "2024-04-07T04:30"],
                 id="santiago-overlap-twice"),
    # --- America/Havana 2024: -05 -> -04 at 2024-03-10 05:00Z (00:00-00:59 missing);
    #     -04 -> -05 at 2024-11-03 05:00Z (00:00-00:59 twice).
    pytest.param("0 0 * * *", "America/Havana", "2024-03-09T00:00", "2024-03-11T23:59",
                 ["2024-03-09T05:00", "2024-03-10T05:00", "2024-03-11T04:00"], id="havana-no-midnight"),
    pytest.param("0 0 * * *", "America/Havana", "2024-11-02T12:00", "2024-11-04T12:00",
                 ["2024-11-03T04:00", "2024-11-04T05:00"], id="havana-midnight-twice-fires-once"),
    pytest.param("0 * * * *", "America/Havana", "2024-11-03T03:00", "2024-11-03T06:00",
                 ["2024-11-03T03:00", "2024-11-03T04:00", "2024-11-03T05:00", "2024-11-03T06:00"],
                 id="havana-hourly-twice"),
    # --- Asia/Beirut 2024: +02 -> +03 at 2024-03-30 22:00Z (31 March 00:00-00:59 missing);
    #     +03 -> +02 at 2024-10-26 21:00Z (26 October 23:00-23:59 twice).
    pytest.param("0 0 * * *", "Asia/Beirut", "2024-03-29T00:00", "2024-03-31T23:59",
                 ["2024-03-29T22:00", "2024-03-30T22:00", "2024-03-31T21:00"], id="beirut-no-midnight"),
    pytest.param("30 23 * * *", "Asia/Beirut", "2024-10-26T00:00", "2024-10-26T23:59",
                 ["2024-10-26T20:30"], id="beirut-overlap-once"),
    # --- Africa/Casablanca 2024 (Ramadan): +01 -> +00 at 2024-03-10 02:00Z (02:00-02:59 twice);
    #     +00 -> +01 at 2024-04-14 02:00Z (02:00-02:59 missing).
    pytest.param("30 2 * * *", "Africa/Casablanca", "2024-03-09T00:00", "2024-03-11T23:59",
                 ["2024-03-09T01:30", "2024-03-10T01:30", "2024-03-11T02:30"], id="casablanca-ramadan-start"),
    pytest.param("30 2 * * *", "Africa/Casablanca", "2024-04-13T00:00", "2024-04-15T23:59",
                 ["2024-04-13T02:30", "2024-04-14T02:00", "2024-04-15T01:30"], id="casablanca-ramadan-end"),
    pytest.param("*/30 2 * * *", "Africa/Casablanca", "2024-03-10T00:00", "2024-03-10T23:59",
                 ["2024-03-10T01:00", "2024-03-10T01:30", "2024-03-10T02:00", "2024-03-10T02:30"],
                 id="casablanca-overlap-twice"),
    # --- Europe/Dublin 2024 (negative DST in tzdata: winter GMT is the "DST" period):
    #     +00 -> +01 at 2024-03-31 01:00Z (01:00-01:59 missing); +01 -> +00 at 2024-10-27 01:00Z (01:00-01:59 twice).
    pytest.param("30 1 * * *", "Europe/Dublin", "2024-03-30T00:00", "2024-04-01T23:59",
                 ["2024-03-30T01:30", "2024-03-31T01:00", "2024-04-01T00:30"], id="dublin-gap"),
    pytest.param("30 1 * * *", "Europe/Dublin", "2024-10-26T12:00", "2024-10-28T12:00",
                 ["2024-10-27T00:30", "2024-10-28T01:30"], id="dublin-overlap-once"),
    pytest.param("30 * * * *", "Europe/Dublin", "2024-10-27T00:00", "2024-10-27T02:00",
                 ["2024-10-27T00:30", "2024-10-27T01:30"], id="dublin-overlap-twice"),
    # --- Pacific/Apia skipped 30 December 2011: -10 -> +14 at 2011-12-30 10:00Z.
    pytest.param("0 12 * * *", "Pacific/Apia", "2011-12-29T00:00", "2011-12-31T23:59",
                 ["2011-12-29T22:00", "2011-12-30T10:00", "2011-12-30T22:00", "2011-12-31T22:00"],
                 id="apia-skipped-day"),
    pytest.param("0 * * * *", "Pacific/Apia", "2011-12-30T08:00", "2011-12-30T12:00",
                 ["2011-12-30T08:00", "2011-12-30T09:00", "2011-12-30T10:00", "2011-12-30T11:00", "2011-12-30T12:00"],
                 id="apia-whole-day-is-one-run"),
]


@pytest.mark.parametrize(("expression", "zone", "start", "end", "expected"), CASES)
def test_fire_times_follow_the_dst_policy(expression: str, zone: str, start: str, end: str, expected: list[str]) -> None:
    assert fires(expression, zone, start, end) == [Z(x) for x in expected]


@pytest.mark.parametrize(
    ("zone", "day"),
    [("America/Santiago", "2024-09-08"), ("America/Havana", "2024-03-10"), ("Asia/Beirut", "2024-03-31")],
)
def test_a_day_without_midnight_still_gets_its_daily_run(zone: str, day: str) -> None:
    timetable = make_timetable("@daily", zone)
    tz = ZoneInfo(zone)
    first = (datetime.fromisoformat(day) - timedelta(days=3)).replace(tzinfo=tz)
    last = (datetime.fromisoformat(day) + timedelta(days=4)).replace(tzinfo=tz) - timedelta(microseconds=1)
    runs = list(timetable.fire_times(first, last))
    local_days = [r.astimezone(tz).date().isoformat() for r in runs]
    assert len(runs) == 7
    assert len(set(local_days)) == 7
    assert day in local_days
    assert runs[3].astimezone(tz).hour == 1  # the first instant after the gap: 01:00 local


def test_every_minute_for_a_year_in_new_york_counts_each_real_minute_once() -> None:
    # Every UTC minute shows a matching wall time, including both passes through the
    # overlap; the gap's minutes all land on 03:00 EDT, which is itself a match.
    timetable = make_timetable("* * * * *", "America/New_York")
    runs = timetable.fire_times(Z("2024-01-01T00:00"), Z("2024-12-31T23:59"))
    count = 0
    previous = None
    for run in runs:
        assert previous is None or run - previous == timedelta(minutes=1)
        previous = run
        count += 1
    assert count == 366 * 24 * 60


def test_hourly_fires_23_times_on_spring_day_and_25_on_fall_day_in_berlin() -> None:
    timetable = CronTriggerTimetable("0 * * * *", "Europe/Berlin")
    spring = list(timetable.fire_times(Z("2024-03-30T23:00"), Z("2024-03-31T21:59")))
    fall = list(timetable.fire_times(Z("2024-10-26T22:00"), Z("2024-10-27T22:59")))
    assert len(spring) == 23
    assert len(fall) == 25


def test_fixed_time_daily_fires_once_a_day_all_year_in_every_listed_zone() -> None:
    for zone in ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
                 "America/Havana", "Asia/Beirut", "Africa/Casablanca", "Europe/Dublin", "Asia/Kathmandu"]:
        for expression in ["0 0 * * *", "30 2 * * *", "45 1 * * *", "30 23 * * *"]:
            timetable = make_timetable(expression, zone)
            runs = list(timetable.fire_times(Z("2024-01-01T12:00"), Z("2025-01-01T11:59")))
            assert len(runs) == 366, (zone, expression)
            assert all(b > a for a, b in zip(runs, runs[1:], strict=False))
