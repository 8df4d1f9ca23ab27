"""What a try's code sees: the facts the runner read about the try and its run (:class:`TryInfo`), and the
task's Jinja/callable context built from them."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.authoring.dag import DAG
    from scheduler.runtime import RuntimeDagRun, RuntimeTaskInstance, XComStore

@dataclass
class TryInfo:
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


def variables_reader(engine: Engine | Callable[[], Engine]) -> Callable[[str], str | None]:
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


def task_context(
    dag: DAG, task: BaseOperator, info: TryInfo, *, run_id: str, map_index: int, try_number: int,
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


