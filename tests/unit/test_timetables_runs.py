"""next_dagrun_info and manual data intervals, scenario by scenario, for every timetable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.timetables import (
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    DagRunInfo,
    DataInterval,
    DeltaTimetable,
    NullTimetable,
    OnceTimetable,
    Timetable,
    make_timetable,
)


def Z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def nxt(timetable: Timetable, *, now: str, start: str | None = "2024-01-01T00:00", end: str | None = None,
        last: DagRunInfo | None = None, catchup: bool = True, by: str = "both") -> DagRunInfo | None:
    return timetable.next_dagrun_info(
        last_automated_data_interval=last.data_interval if last and by in ("both", "interval") else None,
        last_logical_date=last.logical_date if last and by in ("both", "date") else None,
        start_date=Z(start) if start else None,
        end_date=Z(end) if end else None,
        catchup=catchup,
        now=Z(now),
    )


def run(logical: str, start: str, end: str, after: str | None = None) -> DagRunInfo:
    return DagRunInfo(Z(logical), DataInterval(Z(start), Z(end)), Z(after or logical))


DAILY_6 = CronTriggerTimetable("0 6 * * *", "UTC")


# --- cron trigger (the default) --------------------------------------------------------------

def test_first_run_is_the_first_fire_time_at_or_after_start_and_its_interval_starts_before_start() -> None:
    assert nxt(DAILY_6, now="2024-01-10T00:00") == run("2024-01-01T06:00", "2023-12-31T06:00", "2024-01-01T06:00")


def test_a_start_date_on_a_fire_time_is_the_first_run() -> None:
    assert nxt(DAILY_6, now="2024-01-10T00:00", start="2024-01-01T06:00").logical_date == Z("2024-01-01T06:00")  # type: ignore[union-attr]


@pytest.mark.parametrize("by", ["both", "date", "interval"])
def test_catchup_takes_the_fire_time_after_the_last_run_whichever_way_it_is_given(by: str) -> None:
    last = run("2024-01-01T06:00", "2023-12-31T06:00", "2024-01-01T06:00")
    assert nxt(DAILY_6, now="2024-01-10T00:00", last=last, by=by) == run("2024-01-02T06:00", "2024-01-01T06:00", "2024-01-02T06:00")


def test_without_catchup_the_latest_due_fire_time_is_next() -> None:
    assert nxt(DAILY_6, now="2024-01-10T07:00", catchup=False) == run("2024-01-10T06:00", "2024-01-09T06:00", "2024-01-10T06:00")
    assert nxt(DAILY_6, now="2024-01-10T05:59", catchup=False).logical_date == Z("2024-01-09T06:00")  # type: ignore[union-attr]
    assert nxt(DAILY_6, now="2024-01-10T06:00", catchup=False).logical_date == Z("2024-01-10T06:00")  # type: ignore[union-attr]


def test_without_catchup_nothing_due_yet_gives_the_next_future_fire_time() -> None:
    last = run("2024-01-10T06:00", "2024-01-09T06:00", "2024-01-10T06:00")
    assert nxt(DAILY_6, now="2024-01-10T07:00", last=last, catchup=False).run_after == Z("2024-01-11T06:00")  # type: ignore[union-attr]
    future_start = nxt(DAILY_6, now="2024-01-10T07:00", start="2024-02-01T00:00", catchup=False)
    assert future_start is not None and future_start.logical_date == Z("2024-02-01T06:00")


def test_without_catchup_never_goes_back_before_the_last_run() -> None:
    last = run("2024-01-20T06:00", "2024-01-19T06:00", "2024-01-20T06:00")  # e.g. the clock moved back
    assert nxt(DAILY_6, now="2024-01-10T07:00", last=last, catchup=False).logical_date == Z("2024-01-21T06:00")  # type: ignore[union-attr]


def test_nothing_after_end_date() -> None:
    last = run("2024-01-05T06:00", "2024-01-04T06:00", "2024-01-05T06:00")
    assert nxt(DAILY_6, now="2024-02-01T00:00", end="2024-01-05T12:00", last=last) is None
    assert nxt(DAILY_6, now="2024-02-01T00:00", end="2024-01-06T06:00", last=last).logical_date == Z("2024-01-06T06:00")  # type: ignore[union-attr]
    assert nxt(DAILY_6, now="2024-02-01T00:00", start="2024-03-01T00:00", end="2024-02-15T00:00") is None


def test_without_catchup_an_ended_dag_gets_its_latest_run_before_end_date() -> None:
    assert nxt(DAILY_6, now="2024-02-01T00:00", end="2024-01-05T12:00", catchup=False).logical_date == Z("2024-01-05T06:00")  # type: ignore[union-attr]


def test_no_start_date_and_no_runs_schedules_the_latest_due_fire_time() -> None:
    for catchup in (True, False):
        info = nxt(DAILY_6, now="2024-01-10T07:00", start=None, catchup=catchup)
        assert info is not None and info.logical_date == Z("2024-01-10T06:00")


def test_catchup_across_spring_forward_in_berlin_chains_intervals() -> None:
    timetable = CronTriggerTimetable("30 2 * * *", "Europe/Berlin")
    last = None
    runs = []
    for _ in range(4):
        last = nxt(timetable, now="2024-05-01T00:00", start="2024-03-29T00:00", last=last)
        assert last is not None
        runs.append(last)
    assert runs == [
        run("2024-03-29T01:30", "2024-03-28T01:30", "2024-03-29T01:30"),
        run("2024-03-30T01:30", "2024-03-29T01:30", "2024-03-30T01:30"),
        run("2024-03-31T01:00", "2024-03-30T01:30", "2024-03-31T01:00"),  # 02:30 missing: 03:00 CEST
        run("2024-04-01T00:30", "2024-03-31T01:00", "2024-04-01T00:30"),
    ]


def test_after_the_first_pass_of_an_overlap_the_next_run_is_later_never_earlier() -> None:
    fixed = CronTriggerTimetable("30 1 * * *", "America/New_York")
    first_pass = run("2024-11-03T05:30", "2024-11-02T05:30", "2024-11-03T05:30")  # 01:30 EDT
    assert nxt(fixed, now="2024-11-10T00:00", last=first_pass).logical_date == Z("2024-11-04T06:30")  # type: ignore[union-attr]
    wildcard = CronTriggerTimetable("*/30 * * * *", "America/New_York")
    following = nxt(wildcard, now="2024-11-10T00:00", last=first_pass)
    assert following == run("2024-11-03T06:00", "2024-11-03T05:30", "2024-11-03T06:00")  # 01:00 EST


def test_manual_interval_runs_from_the_previous_fire_time() -> None:
    assert DAILY_6.infer_manual_data_interval(run_after=Z("2024-01-10T10:00")) == DataInterval(Z("2024-01-10T06:00"), Z("2024-01-10T10:00"))
    assert DAILY_6.infer_manual_data_interval(run_after=Z("2024-01-10T06:00")) == DataInterval(Z("2024-01-09T06:00"), Z("2024-01-10T06:00"))


def test_sparse_expressions_find_their_neighbours() -> None:
    leap = CronTriggerTimetable("0 0 29 2 *", "UTC")
    info = nxt(leap, now="2030-01-01T00:00", start="2097-01-01T00:00")
    assert info == run("2104-02-29T00:00", "2096-02-29T00:00", "2104-02-29T00:00")


def test_datetimes_in_other_zones_are_accepted_and_results_are_utc() -> None:
    info = DAILY_6.next_dagrun_info(
        last_automated_data_interval=None, last_logical_date=None,
        start_date=datetime(2024, 1, 1, 7, 0, tzinfo=ZoneInfo("Europe/Berlin")),  # 06:00Z
        end_date=None, catchup=True, now=datetime(2024, 1, 2, tzinfo=ZoneInfo("Asia/Tokyo")),
    )
    assert info is not None and info.logical_date == Z("2024-01-01T06:00") and info.logical_date.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        DAILY_6.next_dagrun_info(last_automated_data_interval=None, last_logical_date=None,
                                 start_date=datetime(2024, 1, 1), end_date=None, catchup=True, now=Z("2024-01-02T00:00"))
    with pytest.raises(ValueError, match="naive"):
        list(DAILY_6.fire_times(datetime(2024, 1, 1), Z("2024-01-02T00:00")))


# --- cron data interval (Airflow 2 style, opt-in) -----------------------------------------------

MIDNIGHT = CronDataIntervalTimetable("0 0 * * *", "UTC")


def test_data_interval_first_run_covers_the_first_whole_interval_and_runs_at_its_end() -> None:
    assert nxt(MIDNIGHT, now="2024-01-10T00:00") == run("2024-01-01T00:00", "2024-01-01T00:00", "2024-01-02T00:00", "2024-01-02T00:00")
    assert nxt(MIDNIGHT, now="2024-01-10T00:00", start="2024-01-01T12:00").logical_date == Z("2024-01-02T00:00")  # type: ignore[union-attr]


@pytest.mark.parametrize("by", ["both", "date", "interval"])
def test_data_interval_catchup_follows_the_last_interval(by: str) -> None:
    last = run("2024-01-01T00:00", "2024-01-01T00:00", "2024-01-02T00:00", "2024-01-02T00:00")
    assert nxt(MIDNIGHT, now="2024-01-10T00:00", last=last, by=by) == run(
        "2024-01-02T00:00", "2024-01-02T00:00", "2024-01-03T00:00", "2024-01-03T00:00")


def test_data_interval_without_catchup_takes_the_latest_complete_interval() -> None:
    assert nxt(MIDNIGHT, now="2024-01-10T12:00", catchup=False) == run(
        "2024-01-09T00:00", "2024-01-09T00:00", "2024-01-10T00:00", "2024-01-10T00:00")
    assert nxt(MIDNIGHT, now="2024-01-10T00:00", catchup=False).logical_date == Z("2024-01-09T00:00")  # type: ignore[union-attr]
    last = run("2024-01-09T00:00", "2024-01-09T00:00", "2024-01-10T00:00")
    assert nxt(MIDNIGHT, now="2024-01-10T12:00", last=last, catchup=False).run_after == Z("2024-01-11T00:00")  # type: ignore[union-attr]


def test_data_interval_end_date_bounds_the_interval_start() -> None:
    last = run("2024-01-04T00:00", "2024-01-04T00:00", "2024-01-05T00:00")
    assert nxt(MIDNIGHT, now="2024-02-01T00:00", end="2024-01-05T00:00", last=last).logical_date == Z("2024-01-05T00:00")  # type: ignore[union-attr]
    assert nxt(MIDNIGHT, now="2024-02-01T00:00", end="2024-01-04T23:00", last=last) is None
    assert nxt(MIDNIGHT, now="2024-02-01T00:00", end="2024-01-05T12:00", catchup=False).logical_date == Z("2024-01-05T00:00")  # type: ignore[union-attr]


def test_data_interval_manual_run_covers_the_latest_complete_interval() -> None:
    assert MIDNIGHT.infer_manual_data_interval(run_after=Z("2024-01-10T12:00")) == DataInterval(Z("2024-01-09T00:00"), Z("2024-01-10T00:00"))


# --- timedelta -----------------------------------------------------------------------------

SIX_HOURS = DeltaTimetable(timedelta(hours=6))


def test_delta_fires_at_start_date_and_every_delta_after() -> None:
    first = nxt(SIX_HOURS, now="2024-01-10T00:00")
    assert first == run("2024-01-01T00:00", "2023-12-31T18:00", "2024-01-01T00:00")
    assert nxt(SIX_HOURS, now="2024-01-10T00:00", last=first) == run("2024-01-01T06:00", "2024-01-01T00:00", "2024-01-01T06:00")
    assert list(SIX_HOURS.fire_times(Z("2024-01-01T00:00"), Z("2024-01-01T18:00"))) == [
        Z("2024-01-01T00:00"), Z("2024-01-01T06:00"), Z("2024-01-01T12:00"), Z("2024-01-01T18:00")]


def test_delta_without_catchup_takes_the_latest_grid_point() -> None:
    assert nxt(SIX_HOURS, now="2024-01-02T13:00", catchup=False).logical_date == Z("2024-01-02T12:00")  # type: ignore[union-attr]
    last = run("2024-01-02T12:00", "2024-01-02T06:00", "2024-01-02T12:00")
    assert nxt(SIX_HOURS, now="2024-01-02T13:00", last=last, catchup=False).logical_date == Z("2024-01-02T18:00")  # type: ignore[union-attr]
    assert nxt(SIX_HOURS, now="2023-12-01T00:00", catchup=False).logical_date == Z("2024-01-01T00:00")  # type: ignore[union-attr]


def test_delta_counts_elapsed_time_across_daylight_saving() -> None:
    daily = DeltaTimetable(timedelta(days=1))
    berlin = ZoneInfo("Europe/Berlin")
    info = daily.next_dagrun_info(
        last_automated_data_interval=None, last_logical_date=datetime(2024, 3, 30, 12, 0, tzinfo=berlin),
        start_date=None, end_date=None, catchup=True, now=Z("2024-04-10T00:00"))
    assert info is not None and info.logical_date == Z("2024-03-31T11:00")  # 13:00 CEST: 24 hours later


def test_delta_end_date_and_missing_anchor() -> None:
    last = run("2024-01-01T18:00", "2024-01-01T12:00", "2024-01-01T18:00")
    assert nxt(SIX_HOURS, now="2024-02-01T00:00", end="2024-01-01T23:59", last=last) is None
    assert nxt(SIX_HOURS, now="2024-02-01T00:00", start=None) is None
    assert SIX_HOURS.infer_manual_data_interval(run_after=Z("2024-01-05T10:00")) == DataInterval(Z("2024-01-05T04:00"), Z("2024-01-05T10:00"))


# --- @once and manual ---------------------------------------------------------------------------

def test_once_runs_once_at_start_date_whatever_catchup_and_now() -> None:
    once = OnceTimetable()
    for catchup in (True, False):
        first = nxt(once, now="2030-01-01T00:00", start="2024-01-01T09:30", catchup=catchup)
        assert first == run("2024-01-01T09:30", "2024-01-01T09:30", "2024-01-01T09:30")
        assert nxt(once, now="2030-01-01T00:00", last=first, catchup=catchup) is None
        assert nxt(once, now="2030-01-01T00:00", last=first, catchup=catchup, by="date") is None
    assert nxt(once, now="2030-01-01T00:00", start=None) is None
    assert nxt(once, now="2030-01-01T00:00", start="2024-01-02T00:00", end="2024-01-01T00:00") is None
    assert list(once.fire_times(Z("2024-01-01T00:00"), Z("2025-01-01T00:00"))) == []


def test_manual_only_never_schedules() -> None:
    null = NullTimetable()
    assert nxt(null, now="2030-01-01T00:00") is None
    assert nxt(null, now="2030-01-01T00:00", catchup=False) is None
    assert null.infer_manual_data_interval(run_after=Z("2024-01-05T10:00")) == DataInterval.exact(Z("2024-01-05T10:00"))
    assert (null.can_be_scheduled, null.periodic) == (False, False)


def test_value_types_normalise_to_utc_and_refuse_nonsense() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    interval = DataInterval(datetime(2024, 1, 1, 1, 0, tzinfo=berlin), datetime(2024, 1, 1, 2, 0, tzinfo=berlin))
    assert interval == DataInterval(Z("2024-01-01T00:00"), Z("2024-01-01T01:00"))
    assert interval.start.tzinfo is UTC
    with pytest.raises(ValueError, match="before it starts"):
        DataInterval(Z("2024-01-02T00:00"), Z("2024-01-01T00:00"))
    with pytest.raises(ValueError, match="naive"):
        DataInterval(datetime(2024, 1, 1), Z("2024-01-01T00:00"))


def test_make_timetable_schedules_the_right_class() -> None:
    assert nxt(make_timetable("@daily", "UTC"), now="2024-01-03T00:00").logical_date == Z("2024-01-01T00:00")  # type: ignore[union-attr]
    assert nxt(make_timetable(timedelta(days=1), "UTC"), now="2024-01-03T00:00").logical_date == Z("2024-01-01T00:00")  # type: ignore[union-attr]


def test_a_start_date_moved_past_the_last_run_is_respected() -> None:
    last = run("2024-01-01T06:00", "2023-12-31T06:00", "2024-01-01T06:00")
    assert nxt(DAILY_6, now="2024-03-01T00:00", start="2024-02-01T12:00", last=last).logical_date == Z("2024-02-02T06:00")  # type: ignore[union-attr]
    assert nxt(MIDNIGHT, now="2024-03-01T00:00", start="2024-02-01T12:00", last=last).logical_date == Z("2024-02-02T00:00")  # type: ignore[union-attr]
    assert nxt(SIX_HOURS, now="2024-03-01T00:00", start="2024-02-01T12:00", last=last).logical_date == Z("2024-02-01T12:00")  # type: ignore[union-attr]


def test_fire_times_at_the_end_of_the_calendar_stop_cleanly() -> None:
    assert list(DAILY_6.fire_times(datetime(9999, 12, 31, tzinfo=UTC), datetime.max.replace(tzinfo=UTC))) == []
    assert nxt(DAILY_6, now="2024-01-01T00:00", start="9999-12-31T00:00") is None
    assert list(DAILY_6.fire_times(datetime.min.replace(tzinfo=UTC), datetime(1, 1, 5, tzinfo=UTC))) == []
