"""The scheduler loop's task side: from running runs to task tries handed to an executor, and back.

One pass (:meth:`TaskScheduler.run_once`, called by ``Scheduler.run_once`` after the
run side) has four named steps, each a series of short transactions:

1. :meth:`~TaskScheduler.process_executor_events`: a try's process ended. The task
   runner records every outcome itself, so an ended process whose instance is still
   queued or running died without a word (killed, out of memory, a broken runner):
   that try fails, with a retry if it has tries left, and its failure or retry
   callback is sent to run elsewhere.
   Before it, :meth:`~TaskScheduler.follow_recorded`: a try whose runner announced its
   record may have a successor noted when the try was queued (one that waited only for
   it); if the database confirms, that successor is queued at once, ahead of step 2.
   When that covered everything the records changed, steps 2 and 3 are skipped
   (see :meth:`TaskScheduler.run_once`).
2. :meth:`~TaskScheduler.schedule_task_instances`: for each running run, create the
   task instances it lacks (at its start, or for tasks added to the DAG), mark removed
   ones, apply ``dagrun_timeout``, then let :func:`scheduler.dagrun_logic.plan_run`
   decide (trigger rules, skips, retries and reschedules whose time came,
   depends_on_past, EmptyOperators) and finish the run when it is over; the DAG's
   success or failure callback is sent to run elsewhere.
3. :meth:`~TaskScheduler.queue_task_instances`: scheduled -> queued, highest priority
   first, within the executor's free slots (core.parallelism), each run's
   max_active_tasks, each pool's open slots and each task's max_active_tis_per_dag
   and max_active_tis_per_dagrun; then the workloads go to the executor.
4. :meth:`~TaskScheduler.check_dead_tasks` (every few seconds): a running try on this
   host whose process is gone, or whose heartbeat is older than
   ``scheduler.task_instance_heartbeat_timeout`` on any host, is failed as in step 1.
   At start, queued instances left by an earlier scheduler are scheduled again.

Every change is a compare-and-set (see :mod:`scheduler.db.scheduling`).
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from scheduler.dagrun_logic import RunPlan, effective_weights, plan_run
from scheduler.states import DagRunState, TaskInstanceState
from scheduler.workloads import CallbackWorkload, TaskWorkload

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from scheduler.config import Settings
    from scheduler.db.scheduling import Candidate, InFlight, RunRow, TIRow
    from scheduler.executors.base import BaseExecutor, ExecutorEvent
    from scheduler.serialization import SerializedDAG

logger = logging.getLogger(__name__)

S = TaskInstanceState

#: How often running tries are checked for a dead process or a stale heartbeat.
DEAD_TASK_CHECK_SECONDS = 5.0
#: Pages of scheduled candidates read per queueing step when blocked ones fill a page.
MAX_QUEUE_PAGES = 8
#: At most this many successor hints are kept (see :meth:`TaskScheduler.follow_recorded`).
MAX_SUCCESSOR_HINTS = 10_000
#: An iteration woken only by recorded tries whose successors were all queued from the record
#: skips the full decision (see :meth:`TaskScheduler.run_once`), but never when the last full
#: decision is older than this: whatever changed unannounced is then seen within it.
MAX_DECISION_AGE_SECONDS = 1.0


@dataclass(frozen=True)
class _Successor:
    """A task the last decision found waiting only for one queued try to succeed (all_success, its
    other upstreams succeeded): when that try's runner announces its record, the loop checks this
    and queues the task before deciding everything again (:meth:`TaskScheduler.follow_recorded`)."""

    try_number: int
    run_pk: int
    ti_id: int
    #: The task instance ids of all its upstreams (the try's own included), each to be a success.
    upstream_ids: tuple[int, ...]
    #: The run's dagrun_timeout moment (None: none): past it, the full decision handles the run.
    timeout_at: datetime | None


@dataclass
class _RunDecision:
    """What one read of a running run decided, to be written (or not) in the iteration's write."""

    run: RunRow
    sdag: SerializedDAG | None = None
    weights: dict[str, int] = field(default_factory=dict)
    rows: list[TIRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    removed: list[TIRow] = field(default_factory=list)
    timed_out: bool = False
    plan: RunPlan | None = None
    #: When this run next needs a look by time (None: only a change can make it need one).
    due: datetime | None = None
    #: (task_id, map_index, asset uri) of successful outlet instances whose asset event is not recorded yet.
    asset_events: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        if self.sdag is None:
            return False
        if self.missing or self.removed or self.timed_out or self.asset_events:
            return True
        return self.plan is not None and (
            bool(self.plan.changes or self.plan.mapped_changes or self.plan.expansions) or self.plan.run_state is not None
        )


#: Whether a run's DAG changed since it was deserialized (on the session's cursor: see scheduler.db.scheduling).
_DAG_HASH = "SELECT dag_hash FROM serialized_dag WHERE dag_id = %s"


class _DagCache:
    """Deserialized DAGs by dag_id, rebuilt only when the stored hash changes."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[str, SerializedDAG, dict[str, int]]] = {}

    def get(self, session: Session, dag_id: str) -> tuple[SerializedDAG, dict[str, int]] | None:
        from sqlalchemy import select

        from scheduler.db.models import SerializedDag
        from scheduler.db.raw import session_cursor
        from scheduler.serialization import SerializedDAG

        current = session_cursor(session).execute(_DAG_HASH, (dag_id,)).scalar()
        if current is None:
            return None
        cached = self._by_id.get(dag_id)
        if cached is not None and cached[0] == current:
            return cached[1], cached[2]
        data = session.connection().execute(select(SerializedDag.data).where(SerializedDag.dag_id == dag_id)).scalar()
        if data is None:
            return None
        sdag = SerializedDAG.from_dict(data)
        weights = effective_weights(sdag)
        self._by_id[dag_id] = (current, sdag, weights)
        return sdag, weights

    def last(self, session: Session, dag_id: str) -> SerializedDAG | None:
        """The DAG as last deserialized here (the deciding step keeps it current), else as stored now."""
        cached = self._by_id.get(dag_id)
        if cached is not None:
            return cached[1]
        found = self.get(session, dag_id)
        return None if found is None else found[0]


class TaskScheduler:
    """See the module docstring."""

    def __init__(self, engine: Engine, settings: Settings, executor: BaseExecutor, *, job_id: int | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.engine = engine
        #: True once the scheduler is asked to stop: an iteration then ends at the next run it would
        #: decide or write, and queues nothing more (a catch-up of thousands of runs is one iteration).
        self.stopping = stopping
        self.settings = settings
        self.executor = executor
        self.job_id = job_id
        # As the task runner records it (gethostname: getfqdn may wait on DNS).
        self.hostname = socket.gethostname()
        self._dags = _DagCache()
        self._outlets: dict[str, tuple[SerializedDAG, dict[str, list[str]]]] = {}
        self._next_dead_check = 0.0
        #: The last deciding step set some instance to scheduled.
        self._wrote_scheduled = False
        #: Whether the last deciding step, which read every running run, saw a scheduled instance
        #: (None: it did not read them all); the queueing step then needs no look of its own.
        self._saw_scheduled: bool | None = None
        #: What the last deciding step queued in its own transaction (None: it queued nothing).
        self._queued_with_decisions: list[Candidate] | None = None
        self._reconciled = False
        #: How many runs were running at the last decision (the executor keeps warm while any are).
        self._running_runs = 0
        #: Queued task instance id -> the tasks that wait only for its success (see follow_recorded).
        self._successors: dict[int, list[_Successor]] = {}
        #: Those of them whose success needs nothing decided but those tasks (see run_once).
        self._whole: set[int] = set()
        #: The last follow_recorded queued every successor of every try recorded since the iteration before.
        self.covered = False
        #: When the full decision last ran (monotonic) and what it said was next due.
        self._decided_at = float("-inf")
        self._decided_due: datetime | None = None
        #: Tries queued in this iteration (their successors are noted at its end) and its decisions.
        self._to_note: list[Candidate] = []
        self._last_decisions: list[_RunDecision] = []
        self._downstream: dict[str, tuple[SerializedDAG, dict[str, list[str]], bool]] = {}
        self._warned_pools: set[str] = set()
        #: dag_id -> (the DAG version, task_id -> its (max_active_tis_per_dag, max_active_tis_per_dagrun)).
        self._task_limits: dict[str, tuple[SerializedDAG, dict[str, tuple[int | None, int | None]]]] = {}
        #: Runs this scheduler finished (the run side then has work: queued runs, held-back runs).
        self.runs_finished = 0

    def run_once(self, now: datetime, *, only_recorded: bool = False) -> datetime | None:
        """One pass of the four steps; returns when a waiting instance or a run timeout is next due (None: none).

        ``only_recorded``: nothing but the executor woke this iteration. When, besides, every try
        recorded since the last one was a success whose downstream tasks were all queued by
        :meth:`follow_recorded`, and no process ended badly, nothing is left to decide: the
        deciding and queueing steps are skipped (a chain step then costs the scheduler one
        transaction). Tries of DAGs with depends_on_past, or of tasks with asset outlets, never
        skip them (a success there matters to other runs or DAGs), nor does an iteration past
        the last decision's next due time or :data:`MAX_DECISION_AGE_SECONDS` after it.
        """
        if not self._reconciled:
            self.reconcile_at_start(now)
            self._reconciled = True
        self.follow_recorded(now)
        ended = self.process_executor_events(now)
        checked = time.monotonic() >= self._next_dead_check
        if checked:
            self._next_dead_check = time.monotonic() + DEAD_TASK_CHECK_SECONDS
            self.adopt_dead_schedulers(now)
            self.check_dead_tasks(now)
        if (only_recorded and self.covered and not ended and not checked and not self.stopping()
                and time.monotonic() - self._decided_at < MAX_DECISION_AGE_SECONDS
                and (self._decided_due is None or now < self._decided_due)):
            next_due = self._decided_due
        else:
            next_due = self.schedule_task_instances(now)
            if self._queued_with_decisions is None:
                self.queue_task_instances(now)
            self._decided_at, self._decided_due = time.monotonic(), next_due
        self.executor.keep_warm(self._running_runs > 0)
        if self._to_note:
            self._note_successors(self._last_decisions, self._to_note)
            self._to_note = []
        return next_due

    # --- 1. ended processes --------------------------------------------------------------------

    def process_executor_events(self, now: datetime) -> int:
        """Fail the tries whose process ended without recording them; returns how many ended so."""
        from scheduler.db import scheduling
        from scheduler.db.engine import retry_transient, session_scope

        # A task runner that exits 0 recorded its try or found it was no longer its own: nothing to check.
        events = [e for e in self.executor.drain_events()
                  if e.kind == "lost" or (e.kind == "task" and e.returncode != 0)]
        if not events:
            return 0
        by_ti = {int(e.key[0]): e for e in events}

        def load() -> list[InFlight]:
            with session_scope(self.engine, readonly=True) as session:
                return scheduling.in_flight(session, ti_ids=sorted(by_ti))

        for ti in retry_transient(load, what="reading ended tries"):
            event = by_ti[ti.id]
            if int(event.key[1]) != ti.try_number:
                continue  # a later try of the same instance is under way
            if event.kind == "lost" and ti.state is S.RUNNING and _pid_alive(ti.pid) and ti.hostname == self.hostname:
                continue  # its process outlived the executor; the heartbeat check watches it
            self._fail_lost(ti, _describe_exit(event), now)
        return len(events)

    # --- 1b. successors of recorded tries --------------------------------------------------------------

    def follow_recorded(self, now: datetime) -> int:
        """Queue the successors of tries whose runners just announced their record, ahead of the full
        decision; returns how many were queued.

        When the loop queued a try it also noted each downstream task that waited only for that
        try (trigger rule all_success, every other upstream a success, not mapped, no
        depends_on_past, not an EmptyOperator). Here, in one write transaction, the database says
        whether that still holds: the try and the other upstreams succeeded, the task is still
        'none' and its run is running. Then the task is scheduled and the usual queueing step
        runs (priorities, pools, max_active_tasks, free slots all apply). In a chain this hands
        the next try over before the run's full decision, which follows in the same iteration
        and finds it queued. Anything that does not hold is left to that decision.
        """
        from scheduler.db.engine import retry_transient, session_scope
        from scheduler.db.raw import session_cursor

        self.covered = False
        keys = self.executor.drain_recorded()
        hints: list[_Successor] = []
        whole = bool(keys)  # so far, every recorded try has all its successors hinted, and no more to it
        for key in keys:
            ti_id = int(key[0])
            found = self._successors.pop(ti_id, None) or []
            valid = [h for h in found if h.try_number == int(key[1]) and (h.timeout_at is None or now < h.timeout_at)]
            whole = whole and ti_id in self._whole and bool(valid) and len(valid) == len(found)
            self._whole.discard(ti_id)
            hints.extend(valid)
        slots = self.executor.open_slots()
        if not hints or slots <= 0 or self.stopping():
            return 0

        def unit() -> tuple[list[Candidate], set[int]]:
            from scheduler.db import scheduling

            with session_scope(self.engine) as session:
                cur = session_cursor(session)
                ids = sorted({i for h in hints for i in (h.ti_id, *h.upstream_ids)})
                marks = ", ".join(["%s"] * len(ids))
                states = dict(cur.execute(f"SELECT id, state FROM task_instance WHERE id IN ({marks})", ids).all())
                runs = sorted({h.run_pk for h in hints})
                marks = ", ".join(["%s"] * len(runs))
                running = {pk for pk, state in cur.execute(f"SELECT id, state FROM dag_run WHERE id IN ({marks})",
                                                           runs).all() if state == DagRunState.RUNNING.value}
                scheduled: set[int] = set()
                for h in hints:
                    if (h.run_pk in running and states.get(h.ti_id) == S.NONE.value
                            and all(states.get(u) == S.SUCCESS.value for u in h.upstream_ids)
                            and scheduling.set_ti_state(session, h.ti_id, S.NONE, S.SCHEDULED, now=now)):
                        scheduled.add(h.ti_id)
                return (self._queue_in(session, slots, now) if scheduled else []), scheduled

        chosen, scheduled = retry_transient(unit, what="queueing the successors of recorded tries")
        self._dispatch(chosen)
        self.covered = whole and len(scheduled) == len(hints) and scheduled <= {c.id for c in chosen}
        return len(chosen)

    def _note_successors(self, decisions: list[_RunDecision], chosen: list[Candidate]) -> None:
        """For each try just queued, the tasks that will wait only for its success (see follow_recorded)."""
        from scheduler.dagrun_logic import runs_without_executing

        by_run = {(d.run.dag_id, d.run.run_id): d for d in decisions if d.sdag is not None and d.plan is not None}
        if len(self._successors) > MAX_SUCCESSOR_HINTS:
            self._successors.clear()  # tries that never recorded (lost, cleared): forget them all
            self._whole.clear()
        rows_of: dict[tuple[str, str], dict[str, TIRow] | None] = {}
        for c in chosen:
            decision = by_run.get((c.dag_id, c.run_id))
            if decision is None or c.map_index >= 0 or decision.sdag is None:
                continue
            sdag = decision.sdag
            downstream = self._downstream_of(sdag).get(c.task_id)
            if not downstream:
                continue
            if (c.dag_id, c.run_id) not in rows_of:
                # A run with mapped instances is left to the full decision, which counts them.
                mapped = any(r.map_index >= 0 for r in decision.rows)
                rows_of[(c.dag_id, c.run_id)] = None if mapped else {r.task_id: r for r in decision.rows}
            rows = rows_of[(c.dag_id, c.run_id)]
            if rows is None:
                continue
            timeout_at = (decision.run.start_date + sdag.dagrun_timeout
                          if sdag.dagrun_timeout and decision.run.start_date else None)
            found = []
            for task_id in downstream:
                task, row = sdag.tasks[task_id], rows.get(task_id)
                if (row is None or row.state is not S.NONE or task.trigger_rule != "all_success"
                        or task.get("is_mapped") or task.get("depends_on_past")
                        or runs_without_executing(sdag, task_id)):
                    continue
                upstream = [rows.get(u) for u in sorted(task.upstream)]
                if any(u is None or sdag.tasks[u.task_id].get("is_mapped")
                       or (u.task_id != c.task_id and u.state is not S.SUCCESS) for u in upstream):
                    continue
                found.append(_Successor(try_number=c.try_number + 1, run_pk=decision.run.id, ti_id=row.id,
                                        upstream_ids=tuple(u.id for u in upstream if u is not None),
                                        timeout_at=timeout_at))
            if found:
                self._successors[c.id] = found
                if len(found) == len(downstream) and c.task_id not in self._outlets_of(sdag) and not self._past_bound(sdag):
                    self._whole.add(c.id)  # its success needs nothing decided but these (see run_once)

    def _downstream_of(self, sdag: SerializedDAG) -> dict[str, list[str]]:
        """task_id -> the tasks directly downstream of it (kept per DAG version)."""
        return self._graph_of(sdag)[1]

    def _past_bound(self, sdag: SerializedDAG) -> bool:
        """Whether a task of ``sdag`` waits on an earlier run (depends_on_past, wait_for_downstream)."""
        return self._graph_of(sdag)[2]

    def _graph_of(self, sdag: SerializedDAG) -> tuple[SerializedDAG, dict[str, list[str]], bool]:
        cached = self._downstream.get(sdag.dag_id)
        if cached is not None and cached[0] is sdag:
            return cached
        downstream: dict[str, list[str]] = {}
        for task_id in sdag.task_order:
            for upstream in sdag.tasks[task_id].upstream:
                downstream.setdefault(upstream, []).append(task_id)
        past_bound = any(t.get("depends_on_past") or t.get("wait_for_downstream") for t in sdag.tasks.values())
        graph = self._downstream[sdag.dag_id] = (sdag, downstream, past_bound)
        return graph

    # --- 2. deciding -----------------------------------------------------------------------------

    def schedule_task_instances(self, now: datetime, *, _again: bool = True) -> datetime | None:
        """Decide every running run in one read-only transaction, then write what changes in one more.

        Most iterations change one or two runs; reading them all from one snapshot and
        writing in a single transaction keeps an iteration to two round trips of
        transaction overhead, and on SQLite only the write waits for the write lock.
        Each run's changes are applied in a savepoint: one run that fails to apply is
        logged and retried next time without undoing the others.
        """
        from scheduler.db import scheduling
        from scheduler.db.engine import retry_transient, session_scope

        def read() -> list[_RunDecision]:
            decisions = []
            with session_scope(self.engine, readonly=True) as session:
                for run in scheduling.running_runs(session):
                    if self.stopping():
                        break
                    try:
                        decision = self._decide(session, run, now)
                    except Exception:
                        logger.exception(
                            "DAG %s: cannot decide the tasks of run %s; trying again later", run.dag_id, run.run_id
                        )
                        decision = _RunDecision(run=run, due=now + timedelta(seconds=1))
                    decisions.append(decision)
            return decisions

        decisions = retry_transient(read, what="deciding running runs")
        self._last_decisions = decisions
        self._running_runs = len(decisions)
        complete = not self.stopping() and all(d.sdag is not None for d in decisions)
        self._saw_scheduled = any(r.state is S.SCHEDULED for d in decisions for r in d.rows) if complete else None
        writes = [d for d in decisions if d.writes]
        # The queueing step then knows there is work without looking (a read transaction saved).
        self._wrote_scheduled = any(
            new is S.SCHEDULED for d in writes if d.plan is not None for _old, new, _why in d.plan.changes.values()
        )
        callbacks: list[CallbackWorkload] = []
        self._queued_with_decisions = None
        if writes:
            callbacks = retry_transient(functools.partial(self._apply, writes, now), what="writing run decisions")
        if self._queued_with_decisions is not None:
            self._dispatch(self._queued_with_decisions)
        for callback in callbacks:
            self.executor.queue(callback)
        if _again and not self.stopping() and any(d.missing or (d.plan is not None and d.plan.expansions) for d in writes):
            # Decide the instances just created in this same pass (once: a failing insert is not retried here).
            return self.schedule_task_instances(now, _again=False)
        next_due: datetime | None = None
        for decision in decisions:
            next_due = _earliest(next_due, decision.due)
        return next_due

    def _decide(self, session: Session, run: RunRow, now: datetime) -> _RunDecision:
        from scheduler.db import scheduling

        found = self._dags.get(session, run.dag_id)
        if found is None:
            return _RunDecision(run=run)  # the DAG vanished; its runs wait until it is back (or a user marks them)
        sdag, weights = found
        rows = scheduling.run_task_instances(session, run.dag_id, run.run_id)
        present = {r.task_id for r in rows}
        decision = _RunDecision(run=run, sdag=sdag, weights=weights)
        decision.missing = [t for t in sdag.task_order if t not in present]
        decision.removed = [
            r for r in rows
            if r.task_id not in sdag.tasks and r.state not in (S.REMOVED, S.SUCCESS, S.FAILED, S.SKIPPED)
        ]
        decision.rows = [r for r in rows if r.task_id in sdag.tasks]
        timeout_at = run.start_date + sdag.dagrun_timeout if sdag.dagrun_timeout and run.start_date else None
        decision.timed_out = timeout_at is not None and now >= timeout_at
        if decision.missing or decision.timed_out:
            return decision
        past_cache: dict[str, dict[str, S] | None] = {}

        def past_allows(task_id: str) -> bool:
            if run.logical_date is None:
                return True
            downstream = self._downstream_of(sdag)
            if "states" not in past_cache:
                wanting = {t for t in sdag.task_order if sdag.tasks[t].get("depends_on_past")}
                for t in [t for t in wanting if sdag.tasks[t].get("wait_for_downstream")]:
                    wanting.update(downstream.get(t, ()))
                past_cache["states"] = scheduling.previous_run_states(
                    session, run.dag_id, run.logical_date, sorted(wanting))
            previous = past_cache["states"]
            if previous is None:
                return True  # the first run
            done = (S.SUCCESS, S.SKIPPED)
            if previous.get(task_id) not in done:
                return False
            # wait_for_downstream (Airflow): the previous run's direct downstream tasks succeeded or were skipped too.
            return not sdag.tasks[task_id].get("wait_for_downstream") or all(
                previous.get(d) in done for d in downstream.get(task_id, ()))

        skip_lists: dict[str, set[str]] | None = None

        def skipped_by(task_id: str) -> str | None:
            nonlocal skip_lists
            parents = [u for u in sorted(sdag.tasks[task_id].upstream) if sdag.tasks[u].get("skips_downstream")]
            if not parents:
                return None
            if skip_lists is None:
                skip_lists = scheduling.skipped_by_upstream(session, run.dag_id, run.run_id)
            return next((u for u in parents if task_id in skip_lists.get(u, ())), None)

        outlets = self._outlets_of(sdag)
        if outlets:
            from scheduler.db.assets import outlet_events_missing

            succeeded = [(r.task_id, r.map_index) for r in decision.rows if r.state is S.SUCCESS and r.task_id in outlets]
            decision.asset_events = outlet_events_missing(session, run.dag_id, run.run_id, succeeded, outlets)
        rows = [r for r in decision.rows if r.map_index < 0]
        expanded = [r for r in decision.rows if r.map_index >= 0]  # instances of mapped tasks
        mapped_states: dict[str, dict[int, S]] = {}
        for r in expanded:
            mapped_states.setdefault(r.task_id, {})[r.map_index] = r.state
        max_map_length = int(self.settings.get("core", "max_map_length"))

        def map_length(task_id: str) -> int | str:
            from scheduler.db import mapping

            return mapping.map_length(session, sdag, run.run_id, task_id, max_map_length)

        decision.plan = plan_run(
            sdag, {r.task_id: r.state for r in rows}, {r.task_id: r.next_retry_at for r in rows}, now,
            past_allows=past_allows, skipped_by=skipped_by, mapped_states=mapped_states,
            mapped_retry_at={(r.task_id, r.map_index): r.next_retry_at for r in expanded}, map_length=map_length,
        )
        if decision.plan.run_state is None:
            decision.due = _earliest(decision.plan.next_due, timeout_at)
        return decision

    def _outlets_of(self, sdag: SerializedDAG) -> dict[str, list[str]]:
        """task_id -> asset URIs it updates, for the tasks of ``sdag`` with asset outlets (kept per DAG version)."""
        cached = self._outlets.get(sdag.dag_id)
        if cached is not None and cached[0] is sdag:
            return cached[1]
        from scheduler.db.assets import outlet_tasks

        outlets = outlet_tasks(sdag.data)
        self._outlets[sdag.dag_id] = (sdag, outlets)
        return outlets

    def _apply(self, decisions: list[_RunDecision], now: datetime) -> list[CallbackWorkload]:
        """Write the decisions (compare-and-set), each run in a savepoint; the callbacks to send."""
        from scheduler.db.engine import session_scope
        from scheduler.db.raw import savepoint

        callbacks: list[CallbackWorkload] = []
        finished = 0
        self._queued_with_decisions = None
        with session_scope(self.engine) as session:
            for decision in decisions:
                if self.stopping():
                    break  # the rest is decided again by the next scheduler
                try:
                    with savepoint(session):
                        callback, ended = self._apply_one(session, decision, now)
                except Exception:
                    run = decision.run
                    logger.exception("DAG %s: cannot write the decisions for run %s; trying again later",
                                     run.dag_id, run.run_id)
                    decision.due = now + timedelta(seconds=1)
                    continue
                finished += ended
                if callback is not None:
                    callbacks.append(callback)
            self._queue_with_decisions(session, now)
        self.runs_finished += finished
        return callbacks

    def _queue_with_decisions(self, session: Session, now: datetime) -> None:
        """Queue what the decisions just scheduled in their own transaction (one commit per iteration,
        not two); the queueing step of this iteration is then skipped. A failure here leaves the
        queueing to that step."""
        from scheduler.db.raw import savepoint

        slots = self.executor.open_slots()
        if not self._wrote_scheduled or slots <= 0 or self.stopping():
            return
        try:
            with savepoint(session):
                self._queued_with_decisions = self._queue_in(session, slots, now)
        except Exception:
            logger.exception("cannot queue task instances with the run decisions; the queueing step will")
            self._queued_with_decisions = None

    def _apply_one(self, session: Session, decision: _RunDecision, now: datetime) -> tuple[CallbackWorkload | None, int]:
        from scheduler.db import scheduling

        run, sdag = decision.run, decision.sdag
        assert sdag is not None
        if decision.asset_events:
            from scheduler.db.assets import record_outlet_events

            if record_outlet_events(session, run.dag_id, run.run_id, decision.asset_events, now):
                self.runs_finished += 1  # not a finished run, but the run side has work: asset-triggered runs
        for row in decision.removed:
            scheduling.set_ti_state(session, row.id, row.state, S.REMOVED, now=now)
        if decision.missing:
            scheduling.create_task_instances(session, sdag, run.run_id, decision.weights, decision.missing, now=now)
            return None, 0
        if decision.timed_out:
            skipped = scheduling.unfinished_to(session, run.dag_id, run.run_id, S.SKIPPED, now=now)
            if not scheduling.finish_run(session, run.id, DagRunState.FAILED, now=now):
                return None, 0
            logger.info("DAG %s: run %s timed out after %s; %d unfinished tasks skipped",
                        run.dag_id, run.run_id, sdag.dagrun_timeout, skipped)
            return self._dag_callback(sdag, run, DagRunState.FAILED, "timed_out"), 1
        plan = decision.plan
        assert plan is not None
        by_task = {r.task_id: r for r in decision.rows if r.map_index < 0}
        for task_id, (old, new, why) in plan.changes.items():
            if new is S.FAILED and sdag.tasks[task_id].get("is_mapped"):
                from scheduler.db import mapping

                if mapping.fail_unexpandable(session, by_task[task_id].id, run.dag_id, run.run_id, task_id, why, now=now):
                    logger.warning("DAG %s run %s: %s failed: %s", run.dag_id, run.run_id, task_id, why)
            elif scheduling.set_ti_state(session, by_task[task_id].id, old, new, now=now):
                if new is not S.SCHEDULED or old is not S.NONE:
                    logger.info("DAG %s run %s: %s %s -> %s (%s)", run.dag_id, run.run_id, task_id, old, new, why)
        if plan.mapped_changes or plan.expansions:
            from scheduler.db import mapping

            by_index = {(r.task_id, r.map_index): r for r in decision.rows if r.map_index >= 0}
            for (task_id, index), (old, new, why) in plan.mapped_changes.items():
                if scheduling.set_ti_state(session, by_index[(task_id, index)].id, old, new, now=now):
                    if new is not S.SCHEDULED or old is not S.NONE:
                        logger.info("DAG %s run %s: %s[%d] %s -> %s (%s)", run.dag_id, run.run_id, task_id, index,
                                    old, new, why)
            for task_id, length in plan.expansions.items():
                weight = decision.weights.get(task_id, sdag.tasks[task_id].priority_weight)
                if mapping.expand(session, sdag, run.run_id, task_id, length, weight=weight, now=now):
                    logger.info("DAG %s run %s: %s expanded into %d task instances", run.dag_id, run.run_id,
                                task_id, length)
        if plan.run_state is not None and scheduling.finish_run(session, run.id, plan.run_state, now=now):
            logger.info("DAG %s: run %s finished %s (%s)", run.dag_id, run.run_id, plan.run_state, plan.run_reason)
            reason = "success" if plan.run_state is DagRunState.SUCCESS else plan.run_reason.split(":")[0]
            return self._dag_callback(sdag, run, plan.run_state, reason), 1
        return None, 0

    def _dag_callback(self, sdag: SerializedDAG, run: RunRow, state: DagRunState, reason: str) -> CallbackWorkload | None:
        wanted = "has_on_success_callback" if state is DagRunState.SUCCESS else "has_on_failure_callback"
        if not sdag.data.get(wanted):
            return None
        return CallbackWorkload(
            callback="dag_success" if state is DagRunState.SUCCESS else "dag_failure",
            dag_id=run.dag_id, run_id=run.run_id, fileloc=sdag.fileloc, reason=reason,
        )

    # --- 3. queueing --------------------------------------------------------------------------------

    def queue_task_instances(self, now: datetime) -> int:
        """Hand as many scheduled instances to the executor as the limits allow; returns how many."""
        from scheduler.db import scheduling
        from scheduler.db.engine import retry_transient, session_scope

        slots = self.executor.open_slots()
        if slots <= 0 or self.stopping():
            return 0
        saw, self._saw_scheduled = self._saw_scheduled, None
        if not self._wrote_scheduled:
            if saw is False:
                return 0  # the deciding step read every running run: nothing waits to be queued
            if saw is None:
                with session_scope(self.engine, readonly=True) as session:
                    if not scheduling.any_scheduled(session):
                        return 0  # no write transaction (and no wait for the write lock) for nothing

        def unit() -> list[scheduling.Candidate]:
            with session_scope(self.engine) as session:
                return self._queue_in(session, slots, now)

        chosen = retry_transient(unit, what="queueing task instances")
        self._dispatch(chosen)
        return len(chosen)

    def _dispatch(self, chosen: list[Candidate]) -> None:
        """Hand the queued instances to the executor (after their transaction committed)."""
        self._to_note.extend(chosen)
        for c in chosen:
            self.executor.queue(
                TaskWorkload(
                    ti_id=c.id, dag_id=c.dag_id, run_id=c.run_id, task_id=c.task_id, map_index=c.map_index,
                    try_number=c.try_number + 1, fileloc=c.fileloc, queue=c.queue,
                )
            )

    def _queue_in(self, session: Session, slots: int, now: datetime) -> list[Candidate]:
        """scheduled -> queued for as many instances as ``slots`` and the limits allow, in ``session``."""
        from scheduler.db import ha, scheduling

        default_limit = int(self.settings.get("core", "max_active_tasks_per_dag"))
        chosen: list[Candidate] = []
        free = slots
        full_pools: set[str] = set()
        full_runs: set[tuple[str, str]] = set()
        full_tasks: set[tuple[str, str, str | None]] = set()
        ha.lock_pools(session)  # several schedulers queue one at a time (PostgreSQL; see db/ha.py)
        pools = scheduling.pool_open_slots(session)
        occupied: dict[tuple[str, str], int] | None = None
        #: (dag_id, task_id) -> run_id -> its instances queued or running, for tasks with a limit of their own.
        by_task: dict[tuple[str, str], dict[str, int]] = {}
        # Instances blocked by a full pool or run are left out of the next page, so a crowd of
        # blocked high-priority instances never starves ready ones further down.
        for _page in range(MAX_QUEUE_PAGES):
            page = free * 4 + 64
            candidates = scheduling.scheduled_candidates(
                session, limit=page, skip_pools=full_pools, skip_runs=full_runs, skip_tasks=full_tasks
            )
            if not candidates:
                break
            if occupied is None:
                occupied = scheduling.occupied_by_run(session, (c.dag_id for c in candidates))
            else:
                occupied.update(
                    {k: v for k, v in scheduling.occupied_by_run(
                        session, (c.dag_id for c in candidates)).items() if k not in occupied}
                )
            blocked = False
            for c in candidates:
                if free <= 0:
                    break
                run_key = (c.dag_id, c.run_id)
                limit = c.max_active_tasks if c.max_active_tasks is not None else default_limit
                if occupied.get(run_key, 0) >= limit:
                    full_runs.add(run_key)
                    blocked = True
                    continue
                if c.pool not in pools:
                    if c.pool not in self._warned_pools:
                        self._warned_pools.add(c.pool)
                        logger.warning(
                            "task %s.%s uses pool '%s', which does not exist; it stays scheduled until it does",
                            c.dag_id, c.task_id, c.pool,
                        )
                    full_pools.add(c.pool)
                    blocked = True
                    continue
                if pools[c.pool] < c.pool_slots:
                    if pools[c.pool] <= 0:
                        full_pools.add(c.pool)
                    blocked = True
                    continue
                limits = self._limits_of(session, c.dag_id).get(c.task_id)
                counts: dict[str, int] | None = None
                if limits is not None:
                    task_key = (c.dag_id, c.task_id)
                    if task_key not in by_task:
                        by_task[task_key] = scheduling.occupied_by_task(session, c.dag_id, c.task_id)
                    counts = by_task[task_key]
                    per_dag, per_run = limits
                    if per_dag is not None and sum(counts.values()) >= per_dag:
                        full_tasks.add((c.dag_id, c.task_id, None))
                        blocked = True
                        continue
                    if per_run is not None and counts.get(c.run_id, 0) >= per_run:
                        full_tasks.add((c.dag_id, c.task_id, c.run_id))
                        blocked = True
                        continue
                if scheduling.queue_ti(
                    session, c.id, c.try_number, now=now, job_id=self.job_id, hostname=self.hostname
                ):
                    if counts is not None:
                        counts[c.run_id] = counts.get(c.run_id, 0) + 1
                    pools[c.pool] -= c.pool_slots
                    occupied[run_key] = occupied.get(run_key, 0) + 1
                    free -= 1
                    chosen.append(c)
            if free <= 0 or len(candidates) < page or not blocked:
                break
        return chosen

    def _limits_of(self, session: Session, dag_id: str) -> dict[str, tuple[int | None, int | None]]:
        """task_id -> (max_active_tis_per_dag, max_active_tis_per_dagrun) for the DAG's tasks that set either."""
        sdag = self._dags.last(session, dag_id)
        if sdag is None:
            return {}
        cached = self._task_limits.get(dag_id)
        if cached is not None and cached[0] is sdag:
            return cached[1]
        found = {}
        for task_id, task in sdag.tasks.items():
            per_dag, per_run = task.get("max_active_tis_per_dag"), task.get("max_active_tis_per_dagrun")
            if per_dag is not None or per_run is not None:
                found[task_id] = (per_dag, per_run)
        self._task_limits[dag_id] = (sdag, found)
        return found

    # --- 4. dead tries -----------------------------------------------------------------------------

    def reconcile_at_start(self, now: datetime) -> None:
        """Queued instances of an earlier scheduler go back to scheduled; running ones with a dead process fail."""
        from scheduler.db import scheduling
        from scheduler.db.engine import retry_transient, session_scope

        def load() -> list[InFlight]:
            with session_scope(self.engine, readonly=True) as session:
                return scheduling.in_flight(session)

        live = self._live_schedulers(now)
        for ti in retry_transient(load, what="reading tries left by an earlier scheduler"):
            if ti.state is S.QUEUED and ti.queued_by_job_id != self.job_id and ti.queued_by_job_id not in live:
                with session_scope(self.engine) as session:
                    if scheduling.requeue_lost(session, ti, now=now):
                        logger.info("%s.%s %s: queued by an earlier scheduler; scheduled again", ti.dag_id, ti.task_id, ti.run_id)
        self.check_dead_tasks(now)

    def _live_schedulers(self, now: datetime) -> set[int]:
        """Ids of the other live schedulers, whose queued instances are theirs to run (db/ha.py)."""
        from scheduler.clock import utcnow
        from scheduler.db import ha
        from scheduler.db.engine import retry_transient, session_scope

        def load() -> set[int]:
            with session_scope(self.engine, readonly=True) as session:
                # Heartbeats are written on the wall clock, whatever ``now`` a test drives the loop with.
                return ha.live_scheduler_ids(session, now=utcnow(), threshold=ha.health_threshold(self.settings))

        return retry_transient(load, what="reading the live schedulers") - {self.job_id}

    def adopt_dead_schedulers(self, now: datetime) -> None:
        """Queued instances of schedulers dead for scheduler_health_check_threshold go back to scheduled."""
        from scheduler.clock import utcnow
        from scheduler.db import ha

        if ha.adopt_dead_schedulers(self.engine, now=utcnow(), threshold=ha.health_threshold(self.settings),
                                    own_job_id=self.job_id):
            self._wrote_scheduled = True

    def check_dead_tasks(self, now: datetime) -> None:
        from scheduler.db import scheduling
        from scheduler.db.engine import retry_transient, session_scope

        timeout = timedelta(seconds=float(self.settings.get("scheduler", "task_instance_heartbeat_timeout")))
        mine = {int(key[0]) for key, w in self.executor.running.items() if w.kind == "task"}

        def load() -> list[InFlight]:
            with session_scope(self.engine, readonly=True) as session:
                return [ti for ti in scheduling.in_flight(session) if ti.state is S.RUNNING]

        for ti in retry_transient(load, what="checking running tries"):
            if ti.hostname == self.hostname and ti.pid is not None and not _pid_alive(ti.pid) and ti.id not in mine:
                self._fail_lost(ti, f"its process (pid {ti.pid}) is gone", now)
            elif ti.last_heartbeat_at is not None and now - ti.last_heartbeat_at > timeout:
                self._fail_lost(ti, f"no heartbeat for {int((now - ti.last_heartbeat_at).total_seconds())} s", now)

    def _fail_lost(self, ti: InFlight, why: str, now: datetime) -> None:
        """Fail (or retry, after the task's own retry delay) a try that ended without recording its outcome,
        and send its callback."""
        from scheduler.db import scheduling
        from scheduler.db.engine import session_scope
        from scheduler.retry_policy import RetryPolicy, retry_delay

        retry = ti.try_number <= ti.max_tries
        with session_scope(self.engine) as session:
            found = self._dags.get(session, ti.dag_id)
            sdag = found[0] if found is not None else None
            task = sdag.tasks.get(ti.task_id) if sdag is not None else None
            policy = RetryPolicy.of_serialized(task.data if task is not None else None)
            delay = retry_delay(
                policy, dag_id=ti.dag_id, task_id=ti.task_id, logical_date=ti.logical_date, run_id=ti.run_id,
                try_number=ti.try_number,
            )
            changed = scheduling.fail_lost_try(
                session, ti, retry=retry, next_retry_at=now + delay if retry else None, now=now,
                reason=f"the task's process ended without recording its state: {why}",
            )
        if not changed:
            return
        state = "up_for_retry" if retry else "failed"
        logger.warning(
            "%s.%s %s try %d: ended without recording its state (%s); marked %s",
            ti.dag_id, ti.task_id, ti.run_id, ti.try_number, why, state,
        )
        wanted = "has_on_retry_callback" if retry else "has_on_failure_callback"
        if task is not None and sdag is not None and task.get(wanted):
            self.executor.queue(
                CallbackWorkload(
                    callback="task_retry" if retry else "task_failure",
                    dag_id=ti.dag_id, run_id=ti.run_id, fileloc=sdag.fileloc, task_id=ti.task_id,
                    map_index=ti.map_index, try_number=ti.try_number, ti_id=ti.id,
                    reason=f"the task's process ended without recording its state: {why}",
                )
            )


def _earliest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def _pid_alive(pid: int | None) -> bool:
    from scheduler.db.ha import pid_alive

    return pid is not None and pid_alive(pid)


def _describe_exit(event: ExecutorEvent) -> str:
    if event.kind == "lost":
        return "the executor lost it"
    if event.returncode < 0:
        import signal

        try:
            name = signal.Signals(-event.returncode).name
        except ValueError:
            name = f"signal {-event.returncode}"
        return f"its runner was killed by {name}"
    return f"its runner exited with code {event.returncode}"
