"""XCom values in the metadata database: the :class:`scheduler.runtime.XComStore` a real task try uses.

Each call is one short transaction of its own (retried on transient errors), so a value
a task pushes is visible to other tasks at once, whatever happens to the try later.
Values are stored as JSON in ``xcom.value``; a pushed ``None`` is kept as SQL NULL and
pulled back as ``None`` (a row that exists), while a key never pushed pulls ``default``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import Session

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
                write_pushed(session, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
                             pushed={key: value})

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

    def pull_mapped(self, dag_id: str, run_id: str, task_id: str, key: str) -> list[Any]:
        """The values the map indexes (>= 0) of a mapped task pushed under ``key``, in map-index order."""
        def unit() -> list[Any]:
            with session_scope(self._engine, readonly=True) as session:
                rows = session.execute(
                    select(XCom.value).where(
                        XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id,
                        XCom.map_index >= 0, XCom.key == key,
                    ).order_by(XCom.map_index)
                )
                return [row.value for row in rows]

        return retry_transient(unit, what=f"XCom pull of mapped {dag_id}.{task_id} {run_id} key {key!r}")  # type: ignore[no-any-return]

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


class TryXComStore:
    """The XCom store of one try's task process: its own pushes are kept in memory and travel back
    to the supervisor with the outcome, which writes them in the same transaction as the try's state.

    So a task that pushes nothing but its return value, and pulls nothing, never opens a
    database connection. Pulls of other tasks' values go to the database through an
    engine made on first use by ``engine_factory``. This try's own earlier values were
    deleted by the supervisor when it claimed the try, so :meth:`clear` of this task
    instance only empties the buffer. A try that dies before reporting loses its pushes,
    as it loses its state.
    """

    def __init__(self, engine_factory: Callable[[], Engine], *, dag_id: str, run_id: str, task_id: str,
                 map_index: int) -> None:
        self._engine_factory = engine_factory
        self._db: DbXComStore | None = None
        self._own = (dag_id, run_id, task_id, map_index)
        #: key -> value pushed by this try, in push order.
        self.pushed: dict[str, Any] = {}

    def _database(self) -> DbXComStore:
        if self._db is None:
            self._db = DbXComStore(self._engine_factory())
        return self._db

    def push(self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, value: Any) -> None:
        if (dag_id, run_id, task_id, map_index) == self._own:
            self.pushed.pop(key, None)
            self.pushed[key] = value
        else:
            self._database().push(dag_id, run_id, task_id, map_index, key, value)

    def pull(self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, default: Any = None) -> Any:
        if (dag_id, run_id, task_id, map_index) == self._own and key in self.pushed:
            return self.pushed[key]
        return self._database().pull(dag_id, run_id, task_id, map_index, key, default)

    def pull_mapped(self, dag_id: str, run_id: str, task_id: str, key: str) -> list[Any]:
        return self._database().pull_mapped(dag_id, run_id, task_id, key)

    def clear(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        if (dag_id, run_id, task_id, map_index) == self._own:
            self.pushed.clear()
        else:
            self._database().clear(dag_id, run_id, task_id, map_index)


def write_pushed(session: Session, *, dag_id: str, run_id: str, task_id: str, map_index: int,
                 pushed: dict[str, Any]) -> None:
    """Store a try's buffered pushes (see :class:`TryXComStore`) in the caller's transaction."""
    if not pushed:
        return
    session.execute(
        delete(XCom).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id, XCom.map_index == map_index,
            XCom.key.in_(list(pushed)),
        )
    )
    now = utcnow()
    session.execute(
        insert(XCom),
        [
            {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index, "key": key,
             "value": value, "timestamp": now}
            for key, value in pushed.items()
        ],
    )


def clear_for_try(session: Session, *, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
    """Delete a task instance's XComs in the caller's transaction (a new try starts with none)."""
    session.execute(
        delete(XCom).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id, XCom.map_index == map_index,
        )
    )
