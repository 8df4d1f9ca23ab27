"""is_transient and retry_transient against real database failures: no mocked driver, no hand-built exceptions.

SQLite: a second connection holds the write lock (``BEGIN IMMEDIATE``) while the engine,
with ``busy_timeout`` 0, tries to write, so "database is locked" is raised at once.
PostgreSQL: serialization failures and deadlocks (raised by the server with their
SQLSTATE, and a real serialization failure between two transactions), a division by
zero, and a connection terminated by another backend in the middle of a unit of work.

``retry_transient`` takes ``sleep=``: the tests pass a function that records the
back-off and, where the test needs it, removes the cause of the failure.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from scheduler.db.engine import (
    RETRY_FIRST_DELAY_S,
    RETRY_MAX_DELAY_S,
    is_transient,
    make_engine,
    retry_transient,
    session_scope,
)

# --- SQLite: "database is locked" -----------------------------------------------------------


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "locked.db"


@pytest.fixture
def sqlite_engine(sqlite_path: Path) -> Iterator[Engine]:
    """An engine on a file with ``probe(x INTEGER PRIMARY KEY)`` whose connections give up on a lock at once."""
    engine = make_engine(f"sqlite:///{sqlite_path}")

    # Registered after make_engine's own listener, so it overrides its busy_timeout of 30 s.
    @event.listens_for(engine, "connect")
    def no_waiting(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 0")

    with session_scope(engine) as session:
        session.execute(text("CREATE TABLE probe (x INTEGER PRIMARY KEY)"))
    yield engine
    engine.dispose()


@pytest.fixture
def lock_holder(sqlite_engine: Engine, sqlite_path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to the same file holding the write lock until it rolls back."""
    holder = sqlite3.connect(sqlite_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def probe_values(engine: Engine) -> list[int]:
    with session_scope(engine, readonly=True) as session:
        return [int(x) for x in session.execute(text("SELECT x FROM probe ORDER BY x")).scalars()]


def insert_probe(engine: Engine, value: int) -> None:
    with session_scope(engine) as session:
        session.execute(text("INSERT INTO probe (x) VALUES (:x)"), {"x": value})


def test_sqlite_database_is_locked_is_transient(sqlite_engine: Engine, lock_holder: sqlite3.Connection) -> None:
    with pytest.raises(OperationalError) as info:
        insert_probe(sqlite_engine, 1)
    assert "database is locked" in str(info.value.orig)
    assert is_transient(info.value) is True
    lock_holder.execute("ROLLBACK")
    insert_probe(sqlite_engine, 1)  # the same unit succeeds once the lock is gone
    assert probe_values(sqlite_engine) == [1]


def test_retry_transient_retries_a_locked_write_with_doubling_delays(
    sqlite_engine: Engine, lock_holder: sqlite3.Connection
) -> None:
    calls = 0
    delays: list[float] = []

    def unit() -> str:
        nonlocal calls
        calls += 1
        insert_probe(sqlite_engine, 7)
        return "written"

    def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 2:
            lock_holder.execute("ROLLBACK")  # the lock goes away during the second back-off

    assert retry_transient(unit, what="probe", sleep=sleep) == "written"
    assert calls == 3
    assert delays == [RETRY_FIRST_DELAY_S, RETRY_FIRST_DELAY_S * 2] == [0.05, 0.1]
    assert probe_values(sqlite_engine) == [7]


def test_retry_transient_gives_up_after_attempts_with_the_last_error(
    sqlite_engine: Engine, lock_holder: sqlite3.Connection
) -> None:
    calls = 0
    delays: list[float] = []
    errors: list[BaseException] = []

    def unit() -> None:
        nonlocal calls
        calls += 1
        try:
            insert_probe(sqlite_engine, calls)
        except OperationalError as exc:
            errors.append(exc)
            raise

    with pytest.raises(OperationalError) as info:
        retry_transient(unit, what="probe", attempts=8, sleep=delays.append)
    assert calls == 8
    assert info.value is errors[-1]  # the last attempt's error, unchanged
    assert "database is locked" in str(info.value.orig)
    # No sleep after the last attempt; the back-off doubles up to its cap.
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, RETRY_MAX_DELAY_S]
    lock_holder.execute("ROLLBACK")
    assert probe_values(sqlite_engine) == []


def test_a_unique_violation_is_not_transient_and_not_retried(sqlite_engine: Engine) -> None:
    insert_probe(sqlite_engine, 1)
    calls = 0
    delays: list[float] = []

    def unit() -> None:
        nonlocal calls
        calls += 1
        insert_probe(sqlite_engine, 1)

    with pytest.raises(IntegrityError) as info:
        retry_transient(unit, what="duplicate", sleep=delays.append)
    assert is_transient(info.value) is False
    assert (calls, delays) == (1, [])


def test_a_non_database_error_is_raised_at_once(sqlite_engine: Engine) -> None:
    calls = 0
    delays: list[float] = []

    def unit() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not a database problem")

    with pytest.raises(ValueError, match="not a database problem") as info:
        retry_transient(unit, what="value", sleep=delays.append)
    assert is_transient(info.value) is False
    assert (calls, delays) == (1, [])


# --- PostgreSQL: SQLSTATEs and a terminated connection --------------------------------------


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL database with ``probe(id PRIMARY KEY, x)`` holding (1, 0)."""
    engine = make_engine(pg_url)
    with session_scope(engine) as session:
        session.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, x INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO probe (id, x) VALUES (1, 0)"))
    yield engine
    engine.dispose()


def pg_error(engine: Engine, sql: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as info:
        with session_scope(engine) as session:
            session.execute(text(sql))
    return info.value


def raise_with(sqlstate: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = '{sqlstate}'; END $$"


@pytest.mark.postgres
@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_pg_serialization_failure_and_deadlock_are_transient(pg_engine: Engine, sqlstate: str) -> None:
    error = pg_error(pg_engine, raise_with(sqlstate))
    assert getattr(error.orig, "sqlstate", None) == sqlstate
    assert isinstance(error, OperationalError)
    assert is_transient(error) is True


@pytest.mark.postgres
def test_pg_division_by_zero_is_not_transient(pg_engine: Engine) -> None:
    error = pg_error(pg_engine, "SELECT 1 / 0")
    assert getattr(error.orig, "sqlstate", None) == "22012"
    assert isinstance(error, DataError)
    assert is_transient(error) is False
    calls = 0

    def unit() -> None:
        nonlocal calls
        calls += 1
        with session_scope(pg_engine) as session:
            session.execute(text("SELECT 1 / 0"))

    delays: list[float] = []
    with pytest.raises(DataError):
        retry_transient(unit, what="divide", sleep=delays.append)
    assert (calls, delays) == (1, [])


@pytest.mark.postgres
def test_pg_a_real_serialization_failure_is_retried(pg_engine: Engine, pg_url: str) -> None:
    """A REPEATABLE READ update of a row another transaction changed after the snapshot: 40001, then success."""
    import psycopg

    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    calls = 0
    delays: list[float] = []

    def unit() -> int:
        nonlocal calls
        calls += 1
        with session_scope(pg_engine) as session:
            session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            x = int(session.execute(text("SELECT x FROM probe WHERE id = 1")).scalar_one())
            if calls == 1:  # someone else commits a change to the row after our snapshot
                with psycopg.connect(conninfo, autocommit=True) as other:
                    other.execute("UPDATE probe SET x = x + 100 WHERE id = 1")
            session.execute(text("UPDATE probe SET x = :x WHERE id = 1"), {"x": x + 1})
            return x + 1

    assert retry_transient(unit, what="increment", sleep=delays.append) == 101
    assert (calls, delays) == (2, [0.05])
    with session_scope(pg_engine, readonly=True) as session:
        assert session.execute(text("SELECT x FROM probe WHERE id = 1")).scalar_one() == 101


@pytest.mark.postgres
def test_pg_a_terminated_connection_fails_the_unit_once_and_the_retry_succeeds(
    pg_engine: Engine, pg_url: str
) -> None:
    import psycopg

    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    calls = 0
    pids: list[int] = []
    delays: list[float] = []
    errors: list[DBAPIError] = []

    def unit() -> str:
        nonlocal calls
        calls += 1
        try:
            with session_scope(pg_engine) as session:
                pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
                pids.append(pid)
                session.execute(text("INSERT INTO probe (id, x) VALUES (:id, :x)"), {"id": 100 + calls, "x": calls})
                if calls == 1:
                    with psycopg.connect(conninfo, autocommit=True) as admin:
                        # The second argument makes the call wait (up to 5 s) until the backend has exited.
                        terminated = admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()
                    assert terminated == (True,)
                session.execute(text("UPDATE probe SET x = x + 1 WHERE id = 1"))
        except DBAPIError as exc:
            errors.append(exc)
            raise
        return "done"

    assert retry_transient(unit, what="terminated", sleep=delays.append) == "done"
    assert calls == 2 and delays == [0.05]
    assert len(errors) == 1 and is_transient(errors[0])
    assert pids[0] != pids[1]  # the retry ran on a new connection
    with session_scope(pg_engine, readonly=True) as session:
        rows = session.execute(text("SELECT id, x FROM probe ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, 1), (102, 2)]  # the first attempt left nothing behind
