"""Requests that meet a transient database error are run again as a whole; when every attempt fails the
answer is 503 with Retry-After, and nothing was changed.

The failures are real. On SQLite a second connection holds the write lock (``BEGIN IMMEDIATE``) while
the app's connections give up on a lock at once (``busy_timeout`` 0), so SQLite raises "database is
locked"; the test releases the lock when the app logs its retry. On PostgreSQL the test terminates
the request's own server process in the middle of its write, and the request goes on on a new
connection.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, select

from scheduler.db.engine import session_scope
from scheduler.db.models import Log
from tests.locks import HeldWriteLock

PASSWORD = "correct-horse-battery"


def basic(username: str = "admin") -> dict[str, str]:
    token = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": "application/json"}


def app_engine(app: Flask) -> Engine:
    return app.extensions["updraft_engine"]  # type: ignore[no-any-return]


def variables(client: FlaskClient) -> dict[str, str]:
    """The variables as the API shows them (their values are stored encrypted)."""
    response = client.get("/api/v1/variables", headers=basic())
    assert response.status_code == 200
    return {v["key"]: v["value"] for v in response.get_json()["variables"]}


def audit_events(app: Flask, event_name: str) -> int:
    with session_scope(app_engine(app), readonly=True) as session:
        return len(list(session.scalars(select(Log).where(Log.event == event_name))))


def login_token(client: FlaskClient) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', client.get("/login").get_data(as_text=True))
    assert match is not None
    return match.group(1)


@pytest.fixture
def admin(make_user: Any) -> Any:
    return make_user("admin", "Admin", PASSWORD)


@pytest.fixture
def locked(app: Flask, admin: Any) -> Iterator[HeldWriteLock]:
    engine = app_engine(app)

    @event.listens_for(engine, "connect")
    def no_waiting(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 0")  # after make_engine's own listener: overrides it

    engine.dispose()  # pooled connections were opened with the 30 s busy timeout
    lock = HeldWriteLock(engine.url.database or "")
    yield lock
    lock.stop()


@pytest.mark.sqlite_only
def test_an_api_write_that_meets_a_locked_database_is_run_again_and_kept_once(
    client: FlaskClient, locked: HeldWriteLock
) -> None:
    locked.release_after = 1
    response = client.post("/api/v1/variables", json={"key": "region", "value": "eu"}, headers=basic())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["key"] == "region"
    assert len(locked.retries) == 1 and "database is locked" in locked.retries[0]
    assert variables(client) == {"region": "eu"}
    assert audit_events(client.application, "api.variable.set") == 1


@pytest.mark.sqlite_only
def test_a_write_that_stays_locked_gets_503_with_retry_after_and_changes_nothing(
    client: FlaskClient, locked: HeldWriteLock
) -> None:
    response = client.post("/api/v1/variables", json={"key": "region", "value": "eu"}, headers=basic())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["title"] == "Service Unavailable" and "nothing was changed" in body["detail"]
    assert len(locked.retries) == 4 and all("database is locked" in e for e in locked.retries)
    locked.unlock()
    assert variables(client) == {}
    assert audit_events(client.application, "api.variable.set") == 0
    # The server is still up, and the same request succeeds now.
    again = client.post("/api/v1/variables", json={"key": "region", "value": "eu"}, headers=basic())
    assert again.status_code == 200
    assert variables(client) == {"region": "eu"}


@pytest.mark.sqlite_only
def test_a_ui_form_that_stays_locked_gets_an_html_503(client: FlaskClient, locked: HeldWriteLock) -> None:
    response = client.post("/login", data={"username": "admin", "password": "wrong", "csrf_token": login_token(client)})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.mimetype == "text/html"
    assert "nothing was changed" in response.get_data(as_text=True)


@pytest.mark.sqlite_only
def test_a_failed_login_run_again_is_counted_once(client: FlaskClient, locked: HeldWriteLock) -> None:
    from scheduler.db.models import User

    locked.release_after = 1
    response = client.post("/login", data={"username": "admin", "password": "wrong", "csrf_token": login_token(client)})
    assert response.status_code == 401, response.status_code
    assert len(locked.retries) == 1
    assert audit_events(client.application, "ui.login.failed") == 1
    with session_scope(app_engine(client.application), readonly=True) as session:
        assert session.scalars(select(User.failed_login_count).where(User.username == "admin")).one() == 1
    throttle = client.application.extensions["updraft_login_throttle"]
    assert len(throttle._failures[("user", "admin")]) == 1


@pytest.fixture
def pg_client(pg_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> FlaskClient:
    """The test client of an app on a fresh PostgreSQL database, with the admin user."""
    from tests.backend import CONN_ENV

    monkeypatch.setenv(CONN_ENV, pg_url)
    request.getfixturevalue("admin")
    return request.getfixturevalue("client")  # type: ignore[no-any-return]


def test_an_api_write_whose_connection_is_killed_midway_is_run_again_on_a_new_one(
    pg_client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.backend import pg_admin

    client = pg_client

    killed: list[int] = []
    engine = app_engine(client.application)

    @event.listens_for(engine, "before_cursor_execute")
    def kill_own_backend(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not killed and statement.lstrip().upper().startswith("INSERT INTO VARIABLE"):
            pid = conn.connection.dbapi_connection.info.backend_pid
            killed.append(pid)
            pg_admin(f"SELECT pg_terminate_backend({pid})")

    with caplog.at_level(logging.WARNING, logger="scheduler.db.engine"):
        response = client.post("/api/v1/variables", json={"key": "region", "value": "eu"}, headers=basic())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(killed) == 1
    retries = [r.getMessage() for r in caplog.records if "transient database error" in r.getMessage()]
    assert len(retries) == 1, retries
    assert variables(client) == {"region": "eu"}
    assert audit_events(client.application, "api.variable.set") == 1


@pytest.mark.sqlite_only
def test_a_view_whose_write_committed_before_the_error_is_not_run_again(
    client: FlaskClient, locked: HeldWriteLock
) -> None:
    """Running it again would write twice: the answer is a 500 and the first write stays, once."""
    from webserver.app import retrying
    from webserver.db import write_session

    calls: list[int] = []

    def write_then_fail() -> str:
        calls.append(1)
        with write_session() as session:
            audit(session, "first.write")
        locked.holder.execute("BEGIN IMMEDIATE")  # another writer takes the lock between the two writes
        with write_session() as session:
            audit(session, "second.write")
        return "unreachable"

    app = client.application
    app.add_url_rule("/api/v1/_test/write_then_fail", "test_write_then_fail", retrying(write_then_fail),
                     methods=["POST"])
    locked.unlock()
    response = client.post("/api/v1/_test/write_then_fail", headers=basic())
    assert response.status_code == 500
    assert response.get_json()["title"] == "Internal Server Error"
    assert calls == [1] and locked.retries == []
    locked.unlock()
    assert audit_events(app, "first.write") == 1
    assert audit_events(app, "second.write") == 0


def audit(session: Any, event_name: str) -> None:
    from scheduler.audit import record_event

    record_event(session, event_name, owner="test")
