"""Plain SQL on the engine's DBAPI connection, for the few statements on a task try's hot path.

A task try claims its instance, heartbeats and records its outcome: a handful of
fixed statements. Through ORM sessions each of those units cost a try 4-7 ms and
about 1,400 copy-on-write page faults in a freshly forked runner (the session,
compiled-statement cache and result machinery touch memory shared with the fork
server); the same statements on the DBAPI cursor cost about 0.4 ms and 80 faults.
So the runner uses this module, and everything else keeps SQLAlchemy.

What SQLAlchemy would do is done by hand here, and must stay in step with
:mod:`scheduler.db.models`:

* datetimes: aware UTC; on SQLite stored as SQLAlchemy's naive text
  ``YYYY-MM-DD HH:MM:SS.ffffff`` (it sorts as time does), on PostgreSQL passed as is;
* JSON columns: ``json.dumps`` text on SQLite, ``CAST(... AS JSONB)`` on PostgreSQL;
* ``updated_at`` is set by each UPDATE (the models' ``onupdate``);
* a SQLite connection gets the engine's PRAGMAs and each write transaction is
  ``BEGIN IMMEDIATE``, as :mod:`scheduler.db.engine` does; PostgreSQL runs READ
  COMMITTED like a session.

Errors come out as SQLAlchemy's ``DBAPIError`` (with ``connection_invalidated`` on a
lost connection) so :func:`scheduler.db.engine.retry_transient` treats them as it does
any other unit of work.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class RawCursor:
    """A DBAPI cursor taking ``%s`` placeholders on both backends.

    With ``wrap`` (the driver's base error class and the dialect), a driver error comes out
    as SQLAlchemy's ``DBAPIError`` at once, as a session's statement would raise it.
    """

    def __init__(self, cursor: Any, sqlite: bool, cache: dict[str, str], wrap: tuple[Any, Any, Any] | None = None) -> None:
        self._cursor = cursor
        self._sqlite = sqlite
        self._cache = cache
        self._wrap = wrap
        self.last_statement = ""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> RawCursor:
        if self._sqlite:
            converted = self._cache.get(sql)
            if converted is None:
                converted = self._cache[sql] = sql.replace("%s", "?")
            sql = converted
        self.last_statement = sql
        if self._wrap is None:
            self._cursor.execute(sql, tuple(params))
            return self
        error, dialect, connection = self._wrap
        try:
            self._cursor.execute(sql, tuple(params))
        except error as exc:
            from scheduler.db.engine import dbapi_error_to_sqlalchemy

            lost = dialect.is_disconnect(exc, connection, self._cursor)
            raise dbapi_error_to_sqlalchemy(sql, exc, error, invalidated=lost) from exc
        return self

    @property
    def sqlite(self) -> bool:
        return self._sqlite

    def all(self) -> list[Any]:
        return self._cursor.fetchall()  # type: ignore[no-any-return]

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def one_or_none(self) -> tuple[Any, ...] | None:
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def scalar(self) -> Any:
        row = self._cursor.fetchone()
        return None if row is None else row[0]


def session_cursor(session: Session) -> RawCursor:
    """A cursor on ``session``'s own DBAPI connection, inside the transaction the session has begun.

    For the scheduler loop's hot statements: SQLAlchemy's execution of a prepared Core
    statement costs ~30 us and its row processing ~10 us a row, against ~2 us and
    nothing on the cursor. Values are converted as :class:`RawDb` does (:func:`db_ts`,
    :meth:`RawDb.read_ts`). The cursor must not outlive the transaction.
    """
    cached = session.info.get(_CURSOR_KEY)
    if cached is not None and cached[0] is session.get_transaction():
        return cached[1]  # type: ignore[no-any-return]
    connection = session.connection()
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    assert driver is not None  # a live pooled connection
    cursor = RawCursor(driver.cursor(), dialect.name == "sqlite", _SESSION_STATEMENTS,
                       (dialect.loaded_dbapi.Error, dialect, driver))
    session.info[_CURSOR_KEY] = (session.get_transaction(), cursor)  # for the rest of this transaction
    return cursor


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """A savepoint around Core and plain-SQL work in ``session`` (what ``session.begin_nested()`` does,
    for a fifth of its cost): released when the block ends, rolled back to when it raises.

    Not for work that adds ORM objects: the session would not know their rows were rolled back.
    """
    cursor = session_cursor(session)
    name = f"updraft_{next(_SAVEPOINT_NAMES)}"
    cursor.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
        cursor.execute(f"RELEASE SAVEPOINT {name}")
        raise
    cursor.execute(f"RELEASE SAVEPOINT {name}")


_SAVEPOINT_NAMES = itertools.count(1)
#: Statements with their placeholders converted for SQLite (shared by every session cursor).
_SESSION_STATEMENTS: dict[str, str] = {}
#: Where a session keeps its cursor: (the root transaction it belongs to, the cursor).
_CURSOR_KEY = "updraft.raw_cursor"


def db_ts(value: datetime | None, sqlite: bool) -> Any:
    """An aware datetime as the column stores it: SQLAlchemy's naive UTC text on SQLite, as is on PostgreSQL."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} cannot be stored: make it timezone-aware")
    value = value.astimezone(UTC)
    if sqlite:
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class RawDb:
    """Short write transactions of plain SQL on DBAPI connections of its own (one per thread).

    The connections are opened with the engine's URL and settings but outside its pool:
    a pool's first connection in a new process runs SQLAlchemy's dialect initialisation
    again, which costs a forked runner more than the whole try's SQL.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        #: The placeholder of a JSON value in an INSERT or UPDATE.
        self.json_param = "%s" if self.sqlite else "CAST(%s AS JSONB)"
        self._statements: dict[str, str] = {}
        self._local = threading.local()
        self._pid = os.getpid()
        self._dbapi = engine.dialect.loaded_dbapi
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        if not self.sqlite:
            from scheduler.db.engine import PG_CONNECT_TIMEOUT_S

            kwargs.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
        self._connect_args = (args, kwargs)

    # -- values ------------------------------------------------------------------------------------

    def ts(self, value: datetime | None) -> Any:
        """A datetime as the column stores it (aware required)."""
        return db_ts(value, self.sqlite)

    @staticmethod
    def read_ts(value: Any) -> datetime | None:
        """A stored datetime as an aware UTC datetime."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @staticmethod
    def json(value: Any) -> str | None:
        """A value for a JSON column (None is SQL NULL, as the models store it)."""
        return None if value is None else json.dumps(value)

    @staticmethod
    def read_json(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    # -- connections and transactions ------------------------------------------------------------------

    def connect(self) -> Any:
        """This thread's connection, opened now if needed (a spare runner connects ahead of its try)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if os.getpid() != self._pid:
            raise RuntimeError("a RawDb is not to be used across fork(): make one in the child")
        from scheduler.db.engine import dbapi_error_to_sqlalchemy, setup_sqlite_connection

        args, kwargs = self._connect_args
        try:
            conn = self._dbapi.connect(*args, **kwargs)
            if self.sqlite:
                setup_sqlite_connection(conn)
        except self._dbapi.Error as exc:
            raise dbapi_error_to_sqlalchemy("connect", exc, self._dbapi.Error, invalidated=True) from exc
        self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001, S110 - nothing to keep
                pass

    @contextmanager
    def write(self) -> Iterator[RawCursor]:
        """One write transaction: committed when the block ends, rolled back when it raises."""
        from scheduler.db.engine import dbapi_error_to_sqlalchemy

        conn = self.connect()
        cursor = None
        wrapped: RawCursor | None = None
        try:
            try:
                cursor = conn.cursor()
                wrapped = RawCursor(cursor, self.sqlite, self._statements)
                if self.sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                yield wrapped
                conn.commit()
            except self._dbapi.Error as exc:
                lost = self.engine.dialect.is_disconnect(exc, conn, cursor)
                if lost:
                    self.close()
                else:
                    _rollback(conn)
                statement = wrapped.last_statement if wrapped is not None else "BEGIN"
                raise dbapi_error_to_sqlalchemy(statement, exc, self._dbapi.Error, invalidated=lost) from exc
            except BaseException:
                _rollback(conn)
                raise
        finally:
            if cursor is not None:
                try:
                    cursor.close()
                except Exception:  # noqa: BLE001, S110 - the transaction is over either way
                    pass


def _rollback(raw: Any) -> None:
    try:
        raw.rollback()
    except Exception:  # noqa: BLE001, S110 - a broken connection is discarded by the pool
        pass
