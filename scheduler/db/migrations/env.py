"""Alembic environment for updraft's metadata database.

Used two ways:

* programmatically, by :mod:`scheduler.db.migrate`, which passes an open
  connection (already inside the transaction that holds the migration lock) in
  ``config.attributes["connection"]``;
* by developers from the repository root (``alembic revision --autogenerate -m
  "..." --rev-id 0002``), with the database URL taken from ``-x url=...``, else
  ``sqlalchemy.url`` in alembic.ini, else updraft's own settings
  (``[database] sql_alchemy_conn``).

Each upgrade runs in one transaction on both backends (the updraft engine makes
SQLite DDL transactional), so a failed migration leaves nothing half-done.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from scheduler.db.models import Base

config = context.config
target_metadata = Base.metadata

# Only the `alembic` command has an ini file; programmatic upgrades leave the application's logging alone.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from scheduler.config import load_settings

    return load_settings().sql_alchemy_conn


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transactional_ddl=True,
        # SQLite cannot ALTER most things; later migrations get batch (copy-and-move) operations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )


def run_migrations_offline() -> None:
    from scheduler.db.engine import parse_url

    context.configure(
        url=parse_url(_database_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from scheduler.db.engine import make_engine

    engine = make_engine(_database_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
