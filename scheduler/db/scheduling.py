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
from typing import Any

from sqlalchemy import CursorResult, and_, bindparam, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from scheduler.db.models import DEFAULT_POOL, Dag, DagRun, Log, Pool, TaskInstance, TaskInstanceHistory
from scheduler.serialization import SerializedDAG
from scheduler.states import DagRunState, TaskInstanceState

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


_RUNNING_RUNS = select(DagRun.__table__).where(DagRun.__table__.c.state == DagRunState.RUNNING).order_by(
    DagRun.__table__.c.id
)


def running_runs(session: Session) -> list[Any]:
    """Every running run, oldest start first: rows with a DagRun's attributes (read-only)."""
    return list(_execute(session, _RUNNING_RUNS))


def finish_run(session: Session, run_pk: int, state: DagRunState, *, now: datetime) -> bool:
    """running -> success/failed (compare-and-set); False when the run was not running any more."""
    result = _execute(session,
        update(DagRun)
        .where(DagRun.id == run_pk, DagRun.state == DagRunState.RUNNING)
        .values(state=state, end_date=now, updated_at=now)
    )
    return _rowcount(result) == 1


# --- task instances -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TIRow:
    """The columns of a task instance that scheduling decisions read."""

    id: int
    task_id: str
    map_index: int
    state: S
    try_number: int
    max_tries: int
    next_retry_at: datetime | None


#: The loop's most frequent statements are built once, with bound parameters: building one costs
#: more than running it.
_RUN_TIS = select(
    TaskInstance.id, TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state,
    TaskInstance.try_number, TaskInstance.max_tries, TaskInstance.next_retry_at,
).where(TaskInstance.dag_id == bindparam("dag_id"), TaskInstance.run_id == bindparam("run_id"))


def run_task_instances(session: Session, dag_id: str, run_id: str) -> list[TIRow]:
    return [TIRow(*row) for row in _execute(session, _RUN_TIS, {"dag_id": dag_id, "run_id": run_id})]


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
    if new is S.SCHEDULED:
        result = _execute(session, _TO_SCHEDULED, {"ti_id": ti_id, "old": old, "now": now})  # the usual change
        return _rowcount(result) == 1
    result = _execute(session, update(TaskInstance).where(TaskInstance.id == ti_id, TaskInstance.state == old).values(**values))
    return _rowcount(result) == 1


_TO_SCHEDULED = (
    update(TaskInstance)
    .where(TaskInstance.id == bindparam("ti_id"), TaskInstance.state == bindparam("old"))
    .values(state=S.SCHEDULED, updated_at=bindparam("now"), next_retry_at=None)
)


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


@dataclass(frozen=True)
class Candidate:
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
    select(
        TaskInstance.id, TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index,
        TaskInstance.try_number, TaskInstance.pool, TaskInstance.pool_slots, TaskInstance.priority_weight,
        Dag.fileloc, Dag.max_active_tasks, TaskInstance.queue,
    )
    .join(DagRun, and_(DagRun.dag_id == TaskInstance.dag_id, DagRun.run_id == TaskInstance.run_id))
    .join(Dag, Dag.dag_id == TaskInstance.dag_id)
    .where(TaskInstance.state == S.SCHEDULED, DagRun.state == DagRunState.RUNNING, Dag.is_active.is_(True))
    .order_by(TaskInstance.priority_weight.desc(), DagRun.logical_date, DagRun.id, TaskInstance.id)
)


def scheduled_candidates(
    session: Session, *, limit: int, skip_pools: Iterable[str] = (), skip_runs: Iterable[tuple[str, str]] = ()
) -> list[Candidate]:
    """Scheduled instances of running runs of active DAGs, highest priority first, then oldest run.

    ``skip_pools`` and ``skip_runs`` leave out instances that could not be queued anyway
    (a full pool, a run at its max_active_tasks), so they never hide the ones that can.
    """
    query = _CANDIDATES.limit(limit)
    pools = sorted(set(skip_pools))
    if pools:
        query = query.where(TaskInstance.pool.not_in(pools))
    runs = sorted(set(skip_runs))
    if runs:
        query = query.where(tuple_(TaskInstance.dag_id, TaskInstance.run_id).not_in(runs))
    return [Candidate(*row) for row in _execute(session, query)]


def any_scheduled(session: Session) -> bool:
    """Whether any task instance is scheduled (waiting to be queued)."""
    return _scalar(session, select(TaskInstance.id).where(TaskInstance.state == S.SCHEDULED).limit(1)) is not None


def occupied_by_run(session: Session, dag_ids: Iterable[str]) -> dict[tuple[str, str], int]:
    """(dag_id, run_id) -> task instances queued or running: what max_active_tasks counts (per run, as in Airflow 3)."""
    ids = sorted(set(dag_ids))
    if not ids:
        return {}
    rows = _execute(session, _OCCUPIED, {"dag_ids": ids})
    return {(dag_id, run_id): int(n) for dag_id, run_id, n in rows}


_OCCUPIED = (
    select(TaskInstance.dag_id, TaskInstance.run_id, func.count())
    .where(TaskInstance.dag_id.in_(bindparam("dag_ids", expanding=True)), TaskInstance.state.in_(OCCUPYING))
    .group_by(TaskInstance.dag_id, TaskInstance.run_id)
)


_POOL_SLOTS = select(Pool.pool, Pool.slots)
_POOL_USED = (
    select(TaskInstance.pool, func.sum(TaskInstance.pool_slots))
    .where(TaskInstance.state.in_(OCCUPYING))
    .group_by(TaskInstance.pool)
)


def pool_open_slots(session: Session) -> dict[str, int]:
    """pool name -> slots minus the pool_slots of its queued and running task instances (may be negative)."""
    slots = {name: int(n) for name, n in _execute(session, _POOL_SLOTS)}
    used = _execute(session, _POOL_USED)
    for name, n in used:
        if name in slots:
            slots[name] -= int(n or 0)
    return slots


def count_occupying(session: Session) -> int:
    """Task instances queued or running, all DAGs (what core.parallelism bounds, per scheduler in this version)."""
    return int(_scalar(session, select(func.count()).select_from(TaskInstance).where(TaskInstance.state.in_(OCCUPYING))) or 0)


_QUEUE_TI = (
    update(TaskInstance)
    .where(TaskInstance.id == bindparam("ti_id"), TaskInstance.state == S.SCHEDULED,
           TaskInstance.try_number == bindparam("old_try"))
    .values(
        state=S.QUEUED, try_number=bindparam("new_try"), queued_dttm=bindparam("now"),
        queued_by_job_id=bindparam("job_id"), hostname=bindparam("host"), pid=None, updated_at=bindparam("now"),
    )
)


def queue_ti(session: Session, ti_id: int, try_number: int, *, now: datetime, job_id: int | None, hostname: str) -> bool:
    """scheduled -> queued with the next try number (compare-and-set on state and the current try)."""
    result = _execute(session, _QUEUE_TI, {
        "ti_id": ti_id, "old_try": try_number, "new_try": try_number + 1, "now": now, "job_id": job_id,
        "host": hostname,
    })
    return _rowcount(result) == 1


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
