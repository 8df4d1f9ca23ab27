"""Backfill: the pure planner, the creator on SQLite and PostgreSQL (``db_engine``), and the real scheduler loop starting the runs.

Expected instants were worked out by hand. Europe/Berlin is UTC+1 until 2024-03-31
02:00 local and UTC+2 after; a daily 02:30 job falls in that night's gap and fires at
the first instant after it, 03:00 CEST = 01:00 UTC (DESIGN.md's policy).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from scheduler import DAG, EmptyOperator, Param
from scheduler.backfill import (
    Action,
    BackfillError,
    ExistingRun,
    ReprocessBehavior,
    backfill_infos,
    create_backfill,
    plan_backfill,
)
from scheduler.db import store
from scheduler.db.engine import session_scope
from scheduler.db.models import DagRun, TaskInstance
from scheduler.serialization import SerializedDAG, serialize_dag
from scheduler.states import DagRunState, DagRunType, TaskInstanceState

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def utc(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2024) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def make_dag(dag_id: str, schedule: Any = "@daily", **kwargs: Any) -> dict[str, Any]:
    """A DAG built in this process and serialized (what the parser would store)."""
    kwargs.setdefault("start_date", datetime(2024, 1, 1))
    with DAG(dag_id, schedule=schedule, **kwargs) as dag:
        EmptyOperator(task_id="extract") >> EmptyOperator(task_id="load")
    return serialize_dag(dag, fileloc=f"/dags/{dag_id}.py")


def sdag_of(data: dict[str, Any]) -> SerializedDAG:
    return SerializedDAG.from_dict(data)


def register(engine: Engine, data: dict[str, Any]) -> SerializedDAG:
    with session_scope(engine) as session:
        store.record_parse_result(
            session, fileloc=data["fileloc"], mtime=1.0, size=1, content_hash=data["dag_id"], dags=[data],
            error=None, source="# source\n", duration=0.1, now=NOW, paused_at_creation=False,
        )
    return sdag_of(data)


def add_run(engine: Engine, dag_id: str, logical_date: datetime, *, state: DagRunState,
            run_type: DagRunType = DagRunType.SCHEDULED, run_id: str | None = None,
            ti_states: tuple[TaskInstanceState, ...] = ()) -> str:
    """A run at ``logical_date`` in ``state`` (started and, if finished, ended), with task instances."""
    run_id = run_id or f"{run_type.value}__{logical_date.isoformat()}"
    with session_scope(engine) as session:
        run = store.create_dag_run(
            session, dag_id=dag_id, run_id=run_id, run_type=run_type, logical_date=logical_date,
            data_interval=None, conf={"orig": True}, state=state, run_after=logical_date,
            now=logical_date, external_trigger=run_type == DagRunType.MANUAL,
        )
        if state != DagRunState.QUEUED:
            run.start_date = logical_date + timedelta(minutes=1)
        if state.is_finished:
            run.end_date = logical_date + timedelta(minutes=2)
        for i, ti_state in enumerate(ti_states):
            session.add(TaskInstance(dag_id=dag_id, run_id=run_id, task_id=f"t{i}", state=ti_state, try_number=1,
                                     hostname="worker-1", start_date=logical_date, end_date=logical_date))
    return run_id


def runs(engine: Engine, dag_id: str) -> list[DagRun]:
    with session_scope(engine, readonly=True) as session:
        query = select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date, DagRun.id)
        return list(session.scalars(query))


def tis(engine: Engine, dag_id: str, run_id: str) -> list[TaskInstance]:
    with session_scope(engine, readonly=True) as session:
        query = select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        return list(session.scalars(query.order_by(TaskInstance.task_id)))


def backfill(engine: Engine, sdag: SerializedDAG, start: datetime, end: datetime, **kwargs: Any) -> list[tuple[str, str, str]]:
    kwargs.setdefault("now", NOW)
    with session_scope(engine) as session:
        done = create_backfill(session, sdag, start, end, **kwargs)
    return [(p.logical_date.isoformat(), p.run_id, p.outcome(dry_run=kwargs.get("dry_run", False))) for p in done]


def dates(infos: Any) -> list[datetime]:
    return [i.logical_date for i in infos]


# --- the pure half --------------------------------------------------------------------------------


def test_range_is_inclusive_at_both_ends() -> None:
    tt = sdag_of(make_dag("daily")).timetable
    assert dates(backfill_infos(tt, utc(3, 1), utc(3, 3))) == [utc(3, 1), utc(3, 2), utc(3, 3)]
    tiny = timedelta(microseconds=1)
    assert dates(backfill_infos(tt, utc(3, 1) + tiny, utc(3, 3) - tiny)) == [utc(3, 2)]
    assert dates(backfill_infos(tt, utc(3, 2), utc(3, 2))) == [utc(3, 2)]  # one instant, on a fire time
    assert backfill_infos(tt, utc(3, 2, 1), utc(3, 2, 23)) == []  # no fire time inside


def test_start_after_end_and_unschedulable_dags_are_refused() -> None:
    tt = sdag_of(make_dag("daily")).timetable
    with pytest.raises(BackfillError, match="is after the end date"):
        backfill_infos(tt, utc(3, 2), utc(3, 1))
    for schedule, shown in ((None, "schedule=None"), ("@once", "schedule='@once'")):
        sdag = sdag_of(make_dag("unschedulable", schedule))
        with pytest.raises(BackfillError, match=f"no time-based schedule \\({shown}\\)"):
            plan_backfill(sdag, utc(3, 1), utc(3, 3), {})


def test_catchup_start_date_and_end_date_of_the_dag_do_not_limit_the_range() -> None:
    data = make_dag("late", start_date=datetime(2025, 1, 1), end_date=datetime(2025, 6, 1), catchup=False)
    plan = plan_backfill(sdag_of(data), utc(2, 28), utc(3, 1), {})
    assert [(p.logical_date, p.action) for p in plan] == [(utc(2, 28), Action.CREATE), (utc(2, 29), Action.CREATE),
                                                          (utc(3, 1), Action.CREATE)]


def test_dst_gap_daily_0230_berlin_fires_once_after_the_gap() -> None:
    sdag = sdag_of(make_dag("berlin", "30 2 * * *", timezone="Europe/Berlin"))
    plan = plan_backfill(sdag, utc(3, 30), utc(4, 1, 1), {})
    assert [(p.logical_date, p.data_interval.start, p.data_interval.end, p.run_id) for p in plan] == [
        (utc(3, 30, 1, 30), utc(3, 29, 1, 30), utc(3, 30, 1, 30), "backfill__2024-03-30T01:30:00+00:00"),
        (utc(3, 31, 1), utc(3, 30, 1, 30), utc(3, 31, 1), "backfill__2024-03-31T01:00:00+00:00"),  # 03:00 CEST
        (utc(4, 1, 0, 30), utc(3, 31, 1), utc(4, 1, 0, 30), "backfill__2024-04-01T00:30:00+00:00"),
    ]


def test_timedelta_schedule_keeps_the_phase_of_its_grid_even_before_start_date() -> None:
    sdag = sdag_of(make_dag("six_hourly", timedelta(hours=6), start_date=datetime(2024, 1, 1, 1)))
    infos = backfill_infos(sdag.timetable, utc(12, 31, year=2023), utc(1, 1, 13), dag_start_date=sdag.start_date)
    assert dates(infos) == [utc(12, 31, h, year=2023) for h in (1, 7, 13, 19)] + [utc(1, 1, h) for h in (1, 7, 13)]
    assert infos[0].data_interval.start == utc(12, 30, 19, year=2023)


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [
        ("none", ["skip", "skip", "skip", "skip", "create"]),
        ("failed", ["skip", "skip", "skip", "requeue", "create"]),
        ("completed", ["skip", "skip", "requeue", "requeue", "create"]),
    ],
)
def test_planner_reprocess_behaviors(behavior: str, expected: list[str]) -> None:
    existing = {
        utc(3, d): ExistingRun(f"scheduled__{d}", state)
        for d, state in ((1, DagRunState.QUEUED), (2, DagRunState.RUNNING), (3, DagRunState.SUCCESS), (4, DagRunState.FAILED))
    }
    plan = plan_backfill(sdag_of(make_dag("daily")), utc(3, 1), utc(3, 5), existing, reprocess=behavior)
    assert [str(p.action) for p in plan] == expected
    assert [p.run_id for p in plan] == ["scheduled__1", "scheduled__2", "scheduled__3", "scheduled__4",
                                        "backfill__2024-03-05T00:00:00+00:00"]
    assert plan[0].outcome() == "skipped (exists, queued)" and plan[1].outcome() == "skipped (exists, running)"


# --- creating runs in the database ----------------------------------------------------------------


def test_creates_queued_backfill_runs_with_intervals_conf_and_run_after_now(db_engine: Engine) -> None:
    sdag = register(db_engine, make_dag("daily", params={"n": Param(1, type="integer")}))
    done = backfill(db_engine, sdag, utc(3, 1), utc(3, 3), conf={"n": 5})
    assert done == [(utc(3, d).isoformat(), f"backfill__{utc(3, d).isoformat()}", "created") for d in (1, 2, 3)]
    created = runs(db_engine, "daily")
    assert [r.logical_date for r in created] == [utc(3, 1), utc(3, 2), utc(3, 3)]
    for run in created:
        assert run.logical_date is not None
        assert run.run_type == DagRunType.BACKFILL and run.state == DagRunState.QUEUED
        assert run.run_id == f"backfill__{run.logical_date.isoformat()}"
        assert (run.data_interval_start, run.data_interval_end) == (run.logical_date - timedelta(days=1), run.logical_date)
        assert run.run_after == NOW and run.queued_at == NOW
        assert run.start_date is None and run.end_date is None
        assert run.conf == {"n": 5} and run.external_trigger is False


def test_running_twice_with_none_creates_nothing_the_second_time(db_engine: Engine) -> None:
    sdag = register(db_engine, make_dag("daily"))
    backfill(db_engine, sdag, utc(3, 1), utc(3, 2))
    before = [(r.id, r.run_id, r.state, r.queued_at) for r in runs(db_engine, "daily")]
    again = backfill(db_engine, sdag, utc(3, 1), utc(3, 3), now=NOW + timedelta(hours=1))
    assert [outcome for _, _, outcome in again] == ["skipped (exists, queued)", "skipped (exists, queued)", "created"]
    after = [(r.id, r.run_id, r.state, r.queued_at) for r in runs(db_engine, "daily")]
    assert after[:2] == before and len(after) == 3


@pytest.mark.parametrize("behavior", list(ReprocessBehavior))
def test_reprocess_behaviors_in_the_database(db_engine: Engine, behavior: ReprocessBehavior) -> None:
    sdag = register(db_engine, make_dag("daily"))
    tis_done = (TaskInstanceState.SUCCESS, TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED)
    for d, state in ((1, DagRunState.QUEUED), (2, DagRunState.RUNNING), (3, DagRunState.SUCCESS), (4, DagRunState.FAILED)):
        add_run(db_engine, "daily", utc(3, d), state=state, ti_states=tis_done if state.is_finished else ())
    # A finished backfill run holds its slot too.
    add_run(db_engine, "daily", utc(3, 5), state=DagRunState.FAILED, run_type=DagRunType.BACKFILL,
            ti_states=(TaskInstanceState.FAILED,))
    later = NOW + timedelta(days=1)

    done = backfill(db_engine, sdag, utc(3, 1), utc(3, 6), reprocess=behavior, now=later)

    requeued = {"none": set(), "failed": {4, 5}, "completed": {3, 4, 5}}[behavior.value]
    original = {1: "queued", 2: "running", 3: "success", 4: "failed", 5: "failed"}
    expected = [("requeued" if d in requeued else f"skipped (exists, {original[d]})") for d in range(1, 6)] + ["created"]
    assert [outcome for _, _, outcome in done] == expected
    assert [run_id for _, run_id, _ in done][2:5] == [
        "scheduled__2024-03-03T00:00:00+00:00", "scheduled__2024-03-04T00:00:00+00:00", "backfill__2024-03-05T00:00:00+00:00",
    ]
    by_day = {r.logical_date.day: r for r in runs(db_engine, "daily") if r.logical_date is not None}
    assert sorted(by_day) == [1, 2, 3, 4, 5, 6]
    for d in range(1, 6):
        run = by_day[d]
        assert run.conf == {"orig": True}  # re-queueing touches only the state fields
        if d in requeued:
            assert run.state == DagRunState.QUEUED and run.queued_at == later
            assert run.start_date is None and run.end_date is None
            assert run.run_type == (DagRunType.BACKFILL if d == 5 else DagRunType.SCHEDULED)
            for ti in tis(db_engine, "daily", run.run_id):
                assert ti.state == TaskInstanceState.NONE
                assert (ti.try_number, ti.hostname) == (1, "worker-1")  # reset, not deleted or rewritten
            assert len(tis(db_engine, "daily", run.run_id)) == (1 if d == 5 else 3)
        else:
            assert run.state == DagRunState(original[d]) and run.queued_at == utc(3, d)
            assert [ti.state for ti in tis(db_engine, "daily", run.run_id)] == (
                list(tis_done) if d in (3, 4) else [TaskInstanceState.FAILED] if d == 5 else []
            )
    assert by_day[6].run_type == DagRunType.BACKFILL and by_day[6].state == DagRunState.QUEUED


def test_a_manual_run_at_the_date_does_not_block_the_backfill(db_engine: Engine) -> None:
    sdag = register(db_engine, make_dag("daily"))
    add_run(db_engine, "daily", utc(3, 2), state=DagRunState.SUCCESS, run_type=DagRunType.MANUAL, run_id="by_hand")
    done = backfill(db_engine, sdag, utc(3, 2), utc(3, 2), reprocess="completed")
    assert done == [(utc(3, 2).isoformat(), "backfill__2024-03-02T00:00:00+00:00", "created")]
    kinds = sorted((r.run_type.value, r.state.value) for r in runs(db_engine, "daily"))
    assert kinds == [("backfill", "queued"), ("manual", "success")]


def test_dst_zone_dag_runs_are_stored_at_the_expected_instants(db_engine: Engine) -> None:
    sdag = register(db_engine, make_dag("berlin", "30 2 * * *", timezone="Europe/Berlin"))
    backfill(db_engine, sdag, datetime.fromisoformat("2024-03-30T00:00:00+01:00"),
             datetime.fromisoformat("2024-04-01T23:59:00+02:00"))
    stored = [(r.logical_date, r.data_interval_start, r.data_interval_end) for r in runs(db_engine, "berlin")]
    assert stored == [
        (utc(3, 30, 1, 30), utc(3, 29, 1, 30), utc(3, 30, 1, 30)),
        (utc(3, 31, 1), utc(3, 30, 1, 30), utc(3, 31, 1)),
        (utc(4, 1, 0, 30), utc(3, 31, 1), utc(4, 1, 0, 30)),
    ]


def test_dry_run_writes_nothing(db_engine: Engine) -> None:
    sdag = register(db_engine, make_dag("daily"))
    add_run(db_engine, "daily", utc(3, 1), state=DagRunState.FAILED, ti_states=(TaskInstanceState.FAILED,))
    done = backfill(db_engine, sdag, utc(3, 1), utc(3, 2), reprocess="failed", dry_run=True)
    assert [outcome for _, _, outcome in done] == ["would be requeued", "would be created"]
    (run,) = runs(db_engine, "daily")
    assert run.state == DagRunState.FAILED and run.end_date is not None
    assert [ti.state for ti in tis(db_engine, "daily", run.run_id)] == [TaskInstanceState.FAILED]


def test_a_failure_part_way_writes_nothing(db_engine: Engine) -> None:
    sdag = register(db_engine, make_dag("daily"))
    add_run(db_engine, "daily", utc(3, 1), state=DagRunState.FAILED)
    # A manual run that took the run_id the backfill wants for 03-03: the whole backfill fails.
    add_run(db_engine, "daily", utc(5, 5), state=DagRunState.SUCCESS, run_type=DagRunType.MANUAL,
            run_id="backfill__2024-03-03T00:00:00+00:00")
    with pytest.raises(store.DagRunAlreadyExists, match="DAGRun ID: 'backfill__2024-03-03"):
        backfill(db_engine, sdag, utc(3, 1), utc(3, 4), reprocess="failed")
    assert sorted((r.run_type.value, r.state.value) for r in runs(db_engine, "daily")) == [
        ("manual", "success"), ("scheduled", "failed"),
    ]


def test_requeue_is_a_compare_and_set(db_engine: Engine) -> None:
    register(db_engine, make_dag("daily"))
    add_run(db_engine, "daily", utc(3, 1), state=DagRunState.SUCCESS, ti_states=(TaskInstanceState.SUCCESS,))
    (run,) = runs(db_engine, "daily")
    with session_scope(db_engine) as session:
        assert store.requeue_dag_run(session, run.id, expected_state=DagRunState.FAILED, now=NOW) is False
        assert store.requeue_dag_run(session, run.id + 1000, expected_state=DagRunState.SUCCESS, now=NOW) is False
    (unchanged,) = runs(db_engine, "daily")
    assert unchanged.state == DagRunState.SUCCESS
    assert [ti.state for ti in tis(db_engine, "daily", run.run_id)] == [TaskInstanceState.SUCCESS]
    with session_scope(db_engine) as session:
        assert store.requeue_dag_run(session, run.id, expected_state=DagRunState.SUCCESS, now=NOW) is True
    assert [ti.state for ti in tis(db_engine, "daily", run.run_id)] == [TaskInstanceState.NONE]


# --- the real scheduler loop starts them under max_active_runs ---------------------------------------


LOOP_DAG = (
    "from datetime import datetime\n"
    "from scheduler import DAG, EmptyOperator\n"
    "with DAG('limited', schedule='@daily', start_date=datetime(2030, 1, 1), catchup=False, max_active_runs=2):\n"
    "    EmptyOperator(task_id='noop')\n"
)


@pytest.fixture
def loop_scheduler(tmp_path: Path, db_engine: Engine) -> Iterator[Any]:
    from scheduler.config import load_settings
    from scheduler.loop import Scheduler

    folder = tmp_path / "dags"
    folder.mkdir()
    path = folder / "limited.py"
    path.write_text(LOOP_DAG)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    settings = load_settings(
        {
            "UPDRAFT_HOME": str(tmp_path / "home"),
            "UPDRAFT__CORE__DAGS_FOLDER": str(folder),
            "UPDRAFT__CORE__DAGBAG_IMPORT_TIMEOUT": "20",
            "UPDRAFT__CORE__PARSING_PROCESSES": "1",
        },
        cwd=tmp_path,
    )
    with Scheduler(db_engine, settings) as scheduler:
        yield scheduler


def test_scheduler_starts_backfill_runs_at_most_max_active_runs_at_a_time(loop_scheduler: Any, db_engine: Engine) -> None:
    loop_scheduler.sync_dags(NOW)
    with session_scope(db_engine) as session:
        store.set_paused(session, "limited", False)
        sdag = SerializedDAG.from_dict(store.get_serialized_dag(session, "limited") or {})
    backfill(db_engine, sdag, utc(5, 1), utc(5, 5))

    def states() -> list[str]:
        return [r.state.value for r in runs(db_engine, "limited")]

    started: list[list[str]] = []
    for step in range(4):
        loop_scheduler.run_once(NOW + timedelta(minutes=step))
        started.append(states())
        with session_scope(db_engine) as session:  # the running runs finish before the next iteration
            session.execute(update(DagRun).where(DagRun.dag_id == "limited", DagRun.state == DagRunState.RUNNING)
                            .values(state=DagRunState.SUCCESS, end_date=NOW))
    assert started == [
        ["running", "running", "queued", "queued", "queued"],  # oldest first, two at a time
        ["success", "success", "running", "running", "queued"],
        ["success", "success", "success", "success", "running"],
        ["success"] * 5,
    ]
    assert {r.run_type for r in runs(db_engine, "limited")} == {DagRunType.BACKFILL}  # no scheduled run was added
