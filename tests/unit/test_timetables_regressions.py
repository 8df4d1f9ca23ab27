"""Named DST regressions for the cron timetables, each with its exact UTC instants written out.

The policy is DESIGN.md, "Time: schedules and daylight saving": a wall time in a gap fires at
the first instant after the gap; in an overlap a wall time fires once (first occurrence), or at
both occurrences when the minute or hour field begins with "*"; equal instants are one run.

Every expected instant was worked out by hand from the zone's tzdata rules; the transition
used is written next to it (checked against the installed tzdata by ``test_the_transitions_are_where_the_comments_say``).
The second half replays symptoms reported against Airflow and croniter (issue numbers given).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.timetables import CronDataIntervalTimetable, CronTriggerTimetable, DagRunInfo, make_timetable

HOUR = timedelta(hours=1)


def Z(text: str) -> datetime:
    """An instant in UTC from 'YYYY-MM-DDTHH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expression: str, zone: str, start: str, end: str) -> list[datetime]:
    return list(make_timetable(expression, zone).fire_times(Z(start), Z(end)))


def local_day(zone: str, day: str) -> tuple[datetime, datetime]:
    """[local midnight, next local midnight - 1 µs] of ``day`` in UTC (midnight read at its first occurrence).

    Built from UTC -> local conversions only: the first UTC minute whose local date is ``day``.
    """
    tz = ZoneInfo(zone)
    target = datetime.fromisoformat(day).date()
    probe = datetime.combine(target, datetime.min.time(), UTC) - timedelta(hours=16)
    while probe.astimezone(tz).date() < target:
        probe += timedelta(minutes=1)
    following = probe + timedelta(hours=20)
    while following.astimezone(tz).date() == target:
        following += timedelta(minutes=1)
    return probe, following - timedelta(microseconds=1)


def day_fires(expression: str, zone: str, day: str) -> list[datetime]:
    return list(make_timetable(expression, zone).fire_times(*local_day(zone, day)))


def chain(timetable: CronTriggerTimetable, start: datetime, end: datetime) -> list[datetime]:
    """The runs catchup=True creates between start_date and end_date, checking the chain as it goes."""
    now = end + timedelta(days=3)
    runs: list[datetime] = []
    last: DagRunInfo | None = None
    while True:
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last.data_interval if last else None,
            last_logical_date=last.logical_date if last else None,
            start_date=start, end_date=end, catchup=True, now=now)
        if info is None:
            return runs
        assert info.logical_date == info.run_after == info.data_interval.end
        if last is not None:
            assert info.logical_date > last.logical_date, f"next schedule {info.logical_date} not after {last.logical_date}"
            assert info.data_interval.start == last.logical_date
        runs.append(info.logical_date)
        last = info


# --- the transitions the expectations rely on --------------------------------------------------------

#: (zone, instant of the change, offset before, offset after), from tzdata's rules:
TRANSITIONS = [
    # US: second Sunday of March 02:00 EST -> 03:00 EDT; first Sunday of November 02:00 EDT -> 01:00 EST.
    ("America/New_York", "2024-03-10T07:00", -5, -4),
    ("America/New_York", "2024-11-03T06:00", -4, -5),
    ("America/Los_Angeles", "2020-03-08T10:00", -8, -7),
    ("America/Los_Angeles", "2023-03-12T10:00", -8, -7),
    ("America/New_York", "2018-11-04T06:00", -4, -5),
    # EU: last Sunday of March/October at 01:00 UTC.
    ("Europe/Brussels", "2023-10-29T01:00", 2, 1),
    ("Europe/Amsterdam", "2017-10-29T01:00", 2, 1),
    ("Europe/Vienna", "2017-10-29T01:00", 2, 1),
    ("Europe/Vienna", "2017-03-26T01:00", 1, 2),
    ("Europe/Berlin", "2020-03-29T01:00", 1, 2),
    ("Europe/Paris", "2022-10-30T01:00", 2, 1),
    # Lord Howe: +10:30 standard, +11 in summer (a 30-minute shift). First Sunday of April 02:00
    # LHDT -> 01:30 LHST; first Sunday of October 02:00 LHST -> 02:30 LHDT.
    ("Australia/Lord_Howe", "2024-04-06T15:00", 11, 10.5),
    ("Australia/Lord_Howe", "2024-10-05T15:30", 10.5, 11),
    ("Australia/Lord_Howe", "2019-10-05T15:30", 10.5, 11),
    # Cuba: second Sunday of March 00:00 CST -> 01:00 CDT; first Sunday of November 01:00 CDT -> 00:00 CST.
    ("America/Havana", "2024-03-10T05:00", -5, -4),
    ("America/Havana", "2024-11-03T05:00", -4, -5),
    # Chile: first Sunday of April 00:00 -03 -> Saturday 23:00 -04 (03:00 UTC); first Sunday of
    # September 00:00 -04 -> 01:00 -03 (04:00 UTC): the clock never shows that Sunday's midnight.
    ("America/Santiago", "2024-04-07T03:00", -3, -4),
    ("America/Santiago", "2024-09-08T04:00", -4, -3),
    # Chatham: +12:45 standard, +13:45 in summer. First Sunday of April 03:45 CHADT -> 02:45 CHAST;
    # last Sunday of September 02:45 CHAST -> 03:45 CHADT.
    ("Pacific/Chatham", "2024-04-06T14:00", 13.75, 12.75),
    ("Pacific/Chatham", "2024-09-28T14:00", 12.75, 13.75),
    # Ireland (tzdata's negative DST: IST +01 is "standard", winter GMT is DST with save -1h);
    # the offsets are what matter: 01:00 GMT -> 02:00 IST, 02:00 IST -> 01:00 GMT, both at 01:00 UTC.
    ("Europe/Dublin", "2024-03-31T01:00", 0, 1),
    ("Europe/Dublin", "2024-10-27T01:00", 1, 0),
    # Samoa skipped Friday 30 December 2011: -10 -> +14 at 10:00 UTC.
    ("Pacific/Apia", "2011-12-30T10:00", -10, 14),
]


@pytest.mark.parametrize(("zone", "change", "before", "after"), TRANSITIONS, ids=lambda v: str(v))
def test_the_transitions_are_where_the_comments_say(zone: str, change: str, before: float, after: float) -> None:
    tz = ZoneInfo(zone)
    instant = Z(change)
    assert (instant - timedelta(seconds=1)).astimezone(tz).utcoffset() == timedelta(hours=before)
    assert instant.astimezone(tz).utcoffset() == timedelta(hours=after)


def test_dublin_uses_negative_dst_in_this_tzdata_and_it_changes_nothing() -> None:
    # With vanguard tzdata (the default since 2018) winter GMT has dst() == -1h; rearguard builds
    # say IST has dst() == +1h instead. Only utcoffset() matters to the timetable, so the fire
    # times below are the same either way; this records which form is installed.
    tz = ZoneInfo("Europe/Dublin")
    winter, summer = datetime(2024, 1, 15, 12, tzinfo=tz), datetime(2024, 7, 15, 12, tzinfo=tz)
    assert (winter.utcoffset(), summer.utcoffset()) == (timedelta(0), HOUR)
    assert (winter.dst(), summer.dst()) in {(-HOUR, timedelta(0)), (timedelta(0), HOUR)}


# --- the named cases --------------------------------------------------------------------------

def test_new_york_0200_on_spring_forward_day_fires_at_0300_edt() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT at 07:00Z: 02:00 does not exist; it fires at 03:00 EDT = 07:00Z.
    assert fires("0 2 * * *", "America/New_York", "2024-03-09T00:00", "2024-03-11T23:59") == [
        Z("2024-03-09T07:00"),  # 02:00 EST
        Z("2024-03-10T07:00"),  # 03:00 EDT, the first instant after the gap
        Z("2024-03-11T06:00"),  # 02:00 EDT
    ]
    assert day_fires("0 2 * * *", "America/New_York", "2024-03-10") == [Z("2024-03-10T07:00")]


def test_a_window_starting_exactly_at_the_end_of_a_gap_keeps_the_gap_run() -> None:
    # The gap's run is at the transition instant itself (07:00Z); a window or start_date that begins
    # exactly there includes it, one that begins a microsecond later does not.
    timetable = CronTriggerTimetable("0 2 * * *", "America/New_York")
    change = Z("2024-03-10T07:00")
    assert list(timetable.fire_times(change, change + HOUR)) == [change]
    assert list(timetable.fire_times(change + timedelta(microseconds=1), change + HOUR)) == []
    assert list(timetable.fire_times(change - HOUR, change)) == [change]
    info = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None, start_date=change,
                                      end_date=None, catchup=True, now=change)
    assert info is not None and info.logical_date == change
    # The same at the start of an overlap's second pass (06:00Z, 01:00 EST) for an hourly job.
    hourly = CronTriggerTimetable("0 * * * *", "America/New_York")
    assert list(hourly.fire_times(Z("2024-11-03T06:00"), Z("2024-11-03T07:00"))) == [Z("2024-11-03T06:00"), Z("2024-11-03T07:00")]


def test_new_york_0130_on_fall_back_day_fires_once_at_the_first_occurrence() -> None:
    # 2024-11-03 02:00 EDT -> 01:00 EST at 06:00Z: 01:30 happens at 05:30Z (EDT) and 06:30Z (EST).
    assert day_fires("30 1 * * *", "America/New_York", "2024-11-03") == [Z("2024-11-03T05:30")]
    assert fires("30 1 * * *", "America/New_York", "2024-11-03T05:31", "2024-11-03T23:59") == []


def test_new_york_hourly_on_fall_back_day_fires_25_times_including_both_0100s() -> None:
    # The local day 2024-11-03 runs from 00:00 EDT (04:00Z) to 24:00 EST (05:00Z next day): 25 hours,
    # and "0 * * * *" has an hour field beginning with "*": 01:00 EDT (05:00Z) and 01:00 EST (06:00Z).
    got = day_fires("0 * * * *", "America/New_York", "2024-11-03")
    assert got == [Z(f"2024-11-03T{h:02d}:00") for h in range(4, 24)] + [Z(f"2024-11-04T{h:02d}:00") for h in range(5)]
    assert len(got) == 25
    assert Z("2024-11-03T05:00") in got and Z("2024-11-03T06:00") in got
    # ... and the spring day has 23.
    assert len(day_fires("0 * * * *", "America/New_York", "2024-03-10")) == 23


def test_brussels_quarter_hours_6_to_22_on_fall_back_day_are_68_distinct_runs() -> None:
    # 2023-10-29 03:00 CEST -> 02:00 CET at 01:00Z; the overlap is 02:00-02:59, outside 06-22, so
    # every run is in CET (UTC+1): 06:00 CET = 05:00Z ... 22:45 CET = 21:45Z, 17 hours x 4 = 68.
    got = day_fires("0,15,30,45 6-22 * * *", "Europe/Brussels", "2023-10-29")
    assert got == [Z(f"2023-10-29T{h:02d}:{m:02d}") for h in range(5, 22) for m in (0, 15, 30, 45)]
    assert len(got) == len(set(got)) == 68
    assert (got[0], got[-1]) == (Z("2023-10-29T05:00"), Z("2023-10-29T21:45"))


def test_lord_howe_every_15_minutes_fires_at_both_passes_of_the_half_hour_overlap() -> None:
    # 2024-04-07 02:00 LHDT (+11) -> 01:30 LHST (+10:30) at 2024-04-06T15:00Z: 01:30-01:59 twice.
    # Both offsets are whole quarter hours off UTC, so every UTC quarter hour shows a matching wall time.
    assert fires("*/15 * * * *", "Australia/Lord_Howe", "2024-04-06T14:00", "2024-04-06T16:00") == [
        Z("2024-04-06T14:00"),  # 01:00 LHDT
        Z("2024-04-06T14:15"),  # 01:15 LHDT
        Z("2024-04-06T14:30"),  # 01:30 LHDT (first pass)
        Z("2024-04-06T14:45"),  # 01:45 LHDT (first pass)
        Z("2024-04-06T15:00"),  # 01:30 LHST (second pass)
        Z("2024-04-06T15:15"),  # 01:45 LHST (second pass)
        Z("2024-04-06T15:30"),  # 02:00 LHST
        Z("2024-04-06T15:45"),  # 02:15 LHST
        Z("2024-04-06T16:00"),  # 02:30 LHST
    ]
    # The local day lasts 24.5 hours (13:00Z to 13:30Z next day): 98 quarter hours.
    assert len(day_fires("*/15 * * * *", "Australia/Lord_Howe", "2024-04-07")) == 98
    # A fixed time in the overlap fires once.
    assert day_fires("45 1 * * *", "Australia/Lord_Howe", "2024-04-07") == [Z("2024-04-06T14:45")]


def test_lord_howe_every_15_minutes_collapses_the_missing_half_hour_into_one_run_at_0230() -> None:
    # 2024-10-06 02:00 LHST (+10:30) -> 02:30 LHDT (+11) at 2024-10-05T15:30Z: 02:00 and 02:15 do not
    # exist and fire at the end of the gap, 02:30 LHDT = 15:30Z, itself a match: one run.
    assert fires("*/15 * * * *", "Australia/Lord_Howe", "2024-10-05T15:00", "2024-10-05T16:00") == [
        Z("2024-10-05T15:00"),  # 01:30 LHST
        Z("2024-10-05T15:15"),  # 01:45 LHST
        Z("2024-10-05T15:30"),  # 02:00, 02:15 (missing) and 02:30 LHDT: one run
        Z("2024-10-05T15:45"),  # 02:45 LHDT
        Z("2024-10-05T16:00"),  # 03:00 LHDT
    ]
    # The local day lasts 23.5 hours (13:30Z to 13:00Z next day): 94 quarter hours.
    assert len(day_fires("*/15 * * * *", "Australia/Lord_Howe", "2024-10-06")) == 94


def test_lord_howe_0230_is_not_skipped_on_the_spring_forward_day() -> None:
    # croniter #258: get_next jumped from 01:43 LHST to 03:00 LHDT. 02:30 LHDT exists (15:30Z).
    assert day_fires("30 2 * * *", "Australia/Lord_Howe", "2024-10-06") == [Z("2024-10-05T15:30")]
    assert day_fires("0 2 * * *", "Australia/Lord_Howe", "2024-10-06") == [Z("2024-10-05T15:30")]  # end of gap
    hourly = CronTriggerTimetable("0 * * * *", "Australia/Lord_Howe")
    # 2019: the same rule, 2019-10-06 02:00 LHST -> 02:30 LHDT at 2019-10-05T15:30Z.
    start = Z("2019-10-05T15:13")  # 01:43 LHST
    assert list(hourly.fire_times(start, Z("2019-10-05T17:00"))) == [
        Z("2019-10-05T15:30"),  # 02:00 does not exist: the end of the gap, 02:30 LHDT
        Z("2019-10-05T16:00"),  # 03:00 LHDT
        Z("2019-10-05T17:00"),  # 04:00 LHDT
    ]
    first = hourly.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None, start_date=start,
                                    end_date=None, catchup=True, now=Z("2019-10-06T00:00"))
    assert first is not None and first.logical_date == Z("2019-10-05T15:30")
    following = hourly.next_dagrun_info(last_automated_data_interval=first.data_interval,
                                        last_logical_date=first.logical_date, start_date=start, end_date=None,
                                        catchup=True, now=Z("2019-10-06T00:00"))
    # get_next and get_prev agree: the run after 15:30Z is 16:00Z, whose interval starts at 15:30Z.
    assert following is not None and following.data_interval.start == Z("2019-10-05T15:30")
    assert following.logical_date == Z("2019-10-05T16:00")
    assert hourly.infer_manual_data_interval(run_after=Z("2019-10-05T15:59")).start == Z("2019-10-05T15:30")


def test_havana_midnight_in_the_gap_fires_at_0100_cdt() -> None:
    # 2024-03-10 00:00 CST -> 01:00 CDT at 05:00Z: that day has no midnight; the run fires at 01:00 CDT.
    assert fires("0 0 * * *", "America/Havana", "2024-03-09T00:00", "2024-03-11T23:59") == [
        Z("2024-03-09T05:00"),  # 00:00 CST
        Z("2024-03-10T05:00"),  # 01:00 CDT: the first instant after the gap
        Z("2024-03-11T04:00"),  # 00:00 CDT
    ]
    assert Z("2024-03-10T05:00").astimezone(ZoneInfo("America/Havana")).hour == 1
    # 2024-11-03 01:00 CDT -> 00:00 CST at 05:00Z: midnight happens at 04:00Z and 05:00Z; once.
    assert fires("0 0 * * *", "America/Havana", "2024-11-02T12:00", "2024-11-04T12:00") == [
        Z("2024-11-03T04:00"), Z("2024-11-04T05:00")]


def test_santiago_transitions_at_midnight() -> None:
    # 2024-09-08 00:00 -04 -> 01:00 -03 at 04:00Z: Sunday's midnight never shows; it fires at 01:00 -03.
    assert fires("0 0 * * *", "America/Santiago", "2024-09-07T00:00", "2024-09-09T23:59") == [
        Z("2024-09-07T04:00"),  # Saturday 00:00 -04
        Z("2024-09-08T04:00"),  # Sunday 01:00 -03, end of the gap
        Z("2024-09-09T03:00"),  # Monday 00:00 -03
    ]
    # 2024-04-07 00:00 -03 -> Saturday 23:00 -04 at 03:00Z: Saturday 23:00-23:59 happens twice, and
    # Sunday's midnight happens once, at 00:00 -04 = 04:00Z (the instant 03:00Z reads 23:00 Saturday).
    assert fires("0 0 * * *", "America/Santiago", "2024-04-06T00:00", "2024-04-07T23:59") == [
        Z("2024-04-06T03:00"), Z("2024-04-07T04:00")]
    assert fires("30 23 * * *", "America/Santiago", "2024-04-06T00:00", "2024-04-07T23:59") == [
        Z("2024-04-06T02:30"),  # Friday 23:30 -03
        Z("2024-04-07T02:30"),  # Saturday 23:30 -03, first pass only (not 03:30Z, 23:30 -04)
    ]
    assert fires("30 * * * *", "America/Santiago", "2024-04-07T01:00", "2024-04-07T05:00") == [
        Z("2024-04-07T01:30"),  # 22:30 -03
        Z("2024-04-07T02:30"),  # 23:30 -03
        Z("2024-04-07T03:30"),  # 23:30 -04 (second pass: the hour field is "*")
        Z("2024-04-07T04:30"),  # 00:30 -04
    ]


def test_chatham_45_minute_offsets() -> None:
    # 2024-09-29 02:45 CHAST (+12:45) -> 03:45 CHADT (+13:45) at 2024-09-28T14:00Z: 02:45-03:44 missing.
    assert fires("0 3 * * *", "Pacific/Chatham", "2024-09-27T00:00", "2024-09-29T23:59") == [
        Z("2024-09-27T14:15"),  # 2024-09-28 03:00 CHAST
        Z("2024-09-28T14:00"),  # 2024-09-29 03:00 missing: 03:45 CHADT
        Z("2024-09-29T13:15"),  # 2024-09-30 03:00 CHADT
    ]
    assert fires("*/15 * * * *", "Pacific/Chatham", "2024-09-28T13:30", "2024-09-28T14:15") == [
        Z("2024-09-28T13:30"),  # 02:15 CHAST
        Z("2024-09-28T13:45"),  # 02:30 CHAST
        Z("2024-09-28T14:00"),  # 02:45, 03:00, 03:15, 03:30 (missing) and 03:45 CHADT: one run
        Z("2024-09-28T14:15"),  # 04:00 CHADT
    ]
    # 2024-04-07 03:45 CHADT -> 02:45 CHAST at 2024-04-06T14:00Z: 02:45-03:44 twice.
    assert day_fires("30 3 * * *", "Pacific/Chatham", "2024-04-07") == [Z("2024-04-06T13:45")]  # 03:30 CHADT only
    assert fires("0 * * * *", "Pacific/Chatham", "2024-04-06T12:00", "2024-04-06T15:30") == [
        Z("2024-04-06T12:15"),  # 02:00 CHADT
        Z("2024-04-06T13:15"),  # 03:00 CHADT
        Z("2024-04-06T14:15"),  # 03:00 CHAST (second pass)
        Z("2024-04-06T15:15"),  # 04:00 CHAST
    ]
    assert len(day_fires("0 * * * *", "Pacific/Chatham", "2024-04-07")) == 25


def test_dublin_negative_dst() -> None:
    # 2024-03-31 01:00 GMT -> 02:00 IST at 01:00Z: 01:00-01:59 missing.
    assert fires("30 1 * * *", "Europe/Dublin", "2024-03-30T00:00", "2024-04-01T23:59") == [
        Z("2024-03-30T01:30"),  # 01:30 GMT
        Z("2024-03-31T01:00"),  # 01:30 missing: 02:00 IST
        Z("2024-04-01T00:30"),  # 01:30 IST
    ]
    # 2024-10-27 02:00 IST -> 01:00 GMT at 01:00Z: 01:00-01:59 twice.
    assert fires("30 1 * * *", "Europe/Dublin", "2024-10-26T12:00", "2024-10-28T12:00") == [
        Z("2024-10-27T00:30"),  # 01:30 IST, first pass only
        Z("2024-10-28T01:30"),  # 01:30 GMT
    ]
    assert fires("0 * * * *", "Europe/Dublin", "2024-10-26T23:00", "2024-10-27T02:00") == [
        Z("2024-10-26T23:00"),  # 00:00 IST
        Z("2024-10-27T00:00"),  # 01:00 IST
        Z("2024-10-27T01:00"),  # 01:00 GMT
        Z("2024-10-27T02:00"),  # 02:00 GMT
    ]


def test_alaska_1867_repeats_a_whole_day() -> None:
    # America/Sitka: LMT +14:58:47 until 1867-10-19 15:30 local, then LMT -9:01:13 (the Alaska
    # purchase moved the date line): at 00:31:13Z the clock went from 19 Oct 15:30 back to 18 Oct
    # 15:30, so 24 hours of wall time happen twice. A whole wall-clock hour is 15:00:00 local, which
    # is HH:01:13 UTC under either offset (hh - 14:58:47 or hh + 9:01:13).
    hourly = fires("0 * * * *", "America/Sitka", "1867-10-18T12:00", "1867-10-19T03:00")
    # The hour field is "*": both passes fire, one run every UTC hour straight through the change,
    # including the second-pass hours (16:00 and 17:00 on 18 Oct, again) that follow it.
    assert hourly == [Z(f"1867-10-18T{h:02d}:01:13") for h in range(12, 24)] + [
        Z(f"1867-10-19T{h:02d}:01:13") for h in range(3)]
    # A fixed noon: 18 Oct 12:00 (+14:58:47) = 17 Oct 21:01:13Z; 19 Oct 12:00 first happens at
    # 18 Oct 21:01:13Z and again at 19 Oct 21:01:13Z (-9:01:13): once; 20 Oct 12:00 = 20 Oct 21:01:13Z.
    assert fires("0 12 * * *", "America/Sitka", "1867-10-17T00:00", "1867-10-21T00:00") == [
        Z("1867-10-17T21:01:13"), Z("1867-10-18T21:01:13"), Z("1867-10-20T21:01:13")]


def test_kwajalein_1993_skips_a_whole_day() -> None:
    # Pacific/Kwajalein: -12 -> +12 at 1993-08-21 12:00Z: the clock went from 21 Aug 00:00 to 22 Aug
    # 00:00, so all of 21 August is missing; its noon fires at the end of the gap, 12:00Z.
    assert fires("0 12 * * *", "Pacific/Kwajalein", "1993-08-20T00:00", "1993-08-23T00:00") == [
        Z("1993-08-20T00:00"),  # 19 Aug 12:00 -12
        Z("1993-08-21T00:00"),  # 20 Aug 12:00 -12
        Z("1993-08-21T12:00"),  # 21 Aug 12:00 missing: 22 Aug 00:00 +12
        Z("1993-08-22T00:00"),  # 22 Aug 12:00 +12
        Z("1993-08-23T00:00"),  # 23 Aug 12:00 +12
    ]


def test_a_stepped_day_field_counts_as_restricted_for_the_day_rule() -> None:
    # cron.py's documented reading (as croniter/Airflow, unlike Vixie cron): a day field other than a
    # bare "*" is restricted, so "*/2" with a day-of-week makes a day match either field.
    # January 2024: the 1st is a Monday. Odd days 1, 3, 5, 7, 9 or Mondays 1, 8.
    assert fires("0 0 */2 * 1", "UTC", "2024-01-01T00:00", "2024-01-10T23:59") == [
        Z(f"2024-01-{d:02d}T00:00") for d in (1, 3, 5, 7, 8, 9)]
    # With a bare "*" in day-of-week only the day of month counts.
    assert fires("0 0 */2 * *", "UTC", "2024-01-01T00:00", "2024-01-10T23:59") == [
        Z(f"2024-01-{d:02d}T00:00") for d in (1, 3, 5, 7, 9)]


# --- symptoms reported against Airflow and croniter ------------------------------------------------------

def test_airflow_7999_hour_ranges_and_lists_keep_their_wall_times_after_dst() -> None:
    # Airflow #7999: "0 7-8" and "0 7,9" ran at 08:00 instead of 07:00 after 2020-03-08 (PST -8 -> PDT -7).
    assert fires("0 7-8 * * *", "America/Los_Angeles", "2020-03-07T00:00", "2020-03-09T23:59") == [
        Z("2020-03-07T15:00"), Z("2020-03-07T16:00"),  # 07:00, 08:00 PST
        Z("2020-03-08T14:00"), Z("2020-03-08T15:00"),  # 07:00, 08:00 PDT
        Z("2020-03-09T14:00"), Z("2020-03-09T15:00"),
    ]
    assert fires("0 7,9 * * *", "America/Los_Angeles", "2020-03-07T00:00", "2020-03-08T23:59") == [
        Z("2020-03-07T15:00"), Z("2020-03-07T17:00"),  # 07:00, 09:00 PST
        Z("2020-03-08T14:00"), Z("2020-03-08T16:00"),  # 07:00, 09:00 PDT
    ]
    for expression in ("0 7-8 * * *", "0 7,9 * * *"):
        timetable = CronTriggerTimetable(expression, "America/Los_Angeles")
        start, end = Z("2020-03-01T00:00"), Z("2020-03-20T00:00")
        assert chain(timetable, start, end) == list(timetable.fire_times(start, end))


@pytest.mark.parametrize("timetable_class", [CronTriggerTimetable, CronDataIntervalTimetable])
def test_airflow_30088_next_schedule_is_never_earlier_in_a_scheduler_loop_across_spring_forward(timetable_class: type) -> None:
    # Airflow #30088: CronDataIntervalTimetable("20 */4 * * *", PST), catchup=False, crashed with
    # "next schedule shouldn't be earlier" on 2023-03-12 (02:00 PST -> 03:00 PDT at 10:00Z).
    # A scheduler loop: every 5 minutes of that night ask for the next run; create it once due.
    timetable = timetable_class("20 */4 * * *", "America/Los_Angeles")
    last: DagRunInfo | None = None
    created: list[DagRunInfo] = []
    now = Z("2023-03-11T20:00")
    while now <= Z("2023-03-13T04:00"):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last.data_interval if last else None,
            last_logical_date=last.logical_date if last else None,
            start_date=Z("2023-03-01T00:00"), end_date=None, catchup=False, now=now)
        assert info is not None
        if last is not None:
            assert info.logical_date > last.logical_date, "next schedule shouldn't be earlier"
        if info.run_after <= now:
            created.append(info)
            last = info
        now += timedelta(minutes=5)
    # Fire times at :20 past hours 0, 4, 8, 12, 16, 20 local. 2023-03-11 (PST, -8): 08:20 = 16:20Z,
    # 12:20 = 20:20Z, 16:20 = 00:20Z, 20:20 = 04:20Z. 2023-03-12: 00:20 PST = 08:20Z, then PDT (-7):
    # 04:20 = 11:20Z, 08:20 = 15:20Z, 12:20 = 19:20Z, 16:20 = 23:20Z, 20:20 = 03:20Z on the 13th.
    # At the first `now` (20:00Z) the latest due fire time is 16:20Z.
    fire = [Z("2023-03-11T12:20"), Z("2023-03-11T16:20"), Z("2023-03-11T20:20"), Z("2023-03-12T00:20"),
            Z("2023-03-12T04:20"), Z("2023-03-12T08:20"), Z("2023-03-12T11:20"), Z("2023-03-12T15:20"),
            Z("2023-03-12T19:20"), Z("2023-03-12T23:20"), Z("2023-03-13T03:20")]
    if timetable_class is CronTriggerTimetable:
        assert [i.logical_date for i in created] == fire[1:]
    else:  # a run per interval [fire, next fire], created when the interval ends
        assert [(i.data_interval.start, i.data_interval.end) for i in created] == list(itertools.pairwise(fire))


def test_croniter_48_no_extra_monday_run_after_fall_back() -> None:
    # croniter #48: "0 8 * * 1" in Europe/Amsterdam got an extra 07:00 run on the Monday after
    # 2017-10-29 (03:00 CEST -> 02:00 CET at 01:00Z).
    assert fires("0 8 * * 1", "Europe/Amsterdam", "2017-10-20T00:00", "2017-11-08T00:00") == [
        Z("2017-10-23T06:00"),  # 08:00 CEST
        Z("2017-10-30T07:00"),  # 08:00 CET
        Z("2017-11-06T07:00"),
    ]


def test_croniter_91_hourly_at_half_past_never_repeats_in_vienna() -> None:
    # croniter #91: "30 * * * *" in Europe/Vienna started repeating timestamps after 2017-10-29
    # (03:00 CEST -> 02:00 CET at 01:00Z). The hour field is "*": 02:30 fires at both passes,
    # so the runs are exactly one hour apart in UTC straight through the overlap.
    timetable = CronTriggerTimetable("30 * * * *", "Europe/Vienna")
    start = Z("2017-10-28T08:09")  # 10:09 CEST
    runs = chain(timetable, start, start + timedelta(hours=40))
    assert runs == [Z("2017-10-28T08:30") + k * HOUR for k in range(40)]
    # Spring, 2017-03-26 02:00 CET -> 03:00 CEST at 01:00Z: 02:30 does not exist and fires at the
    # end of the gap (03:00 CEST = 01:00Z), then 03:30 CEST = 01:30Z.
    assert chain(timetable, Z("2017-03-25T23:00"), Z("2017-03-26T03:00")) == [
        Z("2017-03-25T23:30"),  # 00:30 CET
        Z("2017-03-26T00:30"),  # 01:30 CET
        Z("2017-03-26T01:00"),  # 02:30 missing: 03:00 CEST
        Z("2017-03-26T01:30"),  # 03:30 CEST
        Z("2017-03-26T02:30"),  # 04:30 CEST
    ]


def test_croniter_90_the_answer_does_not_depend_on_how_close_to_the_gap_you_ask() -> None:
    # croniter #90: "1 2 * * *" around 2020-03-29 (02:00 CET -> 03:00 CEST at 01:00Z) gave different
    # next/prev depending on whether it started at 01:58:55 or 01:59:55 local.
    timetable = CronTriggerTimetable("1 2 * * *", "Europe/Berlin")
    for asked in (Z("2020-03-29T00:58:55"), Z("2020-03-29T00:59:55"), Z("2020-03-28T12:00")):
        info = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None,
                                          start_date=asked, end_date=None, catchup=True, now=Z("2020-04-05T00:00"))
        assert info is not None
        assert info.logical_date == Z("2020-03-29T01:00")  # 02:01 missing: 03:00 CEST
        assert info.data_interval.start == Z("2020-03-28T01:01")  # 02:01 CET the day before
    assert fires("1 2 * * *", "Europe/Berlin", "2020-03-28T00:00", "2020-03-30T23:59") == [
        Z("2020-03-28T01:01"), Z("2020-03-29T01:00"), Z("2020-03-30T00:01")]


def test_croniter_116_weekday_mornings_across_fall_back() -> None:
    # croniter #116: "0 8 * * 1-5" in America/New_York gave 09:00 from get_prev across 2018-11-04.
    timetable = CronTriggerTimetable("0 8 * * 1-5", "America/New_York")
    assert list(timetable.fire_times(Z("2018-11-01T00:00"), Z("2018-11-06T00:00"))) == [
        Z("2018-11-01T12:00"), Z("2018-11-02T12:00"),  # 08:00 EDT Thursday, Friday
        Z("2018-11-05T13:00"),  # 08:00 EST Monday
    ]
    # "prev" seen from Sunday 2018-11-04 05:00Z (01:00 EDT) is Friday 08:00 EDT, not 09:00.
    assert timetable.infer_manual_data_interval(run_after=Z("2018-11-04T05:00")).start == Z("2018-11-02T12:00")


def test_croniter_25_evening_run_keeps_its_wall_time_after_fall_back() -> None:
    # croniter #25: "00 20 * * *" in Europe/Paris from 2022-10-30 00:00 CEST gave 21:00 on 10-31.
    assert fires("00 20 * * *", "Europe/Paris", "2022-10-29T22:00", "2022-11-02T00:00") == [
        Z("2022-10-30T19:00"), Z("2022-10-31T19:00"), Z("2022-11-01T19:00")]  # 20:00 CET each day


def test_no_instant_twice_where_several_wall_times_collapse() -> None:
    # croniter's "same time twice". Berlin 2024-03-31 02:00 CET -> 03:00 CEST at 01:00Z: 02:00, 02:30
    # (missing) and 03:00 CEST (real) are all 01:00Z: one run; then 03:30 CEST = 01:30Z.
    assert fires("0,30 2,3 * * *", "Europe/Berlin", "2024-03-31T00:00", "2024-03-31T23:59") == [
        Z("2024-03-31T01:00"), Z("2024-03-31T01:30")]
    # Apia skipped all of 2011-12-30 (-10 -> +14 at 10:00Z): every minute of that day is one run.
    got = fires("* * * * *", "Pacific/Apia", "2011-12-30T09:58", "2011-12-30T10:02")
    assert got == [Z("2011-12-30T09:58"), Z("2011-12-30T09:59"), Z("2011-12-30T10:00"), Z("2011-12-30T10:01"),
                   Z("2011-12-30T10:02")]
    timetable = CronTriggerTimetable("*/15 * * * *", "Australia/Lord_Howe")
    runs = chain(timetable, Z("2024-10-05T12:00"), Z("2024-10-05T18:00"))
    assert len(runs) == len(set(runs)) == 25 and Z("2024-10-05T15:30") in runs


# --- chains of next_dagrun_info through every transition of a year ---------------------------------------

CHAIN_ZONES = ["America/New_York", "America/Los_Angeles", "Australia/Lord_Howe", "Pacific/Chatham",
               "America/Santiago", "America/Havana", "Europe/Dublin", "Africa/Casablanca", "Europe/Brussels"]
SPARSE = ["30 2 * * *", "0 7-8 * * *", "0 7,9 * * *", "20 */4 * * *", "30 1 * * 0", "0 0 * * *", "45 2 1 * *"]
DENSE = ["*/15 * * * *", "0 * * * *", "30 * * * *", "* 1-3 * * *", "0,30 0-3 * * *"]


def _changes(zone: str, year: int) -> list[datetime]:
    """The instants in ``year`` when the zone's UTC offset changes (hourly scan, then to the second)."""
    tz = ZoneInfo(zone)
    found = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    while t.year == year:
        following = t + HOUR
        if t.astimezone(tz).utcoffset() != following.astimezone(tz).utcoffset():
            low, high = t, following
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                if mid.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
                    low = mid
                else:
                    high = mid
            found.append(high)
        t = following
    return found


@pytest.mark.parametrize("zone", CHAIN_ZONES)
def test_a_year_of_catchup_runs_is_monotonic_and_equals_fire_times(zone: str) -> None:
    changes = _changes(zone, 2024)
    assert len(changes) >= 2
    start, end = Z("2024-01-01T00:00"), Z("2024-12-31T23:59")
    for expression in SPARSE:
        timetable = CronTriggerTimetable(expression, zone)
        assert chain(timetable, start, end) == list(timetable.fire_times(start, end)), expression
    for expression, change in itertools.product(DENSE, changes):  # dense ones: two days around each change
        timetable = CronTriggerTimetable(expression, zone)
        low, high = change - timedelta(days=1, minutes=7), change + timedelta(days=1)
        runs = chain(timetable, low, high)
        assert runs == list(timetable.fire_times(low, high)), (expression, change)
        assert len(runs) == len(set(runs))


@pytest.mark.parametrize("zone", CHAIN_ZONES)
def test_without_catchup_the_latest_due_run_and_no_oscillation_through_each_change(zone: str) -> None:
    for expression in ("*/15 * * * *", "0 * * * *", "30 2 * * *", "0 1 * * *", "20 */4 * * *", "0 0 * * *"):
        timetable = CronTriggerTimetable(expression, zone)
        for change in _changes(zone, 2024):
            start_date = change - timedelta(days=3)
            fire_list = list(timetable.fire_times(start_date, change + timedelta(days=2)))
            now = change - timedelta(hours=3)
            while now <= change + timedelta(hours=3):
                kwargs = {"start_date": start_date, "end_date": None, "catchup": False, "now": now}
                info = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None, **kwargs)
                assert info is not None
                assert info.logical_date == max(f for f in fire_list if f <= now)  # the latest due
                again = timetable.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None, **kwargs)
                assert again == info  # the same question, the same answer
                after = timetable.next_dagrun_info(last_automated_data_interval=info.data_interval,
                                                   last_logical_date=info.logical_date, **kwargs)
                assert after is not None and after.logical_date > info.logical_date  # fed back: strictly later
                assert after.logical_date == min(f for f in fire_list if f > info.logical_date)  # nothing due: the next
                now += timedelta(minutes=7)
