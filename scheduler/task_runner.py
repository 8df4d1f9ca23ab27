"""Run one task try (or one callback) for real: claim it in the database, supervise it, record how it ended.

Entry point: :func:`run_workload` ``(workload, settings) -> exit code``. The executor calls
it in a fresh process (a child of its fork server, holding no database connection) and
then ``os._exit``\\ s with the code; ``updraft tasks run`` calls it in the CLI's own process.

A :class:`~scheduler.workloads.TaskWorkload` is run by two processes:

* the **supervisor** (the calling process): claims the try with a compare-and-set
  ``queued -> running`` on (id, try_number) — a try that is not queued any more is never
  run; opens the log file; imports the DAG file; forks the task process; heartbeats
  ``task_instance.last_heartbeat_at`` every ``scheduler.task_instance_heartbeat_sec``;
  enforces the task's ``execution_timeout``; and records the outcome in one transaction,
  again compare-and-set on (id, state='running', try_number).
* the **task process**: leads its own process group, writes fds 1 and 2 to the log
  file, builds the context (run, params, Variables, a database XCom store on an engine
  of its own), runs :func:`scheduler.execution.execute_try` and sends the outcome back
  over a pipe as JSON.

Log file: :func:`log_path` — ``{base_log_folder}/dag_id=D/run_id=R/task_id=T/[map_index=I/]attempt=N.log``,
opened in append mode (every poke of a rescheduled sensor appends to its try's file).
The runner's own lines read ``[2026-11-26T10:00:00.123+0000] {runner} INFO - ...``; the
task's stdout, stderr and ``logging`` output go to the same file.

Termination. The supervisor SIGTERMs the task's process group, and SIGKILLs it
``core.killed_task_cleanup_time`` seconds later, when:

* the execution_timeout passes (counted from the fork): the try fails with
  ``Timeout: the task ran longer than its execution_timeout (X)``, retries apply. A
  timeout raised inside the task by execution.py's own SIGALRM ends the same way;
* a heartbeat finds the instance no longer ``running`` with this try (a user cleared or
  marked it): ``state changed externally to <state>; terminating the task``; nothing is
  recorded and no callback runs;
* the supervisor itself gets SIGTERM or SIGINT: the try fails, retries apply.

On SIGTERM the task process calls ``task.on_kill()`` (BashOperator kills its command's
process group there) and raises :class:`TaskTerminated` in the task, so execute_try
records the failure and calls the retry / failure callback with that exception. A task
process that dies without reporting an outcome (``os._exit``, a signal, a segfault, the
OOM killer) fails the try with ``the task process died: exit code N`` or ``the task
process died: killed by signal SIGKILL``; the supervisor then calls the task's
on_retry_callback or on_failure_callback itself, with ``context["exception"]`` a
:class:`TaskProcessError` carrying that message. On Linux the supervisor is a child
subreaper, so processes the task detached (``start_new_session``) and left behind are
killed too when a try ends abnormally.

Recording (one transaction): ``state``, ``end_date``, ``duration`` (end - start of this
run of the runner), ``rendered_fields``, and

* ``up_for_retry``: ``next_retry_at = end_date + delay`` (:func:`retry_delay`);
* ``up_for_reschedule``: ``next_retry_at = reschedule_date`` and ``try_number - 1``: a
  poke is not a try (Airflow 2), so the scheduler's increment when it queues the next
  poke brings the number back. A ``task_reschedule`` row is inserted with the try's own
  number (the one every poke of the try runs with), this poke's start and end, and the
  reschedule date. Before each poke the runner reads the earliest ``start_date`` of the
  task_reschedule rows of (ti_id, try_number) and exposes it to the task as
  ``context["ti"].first_try_start`` (None on the first poke): sensors count their
  timeout from it. ``task_instance.start_date`` is always the start of this poke;
* a successful branch: the task ids it did not follow are set ``skipped`` where still
  ``none`` or ``scheduled``;
* a ``task_instance_history`` row for every finished try (not for a reschedule); an
  up_for_retry try is recorded there as ``failed``, as Airflow does;
* a ``log`` row (event = the state, extra = the message) for a failed try.

``max_tries`` is the larger of the task instance row's and the task's ``retries``. The
host name recorded is ``socket.gethostname()`` (``getfqdn`` may wait on DNS); ``pid`` is
the supervisor's.

Exit codes: 0 when the workload was handled — a state recorded (whatever it was), or
deliberately none (the try was not queued any more, or was changed externally while it
ran); 1 when the runner itself failed (the database unreachable, a bug): the instance
may then still be ``queued`` or ``running``, and the scheduler must treat the try as lost.

A :class:`~scheduler.workloads.CallbackWorkload` imports the DAG file, builds the
context (a DAG callback gets the context of the run's last finished task instance with
``reason``; a task callback the task's full context with ``exception``), calls the
callbacks, logs to ``{base_log_folder}/dag_id=D/run_id=R/callbacks.log`` and returns 0;
what the callbacks raise is logged, never raised.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import json
import logging
import math
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from scheduler.exceptions import UpdraftError
from scheduler.logfmt import AirflowFormatter, standalone_logger
from scheduler.runner_processes import (
    _become_subreaper,
    _describe_exit,
    _die_with_parent,
    _fd_writer,
    _fds_to,
    _group_alive,
    _own_children,
    _reap_children,
    _signal_group,
)
from scheduler.states import TaskInstanceState
from scheduler.workloads import CallbackWorkload, TaskWorkload, Workload

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.authoring.dag import DAG
    from scheduler.config import Settings
    from scheduler.runtime import RuntimeDagRun, RuntimeTaskInstance, XComStore

S = TaskInstanceState

#: The workload was handled (a state recorded, or deliberately not run / not recorded).
EXIT_OK = 0
#: The runner itself failed; the try's state may not have been recorded.
EXIT_RUNNER_FAILED = 1

#: Longest retry delay, whatever the backoff computes (Airflow's default max_task_retry_delay: 24 h).
MAX_RETRY_DELAY_S = 24 * 3600
#: Default retry_delay when neither the task nor its serialized form can tell (BaseOperator's default).
DEFAULT_RETRY_DELAY_S = 300.0
#: How much of a failure message is kept in the ``log`` table.
MAX_LOG_EXTRA = 10_000

RUNNER_LOGGER = "runner"



class TaskTerminated(UpdraftError):
    """Raised inside the task when the supervisor terminates it (SIGTERM): timeout or shutdown."""


class TaskProcessError(UpdraftError):
    """What ``context["exception"]`` is when the runner, not the task's code, failed the try."""


# --- paths ----------------------------------------------------------------------------------


def log_path(base: str | os.PathLike[str], dag_id: str, run_id: str, task_id: str, map_index: int,
             try_number: int) -> Path:
    """The log file of one try: ``{base}/dag_id=D/run_id=R/task_id=T/[map_index=I/]attempt=N.log``."""
    path = Path(base) / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        path = path / f"map_index={map_index}"
    return path / f"attempt={try_number}.log"


def callbacks_log_path(base: str | os.PathLike[str], dag_id: str, run_id: str) -> Path:
    """Where callbacks run outside the task's own try log: ``{base}/dag_id=D/run_id=R/callbacks.log``."""
    return Path(base) / f"dag_id={dag_id}" / f"run_id={run_id}" / "callbacks.log"


def _open_log(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115


# --- retry delay ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """A task's retry_delay, retry_exponential_backoff and max_retry_delay."""

    retry_delay: timedelta = timedelta(seconds=DEFAULT_RETRY_DELAY_S)
    exponential: bool = False
    max_retry_delay: timedelta | None = None

    @classmethod
    def of_task(cls, task: BaseOperator) -> RetryPolicy:
        return cls(task.retry_delay or timedelta(0), bool(task.retry_exponential_backoff), task.max_retry_delay)

    @classmethod
    def of_serialized(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        """From a task's entry of the serialized DAG (seconds); defaults when unknown."""
        if not data:
            return cls()
        delay = data.get("retry_delay")
        cap = data.get("max_retry_delay")
        return cls(
            timedelta(seconds=float(DEFAULT_RETRY_DELAY_S if delay is None else delay)),
            bool(data.get("retry_exponential_backoff")),
            None if cap is None else timedelta(seconds=float(cap)),
        )


def retry_delay(policy: RetryPolicy, *, dag_id: str, task_id: str, logical_date: datetime | None, run_id: str,
                try_number: int) -> timedelta:
    """How long after a failed try ``try_number`` the next one may start (Airflow's rule).

    Without backoff: ``retry_delay``. With ``retry_exponential_backoff``: let
    ``base = max(1, ceil(retry_delay_seconds * 2 ** (try_number - 1)))``; the delay is
    ``base + h % base`` seconds, where ``h`` is the SHA-1 (as an integer) of
    ``"{dag_id}#{task_id}#{logical date ISO, or the run id}#{try_number}"`` — a jitter in
    ``[base, 2 * base)`` that is the same for the same try. The result is capped at 24 h and
    at ``max_retry_delay`` when that is set.
    """
    if not policy.exponential:
        return policy.retry_delay
    base = max(1, math.ceil(policy.retry_delay.total_seconds() * (2 ** (try_number - 1))))
    when = logical_date.isoformat() if logical_date is not None else run_id
    digest = hashlib.sha1(f"{dag_id}#{task_id}#{when}#{try_number}".encode(), usedforsecurity=False).hexdigest()
    seconds = min(base + int(digest, 16) % base, MAX_RETRY_DELAY_S)
    delay = timedelta(seconds=seconds)
    if policy.max_retry_delay:
        delay = min(delay, policy.max_retry_delay)
    return delay


# --- the task's context --------------------------------------------------------------------------


@dataclass
class _TryInfo:
    """What the supervisor read from the database about the try, its run and its task instance."""

    max_tries: int
    first_try_start: datetime | None
    logical_date: datetime | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    run_type: str
    conf: dict[str, Any]
    run_start_date: datetime | None
    run_state: str
    serialized_task: dict[str, Any] | None = None
    hostname: str = field(default_factory=socket.gethostname)
    #: How many earlier pokes of this try a sensor in reschedule mode made.
    reschedule_count: int = 0

    def runtime_dag_run(self, dag_id: str, run_id: str) -> RuntimeDagRun:
        from scheduler.clock import utcnow
        from scheduler.runtime import RuntimeDagRun

        logical = self.logical_date or self.data_interval_end or self.run_start_date or utcnow()
        return RuntimeDagRun(
            dag_id=dag_id,
            run_id=run_id,
            logical_date=logical,
            data_interval_start=self.data_interval_start or logical,
            data_interval_end=self.data_interval_end or logical,
            run_type=self.run_type,
            conf=dict(self.conf),
            start_date=self.run_start_date,
            state=self.run_state,
        )


def _variables_reader(engine: Engine | Callable[[], Engine]) -> Callable[[str], str | None]:
    """Variable lookups for templates; ``engine`` may be a factory called at the first lookup."""
    from sqlalchemy import Engine as EngineType

    from scheduler.db import store
    from scheduler.db.engine import retry_transient, session_scope

    def get(key: str) -> str | None:
        bound = engine if isinstance(engine, EngineType) else engine()

        def unit() -> str | None:
            with session_scope(bound, readonly=True) as session:
                return store.get_variable(session, key)

        return retry_transient(unit, what=f"reading Variable {key!r}")

    return get


def _task_context(
    dag: DAG, task: BaseOperator, info: _TryInfo, *, run_id: str, map_index: int, try_number: int,
    xcom: XComStore, variables: Callable[[str], str | None], log: logging.Logger,
) -> tuple[dict[str, Any], RuntimeTaskInstance]:
    from scheduler.runtime import RuntimeTaskInstance
    from scheduler.templating import build_context, resolve_task_params

    dag_run = info.runtime_dag_run(dag.dag_id, run_id)
    ti = RuntimeTaskInstance(
        task=task, run_id=run_id, xcom=xcom, try_number=try_number, max_tries=info.max_tries,
        map_index=map_index, dag_run=dag_run, log=log, hostname=info.hostname,
    )
    ti.first_try_start = info.first_try_start  # type: ignore[attr-defined]
    ti.task_reschedule_count = info.reschedule_count  # type: ignore[attr-defined]
    context = build_context(
        dag=dag, task=task, ti=ti, run_id=run_id,
        logical_date=dag_run.logical_date,
        data_interval_start=dag_run.data_interval_start,
        data_interval_end=dag_run.data_interval_end,
        conf=dag_run.conf,
        params=resolve_task_params(task, dag_run.conf),
        run_type=dag_run.run_type,
        variables=variables,
        dag_run=dag_run,
    )
    return context, ti


# --- the supervisor ------------------------------------------------------------------------------


@dataclass
class _Verdict:
    """How the try ended, as the supervisor will record it."""

    state: TaskInstanceState
    message: str | None = None
    rendered_fields: dict[str, Any] | None = None
    skip_task_ids: list[str] = field(default_factory=list)
    reschedule_date: datetime | None = None
    #: XComs the try pushed (key -> value), written with the state.
    xcoms: dict[str, Any] = field(default_factory=dict)
    #: The supervisor must call the task's retry / failure callback (the task process did not).
    run_callbacks: bool = False


class _Supervisor:
    def __init__(self, workload: TaskWorkload, settings: Settings) -> None:
        self.w = workload
        self.settings = settings
        self.engine: Engine | None = None
        self.log_file: TextIO | None = None
        self.log = standalone_logger(RUNNER_LOGGER, sys.stderr)
        self.hostname = socket.gethostname()
        self.started: datetime | None = None
        self.stop_signal: int | None = None
        self._wake_w: int | None = None

    # -- database units ----------------------------------------------------------------------

    def _db(self, unit: Callable[[], Any], what: str) -> Any:
        from scheduler.db.engine import retry_transient

        return retry_transient(unit, what=f"{self.w.label()}: {what}")

    def _current_state(self, session: Any) -> str:
        from sqlalchemy import select

        from scheduler.db.models import TaskInstance

        row = session.execute(
            select(TaskInstance.state, TaskInstance.try_number).where(TaskInstance.id == self.w.ti_id)
        ).first()
        if row is None:
            return "deleted"
        state = str(row.state)
        return state if row.try_number == self.w.try_number else f"{state}, try {row.try_number}"

    def _claim(self) -> tuple[str | None, _TryInfo | None]:
        """queued -> running, this try's old XComs deleted, and what the try needs read: one transaction.

        Returns (None, info) when claimed, else (the state that stopped us, None).
        """
        from sqlalchemy import func, select, update

        from scheduler.clock import utcnow
        from scheduler.db.engine import session_scope
        from scheduler.db.models import DagRun, TaskInstance, TaskReschedule
        from scheduler.db.xcom_store import clear_for_try

        assert self.engine is not None
        w = self.w

        def unit() -> tuple[str | None, _TryInfo | None]:
            now = utcnow()
            with session_scope(self.engine) as session:  # type: ignore[arg-type]
                result = session.execute(
                    update(TaskInstance)
                    .where(TaskInstance.id == w.ti_id, TaskInstance.state == S.QUEUED,
                           TaskInstance.try_number == w.try_number)
                    .values(state=S.RUNNING, pid=os.getpid(), hostname=self.hostname, start_date=now,
                            end_date=None, duration=None, last_heartbeat_at=now)
                    .execution_options(synchronize_session=False)
                )
                if not _changed(result):
                    return self._current_state(session), None
                clear_for_try(session, dag_id=w.dag_id, run_id=w.run_id, task_id=w.task_id, map_index=w.map_index)
                max_tries = session.scalar(select(TaskInstance.max_tries).where(TaskInstance.id == w.ti_id))
                run = session.execute(
                    select(DagRun.logical_date, DagRun.data_interval_start, DagRun.data_interval_end,
                           DagRun.run_type, DagRun.conf, DagRun.start_date, DagRun.state)
                    .where(DagRun.dag_id == w.dag_id, DagRun.run_id == w.run_id)
                ).first()
                first, pokes = session.execute(
                    select(func.min(TaskReschedule.start_date), func.count()).where(
                        TaskReschedule.ti_id == w.ti_id, TaskReschedule.try_number == w.try_number
                    )
                ).one()
            if isinstance(first, str):  # an aggregate can bypass the column type on SQLite
                first = datetime.fromisoformat(first)
            if first is not None and first.tzinfo is None:
                first = first.replace(tzinfo=UTC)
            self.started = now
            return None, _TryInfo(
                max_tries=int(max_tries or 0),
                first_try_start=first,
                reschedule_count=int(pokes or 0),
                logical_date=run.logical_date if run else None,
                data_interval_start=run.data_interval_start if run else None,
                data_interval_end=run.data_interval_end if run else None,
                run_type=str(run.run_type) if run else "manual",
                conf=dict(run.conf or {}) if run else {},
                run_start_date=run.start_date if run else None,
                run_state=str(run.state) if run else "running",
                hostname=self.hostname,
            )

        return self._db(unit, "claiming the try")

    def _serialized_task(self) -> dict[str, Any] | None:
        """The task as the scheduler stored it: the retry settings when the DAG file cannot be imported."""
        from sqlalchemy import select

        from scheduler.db.engine import session_scope
        from scheduler.db.models import SerializedDag

        def unit() -> dict[str, Any] | None:
            with session_scope(self.engine, readonly=True) as session:  # type: ignore[arg-type]
                data = session.scalar(select(SerializedDag.data).where(SerializedDag.dag_id == self.w.dag_id))
            if not isinstance(data, dict):
                return None
            return next((t for t in data.get("tasks", []) if t.get("task_id") == self.w.task_id), None)

        try:
            return self._db(unit, "reading the serialized task")
        except Exception:  # noqa: BLE001 - only defaults are lost
            return None

    def _heartbeat(self) -> str | None:
        """None while the try is still ours; else what its state became."""
        from sqlalchemy import update

        from scheduler.clock import utcnow
        from scheduler.db.engine import session_scope
        from scheduler.db.models import TaskInstance

        def unit() -> str | None:
            with session_scope(self.engine) as session:  # type: ignore[arg-type]
                result = session.execute(
                    update(TaskInstance)
                    .where(TaskInstance.id == self.w.ti_id, TaskInstance.state == S.RUNNING,
                           TaskInstance.try_number == self.w.try_number)
                    .values(last_heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                return None if _changed(result) else self._current_state(session)

        return self._db(unit, "heartbeat")

    def _record(self, verdict: _Verdict, info: _TryInfo | None, policy: RetryPolicy) -> str | None:
        """Write the verdict; None when recorded, else the state someone else put the instance in."""
        from sqlalchemy import insert, update

        from scheduler.clock import utcnow
        from scheduler.db.engine import session_scope
        from scheduler.db.models import Log, TaskInstance, TaskInstanceHistory, TaskReschedule
        from scheduler.db.xcom_store import write_pushed

        w = self.w

        def unit() -> str | None:
            end = utcnow()
            start = self.started or end
            values: dict[str, Any] = {
                "state": verdict.state,
                "end_date": end,
                "duration": max((end - start).total_seconds(), 0.0),
                "next_retry_at": None,
            }
            if verdict.rendered_fields is not None:
                values["rendered_fields"] = verdict.rendered_fields
            if verdict.state is S.UP_FOR_RETRY:
                logical = info.logical_date if info is not None else None
                values["next_retry_at"] = end + retry_delay(
                    policy, dag_id=w.dag_id, task_id=w.task_id, logical_date=logical, run_id=w.run_id,
                    try_number=w.try_number,
                )
            elif verdict.state is S.UP_FOR_RESCHEDULE:
                values["next_retry_at"] = verdict.reschedule_date
                values["try_number"] = w.try_number - 1
            with session_scope(self.engine) as session:  # type: ignore[arg-type]
                result = session.execute(
                    update(TaskInstance)
                    .where(TaskInstance.id == w.ti_id, TaskInstance.state == S.RUNNING,
                           TaskInstance.try_number == w.try_number)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if not _changed(result):
                    return self._current_state(session)
                write_pushed(session, dag_id=w.dag_id, run_id=w.run_id, task_id=w.task_id, map_index=w.map_index,
                             pushed=verdict.xcoms)
                if verdict.state is S.UP_FOR_RESCHEDULE:
                    assert verdict.reschedule_date is not None
                    session.execute(insert(TaskReschedule).values(
                        ti_id=w.ti_id, try_number=w.try_number, start_date=start, end_date=end,
                        reschedule_date=verdict.reschedule_date,
                    ))
                else:
                    history_state = S.FAILED if verdict.state is S.UP_FOR_RETRY else verdict.state
                    session.execute(insert(TaskInstanceHistory).values(
                        dag_id=w.dag_id, run_id=w.run_id, task_id=w.task_id, map_index=w.map_index,
                        try_number=w.try_number, state=history_state, start_date=start, end_date=end,
                        duration=values["duration"], hostname=self.hostname,
                    ))
                if verdict.state is S.SUCCESS and verdict.skip_task_ids:
                    session.execute(
                        update(TaskInstance)
                        .where(TaskInstance.dag_id == w.dag_id, TaskInstance.run_id == w.run_id,
                               TaskInstance.task_id.in_(sorted(set(verdict.skip_task_ids))),
                               TaskInstance.state.in_([S.NONE, S.SCHEDULED]))
                        .values(state=S.SKIPPED, start_date=end, end_date=end)
                        .execution_options(synchronize_session=False)
                    )
                if verdict.state in (S.FAILED, S.UP_FOR_RETRY):
                    session.execute(insert(Log).values(
                        dttm=end, event=verdict.state.value, owner=None, dag_id=w.dag_id, run_id=w.run_id,
                        task_id=w.task_id, map_index=w.map_index, try_number=w.try_number,
                        extra=(verdict.message or "")[-MAX_LOG_EXTRA:] or None,
                    ))
            return None

        return self._db(unit, f"recording state {verdict.state.value}")

    # -- the try ---------------------------------------------------------------------------------

    def run(self) -> int:
        from scheduler.db.engine import make_engine

        self.engine = _engine_for(self.settings) or make_engine(
            self.settings.sql_alchemy_conn, pool_size=1, max_overflow=2
        )
        try:
            return self._run()
        finally:
            self.engine.dispose()
            if self.log_file is not None:
                with contextlib.suppress(Exception):
                    self.log_file.close()

    def _fail_early(self, message: str, info: _TryInfo, *, to_stderr: bool) -> int:
        """Fail the try before the task process started (no log, no DAG, no task)."""
        if to_stderr:
            print(f"updraft task runner: {self.w.label()}: {message}", file=sys.stderr, flush=True)
        else:
            self.log.error("%s", message)
        retry = info.max_tries >= self.w.try_number
        verdict = _Verdict(S.UP_FOR_RETRY if retry else S.FAILED, message=message)
        if info.serialized_task is None:
            info.serialized_task = self._serialized_task()
        return self._finish(verdict, info, RetryPolicy.of_serialized(info.serialized_task))

    def _finish(self, verdict: _Verdict, info: _TryInfo, policy: RetryPolicy) -> int:
        other = self._record(verdict, info, policy)
        if other is None:
            _announce_recorded(self.w)
        if other is not None:
            self.log.warning("state changed externally to %s; not recording %s", other, verdict.state.value)
            return EXIT_OK
        if verdict.state is S.UP_FOR_RESCHEDULE:
            self.log.info("Recorded state up_for_reschedule: next poke at %s (try %d stays %d)",
                          verdict.reschedule_date.isoformat() if verdict.reschedule_date else "?",
                          self.w.try_number, self.w.try_number)
        else:
            self.log.info("Recorded state %s for try %d", verdict.state.value, self.w.try_number)
        return EXIT_OK

    def _run(self) -> int:
        from scheduler.parsing import DagFileImportError, load_dags_from_file

        w = self.w
        lost, claimed = self._claim()
        if lost is not None or claimed is None:
            print(f"updraft task runner: {w.label()}: not queued any more (state {lost}); not running it",
                  file=sys.stderr, flush=True)
            return EXIT_OK
        info = claimed

        path = log_path(self.settings.log_folder, w.dag_id, w.run_id, w.task_id, w.map_index, w.try_number)
        try:
            self.log_file = _open_log(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return self._fail_early(f"cannot write the task log {path}: {reason}", info, to_stderr=True)
        self.log = standalone_logger(RUNNER_LOGGER, self.log_file)
        self.log.info("Starting attempt %d of %d of %s.%s%s, run %s, on %s (runner pid %d)",
                      w.try_number, max(info.max_tries, 0) + 1, w.dag_id, w.task_id,
                      "" if w.map_index < 0 else f"[{w.map_index}]", w.run_id, self.hostname, os.getpid())

        try:
            with _fds_to(self.log_file):
                dags = load_dags_from_file(
                    Path(w.fileloc), default_timezone=self.settings.get("core", "default_timezone"),
                    dags_folder=self.settings.dags_folder,
                )
        except DagFileImportError as exc:
            return self._fail_early(f"the DAG file {w.fileloc} failed to import:\n{exc.traceback.rstrip()}",
                                    info, to_stderr=False)
        dag = dags.get(w.dag_id)
        if dag is None:
            return self._fail_early(f"DAG '{w.dag_id}' not found in {w.fileloc}", info, to_stderr=False)
        if not dag.has_task(w.task_id):
            return self._fail_early(f"task '{w.task_id}' not found in DAG '{w.dag_id}' ({w.fileloc})",
                                    info, to_stderr=False)
        task = dag.get_task(w.task_id)
        info.max_tries = max(info.max_tries, task.retries)
        policy = RetryPolicy.of_task(task)

        verdict = self._supervise(dag, task, info)
        if verdict is None:
            return EXIT_OK
        if verdict.run_callbacks:
            self._callbacks_after_death(dag, task, info, verdict)
        return self._finish(verdict, info, policy)

    # -- the task process ---------------------------------------------------------------------

    def _supervise(self, dag: DAG, task: BaseOperator, info: _TryInfo) -> _Verdict | None:
        """Fork the task process, watch it, and say how the try ended (None: changed externally)."""
        assert self.engine is not None and self.log_file is not None
        _become_subreaper()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # waitpid needs it, whatever our parent set
        out_r, out_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        # No connection crosses the fork: the supervisor reconnects for its heartbeats.
        self.engine.dispose()
        for stream in (sys.stdout, sys.stderr, self.log_file):
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # the task process
            code = 1
            try:
                os.close(out_r)
                os.close(ctl_w)
                code = _TaskProcess(self, dag, task, info, out_w, ctl_r).main()
            except BaseException:
                with contextlib.suppress(Exception):
                    os.write(2, traceback.format_exc().encode("utf-8", "backslashreplace"))
            finally:
                os._exit(code)
        os.close(out_w)
        os.close(ctl_r)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        self.log.info("Started the task process %d", pid)
        try:
            return self._watch(pid, task, info, out_r, ctl_w)
        finally:
            for fd in (out_r, ctl_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _install_stop_handlers(self) -> tuple[int, int, dict[int, Any]]:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: Any) -> None:
                self.stop_signal = signum
                with contextlib.suppress(OSError):
                    os.write(wake_w, b"x")

            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, on_signal)
        return wake_r, wake_w, previous

    def _watch(self, pid: int, task: BaseOperator, info: _TryInfo, out_r: int, ctl_w: int) -> _Verdict | None:
        heartbeat_every = float(self.settings.get("scheduler", "task_instance_heartbeat_sec"))
        cleanup = float(self.settings.get("core", "killed_task_cleanup_time"))
        timeout = task.execution_timeout
        forked_at = time.monotonic()
        deadline = forked_at + timeout.total_seconds() if timeout is not None else None
        next_heartbeat = forked_at + heartbeat_every
        os.set_blocking(out_r, False)
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        wake_r, wake_w, previous = self._install_stop_handlers()
        buf = bytearray()
        readers = [out_r, wake_r] + ([pidfd] if pidfd is not None else [])
        ending: str | None = None  # why we terminate it: timeout, external, shutdown
        external_state = ""
        kill_at: float | None = None
        status: int | None = None

        def terminate(kind: str, message: str) -> None:
            nonlocal ending, kill_at
            ending = kind
            with contextlib.suppress(OSError):
                os.write(ctl_w, f"{kind} {message}\n".encode())
            _signal_group(pid, signal.SIGTERM)
            kill_at = time.monotonic() + cleanup

        try:
            while status is None:
                now = time.monotonic()
                waits = [kill_at - now] if kill_at is not None else []
                if ending != "external":
                    waits.append(next_heartbeat - now)
                if deadline is not None and ending is None:
                    waits.append(deadline - now)
                if pidfd is None:
                    waits.append(0.05)
                ready, _, _ = select.select(readers, [], [], max(0.0, min(waits)))
                if out_r in ready and not _read_available(out_r, buf):
                    readers.remove(out_r)
                if wake_r in ready:
                    with contextlib.suppress(OSError):
                        os.read(wake_r, 64)
                    if self.stop_signal is not None and ending is None:
                        name = signal.Signals(self.stop_signal).name
                        self.log.warning("the task runner received %s; terminating the task", name)
                        terminate("shutdown", f"the task runner received {name}")
                if pidfd is None or pidfd in ready:
                    if pidfd is not None:
                        # The leader is a zombie until reaped: its group id cannot be reused yet.
                        _signal_group(pid, signal.SIGTERM)
                    done, st = os.waitpid(pid, 0 if pidfd is not None else os.WNOHANG)
                    if done:
                        status = st
                        break
                now = time.monotonic()
                if ending != "external" and now >= next_heartbeat:
                    next_heartbeat = now + heartbeat_every
                    try:
                        changed = self._heartbeat()
                    except Exception as exc:  # a database blip must not kill the task
                        self.log.warning("heartbeat failed: %s", exc)
                        changed = None
                    if changed is not None and ending is None:
                        external_state = changed
                        self.log.warning("state changed externally to %s; terminating the task", changed)
                        terminate("external", f"state changed externally to {changed}")
                    elif changed is not None:
                        external_state = changed
                        ending = "external"
                if deadline is not None and ending is None and now >= deadline:
                    self.log.error("Timeout: the task ran longer than its execution_timeout (%s); "
                                   "terminating the task", timeout)
                    terminate("timeout", f"Timeout: the task ran longer than its execution_timeout ({timeout})")
                if kill_at is not None and now >= kill_at:
                    self.log.warning("the task process %d did not end within %.1f s of SIGTERM; sending SIGKILL",
                                     pid, cleanup)
                    _signal_group(pid, signal.SIGKILL)
                    kill_at = None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for fd in (wake_r, wake_w, *([pidfd] if pidfd is not None else [])):
                with contextlib.suppress(OSError):
                    os.close(fd)
        _read_available(out_r, buf)
        outcome = _parse_outcome(bytes(buf))
        if outcome is None:
            self.log.info("Task process %d exited: %s", pid, _describe_exit(status).removeprefix("the task process died: "))
        else:
            self.log.info("Task process %d exited with return code %d", pid, os.waitstatus_to_exitcode(status))
        if outcome is None or ending is not None or os.waitstatus_to_exitcode(status) != 0:
            self._end_leftovers(pid, cleanup)
        return self._verdict(outcome, status, ending, external_state, timeout, info)

    def _end_leftovers(self, pgid: int, cleanup: float) -> None:
        """After an abnormal end: SIGTERM what is left of the task's group and its orphans, SIGKILL at the grace end."""
        _signal_group(pgid, signal.SIGTERM)
        _reap_children()
        orphans = _own_children()
        groups: set[int] = set()
        own_group = os.getpgrp()
        for child in orphans:
            try:
                group = os.getpgid(child)
            except ProcessLookupError:
                continue
            if group != own_group:
                groups.add(group)
                _signal_group(group, signal.SIGTERM)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
        if orphans:
            self.log.info("terminating %d process(es) the task left behind: %s", len(orphans), orphans)
        deadline = time.monotonic() + cleanup
        pending = {pgid, *groups}
        while pending and time.monotonic() < deadline:
            pending = {g for g in pending if _group_alive(g)}
            if pending:
                time.sleep(0.02)
        for group in pending:
            _signal_group(group, signal.SIGKILL)
        for child in _own_children() if pending else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        _reap_children()

    def _verdict(self, outcome: dict[str, Any] | None, status: int, ending: str | None, external_state: str,
                 timeout: timedelta | None, info: _TryInfo) -> _Verdict | None:
        if ending == "external":
            self.log.warning("the try was changed externally to %s; its outcome is not recorded", external_state)
            return None
        retry_allowed = info.max_tries >= self.w.try_number
        failed_state = S.UP_FOR_RETRY if retry_allowed else S.FAILED
        rendered = outcome.get("rendered_fields") if outcome else None
        xcoms = dict(outcome.get("xcoms") or {}) if outcome else {}
        task_failed = outcome is not None and outcome.get("state") in (S.FAILED.value, S.UP_FOR_RETRY.value)
        if ending == "timeout" or (outcome is not None and outcome.get("timed_out")):
            message = f"Timeout: the task ran longer than its execution_timeout ({timeout})"
            return _Verdict(failed_state, message=message, rendered_fields=rendered, run_callbacks=not task_failed,
                            xcoms=xcoms)
        if ending == "shutdown":
            message = f"the task runner was stopped by {signal.Signals(self.stop_signal or signal.SIGTERM).name}"
            return _Verdict(failed_state, message=message, rendered_fields=rendered, run_callbacks=not task_failed,
                            xcoms=xcoms)
        if outcome is None:
            message = _describe_exit(status)
            if os.waitstatus_to_exitcode(status) == 0:
                message += " without reporting an outcome"
            self.log.error("%s", message)
            return _Verdict(failed_state, message=message, run_callbacks=True)
        state = S(outcome["state"])
        if state is S.FAILED and outcome.get("up_for_retry"):
            state = S.UP_FOR_RETRY
        reschedule = outcome.get("reschedule_date")
        return _Verdict(
            state,
            message=outcome.get("error"),
            rendered_fields=rendered,
            skip_task_ids=list(outcome.get("skip_task_ids") or []),
            reschedule_date=datetime.fromisoformat(reschedule) if reschedule else None,
            xcoms=xcoms,
        )

    def _callbacks_after_death(self, dag: DAG, task: BaseOperator, info: _TryInfo, verdict: _Verdict) -> None:
        """The task process could not call its retry / failure callback: call it here."""
        from scheduler.db.xcom_store import DbXComStore
        from scheduler.execution import run_callbacks

        assert self.engine is not None and self.log_file is not None
        retry = verdict.state is S.UP_FOR_RETRY
        callbacks = task.on_retry_callback if retry else task.on_failure_callback
        if not callbacks:
            return
        name = "on_retry_callback" if retry else "on_failure_callback"
        try:
            task_log = standalone_logger(f"{self.w.dag_id}.{self.w.task_id}", self.log_file)
            context, ti = _task_context(
                dag, task, info, run_id=self.w.run_id, map_index=self.w.map_index, try_number=self.w.try_number,
                xcom=DbXComStore(self.engine), variables=_variables_reader(self.engine), log=task_log,
            )
            ti.state = verdict.state
            context["exception"] = TaskProcessError(verdict.message or "the task failed")
            self.log.info("Calling %s of %s", name, self.w.task_id)
            with _fds_to(self.log_file):
                run_callbacks(callbacks, context, self.log, name)
        except Exception:
            self.log.exception("Could not call %s of %s", name, self.w.task_id)


def _changed(result: Any) -> int:
    """Rows an UPDATE changed."""
    from sqlalchemy.engine import CursorResult

    return result.rowcount if isinstance(result, CursorResult) else 0


def _read_available(fd: int, buf: bytearray) -> bool:
    """Append what ``fd`` has to ``buf``; False at end of file."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        buf += chunk


def _parse_outcome(data: bytes) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        outcome = json.loads(data)
    except ValueError:
        return None
    return outcome if isinstance(outcome, dict) and "state" in outcome else None


class _TaskProcess:
    """The forked child that runs the task's code."""

    def __init__(self, sup: _Supervisor, dag: DAG, task: BaseOperator, info: _TryInfo, out_w: int,
                 ctl_r: int) -> None:
        self.sup = sup
        self.dag = dag
        self.task = task
        self.info = info
        self.out_w = out_w
        self.ctl_r = ctl_r
        self._terminating = False
        self.sup_pid = os.getppid()

    def main(self) -> int:
        from scheduler.db.engine import make_engine
        from scheduler.db.xcom_store import TryXComStore
        from scheduler.execution import TaskExecutionTimeout, execute_try
        from scheduler.serialization import to_jsonable

        sup = self.sup
        w = sup.w
        os.setpgid(0, 0)
        _die_with_parent(sup_pid=self.sup_pid)
        global EVENT_FD
        if EVENT_FD is not None:  # the executor's channel is the supervisor's to use, not the task's
            with contextlib.suppress(OSError):
                os.close(EVENT_FD)
            EVENT_FD = None
        assert sup.log_file is not None and sup.engine is not None
        fd = sup.log_file.fileno()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout, sys.stderr = _fd_writer(1), _fd_writer(2)
        with contextlib.suppress(Exception):
            faulthandler.enable(file=sys.stderr)
        for signum in (signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        os.set_blocking(self.ctl_r, False)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(AirflowFormatter())
        root.addHandler(handler)
        root.setLevel(sup.settings.get("logging", "logging_level"))

        sup.engine.dispose(close=False)
        global _ENGINE_OWNER_PID
        _ENGINE_OWNER_PID = os.getpid()
        engines: list[Engine] = []

        def engine_factory() -> Engine:
            # Made on first use: a task that pulls nothing and reads no Variable never connects.
            if not engines:
                # The supervisor's engine, its pool emptied above: its dialect and compiled
                # statements come along, its connections do not.
                engines.append(sup.engine or make_engine(sup.settings.sql_alchemy_conn, pool_size=1, max_overflow=4))
            return engines[0]

        xcom = TryXComStore(engine_factory, dag_id=w.dag_id, run_id=w.run_id, task_id=w.task_id,
                            map_index=w.map_index)
        log = standalone_logger(f"{w.dag_id}.{w.task_id}", sys.stderr)
        report: dict[str, Any]
        try:
            context, _ti = _task_context(
                self.dag, self.task, self.info, run_id=w.run_id, map_index=w.map_index, try_number=w.try_number,
                xcom=xcom, variables=_variables_reader(engine_factory), log=log,
            )
            outcome = execute_try(self.task, context, xcom=xcom, log=log)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            report = {
                "state": outcome.state.value,
                "error": outcome.error,
                "skip_task_ids": list(outcome.skip_task_ids),
                "rendered_fields": to_jsonable(outcome.rendered_fields),
                "duration": outcome.duration,
                "up_for_retry": outcome.up_for_retry,
                "reschedule_date": outcome.reschedule_date.isoformat() if outcome.reschedule_date else None,
                "fail_fast_no_retry": outcome.fail_fast_no_retry,
                "timed_out": isinstance(context.get("exception"), TaskExecutionTimeout),
                "xcoms": xcom.pushed,
            }
        except BaseException:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            error = traceback.format_exc()
            log.error("Task '%s' could not run:\n%s", w.task_id, error.rstrip())
            report = {"state": S.FAILED.value, "error": error, "up_for_retry": self.info.max_tries >= w.try_number}
        for engine in engines:
            with contextlib.suppress(Exception):
                engine.dispose()
        data = json.dumps(report, default=str).encode()
        view = memoryview(data)
        while view:
            written = os.write(self.out_w, view)
            view = view[written:]
        os.close(self.out_w)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        return 0

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._terminating:
            return
        self._terminating = True
        try:
            raw = os.read(self.ctl_r, 4096).decode("utf-8", "replace")
        except OSError:
            raw = ""
        kind, _, message = raw.strip().partition(" ")
        message = message or "the task process received SIGTERM"
        log = logging.getLogger("scheduler.task_runner")
        log.warning("Received SIGTERM (%s); calling on_kill", message)
        try:
            self.task.on_kill()
        except Exception:
            log.exception("on_kill of %s failed", self.task.task_id)
        if kind == "external":
            # The try is no longer ours: stop at once, no callback (its outcome will not be recorded).
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(128 + signal.SIGTERM)
        raise TaskTerminated(message)


# --- callbacks ---------------------------------------------------------------------------------


def _run_callback_workload(workload: CallbackWorkload, settings: Settings) -> int:
    from scheduler.db.engine import make_engine

    path = callbacks_log_path(settings.log_folder, workload.dag_id, workload.run_id)
    try:
        out = _open_log(path)
    except OSError as exc:
        print(f"updraft task runner: cannot write the callbacks log {path}: {exc.strerror or exc}; "
              "logging to stderr", file=sys.stderr, flush=True)
        out = None
    stream = out if out is not None else sys.stderr
    log = standalone_logger(RUNNER_LOGGER, stream)
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=2)
    try:
        log.info("Running the %s", workload.label())
        _call_callbacks(workload, settings, engine, stream, log)
    except Exception:
        log.exception("The %s could not be run", workload.label())
    finally:
        engine.dispose()
        if out is not None:
            out.close()
    return EXIT_OK


def _call_callbacks(workload: CallbackWorkload, settings: Settings, engine: Engine, stream: TextIO,
                    log: logging.Logger) -> None:
    from scheduler.db.xcom_store import DbXComStore
    from scheduler.execution import run_callbacks
    from scheduler.parsing import DagFileImportError, load_dags_from_file

    try:
        with _fds_to(stream):
            dags = load_dags_from_file(Path(workload.fileloc),
                                       default_timezone=settings.get("core", "default_timezone"),
                                       dags_folder=settings.dags_folder)
    except DagFileImportError as exc:
        log.error("the DAG file %s failed to import; no callback called:\n%s", workload.fileloc,
                  exc.traceback.rstrip())
        return
    dag = dags.get(workload.dag_id)
    if dag is None:
        log.error("DAG '%s' not found in %s; no callback called", workload.dag_id, workload.fileloc)
        return
    xcom = DbXComStore(engine)
    variables = _variables_reader(engine)
    if workload.callback in ("dag_success", "dag_failure"):
        success = workload.callback == "dag_success"
        callbacks = dag.on_success_callback if success else dag.on_failure_callback
        name = "on_success_callback" if success else "on_failure_callback"
        if not callbacks:
            log.info("DAG '%s' has no %s", dag.dag_id, name)
            return
        context = _dag_callback_context(workload, dag, engine, xcom, variables, stream, success)
        with _fds_to(stream):
            run_callbacks(callbacks, context, log, f"DAG {name}")
        log.info("Called the DAG's %s", name)
        return
    task_id = workload.task_id or ""
    if not dag.has_task(task_id):
        log.error("task '%s' not found in DAG '%s'; no callback called", task_id, dag.dag_id)
        return
    task = dag.get_task(task_id)
    retry = workload.callback == "task_retry"
    callbacks = task.on_retry_callback if retry else task.on_failure_callback
    name = "on_retry_callback" if retry else "on_failure_callback"
    if not callbacks:
        log.info("task '%s' has no %s", task_id, name)
        return
    info = _callback_info(workload, engine, workload.ti_id)
    info.max_tries = max(info.max_tries, task.retries)
    task_log = standalone_logger(f"{dag.dag_id}.{task_id}", stream)
    context, ti = _task_context(dag, task, info, run_id=workload.run_id, map_index=workload.map_index,
                                try_number=max(workload.try_number, 1), xcom=xcom, variables=variables, log=task_log)
    ti.state = S.UP_FOR_RETRY if retry else S.FAILED
    context["exception"] = TaskProcessError(workload.reason or f"task '{task_id}' failed")
    with _fds_to(stream):
        run_callbacks(callbacks, context, log, name)
    log.info("Called %s of task '%s'", name, task_id)


def _callback_info(workload: CallbackWorkload, engine: Engine, ti_id: int | None) -> _TryInfo:
    from sqlalchemy import select

    from scheduler.db.engine import retry_transient, session_scope
    from scheduler.db.models import DagRun, TaskInstance

    def unit() -> _TryInfo:
        with session_scope(engine, readonly=True) as session:
            run = session.execute(
                select(DagRun).where(DagRun.dag_id == workload.dag_id, DagRun.run_id == workload.run_id)
            ).scalar_one_or_none()
            ti = session.get(TaskInstance, ti_id) if ti_id is not None else None
        return _TryInfo(
            max_tries=ti.max_tries if ti is not None else 0,
            first_try_start=None,
            logical_date=run.logical_date if run else None,
            data_interval_start=run.data_interval_start if run else None,
            data_interval_end=run.data_interval_end if run else None,
            run_type=str(run.run_type) if run else "manual",
            conf=dict(run.conf or {}) if run else {},
            run_start_date=run.start_date if run else None,
            run_state=str(run.state) if run else "running",
        )

    return retry_transient(unit, what=f"{workload.label()}: reading the run")


def _dag_callback_context(workload: CallbackWorkload, dag: DAG, engine: Engine, xcom: XComStore,
                          variables: Callable[[str], str | None], stream: TextIO, success: bool) -> dict[str, Any]:
    """Airflow's DAG callback context: the context of the run's last finished task instance, plus ``reason``."""
    from sqlalchemy import select

    from scheduler.db.engine import retry_transient, session_scope
    from scheduler.db.models import TaskInstance

    info = _callback_info(workload, engine, None)
    reason = workload.reason or ("success" if success else "task_failure")

    def unit() -> list[TaskInstance]:
        with session_scope(engine, readonly=True) as session:
            return list(session.execute(
                select(TaskInstance).where(TaskInstance.dag_id == workload.dag_id,
                                           TaskInstance.run_id == workload.run_id)
            ).scalars())

    rows = [r for r in retry_transient(unit, what=f"{workload.label()}: reading task instances")
            if dag.has_task(r.task_id)]
    chosen = None
    if rows:
        failed = [r for r in rows if r.state in (S.FAILED, S.UPSTREAM_FAILED)] if not success else []
        pool = failed or rows
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        chosen = max(pool, key=lambda r: (r.end_date or epoch, r.id))
    dag_run = info.runtime_dag_run(dag.dag_id, workload.run_id)
    dag_run.state = "success" if success else "failed"
    if chosen is None:
        params: Any
        try:
            params = dag.resolve_params(dag_run.conf)
        except Exception:
            params = {}
        return {
            "dag": dag, "dag_run": dag_run, "run_id": workload.run_id, "reason": reason,
            "logical_date": dag_run.logical_date, "data_interval_start": dag_run.data_interval_start,
            "data_interval_end": dag_run.data_interval_end, "conf": dag_run.conf, "params": params,
        }
    info.max_tries = chosen.max_tries
    task = dag.get_task(chosen.task_id)
    context, ti = _task_context(
        dag, task, info, run_id=workload.run_id, map_index=chosen.map_index, try_number=max(chosen.try_number, 1),
        xcom=xcom, variables=variables, log=standalone_logger(dag.dag_id, stream),
    )
    ti.state = chosen.state
    ti.start_date = chosen.start_date
    ti.end_date = chosen.end_date
    context["dag_run"] = dag_run
    context["reason"] = reason
    return context


# --- entry point -------------------------------------------------------------------------------


def run_workload(workload: Workload, settings: Settings) -> int:
    """Run one workload in this process (see the module docstring); returns the exit code."""
    try:
        if isinstance(workload, TaskWorkload):
            return _Supervisor(workload, settings).run()
        if isinstance(workload, CallbackWorkload):
            return _run_callback_workload(workload, settings)
        print(f"updraft task runner: unknown workload {workload!r}", file=sys.stderr, flush=True)
        return EXIT_RUNNER_FAILED
    except Exception:
        label = workload.label() if hasattr(workload, "label") else repr(workload)
        print(f"updraft task runner: {label}: the runner failed:\n{traceback.format_exc()}",
              file=sys.stderr, flush=True)
        return EXIT_RUNNER_FAILED


def warm_up(settings: Settings) -> None:
    """Import and prepare in THIS process everything a try needs, so forked children start warm.

    Called by the fork server before it forks anything: the modules (SQLAlchemy and its
    dialect, the models with their mappers configured, the authoring API, Jinja2,
    jsonschema) are then shared copy-on-write instead of imported by every child. Opens
    no database connection.
    """
    import jinja2  # noqa: F401
    import jinja2.ext  # noqa: F401 - every template environment loads the 'do' extension
    import jinja2.nativetypes  # noqa: F401
    import jsonschema  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    import scheduler.authoring.operators  # noqa: F401
    import scheduler.authoring.sensors  # noqa: F401
    import scheduler.authoring.taskflow  # noqa: F401
    import scheduler.db.models  # noqa: F401
    import scheduler.db.store  # noqa: F401
    import scheduler.db.xcom_store  # noqa: F401
    import scheduler.execution  # noqa: F401
    import scheduler.parse_worker  # noqa: F401
    import scheduler.parsing  # noqa: F401
    import scheduler.templating  # noqa: F401
    import scheduler.timetables  # noqa: F401
    from scheduler.db.engine import make_engine

    configure_mappers()
    global _WARM_ENGINE
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=2)
    try:
        with engine.connect() as connection:  # the dialect initialises itself on the first connection
            connection.rollback()
    except Exception as exc:  # noqa: BLE001 - a database that is away now is reported by the tries
        logging.getLogger(__name__).warning("task runner warm-up could not reach the database: %s", exc)
    else:
        _rehearse(engine, settings)
    engine.dispose()
    _WARM_ENGINE = (settings.sql_alchemy_conn, engine)


_REHEARSAL_DAG = "__updraft_runner_warm_up__"


def _rehearse(engine: Engine, settings: Settings) -> None:
    """Claim, heartbeat and record one made-up try inside a transaction that is rolled back.

    SQLAlchemy compiles each statement once per engine; done here, in the fork server,
    the compiled forms are inherited by every try instead of being rebuilt (and the
    memory they touch copied) in each one. Nothing is left in the database.
    """
    from sqlalchemy import insert

    from scheduler.clock import utcnow
    from scheduler.db.models import Dag, DagRun, TaskInstance
    from scheduler.states import DagRunState, DagRunType

    log = logging.getLogger(__name__)
    now = utcnow()
    try:
        with engine.connect() as connection:
            outer = connection.begin()
            try:
                connection.execute(insert(Dag).values(dag_id=_REHEARSAL_DAG, fileloc="", is_paused=True))
                connection.execute(insert(DagRun).values(
                    dag_id=_REHEARSAL_DAG, run_id="warm_up", run_type=DagRunType.MANUAL, state=DagRunState.RUNNING,
                    logical_date=now, run_after=now, conf={}, updated_at=now,
                ))
                inserted = connection.execute(insert(TaskInstance).values(
                    dag_id=_REHEARSAL_DAG, run_id="warm_up", task_id="t", state=S.QUEUED, try_number=1,
                    updated_at=now,
                )).inserted_primary_key
                assert inserted is not None
                ti_id = inserted[0]
                workload = TaskWorkload(ti_id=int(ti_id), dag_id=_REHEARSAL_DAG, run_id="warm_up", task_id="t",
                                        map_index=-1, try_number=1, fileloc="")
                sup = _Supervisor(workload, settings)
                # Sessions bound to this connection join its transaction, which is rolled back below.
                sup.engine = connection  # type: ignore[assignment]
                lost, info = sup._claim()
                if lost is None and info is not None:
                    sup._heartbeat()
                    verdict = _Verdict(S.SUCCESS, rendered_fields={}, xcoms={"return_value": 1})
                    sup._record(verdict, info, RetryPolicy())
            finally:
                outer.rollback()
    except Exception as exc:  # noqa: BLE001 - only speed is lost
        log.warning("task runner warm-up rehearsal skipped: %s", exc)


#: A copy of the executor's event channel, set by the fork server in each child (None elsewhere).
EVENT_FD: int | None = None


def _announce_recorded(workload: TaskWorkload) -> None:
    """Tell the executor (and so the sleeping scheduler) that the try's state is committed."""
    if EVENT_FD is None:
        return
    line = json.dumps({"event": "recorded", "key": list(workload.key)}) + "\n"
    with contextlib.suppress(OSError):
        os.write(EVENT_FD, line.encode())  # one write under PIPE_BUF: atomic among the writers


#: (URL, engine) made by :func:`warm_up` in the fork server and used by the tries it forks.
_WARM_ENGINE: tuple[str, Engine] | None = None


_ENGINE_OWNER_PID: int | None = None


def _engine_for(settings: Settings) -> Engine | None:
    """The warmed engine when it is for this database; its pool is emptied once in each process."""
    global _ENGINE_OWNER_PID
    if _WARM_ENGINE is None or _WARM_ENGINE[0] != settings.sql_alchemy_conn:
        return None
    engine = _WARM_ENGINE[1]
    if _ENGINE_OWNER_PID != os.getpid():
        engine.dispose(close=False)  # never use connections another process opened
        _ENGINE_OWNER_PID = os.getpid()
    return engine


def prepare(settings: Settings) -> None:
    """Open this process's database connection ahead of its workload (a spare runner of the fork
    server), so a try's claim does not wait for connecting. Failures are left for the try."""
    engine = _engine_for(settings)
    if engine is None:
        return
    with contextlib.suppress(Exception):
        with engine.connect() as connection:
            connection.rollback()
