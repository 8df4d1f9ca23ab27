"""A :class:`~scheduler.workloads.CallbackWorkload`: a DAG's or a task's callbacks, run outside the scheduler.

It imports the DAG file, builds the context (a DAG callback gets the context of the run's last
finished task instance with ``reason``; a task callback the task's full context with ``exception``),
calls the callbacks, logs to ``{base_log_folder}/dag_id=D/run_id=R/callbacks.log`` and returns 0;
what the callbacks raise is logged, never raised.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from scheduler.logfmt import standalone_logger
from scheduler.runner_processes import _fds_to
from scheduler.states import TaskInstanceState
from scheduler.task_logs import callbacks_log_path, open_log
from scheduler.task_process import TaskProcessError
from scheduler.task_runner import EXIT_OK, RUNNER_LOGGER, load_dags
from scheduler.try_context import TryInfo, task_context, variables_reader
from scheduler.workloads import CallbackWorkload

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from scheduler.authoring.dag import DAG
    from scheduler.config import Settings
    from scheduler.runtime import XComStore

S = TaskInstanceState

def run_callback_workload(workload: CallbackWorkload, settings: Settings) -> int:
    from scheduler.db.engine import make_engine

    path = callbacks_log_path(settings.log_folder, workload.dag_id, workload.run_id)
    try:
        out = open_log(path)
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
    variables = variables_reader(engine)
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
    context, ti = task_context(dag, task, info, run_id=workload.run_id, map_index=workload.map_index,
                                try_number=max(workload.try_number, 1), xcom=xcom, variables=variables, log=task_log)
    ti.state = S.UP_FOR_RETRY if retry else S.FAILED
    context["exception"] = TaskProcessError(workload.reason or f"task '{task_id}' failed")
    with _fds_to(stream):
        run_callbacks(callbacks, context, log, name)
    log.info("Called %s of task '%s'", name, task_id)


def _callback_info(workload: CallbackWorkload, engine: Engine, ti_id: int | None) -> TryInfo:
    from sqlalchemy import select

    from scheduler.db.engine import retry_transient, session_scope
    from scheduler.db.models import DagRun, TaskInstance

    def unit() -> TryInfo:
        with session_scope(engine, readonly=True) as session:
            run = session.execute(
                select(DagRun).where(DagRun.dag_id == workload.dag_id, DagRun.run_id == workload.run_id)
            ).scalar_one_or_none()
            ti = session.get(TaskInstance, ti_id) if ti_id is not None else None
        return TryInfo(
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
    context, ti = task_context(
        dag, task, info, run_id=workload.run_id, map_index=chosen.map_index, try_number=max(chosen.try_number, 1),
        xcom=xcom, variables=variables, log=standalone_logger(dag.dag_id, stream),
    )
    ti.state = chosen.state
    ti.start_date = chosen.start_date
    ti.end_date = chosen.end_date
    context["dag_run"] = dag_run
    context["reason"] = reason
    return context


