"""Fixtures shared across the test suite, one section per area. Add yours in a section of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

# --- database: a SQLite file, a fresh PostgreSQL database, a migrated engine on each --------

#: The PostgreSQL server the tests create their databases on (trust auth, user postgres).
PG_SERVER_URL = os.environ.get("UPDRAFT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PG_START_DEADLINE_S = 30.0


def _pg_conninfo(database: str) -> str:
    url = make_url(PG_SERVER_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_pg_conninfo("postgres"), autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


def _pg_reachable() -> str | None:
    """None when the server answers, else the reason it does not."""
    try:
        _pg_admin("SELECT 1")
    except Exception as exc:  # any failure means "not reachable"
        return str(exc).strip() or type(exc).__name__
    return None


def _start_local_pg() -> None:
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        return
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        capture_output=True,
        timeout=PG_START_DEADLINE_S,
        check=False,
    )


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The server URL, once it answers; starts the local cluster if it is down; skips if it cannot be reached."""
    pytest.importorskip("psycopg")
    reason = _pg_reachable()
    if reason is not None:
        _start_local_pg()
        deadline = time.monotonic() + PG_START_DEADLINE_S
        while (reason := _pg_reachable()) is not None and time.monotonic() < deadline:
            time.sleep(0.25)  # waiting for a server process to accept connections, not for test code
    if reason is not None:
        pytest.skip(f"PostgreSQL at {make_url(PG_SERVER_URL).render_as_string()} is not reachable: {reason}")
    return PG_SERVER_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in this test's temporary directory (not created yet)."""
    return f"sqlite:///{tmp_path / 'updraft.db'}"


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A new, empty, uniquely named PostgreSQL database, dropped after the test."""
    name = f"updraft_test_{uuid.uuid4().hex[:16]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each backend in turn."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def db_url(any_url: str) -> str:
    """A database on each backend in turn, migrated to the head revision."""
    from scheduler.db import migrate
    from scheduler.db.engine import make_engine

    engine = make_engine(any_url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return any_url


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated database, on each backend in turn; disposed after the test."""
    from scheduler.db.engine import make_engine

    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()
