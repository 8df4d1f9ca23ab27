"""`updraft dags backfill`: runs for the past logical dates of a DAG, queued for the scheduler to start.

Two halves:

* :func:`backfill_infos` and :func:`plan_backfill` are pure: the timetable's logical
  dates in ``[start, end]`` (both inclusive), and for each one what to do given the
  scheduled/backfill run that already holds its slot, if any.
* :func:`create_backfill` reads the existing runs, plans, and (unless ``dry_run``)
  writes the plan in the caller's session: an INSERT per new run (guarded by the
  unique slot), one conditional UPDATE per re-queued run plus one UPDATE of its task
  instances. The caller's transaction makes it all or nothing.

Decisions (Airflow 3's backfill where it has one; see docs/architecture.md):

* The DAG's ``catchup``, ``start_date`` and ``end_date`` do not limit the range: the
  user's range does. A timedelta schedule keeps the phase of its grid
  (``start_date + k * delta``), so backfill runs land on the same slots as scheduled ones.
* Only periodic schedules can be backfilled (not ``None``, not ``@once``).
* A slot held by a queued or running run is always left alone; a manual run never
  holds a slot, so it never blocks a backfill run.
* The scheduler starts the queued runs under max_active_runs, oldest first; nothing
  here starts a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from scheduler.exceptions import UpdraftError
from scheduler.states import DagRunState, DagRunType
from scheduler.timetables.base import DagRunInfo, DataInterval, Timetable, as_utc
from scheduler.timetables.interval import DeltaTimetable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from scheduler.serialization import SerializedDAG


class BackfillError(UpdraftError, ValueError):
    """A backfill that cannot be made as asked (bad range, a DAG without a schedule); the message says why."""


class ReprocessBehavior(StrEnum):
    """What to do with a logical date whose slot already holds a finished run."""

    NONE = "none"  #: leave every existing run alone
    FAILED = "failed"  #: re-queue failed runs
    COMPLETED = "completed"  #: re-queue failed and successful runs


class Action(StrEnum):
    CREATE = "create"
    REQUEUE = "requeue"
    SKIP = "skip"


@dataclass(frozen=True)
class ExistingRun:
    """The scheduled or backfill run that holds a logical date's slot."""

    run_id: str
    state: DagRunState
    pk: int | None = None


@dataclass(frozen=True)
class PlannedRun:
    """One logical date of the backfill and what to do about it."""

    logical_date: datetime
    data_interval: DataInterval
    run_id: str
    action: Action
    existing_state: DagRunState | None = None

    def outcome(self, *, dry_run: bool = False) -> str:
        """``created`` / ``requeued`` / ``skipped (exists, <state>)``; ``would be ...`` on a dry run."""
        if self.action is Action.SKIP:
            return f"skipped (exists, {self.existing_state})"
        done = "created" if self.action is Action.CREATE else "requeued"
        return f"would be {done}" if dry_run else done

    def record(self, *, dry_run: bool = False) -> dict[str, Any]:
        return {
            "logical_date": self.logical_date.isoformat(),
            "run_id": self.run_id,
            "outcome": self.outcome(dry_run=dry_run),
            "data_interval_start": self.data_interval.start.isoformat(),
            "data_interval_end": self.data_interval.end.isoformat(),
        }


def backfill_run_id(logical_date: datetime) -> str:
    return f"{DagRunType.BACKFILL.value}__{as_utc(logical_date, 'logical_date').isoformat()}"


def _describe_schedule(timetable: Timetable) -> str:
    return "schedule=None" if timetable.summary is None else f"schedule={timetable.summary!r}"


def check_backfillable(dag_id: str, timetable: Timetable) -> None:
    """BackfillError unless the DAG's timetable repeats on its own (cron or timedelta)."""
    if not timetable.periodic:
        raise BackfillError(
            f"DAG '{dag_id}' has no time-based schedule ({_describe_schedule(timetable)}); "
            "only DAGs with a cron or timedelta schedule can be backfilled"
        )


def _grid_start(timetable: Timetable, start: datetime, dag_start_date: datetime | None) -> datetime:
    """Where the walk begins: ``start``, or for a timedelta schedule the first point of the DAG's grid at or after it."""
    if isinstance(timetable, DeltaTimetable) and dag_start_date is not None:
        anchor = as_utc(dag_start_date, "start_date")
        steps = -((anchor - start) // timetable.delta)  # ceil((start - anchor) / delta), negative before the anchor
        return anchor + steps * timetable.delta
    return start


def backfill_infos(
    timetable: Timetable, start: datetime, end: datetime, *, dag_start_date: datetime | None = None
) -> list[DagRunInfo]:
    """Every run the timetable makes with a logical date in ``[start, end]``, in order (pure)."""
    start, end = as_utc(start, "start"), as_utc(end, "end")
    if start > end:
        raise BackfillError(f"the start date {start.isoformat()} is after the end date {end.isoformat()}")
    first = _grid_start(timetable, start, dag_start_date)
    infos: list[DagRunInfo] = []
    last: datetime | None = None
    while True:
        # catchup=True with an anchor never looks at `now`; `end` passed as the DAG's end_date stops the walk.
        info = timetable.next_dagrun_info(
            last_automated_data_interval=None,
            last_logical_date=last,
            start_date=first,
            end_date=end,
            catchup=True,
            now=end,
        )
        if info is None or info.logical_date > end or (last is not None and info.logical_date <= last):
            return infos
        if info.logical_date >= start:
            infos.append(info)
        last = info.logical_date


def plan_backfill(
    sdag: SerializedDAG,
    start: datetime,
    end: datetime,
    existing_runs: Mapping[datetime, ExistingRun],
    *,
    reprocess: ReprocessBehavior | str = ReprocessBehavior.NONE,
) -> list[PlannedRun]:
    """What to do for each logical date in ``[start, end]``; ``existing_runs`` maps logical dates (UTC) to slot holders."""
    reprocess = ReprocessBehavior(reprocess)
    timetable = sdag.timetable
    check_backfillable(sdag.dag_id, timetable)
    requeue_states = {
        ReprocessBehavior.NONE: frozenset(),
        ReprocessBehavior.FAILED: frozenset({DagRunState.FAILED}),
        ReprocessBehavior.COMPLETED: frozenset({DagRunState.FAILED, DagRunState.SUCCESS}),
    }[reprocess]
    plan: list[PlannedRun] = []
    for info in backfill_infos(timetable, start, end, dag_start_date=sdag.start_date):
        held = existing_runs.get(info.logical_date)
        if held is None:
            plan.append(PlannedRun(info.logical_date, info.data_interval, backfill_run_id(info.logical_date), Action.CREATE))
            continue
        state = DagRunState(held.state)
        action = Action.REQUEUE if state in requeue_states else Action.SKIP
        plan.append(PlannedRun(info.logical_date, info.data_interval, held.run_id, action, state))
    return plan


def create_backfill(
    session: Session,
    sdag: SerializedDAG,
    start: datetime,
    end: datetime,
    *,
    reprocess: ReprocessBehavior | str = ReprocessBehavior.NONE,
    conf: dict[str, Any] | None = None,
    now: datetime,
    dry_run: bool = False,
) -> list[PlannedRun]:
    """Plan the backfill against the database and carry it out in ``session`` (nothing written when ``dry_run``).

    Returns what was done per logical date. A slot taken or changed by someone else
    meanwhile (a scheduler) is reported as skipped with the state found, not as an error.
    The caller commits; any error leaves the whole backfill unwritten.
    """
    from scheduler.db import store

    now = as_utc(now, "now")
    check_backfillable(sdag.dag_id, sdag.timetable)
    infos = backfill_infos(sdag.timetable, start, end, dag_start_date=sdag.start_date)
    if not infos:
        return []
    existing = {
        run.logical_date: ExistingRun(run.run_id, DagRunState(run.state), run.id)
        for run in store.slotted_dag_runs_between(session, sdag.dag_id, infos[0].logical_date, infos[-1].logical_date)
        if run.logical_date is not None
    }
    plan = plan_backfill(sdag, start, end, existing, reprocess=reprocess)
    if dry_run:
        return plan
    done: list[PlannedRun] = []
    for item in plan:
        if item.action is Action.CREATE:
            try:
                store.create_dag_run(
                    session,
                    dag_id=sdag.dag_id,
                    run_id=item.run_id,
                    run_type=DagRunType.BACKFILL,
                    logical_date=item.logical_date,
                    data_interval=item.data_interval,
                    conf=conf or {},
                    state=DagRunState.QUEUED,
                    run_after=now,
                    now=now,
                    external_trigger=False,
                )
            except store.DagRunAlreadyExists as exc:
                if exc.logical_date is None:  # the run_id belongs to another run (e.g. a manual one): an error
                    raise
                item = _skipped_now(session, sdag.dag_id, item)
        elif item.action is Action.REQUEUE:
            held = existing[item.logical_date]
            assert held.pk is not None and item.existing_state is not None
            if not store.requeue_dag_run(session, held.pk, expected_state=item.existing_state, now=now):
                item = _skipped_now(session, sdag.dag_id, item)
        done.append(item)
    return done


def _skipped_now(session: Session, dag_id: str, item: PlannedRun) -> PlannedRun:
    """The slot was taken or changed after we looked: report it as skipped, with what holds it now."""
    from scheduler.db import store

    runs = store.slotted_dag_runs_between(session, dag_id, item.logical_date, item.logical_date)
    if not runs:
        raise BackfillError(f"the run at {item.logical_date.isoformat()} changed while backfilling; try again")
    run = runs[0]
    return PlannedRun(item.logical_date, item.data_interval, run.run_id, Action.SKIP, DagRunState(run.state))
