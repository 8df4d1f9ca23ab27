"""The metadata database behind the cross-DAG operators (TriggerDagRunOperator, ExternalTaskSensor).

:class:`DbDagRunsService` implements :class:`scheduler.authoring.cross_dag.DagRunsService`:
each call is one short transaction, retried on transient errors. A triggered run is
a queued manual run, exactly as ``updraft dags trigger`` makes one; the scheduler
starts it under the DAG's max_active_runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from scheduler.clock import utcnow
from scheduler.db import store, ti_ops
from scheduler.db.engine import retry_transient, session_scope
from scheduler.db.models import DagRun, TaskInstance
from scheduler.states import DagRunState, DagRunType


class DbDagRunsService:
    """See the module documentation; ``engine_factory`` is called on first use."""

    def __init__(self, engine_factory: Callable[[], Engine]) -> None:
        self._engine_factory = engine_factory
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    def _read(self, unit: Callable[[Any], Any], what: str) -> Any:
        def run() -> Any:
            with session_scope(self.engine, readonly=True) as session:
                return unit(session)

        return retry_transient(run, what=what)

    def _write(self, unit: Callable[[Any], Any], what: str) -> Any:
        def run() -> Any:
            with session_scope(self.engine) as session:
                return unit(session)

        return retry_transient(run, what=what)

    def _serialized(self, dag_id: str) -> dict[str, Any] | None:
        return self._read(lambda s: store.get_serialized_dag(s, dag_id), f"reading DAG {dag_id}")  # type: ignore[no-any-return]

    def dag_exists(self, dag_id: str) -> bool:
        return self._serialized(dag_id) is not None

    def task_ids(self, dag_id: str) -> list[str] | None:
        data = self._serialized(dag_id)
        return None if data is None else [t["task_id"] for t in data["tasks"]]

    def group_task_ids(self, dag_id: str, group_id: str) -> list[str]:
        data = self._serialized(dag_id)
        if data is None:
            return []
        return [
            t["task_id"] for t in data["tasks"]
            if t.get("task_group") and (t["task_group"] == group_id or t["task_group"].startswith(group_id + "."))
        ]

    def trigger(self, dag_id: str, *, run_id: str, logical_date: datetime, conf: dict[str, Any]) -> None:
        from scheduler.authoring.cross_dag import DagRunExists
        from scheduler.serialization import SerializedDAG

        data = self._serialized(dag_id)
        if data is None:
            raise LookupError(f"DAG '{dag_id}' does not exist")
        sdag = SerializedDAG.from_dict(data)
        params = sdag.params.resolve(conf, dag_id=dag_id)  # bad conf fails the triggering task, clearly
        del params

        def unit(session: Any) -> None:
            now = utcnow()
            store.create_dag_run(
                session, dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL, logical_date=logical_date,
                data_interval=sdag.timetable.infer_manual_data_interval(run_after=logical_date), conf=conf,
                state=DagRunState.QUEUED, run_after=logical_date, now=now, external_trigger=True,
            )

        try:
            self._write(unit, f"triggering DAG {dag_id}")
        except store.DagRunAlreadyExists as exc:
            raise DagRunExists(str(exc)) from None

    def reset(self, dag_id: str, run_id: str) -> None:
        from scheduler.serialization import SerializedDAG

        data = self._serialized(dag_id)
        structure = ti_ops.structure_from_serialized(SerializedDAG.from_dict(data)) if data else None
        self._write(
            lambda s: ti_ops.mark_dag_run(s, dag_id, run_id, DagRunState.QUEUED, now=utcnow(), dag_structure=structure),
            f"clearing run {run_id} of DAG {dag_id}",
        )

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        state = self._read(
            lambda s: s.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)),
            f"reading run {run_id} of DAG {dag_id}",
        )
        return None if state is None else str(state.value if hasattr(state, "value") else state)

    def count(self, dag_id: str, logical_dates: Sequence[datetime], task_ids: Sequence[str] | None,
              states: Iterable[str]) -> int:
        wanted = [str(s) for s in states]
        dates = list(logical_dates)

        def unit(session: Any) -> int:
            if task_ids is None:
                query = select(func.count()).select_from(DagRun).where(
                    DagRun.dag_id == dag_id, DagRun.logical_date.in_(dates), DagRun.state.in_(wanted),
                )
            else:
                runs = select(DagRun.run_id).where(DagRun.dag_id == dag_id, DagRun.logical_date.in_(dates))
                query = select(func.count()).select_from(TaskInstance).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(runs),
                    TaskInstance.task_id.in_(list(task_ids)), TaskInstance.state.in_(wanted),
                )
            return int(session.scalar(query) or 0)

        return int(self._read(unit, f"counting states in DAG {dag_id}"))
