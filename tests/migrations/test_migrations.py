"""The migrations create exactly the models' schema, on SQLite and PostgreSQL, and migrate.py drives them safely."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, inspect, select, text

from scheduler.db import migrate
from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import Base, Pool, Variable
from scheduler.exceptions import DatabaseError
from tests.backend import home_database_url

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend; the SQLite file's path has spaces in it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'a dir with spaces' / 'updraft meta.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    eng = make_engine(empty_url)
    yield eng
    eng.dispose()


def schema_differences(engine: Engine, metadata: MetaData = Base.metadata) -> list[Any]:
    """Alembic's autogenerate comparison of the live database with ``metadata``.

    Nothing is ignored: types and server defaults are compared too. (Alembic does
    not compare CHECK constraints or index predicates; the test below checks those.)
    """
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, metadata))


def table_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_head_revision_constant_is_alembics_head() -> None:
    assert ScriptDirectory.from_config(migrate.alembic_config()).get_current_head() == migrate.HEAD_REVISION


def test_upgrade_creates_exactly_the_models_schema(engine: Engine) -> None:
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    assert table_names(engine) == set(Base.metadata.tables) | {"alembic_version"}
    assert schema_differences(engine) == []


def test_the_comparison_notices_a_difference(engine: Engine) -> None:
    migrate.upgrade(engine)
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    Table("brand_new", changed, Column("id", Integer, primary_key=True))
    changed.tables["dag"].append_column(Column("extra", String(10)))
    changed.tables["task_instance"].c.map_index.server_default = None

    kinds = sorted(diff[0] if isinstance(diff, tuple) else diff[0][0] for diff in schema_differences(engine, changed))
    assert kinds == ["add_column", "add_table", "modify_default"]


def test_check_constraints_and_the_partial_unique_index_are_in_the_database(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.connect() as conn:
        inspector = inspect(conn)
        for table in Base.metadata.sorted_tables:
            expected = {c.name for c in table.constraints if c.__class__.__name__ == "CheckConstraint"}
            found = {c["name"] for c in inspector.get_check_constraints(table.name)}
            assert found == expected, table.name
        if conn.dialect.name == "sqlite":
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_dag_run_dag_id_logical_date'"
            ).scalar_one()
        else:
            ddl = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_dag_run_dag_id_logical_date'"
            ).scalar_one()
    assert "UNIQUE" in ddl.upper() and "WHERE" in ddl.upper()
    assert "'scheduled'" in ddl and "'backfill'" in ddl and "manual" not in ddl


def test_the_first_migration_creates_the_default_pool(engine: Engine) -> None:
    migrate.upgrade(engine)
    with session_scope(engine, readonly=True) as session:
        pools = [(p.pool, p.slots, p.include_deferred) for p in session.scalars(select(Pool))]
    assert pools == [("default_pool", 128, False)]


def test_upgrade_is_idempotent_and_does_not_load_alembic_when_at_head(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.upgrade(engine)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("alembic ran although the database is at head")

    monkeypatch.setattr("alembic.command.upgrade", refuse)
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    with session_scope(engine, readonly=True) as session:
        assert len(session.scalars(select(Pool)).all()) == 1


def test_downgrade_to_base_then_upgrade_again(engine: Engine) -> None:
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert table_names(engine) == {"alembic_version"}
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    assert schema_differences(engine) == []


def test_reset_drops_updraft_data_and_migrates_but_leaves_other_tables(engine: Engine) -> None:
    migrate.upgrade(engine)
    with session_scope(engine) as session:
        session.add(Variable(key="k", val="v"))
        session.execute(text("CREATE TABLE not_ours (x INTEGER)"))
    migrate.reset(engine)
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    assert "not_ours" in table_names(engine)
    with session_scope(engine, readonly=True) as session:
        assert session.scalars(select(Variable)).all() == []
        assert [p.pool for p in session.scalars(select(Pool))] == ["default_pool"]


def test_reset_of_an_empty_database_migrates_it(engine: Engine) -> None:
    migrate.reset(engine)
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION


def test_check_says_what_to_do(engine: Engine) -> None:
    with pytest.raises(DatabaseError, match="no updraft schema yet: run `updraft db migrate`"):
        migrate.check(engine)
    migrate.upgrade(engine)
    migrate.check(engine)

    with session_scope(engine) as session:
        session.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(DatabaseError, match="9999.*newer updraft"):
        migrate.check(engine)
    with pytest.raises(DatabaseError, match="9999"):
        migrate.upgrade(engine)


@pytest.mark.sqlite_only
def test_unreachable_databases_raise_database_error_with_the_password_masked(tmp_path: Path) -> None:
    closed_port = make_engine("postgresql+psycopg://updraft:s3cret@127.0.0.1:1/meta")
    a_directory = make_engine(f"sqlite:///{tmp_path}")
    try:
        for eng in (closed_port, a_directory):
            for action in (migrate.check, migrate.upgrade, migrate.current_revision):
                with pytest.raises(DatabaseError, match="cannot be used") as info:
                    action(eng)
                assert "s3cret" not in str(info.value)
        with pytest.raises(DatabaseError, match=r"updraft:\*\*\*@127\.0\.0\.1:1/meta"):
            migrate.check(closed_port)
    finally:
        closed_port.dispose()
        a_directory.dispose()


def test_concurrent_upgrades_of_a_fresh_database_all_succeed_once(empty_url: str) -> None:
    """Processes starting together (scheduler + webserver) each call upgrade; the lock makes the rest no-ops."""
    script = "import sys; from scheduler.db import make_engine, migrate; migrate.upgrade(make_engine(sys.argv[1]))"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, empty_url], stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    engine = make_engine(empty_url)
    try:
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION
        with session_scope(engine, readonly=True) as session:
            assert len(session.scalars(select(Pool)).all()) == 1
    finally:
        engine.dispose()


@pytest.mark.empty_database
def test_developer_alembic_cli_uses_the_packaged_environment(tmp_path: Path) -> None:
    """`alembic` from the repository root (alembic.ini): upgrade, then `check` finds nothing to autogenerate."""
    url = home_database_url(tmp_path)  # a SQLite file, or an empty PostgreSQL database (by the pass)
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url={url}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert "No new upgrade operations detected" in done.stdout + done.stderr

    offline = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", "url=postgresql://u@h/db", "upgrade", "head", "--sql"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert offline.returncode == 0, offline.stderr
    assert "CREATE TABLE task_instance" in offline.stdout and "JSONB" in offline.stdout
