"""An idle Scheduler.run_once costs next to nothing: no writes, and a constant handful of reads.

What it must still notice without the file changing: a run finishing (the active-run
count changes) and a DAG's next run coming due. A DAG whose stored schedule cannot be
evaluated is recorded (``dag.schedule_error``) and left alone until its serialized hash
changes. Each test drives ``run_once`` with a fixed ``now`` on both backends.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from scheduler.config import Settings
from scheduler.db import store
from scheduler.db.engine import session_scope
from scheduler.db.models import Dag, DagRun, SerializedDag
from scheduler.loop import Scheduler
from scheduler.states import DagRunState
from tests.scheduler.dagfolder import dag_source, folder_settings, make_folder, write

NOW = datetime(2024, 5, 11, 12, 0, tzinfo=UTC)
#: The far-future DAGs' start date: their first run is due at TOMORROW.
TOMORROW = datetime(2024, 5, 12, tzinfo=UTC)
WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def day(d: int, month: int = 5, hour: int = 0) -> datetime:
    return datetime(2024, month, d, hour, tzinfo=UTC)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


@pytest.fixture
def settings(tmp_path: Path, folder: Path) -> Settings:
    # The longest the loop sleeps unless woken; long, so that only a watcher can pass the wake-up tests.
    return folder_settings(tmp_path, folder, UPDRAFT__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="30")


@pytest.fixture
def scheduler(db_engine: Engine, settings: Settings) -> Iterator[Scheduler]:
    with Scheduler(db_engine, settings) as s:
        yield s


def add_dags(scheduler: Scheduler, folder: Path, sources: dict[str, str]) -> None:
    """DAG files in the folder, parsed in one sync, all unpaused."""
    for dag_id, source in sources.items():
        write(folder, f"{dag_id}.py", source)
    scheduler.sync_dags(NOW)
    with session_scope(scheduler.engine) as session:
        for dag_id in sources:
            store.set_paused(session, dag_id, False)


def runs(engine: Engine, dag_id: str) -> list[DagRun]:
    with session_scope(engine, readonly=True) as session:
        query = select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date, DagRun.id)
        return list(session.scalars(query))


def get_dag(engine: Engine, dag_id: str) -> Dag:
    with session_scope(engine, readonly=True) as session:
        dag = store.get_dag(session, dag_id)
    assert dag is not None
    return dag


@dataclass
class Statements:
    """Every statement the engine sent, with its parameters."""

    seen: list[tuple[str, Any]] = field(default_factory=list)

    def verbs(self) -> list[str]:
        return [sql.lstrip().split(None, 1)[0].upper() for sql, _ in self.seen]

    def writes(self) -> list[str]:
        return [sql for sql, _ in self.seen if sql.lstrip().upper().startswith(WRITE_VERBS)]

    def selects(self) -> list[str]:
        return [sql for sql, _ in self.seen if sql.lstrip().upper().startswith(("SELECT", "WITH"))]

    def mentioning(self, value: str) -> list[str]:
        """Statements with ``value`` as one of their bound parameters (any paramstyle, executemany too)."""

        def values(parameters: Any) -> list[Any]:
            if isinstance(parameters, dict):
                return list(parameters.values())
            if isinstance(parameters, (list, tuple)):
                return [v for p in parameters for v in values(p)] if any(
                    isinstance(p, (dict, list, tuple)) for p in parameters
                ) else list(parameters)
            return [parameters]

        return [sql for sql, params in self.seen if value in values(params)]


@contextmanager
def recorded(engine: Engine) -> Iterator[Statements]:
    statements = Statements()

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def sqlite_data_version(engine: Engine) -> Generator[int, None, None]:
    """Yields ``PRAGMA data_version`` from one independent connection each time it is advanced."""
    connection = sqlite3.connect(str(engine.url.database), isolation_level=None)
    try:
        while True:
            yield int(connection.execute("PRAGMA data_version").fetchone()[0])
    finally:
        connection.close()


# --- an idle iteration writes nothing -------------------------------------------------------


def test_a_second_iteration_at_the_same_now_writes_nothing(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    add_dags(scheduler, folder, {
        "daily": dag_source("daily"),
        "narrow": dag_source("narrow", max_active_runs=2),
        "unscheduled": dag_source("unscheduled", schedule=None),  # type: ignore[arg-type]
    })
    with recorded(db_engine) as first:
        scheduler.run_once(NOW)
    assert first.writes(), "the first iteration should have created runs"
    assert len(runs(db_engine, "daily")) == 11 and len(runs(db_engine, "narrow")) == 2

    versions = sqlite_data_version(db_engine) if db_engine.dialect.name == "sqlite" else None
    before = next(versions) if versions is not None else None
    with recorded(db_engine) as second:
        scheduler.run_once(NOW)
    assert second.writes() == []
    assert second.seen, "the listener saw nothing: it is not recording"
    if versions is not None:
        # data_version changes for this connection only when another connection committed.
        assert next(versions) == before
        versions.close()


# --- the memo: unchanged DAGs that are not due cost no queries of their own ------------------


def idle_selects(scheduler: Scheduler, folder: Path, db_engine: Engine, count: int) -> int:
    sources = {f"later_{i:02d}": dag_source(f"later_{i:02d}", start=(2024, 5, 12)) for i in range(count)}
    add_dags(scheduler, folder, sources)
    scheduler.run_once(NOW)  # looks at each DAG once: nothing due before TOMORROW
    assert all(runs(db_engine, dag_id) == [] for dag_id in sources)
    with recorded(db_engine) as statements:
        delay = scheduler.run_once(NOW + timedelta(hours=1))
    assert statements.writes() == []
    assert delay == (TOMORROW - (NOW + timedelta(hours=1))).total_seconds()
    return len(statements.selects())


def test_idle_iteration_reads_do_not_grow_with_the_number_of_dags(
    db_engine: Engine, settings: Settings, folder: Path, tmp_path: Path
) -> None:
    with Scheduler(db_engine, settings) as few:
        selects_for_5 = idle_selects(few, folder, db_engine, 5)
    for path in folder.iterdir():
        path.unlink()
    with Scheduler(db_engine, settings) as many:
        many.sync_dags(NOW)  # forgets the five
        selects_for_50 = idle_selects(many, folder, db_engine, 50)
    assert selects_for_50 == selects_for_5
    assert selects_for_50 <= 6


def test_a_memoized_dag_gets_its_runs_when_they_come_due(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    sources = {f"later_{i:02d}": dag_source(f"later_{i:02d}", start=(2024, 5, 12)) for i in range(50)}
    add_dags(scheduler, folder, sources)
    scheduler.run_once(NOW)
    scheduler.run_once(NOW + timedelta(hours=1))
    assert all(runs(db_engine, dag_id) == [] for dag_id in sources)
    scheduler.run_once(TOMORROW + timedelta(minutes=1))
    for dag_id in sources:
        assert [(r.logical_date, r.state) for r in runs(db_engine, dag_id)] == [(TOMORROW, DagRunState.RUNNING)]
        assert get_dag(db_engine, dag_id).next_dagrun == day(13)


def test_a_finished_run_frees_a_slot_at_the_same_now(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    add_dags(scheduler, folder, {"narrow": dag_source("narrow", max_active_runs=2)})
    scheduler.run_once(NOW)
    scheduler.run_once(NOW)
    assert [r.logical_date for r in runs(db_engine, "narrow")] == [day(1), day(2)]

    with session_scope(db_engine) as session:
        session.execute(
            update(DagRun).where(DagRun.dag_id == "narrow", DagRun.logical_date == day(1))
            .values(state=DagRunState.SUCCESS)
        )
    scheduler.run_once(NOW)  # the same now: only the changed active count can make the DAG worth a look
    assert [(r.logical_date, r.state) for r in runs(db_engine, "narrow")] == [
        (day(1), DagRunState.SUCCESS),
        (day(2), DagRunState.RUNNING),
        (day(3), DagRunState.RUNNING),
    ]
    assert get_dag(db_engine, "narrow").next_dagrun == day(4)


# --- schedule_error ----------------------------------------------------------------------------


def test_a_broken_schedule_is_recorded_skipped_and_cleared_when_the_dag_changes(
    scheduler: Scheduler, folder: Path, db_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    add_dags(scheduler, folder, {
        "broken": dag_source("broken"),
        "healthy": dag_source("healthy", catchup=False),
    })
    with session_scope(db_engine) as session:
        row = session.get(SerializedDag, "broken")
        assert row is not None
        good_data, good_hash = row.data, row.dag_hash
        row.data = {**row.data, "timetable": {"__type": "no such timetable"}}
    assert get_dag(db_engine, "broken").schedule_error is None

    with caplog.at_level(logging.ERROR, logger="scheduler.loop"):
        scheduler.run_once(NOW)
    error = get_dag(db_engine, "broken").schedule_error
    assert error is not None and "no such timetable" in error
    assert [r.message for r in caplog.records if "DAG broken" in r.message and "cannot be evaluated" in r.message]
    assert runs(db_engine, "broken") == []
    assert [r.logical_date for r in runs(db_engine, "healthy")] == [day(11)]

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="scheduler"), recorded(db_engine) as again:
        scheduler.run_once(NOW + timedelta(days=1))
    assert again.mentioning("broken") == []  # not even a read of its own
    assert [r.message for r in caplog.records if "DAG broken" in r.message] == []
    assert get_dag(db_engine, "broken").schedule_error == error
    assert [r.logical_date for r in runs(db_engine, "healthy")] == [day(11), day(12)]  # others go on

    with session_scope(db_engine) as session:
        row = session.get(SerializedDag, "broken")
        assert row is not None
        row.data = good_data
        row.dag_hash = "0" * 64 if good_hash != "0" * 64 else "1" * 64
    scheduler.run_once(NOW + timedelta(days=1))
    assert get_dag(db_engine, "broken").schedule_error is None
    assert [r.logical_date for r in runs(db_engine, "broken")] == [day(d) for d in range(1, 13)]


# --- the loop's database watcher -------------------------------------------------------------


def test_a_trigger_committed_at_the_end_of_an_iteration_still_wakes_the_loop(
    scheduler: Scheduler, folder: Path, db_engine: Engine
) -> None:
    """A commit by someone else after the iteration's reads but before the loop starts sleeping.

    The loop must not take that commit as its own baseline: the queued run would then
    wait for the 30 s safety net. The trigger is committed right after the iteration's
    last step (start_queued_runs) returns, the narrowest place such a commit can land.
    """
    import threading
    import time

    from scheduler.states import DagRunType

    add_dags(scheduler, folder, {"manual": dag_source("manual", schedule=None)})  # type: ignore[arg-type]
    original = scheduler.start_queued_runs
    triggered = threading.Event()

    def start_then_someone_triggers(now: datetime) -> None:
        original(now)
        if not triggered.is_set():
            triggered.set()
            with session_scope(db_engine) as session:
                store.create_dag_run(
                    session, dag_id="manual", run_id="by_hand", run_type=DagRunType.MANUAL,
                    logical_date=NOW, data_interval=None, conf={}, state=DagRunState.QUEUED,
                    run_after=NOW, now=NOW, external_trigger=True,
                )

    scheduler.start_queued_runs = start_then_someone_triggers  # type: ignore[method-assign]
    loop = threading.Thread(target=scheduler.run, daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 3.0  # far below the loop's 30 s sleep
        # Started (running), or already finished: its only task is an EmptyOperator the scheduler marks itself.
        while [r.state for r in runs(db_engine, "manual")] not in ([DagRunState.RUNNING], [DagRunState.SUCCESS]):
            assert loop.is_alive()
            if time.monotonic() > deadline:
                pytest.fail(
                    "the run triggered just before the loop went to sleep is still "
                    f"{[r.state.value for r in runs(db_engine, 'manual')]} after 3 s"
                )
            time.sleep(0.02)  # polling the database for the expected state
    finally:
        scheduler.stop()
        loop.join(timeout=10)
    assert not loop.is_alive()
