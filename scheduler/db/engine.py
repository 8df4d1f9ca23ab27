"""Engines and the unit of work: :func:`make_engine` and :func:`session_scope`.

Two backends are supported: SQLite (the embedded default) and PostgreSQL through
psycopg 3 (``postgresql+psycopg://``; ``postgresql://`` and ``postgres://`` are
rewritten to it).

SQLite transactions
-------------------
Python's ``sqlite3`` driver (legacy transaction control, the default up to
Python 3.15) only emits BEGIN before INSERT/UPDATE/DELETE: SELECTs and DDL run
outside any transaction, so two reads in one session may see different data and
a rolled-back migration leaves half its tables behind. Following SQLAlchemy's
documented recipe, the driver's own transaction handling is switched off
(``isolation_level = None`` on every new DBAPI connection) and the engine's
``begin`` event emits BEGIN itself. Which BEGIN:

* **Write transactions (the default) use ``BEGIN IMMEDIATE``**: the write lock
  is taken up front, and a second writer waits for it in ``busy_timeout`` (30 s).
  A deferred ``BEGIN`` that reads and then writes (the usual ORM pattern) can
  instead fail at once with "database is locked" (SQLITE_BUSY_SNAPSHOT) when
  another writer committed after its first read; the busy handler cannot help
  there and only re-running the whole transaction would. IMMEDIATE makes every
  writer wait its turn, so no retry loop is needed anywhere. Write transactions
  are short (one scheduler step, one parse result), so the serialisation is cheap.
* **Read-only transactions (``session_scope(engine, readonly=True)``) use a
  plain deferred ``BEGIN``**: in WAL mode they read a consistent snapshot, never
  block a writer and are never blocked by one. The connection is switched to
  ``PRAGMA query_only`` for their duration, so a write attempted in a read-only
  session fails loudly instead of racing for the lock.

On PostgreSQL a read-only session runs ``SET TRANSACTION READ ONLY``; write
sessions are plain READ COMMITTED transactions, and the callers guard state
changes with conditional UPDATEs and unique constraints.

Every SQLite connection also gets ``journal_mode=WAL`` (readers and the writer
do not block each other), ``synchronous=NORMAL`` (safe with WAL, no fsync per
commit), ``foreign_keys=ON`` and ``busy_timeout=30000``. Switching a new file to
WAL bypasses the busy handler, so that one statement waits for a lock in its own
loop, within the same 30 s.

Transient errors
----------------
:func:`retry_transient` re-runs a whole unit of work (a function that opens its own
:func:`session_scope`) when the database reports something that may succeed on a
second attempt: SQLite "database is locked", a PostgreSQL serialization failure or
deadlock, a dropped or refused connection. Each retry is logged; anything else, or
the last attempt's error, is raised. A unit of work must be safe to run again, which
holds because a failed one was rolled back as a whole.

Who commits
-----------
Store functions take a session and never commit. :func:`session_scope` is the
one place that does: it commits when its block ends normally and rolls back when
it raises. Engines are not fork-safe: a forked child should build its own.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from scheduler.exceptions import DatabaseError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Execution option read by the ``begin`` listeners: the transaction only reads.
READONLY_OPTION = "updraft_readonly"

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10

_SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
_PG_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")


def mask_url(url: str | URL) -> str:
    """The URL as text with any password replaced by ``***``, for messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


def parse_url(url: str) -> URL:
    """Validate a database URL and return it with the driver updraft uses.

    Raises DatabaseError naming the (masked) URL and the reason for anything that
    is not ``sqlite:///...`` or a PostgreSQL URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise DatabaseError(f"database URL {url!r} is empty: expected sqlite:///PATH or postgresql+psycopg://...")
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError) as exc:
        raise DatabaseError(
            f"database URL {mask_url(url)} is malformed ({exc}): expected sqlite:///PATH or postgresql+psycopg://..."
        ) from None
    driver = parsed.drivername
    if driver in _SQLITE_DRIVERS:
        return parsed.set(drivername="sqlite+pysqlite")
    if driver in _PG_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    if driver.startswith(("postgresql+", "postgres+")):
        raise DatabaseError(
            f"database URL {mask_url(parsed)}: driver '{parsed.get_driver_name()}' is not supported; "
            "updraft talks to PostgreSQL through psycopg 3 (postgresql+psycopg://)"
        )
    raise DatabaseError(
        f"database URL {mask_url(parsed)}: unsupported database '{parsed.get_backend_name()}'; "
        "updraft supports SQLite (sqlite:///PATH) and PostgreSQL (postgresql+psycopg://...)"
    )


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory and ``file:`` URI databases."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("uri") == "true":
        return None
    return Path(database)


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """An Engine for ``url`` configured as described in the module docstring.

    For a SQLite file the parent directory is created when missing. No connection
    is opened here: an unreachable server is reported by the first use
    (see :func:`scheduler.db.migrate.check`).
    """
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            try:
                path.absolute().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"database URL {mask_url(parsed)}: cannot create directory {path.parent}: {exc.strerror}"
                ) from None
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
        if "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        hint = " (install updraft[postgres])" if parsed.get_backend_name() == "postgresql" else ""
        raise DatabaseError(f"database URL {mask_url(parsed)}: driver not available{hint}: {exc}") from None
    except (ArgumentError, TypeError, ValueError) as exc:
        raise DatabaseError(f"database URL {mask_url(parsed)}: {exc}") from None

    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        event.listen(engine, "begin", _pg_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    setup_sqlite_connection(dbapi_connection)
    record.info["query_only"] = False


def setup_sqlite_connection(dbapi_connection: Any) -> None:
    """What every SQLite connection gets (see the module docstring), pooled or not."""
    # Take transaction control away from the sqlite3 module; _sqlite_on_begin emits BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, waiting up to ``busy_timeout`` while another connection holds a lock.

    Switching a file that is not in WAL mode yet (a new database) takes an exclusive lock,
    and SQLite fails that at once with "database is locked" instead of calling the busy
    handler. Processes opening a new database together (a scheduler and a webserver that
    both migrate it) hit this while the first one creates the schema; they wait here.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def dbapi_error_to_sqlalchemy(statement: str, exc: Exception, base: type[Exception], *,
                              invalidated: bool = False) -> DBAPIError:
    """A driver's own exception as SQLAlchemy would raise it (for :func:`retry_transient`)."""
    error = DBAPIError.instance(statement, None, exc, base, connection_invalidated=invalidated)
    assert isinstance(error, DBAPIError)  # exc is one of the driver's errors
    return error


def _sqlite_on_begin(conn: Connection) -> None:
    # On the DBAPI connection itself: through SQLAlchemy's execution these one or two statements
    # cost more than the scheduler's whole read transaction. Errors come out as SQLAlchemy's.
    readonly = bool(conn.get_execution_options().get(READONLY_OPTION, False))
    record = conn.connection
    driver = record.driver_connection
    if record.info.get("query_only", False) != readonly:
        _sqlite_run(conn, driver, f"PRAGMA query_only = {'ON' if readonly else 'OFF'}")
        record.info["query_only"] = readonly
    _sqlite_run(conn, driver, "BEGIN" if readonly else "BEGIN IMMEDIATE")


def _sqlite_run(conn: Connection, driver: Any, sql: str) -> None:
    import sqlite3

    try:
        driver.execute(sql)
    except sqlite3.Error as exc:
        lost = conn.dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
        raise dbapi_error_to_sqlalchemy(sql, exc, sqlite3.Error, invalidated=lost) from exc


def _pg_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(READONLY_OPTION, False):
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")


@contextmanager
def session_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """One unit of work: a Session that commits at the end of the block, or rolls back if it raises.

    ``readonly=True`` opens a read-only transaction (see the module docstring);
    writing in it raises. Loaded objects stay readable after the block
    (``expire_on_commit=False``), detached from any session.
    """
    bind = engine.execution_options(**{READONLY_OPTION: True}) if readonly else engine
    session = Session(bind=bind, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


#: PostgreSQL error classes worth a second attempt: serialization failure, deadlock,
#: connection exceptions, and the server shutting down or restarting (SQLSTATE codes).
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "08000", "08001", "08003", "08004", "08006", "57P01", "57P02", "57P03"})
_TRANSIENT_SQLITE_MESSAGES = ("database is locked", "database table is locked", "database is busy")
#: Attempts per unit of work, and the first back-off (doubled each time, at most RETRY_MAX_DELAY_S).
RETRY_ATTEMPTS = 5
RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 2.0


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is a database error that the same unit of work may not hit again."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate) in _TRANSIENT_SQLSTATES
    if isinstance(exc, OperationalError):
        message = str(orig).lower()
        return any(text in message for text in _TRANSIENT_SQLITE_MESSAGES)
    return False


def retry_transient(
    unit: Callable[[], T],
    *,
    what: str,
    attempts: int = RETRY_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``unit()``; on a transient database error (see :func:`is_transient`) run it again, up to ``attempts`` times.

    ``what`` names the unit in the log ("DAG x: creating runs"). Non-transient errors
    and the last attempt's error propagate unchanged.
    """
    delay = RETRY_FIRST_DELAY_S
    for attempt in range(1, attempts + 1):
        try:
            return unit()
        except DBAPIError as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            logger.warning(
                "%s: transient database error (%s); attempt %d of %d, retrying in %.2f s",
                what, str(exc.orig).strip().splitlines()[0] if exc.orig is not None else exc, attempt, attempts, delay,
            )
            sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_S)
    raise AssertionError("unreachable")  # pragma: no cover
