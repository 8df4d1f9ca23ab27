"""Schema migrations: bring a database to the schema this version of updraft needs.

The Alembic environment ships inside the package (``scheduler/db/migrations``),
so an installed wheel can migrate. :func:`upgrade` is on the start-up path of
``updraft standalone``: when the database is already at :data:`HEAD_REVISION` it
returns after one small query, without importing Alembic at all.

Concurrent upgrades (a scheduler and a webserver starting together) are safe: the
migration runs in one transaction that first takes the write lock (SQLite's
``BEGIN IMMEDIATE``) or a transaction-scoped advisory lock (PostgreSQL), and
Alembic reads the version table only after that, so the second process finds
the work done.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from scheduler.db.engine import READONLY_OPTION, mask_url
from scheduler.exceptions import DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

#: The newest revision in migrations/versions; a test keeps it equal to Alembic's head.
HEAD_REVISION = "0004"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
#: Key of the PostgreSQL advisory lock held while migrating ("updraftm" as a big-endian int64).
PG_MIGRATION_LOCK = int.from_bytes(b"updraftm", "big")

_MIGRATE_HINT = "run `updraft db migrate`"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config for the packaged migrations; ``connection`` is used instead of a URL when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _unreachable(engine: Engine, exc: DBAPIError) -> DatabaseError:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    return DatabaseError(f"database {mask_url(engine.url)} cannot be used: {reason}")


def _read_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revisions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(revisions) > 1:
        raise DatabaseError(f"version table {VERSION_TABLE} holds several revisions {sorted(revisions)}; expected one")
    return revisions[0] if revisions else None


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None when it has no schema yet."""
    try:
        with engine.execution_options(**{READONLY_OPTION: True}).connect() as connection:
            return _read_revision(connection)
    except DBAPIError as exc:
        raise _unreachable(engine, exc) from exc


def _lock_for_migration(connection: Connection) -> None:
    # On SQLite the transaction already holds the write lock (BEGIN IMMEDIATE, see engine.py).
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})


def _run_alembic(engine: Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    try:
        with engine.begin() as connection:
            _lock_for_migration(connection)
            config = alembic_config(connection)
            if action == "upgrade":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    except CommandError as exc:
        raise DatabaseError(
            f"database {mask_url(engine.url)}: cannot {action} to {revision}: {exc} "
            f"(this updraft knows revisions up to {HEAD_REVISION}; is the database from a newer version?)"
        ) from exc
    except DBAPIError as exc:
        raise _unreachable(engine, exc) from exc


def upgrade(engine: Engine) -> None:
    """Migrate the database to :data:`HEAD_REVISION`; a no-op (one query) when it is there already."""
    if current_revision(engine) == HEAD_REVISION:
        return
    logger.info("Migrating database %s to revision %s", mask_url(engine.url), HEAD_REVISION)
    _run_alembic(engine, "upgrade", "head")


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"``: no tables left but the version table)."""
    _run_alembic(engine, "downgrade", revision)


def check(engine: Engine) -> None:
    """Raise DatabaseError with a clear message unless the database is reachable and at the head revision."""
    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    where = mask_url(engine.url)
    if revision is None:
        raise DatabaseError(f"database {where} has no updraft schema yet: {_MIGRATE_HINT}")
    if not _is_known_revision(revision):
        raise DatabaseError(
            f"database {where} is at schema revision {revision}, which this version of updraft does not know "
            f"(it expects {HEAD_REVISION}): the database was migrated by a newer updraft"
        )
    raise DatabaseError(f"database {where} is at schema revision {revision}, updraft needs {HEAD_REVISION}: {_MIGRATE_HINT}")


def _is_known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except (CommandError, RevisionError):
        return False


def reset(engine: Engine) -> None:
    """Drop every updraft table (and the version table), then migrate to head.

    Only tables of updraft's schema are dropped: other tables in a shared database are left alone.
    """
    from scheduler.db.models import Base

    logger.warning("Resetting database %s: dropping all updraft tables", mask_url(engine.url))
    try:
        with engine.begin() as connection:
            _lock_for_migration(connection)
            Base.metadata.drop_all(connection, checkfirst=True)
            connection.execute(text(f"DROP TABLE IF EXISTS {VERSION_TABLE}"))
    except DBAPIError as exc:
        raise _unreachable(engine, exc) from exc
    upgrade(engine)
