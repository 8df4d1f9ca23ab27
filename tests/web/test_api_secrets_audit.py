"""Connections and Variables through /api/v1 (encrypted, password never returned, sensitive values masked),
the audit log (API, UI page, logins) — through the Flask test client on a real SQLite file."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from scheduler.config import Settings
from scheduler.db.engine import session_scope
from scheduler.db.models import Connection as ConnectionRow
from scheduler.db.models import Log, Variable
from tests.web.test_api_resources import ADMIN, PASSWORD, VIEWER, auth, build_world, ok, problem_of

OP = ("op", PASSWORD)


@pytest.fixture
def users(make_user: Any) -> None:
    make_user("admin", "Admin", PASSWORD)
    make_user("viewer", "Viewer", PASSWORD)
    make_user("op", "Op", PASSWORD)


def rows(app: Flask, model: Any) -> list[Any]:
    with session_scope(app.extensions["updraft_engine"], readonly=True) as session:
        return list(session.scalars(select(model).order_by(model.id)))


PG = {"connection_id": "pg", "conn_type": "postgres", "host": "db.example.com", "login": "bob",
      "password": "pw-secret-1", "port": 5432, "schema": "app",
      "extra": json.dumps({"sslmode": "require", "api_key": "extra-secret-2"}), "description": "main db"}


def test_connections_crud_never_returns_the_password(app: Flask, client: FlaskClient, users: None) -> None:
    created = ok(client.post("/api/v1/connections", json=PG, headers=auth(OP)))
    assert "password" not in created
    assert created["connection_id"] == "pg" and created["port"] == 5432
    assert json.loads(created["extra"]) == {"sslmode": "require", "api_key": "***"}
    body = client.get("/api/v1/connections/pg", headers=auth(ADMIN)).get_data(as_text=True)
    assert "pw-secret-1" not in body and "extra-secret-2" not in body
    listing = ok(client.get("/api/v1/connections", headers=auth(OP)))
    assert listing["total_entries"] == 1 and set(listing["connections"][0]) == {
        "connection_id", "conn_type", "description", "host", "login", "schema", "port"}

    (row,) = rows(app, ConnectionRow)
    assert row.is_encrypted and row.is_extra_encrypted
    assert "pw-secret-1" not in (row.password or "") and "extra-secret-2" not in (row.extra or "")

    patched = ok(client.patch("/api/v1/connections/pg?update_mask=host,password",
                              json={"connection_id": "pg", "conn_type": "postgres", "host": "db2", "password": "new"},
                              headers=auth(OP)))
    assert patched["host"] == "db2" and patched["login"] == "bob"  # fields outside the mask are kept
    from scheduler import connections

    with session_scope(app.extensions["updraft_engine"], readonly=True) as session:
        stored = connections.find(session, "pg", app.config["UPDRAFT_SETTINGS"])
    assert stored is not None and stored.password == "new" and stored.extra_dejson["api_key"] == "extra-secret-2"

    problem_of(client.post("/api/v1/connections", json=PG, headers=auth(OP)), 409)
    assert client.delete("/api/v1/connections/pg", headers=auth(OP)).status_code == 204
    problem_of(client.get("/api/v1/connections/pg", headers=auth(OP)), 404)
    events = [r.event for r in rows(app, Log)]
    assert events == ["api.connection.create", "api.connection.update", "api.connection.delete"]
    assert all("pw-secret" not in (r.extra or "") for r in rows(app, Log))


@pytest.mark.parametrize(("body", "reason"), [
    ({"conn_type": "http"}, "'connection_id' is a required property"),
    ({"connection_id": "x"}, "'conn_type' is a required property"),
    ({"connection_id": "", "conn_type": "http"}, "conn_id must be a non-empty string"),
    ({"connection_id": "x", "conn_type": "http", "port": 70000}, "port 70000 is not an integer from 0 to 65535"),
    ({"connection_id": "x", "conn_type": "http", "port": "80"}, "'80' is not of type 'integer' - 'port'"),
    ({"connection_id": "x", "conn_type": "http", "extra": "[1]"}, "extra must be a JSON object"),
    ({"connection_id": "x", "conn_type": "http", "extra": "{nope"}, "extra is not valid JSON"),
    ({"connection_id": "x" * 251, "conn_type": "http"}, "conn_id is longer than 250 characters"),
    ({"connection_id": "x", "conn_type": "http", "nope": 1}, "Unknown field"),
])
def test_bad_connection_bodies_are_400_naming_the_field(client: FlaskClient, users: None, body: dict[str, Any],
                                                        reason: str) -> None:
    problem = problem_of(client.post("/api/v1/connections", json=body, headers=auth(OP)), 400)
    assert reason in problem["detail"]


def test_viewers_may_not_see_connections(client: FlaskClient, users: None) -> None:
    problem_of(client.get("/api/v1/connections", headers=auth(VIEWER)), 403)
    problem_of(client.get("/api/v1/connections/pg", headers=auth(VIEWER)), 403)


def test_variables_are_encrypted_and_sensitive_ones_masked(app: Flask, client: FlaskClient, users: None) -> None:
    ok(client.post("/api/v1/variables", json={"key": "api_token", "value": "tok-secret-9"}, headers=auth(OP)))
    ok(client.post("/api/v1/variables", json={"key": "region", "value": "eu-west-1"}, headers=auth(OP)))
    assert ok(client.get("/api/v1/variables/api_token", headers=auth(VIEWER)))["value"] == "***"
    assert ok(client.get("/api/v1/variables/region", headers=auth(VIEWER)))["value"] == "eu-west-1"
    listing = client.get("/api/v1/variables", headers=auth(ADMIN)).get_data(as_text=True)
    assert "tok-secret-9" not in listing and "eu-west-1" in listing
    assert all(v.is_encrypted and "secret" not in (v.val or "") for v in rows(app, Variable))
    patched = ok(client.patch("/api/v1/variables/api_token", json={"key": "api_token", "value": "tok-2"},
                              headers=auth(OP)))
    assert patched["value"] == "***"
    from scheduler import variables

    with session_scope(app.extensions["updraft_engine"], readonly=True) as session:
        assert variables.get_value(session, "api_token", app.config["UPDRAFT_SETTINGS"]) == "tok-2"
    bad = problem_of(client.post("/api/v1/variables", json={"key": "a\nb", "value": "v"}, headers=auth(OP)), 400)
    assert "control characters" in bad["detail"]


def test_event_logs_api_shape_filters_and_404(app: Flask, client: FlaskClient, users: None) -> None:
    ok(client.post("/api/v1/variables", json={"key": "k1", "value": "v"}, headers=auth(OP)))
    ok(client.post("/api/v1/variables", json={"key": "k2", "value": "v"}, headers=auth(ADMIN)))
    client.delete("/api/v1/variables/k1", headers=auth(OP))
    body = ok(client.get("/api/v1/eventLogs?owner=op&order_by=-event_log_id", headers=auth(VIEWER)))
    assert body["total_entries"] == 2
    assert [e["event"] for e in body["event_logs"]] == ["api.variable.delete", "api.variable.set"]
    first = body["event_logs"][1]
    assert set(first) == {"event_log_id", "when", "dag_id", "task_id", "run_id", "map_index", "try_number",
                          "event", "execution_date", "owner", "extra"}
    assert json.loads(first["extra"]) == {"key": "k1"}
    one = ok(client.get(f"/api/v1/eventLogs/{first['event_log_id']}", headers=auth(VIEWER)))
    assert one == first
    excluded = ok(client.get("/api/v1/eventLogs?excluded_events=api.variable.set", headers=auth(VIEWER)))
    assert [e["event"] for e in excluded["event_logs"]] == ["api.variable.delete"]
    problem_of(client.get("/api/v1/eventLogs/999999", headers=auth(VIEWER)), 404)
    problem_of(client.get("/api/v1/eventLogs/99999999999999", headers=auth(VIEWER)), 404)
    problem_of(client.get("/api/v1/eventLogs?after=yesterday", headers=auth(VIEWER)), 400)
    problem_of(client.get("/api/v1/eventLogs?order_by=password", headers=auth(VIEWER)), 400)
    problem_of(client.get("/api/v1/eventLogs"), 401)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, html
    return match.group(1)


def test_logins_are_audited_and_the_page_lists_and_filters_events(app: Flask, client: FlaskClient,
                                                                   users: None) -> None:
    token = _csrf(client.get("/login").get_data(as_text=True))
    wrong = client.post("/login", data={"username": "viewer", "password": "nope-nope", "csrf_token": token})
    assert wrong.status_code == 401
    assert client.get("/api/v1/dags", headers=auth(("viewer", "wrong-password"))).status_code == 401
    token = _csrf(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": token}
                       ).status_code == 302
    events = [(r.event, r.owner) for r in rows(app, Log)]
    assert events == [("ui.login.failed", "viewer"), ("api.login.failed", "viewer"), ("ui.login", "viewer")]

    page = client.get("/events")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.count("<tr>") == 1 + 3 and "ui.login.failed" in html
    only = client.get("/events?event=api.login.failed").get_data(as_text=True)
    assert only.count("<tr>") == 1 + 1 and "1 event" in only
    assert "No events match these filters" in client.get("/events?owner=%3Cb%3E").get_data(as_text=True)
    assert client.get("/events?page=abc").status_code == 200


def test_audit_extra_never_holds_a_sensitive_value(app: Flask) -> None:
    from scheduler.audit import record_event

    with session_scope(app.extensions["updraft_engine"]) as session:
        record_event(session, "api.test", owner="x", extra={"conf": {"password": "hunter2", "n": 1}})
    (row,) = rows(app, Log)
    assert json.loads(row.extra) == {"conf": {"n": 1, "password": "***"}}


def test_an_invalid_fernet_key_stops_the_app_with_a_clear_message(web_settings: Settings) -> None:
    from scheduler.exceptions import ConfigError
    from webserver import create_app

    with pytest.raises(ConfigError, match=r"\[core\] fernet_key"):
        create_app(web_settings.with_values(core__fernet_key="not-a-key"))


@pytest.fixture
def dags(web_settings: Settings, users: None) -> Settings:
    build_world(web_settings)
    return web_settings


def test_run_ids_that_could_leave_the_log_folder_are_refused(dags: Settings, client: FlaskClient) -> None:
    for run_id in ["../../../tmp/escape", "a/b", "<script>x</script>", "..", "tab\there"]:
        problem = problem_of(client.post("/api/v1/dags/manual/dagRuns", json={"dag_run_id": run_id},
                                         headers=auth(ADMIN)), 400)
        assert "is invalid: use only letters, digits and _ . ~ : + - - 'dag_run_id'" in problem["detail"]
        token = _csrf(client.get("/dags/manual/trigger", headers=auth(ADMIN)).get_data(as_text=True))
        form = client.post("/dags/manual/trigger", data={"run_id": run_id, "csrf_token": token},
                           headers=auth(ADMIN))
        assert form.status_code == 400 and "is invalid: use only letters" in form.get_data(as_text=True)


def test_integers_beyond_the_columns_are_400_not_500(client: FlaskClient, users: None) -> None:
    too_big = problem_of(client.post("/api/v1/pools", json={"name": "p", "slots": 2**40}, headers=auth(OP)), 400)
    assert "out of range for an integer - 'slots'" in too_big["detail"]
    problem_of(client.get("/api/v1/pools?offset=" + "9" * 30, headers=auth(OP)), 400)
