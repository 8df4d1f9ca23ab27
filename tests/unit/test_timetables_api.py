"""make_timetable, parsing errors, summaries, REST shapes, serialization and descriptions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler.exceptions import ScheduleError
from scheduler.timetables import (
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    DeltaTimetable,
    NullTimetable,
    OnceTimetable,
    Timetable,
    deserialize_timetable,
    make_timetable,
    parse_cron,
)
from scheduler.timetables.describe import describe_delta


def Z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- what each schedule becomes ------------------------------------------------------------

@pytest.mark.parametrize(
    ("schedule", "cls", "summary", "api"),
    [
        (None, NullTimetable, None, None),
        ("@once", OnceTimetable, "@once", {"__type": "CronExpression", "value": "@once"}),
        ("0 6 * * *", CronTriggerTimetable, "0 6 * * *", {"__type": "CronExpression", "value": "0 6 * * *"}),
        ("  @daily ", CronTriggerTimetable, "@daily", {"__type": "CronExpression", "value": "@daily"}),
        ("@Hourly", CronTriggerTimetable, "@Hourly", {"__type": "CronExpression", "value": "@Hourly"}),
        (timedelta(days=1), DeltaTimetable, "1 day, 0:00:00",
         {"__type": "TimeDelta", "days": 1, "seconds": 0, "microseconds": 0}),
        (timedelta(hours=1, minutes=30, microseconds=5), DeltaTimetable, "1:30:00.000005",
         {"__type": "TimeDelta", "days": 0, "seconds": 5400, "microseconds": 5}),
    ],
)
def test_make_timetable(schedule: object, cls: type, summary: str | None, api: dict | None) -> None:
    timetable = make_timetable(schedule, UTC)  # type: ignore[arg-type]
    assert type(timetable) is cls
    assert timetable.summary == summary
    assert timetable.api_schedule() == api


def test_flags() -> None:
    assert (make_timetable("@daily", "UTC").periodic, make_timetable("@daily", "UTC").can_be_scheduled) == (True, True)
    assert (OnceTimetable().periodic, OnceTimetable().can_be_scheduled) == (False, True)
    assert (DeltaTimetable(timedelta(hours=1)).periodic, DeltaTimetable(timedelta(hours=1)).can_be_scheduled) == (True, True)
    assert (NullTimetable().periodic, NullTimetable().can_be_scheduled) == (False, False)


def test_a_timetable_passes_through_and_keeps_its_own_zone() -> None:
    mine = CronDataIntervalTimetable("0 6 * * *", "Europe/Berlin")
    assert make_timetable(mine, UTC) is mine
    assert mine.api_schedule() == {"__type": "CronExpression", "value": "0 6 * * *"}


@pytest.mark.parametrize(
    ("preset", "fires"),
    [
        ("@hourly", ["2024-05-15T00:00", "2024-05-15T01:00"]),
        ("@daily", ["2024-05-15T00:00", "2024-05-16T00:00"]),
        ("@midnight", ["2024-05-15T00:00", "2024-05-16T00:00"]),
        ("@weekly", ["2024-05-19T00:00", "2024-05-26T00:00"]),
        ("@monthly", ["2024-06-01T00:00", "2024-07-01T00:00"]),
        ("@quarterly", ["2024-07-01T00:00", "2024-10-01T00:00"]),
        ("@yearly", ["2025-01-01T00:00", "2026-01-01T00:00"]),
        ("@annually", ["2025-01-01T00:00", "2026-01-01T00:00"]),
    ],
)
def test_presets_are_the_usual_expressions(preset: str, fires: list[str]) -> None:
    runs = make_timetable(preset, "UTC").fire_times(Z("2024-05-15T00:00"), Z("2030-01-01T00:00"))
    assert [next(runs), next(runs)] == [Z(x) for x in fires]


# --- cron syntax ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("expression", "minutes", "hours", "doms", "months", "dows"),
    [
        ("* * * * *", range(60), range(24), range(1, 32), range(1, 13), range(7)),
        ("5,10-12,*/20 */6 1-5/2 jan-MAR,Dec sun,6", [0, 5, 10, 11, 12, 20, 40], [0, 6, 12, 18], [1, 3, 5],
         [1, 2, 3, 12], [0, 6]),
        ("7/15 5/6 10/10 2/5 1/3", [7, 22, 37, 52], [5, 11, 17, 23], [10, 20, 30], [2, 7, 12], [1, 4]),
        ("0 0 * * 7", [0], [0], range(1, 32), range(1, 13), [0]),
        ("0 0 * * 5-7", [0], [0], range(1, 32), range(1, 13), [0, 5, 6]),
        ("0 0 * * MON-FRI", [0], [0], range(1, 32), range(1, 13), [1, 2, 3, 4, 5]),
        ("*/90 3-3 * * *", [0], [3], range(1, 32), range(1, 13), range(7)),
    ],
)
def test_fields_expand(expression: str, minutes, hours, doms, months, dows) -> None:  # type: ignore[no-untyped-def]
    spec = parse_cron(expression)
    assert spec.minutes == tuple(minutes)
    assert spec.hours == tuple(hours)
    assert spec.days_of_month == frozenset(doms)
    assert spec.months == tuple(months)
    assert spec.days_of_week == frozenset(dows)


def test_day_of_month_and_day_of_week_both_restricted_means_either() -> None:
    # June 2024: the 1st is a Saturday; Mondays are 3, 10, 17, 24.
    either = make_timetable("0 0 1 * 1", "UTC").fire_times(Z("2024-06-01T00:00"), Z("2024-06-30T00:00"))
    assert [d.day for d in either] == [1, 3, 10, 17, 24]
    step = make_timetable("0 0 */10 * 1", "UTC").fire_times(Z("2024-06-01T00:00"), Z("2024-06-30T00:00"))
    assert [d.day for d in step] == [1, 3, 10, 11, 17, 21, 24]  # */10 is restricted: 1, 11, 21 or Mondays
    only_days = make_timetable("0 0 1,15 * *", "UTC").fire_times(Z("2024-06-01T00:00"), Z("2024-06-30T00:00"))
    assert [d.day for d in only_days] == [1, 15]
    only_mondays = make_timetable("0 0 * * 1", "UTC").fire_times(Z("2024-06-01T00:00"), Z("2024-06-30T00:00"))
    assert [d.day for d in only_mondays] == [3, 10, 17, 24]


def test_thirty_first_skips_short_months() -> None:
    runs = make_timetable("0 0 31 * *", "UTC").fire_times(Z("2024-01-01T00:00"), Z("2024-12-31T23:59"))
    assert [d.month for d in runs] == [1, 3, 5, 7, 8, 10, 12]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "'61 * * * *': minute field: 61 out of range 0-59"),
        ("* 24 * * *", "'* 24 * * *': hour field: 24 out of range 0-23"),
        ("0 0 0 * *", "'0 0 0 * *': day-of-month field: 0 out of range 1-31"),
        ("0 0 * 13 *", "'0 0 * 13 *': month field: 13 out of range 1-12"),
        ("0 0 * * 8", "'0 0 * * 8': day-of-week field: 8 out of range 0-7"),
        ("0 0 0 6 * * *", "'0 0 0 6 * * *': expected 5 fields (minute hour day-of-month month day-of-week), got 7; "
                          "a seconds or year field is not supported"),
        ("0 0 6 * * *", "got 6; a seconds or year field is not supported"),
        ("* * * *", "'* * * *': expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("@reboot", "'@reboot': not supported: updraft schedules by the clock, not at machine start"),
        ("@fortnightly", "'@fortnightly': unknown preset; use one of @hourly, @daily"),
        ("", "empty cron expression; use schedule=None"),
        ("   ", "empty cron expression"),
        ("*/0 * * * *", "'*/0 * * * *': minute field: step 0 in '*/0' must be at least 1"),
        ("*/x * * * *", "minute field: step 'x' in '*/x' is not a whole number"),
        ("1,,2 * * * *", "minute field: empty item in the list"),
        ("5-2 * * * *", "minute field: range '5-2' runs backwards; write it as two ranges, e.g. '5-59,0-2'"),
        ("0 0 * * FRI-MON", "day-of-week field: range 'FRI-MON' runs backwards; write it as two ranges, e.g. '5-6,0-1'"),
        ("0 0 * FOO *", "month field: 'FOO' is neither a number nor a name (JAN-DEC)"),
        ("0 0 * * FOO", "day-of-week field: 'FOO' is neither a number nor a name (SUN-SAT)"),
        ("MON * * * *", "minute field: 'MON' is not a number"),
        ("1- * * * *", "minute field: a range or step is missing a number"),
        ("0 0 L * *", "day-of-month field: 'L': 'L' (last day) is not supported"),
        ("0 0 15W * *", "'W' (nearest weekday) is not supported"),
        ("0 0 * * 1#2", "'#' (nth weekday of the month) is not supported"),
        ("0 0 ? * *", "day-of-month field: '?' is not supported; use '*'"),
        ("H * * * *", "minute field: 'H' is not a number"),
        ("0 0 30 2 *", "'0 0 30 2 *': never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("garbage", "'garbage': expected 5 fields"),
    ],
)
def test_bad_expressions_say_what_and_why(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        make_timetable(expression, "UTC")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (5, "schedule 5: expected a cron expression, a preset such as '@daily', a timedelta, a Timetable or None"),
        (timedelta(0), "a timedelta schedule must be positive, got 0:00:00"),
        (-timedelta(hours=1), "a timedelta schedule must be positive, got -1 day, 23:00:00"),
    ],
)
def test_bad_schedules_say_what_and_why(schedule: object, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        make_timetable(schedule, "UTC")  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_a_zone_without_an_iana_name_or_an_unknown_zone_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="no IANA name"):
        make_timetable("0 6 * * *", timezone(timedelta(hours=2)))
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        make_timetable("0 6 * * *", "Mars/Olympus")


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


# --- serialization ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "timetable",
    [
        NullTimetable(),
        OnceTimetable(),
        CronTriggerTimetable("0 6 * * 1-5", "Europe/Berlin"),
        CronTriggerTimetable("@daily", "UTC"),
        CronDataIntervalTimetable("*/15 * * * *", "America/New_York"),
        DeltaTimetable(timedelta(days=1, hours=2, microseconds=7)),
    ],
    ids=repr,
)
def test_serialization_round_trips_through_json(timetable: Timetable) -> None:
    data = json.loads(json.dumps(timetable.serialize()))
    again = deserialize_timetable(data)
    assert again == timetable
    assert type(again) is type(timetable)
    assert (again.summary, again.description, again.api_schedule()) == (
        timetable.summary, timetable.description, timetable.api_schedule())
    start, end = Z("2024-03-30T00:00"), Z("2024-04-01T00:00")
    assert list(again.fire_times(start, end)) == list(timetable.fire_times(start, end))


def test_serialized_cron_keeps_the_expression_and_zone() -> None:
    assert CronTriggerTimetable("@daily", "Asia/Kolkata").serialize() == {
        "__type": "cron", "expression": "@daily", "timezone": "Asia/Kolkata"}


def test_equality_and_hash() -> None:
    assert CronTriggerTimetable("0 6 * * *", "UTC") == make_timetable("0 6 * * *", UTC)
    assert CronTriggerTimetable("0 6 * * *", "UTC") != CronDataIntervalTimetable("0 6 * * *", "UTC")
    assert CronTriggerTimetable("0 6 * * *", "UTC") != CronTriggerTimetable("0 6 * * *", "Europe/Berlin")
    assert len({NullTimetable(), NullTimetable(), OnceTimetable()}) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"__type": "mystery"}, "unknown type 'mystery'"),
        ({}, "unknown type None"),
        ({"__type": "cron", "expression": "0 6 * * *"}, "missing or has a bad field"),
        ({"__type": "cron", "expression": "61 * * * *", "timezone": "UTC"}, "minute field: 61 out of range 0-59"),
        ({"__type": "delta", "days": 0, "seconds": 0, "microseconds": 0}, "must be positive"),
    ],
)
def test_bad_serialized_timetables_raise_schedule_error(data: dict, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        deserialize_timetable(data)
    assert message in str(caught.value)


# --- descriptions ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("expression", "zone", "text"),
    [
        ("0 6 * * 1-5", "Europe/Berlin", "At 06:00, Monday through Friday, Europe/Berlin"),
        ("* * * * *", "UTC", "Every minute, UTC"),
        ("*/15 * * * *", "UTC", "Every 15 minutes, UTC"),
        ("0 * * * *", "UTC", "Every hour at :00, UTC"),
        ("@hourly", "UTC", "Every hour at :00, UTC"),
        ("5,35 * * * *", "UTC", "Every hour at :05 and :35, UTC"),
        ("0 */2 * * *", "UTC", "Every 2 hours at :00, UTC"),
        ("@daily", "Asia/Kolkata", "At 00:00, Asia/Kolkata"),
        ("30 8,20 * * *", "UTC", "At 08:30 and 20:30, UTC"),
        ("0 9-17 * * *", "UTC", "Every hour at :00, from 09:00 through 17:00, UTC"),
        ("*/10 9-17 * * 1-5", "UTC", "Every 10 minutes, between 09:00 and 17:59, Monday through Friday, UTC"),
        ("0 0 1 * *", "UTC", "At 00:00, on day 1 of the month, UTC"),
        ("0 0 1,15 * *", "UTC", "At 00:00, on days 1 and 15 of the month, UTC"),
        ("0 0 1-7 * *", "UTC", "At 00:00, on days 1 through 7 of the month, UTC"),
        ("@weekly", "UTC", "At 00:00, only on Sunday, UTC"),
        ("0 12 * * SAT,SUN", "UTC", "At 12:00, on Saturday and Sunday, UTC"),
        ("0 12 * * 5-7", "UTC", "At 12:00, Friday through Sunday, UTC"),
        ("0 0 1 * 1", "UTC", "At 00:00, on day 1 of the month or on Monday, UTC"),
        ("@yearly", "UTC", "At 00:00, on day 1 of the month, only in January, UTC"),
        ("@quarterly", "UTC", "At 00:00, on day 1 of the month, in January, April, July and October, UTC"),
        ("0 6 * 6-8 *", "UTC", "At 06:00, June through August, UTC"),
        ("*/7 * * * *", "Europe/Berlin", "Cron: */7 * * * * (Europe/Berlin)"),
        ("0 0 */2 * *", "UTC", "Cron: 0 0 */2 * * (UTC)"),
        ("23 0-20/2 * * *", "UTC", "Cron: 23 0-20/2 * * * (UTC)"),
    ],
)
def test_cron_descriptions(expression: str, zone: str, text: str) -> None:
    assert make_timetable(expression, zone).description == text


def test_other_descriptions() -> None:
    assert NullTimetable().description == "Never, external triggers only"
    assert OnceTimetable().description == "Once"
    assert DeltaTimetable(timedelta(hours=2)).description == "Every 2 hours"


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=1), "Every day"),
        (timedelta(hours=2), "Every 2 hours"),
        (timedelta(minutes=1), "Every minute"),
        (timedelta(seconds=45), "Every 45 seconds"),
        (timedelta(hours=1, minutes=30), "Every 1 hour and 30 minutes"),
        (timedelta(days=2, hours=6, minutes=5), "Every 2 days, 6 hours and 5 minutes"),
        (timedelta(milliseconds=1500), "Every 0:00:01.500000"),
    ],
)
def test_delta_descriptions(delta: timedelta, text: str) -> None:
    assert describe_delta(delta) == text
