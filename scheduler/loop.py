"""The scheduler process: one iteration is :meth:`Scheduler.run_once`, ``run()`` loops around it.

One iteration, with ``now`` passed in (so tests drive it step by step):

1. :meth:`Scheduler.sync_dags`: parse the new and changed DAG files (the parse workers
   are kept between iterations). Under ``run()`` this happens only when the folder
   watcher saw a change, or every ``[dag_processor] refresh_interval`` as a safety net.
2. :meth:`Scheduler.create_due_runs`: for each active, unpaused DAG with a schedule,
   create the scheduled runs that are due, in order, while the DAG has fewer active
   (queued or running) runs than its max_active_runs; record the next one on the DAG.
   A DAG is looked at again only when it may have something to do: its serialized
   form changed, its count of active runs changed, or its next run came due.
3. :meth:`Scheduler.start_queued_runs`: queued -> running, oldest first, within
   max_active_runs.

Between iterations ``run()`` sleeps until the earliest next run is due, or until a
watcher (:mod:`scheduler.watch`) reports a changed DAG file or a commit by another
process (a trigger, an unpause, a backfill), whichever comes first. An idle scheduler
therefore costs a few wake-ups a second that each read one SQLite counter.

Every run is an INSERT guarded by the unique (dag_id, logical_date) slot, every start a
compare-and-set UPDATE, so a second scheduler (or this one after a crash) never
duplicates anything. Each DAG's work is its own short transaction; a DAG whose
serialized form or schedule cannot be evaluated is logged and skipped, the others go on.

With an executor (``run()`` always has one), each iteration then runs the task side,
:class:`scheduler.task_scheduling.TaskScheduler`: deciding the running runs' task
instances, queueing them to the executor, finishing runs, failing lost tries.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING

from scheduler.clock import utcnow

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from scheduler.config import Settings
    from scheduler.db.store import DagHead
    from scheduler.executors.base import BaseExecutor
    from scheduler.parsing import ParserPool
    from scheduler.serialization import SerializedDAG
    from scheduler.task_scheduling import TaskScheduler
    from scheduler.timetables.base import DagRunInfo
    from scheduler.watch import DatabaseWatcher, FolderWatcher

logger = logging.getLogger(__name__)

#: Scheduled runs created per DAG per iteration; the rest follow in the next iterations.
MAX_RUNS_PER_DAG_PER_ITERATION = 100
#: The longest sleep between iterations when the DAG folder cannot be watched (it is scanned instead).
POLL_SLEEP_SECONDS = 1.0
# Otherwise the longest sleep is [scheduler] scheduler_heartbeat_sec (5 s): the scheduler_job row's
# heartbeat, and a safety net for anything no watcher reports.
#: How often the sleeping loop asks the database watcher whether another process committed.
DB_POLL_SECONDS = {"sqlite": 0.1, "postgresql": 0.25}
#: When a DAG's runs could not be created for a database error, it is looked at again this much later.
RETRY_LATER = timedelta(seconds=1)
#: Parse workers idle this long are stopped (their memory returned); about 0.1 s to start again.
IDLE_PARSERS_SECONDS = 5.0
#: After a failed iteration the loop waits 1, 2, 4 ... seconds, at most this long, and tries again.
MAX_ERROR_BACKOFF_SECONDS = 30.0
#: With at least this many task tries running, a wake-up by an ended try waits
#: :data:`BUSY_GATHER_SECONDS` for others before the iteration, so one iteration handles several
#: (a wide fan-out ends a try every few milliseconds; each iteration reads all its runs' task
#: instances). A slot freed then waits that long for its next try among this many busy ones; a
#: lone chain is never held back.
BUSY_GATHER_RUNNING = 8
BUSY_GATHER_SECONDS = 0.02


@dataclass(frozen=True)
class _DagOutcome:
    """What creating runs for one DAG left behind: when it is next due (None: not by time), and if more is due now."""

    next_due: datetime | None
    more_now: bool
    created: int = 0


@dataclass(frozen=True)
class _DagMemo:
    """Why a DAG needs no look until a change: the serialized form and active-run count it was judged with."""

    dag_hash: str
    active_runs: int
    #: When it is next due by time; None: only a change can make it due.
    next_due: datetime | None


class Scheduler:
    """Creates the scheduled runs of the DAGs in the database and starts queued runs.

    ``with Scheduler(engine, settings) as s: s.run()``; or call :meth:`run_once` with a
    fixed ``now`` in tests, then :meth:`close`.
    """

    def __init__(self, engine: Engine, settings: Settings, *, executor: BaseExecutor | None = None) -> None:
        self.engine = engine
        self.settings = settings
        #: Runs task tries; None: this scheduler only creates and starts runs (``run()`` makes one from settings).
        self.executor = executor
        self._tasks: TaskScheduler | None = None
        self.job_id: int | None = None
        self._next_heartbeat = 0.0
        self._last_parse = time.monotonic()
        #: When the run side (create, start runs) is next due, as of its last pass.
        self._run_side_due: datetime | None = None
        self._heartbeat_seconds = float(settings.get("scheduler", "scheduler_heartbeat_sec"))
        self._pool: ParserPool | None = None
        self._stop = threading.Event()
        self._stop_reason = ""
        from scheduler.watch import Wakeup

        self._wakeup = Wakeup()
        self._memos: dict[str, _DagMemo] = {}
        self._folder_watcher: FolderWatcher | None = None
        self._db_watcher: DatabaseWatcher | None = None
        #: Set by the folder watcher's thread; cleared when a scan starts.
        self._folder_dirty = True
        self._next_rescan = 0.0

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- one iteration --------------------------------------------------------------------------

    def run_once(self, now: datetime, *, tasks_only: bool = False) -> float:
        """One iteration at ``now``; returns the seconds until something is next due by time (0: due now).

        ``tasks_only`` (``run()`` passes it when only task tries ended since the last
        iteration, and no run finished) skips the run side: nothing there can have changed.
        The task side may then skip its decision too (``TaskScheduler.run_once``, ``only_recorded``).
        """
        tasks_only = tasks_only and self.executor is not None and not self._scan_needed()
        if tasks_only:
            next_due = self._run_side_due
        else:
            if self._scan_needed():
                self._folder_dirty = False
                self._next_rescan = time.monotonic() + float(self.settings.get("dag_processor", "refresh_interval"))
                self.sync_dags(now)
            next_due = self.create_due_runs(now)
            self.start_queued_runs(now)
            self._run_side_due = next_due
        if self.executor is not None:
            task_due = self._task_scheduler().run_once(now, only_recorded=tasks_only)
            if task_due is not None and (next_due is None or task_due < next_due):
                next_due = task_due
        if next_due is None:
            return float("inf")
        return max(0.0, (next_due - now).total_seconds())

    def sync_dags(self, now: datetime) -> None:
        """Parse what changed in the DAG folder, with worker processes kept across iterations."""
        from scheduler.dag_processing import sync_dag_folder

        report = sync_dag_folder(self.engine, self.settings, now=now, pool=self._parser_pool())
        if report.parsed:
            self._last_parse = time.monotonic()
        if report.parsed or report.removed:
            logger.info(
                "DAG folder synced: %d files parsed (%d with errors), %d removed",
                report.parsed, report.errors, report.removed,
            )

    def create_due_runs(self, now: datetime) -> datetime | None:
        """Create the due scheduled runs of every schedulable DAG; return the earliest time more become due."""
        from scheduler.db import assets, store
        from scheduler.db.engine import retry_transient, session_scope

        def listing() -> tuple[list[DagHead], dict[str, int]]:
            with session_scope(self.engine, readonly=True) as session:
                return store.schedulable_dag_heads(session), store.active_run_counts(session)

        heads, active = retry_transient(listing, what="listing schedulable DAGs")
        memos: dict[str, _DagMemo] = {}
        next_due: datetime | None = None
        for head in heads:
            if self._stop.is_set():
                break  # stopping: the DAGs not looked at yet are the next scheduler's
            memo = self._memos.get(head.dag_id)
            active_runs = active.get(head.dag_id, 0)
            if (
                memo is not None
                and memo.dag_hash == head.dag_hash
                and memo.active_runs == active_runs
                and (memo.next_due is None or memo.next_due > now)
            ):
                memos[head.dag_id] = memo  # nothing changed and nothing is due: not even a query
            else:
                memo = self._look_at_dag(head, active_runs, now)
                memos[head.dag_id] = memo
            if memo.next_due is not None and (next_due is None or memo.next_due < next_due):
                next_due = memo.next_due
        self._memos = memos
        assets.create_asset_triggered_runs_logged(self.engine, now)  # DAGs scheduled on updated assets
        return next_due

    def _look_at_dag(self, head: DagHead, active_runs: int, now: datetime) -> _DagMemo:
        """Create the DAG's due runs; return the memo that lets later iterations skip it until something changes."""
        from sqlalchemy.exc import DBAPIError

        from scheduler.db import store
        from scheduler.db.engine import retry_transient, session_scope

        dag_id = head.dag_id
        try:
            outcome = retry_transient(
                lambda: self._create_runs_for_dag(dag_id, now), what=f"DAG {dag_id}: creating scheduled runs"
            )
        except DBAPIError:
            logger.exception("DAG %s: database error while creating its runs; trying again shortly", dag_id)
            return _DagMemo(head.dag_hash, active_runs, now + RETRY_LATER)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.exception("DAG %s: its schedule cannot be evaluated; skipped until its file changes", dag_id)
            if head.schedule_error != error:
                try:
                    with session_scope(self.engine) as session:
                        store.set_schedule_error(session, dag_id, error)
                except DBAPIError:
                    logger.exception("DAG %s: cannot record its schedule error", dag_id)
                    return _DagMemo(head.dag_hash, active_runs, now + RETRY_LATER)
            return _DagMemo(head.dag_hash, active_runs, None)
        if outcome.more_now:
            return _DagMemo(head.dag_hash, active_runs + outcome.created, now)
        return _DagMemo(head.dag_hash, active_runs + outcome.created, outcome.next_due)

    def start_queued_runs(self, now: datetime) -> None:
        """queued -> running, oldest first, while each DAG has fewer running runs than its max_active_runs."""
        from scheduler.db import store
        from scheduler.db.engine import session_scope
        from scheduler.states import DagRunState

        with session_scope(self.engine, readonly=True) as session:
            candidates = store.dags_with_queued_runs(session)
        for dag_id, dag_max in candidates:
            limit = self._max_active_runs(dag_max)
            with session_scope(self.engine) as session:
                running = store.count_dag_runs(session, dag_id, [DagRunState.RUNNING.value])
                if running >= limit:
                    continue
                for run in store.oldest_queued_dag_runs(session, dag_id, limit=limit - running):
                    if store.start_dag_run(session, run.id, now=now):
                        logger.info("DAG %s: run %s started", dag_id, run.run_id)
                    else:
                        logger.info("DAG %s: run %s was no longer queued; not started here", dag_id, run.run_id)

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Iterate until SIGTERM or SIGINT (or :meth:`stop`), sleeping until something is due (module docstring).

        An iteration that fails (the database is away, a bug) is logged and retried
        after a back-off; it never ends the process.
        """
        from scheduler.watch import DatabaseWatcher, FolderWatcher

        previous = self._install_signal_handlers()
        logger.info("scheduler started, dags folder %s", self.settings.dags_folder)
        self._folder_watcher = FolderWatcher(self.settings.dags_folder, self._on_folder_change)
        if not self._folder_watcher.start():
            self._folder_watcher = None
        if self.executor is None:
            from scheduler.executors import make_executor

            self.executor = make_executor(self.settings)
        self._db_watcher = DatabaseWatcher(
            self.engine, runner_writes_announced=bool(getattr(self.executor, "announces_records", False))
        )
        self._start_job()
        self.executor.start(lambda: self._wakeup.set("executor"))
        failures = 0
        reasons: set[str] = set()
        first_pass: float | None = time.monotonic()
        try:
            while not self._stop.is_set():
                # The baseline is taken before the iteration reads anything: a commit by someone else
                # during the iteration then wakes the next sleep at once (our own writes cost one extra,
                # idle, iteration).
                self._db_watcher.mark()
                finished_before = self._tasks.runs_finished if self._tasks is not None else 0
                try:
                    delay = self.run_once(utcnow(), tasks_only=reasons == {"executor"})
                    self._heartbeat()
                    self._close_idle_parsers()
                    failures = 0
                    if first_pass is not None:
                        logger.info("scheduler ready: first pass done in %.2f s", time.monotonic() - first_pass)
                        first_pass = None
                except Exception:
                    failures += 1
                    delay = min(2.0 ** (failures - 1), MAX_ERROR_BACKOFF_SECONDS)
                    logger.exception(
                        "scheduler iteration failed (%d in a row); trying again in %.0f s", failures, delay
                    )
                    self._wakeup.wait(delay)
                    reasons = set()
                    continue
                if self._tasks is not None and self._tasks.runs_finished != finished_before:
                    reasons = {"runs finished"}  # start queued runs, create the ones max_active_runs held back
                    continue
                reasons = self._sleep(delay)
                if reasons == {"executor"}:
                    reasons |= self._gather_ended_tries()
        finally:
            self._restore_signal_handlers(previous)
            timeout = float(self.settings.get("scheduler", "graceful_shutdown_timeout"))
            running = len(self.executor.running)
            if running:
                logger.info("waiting up to %.0f s for %d running task tries to finish", timeout, running)
            self.executor.end(timeout=timeout)
            self._end_job()
            self.close()
        logger.info("scheduler stopped (%s)", self._stop_reason or "stop requested")

    def _sleep(self, delay: float) -> set[str]:
        """Wait up to ``delay`` seconds (capped), returning early on a folder change, a foreign commit, an
        executor event or a stop; returns why it woke ({"time"} when the wait ran out)."""
        assert self._db_watcher is not None
        cap = self._heartbeat_seconds if self._folder_watcher is not None else POLL_SLEEP_SECONDS
        deadline = time.monotonic() + min(delay, cap, max(0.0, self._next_rescan - time.monotonic()))
        poll = DB_POLL_SECONDS.get(self.engine.dialect.name, 0.25)
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"time"}
            reasons = self._wakeup.wait(min(remaining, poll))
            if reasons:
                return reasons
            if self._db_watcher.changed():
                return {"database"}
        return {"stop"}

    def _gather_ended_tries(self) -> set[str]:
        """When many tries run, let more of them end before the iteration that one just woke
        (see :data:`BUSY_GATHER_RUNNING`); returns any other reasons that came meanwhile."""
        assert self.executor is not None
        if len(self.executor.running) < BUSY_GATHER_RUNNING:
            return set()
        self._stop.wait(BUSY_GATHER_SECONDS)
        return self._wakeup.wait(0)

    def _close_idle_parsers(self) -> None:
        """Stop the parse workers once nothing was parsed for a while; the next change starts them again."""
        if self._pool is not None and time.monotonic() - self._last_parse > IDLE_PARSERS_SECONDS:
            pool, self._pool = self._pool, None
            pool.close()
            logger.debug("parse workers stopped after %.0f s without a change", IDLE_PARSERS_SECONDS)

    def _on_folder_change(self) -> None:
        self._folder_dirty = True
        self._wakeup.set("folder")

    def _scan_needed(self) -> bool:
        watching = self._folder_watcher is not None and self._folder_watcher.alive()
        return not watching or self._folder_dirty or time.monotonic() >= self._next_rescan

    def stop(self, reason: str = "stop requested") -> None:
        """Ask :meth:`run` to return after the current iteration (safe from a signal handler or another thread).

        The iteration itself ends early: it looks at no further DAG or run and queues nothing more.
        """
        self._stop_reason = reason
        self._stop.set()
        self._wakeup.set("stop")

    def close(self) -> None:
        """Stop the watchers and the parse workers (idempotent)."""
        if self._folder_watcher is not None:
            watcher, self._folder_watcher = self._folder_watcher, None
            watcher.stop()
        if self._db_watcher is not None:
            db_watcher, self._db_watcher = self._db_watcher, None
            db_watcher.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    # --- helpers --------------------------------------------------------------------------------

    def _task_scheduler(self) -> TaskScheduler:
        if self._tasks is None:
            from scheduler.task_scheduling import TaskScheduler

            assert self.executor is not None
            self._tasks = TaskScheduler(self.engine, self.settings, self.executor, job_id=self.job_id,
                                        stopping=self._stop.is_set)
        return self._tasks

    def _start_job(self) -> None:
        """Record this scheduler in scheduler_job (the id tags what it queues)."""
        import os
        import socket

        from scheduler.db import ha
        from scheduler.db.engine import session_scope
        from scheduler.db.models import Job

        now = utcnow()
        with session_scope(self.engine) as session:
            ha.refuse_second_sqlite_scheduler(session, now=now, threshold=ha.health_threshold(self.settings))
            job = Job(
                job_type="SchedulerJob", hostname=socket.gethostname(), pid=os.getpid(), state="running",
                start_date=now, latest_heartbeat=now,
            )
            session.add(job)
            session.flush()
            self.job_id = job.id
        self._next_heartbeat = time.monotonic() + self._heartbeat_seconds

    def _heartbeat(self) -> None:
        if self.job_id is None or time.monotonic() < self._next_heartbeat:
            return
        from scheduler.db import ha
        from scheduler.db.engine import session_scope

        self._next_heartbeat = time.monotonic() + self._heartbeat_seconds
        with session_scope(self.engine) as session:
            ha.heartbeat(session, self.job_id, now=utcnow())  # revives a row another scheduler took for dead

    def _end_job(self) -> None:
        if self.job_id is None:
            return
        from sqlalchemy import update

        from scheduler.db.engine import session_scope
        from scheduler.db.models import Job

        try:
            with session_scope(self.engine) as session:
                session.execute(update(Job).where(Job.id == self.job_id).values(state="success", end_date=utcnow()))
        except Exception:  # noqa: BLE001 - shutting down; the row only informs
            logger.exception("cannot record the scheduler's end")

    def _parser_pool(self) -> ParserPool:
        if self._pool is None:
            from scheduler.parsing import ParserPool

            self._pool = ParserPool(
                processes=self.settings.parsing_processes,
                timeout=self.settings.dagbag_import_timeout,
                default_timezone=str(self.settings.get("core", "default_timezone")),
                dags_folder=self.settings.dags_folder,
            )
        return self._pool

    def _max_active_runs(self, dag_max: int | None) -> int:
        return int(dag_max if dag_max is not None else self.settings.get("core", "max_active_runs_per_dag"))

    def _create_runs_for_dag(self, dag_id: str, now: datetime) -> _DagOutcome:
        """Create the DAG's due runs in one transaction and record its next run."""
        from scheduler.db import store
        from scheduler.db.engine import session_scope
        from scheduler.serialization import SerializedDAG

        with session_scope(self.engine) as session:
            dag = store.get_dag(session, dag_id)
            data = store.get_serialized_dag(session, dag_id)
            if dag is None or data is None or dag.is_paused or not dag.is_active:
                return _DagOutcome(None, False)  # changed since the listing
            sdag = SerializedDAG.from_dict(data)
            timetable = sdag.timetable
            if not timetable.can_be_scheduled:
                return _DagOutcome(None, False)
            limit = self._max_active_runs(dag.max_active_runs)
            active = store.count_dag_runs(session, dag_id, store.ACTIVE_RUN_STATES)
            last = store.latest_slotted_dag_run(session, dag_id)
            last_logical_date = None if last is None else last.logical_date
            info = self._next_info(sdag, last_logical_date, now)
            created = 0
            while info is not None and info.run_after <= now and active < limit:
                if created >= MAX_RUNS_PER_DAG_PER_ITERATION:
                    store.set_next_dagrun(session, dag_id, info)
                    return _DagOutcome(info.run_after, True, created)
                if self._create_run(session, dag_id, info, now):
                    created += 1
                    active += 1
                last_logical_date = info.logical_date
                following = self._next_info(sdag, last_logical_date, now)
                if following is not None and following.logical_date <= last_logical_date:
                    logger.error(
                        "DAG %s: its timetable went back from %s to %s; no more runs created",
                        dag_id, last_logical_date.isoformat(), following.logical_date.isoformat(),
                    )
                    following = None
                info = following
            # Written only when different: an idle scheduler writes nothing (and so wakes nobody).
            if any(getattr(dag, column) != value for column, value in store.next_dagrun_values(info).items()):
                store.set_next_dagrun(session, dag_id, info)
            if dag.schedule_error is not None:
                store.set_schedule_error(session, dag_id, None)
        if created:
            logger.info("DAG %s: %d scheduled runs created", dag_id, created)
        if info is None:
            return _DagOutcome(None, False, created)
        # Blocked by max_active_runs: due when a run finishes (the active count changes), which no clock tells.
        return _DagOutcome(info.run_after if info.run_after > now else None, False, created)

    @staticmethod
    def _next_info(sdag: SerializedDAG, last_logical_date: datetime | None, now: datetime) -> DagRunInfo | None:
        return sdag.timetable.next_dagrun_info(
            last_automated_data_interval=None,
            last_logical_date=last_logical_date,
            start_date=sdag.start_date,
            end_date=sdag.end_date,
            catchup=sdag.catchup,
            now=now,
        )

    @staticmethod
    def _create_run(session: Session, dag_id: str, info: DagRunInfo, now: datetime) -> bool:
        """Insert one scheduled run (queued); False when its slot is already taken (not an error)."""
        from scheduler.db import store
        from scheduler.states import DagRunState, DagRunType

        run_id = f"{DagRunType.SCHEDULED.value}__{info.logical_date.isoformat()}"
        try:
            store.create_dag_run(
                session,
                dag_id=dag_id,
                run_id=run_id,
                run_type=DagRunType.SCHEDULED,
                logical_date=info.logical_date,
                data_interval=info.data_interval,
                conf={},
                state=DagRunState.QUEUED,
                run_after=info.run_after,
                now=now,
                external_trigger=False,
            )
        except store.DagRunAlreadyExists as exc:
            logger.info("DAG %s: %s (made by another scheduler or an earlier life); going on after it", dag_id, exc)
            return False
        return True

    def _install_signal_handlers(self) -> dict[int, object]:
        previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous

        def handle(signum: int, frame: FrameType | None) -> None:
            self.stop(f"received {signal.Signals(signum).name}")

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handle)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, object]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
