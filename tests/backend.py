"""The backend of this test pass and the databases of the tests (used by tests/conftest.py and by tests).

The suite runs once per backend: ``UPDRAFT_TEST_BACKEND=sqlite`` (the default) or ``postgres``. A
test parametrized over both (``any_url``, ``db_url``, ``db_engine``) runs its SQLite variant in the
sqlite pass and its PostgreSQL one in the postgres pass; a test pinned to one backend (it uses
``sqlite_url``/``pg_url``, or is marked ``sqlite_only``/``postgres``/``postgres_only``) runs only in
that backend's pass. Every other test uses "the default database": in the sqlite pass the home's
``updraft.db``; in the postgres pass a fresh PostgreSQL database of its own (a copy of a template
migrated once per session), given to the test and its subprocesses through ``CONN_ENV``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

BACKEND_ENV = "UPDRAFT_TEST_BACKEND"
BACKENDS = ("sqlite", "postgres")
#: The setting that points ``updraft`` (and every process it starts) at its database.
CONN_ENV = "UPDRAFT__DATABASE__SQL_ALCHEMY_CONN"
#: Fixtures parametrized over both backends; their "sqlite" variant belongs to the sqlite pass.
BACKEND_PARAM_FIXTURES = ("any_url", "empty_url")


def _backend_of_pass() -> str:
    return os.environ.get(BACKEND_ENV, "").strip().lower() or "sqlite"


#: "sqlite" or "postgres" (checked by pytest_configure).
TEST_BACKEND = _backend_of_pass()


#: The PostgreSQL server the tests create their databases on (trust auth, user postgres).
PG_SERVER_URL = os.environ.get("UPDRAFT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PG_START_DEADLINE_S = 30.0


def pg_conninfo(database: str) -> str:
    url = make_url(PG_SERVER_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(pg_conninfo("postgres"), autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


def pg_reachable() -> str | None:
    """None when the server answers, else the reason it does not."""
    try:
        pg_admin("SELECT 1")
    except Exception as exc:  # any failure means "not reachable"
        return str(exc).strip() or type(exc).__name__
    return None


def start_local_pg() -> None:
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        return
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        capture_output=True,
        timeout=PG_START_DEADLINE_S,
        check=False,
    )


def pg_unreachable_reason() -> str | None:
    """None once the server answers (starting the local cluster if it is down), else why it does not."""
    pytest.importorskip("psycopg")
    reason = pg_reachable()
    if reason is not None:
        start_local_pg()
        deadline = time.monotonic() + PG_START_DEADLINE_S
        while (reason := pg_reachable()) is not None and time.monotonic() < deadline:
            time.sleep(0.25)  # waiting for a server process to accept connections, not for test code
    return reason


#: True once the server has answered in this session.
_pg_answered = False


def require_pg() -> str:
    """The server URL; skips the test when it cannot be reached, except in the postgres pass (which needs it: fails)."""
    global _pg_answered
    if _pg_answered:
        return PG_SERVER_URL
    reason = pg_unreachable_reason()
    if reason is not None:
        message = f"PostgreSQL at {make_url(PG_SERVER_URL).render_as_string()} is not reachable: {reason}"
        if TEST_BACKEND == "postgres":
            pytest.fail(f"{BACKEND_ENV}=postgres: {message}")
        pytest.skip(message)
    _pg_answered = True
    return PG_SERVER_URL


#: The template database of this session (migrated to head once), created on first use.
_pg_template: str | None = None


def new_pg_database(migrated: bool) -> str:
    """A new uniquely named database (a copy of the migrated template, or empty); its URL."""
    global _pg_template
    server = require_pg()
    if migrated and _pg_template is None:
        from scheduler.db import migrate
        from scheduler.db.engine import make_engine

        name = f"updraft_tmpl_{uuid.uuid4().hex[:16]}"
        pg_admin(f'CREATE DATABASE "{name}"')
        engine = make_engine(make_url(server).set(database=name).render_as_string(hide_password=False))
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()  # CREATE DATABASE ... TEMPLATE needs the template to have no connection
        _pg_template = name
    name = f"updraft_test_{uuid.uuid4().hex[:16]}"
    pg_admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{_pg_template}"' if migrated else ""))
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    pg_admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextlib.contextmanager
def pass_database_env(migrated: bool = True) -> Iterator[dict[str, str]]:
    """Environment entries giving ``updraft`` the database of this pass, for fixtures wider than one test.

    Sqlite pass: none (each home keeps its own ``updraft.db``). Postgres pass: ``CONN_ENV`` naming a
    fresh database (migrated to head, or empty), dropped when the block ends.
    """
    if TEST_BACKEND == "sqlite":
        yield {}
        return
    url = new_pg_database(migrated)
    try:
        yield {CONN_ENV: url}
    finally:
        drop_pg_database(url)


def home_database_url(home: Path, environ: Mapping[str, str] | None = None) -> str:
    """The database ``updraft`` uses with ``UPDRAFT_HOME=home`` and the database entry of ``environ``
    (default: this process's environment): that entry, else ``home/updraft.toml``'s, else the home's SQLite file."""
    from scheduler.config import load_settings

    return load_settings(environ={"UPDRAFT_HOME": str(home), **database_environ(environ)}, cwd=home).sql_alchemy_conn


def database_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The database entry of ``environ`` (default: this process's), to add to an environment built from scratch."""
    env = os.environ if environ is None else environ
    return {CONN_ENV: env[CONN_ENV]} if env.get(CONN_ENV) else {}


def clean_environ(keep_database: bool = True) -> dict[str, str]:
    """This process's environment without any ``UPDRAFT*`` variable, except (with ``keep_database``)
    the database of this test in the postgres pass."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
    if keep_database:
        env.update(database_environ())
    return env


@contextlib.contextmanager
def shared_home_database(home: Path) -> Iterator[None]:
    """The database of a home that several tests share (a module or session fixture's), for the block.

    Sqlite pass: nothing to do (the home's own ``updraft.db``). Postgres pass: ``home/updraft.toml``
    names a fresh migrated database, dropped when the block ends. Run the home's processes with
    ``clean_environ(keep_database=False)`` so that a test's own database does not override it.
    """
    with pass_database_env() as entries:
        if entries:
            home.mkdir(parents=True, exist_ok=True)
            (home / "updraft.toml").write_text(f"[database]\nsql_alchemy_conn = {json.dumps(entries[CONN_ENV])}\n")
        yield


def drop_pg_template() -> None:
    """Drop the session's template database, if one was made."""
    if _pg_template is not None:
        with contextlib.suppress(Exception):  # the server went away: nothing left to drop
            pg_admin(f'DROP DATABASE IF EXISTS "{_pg_template}" WITH (FORCE)')


# --- reading a database from outside the product (backend-neutral) -------------------------------

#: One unpooled engine per URL: every query gets a connection of its own, closed after it.
_probe_engines: dict[str, Engine] = {}


def _probe_engine(url: str) -> Engine:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    if url not in _probe_engines:
        sqlite = make_url(url).get_backend_name() == "sqlite"
        _probe_engines[url] = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30} if sqlite else {})
    return _probe_engines[url]


def _missing_table(exc: DBAPIError) -> bool:
    text = str(exc.orig)
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def query(url: str, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[object, ...]]:
    """The rows of ``sql`` (named ``:params``) on the database at ``url``, on a connection of its own.

    [] while the database or the table does not exist yet; asking does not create a SQLite file.
    """
    from sqlalchemy import text

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and (not parsed.database or not Path(parsed.database).exists()):
        return []
    try:
        with _probe_engine(url).connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), dict(params or {}))]
    except DBAPIError as exc:
        if _missing_table(exc):
            return []
        raise


def integrity_problems(url: str) -> list[str]:
    """What is broken in the database's own structures: SQLite's ``PRAGMA integrity_check`` findings;
    on PostgreSQL (which keeps its files consistent itself) indexes left invalid."""
    if make_url(url).get_backend_name() == "sqlite":
        rows = query(url, "PRAGMA integrity_check")
        return [] if rows == [("ok",)] else [str(row[0]) for row in rows]
    return [
        f"invalid index {row[0]}"
        for row in query(url, "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid OR NOT indisready")
    ]
