"""XCom values in the metadata database: the :class:`scheduler.runtime.XComStore` a real task try uses.

Each call is one short transaction of its own (retried on transient errors), so a value
a task pushes is visible to other tasks at once, whatever happens to the try later.
Values are stored as JSON in ``xcom.value``; a pushed ``None`` is kept as SQL NULL and
pulled back as ``None`` (a row that exists), while a key never pushed pulls ``default``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select

from scheduler.clock import utcnow
from scheduler.db.engine import retry_transient, session_scope
from scheduler.db.models import XCom


class DbXComStore:
    """XCom push / pull / clear against the ``xcom`` table of ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def push(self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, value: Any) -> None:
        def unit() -> None:
            with session_scope(self._engine) as session:
                session.execute(
                    delete(XCom).where(
                        XCom.dag_id == dag_id,
                        XCom.run_id == run_id,
                        XCom.task_id == task_id,
                        XCom.map_index == map_index,
                        XCom.key == key,
                    )
                )
                session.add(
                    XCom(
                        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
                        key=key, value=value, timestamp=utcnow(),
                    )
                )

        retry_transient(unit, what=f"XCom push {dag_id}.{task_id} {run_id} key {key!r}")

    def pull(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, default: Any = None
    ) -> Any:
        def unit() -> tuple[bool, Any]:
            with session_scope(self._engine, readonly=True) as session:
                row = session.execute(
                    select(XCom.id, XCom.value).where(
                        XCom.dag_id == dag_id,
                        XCom.run_id == run_id,
                        XCom.task_id == task_id,
                        XCom.map_index == map_index,
                        XCom.key == key,
                    )
                ).first()
                return (False, None) if row is None else (True, row.value)

        found, value = retry_transient(unit, what=f"XCom pull {dag_id}.{task_id} {run_id} key {key!r}")
        return value if found else default

    def clear(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        def unit() -> None:
            with session_scope(self._engine) as session:
                session.execute(
                    delete(XCom).where(
                        XCom.dag_id == dag_id,
                        XCom.run_id == run_id,
                        XCom.task_id == task_id,
                        XCom.map_index == map_index,
                    )
                )

        retry_transient(unit, what=f"XCom clear {dag_id}.{task_id} {run_id}")
