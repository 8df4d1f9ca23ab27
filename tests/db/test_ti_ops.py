"""Clearing and marking task instances and runs (scheduler.db.ti_ops), on SQLite and PostgreSQL.

The DAG used throughout::

    extract >> transform >> load
               transform >> report
    other   (alone)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from scheduler.db import ti_ops
from scheduler.db.engine import session_scope
from scheduler.db.models import Dag, DagRun, TaskInstance, TaskReschedule
from scheduler.db.ti_ops import TaskShape
from scheduler.exceptions import DagNotFound, DagRunNotFound, TaskNotFound
from scheduler.states import DagRunState, DagRunType
from scheduler.states import TaskInstanceState as S

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2024, 5, 3, 13, 30, tzinfo=UTC)
DAG_ID = "etl"

STRUCTURE: dict[str, TaskShape] = {
    "extract": TaskShape(frozenset(), frozenset({"transform"}), 2),
    "transform": TaskShape(frozenset({"extract"}), frozenset({"load", "report"}), 1),
    "load": TaskShape(frozenset({"transform"}), frozenset(), 0),
    "report": TaskShape(frozenset({"transform"}), frozenset(), 0),
    "other": TaskShape(frozenset(), frozenset(), 3),
}


def add_dag(session: Session, dag_id: str = DAG_ID) -> None:
    session.add(Dag(dag_id=dag_id, fileloc=f"/dags/{dag_id}.py"))
    session.flush()


def add_run(
    session: Session, run_id: str, logical_date: datetime, state: DagRunState, tis: dict[str, tuple[S, int]],
    *, dag_id: str = DAG_ID,
) -> DagRun:
    """A run with one task instance per entry: task_id -> (state, try_number); max_tries = the task's retries."""
    finished = state in (DagRunState.SUCCESS, DagRunState.FAILED)
    run = DagRun(
        dag_id=dag_id, run_id=run_id, run_type=DagRunType.SCHEDULED, state=state, logical_date=logical_date,
        data_interval_start=logical_date - timedelta(days=1), data_interval_end=logical_date,
        queued_at=logical_date, start_date=logical_date, end_date=logical_date + timedelta(hours=1) if finished else None,
        run_after=logical_date, conf={}, updated_at=logical_date,
    )
    session.add(run)
    session.flush()
    for task_id, (ti_state, try_number) in tis.items():
        ended = ti_state in (S.SUCCESS, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.UP_FOR_RETRY)
        session.add(TaskInstance(
            dag_id=dag_id, run_id=run_id, task_id=task_id, state=ti_state, try_number=try_number,
            max_tries=STRUCTURE[task_id].retries if task_id in STRUCTURE else 0,
            start_date=logical_date if try_number else None,
            end_date=logical_date + timedelta(minutes=5) if ended else None,
            next_retry_at=logical_date + timedelta(minutes=10) if ti_state is S.UP_FOR_RETRY else None,
            updated_at=logical_date,
        ))
    session.flush()
    return run


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """Two finished runs and a running one:

    * d1 (success): everything success (extract took 2 tries);
    * d2 (failed): extract success, transform failed after 2 tries, load/report upstream_failed, other success;
    * d3 (running): extract success, transform running, load/report none, other up_for_retry.
    """
    with session_scope(db_engine) as session:
        add_dag(session)
        every = ("extract", "transform", "load", "report", "other")
        add_run(session, "d1", T0, DagRunState.SUCCESS,
                {t: (S.SUCCESS, 2 if t == "extract" else 1) for t in every})
        add_run(session, "d2", T0 + timedelta(days=1), DagRunState.FAILED, {
            "extract": (S.SUCCESS, 1), "transform": (S.FAILED, 2), "load": (S.UPSTREAM_FAILED, 0),
            "report": (S.UPSTREAM_FAILED, 0), "other": (S.SUCCESS, 1),
        })
        add_run(session, "d3", T0 + timedelta(days=2), DagRunState.RUNNING, {
            "extract": (S.SUCCESS, 1), "transform": (S.RUNNING, 1), "load": (S.NONE, 0),
            "report": (S.NONE, 0), "other": (S.UP_FOR_RETRY, 1),
        })
    return db_engine


def states(engine: Engine, run_id: str) -> dict[str, str]:
    with session_scope(engine, readonly=True) as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.state).where(TaskInstance.run_id == run_id))
        return {task_id: str(state) for task_id, state in rows}


def run_row(engine: Engine, run_id: str) -> DagRun:
    with session_scope(engine, readonly=True) as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == run_id))
        assert run is not None
        return run


def ti_row(engine: Engine, run_id: str, task_id: str) -> TaskInstance:
    with session_scope(engine, readonly=True) as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.run_id == run_id, TaskInstance.task_id == task_id))
        assert ti is not None
        return ti


def clear(engine: Engine, **kwargs: object) -> list[tuple[str, str, str]]:
    with session_scope(engine) as session:
        tis = ti_ops.clear_task_instances(session, DAG_ID, dag_structure=STRUCTURE, now=NOW, **kwargs)  # type: ignore[arg-type]
        return [(ti.run_id, ti.task_id, str(ti.state)) for ti in tis]


# --- selecting tasks ----------------------------------------------------------------------------


def test_select_task_ids_regex_and_closures() -> None:
    assert ti_ops.select_task_ids(STRUCTURE) == set(STRUCTURE)
    assert ti_ops.select_task_ids(STRUCTURE, "^trans") == {"transform"}
    assert ti_ops.select_task_ids(STRUCTURE, "or") == {"transform", "report"}  # search, not match
    assert ti_ops.select_task_ids(STRUCTURE, "^transform$", include_downstream=True) == {"transform", "load", "report"}
    assert ti_ops.select_task_ids(STRUCTURE, "^load$", include_upstream=True) == {"load", "transform", "extract"}
    assert ti_ops.select_task_ids(STRUCTURE, "^load$", include_upstream=True, include_downstream=True) == {
        "load", "transform", "extract"}
    assert ti_ops.select_task_ids(STRUCTURE, "^transform$", include_upstream=True, include_downstream=True) == {
        "extract", "transform", "load", "report"}
    assert ti_ops.select_task_ids(STRUCTURE, "^nothing$", include_downstream=True) == set()
    plain = {"a": ((), ("b",)), "b": (("a",), ())}  # plain tuples work too
    assert ti_ops.select_task_ids(plain, "a", include_downstream=True) == {"a", "b"}
    with pytest.raises(ti_ops.InvalidTaskRegex, match=r"invalid task regex '\(': "):
        ti_ops.select_task_ids(STRUCTURE, "(")


# --- clear --------------------------------------------------------------------------------------


def test_clear_everything_resets_instances_and_requeues_finished_runs(engine: Engine) -> None:
    cleared = clear(engine)
    assert len(cleared) == 15
    assert [c[0] for c in cleared] == ["d1"] * 5 + ["d2"] * 5 + ["d3"] * 5  # by logical date
    assert [c[1] for c in cleared[:5]] == list(STRUCTURE)  # in the DAG's task order
    assert {c[2] for c in cleared} == {"none"}
    for run_id in ("d1", "d2", "d3"):
        assert set(states(engine, run_id).values()) == {"none"}
    for run_id in ("d1", "d2"):
        run = run_row(engine, run_id)
        assert run.state is DagRunState.QUEUED
        assert run.start_date is None and run.end_date is None
        assert run.queued_at == NOW
    running = run_row(engine, "d3")
    assert running.state is DagRunState.RUNNING and running.start_date == T0 + timedelta(days=2)


def test_clear_makes_retries_available_again(engine: Engine) -> None:
    clear(engine, run_ids=["d2"])
    transform = ti_row(engine, "d2", "transform")
    assert (transform.try_number, transform.max_tries) == (2, 2 + 1)  # try 3 next, with 1 retry left
    assert transform.end_date is None and transform.next_retry_at is None
    assert transform.start_date == T0 + timedelta(days=1)  # kept until the next try starts
    load = ti_row(engine, "d2", "load")
    assert (load.try_number, load.max_tries) == (0, 0)
    clear(engine, run_ids=["d3"], task_regex="^other$")
    other = ti_row(engine, "d3", "other")
    assert (other.state, other.max_tries, other.next_retry_at) == (S.NONE, 1 + 3, None)


def test_clear_by_regex_with_downstream(engine: Engine) -> None:
    cleared = clear(engine, run_ids=["d1"], task_regex="^transform$", include_downstream=True)
    assert cleared == [("d1", "transform", "none"), ("d1", "load", "none"), ("d1", "report", "none")]
    assert states(engine, "d1") == {
        "extract": "success", "transform": "none", "load": "none", "report": "none", "other": "success"}
    assert run_row(engine, "d1").state is DagRunState.QUEUED
    assert run_row(engine, "d2").state is DagRunState.FAILED  # not selected: untouched


def test_clear_with_upstream(engine: Engine) -> None:
    cleared = clear(engine, run_ids=["d1"], task_regex="^report$", include_upstream=True)
    assert [c[1] for c in cleared] == ["extract", "transform", "report"]
    assert states(engine, "d1")["load"] == "success"


def test_only_failed(engine: Engine) -> None:
    cleared = clear(engine, only_failed=True)
    assert [(c[0], c[1]) for c in cleared] == [("d2", "transform"), ("d2", "load"), ("d2", "report")]
    assert states(engine, "d2") == {
        "extract": "success", "transform": "none", "load": "none", "report": "none", "other": "success"}
    assert run_row(engine, "d2").state is DagRunState.QUEUED
    assert run_row(engine, "d1").state is DagRunState.SUCCESS  # nothing failed there: the run is not requeued


def test_only_running_and_both_filters(engine: Engine) -> None:
    assert [(c[0], c[1]) for c in clear(engine, only_running=True, dry_run=True)] == [("d3", "transform")]
    both = clear(engine, only_running=True, only_failed=True, dry_run=True)
    assert [(c[0], c[1]) for c in both] == [("d2", "transform"), ("d2", "load"), ("d2", "report"), ("d3", "transform")]
    clear(engine, only_running=True)
    assert states(engine, "d3")["transform"] == "none"
    assert run_row(engine, "d3").state is DagRunState.RUNNING


def test_dry_run_changes_nothing(engine: Engine) -> None:
    cleared = clear(engine, run_ids=["d2"], task_regex="transform", dry_run=True)
    assert cleared == [("d2", "transform", "failed")]  # current states, for a confirmation prompt
    assert states(engine, "d2")["transform"] == "failed"
    assert run_row(engine, "d2").state is DagRunState.FAILED


def test_clear_by_logical_date_range(engine: Engine) -> None:
    cleared = clear(engine, task_regex="^extract$", start_date=T0 + timedelta(hours=1), end_date=T0 + timedelta(days=1))
    assert cleared == [("d2", "extract", "none")]
    cleared = clear(engine, task_regex="^other$", start_date=T0 + timedelta(days=2))
    assert cleared == [("d3", "other", "none")]


def test_clear_deletes_sensor_reschedules_but_keeps_other_instances(engine: Engine) -> None:
    with session_scope(engine) as session:
        ids = dict(session.execute(
            select(TaskInstance.task_id, TaskInstance.id).where(TaskInstance.run_id == "d3")).all())
        for task_id in ("transform", "extract"):
            session.add(TaskReschedule(ti_id=ids[task_id], try_number=1, start_date=T0, end_date=T0,
                                       reschedule_date=T0 + timedelta(minutes=1)))
    clear(engine, run_ids=["d3"], task_regex="^transform$")
    with session_scope(engine, readonly=True) as session:
        left = session.scalars(select(TaskReschedule.ti_id)).all()
    assert left == [ids["extract"]]


def test_clear_ignores_instances_of_removed_tasks(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(TaskInstance(dag_id=DAG_ID, run_id="d1", task_id="gone", state=S.SUCCESS, try_number=1,
                                 max_tries=0, updated_at=T0))
    cleared = clear(engine, run_ids=["d1"])
    assert "gone" not in {c[1] for c in cleared}
    assert states(engine, "d1")["gone"] == "success"


def test_clear_nothing_matching(engine: Engine) -> None:
    assert clear(engine, task_regex="^nope$") == []
    assert clear(engine, run_ids=[]) == []
    assert run_row(engine, "d1").state is DagRunState.SUCCESS


def test_clear_unknown_ids(engine: Engine) -> None:
    with pytest.raises(DagRunNotFound, match="DAG run 'nope' of DAG 'etl' not found"):
        clear(engine, run_ids=["d1", "nope"])
    with session_scope(engine) as session, pytest.raises(DagNotFound, match="DAG 'ghost' not found"):
        ti_ops.clear_task_instances(session, "ghost", dag_structure=STRUCTURE, now=NOW)


def test_structure_from_serialized() -> None:
    from scheduler import DAG, EmptyOperator
    from scheduler.serialization import SerializedDAG, serialize_dag

    with DAG("tiny", schedule=None) as dag:
        a = EmptyOperator(task_id="a", retries=4)
        b = EmptyOperator(task_id="b")
        a >> b
    shapes = ti_ops.structure_from_serialized(SerializedDAG.from_dict(serialize_dag(dag)))
    assert shapes == {"a": TaskShape(frozenset(), frozenset({"b"}), 4), "b": TaskShape(frozenset({"a"}), frozenset(), 0)}


# --- mark a task instance -------------------------------------------------------------------------


def test_mark_task_instance_by_key_and_id(engine: Engine) -> None:
    with session_scope(engine) as session:
        ti = ti_ops.mark_task_instance(session, (DAG_ID, "d3", "transform"), "success", now=NOW)
        assert ti.state is S.SUCCESS
        ti_id = ti.id
    row = ti_row(engine, "d3", "transform")
    assert (row.state, row.end_date, row.start_date) == (S.SUCCESS, NOW, T0 + timedelta(days=2))
    assert row.duration == (NOW - (T0 + timedelta(days=2))).total_seconds()
    with session_scope(engine) as session:
        ti_ops.mark_task_instance(session, ti_id, S.FAILED, now=NOW + timedelta(hours=1))
    row = ti_row(engine, "d3", "transform")
    assert row.state is S.FAILED and row.end_date == NOW  # already finished: its end is kept
    with session_scope(engine) as session:
        ti_ops.mark_task_instance(session, (DAG_ID, "d3", "load", -1), "skipped", now=NOW)
    load = ti_row(engine, "d3", "load")
    assert (load.state, load.start_date, load.end_date, load.duration) == (S.SKIPPED, NOW, NOW, 0.0)
    assert run_row(engine, "d3").state is DagRunState.RUNNING  # the run is left to the scheduler


def test_mark_task_instance_errors(engine: Engine) -> None:
    with session_scope(engine) as session:
        with pytest.raises(ValueError, match="can be marked success, failed, skipped; got 'running'"):
            ti_ops.mark_task_instance(session, (DAG_ID, "d3", "load"), "running", now=NOW)
        with pytest.raises(TaskNotFound, match="Task 'nope' has no task instance in DAG run 'd3' of DAG 'etl'"):
            ti_ops.mark_task_instance(session, (DAG_ID, "d3", "nope"), "success", now=NOW)
        with pytest.raises(TaskNotFound, match=r"Task 'load' \(map index 2\) has no task instance"):
            ti_ops.mark_task_instance(session, (DAG_ID, "d3", "load", 2), "success", now=NOW)
        with pytest.raises(DagRunNotFound, match="DAG run 'd9' of DAG 'etl' not found"):
            ti_ops.mark_task_instance(session, (DAG_ID, "d9", "load"), "success", now=NOW)
        with pytest.raises(DagNotFound, match="DAG 'ghost' not found"):
            ti_ops.mark_task_instance(session, ("ghost", "d3", "load"), "success", now=NOW)
        with pytest.raises(TaskNotFound, match="task instance with id 999999 not found"):
            ti_ops.mark_task_instance(session, 999999, "success", now=NOW)


# --- mark a run -----------------------------------------------------------------------------------


def test_mark_run_success_finishes_only_unfinished_instances(engine: Engine) -> None:
    with session_scope(engine) as session:
        changed = ti_ops.mark_dag_run(session, DAG_ID, "d3", "success", now=NOW)
        assert sorted(ti.task_id for ti in changed) == ["load", "other", "report", "transform"]
    assert set(states(engine, "d3").values()) == {"success"}
    run = run_row(engine, "d3")
    assert (run.state, run.end_date) == (DagRunState.SUCCESS, NOW)
    with session_scope(engine) as session:
        ti_ops.mark_dag_run(session, DAG_ID, "d2", DagRunState.SUCCESS, now=NOW)
    assert states(engine, "d2")["transform"] == "failed"  # finished instances keep their state
    assert run_row(engine, "d2").state is DagRunState.SUCCESS


def test_mark_run_failed_fails_running_and_skips_pending(engine: Engine) -> None:
    with session_scope(engine) as session:
        changed = ti_ops.mark_dag_run(session, DAG_ID, "d3", "failed", now=NOW)
        assert len(changed) == 4
    assert states(engine, "d3") == {
        "extract": "success", "transform": "failed", "load": "skipped", "report": "skipped", "other": "skipped"}
    run = run_row(engine, "d3")
    assert (run.state, run.end_date) == (DagRunState.FAILED, NOW)
    assert ti_row(engine, "d3", "other").next_retry_at is None


def test_mark_run_queued_clears_everything(engine: Engine) -> None:
    with session_scope(engine) as session:
        changed = ti_ops.mark_dag_run(session, DAG_ID, "d1", "queued", now=NOW, dag_structure=STRUCTURE)
        assert len(changed) == 5
    assert set(states(engine, "d1").values()) == {"none"}
    run = run_row(engine, "d1")
    assert (run.state, run.start_date, run.end_date, run.queued_at) == (DagRunState.QUEUED, None, None, NOW)
    extract = ti_row(engine, "d1", "extract")
    assert extract.max_tries == 2 + 2
    with session_scope(engine) as session:  # a running run can be sent back to the queue as well
        ti_ops.mark_dag_run(session, DAG_ID, "d3", "queued", now=NOW)
    assert run_row(engine, "d3").state is DagRunState.QUEUED
    assert ti_row(engine, "d3", "other").max_tries == 3  # no structure: max(max_tries, try_number)


def test_mark_run_errors(engine: Engine) -> None:
    with session_scope(engine) as session:
        with pytest.raises(ValueError, match="a DAG run can be marked success, failed, queued; got 'running'"):
            ti_ops.mark_dag_run(session, DAG_ID, "d1", "running", now=NOW)
        with pytest.raises(DagRunNotFound, match="DAG run 'zz' of DAG 'etl' not found"):
            ti_ops.mark_dag_run(session, DAG_ID, "zz", "success", now=NOW)
        with pytest.raises(DagNotFound):
            ti_ops.mark_dag_run(session, "ghost", "d1", "success", now=NOW)


def test_list_task_instances(engine: Engine) -> None:
    with session_scope(engine, readonly=True) as session:
        tis = ti_ops.list_task_instances(session, DAG_ID, "d2")
        assert [ti.task_id for ti in tis] == ["extract", "load", "other", "report", "transform"]
        with pytest.raises(DagRunNotFound):
            ti_ops.list_task_instances(session, DAG_ID, "nope")
        assert session.scalar(select(func.count()).select_from(TaskInstance)) == 15
