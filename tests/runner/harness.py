"""Helpers for the task runner tests: a DAG folder, queued task instances, and the runner in a forked child."""

from __future__ import annotations

import os
import select
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy import select as sql_select

from scheduler.config import Settings, load_settings
from scheduler.db.engine import session_scope
from scheduler.db.models import Dag, DagRun, TaskInstance
from scheduler.states import DagRunState, DagRunType, TaskInstanceState
from scheduler.workloads import CallbackWorkload, TaskWorkload

LOGICAL_DATE = datetime(2026, 1, 1, tzinfo=UTC)
RUN_ID = "manual__2026-01-01T00:00:00+00:00"
#: How long any one runner may take in these tests before the test fails (and kills it).
RUN_DEADLINE_S = 60.0

HEADER = """\
import os, sys, time, signal, ctypes, json
from datetime import datetime, timedelta
from scheduler import DAG, BashOperator, PythonOperator, BranchPythonOperator, EmptyOperator
from scheduler.exceptions import TaskSkipped, TaskFailedNoRetry, TaskRescheduled
MARKERS = {markers!r}

def marker(name, text=""):
    with open(os.path.join(MARKERS, name), "a") as fh:
        fh.write(str(text))

def on_failure(context):
    marker("on_failure", context["exception"])

def on_retry(context):
    marker("on_retry", context["exception"])
"""


@dataclass
class Env:
    tmp: Path
    url: str
    engine: Engine
    settings: Settings
    dags: Path
    logs: Path
    markers: Path

    def write_dag(self, name: str, body: str) -> Path:
        path = self.dags / f"{name}.py"
        path.write_text(HEADER.format(markers=str(self.markers)) + textwrap.dedent(body))
        return path

    def marker(self, name: str) -> str | None:
        path = self.markers / name
        return path.read_text() if path.exists() else None

    def with_settings(self, **env: str) -> Env:
        return Env(self.tmp, self.url, self.engine, make_settings(self.tmp, self.url, **env), self.dags,
                   self.logs, self.markers)

    # --- rows ---------------------------------------------------------------------------------

    def queue(self, dag_id: str, fileloc: Path, tasks: dict[str, str], *, try_number: int = 1,
              max_tries: int = 0, run_id: str = RUN_ID, conf: dict[str, Any] | None = None) -> dict[str, int]:
        """A DAG row, a running DAG run and its task instances (task_id -> state); returns task_id -> ti id."""
        with session_scope(self.engine) as session:
            if session.get(Dag, dag_id) is None:
                session.add(Dag(dag_id=dag_id, fileloc=str(fileloc), is_paused=False))
                session.flush()
            if session.execute(sql_select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first() is None:
                session.add(DagRun(
                    dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL, state=DagRunState.RUNNING,
                    logical_date=LOGICAL_DATE, data_interval_start=LOGICAL_DATE, data_interval_end=LOGICAL_DATE,
                    start_date=LOGICAL_DATE, run_after=LOGICAL_DATE, conf=conf or {}, external_trigger=True,
                ))
                session.flush()
            ids = {}
            for task_id, state in tasks.items():
                ti = TaskInstance(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=-1,
                                  state=TaskInstanceState(state),
                                  try_number=try_number if state == "queued" else 0, max_tries=max_tries)
                session.add(ti)
                session.flush()
                ids[task_id] = ti.id
        return ids

    def requeue(self, ti_id: int, try_number: int) -> None:
        with session_scope(self.engine) as session:
            session.execute(update(TaskInstance).where(TaskInstance.id == ti_id)
                            .values(state=TaskInstanceState.QUEUED, try_number=try_number))

    def ti(self, ti_id: int) -> TaskInstance:
        with session_scope(self.engine, readonly=True) as session:
            row = session.get(TaskInstance, ti_id)
            assert row is not None
            return row

    def log_of(self, dag_id: str, task_id: str, try_number: int = 1, run_id: str = RUN_ID) -> str:
        from scheduler.task_logs import log_path

        return log_path(self.logs, dag_id, run_id, task_id, -1, try_number).read_text()

    # --- running ---------------------------------------------------------------------------------

    def workload(self, ti_id: int, dag_id: str, task_id: str, fileloc: Path, try_number: int = 1) -> TaskWorkload:
        return TaskWorkload(ti_id=ti_id, dag_id=dag_id, run_id=RUN_ID, task_id=task_id, map_index=-1,
                            try_number=try_number, fileloc=str(fileloc))

    def start(self, workload: TaskWorkload | CallbackWorkload, *, direct: bool = False,
              event_fd: int | None = None) -> Runner:
        """run_workload in a forked child, as the executor's fork server does; the test process runs no task code.

        ``direct``: the try's code runs in that child itself, as under the fork server.
        ``event_fd``: where the child announces its recorded state, as to the fork server's channel.
        """
        from scheduler import task_runner
        from scheduler.task_runner import run_workload

        stderr = self.tmp / f"runner-{time.monotonic_ns()}.err"
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 2)
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - not pytest's capture
                task_runner.EVENT_FD = event_fd
                code = run_workload(workload, self.settings, direct=direct)
            finally:
                os._exit(code)
        return Runner(pid, stderr)

    def run(self, workload: TaskWorkload | CallbackWorkload, *, direct: bool = False) -> tuple[int, str]:
        runner = self.start(workload, direct=direct)
        return runner.wait(), runner.stderr()


class Runner:
    def __init__(self, pid: int, stderr_path: Path) -> None:
        self.pid = pid
        self.stderr_path = stderr_path
        self.pidfd = os.pidfd_open(pid)

    def wait(self, deadline_s: float = RUN_DEADLINE_S) -> int:
        ready, _, _ = select.select([self.pidfd], [], [], deadline_s)
        if not ready:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            raise AssertionError(f"the runner did not finish within {deadline_s} s:\n{self.stderr()}")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        return os.waitstatus_to_exitcode(status)

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""


def make_settings(tmp: Path, url: str, **extra: str) -> Settings:
    env = {
        "UPDRAFT_HOME": str(tmp / "home"),
        "UPDRAFT__DATABASE__SQL_ALCHEMY_CONN": url,
        "UPDRAFT__CORE__DAGS_FOLDER": str(tmp / "dags"),
        "UPDRAFT__LOGGING__BASE_LOG_FOLDER": str(tmp / "logs"),
        "UPDRAFT__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "0.2",
        "UPDRAFT__CORE__KILLED_TASK_CLEANUP_TIME": "3",
    }
    env.update({f"UPDRAFT__{k.upper()}": v for k, v in extra.items()})
    return load_settings(env, cwd=tmp)


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.02)


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rfind(b")") + 2:].split()[0] in (b"Z", b"X")
