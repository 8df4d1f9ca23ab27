"""The scheduler loop's task side: from running runs to task tries handed to an executor, and back.

One pass (:meth:`TaskScheduler.run_once`, called by ``Scheduler.run_once`` after the
run side) has four named steps, each a series of short transactions:

1. :meth:`~TaskScheduler.process_executor_events`: a try's process ended. The task
   runner records every outcome itself, so an ended process whose instance is still
   queued or running died without a word (killed, out of memory, a broken runner):
   that try fails, with a retry if it has tries left, and its failure or retry
   callback is sent to run elsewhere.
2. :meth:`~TaskScheduler.schedule_task_instances`: for each running run, create the
   task instances it lacks (at its start, or for tasks added to the DAG), mark removed
   ones, apply ``dagrun_timeout``, then let :func:`scheduler.dagrun_logic.plan_run`
   decide (trigger rules, skips, retries and reschedules whose time came,
   depends_on_past, EmptyOperators) and finish the run when it is over; the DAG's
   success or failure callback is sent to run elsewhere.
3. :meth:`~TaskScheduler.queue_task_instances`: scheduled -> queued, highest priority
   first, within the executor's free slots (core.parallelism), each DAG's
   max_active_tasks and each pool's open slots; then the workloads go to the executor.
4. :meth:`~TaskScheduler.check_dead_tasks` (every few seconds): a running try on this
   host whose process is gone, or whose heartbeat is older than
   ``scheduler.task_instance_heartbeat_timeout`` on any host, is failed as in step 1.
   At start, queued instances left by an earlier scheduler are scheduled again.

Every change is a compare-and-set (see :mod:`scheduler.db.scheduling`).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from scheduler.dagrun_logic import RunPlan, effective_weights, plan_run
from scheduler.states import DagRunState, TaskInstanceState
from scheduler.workloads import CallbackWorkload, TaskWorkload

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from scheduler.config import Settings
    from scheduler.db.models import DagRun
    from scheduler.db.scheduling import InFlight, TIRow
    from scheduler.executors.base import BaseExecutor, ExecutorEvent
    from scheduler.serialization import SerializedDAG

logger = logging.getLogger(__name__)

S = TaskInstanceState

#: How often running tries are checked for a dead process or a stale heartbeat.
DEAD_TASK_CHECK_SECONDS = 5.0
#: Pages of scheduled candidates read per queueing step when blocked ones fill a page.
MAX_QUEUE_PAGES = 8


@dataclass
class _RunDecision:
    """What one read of a running run decided, to be written (or not) in the iteration's write."""

    run: DagRun
    sdag: SerializedDAG | None = None
    weights: dict[str, int] = field(default_factory=dict)
    rows: list[TIRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    removed: list[TIRow] = field(default_factory=list)
    timed_out: bool = False
    plan: RunPlan | None = None
    #: When this run next needs a look by time (None: only a change can make it need one).
    due: datetime | None = None

    @property
    def writes(self) -> bool:
        if self.sdag is None:
            return False
        if self.missing or self.removed or self.timed_out:
            return True
        return self.plan is not None and (bool(self.plan.changes) or self.plan.run_state is not None)


class _DagCache:
    """Deserialized DAGs by dag_id, rebuilt only when the stored hash changes."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[str, SerializedDAG, dict[str, int]]] = {}

    def get(self, session: Session, dag_id: str) -> tuple[SerializedDAG, dict[str, int]] | None:
        from sqlalchemy import select

        from scheduler.db.models import SerializedDag
        from scheduler.serialization import SerializedDAG

        current = session.scalar(select(SerializedDag.dag_hash).where(SerializedDag.dag_id == dag_id))
        if current is None:
            return None
        cached = self._by_id.get(dag_id)
        if cached is not None and cached[0] == current:
            return cached[1], cached[2]
        data = session.scalar(select(SerializedDag.data).where(SerializedDag.dag_id == dag_id))
        if data is None:
            return None
        sdag = SerializedDAG.from_dict(data)
        weights = effective_weights(sdag)
        self._by_id[dag_id] = (current, sdag, weights)
        return sdag, weights


class TaskScheduler:
    """See the module docstring."""

    def __init__(self, engine: Engine, settings: Settings, executor: BaseExecutor, *, job_id: int | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.executor = executor
        self.job_id = job_id
        # As the task runner records it (gethostname: getfqdn may wait on DNS).
        self.hostname = socket.gethostname()
        self._dags = _DagCache()
        self._next_dead_check = 0.0
        self._reconciled = False
        self._warned_pools: set[str] = set()
        #: Runs this scheduler finished (the run side then has work: queued runs, held-back runs).
        self.runs_finished = 0

    def run_once(self, now: datetime) -> datetime | None:
        """One pass of the four steps; returns when a waiting instance or a run timeout is next due (None: none)."""
        if not self._reconciled:
            self.reconcile_at_start(now)
            self._reconciled = True
        self.process_executor_events(now)
        if time.monotonic() >= self._next_dead_check:
            self._next_dead_check = time.monotonic() + DEAD_TASK_CHECK_SECONDS
            self.check_dead_tasks(now)
        next_due = self.schedule_task_instances(now)
        self.queue_task_instances(now)
        return next_due

    # --- 1. ended processes --------------------------------------------------------------------

    def process_executor_events(self, now: datetime) -> None:
        from scheduler.db import scheduling
        from scheduler.db.engine import retry_transient, session_scope

        events = [e for e in self.executor.drain_events() if e.kind in ("task", "lost")]
        if not events:
            return
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
        writes = [d for d in decisions if d.writes]
        callbacks: list[CallbackWorkload] = []
        if writes:
            callbacks = retry_transient(functools.partial(self._apply, writes, now), what="writing run decisions")
        for callback in callbacks:
            self.executor.queue(callback)
        if _again and any(d.missing for d in writes):
            # Decide the instances just created in this same pass (once: a failing insert is not retried here).
            return self.schedule_task_instances(now, _again=False)
        next_due: datetime | None = None
        for decision in decisions:
            next_due = _earliest(next_due, decision.due)
        return next_due

    def _decide(self, session: Session, run: DagRun, now: datetime) -> _RunDecision:
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
            if "states" not in past_cache:
                wanting = [t for t in sdag.task_order if sdag.tasks[t].get("depends_on_past")]
                past_cache["states"] = scheduling.previous_run_states(session, run.dag_id, run.logical_date, wanting)
            previous = past_cache["states"]
            if previous is None:
                return True  # the first run
            return previous.get(task_id) in (S.SUCCESS, S.SKIPPED)

        rows = decision.rows
        decision.plan = plan_run(
            sdag, {r.task_id: r.state for r in rows}, {r.task_id: r.next_retry_at for r in rows}, now,
            past_allows=past_allows,
        )
        if decision.plan.run_state is None:
            decision.due = _earliest(decision.plan.next_due, timeout_at)
        return decision

    def _apply(self, decisions: list[_RunDecision], now: datetime) -> list[CallbackWorkload]:
        """Write the decisions (compare-and-set), each run in a savepoint; the callbacks to send."""
        from scheduler.db.engine import session_scope

        callbacks: list[CallbackWorkload] = []
        finished = 0
        with session_scope(self.engine) as session:
            for decision in decisions:
                try:
                    with session.begin_nested():
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
        self.runs_finished += finished
        return callbacks

    def _apply_one(self, session: Session, decision: _RunDecision, now: datetime) -> tuple[CallbackWorkload | None, int]:
        from scheduler.db import scheduling

        run, sdag = decision.run, decision.sdag
        assert sdag is not None
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
        by_task = {r.task_id: r for r in decision.rows}
        for task_id, (old, new, why) in plan.changes.items():
            if scheduling.set_ti_state(session, by_task[task_id].id, old, new, now=now):
                if new is not S.SCHEDULED or old is not S.NONE:
                    logger.info("DAG %s run %s: %s %s -> %s (%s)", run.dag_id, run.run_id, task_id, old, new, why)
        if plan.run_state is not None and scheduling.finish_run(session, run.id, plan.run_state, now=now):
            logger.info("DAG %s: run %s finished %s (%s)", run.dag_id, run.run_id, plan.run_state, plan.run_reason)
            reason = "success" if plan.run_state is DagRunState.SUCCESS else plan.run_reason.split(":")[0]
            return self._dag_callback(sdag, run, plan.run_state, reason), 1
        return None, 0

    def _dag_callback(self, sdag: SerializedDAG, run: DagRun, state: DagRunState, reason: str) -> CallbackWorkload | None:
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
        if slots <= 0:
            return 0
        with session_scope(self.engine, readonly=True) as session:
            if not scheduling.any_scheduled(session):
                return 0  # no write transaction (and no wait for the write lock) for nothing
        default_limit = int(self.settings.get("core", "max_active_tasks_per_dag"))

        def unit() -> list[scheduling.Candidate]:
            chosen: list[scheduling.Candidate] = []
            free = slots
            full_pools: set[str] = set()
            full_runs: set[tuple[str, str]] = set()
            with session_scope(self.engine) as session:
                pools = scheduling.pool_open_slots(session)
                occupied: dict[tuple[str, str], int] | None = None
                # Instances blocked by a full pool or run are left out of the next page, so a crowd of
                # blocked high-priority instances never starves ready ones further down.
                for _page in range(MAX_QUEUE_PAGES):
                    page = free * 4 + 64
                    candidates = scheduling.scheduled_candidates(
                        session, limit=page, skip_pools=full_pools, skip_runs=full_runs
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
                        if scheduling.queue_ti(
                            session, c.id, c.try_number, now=now, job_id=self.job_id, hostname=self.hostname
                        ):
                            pools[c.pool] -= c.pool_slots
                            occupied[run_key] = occupied.get(run_key, 0) + 1
                            free -= 1
                            chosen.append(c)
                    if free <= 0 or len(candidates) < page or not blocked:
                        break
            return chosen

        chosen = retry_transient(unit, what="queueing task instances")
        for c in chosen:
            self.executor.queue(
                TaskWorkload(
                    ti_id=c.id, dag_id=c.dag_id, run_id=c.run_id, task_id=c.task_id, map_index=c.map_index,
                    try_number=c.try_number + 1, fileloc=c.fileloc,
                )
            )
        return len(chosen)

    # --- 4. dead tries -----------------------------------------------------------------------------

    def reconcile_at_start(self, now: datetime) -> None:
        """Queued instances of an earlier scheduler go back to scheduled; running ones with a dead process fail."""
        from scheduler.db import scheduling
        from scheduler.db.engine import retry_transient, session_scope

        def load() -> list[InFlight]:
            with session_scope(self.engine, readonly=True) as session:
                return scheduling.in_flight(session)

        for ti in retry_transient(load, what="reading tries left by an earlier scheduler"):
            if ti.state is S.QUEUED and ti.queued_by_job_id != self.job_id:
                with session_scope(self.engine) as session:
                    if scheduling.requeue_lost(session, ti, now=now):
                        logger.info("%s.%s %s: queued by an earlier scheduler; scheduled again", ti.dag_id, ti.task_id, ti.run_id)
        self.check_dead_tasks(now)

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
        from scheduler.task_runner import RetryPolicy, retry_delay

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
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
