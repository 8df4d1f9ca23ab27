"""What a running task sees of itself: the ``ti`` object of the context, its DAG run, and XCom storage.

Pure: no database and no processes. The XCom store is a protocol; ``MemoryXComStore``
serves ``dags test`` and unit tests, and the task runner passes one backed by the
metadata database.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from scheduler.exceptions import XComError
from scheduler.states import TaskInstanceState

if TYPE_CHECKING:
    from scheduler.authoring.baseoperator import BaseOperator

#: The key a task's return value is stored under.
RETURN_KEY = "return_value"


class XComStore(Protocol):
    """Where XCom values live, keyed by (dag_id, run_id, task_id, map_index, key).

    Values handed to ``push`` are already checked to be JSON-serialisable; a store keeps
    them as JSON. ``pull`` returns ``default`` when nothing was pushed under that key.
    ``clear`` forgets everything one task instance pushed (called when a new try starts).
    """

    def push(self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, value: Any) -> None: ...

    def pull(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, default: Any = None
    ) -> Any: ...

    def clear(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> None: ...


class MemoryXComStore:
    """An XCom store in a dict; values are stored as JSON text, so a pull returns a fresh copy."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str, str, int, str], str] = {}

    def push(self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, value: Any) -> None:
        self._data[(dag_id, run_id, task_id, map_index, key)] = json.dumps(value)

    def pull(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, default: Any = None
    ) -> Any:
        raw = self._data.get((dag_id, run_id, task_id, map_index, key))
        return default if raw is None else json.loads(raw)

    def pull_mapped(self, dag_id: str, run_id: str, task_id: str, key: str) -> list[Any]:
        """The values every map index (>= 0) of a mapped task pushed under ``key``, in map-index order."""
        found = sorted((k[3], raw) for k, raw in self._data.items()
                       if k[:3] == (dag_id, run_id, task_id) and k[3] >= 0 and k[4] == key)
        return [json.loads(raw) for _, raw in found]

    def clear(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        for k in [k for k in self._data if k[:4] == (dag_id, run_id, task_id, map_index)]:
            del self._data[k]

    def for_run(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Everything pushed in one run: task_id -> key -> value (map index -1 only)."""
        out: dict[str, dict[str, Any]] = {}
        for (d, r, task_id, map_index, key), raw in sorted(self._data.items()):
            if d == dag_id and r == run_id and map_index == -1:
                out.setdefault(task_id, {})[key] = json.loads(raw)
        return out


@dataclass
class RuntimeDagRun:
    """The ``dag_run`` of the context: what a task may know about its run."""

    dag_id: str
    run_id: str
    logical_date: datetime
    data_interval_start: datetime
    data_interval_end: datetime
    run_type: str = "manual"
    conf: dict[str, Any] = field(default_factory=dict)
    start_date: datetime | None = None
    state: str = "running"

    @property
    def execution_date(self) -> datetime:
        return self.logical_date

    @property
    def external_trigger(self) -> bool:
        return self.run_type == "manual"

    def __repr__(self) -> str:
        return f"<DagRun {self.dag_id} @ {self.logical_date.isoformat()}: {self.run_id}, state:{self.state}>"


class RuntimeTaskInstance:
    """The ``ti`` / ``task_instance`` of the context.

    ``xcom_push`` / ``xcom_pull`` go to the XCom store; ``skip_tasks`` only records the
    task ids a branch or short-circuit decided to skip, and the caller applies them.
    """

    def __init__(
        self,
        *,
        task: BaseOperator,
        run_id: str,
        xcom: XComStore,
        try_number: int = 1,
        max_tries: int | None = None,
        map_index: int = -1,
        dag_run: RuntimeDagRun | None = None,
        log: logging.Logger | None = None,
        hostname: str | None = None,
    ) -> None:
        self.task = task
        self.dag_id = task.dag_id
        self.task_id = task.task_id
        self.run_id = run_id
        self.map_index = map_index
        self.try_number = try_number
        self.max_tries = task.retries if max_tries is None else max_tries
        self.state: TaskInstanceState = TaskInstanceState.RUNNING
        self.hostname = hostname or socket.gethostname()
        self.log = log or logging.getLogger("scheduler.task")
        self.dag_run = dag_run
        self.operator = type(task).__name__
        self.pool = task.pool
        self.queue = task.queue
        self.priority_weight = task.priority_weight
        self.start_date: datetime | None = None
        self.end_date: datetime | None = None
        self.skipped_task_ids: list[str] = []
        self._xcom = xcom

    # --- XCom -----------------------------------------------------------------------------------

    def xcom_push(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` for this task instance; it must be JSON-serialisable."""
        if not isinstance(key, str) or not key:
            raise XComError(f"task '{self.task_id}': XCom key must be a non-empty string, got {key!r}")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise XComError(
                f"task '{self.task_id}': XCom value for key '{key}' is not JSON-serialisable "
                f"({type(value).__name__}): {exc}"
            ) from None
        self._xcom.push(self.dag_id, self.run_id, self.task_id, self.map_index, key, value)

    def xcom_pull(
        self,
        task_ids: str | Iterable[str] | None = None,
        key: str = RETURN_KEY,
        dag_id: str | None = None,
        map_indexes: int | Iterable[int] | None = None,
        default: Any = None,
        include_prior_dates: bool = False,
        run_id: str | None = None,
    ) -> Any:
        """Values pushed in this run.

        ``task_ids`` a string: that task's value (``default`` if none); a list: the values in
        that order; None: this task's own. ``map_indexes`` a list gives a list per task.
        ``include_prior_dates`` is accepted for compatibility; only this run is searched.
        """
        dag_id = dag_id or self.dag_id
        run_id = run_id or self.run_id
        if task_ids is None:
            task_ids = self.task_id
        if map_indexes is None:
            indexes: int | list[int] = -1
        elif isinstance(map_indexes, int):
            indexes = map_indexes
        else:
            indexes = list(map_indexes)

        def one(task_id: str) -> Any:
            if map_indexes is None and self._is_mapped(dag_id, task_id):
                return self.xcom_pull_mapped(task_id, key=key, dag_id=dag_id, run_id=run_id)
            if isinstance(indexes, int):
                return self._xcom.pull(dag_id, run_id, task_id, indexes, key, default)
            return [self._xcom.pull(dag_id, run_id, task_id, i, key, default) for i in indexes]

        if isinstance(task_ids, str):
            return one(task_ids)
        return [one(t) for t in task_ids]

    def _is_mapped(self, dag_id: str, task_id: str) -> bool:
        dag = getattr(self.task, "_dag", None)
        if dag is None or dag.dag_id != dag_id:
            return False
        other = dag.task_dict.get(task_id)
        return bool(getattr(other, "is_mapped", False))

    def xcom_pull_mapped(self, task_id: str, *, key: str = RETURN_KEY, dag_id: str | None = None,
                         run_id: str | None = None) -> list[Any]:
        """The values of every map index of a mapped task, in map-index order (what a task downstream receives)."""
        pull = getattr(self._xcom, "pull_mapped", None)
        if pull is None:
            raise XComError(f"task '{self.task_id}': this XCom store cannot read the values of mapped task '{task_id}'")
        return list(pull(dag_id or self.dag_id, run_id or self.run_id, task_id, key))

    # --- branching --------------------------------------------------------------------------------

    def skip_tasks(self, task_ids: Sequence[str]) -> None:
        """Record downstream tasks to skip; the caller marks them skipped once this try succeeds."""
        for task_id in task_ids:
            if task_id not in self.skipped_task_ids:
                self.skipped_task_ids.append(task_id)

    # --- the run ------------------------------------------------------------------------------

    def get_dagrun(self) -> RuntimeDagRun:
        if self.dag_run is None:
            raise LookupError(f"task instance '{self.task_id}' of run '{self.run_id}' has no DAG run attached")
        return self.dag_run

    @property
    def logical_date(self) -> datetime | None:
        return self.dag_run.logical_date if self.dag_run is not None else None

    @property
    def execution_date(self) -> datetime | None:
        return self.logical_date

    @property
    def next_try_number(self) -> int:
        return self.try_number + 1

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.dag_id, self.task_id, self.run_id, self.try_number, self.map_index)

    def __repr__(self) -> str:
        return f"<TaskInstance: {self.dag_id}.{self.task_id} {self.run_id} [{self.state}]>"
