"""Rehearse a try in a spare runner before its workload arrives.

A spare runner is forked from a zygote (see :mod:`scheduler.executors.fork_server`) and
shares every page of its memory with it. The first write to a shared page, and in
CPython reading an object writes its reference count, costs a page fault and a copy:
about a thousand of them in a no-op try, 2 to 4 microseconds each here, so most of
the try's time. The spare waits idle for its workload, so it pays them ahead: it runs
the code a try runs (a synthetic no-op PythonOperator through the context, rendering,
execution and report; a real task of the zygote's file through its context; the log
formatting and output streams; the runner's read statements) with no output, no
database write and no user code, and throws the results away. The try that follows
then finds those pages already its own.

Nothing here may change what the real try does: global state it touches (sys.stdout,
sys.stderr, the root logger's handlers) is put back, and any failure is ignored.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.authoring.dag import DAG
    from scheduler.config import Settings

#: The synthetic DAG the rehearsal runs (made ahead by the fork server, see make_ahead; else by the first spare).
_SYNTHETIC: tuple[Any, Any] | None = None


def rehearse(settings: Settings, dags: dict[str, DAG] | None, interrupted: Callable[[], bool] = lambda: False) -> None:
    """Run a try's code paths once in this process (a spare runner), writing nothing anywhere.

    ``dags``: the zygote's DAGs (one of their tasks is put through a context too).
    ``interrupted()`` is asked between the steps: once the workload is there, the rest of the
    rehearsal would only delay it (in a burst of tries a spare is taken as soon as it is forked,
    and the rehearsal's faults and CPU would be paid on top of the try's).
    """
    sink = io.StringIO()
    saved = (sys.stdout, sys.stderr)
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    try:
        _rehearse(settings, dags, sink, root, interrupted)
    except Exception:  # noqa: BLE001, S110 - a rehearsal that fails only leaves the try colder
        pass
    finally:
        sys.stdout, sys.stderr = saved
        root.handlers[:] = saved_handlers


def _rehearse(settings: Settings, dags: dict[str, DAG] | None, sink: io.StringIO, root: logging.Logger,
              interrupted: Callable[[], bool]) -> None:
    if interrupted():
        return
    from scheduler.clock import utcnow
    from scheduler.db.xcom_store import TryXComStore
    from scheduler.execution import execute_try
    from scheduler.logfmt import AirflowFormatter, standalone_logger
    from scheduler.secrets_masker import MaskingStream, redact_value
    from scheduler.serialization import to_jsonable
    from scheduler.task_logs import log_path
    from scheduler.task_runner import RUNNER_LOGGER
    from scheduler.templating import environment_for
    from scheduler.try_context import TryInfo, task_context
    from scheduler.workloads import TaskWorkload, from_json, to_json

    # The streams and the logging of a try (as TaskProcess.setup makes them), into the sink.
    sys.stdout = sys.stderr = MaskingStream.over(sink)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(AirflowFormatter())
    root.handlers[:] = [handler]
    log = standalone_logger(RUNNER_LOGGER, sink)
    now = utcnow()
    log.info("Starting attempt %d of %d of %s.%s%s, run %s, on %s (runner pid %d)", 1, 1, "d", "t", "", "r",
             "h", os.getpid())

    # The workload's round trip and the log path.
    workload = from_json(to_json(TaskWorkload(ti_id=0, dag_id="d", run_id="r", task_id="t", map_index=-1,
                                              try_number=1, fileloc=os.devnull, queue="default")))
    assert isinstance(workload, TaskWorkload)
    log_path(settings.log_folder, workload.dag_id, workload.run_id, workload.task_id, workload.map_index,
             workload.try_number)

    def no_database() -> Any:
        raise RuntimeError("the rehearsal has no database")

    if interrupted():
        return
    info = TryInfo(max_tries=0, first_try_start=None, logical_date=now, data_interval_start=now,
                    data_interval_end=now, run_type="manual", conf={}, run_start_date=now, run_state="running")

    # A real task of the file through its context (its DAG's objects become this process's own), and
    # its DAG's template environment made (kept: the try renders with it).
    for dag in (dags or {}).values():
        environment_for(dag)
        for task in list(dag.tasks)[:1]:
            xcom = TryXComStore(no_database, dag_id=dag.dag_id, run_id="r", task_id=task.task_id, map_index=-1)
            task_context(dag, task, info, run_id="r", map_index=-1, try_number=1, xcom=xcom,
                          variables=lambda key: None, log=log)
        break

    if interrupted():
        return
    # A synthetic no-op PythonOperator through the whole try, and its report.
    dag, task = _synthetic()
    xcom = TryXComStore(no_database, dag_id=dag.dag_id, run_id="r", task_id=task.task_id, map_index=-1)
    context, _ti = task_context(dag, task, info, run_id="r", map_index=-1, try_number=1, xcom=xcom,
                                 variables=lambda key: None, log=log)
    outcome = execute_try(task, context, xcom=xcom, log=log)
    report = {
        "state": outcome.state.value,
        "rendered_fields": redact_value(to_jsonable(outcome.rendered_fields)),
        "xcoms": xcom.pushed,
        "end": (now + timedelta(seconds=1)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }
    json.dumps(report, default=str)
    logging.getLogger("scheduler.task_runner").info("rehearsal done")
    with contextlib.suppress(Exception):
        sys.stdout.flush()


def make_ahead(dags: dict[str, DAG] | None) -> None:
    """Build, in the process spares are forked from, what every rehearsal would otherwise build anew:
    the synthetic DAG and the template environments of it and of ``dags`` (a zygote's file).

    Made in a spare, they died with it; made here, every spare and try inherits them (with a
    try, they are what it renders with, as when its spare made them). Failures are left for the try.
    """
    from scheduler.templating import environment_for

    with contextlib.suppress(Exception):
        environment_for(_synthetic()[0])
        for dag in (dags or {}).values():
            environment_for(dag)


def _synthetic() -> tuple[Any, Any]:
    global _SYNTHETIC
    if _SYNTHETIC is None:
        from scheduler.authoring.dag import DAG
        from scheduler.authoring.operators import PythonOperator

        dag = DAG("__rehearsal__", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC))
        task = PythonOperator(task_id="noop", python_callable=_noop, dag=dag)
        _SYNTHETIC = (dag, task)
    return _SYNTHETIC


def _noop() -> None:
    return None
