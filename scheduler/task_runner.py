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

A :class:`~scheduler.workloads.CallbackWorkload` is run by :mod:`scheduler.task_callbacks`.

The pieces: the task's process and direct mode's watchdog are :mod:`scheduler.task_process`,
the try's context :mod:`scheduler.try_context`, the retry delay :mod:`scheduler.retry_policy`,
the log paths :mod:`scheduler.task_logs`; this module is the supervisor and the entry points.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from scheduler.logfmt import standalone_logger
from scheduler.retry_policy import RetryPolicy, retry_delay
from scheduler.runner_processes import (
    _become_subreaper,
    _describe_exit,
    _fds_to,
    _group_alive,
    _own_children,
    _reap_children,
    _signal_group,
)
from scheduler.states import SKIPPED_XCOM_KEY, TaskInstanceState
from scheduler.task_logs import log_path, open_log
from scheduler.task_process import (
    TaskProcess,
    TaskProcessError,
    Verdict,
    Watchdog,
    parse_outcome,
    read_available,
    root_level,
)
from scheduler.try_context import TryInfo, task_context, variables_reader
from scheduler.workloads import CallbackWorkload, TaskWorkload, Workload

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.authoring.dag import DAG
    from scheduler.config import Settings
    from scheduler.db.raw import RawCursor, RawDb

S = TaskInstanceState

#: The workload was handled (a state recorded, or deliberately not run / not recorded).
EXIT_OK = 0
#: The runner itself failed; the try's state may not have been recorded.
EXIT_RUNNER_FAILED = 1

#: How much of a failure message is kept in the ``log`` table.
MAX_LOG_EXTRA = 10_000

RUNNER_LOGGER = "runner"



# --- the supervisor ------------------------------------------------------------------------------


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


class Supervisor:
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

    def _claim(self) -> tuple[str | None, TryInfo | None]:
        """queued -> running, this try's old XComs deleted, and what the try needs read: one transaction.

        Returns (None, info) when claimed, else (the state that stopped us, None).
        """
        from scheduler.clock import utcnow

        assert self.engine is not None
        w = self.w
        db = _raw_db(self.engine)

        def unit() -> tuple[str | None, TryInfo | None]:
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
                return None, TryInfo(max_tries=int(max_tries or 0), first_try_start=db.read_ts(first),
                                      reschedule_count=int(pokes or 0), logical_date=None, data_interval_start=None,
                                      data_interval_end=None, run_type="manual", conf={}, run_start_date=None,
                                      run_state="running", hostname=self.hostname)
            logical, start, end, run_type, conf, run_started, run_state = run
            return None, TryInfo(
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

    def _record(self, verdict: Verdict, info: TryInfo | None, policy: RetryPolicy) -> str | None:
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
                    # What this try skipped, kept as Airflow keeps it: a skipped task cleared later is skipped
                    # again by the scheduler while this try's decision stands (see dagrun_logic.plan_run).
                    cur.execute("DELETE FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s"
                                " AND map_index = %s AND key = %s", (*key, SKIPPED_XCOM_KEY))
                    cur.execute("INSERT INTO xcom (dag_id, run_id, task_id, map_index, key, value, timestamp)"
                                f" VALUES (%s, %s, %s, %s, %s, {db.json_param}, %s)",
                                (*key, SKIPPED_XCOM_KEY, db.json({"skipped": skipped}), stamp))
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

    def _fail_early(self, message: str, info: TryInfo, *, to_stderr: bool) -> int:
        """Fail the try before the task process started (no log, no DAG, no task)."""
        if to_stderr:
            print(f"updraft task runner: {self.w.label()}: {message}", file=sys.stderr, flush=True)
        else:
            self.log.error("%s", message)
        retry = info.max_tries >= self.w.try_number
        verdict = Verdict(S.UP_FOR_RETRY if retry else S.FAILED, message=message)
        if info.serialized_task is None:
            info.serialized_task = self._serialized_task()
        return self._finish(verdict, info, RetryPolicy.of_serialized(info.serialized_task))

    def _finish(self, verdict: Verdict, info: TryInfo, policy: RetryPolicy) -> int:
        other = self._record(verdict, info, policy)
        if other is not None:
            self.log.warning("state changed externally to %s; not recording %s", other, verdict.state.value)
            return EXIT_OK
        if verdict.state is S.UP_FOR_RESCHEDULE:
            self.log.info("Recorded state up_for_reschedule: next poke at %s (try %d stays %d)",
                          verdict.reschedule_date.isoformat() if verdict.reschedule_date else "?",
                          self.w.try_number, self.w.try_number)
        else:
            self.log.info("Recorded state %s for try %d", verdict.state.value, self.w.try_number)
        # The log's last line is written before the scheduler is woken, so a run it then finishes
        # has complete logs (short of the loop finding the state on its own first).
        announce_recorded(self.w)
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
            self.log_file = open_log(path)
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

    def _run_here(self, dag: DAG, task: BaseOperator, info: TryInfo, policy: RetryPolicy) -> Verdict | None:
        """Run the task in this process (direct mode) with a watchdog thread; None: not to be recorded."""
        assert self.log_file is not None
        with contextlib.suppress(OSError):  # already the group leader under the fork server
            os.setpgid(0, 0)
        process = TaskProcess(self, dag, task, info, None, None)
        process.setup()
        watchdog = Watchdog(self, dag, task, info, policy)
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

    def _supervise(self, dag: DAG, task: BaseOperator, info: TryInfo) -> Verdict | None:
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
                code = TaskProcess(self, dag, task, info, out_w, ctl_r).main()
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

    def _watch(self, pid: int, task: BaseOperator, info: TryInfo, out_r: int, ctl_w: int) -> Verdict | None:
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
                if out_r in ready and not read_available(out_r, buf):
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
        read_available(out_r, buf)
        outcome = parse_outcome(bytes(buf))
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
                 timeout: timedelta | None, info: TryInfo) -> Verdict | None:
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
            return Verdict(failed_state, message=message, rendered_fields=rendered, run_callbacks=not task_failed,
                            xcoms=xcoms)
        if ending == "shutdown":
            message = f"the task runner was stopped by {signal.Signals(self.stop_signal or signal.SIGTERM).name}"
            return Verdict(failed_state, message=message, rendered_fields=rendered, run_callbacks=not task_failed,
                            xcoms=xcoms)
        if outcome is None:
            message = _describe_exit(status)
            if os.waitstatus_to_exitcode(status) == 0:
                message += " without reporting an outcome"
            self.log.error("%s", message)
            return Verdict(failed_state, message=message, run_callbacks=True)
        state = S(outcome["state"])
        if state is S.FAILED and outcome.get("up_for_retry"):
            state = S.UP_FOR_RETRY
        reschedule = outcome.get("reschedule_date")
        return Verdict(
            state,
            message=outcome.get("error"),
            rendered_fields=rendered,
            skip_task_ids=list(outcome.get("skip_task_ids") or []),
            reschedule_date=datetime.fromisoformat(reschedule) if reschedule else None,
            xcoms=xcoms,
        )

    def _callbacks_after_death(self, dag: DAG, task: BaseOperator, info: TryInfo, verdict: Verdict) -> None:
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
            context, ti = task_context(
                dag, task, info, run_id=self.w.run_id, map_index=self.w.map_index, try_number=self.w.try_number,
                xcom=DbXComStore(self.engine), variables=variables_reader(self.engine), log=task_log,
            )
            ti.state = verdict.state
            context["exception"] = TaskProcessError(verdict.message or "the task failed")
            self.log.info("Calling %s of %s", name, self.w.task_id)
            with _fds_to(self.log_file):
                run_callbacks(callbacks, context, self.log, name)
        except Exception:
            self.log.exception("Could not call %s of %s", name, self.w.task_id)


# --- entry point -------------------------------------------------------------------------------


def run_workload(workload: Workload, settings: Settings, *, direct: bool = False) -> int:
    """Run one workload in this process (see the module docstring); returns the exit code.

    ``direct``: run a task try's code in this process too (see :class:`Supervisor`).
    """
    try:
        if isinstance(workload, TaskWorkload):
            return Supervisor(workload, settings, direct=direct).run()
        if isinstance(workload, CallbackWorkload):
            from scheduler.task_callbacks import run_callback_workload

            return run_callback_workload(workload, settings)
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
    import scheduler.task_callbacks  # noqa: F401
    import scheduler.templating  # noqa: F401
    import scheduler.timetables  # noqa: F401
    from scheduler.db.engine import make_engine

    configure_mappers()
    root_level(settings)
    global _WARM_ENGINE
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=2)
    try:
        with engine.connect() as connection:  # the dialect initialises itself on the first connection
            connection.rollback()
    except Exception as exc:  # noqa: BLE001 - a database that is away now is reported by the tries
        logging.getLogger(__name__).warning("task runner warm-up could not reach the database: %s", exc)
    engine.dispose()
    _WARM_ENGINE = (settings.sql_alchemy_conn, engine)
    scheduler.spare_warmup.make_ahead(None)


#: A copy of the executor's event channel, set by the fork server in each child (None elsewhere).
EVENT_FD: int | None = None


def announce_recorded(workload: TaskWorkload) -> None:
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
    from scheduler.spare_warmup import make_ahead

    make_ahead(dags)
    return None
