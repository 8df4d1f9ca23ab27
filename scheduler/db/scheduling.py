"""The queries and compare-and-set updates of the scheduler loop's task side.

Like :mod:`scheduler.db.store`, functions take a session and never commit. Every state
change is an UPDATE guarded by the state it expects (and the try number where a try
is involved), so a second scheduler, a task runner or a user acting at the same time
makes the update match no row instead of being overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import CursorResult, and_, func, insert, select, update
from sqlalchemy.orm import Session

from scheduler.db.models import DEFAULT_POOL, DagRun, Log, TaskInstance, TaskInstanceHistory
from scheduler.db.raw import RawDb, db_ts, session_cursor
from scheduler.serialization import SerializedDAG
from scheduler.states import SKIPPED_XCOM_KEY, DagRunState, TaskInstanceState

S = TaskInstanceState

#: States that occupy an executor slot, a pool slot and count against max_active_tasks.
OCCUPYING = (S.QUEUED.value, S.RUNNING.value)


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0


def _execute(session: Session, statement: Any, params: Any = None) -> Any:
    """Run a Core statement on the session's connection, in its transaction.

    These statements select columns and update rows; none needs the ORM's execution
    (identity map, synchronisation of loaded objects), which costs the scheduler loop
    several times what the database does.
    """
    connection = session.connection()
    return connection.execute(statement) if params is None else connection.execute(statement, params)


def _scalar(session: Session, statement: Any) -> Any:
    return _execute(session, statement).scalar()


# --- runs --------------------------------------------------------------------------------------


class RunRow(NamedTuple):
    """The columns of a running run that the loop's task side reads."""

    id: int
    dag_id: str
    run_id: str
    logical_date: datetime | None
    start_date: datetime | None


_RUNNING_RUNS = "SELECT id, dag_id, run_id, logical_date, start_date FROM dag_run WHERE state = %s ORDER BY id"


def running_runs(session: Session) -> list[RunRow]:
    """Every running run, oldest first (by id)."""
    read_ts = RawDb.read_ts
    return [RunRow(pk, dag_id, run_id, read_ts(logical), read_ts(started))
            for pk, dag_id, run_id, logical, started in
            session_cursor(session).execute(_RUNNING_RUNS, (DagRunState.RUNNING.value,)).all()]


def finish_run(session: Session, run_pk: int, state: DagRunState, *, now: datetime) -> bool:
    """running -> success/failed (compare-and-set); False when the run was not running any more."""
    result = _execute(session,
        update(DagRun)
        .where(DagRun.id == run_pk, DagRun.state == DagRunState.RUNNING)
        .values(state=state, end_date=now, updated_at=now)
    )
    return _rowcount(result) == 1


# --- task instances -----------------------------------------------------------------------------


class TIRow(NamedTuple):
    """The columns of a task instance that scheduling decisions read."""

    id: int
    task_id: str
    map_index: int
    state: S
    try_number: int
    max_tries: int
    next_retry_at: datetime | None


#: The loop's statements run on the session's DBAPI cursor (scheduler.db.raw.session_cursor): through
#: SQLAlchemy's execution they cost the loop several times what the database does.
_RUN_TIS = ("SELECT id, task_id, map_index, state, try_number, max_tries, next_retry_at FROM task_instance"
            " WHERE dag_id = %s AND run_id = %s")
_STATES = {s.value: s for s in S}


def run_task_instances(session: Session, dag_id: str, run_id: str) -> list[TIRow]:
    states, read_ts = _STATES, RawDb.read_ts
    return [TIRow(pk, task_id, index, states[state], tries, max_tries, None if retry_at is None else read_ts(retry_at))
            for pk, task_id, index, state, tries, max_tries, retry_at in
            session_cursor(session).execute(_RUN_TIS, (dag_id, run_id)).all()]


def create_task_instances(
    session: Session, sdag: SerializedDAG, run_id: str, weights: dict[str, int], task_ids: Iterable[str], *, now: datetime
) -> int:
    """Insert a 'none' task instance for each of ``task_ids`` in the run; returns how many."""
    rows = []
    for task_id in task_ids:
        task = sdag.tasks[task_id]
        rows.append(
            {
                "dag_id": sdag.dag_id,
                "run_id": run_id,
                "task_id": task_id,
                "map_index": -1,
                "state": S.NONE,
                "try_number": 0,
                "max_tries": task.retries,
                "operator": task.operator,
                "pool": task.pool or DEFAULT_POOL,
                "pool_slots": task.pool_slots,
                "priority_weight": weights.get(task_id, task.priority_weight),
                "queue": str(task.get("queue") or "default"),
                "updated_at": now,
            }
        )
    if rows:
        _execute(session, insert(TaskInstance), rows)
    return len(rows)


def set_ti_state(session: Session, ti_id: int, old: S, new: S, *, now: datetime) -> bool:
    """old -> new for one task instance (compare-and-set). Finished states get an end_date."""
    values: dict[str, Any] = {"state": new, "updated_at": now}
    if new in (S.SKIPPED, S.UPSTREAM_FAILED, S.SUCCESS, S.REMOVED):
        values.update(end_date=now)
        if new is not S.SUCCESS:
            values.update(start_date=func.coalesce(TaskInstance.start_date, now), duration=0.0)
    if new is S.SCHEDULED:  # the usual change
        cur = session_cursor(session)
        cur.execute(_TO_SCHEDULED, (S.SCHEDULED.value, db_ts(now, cur.sqlite), ti_id, old.value))
        return cur.rowcount == 1
    result = _execute(session, update(TaskInstance).where(TaskInstance.id == ti_id, TaskInstance.state == old).values(**values))
    return _rowcount(result) == 1


_TO_SCHEDULED = ("UPDATE task_instance SET state = %s, updated_at = %s, next_retry_at = NULL"
                 " WHERE id = %s AND state = %s")


def previous_run_states(session: Session, dag_id: str, logical_date: datetime, task_ids: Sequence[str]) -> dict[str, S] | None:
    """The states of ``task_ids`` in the DAG's run just before ``logical_date`` (None: there is no earlier run)."""
    previous = _scalar(session,
        select(DagRun.run_id)
        .where(DagRun.dag_id == dag_id, DagRun.logical_date < logical_date)
        .order_by(DagRun.logical_date.desc())
        .limit(1)
    )
    if previous is None:
        return None
    rows = _execute(session,
        select(TaskInstance.task_id, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == previous, TaskInstance.task_id.in_(task_ids)
        )
    )
    return {task_id: S(state) for task_id, state in rows}


def unfinished_to(session: Session, dag_id: str, run_id: str, state: S, *, now: datetime) -> int:
    """Every unfinished task instance of the run -> ``state`` (a timed-out or marked run)."""
    unfinished = [s.value for s in S if s not in (S.SUCCESS, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.REMOVED)]
    result = _execute(session,
        update(TaskInstance)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.state.in_(unfinished))
        .values(state=state, end_date=now, updated_at=now)
    )
    return _rowcount(result)


# --- queueing --------------------------------------------------------------------------------


class Candidate(NamedTuple):
    """A scheduled task instance that may be handed to an executor."""

    id: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    pool: str
    pool_slots: int
    priority_weight: int
    fileloc: str
    max_active_tasks: int | None
    queue: str = "default"


_CANDIDATES = (
    "SELECT ti.id, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number, ti.pool, ti.pool_slots,"
    " ti.priority_weight, dag.fileloc, dag.max_active_tasks, ti.queue"
    " FROM task_instance ti"
    " JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id"
    " JOIN dag ON dag.dag_id = ti.dag_id"
    " WHERE ti.state = %s AND dr.state = %s AND dag.is_active = %s"
)
_CANDIDATES_ORDER = " ORDER BY ti.priority_weight DESC, dr.logical_date, dr.id, ti.id LIMIT %s"


def scheduled_candidates(
    session: Session, *, limit: int, skip_pools: Iterable[str] = (), skip_runs: Iterable[tuple[str, str]] = (),
    skip_tasks: Iterable[tuple[str, str, str | None]] = (),
) -> list[Candidate]:
    """Scheduled instances of running runs of active DAGs, highest priority first, then oldest run.

    ``skip_pools``, ``skip_runs`` and ``skip_tasks`` ((dag_id, task_id, run_id or None for every
    run)) leave out instances that could not be queued anyway (a full pool, a run at its
    max_active_tasks, a task at its max_active_tis_per_dag or _per_dagrun), so they never hide
    the ones that can.
    """
    sql = _CANDIDATES
    params: list[Any] = [S.SCHEDULED.value, DagRunState.RUNNING.value, True]
    pools = sorted(set(skip_pools))
    if pools:
        sql += f" AND ti.pool NOT IN ({', '.join(['%s'] * len(pools))})"
        params += pools
    for dag_id, run_id in sorted(set(skip_runs)):
        sql += " AND NOT (ti.dag_id = %s AND ti.run_id = %s)"
        params += [dag_id, run_id]
    for dag_id, task_id, in_run in sorted(set(skip_tasks), key=lambda k: (k[0], k[1], k[2] or "")):
        if in_run is None:
            sql += " AND NOT (ti.dag_id = %s AND ti.task_id = %s)"
            params += [dag_id, task_id]
        else:
            sql += " AND NOT (ti.dag_id = %s AND ti.task_id = %s AND ti.run_id = %s)"
            params += [dag_id, task_id, in_run]
    params.append(limit)
    return [Candidate(*row) for row in session_cursor(session).execute(sql + _CANDIDATES_ORDER, params).all()]


def any_scheduled(session: Session) -> bool:
    """Whether any task instance is scheduled (waiting to be queued)."""
    return _scalar(session, select(TaskInstance.id).where(TaskInstance.state == S.SCHEDULED).limit(1)) is not None


def occupied_by_run(session: Session, dag_ids: Iterable[str]) -> dict[tuple[str, str], int]:
    """(dag_id, run_id) -> task instances queued or running: what max_active_tasks counts (per run, as in Airflow 3)."""
    ids = sorted(set(dag_ids))
    if not ids:
        return {}
    sql = (f"SELECT dag_id, run_id, count(*) FROM task_instance WHERE dag_id IN ({', '.join(['%s'] * len(ids))})"
           " AND state IN (%s, %s) GROUP BY dag_id, run_id")
    rows = session_cursor(session).execute(sql, (*ids, *OCCUPYING)).all()
    return {(dag_id, run_id): int(n) for dag_id, run_id, n in rows}


def occupied_by_task(session: Session, dag_id: str, task_id: str) -> dict[str, int]:
    """run_id -> instances of the task queued or running (mapped ones each count): what
    max_active_tis_per_dag (their sum) and max_active_tis_per_dagrun count."""
    sql = ("SELECT run_id, count(*) FROM task_instance WHERE dag_id = %s AND task_id = %s AND state IN (%s, %s)"
           " GROUP BY run_id")
    return {run_id: int(n) for run_id, n in session_cursor(session).execute(sql, (dag_id, task_id, *OCCUPYING)).all()}


def skipped_by_upstream(session: Session, dag_id: str, run_id: str) -> dict[str, set[str]]:
    """task_id -> the task ids its last successful try skipped (branches and short-circuits of the run)."""
    from scheduler.db.raw import RawDb

    cur = session_cursor(session)
    found: dict[str, set[str]] = {}
    sql = "SELECT task_id, value FROM xcom WHERE dag_id = %s AND run_id = %s AND key = %s"
    for task_id, value in cur.execute(sql, (dag_id, run_id, SKIPPED_XCOM_KEY)).all():
        data = RawDb.read_json(value)
        skipped = data.get("skipped") if isinstance(data, dict) else None
        if isinstance(skipped, list):
            found.setdefault(task_id, set()).update(str(t) for t in skipped)
    return found


_POOL_SLOTS = "SELECT pool, slots FROM slot_pool"
_POOL_USED = "SELECT pool, sum(pool_slots) FROM task_instance WHERE state IN (%s, %s) GROUP BY pool"


def pool_open_slots(session: Session) -> dict[str, int]:
    """pool name -> slots minus the pool_slots of its queued and running task instances (may be negative)."""
    cur = session_cursor(session)
    slots = {name: int(n) for name, n in cur.execute(_POOL_SLOTS).all()}
    for name, n in cur.execute(_POOL_USED, OCCUPYING).all():
        if name in slots:
            slots[name] -= int(n or 0)
    return slots


def count_occupying(session: Session) -> int:
    """Task instances queued or running, all DAGs (what core.parallelism bounds, per scheduler in this version)."""
    return int(_scalar(session, select(func.count()).select_from(TaskInstance).where(TaskInstance.state.in_(OCCUPYING))) or 0)


_QUEUE_TI = (
    "UPDATE task_instance SET state = %s, try_number = %s, queued_dttm = %s, queued_by_job_id = %s, hostname = %s,"
    " pid = NULL, updated_at = %s WHERE id = %s AND state = %s AND try_number = %s"
)


def queue_ti(session: Session, ti_id: int, try_number: int, *, now: datetime, job_id: int | None, hostname: str) -> bool:
    """scheduled -> queued with the next try number (compare-and-set on state and the current try)."""
    cur = session_cursor(session)
    stamp = db_ts(now, cur.sqlite)
    cur.execute(_QUEUE_TI, (S.QUEUED.value, try_number + 1, stamp, job_id, hostname, stamp, ti_id, S.SCHEDULED.value,
                            try_number))
    return cur.rowcount == 1


# --- lost tries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InFlight:
    """A task instance that an executor holds: queued or running."""

    id: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: S
    try_number: int
    max_tries: int
    hostname: str
    pid: int | None
    last_heartbeat_at: datetime | None
    queued_dttm: datetime | None
    queued_by_job_id: int | None
    logical_date: datetime | None


def in_flight(session: Session, *, ti_ids: Sequence[int] | None = None) -> list[InFlight]:
    """Queued and running task instances (only ``ti_ids`` when given)."""
    query = select(
        TaskInstance.id, TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index,
        TaskInstance.state, TaskInstance.try_number, TaskInstance.max_tries, TaskInstance.hostname,
        TaskInstance.pid, TaskInstance.last_heartbeat_at, TaskInstance.queued_dttm, TaskInstance.queued_by_job_id,
        DagRun.logical_date,
    ).join(
        DagRun, and_(DagRun.dag_id == TaskInstance.dag_id, DagRun.run_id == TaskInstance.run_id)
    ).where(TaskInstance.state.in_(OCCUPYING))
    if ti_ids is not None:
        if not ti_ids:
            return []
        query = query.where(TaskInstance.id.in_(list(ti_ids)))
    return [InFlight(*tuple(row)) for row in _execute(session, query)]


def fail_lost_try(
    session: Session, ti: InFlight, *, retry: bool, next_retry_at: datetime | None, now: datetime, reason: str = ""
) -> bool:
    """A try whose process is gone without recording its end -> up_for_retry or failed (compare-and-set).

    Like a try the runner records, it leaves a task_instance_history row (state failed) and
    a ``log`` row with the reason.
    """
    result = _execute(session,
        update(TaskInstance)
        .where(TaskInstance.id == ti.id, TaskInstance.state == ti.state, TaskInstance.try_number == ti.try_number)
        .values(
            state=S.UP_FOR_RETRY if retry else S.FAILED,
            next_retry_at=next_retry_at if retry else None,
            end_date=now,
            start_date=func.coalesce(TaskInstance.start_date, now),
            updated_at=now,
        )
    )
    if _rowcount(result) != 1:
        return False
    start = _scalar(session, select(TaskInstance.start_date).where(TaskInstance.id == ti.id)) or now
    _execute(session,
        insert(TaskInstanceHistory).values(
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index,
            try_number=ti.try_number, state=S.FAILED, start_date=start, end_date=now,
            duration=max((now - start).total_seconds(), 0.0), hostname=ti.hostname,
        )
    )
    _execute(session,
        insert(Log).values(
            dttm=now, event=(S.UP_FOR_RETRY if retry else S.FAILED).value, owner=None, dag_id=ti.dag_id,
            run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index, try_number=ti.try_number,
            extra=reason or None,
        )
    )
    return True


def requeue_lost(session: Session, ti: InFlight, *, now: datetime) -> bool:
    """A queued try that never started (its executor is gone) -> scheduled again, the try not counted."""
    result = _execute(session,
        update(TaskInstance)
        .where(TaskInstance.id == ti.id, TaskInstance.state == S.QUEUED, TaskInstance.try_number == ti.try_number)
        .values(state=S.SCHEDULED, try_number=ti.try_number - 1, queued_dttm=None, updated_at=now)
    )
    return _rowcount(result) == 1
