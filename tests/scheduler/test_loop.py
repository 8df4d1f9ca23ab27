"""Scheduler.run_once(now) with a fixed ``now`` on a migrated database, with real DAG files parsed in isolation.

The expected runs were worked out by hand: a ``@daily`` DAG (UTC) starting 2024-05-01
fires at midnight; at ``NOW`` (2024-05-11 12:00 UTC) its fire times 05-01 ... 05-11 are
due (11 runs), each with the data interval [previous midnight, its midnight].
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from scheduler.config import Settings
from scheduler.db import store
from scheduler.db.engine import session_scope
from scheduler.db.models import Dag, DagRun, SerializedDag
from scheduler.loop import Scheduler
from scheduler.states import DagRunState, DagRunType
from tests.scheduler.dagfolder import dag_source, folder_settings, make_folder, write

NOW = datetime(2024, 5, 11, 12, 0, tzinfo=UTC)


def day(d: int, month: int = 5, hour: int = 0) -> datetime:
    return datetime(2024, month, d, hour, tzinfo=UTC)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


@pytest.fixture
def settings(tmp_path: Path, folder: Path) -> Settings:
    return folder_settings(tmp_path, folder)


@pytest.fixture
def scheduler(db_engine: Engine, settings: Settings) -> Iterator[Scheduler]:
    with Scheduler(db_engine, settings) as s:
        yield s


def add_dag(scheduler: Scheduler, folder: Path, dag_id: str, *, paused: bool = False, **kwargs: object) -> None:
    """A DAG file in the folder, parsed, and (un)paused."""
    write(folder, f"{dag_id}.py", dag_source(dag_id, **kwargs))  # type: ignore[arg-type]
    scheduler.sync_dags(NOW)
    with session_scope(scheduler.engine) as session:
        store.set_paused(session, dag_id, paused)


def runs(engine: Engine, dag_id: str) -> list[DagRun]:
    with session_scope(engine, readonly=True) as session:
        query = select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date, DagRun.id)
        return list(session.scalars(query))


def scheduled_dates(engine: Engine, dag_id: str) -> list[datetime | None]:
    return [r.logical_date for r in runs(engine, dag_id) if r.run_type == DagRunType.SCHEDULED]


def get_dag(engine: Engine, dag_id: str) -> Dag:
    with session_scope(engine, readonly=True) as session:
        dag = store.get_dag(session, dag_id)
    assert dag is not None
    return dag


def test_paused_dag_gets_no_runs(scheduler: Scheduler, folder: Path, db_engine: Engine) -> None:
    add_dag(scheduler, folder, "paused", paused=True)
    scheduler.run_once(NOW)
    assert runs(db_engine, "paused") == []


def test_catchup_creates_every_missed_run_in_order(scheduler: Scheduler, folder: Path, db_engine: Engine) -> None:
    add_dag(scheduler, folder, "daily")
    delay = scheduler.run_once(NOW)

    created = runs(db_engine, "daily")
    assert [r.logical_date for r in created] == [day(d) for d in range(1, 12)]
    for run in created:
        assert run.logical_date is not None
        assert run.run_id == f"scheduled__{run.logical_date.isoformat()}"
        assert run.run_type == DagRunType.SCHEDULED
        assert (run.data_interval_start, run.data_interval_end) == (run.logical_date - timedelta(days=1), run.logical_date)
        assert run.run_after == run.logical_date
        assert run.conf == {} and run.external_trigger is False
        assert run.state == DagRunState.RUNNING and run.start_date == NOW and run.queued_at == NOW
    dag = get_dag(db_engine, "daily")
    assert (dag.next_dagrun, dag.next_dagrun_create_after) == (day(12), day(12))
    assert (dag.next_dagrun_data_interval_start, dag.next_dagrun_data_interval_end) == (day(11), day(12))
    assert delay == 12 * 3600


def test_same_now_again_creates_nothing(scheduler: Scheduler, folder: Path, db_engine: Engine) -> None:
    add_dag(scheduler, folder, "daily")
    scheduler.run_once(NOW)
    before = [(r.id, r.run_id, r.state) for r in runs(db_engine, "daily")]
    scheduler.run_once(NOW)
    assert [(r.id, r.run_id, r.state) for r in runs(db_engine, "daily")] == before


def test_catchup_false_creates_only_the_latest(scheduler: Scheduler, folder: Path, db_engine: Engine) -> None:
    add_dag(scheduler, folder, "latest", catchup=False)
    scheduler.run_once(NOW)
    assert scheduled_dates(db_engine, "latest") == [day(11)]
    scheduler.run_once(NOW + timedelta(days=1))
    assert scheduled_dates(db_engine, "latest") == [day(11), day(12)]


def test_max_active_runs_holds_back_new_runs_until_some_finish(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    add_dag(scheduler, folder, "narrow", max_active_runs=2)
    scheduler.run_once(NOW)
    scheduler.run_once(NOW + timedelta(minutes=1))
    assert [(r.logical_date, r.state) for r in runs(db_engine, "narrow")] == [
        (day(1), DagRunState.RUNNING),
        (day(2), DagRunState.RUNNING),
    ]
    dag = get_dag(db_engine, "narrow")
    assert dag.next_dagrun == day(3)  # due, waiting for a free slot

    with session_scope(db_engine) as session:
        session.execute(update(DagRun).where(DagRun.dag_id == "narrow").values(state=DagRunState.SUCCESS))
    scheduler.run_once(NOW + timedelta(minutes=2))
    assert [(r.logical_date, r.state) for r in runs(db_engine, "narrow")] == [
        (day(1), DagRunState.SUCCESS),
        (day(2), DagRunState.SUCCESS),
        (day(3), DagRunState.RUNNING),
        (day(4), DagRunState.RUNNING),
    ]


def test_queued_runs_start_oldest_first_within_max_active_runs(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    add_dag(scheduler, folder, "manual_queue", max_active_runs=1)
    with session_scope(db_engine) as session:
        store.set_paused(session, "manual_queue", True)
        for d in (5, 3, 4):
            store.create_dag_run(
                session, dag_id="manual_queue", run_id=f"manual_{d}", run_type=DagRunType.MANUAL,
                logical_date=day(d), data_interval=None, conf={}, state=DagRunState.QUEUED,
                run_after=NOW, now=NOW, external_trigger=True,
            )
        store.set_paused(session, "manual_queue", False)
    scheduler.start_queued_runs(NOW)
    assert {r.run_id: r.state for r in runs(db_engine, "manual_queue")} == {
        "manual_3": DagRunState.RUNNING,
        "manual_4": DagRunState.QUEUED,
        "manual_5": DagRunState.QUEUED,
    }


def test_manual_run_at_a_scheduled_logical_date_coexists(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    add_dag(scheduler, folder, "both", catchup=False)
    with session_scope(db_engine) as session:
        store.create_dag_run(
            session, dag_id="both", run_id="manual__by_hand", run_type=DagRunType.MANUAL,
            logical_date=day(11), data_interval=None, conf={"x": 1}, state=DagRunState.QUEUED,
            run_after=NOW, now=NOW, external_trigger=True,
        )
    scheduler.run_once(NOW)
    assert sorted((r.run_type.value, r.logical_date) for r in runs(db_engine, "both")) == [
        ("manual", day(11)),
        ("scheduled", day(11)),
    ]


def test_a_slot_taken_by_someone_else_is_skipped_not_an_error(
    scheduler: Scheduler, folder: Path, db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_dag(scheduler, folder, "raced")
    scheduler.run_once(NOW)
    # As if this scheduler had not seen the runs another one (or its earlier life) created.
    monkeypatch.setattr(store, "latest_slotted_dag_run", lambda session, dag_id: None)
    scheduler.run_once(NOW + timedelta(days=1))
    assert scheduled_dates(db_engine, "raced") == [day(d) for d in range(1, 13)]


def test_an_edited_schedule_is_followed_without_duplicates(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    add_dag(scheduler, folder, "edited")
    scheduler.run_once(NOW)
    write(folder, "edited.py", dag_source("edited", schedule="0 12 * * *"))
    scheduler.run_once(NOW + timedelta(days=1))
    dates = scheduled_dates(db_engine, "edited")
    assert dates == [day(d) for d in range(1, 12)] + [day(11, hour=12), day(12, hour=12)]
    assert len({r.run_id for r in runs(db_engine, "edited")}) == len(dates)
    assert get_dag(db_engine, "edited").next_dagrun == day(13, hour=12)


def test_a_broken_stored_timetable_does_not_stop_other_dags(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    add_dag(scheduler, folder, "broken")
    add_dag(scheduler, folder, "healthy", catchup=False)
    with session_scope(db_engine) as session:
        row = session.get(SerializedDag, "broken")
        assert row is not None
        row.data = {**row.data, "timetable": {"__type": "no such timetable"}}
    scheduler.run_once(NOW)
    assert runs(db_engine, "broken") == []
    assert scheduled_dates(db_engine, "healthy") == [day(11)]
