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
  instance's task_reschedule rows (a clear deletes them: the first try since the last
  clear, as Airflow) and exposes it to the task as ``context["ti"].first_try_start``
  (None before any reschedule): sensors count their timeout from it, across retries.
  ``task_instance.start_date`` is always the start of this poke;
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

import _thread
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
    from scheduler.db.raw import RawCursor, RawDb
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
    """The log file of one try: ``{base}/dag_id=D/run_id=R/task_id=T/[map_index=I/]attempt=N.log``.

    An id that could leave its folder (a ``/``, a NUL; ids are checked where users give them,
    this is a second defence) is percent-encoded.
    """
    return Path(log_folder_of(base, dag_id, run_id, task_id, map_index), f"attempt={try_number}.log")


def log_folder_of(base: str | os.PathLike[str], dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The folder of a task instance's try logs (see :func:`log_path`)."""
    folder = os.path.join(base, f"dag_id={_path_safe(dag_id)}", f"run_id={_path_safe(run_id)}",
                          f"task_id={_path_safe(task_id)}")
    return folder if map_index < 0 else os.path.join(folder, f"map_index={map_index}")


def callbacks_log_path(base: str | os.PathLike[str], dag_id: str, run_id: str) -> Path:
    """Where callbacks run outside the task's own try log: ``{base}/dag_id=D/run_id=R/callbacks.log``."""
    return Path(base) / f"dag_id={_path_safe(dag_id)}" / f"run_id={_path_safe(run_id)}" / "callbacks.log"


def _path_safe(component: str) -> str:
    if "/" in component or "\0" in component or "\\" in component:
        from urllib.parse import quote

        return quote(component, safe="")
    return component


def _open_log(path: Path) -> TextIO:
    """The try's log, opened for appending; its folder is made when missing (a zygote usually made it already)."""
    try:
        return open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    except FileNotFoundError:
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
    ``"{dag_id}#{task_id}#{str(logical date), or the run id}#{try_number}"`` — a jitter in
    ``[base, 2 * base)`` that is the same for the same try. The result is capped at 24 h and
    at ``max_retry_delay`` when that is set.
    """
    if not policy.exponential:
        return policy.retry_delay
    base = max(1, math.ceil(policy.retry_delay.total_seconds() * (2 ** (try_number - 1))))
    when = str(logical_date) if logical_date is not None else run_id  # str(), as Airflow's f-string: a space, no 'T'
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


#: What a claimed try needs, read in its claim's transaction: the instance's max_tries, a sensor's first
#: poke (of its first try since the last clear, which deleted the older rows: as in Airflow, a retry does
#: not start a rescheduled sensor's timeout over), the number of reschedules in this try, and its run.
_CLAIM_READ = (
    "SELECT ti.max_tries,"
    " (SELECT min(r.start_date) FROM task_reschedule r WHERE r.ti_id = ti.id),"
    " (SELECT count(*) FROM task_reschedule r WHERE r.ti_id = ti.id AND r.try_number = %s),"
    " dr.logical_date, dr.data_interval_start, dr.data_interval_end, dr.run_type, dr.conf, dr.start_date, dr.state"
    " FROM task_instance ti LEFT JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id"
    " WHERE ti.id = %s"
)


class _Supervisor:
    """One try: claim, run the task, record the outcome.

    Two ways to run the task:

    * supervised (the default: ``updraft tasks run``, tests): the task runs in a forked
      child that this process watches; a child that dies is recorded here as failed, with
      its callbacks called here;
    * **direct** (the LocalExecutor's fork server): the task runs in this very process,
      one fork per try instead of two. A watchdog thread heartbeats, notices an external
      state change and enforces the execution timeout's hard end (recording the failure
      and killing the process group when the task ignores its timeout); a process that
      dies before recording is reported by the fork server's exit event and failed by
      the scheduler, which sends its callbacks.
    """

    def __init__(self, workload: TaskWorkload, settings: Settings, *, direct: bool = False) -> None:
        self.w = workload
        self.settings = settings
        self.direct = direct
        #: Direct mode: why the task is being stopped (kind: timeout, external, shutdown; message).
        self.stop_reason: tuple[str, str] | None = None
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

    def _current_state(self, cur: RawCursor) -> str:
        row = cur.execute("SELECT state, try_number FROM task_instance WHERE id = %s", (self.w.ti_id,)).one_or_none()
        if row is None:
            return "deleted"
        state, try_number = row
        return str(state) if try_number == self.w.try_number else f"{state}, try {try_number}"

    def _claim(self) -> tuple[str | None, _TryInfo | None]:
        """queued -> running, this try's old XComs deleted, and what the try needs read: one transaction.

        Returns (None, info) when claimed, else (the state that stopped us, None).
        """
        from scheduler.clock import utcnow

        assert self.engine is not None
        w = self.w
        db = _raw_db(self.engine)

        def unit() -> tuple[str | None, _TryInfo | None]:
            now = utcnow()
            stamp = db.ts(now)
            with db.write() as cur:
                cur.execute(
                    "UPDATE task_instance SET state = %s, pid = %s, hostname = %s, start_date = %s, end_date = NULL,"
                    " duration = NULL, last_heartbeat_at = %s, updated_at = %s"
                    " WHERE id = %s AND state = %s AND try_number = %s",
                    (S.RUNNING.value, os.getpid(), self.hostname, stamp, stamp, stamp, w.ti_id, S.QUEUED.value,
                     w.try_number),
                )
                if cur.rowcount != 1:
                    return self._current_state(cur), None
                cur.execute("DELETE FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND map_index = %s",
                            (w.dag_id, w.run_id, w.task_id, w.map_index))
                row = cur.execute(_CLAIM_READ, (w.try_number, w.ti_id)).one_or_none()
            self.started = now
            max_tries, first, pokes, *run = row if row is not None else (0, None, 0, *([None] * 7))
            if run[3] is None:  # no run_type: the run is gone
                return None, _TryInfo(max_tries=int(max_tries or 0), first_try_start=db.read_ts(first),
                                      reschedule_count=int(pokes or 0), logical_date=None, data_interval_start=None,
                                      data_interval_end=None, run_type="manual", conf={}, run_start_date=None,
                                      run_state="running", hostname=self.hostname)
            logical, start, end, run_type, conf, run_started, run_state = run
            return None, _TryInfo(
                max_tries=int(max_tries or 0),
                first_try_start=db.read_ts(first),
                reschedule_count=int(pokes or 0),
                logical_date=db.read_ts(logical),
                data_interval_start=db.read_ts(start),
                data_interval_end=db.read_ts(end),
                run_type=str(run_type),
                conf=dict(db.read_json(conf) or {}),
                run_start_date=db.read_ts(run_started),
                run_state=str(run_state),
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
        from scheduler.clock import utcnow

        assert self.engine is not None
        db = _raw_db(self.engine)

        def unit() -> str | None:
            stamp = db.ts(utcnow())
            with db.write() as cur:
                cur.execute(
                    "UPDATE task_instance SET last_heartbeat_at = %s, updated_at = %s"
                    " WHERE id = %s AND state = %s AND try_number = %s",
                    (stamp, stamp, self.w.ti_id, S.RUNNING.value, self.w.try_number),
                )
                return None if cur.rowcount == 1 else self._current_state(cur)

        return self._db(unit, "heartbeat")

    def _record(self, verdict: _Verdict, info: _TryInfo | None, policy: RetryPolicy) -> str | None:
        """Write the verdict; None when recorded, else the state someone else put the instance in."""
        from scheduler.clock import utcnow

        assert self.engine is not None
        w = self.w
        db = _raw_db(self.engine)
        key = (w.dag_id, w.run_id, w.task_id, w.map_index)

        def unit() -> str | None:
            end = utcnow()
            start = self.started or end
            duration = max((end - start).total_seconds(), 0.0)
            next_retry_at: datetime | None = None
            try_number = w.try_number
            if verdict.state is S.UP_FOR_RETRY:
                logical = info.logical_date if info is not None else None
                next_retry_at = end + retry_delay(
                    policy, dag_id=w.dag_id, task_id=w.task_id, logical_date=logical, run_id=w.run_id,
                    try_number=w.try_number,
                )
            elif verdict.state is S.UP_FOR_RESCHEDULE:
                next_retry_at = verdict.reschedule_date
                try_number = w.try_number - 1
            stamp = db.ts(end)
            sets = "state = %s, end_date = %s, duration = %s, next_retry_at = %s, try_number = %s, updated_at = %s"
            params: list[Any] = [verdict.state.value, stamp, duration, db.ts(next_retry_at), try_number, stamp]
            if verdict.rendered_fields is not None:
                sets += f", rendered_fields = {db.json_param}"
                params.append(db.json(verdict.rendered_fields))
            with db.write() as cur:
                cur.execute(f"UPDATE task_instance SET {sets} WHERE id = %s AND state = %s AND try_number = %s",
                            (*params, w.ti_id, S.RUNNING.value, w.try_number))
                if cur.rowcount != 1:
                    return self._current_state(cur)
                for xcom_key, value in (verdict.xcoms or {}).items():
                    cur.execute("DELETE FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s"
                                " AND map_index = %s AND key = %s", (*key, xcom_key))
                    cur.execute("INSERT INTO xcom (dag_id, run_id, task_id, map_index, key, value, timestamp)"
                                f" VALUES (%s, %s, %s, %s, %s, {db.json_param}, %s)",
                                (*key, xcom_key, db.json(value), stamp))
                if verdict.state is S.UP_FOR_RESCHEDULE:
                    assert verdict.reschedule_date is not None
                    cur.execute("INSERT INTO task_reschedule (ti_id, try_number, start_date, end_date, reschedule_date)"
                                " VALUES (%s, %s, %s, %s, %s)",
                                (w.ti_id, w.try_number, db.ts(start), stamp, db.ts(verdict.reschedule_date)))
                else:
                    history_state = S.FAILED if verdict.state is S.UP_FOR_RETRY else verdict.state
                    cur.execute(
                        "INSERT INTO task_instance_history (dag_id, run_id, task_id, map_index, try_number, state,"
                        " start_date, end_date, duration, hostname) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (*key, w.try_number, history_state.value, db.ts(start), stamp, duration, self.hostname),
                    )
                skipped = sorted(set(verdict.skip_task_ids or ()))
                if verdict.state is S.SUCCESS and skipped:
                    marks = ", ".join(["%s"] * len(skipped))
                    cur.execute(
                        "UPDATE task_instance SET state = %s, start_date = %s, end_date = %s, updated_at = %s"
                        f" WHERE dag_id = %s AND run_id = %s AND task_id IN ({marks}) AND state IN (%s, %s)",
                        (S.SKIPPED.value, stamp, stamp, stamp, w.dag_id, w.run_id, *skipped, S.NONE.value,
                         S.SCHEDULED.value),
                    )
                if verdict.state in (S.FAILED, S.UP_FOR_RETRY):
                    cur.execute(
                        "INSERT INTO log (dttm, event, owner, dag_id, run_id, task_id, map_index, try_number, extra)"
                        " VALUES (%s, %s, NULL, %s, %s, %s, %s, %s, %s)",
                        (stamp, verdict.state.value, *key, w.try_number,
                         (verdict.message or "")[-MAX_LOG_EXTRA:] or None),
                    )
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
            # Close what the try's XCom pulls and Variables opened; not Engine.dispose(), whose new
            # pool (~0.7 ms a try) a runner about to exit never uses.
            self.engine.pool.dispose()
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
        from scheduler.parsing import DagFileImportError

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
                dags = load_dags(w.fileloc, self.settings)
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

        verdict = self._run_here(dag, task, info, policy) if self.direct else self._supervise(dag, task, info)
        if verdict is None:
            return EXIT_OK
        if verdict.run_callbacks:
            self._callbacks_after_death(dag, task, info, verdict)
        return self._finish(verdict, info, policy)

    # -- direct mode ---------------------------------------------------------------------------

    def _run_here(self, dag: DAG, task: BaseOperator, info: _TryInfo, policy: RetryPolicy) -> _Verdict | None:
        """Run the task in this process (direct mode) with a watchdog thread; None: not to be recorded."""
        assert self.log_file is not None
        with contextlib.suppress(OSError):  # already the group leader under the fork server
            os.setpgid(0, 0)
        process = _TaskProcess(self, dag, task, info, None, None)
        process.setup()
        watchdog = _Watchdog(self, dag, task, info, policy)
        watchdog.start()
        try:
            report = process.run_task()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            watchdog.stop()
        kind = self.stop_reason[0] if self.stop_reason else None
        if kind is not None:
            _signal_group(os.getpgrp(), signal.SIGTERM)  # what the task left running (we ignore SIGTERM now)
        if kind == "external" or watchdog.recorded:
            return None
        if report.get("timed_out"):
            self.log.error("Timeout: the task ran longer than its execution_timeout (%s)", task.execution_timeout)
        return self._verdict(report, 0, "shutdown" if kind == "shutdown" else None, "", task.execution_timeout,
                             info)

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


class _Watchdog:
    """Direct mode's supervisor: a thread beside the task in the try's process.

    Every ``task_instance_heartbeat_sec`` it heartbeats; when the instance was changed by
    someone else (cleared, marked) it stops the task (SIGTERM to this process: the task's
    on_kill runs and nothing is recorded). The execution timeout itself is raised in the
    task by its SIGALRM timer; when the task is still running ``killed_task_cleanup_time``
    after it (it blocks or ignores the signal), the watchdog records the timeout failure,
    calls the retry/failure callback and SIGKILLs the process group, itself included.
    """

    def __init__(self, sup: _Supervisor, dag: DAG, task: BaseOperator, info: _TryInfo, policy: RetryPolicy) -> None:
        self.sup = sup
        self.dag = dag
        self.task = task
        self.info = info
        self.policy = policy
        self._done = threading.Event()
        #: The watchdog recorded the try itself (hard timeout).
        self.recorded = False

    def start(self) -> None:
        # A bare thread: threading.Thread.start() waits for the new thread to be scheduled, which
        # cost a short try several milliseconds on a busy machine. Nothing waits for it to end
        # either: stop() only tells it to, and the process may exit while it is still waking.
        _thread.start_new_thread(self.run, ())

    def stop(self) -> None:
        self._done.set()

    def run(self) -> None:
        # Signals go to the task's thread as if this one did not exist (a task that blocks SIGALRM
        # must not have its timeout delivered through here).
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})
        try:
            self._watch()
        except Exception:  # noqa: BLE001 - the try goes on; the scheduler's heartbeat check is the backstop
            self.sup.log.exception("the try's watchdog failed")

    def _watch(self) -> None:
        sup = self.sup
        every = float(sup.settings.get("scheduler", "task_instance_heartbeat_sec"))
        cleanup = float(sup.settings.get("core", "killed_task_cleanup_time"))
        timeout = self.task.execution_timeout
        now = time.monotonic()
        hard_end = now + timeout.total_seconds() + cleanup if timeout is not None else None
        next_heartbeat = now + every
        kill_at: float | None = None
        while True:
            now = time.monotonic()
            waits = [next_heartbeat - now]
            if hard_end is not None:
                waits.append(hard_end - now)
            if kill_at is not None:
                waits.append(kill_at - now)
            if self._done.wait(max(0.0, min(waits))):
                return
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                sup.log.warning("the task did not stop within %.1f s of SIGTERM; sending SIGKILL", cleanup)
                _flush_all()
                _signal_group(os.getpgrp(), signal.SIGKILL)
                return
            if hard_end is not None and now >= hard_end:
                self._hard_timeout(timeout, cleanup)
                return
            if now >= next_heartbeat and sup.stop_reason is None:
                next_heartbeat = now + every
                try:
                    changed = sup._heartbeat()
                except Exception as exc:  # noqa: BLE001 - a database blip must not kill the task
                    sup.log.warning("heartbeat failed: %s", exc)
                    changed = None
                if changed is not None:
                    sup.stop_reason = ("external", f"state changed externally to {changed}")
                    sup.log.warning("state changed externally to %s; terminating the task", changed)
                    os.kill(os.getpid(), signal.SIGTERM)
                    kill_at = time.monotonic() + cleanup
                    hard_end = None
            elif now >= next_heartbeat:
                next_heartbeat = now + every

    def _hard_timeout(self, timeout: timedelta | None, cleanup: float) -> None:
        sup = self.sup
        message = f"Timeout: the task ran longer than its execution_timeout ({timeout})"
        sup.stop_reason = ("timeout", message)
        sup.log.error("%s and did not stop within %.1f s; recording the failure and sending SIGKILL",
                      message, cleanup)
        retry = self.info.max_tries >= sup.w.try_number
        verdict = _Verdict(S.UP_FOR_RETRY if retry else S.FAILED, message=message)
        try:
            other = sup._record(verdict, self.info, self.policy)
        except Exception:  # noqa: BLE001 - the scheduler fails the try when the process is gone
            sup.log.exception("could not record the timeout")
            other = "unknown"
        if other is None:
            self.recorded = True
            _announce_recorded(sup.w)
            sup._callbacks_after_death(self.dag, self.task, self.info, verdict)
        _flush_all()
        _signal_group(os.getpgrp(), signal.SIGKILL)


def _root_level(settings: Settings) -> None:
    """The root logger at ``logging.logging_level``. Only when it is not already: setting a level clears
    the cache of every logger in the process (hundreds, with SQLAlchemy's), ~0.2 ms in a forked try;
    the fork server sets it once for all its children (warm_up)."""
    wanted = str(settings.get("logging", "logging_level"))
    root = logging.getLogger()
    if root.level != logging.getLevelName(wanted):
        root.setLevel(wanted)


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class _TaskProcess:
    """The task's code in its process: a forked child (supervised mode) or the try's own process (direct)."""

    def __init__(self, sup: _Supervisor, dag: DAG, task: BaseOperator, info: _TryInfo, out_w: int | None,
                 ctl_r: int | None) -> None:
        self.sup = sup
        self.dag = dag
        self.task = task
        self.info = info
        self.out_w = out_w
        self.ctl_r = ctl_r
        #: Direct mode (no pipes): the supervisor's own process runs the task (see _Supervisor.direct).
        self.direct = out_w is None
        self._terminating = False
        self.sup_pid = os.getppid()
        self.engines: list[Engine] = []

    def main(self) -> int:
        """The forked task process: run the task, write its report to the supervisor, exit."""
        os.setpgid(0, 0)
        _die_with_parent(sup_pid=self.sup_pid)
        global EVENT_FD
        if EVENT_FD is not None:  # the executor's channel is the supervisor's to use, not the task's
            with contextlib.suppress(OSError):
                os.close(EVENT_FD)
            EVENT_FD = None
        self.setup()
        report = self.run_task()
        assert self.out_w is not None
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

    def setup(self) -> None:
        """Output to the try's log, masking, signals and logging for the task's code (in this process)."""
        sup = self.sup
        assert sup.log_file is not None and sup.engine is not None
        fd = sup.log_file.fileno()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        from scheduler.crypto import use_settings
        from scheduler.secrets_masker import MaskingStream

        use_settings(sup.settings)  # get_connection() and Variables decrypt with this try's settings
        # Secrets (mask_secret(), sensitive Variables, connection passwords) become *** in the try's log.
        sys.stdout, sys.stderr = MaskingStream.over(_fd_writer(1)), MaskingStream.over(_fd_writer(2))
        with contextlib.suppress(Exception):
            faulthandler.enable(file=sys.stderr)
        for signum in (signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        if self.ctl_r is not None:
            os.set_blocking(self.ctl_r, False)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(AirflowFormatter())
        root.addHandler(handler)
        _root_level(sup.settings)
        if not self.direct:
            sup.engine.dispose(close=False)  # the supervisor's connections stay the supervisor's

    def _engine(self) -> Engine:
        """The engine for the task's XCom pulls and Variables, made on first use (a task that
        pulls nothing and reads no Variable never connects). The supervisor's engine: in a
        forked task process its pool was emptied in setup(), so its dialect comes along and its
        connections do not."""
        from scheduler.db.engine import make_engine

        if not self.engines:
            self.engines.append(self.sup.engine or make_engine(self.sup.settings.sql_alchemy_conn, pool_size=1,
                                                               max_overflow=4))
        return self.engines[0]

    def run_task(self) -> dict[str, Any]:
        """Execute the try; the report the supervisor turns into a verdict."""
        from scheduler.db.xcom_store import TryXComStore
        from scheduler.execution import TaskExecutionTimeout, execute_try
        from scheduler.secrets_masker import redact, redact_value
        from scheduler.serialization import to_jsonable

        w = self.sup.w
        engine_factory = self._engine

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
                "error": redact(outcome.error) if outcome.error else outcome.error,
                "skip_task_ids": list(outcome.skip_task_ids),
                "rendered_fields": redact_value(to_jsonable(outcome.rendered_fields)),
                "duration": outcome.duration,
                "up_for_retry": outcome.up_for_retry,
                "reschedule_date": outcome.reschedule_date.isoformat() if outcome.reschedule_date else None,
                "fail_fast_no_retry": outcome.fail_fast_no_retry,
                "timed_out": isinstance(context.get("exception"), TaskExecutionTimeout),
                "xcoms": xcom.pushed,
            }
        except BaseException:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            error = redact(traceback.format_exc())
            log.error("Task '%s' could not run:\n%s", w.task_id, error.rstrip())
            report = {"state": S.FAILED.value, "error": error, "up_for_retry": self.info.max_tries >= w.try_number}
        if not self.direct:
            for engine in self.engines:
                with contextlib.suppress(Exception):
                    engine.dispose()
        return report

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._terminating:
            return
        self._terminating = True
        if self.direct:
            kind, message = self.sup.stop_reason or ("shutdown", "the task runner received SIGTERM")
            if self.sup.stop_reason is None:
                self.sup.stop_reason = (kind, message)
                self.sup.log.warning("%s; terminating the task", message)
        else:
            try:
                raw = os.read(self.ctl_r, 4096).decode("utf-8", "replace") if self.ctl_r is not None else ""
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
            _flush_all()
            if self.direct:  # the process group is ours to end: what the task started goes too
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                _signal_group(os.getpgrp(), signal.SIGTERM)
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
    from scheduler.parsing import DagFileImportError

    try:
        with _fds_to(stream):
            dags = load_dags(workload.fileloc, settings)
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


def run_workload(workload: Workload, settings: Settings, *, direct: bool = False) -> int:
    """Run one workload in this process (see the module docstring); returns the exit code.

    ``direct``: run a task try's code in this process too (see :class:`_Supervisor`).
    """
    try:
        if isinstance(workload, TaskWorkload):
            return _Supervisor(workload, settings, direct=direct).run()
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
    import scheduler.crypto  # noqa: F401
    import scheduler.db.models  # noqa: F401
    import scheduler.db.raw  # noqa: F401
    import scheduler.db.store  # noqa: F401
    import scheduler.db.xcom_store  # noqa: F401
    import scheduler.execution  # noqa: F401
    import scheduler.parse_worker  # noqa: F401
    import scheduler.parsing  # noqa: F401
    import scheduler.secrets_masker  # noqa: F401
    import scheduler.spare_warmup  # noqa: F401
    import scheduler.templating  # noqa: F401
    import scheduler.timetables  # noqa: F401
    from scheduler.db.engine import make_engine

    configure_mappers()
    _root_level(settings)
    global _WARM_ENGINE
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=2)
    try:
        with engine.connect() as connection:  # the dialect initialises itself on the first connection
            connection.rollback()
    except Exception as exc:  # noqa: BLE001 - a database that is away now is reported by the tries
        logging.getLogger(__name__).warning("task runner warm-up could not reach the database: %s", exc)
    engine.dispose()
    _WARM_ENGINE = (settings.sql_alchemy_conn, engine)


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



def _engine_for(settings: Settings) -> Engine | None:
    """The warmed engine when it is for this database.

    Its pool is empty in every process forked from the fork server: the server disposes it
    after warming up and never uses it again, and a zygote disposes it after importing its
    DAG file (:func:`preload`), so a try never sees a connection another process opened.
    """
    if _WARM_ENGINE is None or _WARM_ENGINE[0] != settings.sql_alchemy_conn:
        return None
    return _WARM_ENGINE[1]


def prepare(settings: Settings, workload_fd: int | None = None) -> None:
    """Open this process's database connection ahead of its workload (a spare runner of the fork
    server), so a try's claim does not wait for connecting, then rehearse the try until the workload
    arrives on ``workload_fd`` (scheduler.spare_warmup). Failures are left for the try."""
    from scheduler.spare_warmup import rehearse

    engine = _engine_for(settings)
    if engine is not None:
        with contextlib.suppress(Exception):
            _raw_db(engine).connect()

    def arrived() -> bool:
        if workload_fd is None:
            return False
        try:
            return bool(select.select([workload_fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    rehearse(settings, _PRELOADED[2] if _PRELOADED is not None else None, arrived)


#: (pid, engine, its RawDb): the claim, heartbeat and record statements' connections in this process.
_RAW: tuple[int, Engine, RawDb] | None = None


def _raw_db(engine: Engine) -> RawDb:
    from scheduler.db.raw import RawDb

    global _RAW
    if _RAW is None or _RAW[0] != os.getpid() or _RAW[1] is not engine:
        _RAW = (os.getpid(), engine, RawDb(engine))
    return _RAW[2]


# --- DAG files imported ahead of the tries ----------------------------------------------------------

#: Set in a fork server's zygote for one DAG file (see :mod:`scheduler.executors.fork_server`):
#: (path, its signature when imported, the DAGs it defined). Tries forked from the zygote use them
#: instead of importing the file again while the file is unchanged.
_PRELOADED: tuple[str, tuple[int, int, int], dict[str, DAG]] | None = None


def file_signature(path: str) -> tuple[int, int, int] | None:
    """What tells a changed DAG file: modification time, size and inode (None when it is gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def load_dags(fileloc: str, settings: Settings) -> dict[str, DAG]:
    """The DAGs of ``fileloc``: imported ahead by this process's zygote when still current, else imported now."""
    from scheduler.parsing import load_dags_from_file

    if _PRELOADED is not None and _PRELOADED[0] == fileloc and file_signature(fileloc) == _PRELOADED[1]:
        return _PRELOADED[2]
    return load_dags_from_file(Path(fileloc), default_timezone=settings.get("core", "default_timezone"),
                               dags_folder=settings.dags_folder)


def preload(fileloc: str, settings: Settings) -> str | None:
    """Import ``fileloc`` in THIS process (a zygote) for the tries forked from it.

    None when the import can serve tries; otherwise why not (the tries then import the
    file themselves, as without a zygote): the import failed, the file changed meanwhile,
    or the import left threads running (forking a process with other threads can
    deadlock the child). What the import prints is discarded: a try's log shows the
    output of its own import only when it imports the file itself.
    """
    from scheduler.parsing import DagFileImportError, load_dags_from_file

    global _PRELOADED
    before = file_signature(fileloc)
    if before is None:
        return "the file is gone"
    try:
        with open(os.devnull, "w") as sink, _fds_to(sink):
            dags = load_dags_from_file(Path(fileloc), default_timezone=settings.get("core", "default_timezone"),
                                       dags_folder=settings.dags_folder)
    except DagFileImportError:
        return "the file does not import"
    threads = threading.active_count()
    try:
        threads = max(threads, len(os.listdir("/proc/self/task")))
    except OSError:
        pass
    if threads > 1:
        return f"importing it started {threads - 1} thread(s)"
    if file_signature(fileloc) != before:
        return "the file changed while it was imported"
    engine = _engine_for(settings)
    if engine is not None:
        engine.dispose()  # connections the import opened (a Variable read at top level) stay here
    _PRELOADED = (fileloc, before, dags)
    return None
