"""User actions on task instances and runs: clear, mark a task instance, mark a run.

Used by the CLI (``tasks clear``, ``tasks mark``, ``dags mark-run``) and later by the
REST API and the UI. As in :mod:`scheduler.db.store`, every function takes the session
first and never commits; ``now`` is passed in.

Concurrency: the rows to change are read with ``SELECT ... FOR UPDATE`` (PostgreSQL
row locks; on SQLite the writing session's ``BEGIN IMMEDIATE`` already serialises
writers), so a scheduler or task runner cannot slip a state change in between the
read and the write. A task runner whose running instance is cleared or marked notices
on its next heartbeat that the row is no longer ``running`` and stops.

Semantics (Airflow's, with the choices noted):

* **clear**: matching instances go back to state ``none``, whatever their state
  (running and queued ones too); ``max_tries`` becomes ``try_number + retries`` so the
  task's retries are available again (for a task no longer in the DAG:
  ``max(max_tries, try_number)``); ``next_retry_at``, ``end_date`` and the executor's id
  are cleared and the sensor reschedule rows of those instances deleted (a sensor's
  timeout starts over). Their XComs are kept: the next try clears its own. A run of a
  cleared instance that had finished (success or failed) goes back to ``queued``
  (start and end cleared, ``queued_at`` = now) and the scheduler starts it under
  max_active_runs; a queued or running run stays as it is.
* **mark a task instance** success, failed or skipped: only that instance changes
  (``start_date`` and ``end_date`` are filled in when missing); its run is left to the
  scheduler.
* **mark a run** success: its unfinished instances become success (finished ones keep
  their state; Airflow also turns failed and skipped ones into success, which its own
  users report as misleading). Failed: running instances become failed and the other
  unfinished ones skipped (Airflow's rule). Queued: every instance is cleared as above
  and the run is queued to run again from the start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from scheduler.db.models import Dag, DagRun, TaskInstance, TaskReschedule
from scheduler.exceptions import DagNotFound, DagRunNotFound, TaskNotFound, UpdraftError
from scheduler.states import FINISHED_TI_STATES, DagRunState, TaskInstanceState

TI = TaskInstanceState

#: States a user may mark a task instance with.
MARKABLE_TI_STATES = (TI.SUCCESS, TI.FAILED, TI.SKIPPED)
#: States a user may mark a run with.
MARKABLE_RUN_STATES = (DagRunState.SUCCESS, DagRunState.FAILED, DagRunState.QUEUED)
#: What ``only_failed`` selects (Airflow's failed states).
FAILED_TI_STATES = (TI.FAILED, TI.UPSTREAM_FAILED)
#: Task instance states that are not final.
UNFINISHED_TI_STATES = tuple(s for s in TI if s not in FINISHED_TI_STATES)

_CHUNK = 500


class TaskShape(NamedTuple):
    """What clearing needs to know of one task: its direct neighbours and its retries."""

    upstream: frozenset[str]
    downstream: frozenset[str]
    retries: int = 0


#: task_id -> its shape; a plain ``(upstream ids, downstream ids[, retries])`` tuple is accepted too.
DagStructure = Mapping[str, TaskShape | Sequence[Any]]


class InvalidTaskRegex(UpdraftError, ValueError):
    """The task regex given to clear does not compile."""


class TaskInstanceNotFound(TaskNotFound):
    """No task instance with that id or key; the message says which."""

    def __init__(self, dag_id: str, task_id: str, message: str) -> None:
        super().__init__(dag_id, task_id)
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0])


def structure_from_serialized(sdag: Any) -> dict[str, TaskShape]:
    """The :data:`DagStructure` of a :class:`~scheduler.serialization.SerializedDAG`."""
    return {
        task_id: TaskShape(frozenset(task.upstream), frozenset(task.downstream), int(task.retries))
        for task_id, task in sdag.tasks.items()
    }


def _shapes(structure: DagStructure) -> dict[str, TaskShape]:
    shapes: dict[str, TaskShape] = {}
    for task_id, value in structure.items():
        if isinstance(value, TaskShape):
            shapes[task_id] = value
        else:
            items = tuple(value)
            retries = int(items[2]) if len(items) > 2 else 0
            shapes[task_id] = TaskShape(frozenset(items[0]), frozenset(items[1]), retries)
    return shapes


def select_task_ids(
    structure: DagStructure,
    task_regex: str | None = None,
    *,
    include_upstream: bool = False,
    include_downstream: bool = False,
) -> set[str]:
    """The DAG's task ids that ``task_regex`` finds (``re.search``, as Airflow), plus every task
    upstream and/or downstream of them (transitively) when asked; all tasks without a regex."""
    shapes = _shapes(structure)
    if task_regex is None:
        return set(shapes)
    try:
        pattern = re.compile(task_regex)
    except re.error as exc:
        raise InvalidTaskRegex(f"invalid task regex {task_regex!r}: {exc}") from None
    matched = {task_id for task_id in shapes if pattern.search(task_id)}
    selected = set(matched)
    for wanted, direction in ((include_upstream, "upstream"), (include_downstream, "downstream")):
        if not wanted:
            continue
        stack = list(matched)
        seen: set[str] = set()
        while stack:
            task_id = stack.pop()
            if task_id in seen or task_id not in shapes:
                continue
            seen.add(task_id)
            stack.extend(getattr(shapes[task_id], direction))
        selected |= seen
    return selected


def _check_dag(session: Session, dag_id: str) -> None:
    if session.scalar(select(Dag.dag_id).where(Dag.dag_id == dag_id)) is None:
        raise DagNotFound(dag_id)


def get_dag_run(session: Session, dag_id: str, run_id: str, *, lock: bool = False) -> DagRun:
    """The run; DagNotFound / DagRunNotFound when the DAG or the run does not exist."""
    query = select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    if lock:
        query = query.with_for_update()
    run = session.scalar(query)
    if run is None:
        _check_dag(session, dag_id)
        raise DagRunNotFound(dag_id, run_id)
    return run


def list_task_instances(session: Session, dag_id: str, run_id: str) -> list[TaskInstance]:
    """The run's task instances by task_id and map_index; DagNotFound / DagRunNotFound for unknown ids."""
    get_dag_run(session, dag_id, run_id)
    query = (
        select(TaskInstance)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        .order_by(TaskInstance.task_id, TaskInstance.map_index)
    )
    return list(session.scalars(query))


# --- clear ----------------------------------------------------------------------------------------


def clear_task_instances(
    session: Session,
    dag_id: str,
    *,
    dag_structure: DagStructure,
    now: datetime,
    run_ids: Iterable[str] | None = None,
    task_regex: str | None = None,
    include_downstream: bool = False,
    include_upstream: bool = False,
    only_failed: bool = False,
    only_running: bool = False,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    dry_run: bool = False,
) -> list[TaskInstance]:
    """Clear the DAG's matching task instances (see the module documentation) and return them.

    Selection: the tasks of ``dag_structure`` that ``task_regex`` finds (all without one),
    with their upstream / downstream closure when asked; in ``run_ids`` (all runs when
    None; an unknown id raises DagRunNotFound) whose logical date is within
    ``[start_date, end_date]`` when given; only failed / upstream_failed instances with
    ``only_failed``, only running ones with ``only_running`` (both: either). Instances of
    tasks no longer in the DAG are left alone. ``dry_run`` returns what would be cleared,
    unchanged. The result is ordered by the runs' logical dates and the DAG's task order.
    """
    _check_dag(session, dag_id)
    shapes = _shapes(dag_structure)
    task_ids = select_task_ids(
        shapes, task_regex, include_upstream=include_upstream, include_downstream=include_downstream
    )
    wanted_runs = None if run_ids is None else sorted(set(run_ids))
    if wanted_runs is not None:
        found = set(
            session.scalars(select(DagRun.run_id).where(DagRun.dag_id == dag_id, DagRun.run_id.in_(wanted_runs)))
        )
        missing = [r for r in wanted_runs if r not in found]
        if missing:
            raise DagRunNotFound(dag_id, missing[0])
    if not task_ids or wanted_runs == []:
        return []

    query = select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.task_id.in_(sorted(task_ids)))
    if wanted_runs is not None:
        query = query.where(TaskInstance.run_id.in_(wanted_runs))
    if start_date is not None or end_date is not None:
        runs_in_range = select(DagRun.run_id).where(DagRun.dag_id == dag_id)
        if start_date is not None:
            runs_in_range = runs_in_range.where(DagRun.logical_date >= start_date)
        if end_date is not None:
            runs_in_range = runs_in_range.where(DagRun.logical_date <= end_date)
        query = query.where(TaskInstance.run_id.in_(runs_in_range))
    states: list[TaskInstanceState] = []
    if only_failed:
        states.extend(FAILED_TI_STATES)
    if only_running:
        states.append(TI.RUNNING)
    if states:
        query = query.where(TaskInstance.state.in_(states))
    if not dry_run:
        # Rows locked in one order (by id) by every clear: two clears at once wait for each other
        # instead of deadlocking on PostgreSQL.
        query = query.order_by(TaskInstance.id).with_for_update()
    tis = _ordered(session, dag_id, list(session.scalars(query)), shapes)
    if not dry_run:
        _clear(session, tis, shapes, now)
    return tis


def _ordered(
    session: Session, dag_id: str, tis: list[TaskInstance], shapes: Mapping[str, TaskShape]
) -> list[TaskInstance]:
    if not tis:
        return tis
    run_ids = sorted({ti.run_id for ti in tis})
    when: dict[str, tuple[bool, float, int]] = {}
    for start in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[start : start + _CHUNK]
        rows = session.execute(
            select(DagRun.run_id, DagRun.logical_date, DagRun.id).where(
                DagRun.dag_id == dag_id, DagRun.run_id.in_(chunk)
            )
        )
        for row in rows:
            stamp = row.logical_date.timestamp() if row.logical_date is not None else 0.0
            when[row.run_id] = (row.logical_date is None, stamp, row.id)
    position = {task_id: i for i, task_id in enumerate(shapes)}
    return sorted(
        tis,
        key=lambda ti: (when.get(ti.run_id, (True, 0.0, 0)), ti.run_id,
                        position.get(ti.task_id, len(position)), ti.task_id, ti.map_index),
    )


def _clear(session: Session, tis: list[TaskInstance], shapes: Mapping[str, TaskShape], now: datetime) -> None:
    """Back to state none with retries available again; finished runs of them back to queued."""
    if not tis:
        return
    for ti in tis:
        shape = shapes.get(ti.task_id)
        ti.max_tries = ti.try_number + shape.retries if shape is not None else max(ti.max_tries, ti.try_number)
        ti.state = TI.NONE
        ti.next_retry_at = None
        ti.end_date = None
        ti.external_executor_id = None
        ti.updated_at = now
    session.flush()
    ids = [ti.id for ti in tis]
    for start in range(0, len(ids), _CHUNK):
        session.execute(delete(TaskReschedule).where(TaskReschedule.ti_id.in_(ids[start : start + _CHUNK])))
    by_dag: dict[str, set[str]] = {}
    for ti in tis:
        by_dag.setdefault(ti.dag_id, set()).add(ti.run_id)
    for dag_id, run_ids in by_dag.items():
        _requeue_finished_runs(session, dag_id, sorted(run_ids), now)
        touch_runs(session, dag_id, sorted(run_ids), now)


def touch_runs(session: Session, dag_id: str, run_ids: list[str], now: datetime) -> None:
    """Set the runs' updated_at: a scheduler sleeping beside a user's change to a run's task
    instances notices it (see scheduler.watch.DatabaseWatcher)."""
    for start in range(0, len(run_ids), _CHUNK):
        session.execute(
            update(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.run_id.in_(run_ids[start : start + _CHUNK]))
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )


def _requeue_finished_runs(session: Session, dag_id: str, run_ids: list[str], now: datetime) -> None:
    for start in range(0, len(run_ids), _CHUNK):
        session.execute(
            update(DagRun)
            .where(
                DagRun.dag_id == dag_id,
                DagRun.run_id.in_(run_ids[start : start + _CHUNK]),
                DagRun.state.in_((DagRunState.SUCCESS, DagRunState.FAILED)),
            )
            .values(
                state=DagRunState.QUEUED,
                start_date=None,
                end_date=None,
                queued_at=now,
                last_scheduling_decision=None,
                updated_at=now,
            )
            .execution_options(synchronize_session="fetch")
        )


# --- mark -----------------------------------------------------------------------------------------

#: A task instance's primary key, or (dag_id, run_id, task_id) / (dag_id, run_id, task_id, map_index).
TaskInstanceRef = int | tuple[str, str, str] | tuple[str, str, str, int]


def get_task_instance(session: Session, ref: TaskInstanceRef, *, lock: bool = False) -> TaskInstance:
    """The task instance by id or key; DagNotFound / DagRunNotFound / TaskInstanceNotFound naming what is missing."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        query = select(TaskInstance).where(TaskInstance.id == ref)
        ti = session.scalar(query.with_for_update() if lock else query)
        if ti is None:
            raise TaskInstanceNotFound("?", str(ref), f"task instance with id {ref} not found")
        return ti
    if not isinstance(ref, tuple) or len(ref) not in (3, 4):
        raise TypeError(f"expected a task instance id or (dag_id, run_id, task_id[, map_index]), got {ref!r}")
    dag_id, run_id, task_id = ref[0], ref[1], ref[2]
    map_index = int(ref[3]) if len(ref) == 4 else -1
    query = select(TaskInstance).where(
        TaskInstance.dag_id == dag_id,
        TaskInstance.run_id == run_id,
        TaskInstance.task_id == task_id,
        TaskInstance.map_index == map_index,
    )
    ti = session.scalar(query.with_for_update() if lock else query)
    if ti is None:
        get_dag_run(session, dag_id, run_id)
        where = "" if map_index == -1 else f" (map index {map_index})"
        raise TaskInstanceNotFound(
            dag_id, task_id, f"Task '{task_id}'{where} has no task instance in DAG run '{run_id}' of DAG '{dag_id}'"
        )
    return ti


def _mark(ti: TaskInstance, state: TaskInstanceState, now: datetime) -> None:
    was_finished = ti.state in FINISHED_TI_STATES
    ti.state = state
    ti.start_date = ti.start_date or now
    if not was_finished or ti.end_date is None:
        ti.end_date = now
    ti.duration = max((ti.end_date - ti.start_date).total_seconds(), 0.0)
    ti.next_retry_at = None
    ti.updated_at = now


def mark_task_instance(
    session: Session, ref: TaskInstanceRef, state: TaskInstanceState | str, *, now: datetime
) -> TaskInstance:
    """Set one task instance's state to success, failed or skipped (see the module documentation)."""
    target = _state(TaskInstanceState, state, MARKABLE_TI_STATES, "task instance")
    ti = get_task_instance(session, ref, lock=True)
    if ti.state is not target:
        _mark(ti, target, now)
        session.flush()
        touch_runs(session, ti.dag_id, [ti.run_id], now)
    return ti


def mark_dag_run(
    session: Session,
    dag_id: str,
    run_id: str,
    state: DagRunState | str,
    *,
    now: datetime,
    dag_structure: DagStructure | None = None,
) -> list[TaskInstance]:
    """Set a run's state to success, failed or queued, with its task instances (see the module
    documentation); returns the task instances that changed. ``dag_structure`` gives the tasks'
    retries for ``queued`` (without it a cleared instance keeps its max_tries)."""
    target = _state(DagRunState, state, MARKABLE_RUN_STATES, "DAG run")
    run = get_dag_run(session, dag_id, run_id, lock=True)
    tis = list(
        session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskInstance.task_id, TaskInstance.map_index)
            .with_for_update()
        )
    )
    changed: list[TaskInstance] = []
    if target is DagRunState.QUEUED:
        changed = tis
        _clear(session, tis, _shapes(dag_structure or {}), now)
        run.state = DagRunState.QUEUED
        run.start_date = None
        run.end_date = None
        run.queued_at = now
        run.last_scheduling_decision = None
    else:
        for ti in tis:
            if ti.state in FINISHED_TI_STATES:
                continue
            if target is DagRunState.SUCCESS:
                new = TI.SUCCESS
            else:
                new = TI.FAILED if ti.state is TI.RUNNING else TI.SKIPPED
            _mark(ti, new, now)
            changed.append(ti)
        run.state = target
        run.end_date = now
    run.updated_at = now
    session.flush()
    return changed


def _state(enum: Any, value: Any, allowed: Sequence[Any], what: str) -> Any:
    try:
        state = enum(value)
    except ValueError:
        state = None
    if state not in allowed:
        names = ", ".join(s.value for s in allowed)
        raise ValueError(f"a {what} can be marked {names}; got {value!r}")
    return state

