"""make_engine, session_scope and the column types, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session

from scheduler.db import engine as engine_module
from scheduler.db import migrate
from scheduler.db.engine import make_engine, mask_url, parse_url, session_scope, setup_sqlite_connection
from scheduler.db.models import StrEnumType, UtcDateTime
from scheduler.exceptions import DatabaseError
from scheduler.states import TaskInstanceState

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def engine(any_url: str) -> Iterator[Engine]:
    """An engine on an empty database with one table ``probe(x INTEGER)``."""
    eng = make_engine(any_url)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE probe (x INTEGER NOT NULL)"))
    yield eng
    eng.dispose()


def count(engine: Engine, table: str = "probe") -> int:
    with session_scope(engine, readonly=True) as session:
        return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgres://alice:pw@db.example/updraft",
        "postgresql://alice:pw@db.example/updraft",
        "postgresql+psycopg://alice:pw@db.example/updraft",
    ],
)
def test_postgres_urls_use_psycopg3(url: str) -> None:
    engine = make_engine(url)
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert (engine.url.host, engine.url.database, engine.url.username) == ("db.example", "updraft", "alice")
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://user:s3cret@host/db", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://user:s3cret@host/db", "psycopg 3"),
        ("postgresql://user:s3cret@host:notaport/db", "malformed"),
        ("not a url", "malformed"),
        ("", "empty"),
    ],
)
def test_bad_urls_raise_database_error_naming_the_masked_url(url: str, reason: str) -> None:
    with pytest.raises(DatabaseError) as info:
        make_engine(url)
    message = str(info.value)
    assert reason in message
    assert "s3cret" not in message
    if "s3cret" in url:
        assert "user:***@host" in message


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("postgresql://bob:p%40ss@h:5432/db") == "postgresql://bob:***@h:5432/db"
    assert mask_url(parse_url("postgres://bob:secret@h/db")) == "postgresql+psycopg://bob:***@h/db"
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


# --- SQLite connection set-up ----------------------------------------------------------------


def test_sqlite_connections_get_wal_busy_timeout_foreign_keys_and_normal_sync(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
    finally:
        engine.dispose()
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": 1}


@pytest.mark.sqlite_only
def test_a_new_sqlite_file_locked_by_another_writer_is_switched_to_wal_once_the_lock_is_released(tmp_path: Path) -> None:
    """SQLite fails the switch of a new file to WAL at once while another connection holds a lock
    (no busy handler); the connection set-up must wait for the lock instead (concurrent first starts)."""
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE t (x INTEGER)")  # a new file, still in rollback-journal mode, write-locked

    attempts = []
    retrying = threading.Event()

    def trace(statement: str) -> None:
        if "journal_mode" in statement:
            attempts.append(statement)
            if len(attempts) >= 2:
                retrying.set()

    waiter = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    waiter.set_trace_callback(trace)
    errors: list[BaseException] = []

    def set_up() -> None:
        try:
            setup_sqlite_connection(waiter)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            retrying.set()

    thread = threading.Thread(target=set_up)
    thread.start()
    try:
        assert retrying.wait(timeout=20), "the set-up neither retried nor failed"
        assert not errors, errors
        holder.execute("COMMIT")
        thread.join(timeout=20)
        assert not thread.is_alive() and not errors, errors
        assert waiter.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert waiter.execute("SELECT count(*) FROM t").fetchone() == (0,)
    finally:
        holder.close()
        thread.join(timeout=20)
        waiter.close()


@pytest.mark.sqlite_only
def test_a_lock_held_longer_than_busy_timeout_still_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait for the WAL switch is bounded by busy_timeout, then the driver's error comes through."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE t (x INTEGER)")
    engine = make_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(DatabaseError, match="cannot be used: database is locked"):
            migrate.current_revision(engine)
    finally:
        engine.dispose()
        holder.close()


@pytest.mark.sqlite_only
def test_sqlite_parent_directory_is_created_and_spaces_in_the_path_work(tmp_path: Path) -> None:
    path = tmp_path / "no such dir" / "deeper" / "my db.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with session_scope(engine) as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
            session.execute(text("INSERT INTO t VALUES (7)"))
        assert count(engine, "t") == 1
    finally:
        engine.dispose()
    assert path.is_file()


@pytest.mark.sqlite_only
def test_a_sqlite_directory_that_cannot_be_created_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")
    with pytest.raises(DatabaseError, match="cannot create directory"):
        make_engine(f"sqlite:///{blocker / 'sub' / 'updraft.db'}")


def test_pool_size_is_applied(any_url: str) -> None:
    engine = make_engine(any_url, pool_size=3, max_overflow=0)
    try:
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        connections = [engine.connect() for _ in range(3)]
        assert engine.pool.checkedout() == 3  # type: ignore[attr-defined]
        for conn in connections:
            conn.close()
    finally:
        engine.dispose()


# --- session_scope ---------------------------------------------------------------------------


def test_session_scope_commits_when_the_block_succeeds(engine: Engine) -> None:
    with session_scope(engine) as session:
        assert isinstance(session, Session)
        session.execute(text("INSERT INTO probe VALUES (1)"))
    assert count(engine) == 1
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_session_scope_rolls_back_and_closes_when_the_block_raises(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with session_scope(engine) as session:
            session.execute(text("INSERT INTO probe VALUES (1)"))
            raise RuntimeError("boom")
    assert count(engine) == 0
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_loaded_values_stay_readable_after_the_scope(engine: Engine) -> None:
    table = Table("probe", MetaData(), Column("x", Integer))
    with session_scope(engine) as session:
        session.execute(insert(table).values(x=5))
    with session_scope(engine, readonly=True) as session:
        row = session.execute(select(table.c.x)).one()
    assert row.x == 5


def test_readonly_session_refuses_writes_and_the_connection_writes_again_afterwards(any_url: str) -> None:
    engine = make_engine(any_url, pool_size=1, max_overflow=0)  # one connection: the read-only flag must not stick
    try:
        with session_scope(engine) as session:
            session.execute(text("CREATE TABLE probe (x INTEGER NOT NULL)"))
        with pytest.raises(DBAPIError, match="(?i)read.?only"):
            with session_scope(engine, readonly=True) as session:
                session.execute(text("INSERT INTO probe VALUES (1)"))
        with session_scope(engine) as session:
            session.execute(text("INSERT INTO probe VALUES (2)"))
        assert count(engine) == 1
    finally:
        engine.dispose()


def test_savepoint_rolls_back_only_its_own_work(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.execute(text("INSERT INTO probe VALUES (1)"))
        with pytest.raises(RuntimeError):
            with session.begin_nested():
                session.execute(text("INSERT INTO probe VALUES (2)"))
                raise RuntimeError("undo the savepoint")
    with session_scope(engine, readonly=True) as session:
        assert session.execute(text("SELECT x FROM probe")).scalars().all() == [1]


# --- SQLite transactions: explicit BEGIN --------------------------------------------------------


def test_sqlite_read_transaction_sees_one_snapshot(sqlite_url: str) -> None:
    """Without an explicit BEGIN, sqlite3 runs each SELECT in its own transaction and the second sees the insert."""
    engine = make_engine(sqlite_url)
    try:
        with session_scope(engine) as session:
            session.execute(text("CREATE TABLE probe (x INTEGER NOT NULL)"))
        with session_scope(engine, readonly=True) as reader:
            before = reader.execute(text("SELECT count(*) FROM probe")).scalar_one()
            with session_scope(engine) as writer:  # not blocked by the open reader (WAL)
                writer.execute(text("INSERT INTO probe VALUES (1)"))
            again = reader.execute(text("SELECT count(*) FROM probe")).scalar_one()
        assert (before, again) == (0, 0)
        assert count(engine) == 1
    finally:
        engine.dispose()


def test_sqlite_ddl_is_rolled_back_with_its_transaction(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with pytest.raises(RuntimeError):
            with session_scope(engine) as session:
                session.execute(text("CREATE TABLE half_done (x INTEGER)"))
                raise RuntimeError("migration failed")
        with engine.connect() as conn:
            tables = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars().all()
        assert "half_done" not in tables
    finally:
        engine.dispose()


def test_sqlite_concurrent_read_modify_write_transactions_neither_fail_nor_lose_updates(sqlite_url: str) -> None:
    """Each writer reads then writes; BEGIN IMMEDIATE makes them take turns instead of hitting 'database is locked'."""
    workers, rounds = 8, 15
    engine = make_engine(sqlite_url, pool_size=workers)
    with session_scope(engine) as session:
        session.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO counter VALUES (0)"))
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                with session_scope(engine) as session:
                    n = session.execute(text("SELECT n FROM counter")).scalar_one()
                    session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        with session_scope(engine, readonly=True) as session:
            assert session.execute(text("SELECT n FROM counter")).scalar_one() == workers * rounds
    finally:
        engine.dispose()


# --- column types ----------------------------------------------------------------------------


def test_utc_datetime_refuses_naive_values() -> None:
    kind = UtcDateTime()
    with pytest.raises(ValueError, match="naive datetime"):
        kind.process_bind_param(datetime(2024, 1, 1, 6, 0), sqlite.dialect())
    with pytest.raises(TypeError):
        kind.process_bind_param("2024-01-01", sqlite.dialect())  # type: ignore[arg-type]


def test_utc_datetime_binds_utc_naive_on_sqlite_and_aware_utc_on_postgres() -> None:
    kind = UtcDateTime()
    berlin_morning = datetime(2024, 7, 1, 8, 0, tzinfo=BERLIN)  # 06:00 UTC
    assert kind.process_bind_param(berlin_morning, sqlite.dialect()) == datetime(2024, 7, 1, 6, 0)
    bound = kind.process_bind_param(berlin_morning, postgresql.dialect())
    assert bound is not None and bound.tzinfo is UTC and bound.hour == 6


def test_utc_datetime_round_trips_as_aware_utc_and_sorts_by_instant(any_url: str) -> None:
    table = Table("stamps", MetaData(), Column("id", Integer, primary_key=True), Column("at", UtcDateTime()))
    engine = make_engine(any_url)
    try:
        with session_scope(engine) as session:
            table.create(session.connection())
            session.execute(
                insert(table),
                [
                    {"id": 1, "at": datetime(2024, 3, 1, 10, 0, tzinfo=BERLIN)},  # 09:00 UTC
                    {"id": 2, "at": datetime(2024, 3, 1, 8, 30, tzinfo=UTC)},
                    {"id": 3, "at": datetime(2024, 3, 1, 9, 0, 0, 1, tzinfo=UTC)},
                ],
            )
        with session_scope(engine, readonly=True) as session:
            rows = session.execute(select(table.c.id, table.c.at).order_by(table.c.at)).all()
            later = session.execute(
                select(table.c.id).where(table.c.at > datetime(2024, 3, 1, 10, 0, tzinfo=BERLIN))
            ).scalars().all()
        assert [r.id for r in rows] == [2, 1, 3]
        assert rows[1].at == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
        assert all(r.at.tzinfo is UTC for r in rows)
        assert later == [3]
        with pytest.raises(StatementError) as info:
            with session_scope(engine) as session:
                session.execute(insert(table).values(id=4, at=datetime(2024, 3, 1)))
        assert isinstance(info.value.orig, ValueError)
    finally:
        engine.dispose()


def test_str_enum_type_validates_on_write_and_returns_members() -> None:
    kind = StrEnumType(TaskInstanceState)
    assert kind.process_bind_param("up_for_retry", sqlite.dialect()) == "up_for_retry"
    assert kind.process_bind_param(TaskInstanceState.NONE, sqlite.dialect()) == "none"
    assert kind.process_result_value("queued", sqlite.dialect()) is TaskInstanceState.QUEUED
    with pytest.raises(ValueError):
        kind.process_bind_param("bogus", sqlite.dialect())

