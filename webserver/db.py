"""Database sessions for request handlers: short units of work on the application's engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session


def engine() -> Engine:
    return current_app.extensions["updraft_engine"]  # type: ignore[no-any-return]


@contextmanager
def read_session() -> Iterator[Session]:
    """A read-only unit of work (never waits for writers on SQLite)."""
    from scheduler.db.engine import session_scope

    with session_scope(engine(), readonly=True) as session:
        yield session


#: Set on ``flask.g`` once a write_session of the request committed: the request is then not run again.
COMMITTED = "updraft_committed"


@contextmanager
def write_session() -> Iterator[Session]:
    """A write unit of work: commits at the end of the block, rolls back if it raises."""
    from scheduler.db.engine import session_scope

    with session_scope(engine()) as session:
        yield session
    setattr(g, COMMITTED, True)
