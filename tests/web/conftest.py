"""Fixtures for the web server tests: settings on a fresh migrated home (its database: SQLite or PostgreSQL,
by the pass), the app, a client, users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from scheduler.config import Settings, load_settings
from tests.backend import database_environ


@pytest.fixture
def web_settings(tmp_path: Path) -> Settings:
    """Settings for $UPDRAFT_HOME = tmp_path/home, its database (this pass's) migrated; no secret key configured."""
    from scheduler.db import migrate
    from scheduler.db.engine import make_engine

    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    settings = load_settings(environ={"UPDRAFT_HOME": str(home), **database_environ()}, cwd=tmp_path)
    engine = make_engine(settings.sql_alchemy_conn)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return settings


@pytest.fixture
def app(web_settings: Settings) -> Iterator[Flask]:
    from webserver import create_app

    app = create_app(web_settings)
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        app.extensions["updraft_engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_user(app: Flask) -> Callable[..., Any]:
    """``make_user(username, role, password)``: add a user to the app's database; returns the (detached) row."""
    from scheduler.db.engine import session_scope
    from webserver.users import create_user

    def make(username: str, role: str = "Viewer", password: str = "correct-horse", **fields: Any) -> Any:
        with session_scope(app.extensions["updraft_engine"]) as session:
            return create_user(session, username=username, password=password, role=role, **fields)

    return make
