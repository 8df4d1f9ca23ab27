"""The store's contract, run on SQLite and PostgreSQL (the ``db_engine`` fixture), and the schema rules it relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from scheduler.db import store
from scheduler.db.engine import session_scope
from scheduler.db.models import (
    Dag,
    DagCode,
    DagRun,
    SerializedDag,
    TaskInstance,
    TaskInstanceHistory,
    XCom,
)
from scheduler.exceptions import DagNotFound
from scheduler.states import DagRunState, DagRunType, TaskInstanceState

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ONE = "/dags/one.py"
TWO = "/dags/two.py"
THREE = "/dags/three.py"


def serialized(dag_id: str, fileloc: str = ONE, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "dag_id": dag_id,
        "fileloc": fileloc,
        "owners": ["alice", "bob"],
        "description": f"the {dag_id} pipeline",
        "tags": ["etl", "daily"],
        "schedule": {"__type": "CronExpression", "value": "0 6 * * *"},
        "timetable_summary": "0 6 * * *",
        "timetable_description": "At 06:00",
        "timezone": "Europe/Berlin",
        "max_active_runs": 2,
        "max_active_tasks": 8,
        "is_paused_upon_creation": None,
        "tasks": [{"task_id": "extract"}, {"task_id": "load"}],
    }
    data.update(overrides)
    return data


def parse(
    engine: Engine,
    fileloc: str,
    dags: list[dict[str, Any]],
    *,
    error: str | None = None,
    source: str | None = "# source\n",
    now: datetime = T0,
    paused_at_creation: bool = True,
    content_hash: str = "hash-1",
) -> None:
    with session_scope(engine) as session:
        store.record_parse_result(
            session,
            fileloc=fileloc,
            mtime=1714564800.5,
            size=321,
            content_hash=content_hash,
            dags=dags,
            error=error,
            source=source,
            duration=0.25,
            now=now,
            paused_at_creation=paused_at_creation,
        )


def dag_row(engine: Engine, dag_id: str) -> Dag:
    with session_scope(engine, readonly=True) as session:
        row = store.get_dag(session, dag_id)
    assert row is not None, dag_id
    return row


def serialized_row(engine: Engine, dag_id: str) -> SerializedDag:
    with session_scope(engine, readonly=True) as session:
        row = session.get(SerializedDag, dag_id)
    assert row is not None, dag_id
    return row


def import_errors(engine: Engine) -> dict[str, str]:
    with session_scope(engine, readonly=True) as session:
        return {e.filename: e.stack_trace for e in store.list_import_errors(session)}


def active_ids(engine: Engine, *, only_active: bool = True) -> list[str]:
    with session_scope(engine, readonly=True) as session:
        return [d.dag_id for d in store.list_dags(session, only_active=only_active)]


# --- parse results: new, changed and removed DAGs ---------------------------------------------


def test_a_new_file_stores_dag_serialized_form_code_and_parse_state(db_engine: Engine) -> None:
    data = serialized("etl")
    parse(db_engine, ONE, [data], source="with DAG('etl'): ...\n")

    dag = dag_row(db_engine, "etl")
    assert (dag.fileloc, dag.is_active, dag.is_paused, dag.has_import_errors) == (ONE, True, True, False)
    assert dag.owners == "alice, bob" and dag.owner_list == ["alice", "bob"]
    assert (dag.description, dag.tags, dag.timezone) == ("the etl pipeline", ["etl", "daily"], "Europe/Berlin")
    assert dag.schedule == {"__type": "CronExpression", "value": "0 6 * * *"}
    assert (dag.timetable_summary, dag.timetable_description) == ("0 6 * * *", "At 06:00")
    assert (dag.max_active_runs, dag.max_active_tasks) == (2, 8)
    assert dag.last_parsed_time == T0
    assert dag.next_dagrun is None

    with session_scope(db_engine, readonly=True) as session:
        assert store.get_serialized_dag(session, "etl") == data
        code = session.get(DagCode, ONE)
        states = store.get_file_states(session)
    assert code is not None and code.source == "with DAG('etl'): ...\n"
    assert states == {ONE: store.FileState(ONE, 1714564800.5, 321, "hash-1", ("etl",))}
    assert import_errors(db_engine) == {}


@pytest.mark.parametrize(
    ("upon_creation", "default", "expected"),
    [(None, True, True), (None, False, False), (False, True, False), (True, False, True)],
)
def test_new_dags_are_paused_per_is_paused_upon_creation_else_the_default(
    db_engine: Engine, upon_creation: bool | None, default: bool, expected: bool
) -> None:
    parse(db_engine, ONE, [serialized("etl", is_paused_upon_creation=upon_creation)], paused_at_creation=default)
    assert dag_row(db_engine, "etl").is_paused is expected


def test_an_existing_dag_keeps_its_paused_state_and_gets_new_metadata(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("etl")], paused_at_creation=True)
    with session_scope(db_engine) as session:
        store.set_paused(session, "etl", False)
    later = T0 + timedelta(minutes=5)
    parse(db_engine, ONE, [serialized("etl", description="new words", is_paused_upon_creation=True)], now=later)
    dag = dag_row(db_engine, "etl")
    assert (dag.is_paused, dag.description, dag.last_parsed_time) == (False, "new words", later)


def test_serialized_form_is_rewritten_only_when_its_hash_changes(db_engine: Engine) -> None:
    first = serialized("etl")
    parse(db_engine, ONE, [first], now=T0)
    original_hash = serialized_row(db_engine, "etl").dag_hash

    same_in_other_key_order = dict(reversed(list(first.items())))
    parse(db_engine, ONE, [same_in_other_key_order], now=T0 + timedelta(minutes=1))
    row = serialized_row(db_engine, "etl")
    assert (row.last_updated, row.dag_hash) == (T0, original_hash)

    changed = serialized("etl", tasks=[{"task_id": "extract"}])
    parse(db_engine, ONE, [changed], now=T0 + timedelta(minutes=2))
    row = serialized_row(db_engine, "etl")
    assert row.last_updated == T0 + timedelta(minutes=2)
    assert row.dag_hash != original_hash
    assert row.data == changed


def test_a_dag_no_longer_defined_by_its_file_becomes_inactive_and_can_come_back(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("a"), serialized("b")])
    with session_scope(db_engine) as session:
        store.set_paused(session, "b", False)
    parse(db_engine, ONE, [serialized("a")], now=T0 + timedelta(minutes=1))

    assert active_ids(db_engine) == ["a"]
    assert active_ids(db_engine, only_active=False) == ["a", "b"]
    with session_scope(db_engine, readonly=True) as session:
        assert store.get_file_states(session)[ONE].dag_ids == ("a",)
        assert store.get_serialized_dag(session, "b") is not None  # history can still be drawn

    parse(db_engine, ONE, [serialized("a"), serialized("b")], now=T0 + timedelta(minutes=2))
    b = dag_row(db_engine, "b")
    assert (b.is_active, b.is_paused) == (True, False)


def test_a_file_defining_no_dag_keeps_no_code(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("a")])
    parse(db_engine, ONE, [], source="HELPER = 1\n", content_hash="hash-2")
    with session_scope(db_engine, readonly=True) as session:
        assert session.get(DagCode, ONE) is None
        assert store.get_file_states(session)[ONE] == store.FileState(ONE, 1714564800.5, 321, "hash-2", ())
    assert active_ids(db_engine) == []
    assert import_errors(db_engine) == {}


def test_touch_file_records_a_new_mtime_only(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("a")])
    with session_scope(db_engine) as session:
        assert store.touch_file(session, ONE, mtime=1800000000.25) is True
        assert store.touch_file(session, "/dags/unknown.py", mtime=1.0) is False
    with session_scope(db_engine, readonly=True) as session:
        assert store.get_file_states(session) == {ONE: store.FileState(ONE, 1800000000.25, 321, "hash-1", ("a",))}


# --- duplicate DAG ids -------------------------------------------------------------------


def test_a_dag_id_already_active_in_another_file_stays_there_and_the_newcomer_gets_an_import_error(
    db_engine: Engine,
) -> None:
    original = serialized("shared", ONE)
    parse(db_engine, ONE, [original])
    parse(db_engine, TWO, [serialized("shared", TWO, description="impostor"), serialized("own", TWO)])

    shared = dag_row(db_engine, "shared")
    assert (shared.fileloc, shared.description, shared.has_import_errors) == (ONE, "the shared pipeline", False)
    with session_scope(db_engine, readonly=True) as session:
        assert store.get_serialized_dag(session, "shared") == original
        states = store.get_file_states(session)
    assert states[TWO].dag_ids == ("own",)
    assert import_errors(db_engine) == {TWO: f"DAG id 'shared' already defined in file {ONE}"}
    own = dag_row(db_engine, "own")
    assert (own.fileloc, own.is_active, own.has_import_errors) == (TWO, True, True)


def test_a_dag_id_defined_twice_in_one_file_keeps_the_first(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("twin", description="first"), serialized("twin", description="second")])
    assert dag_row(db_engine, "twin").description == "first"
    assert import_errors(db_engine) == {ONE: f"DAG id 'twin' already defined in file {ONE}"}


def test_a_dag_id_left_behind_by_its_old_file_moves_to_the_new_one(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("mover", ONE)])
    with session_scope(db_engine) as session:
        store.set_paused(session, "mover", False)
    parse(db_engine, ONE, [], now=T0 + timedelta(minutes=1))
    moved = serialized("mover", TWO)
    parse(db_engine, TWO, [moved], now=T0 + timedelta(minutes=2))

    mover = dag_row(db_engine, "mover")
    assert (mover.fileloc, mover.is_active, mover.is_paused) == (TWO, True, False)
    assert serialized_row(db_engine, "mover").data == moved
    assert import_errors(db_engine) == {}


# --- import errors -------------------------------------------------------------------------


def test_a_broken_file_keeps_its_last_good_dags_until_it_is_fixed(db_engine: Engine) -> None:
    good = serialized("etl")
    parse(db_engine, ONE, [good], source="good source\n")
    broken_at = T0 + timedelta(minutes=1)
    trace = "Traceback (most recent call last):\nSyntaxError: invalid syntax"
    parse(db_engine, ONE, [], error=trace, source="broken source\n", now=broken_at, content_hash="hash-2")

    with session_scope(db_engine, readonly=True) as session:
        errors = store.list_import_errors(session)
        code = session.get(DagCode, ONE)
        assert store.get_serialized_dag(session, "etl") == good
        state = store.get_file_states(session)[ONE]
    assert [(e.filename, e.stack_trace, e.timestamp) for e in errors] == [(ONE, trace, broken_at)]
    etl = dag_row(db_engine, "etl")
    assert (etl.is_active, etl.has_import_errors, etl.last_parsed_time) == (True, True, T0)
    assert code is not None and code.source == "good source\n"
    assert (state.content_hash, state.dag_ids) == ("hash-2", ("etl",))

    fixed = serialized("etl", description="fixed")
    parse(db_engine, ONE, [fixed], source="fixed source\n", now=T0 + timedelta(minutes=2), content_hash="hash-3")
    assert import_errors(db_engine) == {}
    etl = dag_row(db_engine, "etl")
    assert (etl.has_import_errors, etl.description) == (False, "fixed")
    assert serialized_row(db_engine, "etl").data == fixed


def test_an_error_beside_good_dags_keeps_the_missing_ones_and_flags_all(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("ok"), serialized("bad")])
    parse(db_engine, ONE, [serialized("ok", description="v2")], error="DAG 'bad': invalid cron expression '61 * * * *'")

    assert active_ids(db_engine) == ["bad", "ok"]
    assert dag_row(db_engine, "ok").description == "v2"
    assert dag_row(db_engine, "bad").has_import_errors is True
    assert dag_row(db_engine, "ok").has_import_errors is True
    with session_scope(db_engine, readonly=True) as session:
        assert store.get_file_states(session)[ONE].dag_ids == ("bad", "ok")
    assert import_errors(db_engine) == {ONE: "DAG 'bad': invalid cron expression '61 * * * *'"}


def test_a_new_broken_file_records_its_error_and_its_state(db_engine: Engine) -> None:
    parse(db_engine, ONE, [], error="ImportError: No module named 'pandas'", source=None)
    assert import_errors(db_engine) == {ONE: "ImportError: No module named 'pandas'"}
    assert active_ids(db_engine, only_active=False) == []
    with session_scope(db_engine, readonly=True) as session:
        assert store.get_file_states(session)[ONE].dag_ids == ()


def test_the_import_error_is_replaced_not_duplicated(db_engine: Engine) -> None:
    parse(db_engine, ONE, [], error="first")
    parse(db_engine, ONE, [], error="second", now=T0 + timedelta(seconds=30))
    with session_scope(db_engine, readonly=True) as session:
        errors = store.list_import_errors(session)
    assert [(e.stack_trace, e.timestamp) for e in errors] == [("second", T0 + timedelta(seconds=30))]


# --- files that disappeared ------------------------------------------------------------------


def test_deactivate_missing_files_forgets_them_and_deactivates_their_dags(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("gone", ONE)])
    parse(db_engine, TWO, [], error="SyntaxError")
    parse(db_engine, THREE, [serialized("stays", THREE)])

    with session_scope(db_engine) as session:
        removed = store.deactivate_missing_files(session, {THREE, "/dags/new_and_unparsed.py"})
    assert removed == [ONE, TWO]

    assert active_ids(db_engine) == ["stays"]
    assert dag_row(db_engine, "gone").is_active is False
    assert import_errors(db_engine) == {}
    with session_scope(db_engine, readonly=True) as session:
        assert set(store.get_file_states(session)) == {THREE}
        assert session.get(DagCode, ONE) is None
        assert session.get(DagCode, THREE) is not None

    with session_scope(db_engine) as session:
        assert store.deactivate_missing_files(session, {THREE}) == []


# --- lookups and pausing -----------------------------------------------------------------------


def test_lookups_of_unknown_dags_return_none(db_engine: Engine) -> None:
    with session_scope(db_engine, readonly=True) as session:
        assert store.get_dag(session, "nope") is None
        assert store.get_serialized_dag(session, "nope") is None
        assert store.list_dags(session) == []


def test_set_paused(db_engine: Engine) -> None:
    parse(db_engine, ONE, [serialized("etl")], paused_at_creation=False)
    with session_scope(db_engine) as session:
        store.set_paused(session, "etl", True)
    assert dag_row(db_engine, "etl").is_paused is True
    with session_scope(db_engine) as session:
        store.set_paused(session, "etl", True)  # already paused: still fine
        store.set_paused(session, "etl", False)
    assert dag_row(db_engine, "etl").is_paused is False


def test_set_paused_on_an_unknown_dag_raises_dag_not_found(db_engine: Engine) -> None:
    with pytest.raises(DagNotFound) as info:
        with session_scope(db_engine) as session:
            store.set_paused(session, "ghost", True)
    assert info.value.dag_id == "ghost"


# --- runs --------------------------------------------------------------------------------------


def add_run(engine: Engine, run_id: str, run_type: str, logical_date: datetime | None, **fields: Any) -> None:
    fields.setdefault("run_after", logical_date or T0)
    with session_scope(engine) as session:
        session.add(DagRun(dag_id="etl", run_id=run_id, run_type=run_type, logical_date=logical_date, **fields))


@pytest.fixture
def etl(db_engine: Engine) -> Engine:
    parse(db_engine, ONE, [serialized("etl")])
    return db_engine


def test_list_dag_runs_newest_first_and_by_state(etl: Engine) -> None:
    add_run(etl, "scheduled__1", "scheduled", T0, state=DagRunState.SUCCESS)
    add_run(etl, "scheduled__2", "scheduled", T0 + timedelta(days=1), state=DagRunState.RUNNING)
    add_run(etl, "manual__1", "manual", None, run_after=T0 + timedelta(hours=1))
    with session_scope(etl, readonly=True) as session:
        everything = [r.run_id for r in store.list_dag_runs(session, "etl")]
        running = store.list_dag_runs(session, "etl", state="running")
        assert store.list_dag_runs(session, "other") == []
        with pytest.raises(ValueError, match="bogus"):
            store.list_dag_runs(session, "etl", state="bogus")
    assert everything == ["scheduled__2", "manual__1", "scheduled__1"]
    assert [(r.run_id, r.state, r.run_type) for r in running] == [("scheduled__2", DagRunState.RUNNING, DagRunType.SCHEDULED)]
    assert running[0].conf == {} and running[0].external_trigger is False


# --- schema rules the scheduler relies on --------------------------------------------------------


@pytest.mark.parametrize("second_type", ["scheduled", "backfill"])
def test_one_scheduled_or_backfill_run_per_logical_date(etl: Engine, second_type: str) -> None:
    add_run(etl, "scheduled__a", "scheduled", T0)
    with pytest.raises(IntegrityError):
        add_run(etl, f"{second_type}__b", second_type, T0)


def test_manual_runs_never_claim_the_scheduled_slot(etl: Engine) -> None:
    add_run(etl, "manual__1", "manual", T0)
    add_run(etl, "manual__2", "manual", T0)
    add_run(etl, "scheduled__1", "scheduled", T0)  # the slot is still free
    add_run(etl, "scheduled__2", "scheduled", T0 + timedelta(days=1))
    with session_scope(etl, readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(DagRun)) == 4


def test_run_id_is_unique_per_dag(etl: Engine) -> None:
    add_run(etl, "manual__1", "manual", T0)
    with pytest.raises(IntegrityError):
        add_run(etl, "manual__1", "manual", T0 + timedelta(days=1))


def test_states_are_checked_in_python_and_in_the_database(etl: Engine) -> None:
    with pytest.raises(StatementError) as info:
        add_run(etl, "manual__1", "manual", T0, state="bogus")
    assert isinstance(info.value.orig, ValueError)
    with pytest.raises(IntegrityError):  # raw SQL bypasses the Python check; the CHECK constraint stops it
        with session_scope(etl) as session:
            session.execute(
                text(
                    "INSERT INTO dag_run (dag_id, run_id, run_type, state, run_after, conf, external_trigger, updated_at)"
                    " VALUES ('etl', 'x', 'manual', 'bogus', :t, '{}', false, :t)"
                ),
                {"t": "2024-05-01 12:00:00"},
            )


def test_task_instance_defaults_foreign_key_and_cascade(etl: Engine) -> None:
    add_run(etl, "scheduled__1", "scheduled", T0)
    with session_scope(etl) as session:
        session.add(TaskInstance(dag_id="etl", run_id="scheduled__1", task_id="extract"))
        session.add(TaskInstanceHistory(dag_id="etl", run_id="scheduled__1", task_id="extract", try_number=1, state="failed"))
        session.add(XCom(dag_id="etl", run_id="scheduled__1", task_id="extract", key="return_value", value=[1, 2], timestamp=T0))
    with session_scope(etl, readonly=True) as session:
        ti = session.scalars(select(TaskInstance)).one()
    assert ti.state is TaskInstanceState.NONE
    assert (ti.map_index, ti.try_number, ti.pool, ti.hostname, ti.executor_config) == (-1, 0, "default_pool", "", "{}")
    assert ti.updated_at.tzinfo is UTC

    with pytest.raises(IntegrityError):  # same (dag_id, run_id, task_id, map_index)
        with session_scope(etl) as session:
            session.add(TaskInstance(dag_id="etl", run_id="scheduled__1", task_id="extract"))
    with pytest.raises(IntegrityError):  # no such run: the foreign key holds on SQLite too
        with session_scope(etl) as session:
            session.add(TaskInstance(dag_id="etl", run_id="no_such_run", task_id="extract"))

    with session_scope(etl) as session:
        session.execute(delete(DagRun).where(DagRun.run_id == "scheduled__1"))
    with session_scope(etl, readonly=True) as session:
        for model in (TaskInstance, TaskInstanceHistory, XCom):
            assert session.scalar(select(func.count()).select_from(model)) == 0, model.__name__


def test_task_instance_state_is_stored_as_its_value(etl: Engine) -> None:
    add_run(etl, "scheduled__1", "scheduled", T0)
    with session_scope(etl) as session:
        session.add(TaskInstance(dag_id="etl", run_id="scheduled__1", task_id="load", state=TaskInstanceState.UP_FOR_RETRY))
    with session_scope(etl, readonly=True) as session:
        assert session.execute(text("SELECT state FROM task_instance")).scalar_one() == "up_for_retry"
        assert session.scalars(select(TaskInstance.state)).one() is TaskInstanceState.UP_FOR_RETRY
