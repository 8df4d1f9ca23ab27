"""Fixtures shared across the test suite, one section per area. Add yours in a section of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tests.backend import (
    BACKEND_ENV,
    BACKEND_PARAM_FIXTURES,
    BACKENDS,
    CONN_ENV,
    TEST_BACKEND,
    drop_pg_database,
    drop_pg_template,
    new_pg_database,
    require_pg,
)

# --- the backend of this pass (see tests/backend.py) ------------------------------------------

#: A test that uses one of these runs only in the postgres pass / only in the sqlite pass.
POSTGRES_FIXTURES = frozenset({"pg_server", "pg_url", "pg_engine"})
SQLITE_FIXTURES = frozenset({"sqlite_url", "sqlite_path", "sqlite_engine", "sqlite_env"})


def pytest_configure(config: pytest.Config) -> None:
    if TEST_BACKEND not in BACKENDS:
        raise pytest.UsageError(
            f"{BACKEND_ENV}={os.environ.get(BACKEND_ENV)!r}: expected one of {', '.join(BACKENDS)}"
        )
    # The pass decides the database: not a setting left in the shell.
    os.environ.pop(CONN_ENV, None)


def pinned_backend(item: pytest.Item) -> str | None:
    """The backend ``item`` is pinned to ("sqlite"/"postgres"), or None when it runs on the pass's default database."""
    names = set(getattr(item, "fixturenames", ()))
    postgres = bool(
        item.get_closest_marker("postgres_only") or item.get_closest_marker("postgres") or names & POSTGRES_FIXTURES
    )
    callspec = getattr(item, "callspec", None)
    sqlite = bool(
        item.get_closest_marker("sqlite_only")
        or names & SQLITE_FIXTURES
        or (callspec is not None and any(callspec.params.get(name) == "sqlite" for name in BACKEND_PARAM_FIXTURES))
    )
    if postgres and sqlite:
        raise pytest.UsageError(f"{item.nodeid} is pinned to both SQLite and PostgreSQL: it would run in neither pass")
    return "postgres" if postgres else "sqlite" if sqlite else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each pinned test with its backend and deselect those of the other pass (each test runs in exactly one)."""
    kept: list[pytest.Item] = []
    other: list[pytest.Item] = []
    for item in items:
        backend = pinned_backend(item)
        if backend == "sqlite" and not item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.sqlite_only)
        if backend == "postgres" and not item.get_closest_marker("postgres_only"):
            item.add_marker(pytest.mark.postgres_only)
        (kept if backend in (None, TEST_BACKEND) else other).append(item)
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = kept


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    drop_pg_template()


@pytest.fixture(autouse=True)
def _default_database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The default database of the test and its subprocesses, through ``CONN_ENV`` (see tests/backend.py).

    Sqlite pass: the variable is unset, so each home uses its own ``updraft.db``. Postgres pass: a test
    that can have a home (it uses ``tmp_path``) gets a fresh migrated database (an empty one when
    marked ``empty_database``), dropped after the test; the test fails if it wrote a SQLite file anyway.
    """
    monkeypatch.delenv(CONN_ENV, raising=False)
    if TEST_BACKEND == "sqlite" or "tmp_path" not in request.fixturenames or pinned_backend(request.node):
        yield
        return
    tmp_path: Path = request.getfixturevalue("tmp_path")
    url = new_pg_database(migrated=request.node.get_closest_marker("empty_database") is None)
    monkeypatch.setenv(CONN_ENV, url)
    try:
        yield
    finally:
        drop_pg_database(url)
        stray = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.db"))
        if stray:
            pytest.fail(
                f"{BACKEND_ENV}=postgres, but the test wrote SQLite databases: {', '.join(stray)}. Point it at "
                f"the pass's database ({CONN_ENV}; see tests/backend.py), or mark it sqlite_only"
            )


# --- database: a SQLite file, a fresh PostgreSQL database, a migrated engine on each --------


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The server URL, once it answers; starts the local cluster if it is down; skips if it cannot be reached
    (fails in the postgres pass, which needs it)."""
    return require_pg()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in this test's temporary directory (not created yet)."""
    return f"sqlite:///{tmp_path / 'updraft.db'}"


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A new, empty, uniquely named PostgreSQL database, dropped after the test."""
    url = new_pg_database(migrated=False)
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each backend in turn."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def db_url(request: pytest.FixtureRequest, any_url: str) -> str:
    """A database on each backend in turn, migrated to the head revision (on PostgreSQL: a copy of the template)."""
    from scheduler.db import migrate
    from scheduler.db.engine import make_engine

    if make_url(any_url).get_backend_name() == "postgresql":
        url = new_pg_database(migrated=True)
        request.addfinalizer(lambda: drop_pg_database(url))
        return url
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
