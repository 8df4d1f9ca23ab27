"""The task's code in its process, and direct mode's watchdog thread beside it.

:class:`TaskProcess` runs the task: in a forked child watched by the supervisor (supervised mode), or
in the try's own process (direct mode, the LocalExecutor's fork server), where a :class:`Watchdog`
thread heartbeats, notices an external state change and enforces the execution timeout's hard end.
Both work for a :class:`scheduler.task_runner.Supervisor` (see that module's docstring).
"""

from __future__ import annotations

import _thread
import contextlib
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from scheduler.exceptions import UpdraftError
from scheduler.logfmt import AirflowFormatter, standalone_logger
from scheduler.retry_policy import RetryPolicy
from scheduler.runner_processes import _die_with_parent, _fd_writer, _signal_group
from scheduler.states import TaskInstanceState
from scheduler.try_context import TryInfo, task_context, variables_reader

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.authoring.dag import DAG
    from scheduler.config import Settings
    from scheduler.task_runner import Supervisor

S = TaskInstanceState


class TaskTerminated(UpdraftError):
    """Raised inside the task when the supervisor terminates it (SIGTERM): timeout or shutdown."""


class TaskProcessError(UpdraftError):
    """What ``context["exception"]`` is when the runner, not the task's code, failed the try."""


@dataclass
class Verdict:
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


def read_available(fd: int, buf: bytearray) -> bool:
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


def parse_outcome(data: bytes) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        outcome = json.loads(data)
    except ValueError:
        return None
    return outcome if isinstance(outcome, dict) and "state" in outcome else None


class Watchdog:
    """Direct mode's supervisor: a thread beside the task in the try's process.

    Every ``task_instance_heartbeat_sec`` it heartbeats; when the instance was changed by
    someone else (cleared, marked) it stops the task (SIGTERM to this process: the task's
    on_kill runs and nothing is recorded). The execution timeout itself is raised in the
    task by its SIGALRM timer; when the task is still running ``killed_task_cleanup_time``
    after it (it blocks or ignores the signal), the watchdog records the timeout failure,
    calls the retry/failure callback and SIGKILLs the process group, itself included.
    """

    def __init__(self, sup: Supervisor, dag: DAG, task: BaseOperator, info: TryInfo, policy: RetryPolicy) -> None:
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
                flush_all()
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
        verdict = Verdict(S.UP_FOR_RETRY if retry else S.FAILED, message=message)
        try:
            other = sup._record(verdict, self.info, self.policy)
        except Exception:  # noqa: BLE001 - the scheduler fails the try when the process is gone
            sup.log.exception("could not record the timeout")
            other = "unknown"
        if other is None:
            self.recorded = True
            from scheduler.task_runner import announce_recorded

            announce_recorded(sup.w)
            sup._callbacks_after_death(self.dag, self.task, self.info, verdict)
        flush_all()
        _signal_group(os.getpgrp(), signal.SIGKILL)


def root_level(settings: Settings) -> None:
    """The root logger at ``logging.logging_level``. Only when it is not already: setting a level clears
    the cache of every logger in the process (hundreds, with SQLAlchemy's), ~0.2 ms in a forked try;
    the fork server sets it once for all its children (warm_up)."""
    wanted = str(settings.get("logging", "logging_level"))
    root = logging.getLogger()
    if root.level != logging.getLevelName(wanted):
        root.setLevel(wanted)


def flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class TaskProcess:
    """The task's code in its process: a forked child (supervised mode) or the try's own process (direct)."""

    def __init__(self, sup: Supervisor, dag: DAG, task: BaseOperator, info: TryInfo, out_w: int | None,
                 ctl_r: int | None) -> None:
        self.sup = sup
        self.dag = dag
        self.task = task
        self.info = info
        self.out_w = out_w
        self.ctl_r = ctl_r
        #: Direct mode (no pipes): the supervisor's own process runs the task (see Supervisor.direct).
        self.direct = out_w is None
        self._terminating = False
        self.sup_pid = os.getppid()
        self.engines: list[Engine] = []

    def main(self) -> int:
        """The forked task process: run the task, write its report to the supervisor, exit."""
        os.setpgid(0, 0)
        _die_with_parent(sup_pid=self.sup_pid)
        import scheduler.task_runner as task_runner

        if task_runner.EVENT_FD is not None:  # the executor's channel is the supervisor's to use, not the task's
            with contextlib.suppress(OSError):
                os.close(task_runner.EVENT_FD)
            task_runner.EVENT_FD = None
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
        root_level(sup.settings)
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
            context, _ti = task_context(
                self.dag, self.task, self.info, run_id=w.run_id, map_index=w.map_index, try_number=w.try_number,
                xcom=xcom, variables=variables_reader(engine_factory), log=log,
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
            flush_all()
            if self.direct:  # the process group is ours to end: what the task started goes too
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                _signal_group(os.getpgrp(), signal.SIGTERM)
            os._exit(128 + signal.SIGTERM)
        raise TaskTerminated(message)


