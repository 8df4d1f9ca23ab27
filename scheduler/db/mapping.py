"""Dynamic task mapping in the database: how long a mapped task's input is, and expanding its instances.

A mapped task has one task instance (map index -1, state none) until its trigger rule
is met; then :func:`map_length` reads what it maps over (literals from the serialized
DAG, an upstream task's XCom from the ``xcom`` table) and :func:`expand` turns the -1
instance into map index 0 and inserts 1 .. n-1 (compare-and-set on the -1 row, so two
schedulers never expand twice; the unique key (dag_id, run_id, task_id, map_index)
guards the inserts). A task that cannot be expanded fails with a ``log`` row saying why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from scheduler.authoring.mapping import MappingError, as_sequence, check_length
from scheduler.db.models import Log, TaskInstance, XCom
from scheduler.serialization import SerializedDAG
from scheduler.states import TaskInstanceState

S = TaskInstanceState


def _xcom_value(session: Session, dag_id: str, run_id: str, ref: dict[str, Any], where: str) -> Any:
    task_id, key = ref["task_id"], ref.get("key") or "return_value"
    base = select(XCom.value).where(
        XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id, XCom.key == key
    )
    if ref.get("mapped"):
        return [row.value for row in session.execute(base.where(XCom.map_index >= 0).order_by(XCom.map_index))]
    row = session.execute(base.where(XCom.map_index == -1)).first()
    if row is None:
        raise MappingError(f"{where}: task '{task_id}' pushed no XCom '{key}' to map over")
    return row.value


def map_length(session: Session, sdag: SerializedDAG, run_id: str, task_id: str, max_length: int) -> int | str:
    """How many instances the mapped task expands into, or why it cannot be expanded."""
    spec = sdag.tasks[task_id].get("expand_input") or {}
    where = f"mapped task '{task_id}'"

    def value(entry: dict[str, Any], what: str) -> list[Any]:
        if "xcom" in entry:
            return as_sequence(_xcom_value(session, sdag.dag_id, run_id, entry["xcom"], what), what)
        return as_sequence(entry.get("literal"), what)

    try:
        if spec.get("kind") == "list":
            length = len(value(spec.get("value") or {}, where))
        else:
            length = 1
            for name, entry in (spec.get("args") or {}).items():
                length *= len(value(entry, f"{where}, argument '{name}'"))
        check_length(length, max_length, where)
    except MappingError as exc:
        return str(exc)
    return length


def expand(session: Session, sdag: SerializedDAG, run_id: str, task_id: str, length: int, *, weight: int,
           now: datetime) -> bool:
    """The -1 instance becomes map index 0 and indexes 1 .. length-1 are inserted; False if it moved meanwhile."""
    result = session.execute(
        update(TaskInstance)
        .where(TaskInstance.dag_id == sdag.dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id,
               TaskInstance.map_index == -1, TaskInstance.state == S.NONE)
        .values(map_index=0, updated_at=now)
    )
    if (result.rowcount or 0) != 1:  # type: ignore[attr-defined]
        return False
    task = sdag.tasks[task_id]
    rows = [
        {
            "dag_id": sdag.dag_id, "run_id": run_id, "task_id": task_id, "map_index": index, "state": S.NONE,
            "try_number": 0, "max_tries": task.retries, "operator": task.operator, "pool": task.pool,
            "pool_slots": task.pool_slots, "priority_weight": weight,
            "queue": str(task.get("queue") or "default"), "updated_at": now,
        }
        for index in range(1, length)
    ]
    if rows:
        session.execute(insert(TaskInstance), rows)
    return True


def fail_unexpandable(session: Session, ti_id: int, dag_id: str, run_id: str, task_id: str, reason: str, *,
                      now: datetime) -> bool:
    """A mapped task whose input cannot be mapped over -> failed, with a ``log`` row giving the reason."""
    result = session.execute(
        update(TaskInstance)
        .where(TaskInstance.id == ti_id, TaskInstance.state == S.NONE)
        .values(state=S.FAILED, start_date=func.coalesce(TaskInstance.start_date, now), end_date=now, duration=0.0,
                updated_at=now)
    )
    if (result.rowcount or 0) != 1:  # type: ignore[attr-defined]
        return False
    session.execute(
        insert(Log).values(dttm=now, event=S.FAILED.value, owner=None, dag_id=dag_id, run_id=run_id, task_id=task_id,
                           map_index=-1, try_number=0, extra=reason)
    )
    return True
