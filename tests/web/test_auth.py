"""Login, sessions, CSRF, basic auth, roles, throttling, body limit and security headers (Flask test client)."""

from __future__ import annotations

import base64
import json
import re
import stat
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from sqlalchemy import select

from scheduler.db.engine import session_scope
from scheduler.db.models import Job, User
from webserver.auth import LoginThrottle, requires

PASSWORD = "correct-horse"


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, html
    return match.group(1)


def login_token(client: FlaskClient) -> str:
    return csrf_from(client.get("/login").get_data(as_text=True))


def log_in(client: FlaskClient, username: str, password: str = PASSWORD, **extra: str) -> Any:
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": login_token(client), **extra})


def page_token(client: FlaskClient) -> str:
    """The CSRF token of a logged-in session, as the home page renders it."""
    return csrf_from(client.get("/").get_data(as_text=True))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app: Flask) -> FakeClock:
    fake = FakeClock()
    app.extensions["updraft_login_throttle"] = LoginThrottle(per_user=5, per_address=20, window_s=300.0, clock=fake)
    return fake


@pytest.fixture
def guarded(app: Flask) -> Flask:
    """Test-only routes guarded by requires(): one per permission under /api/v1/_test/, and a UI one."""
    for permission in ("read", "edit", "admin"):
        def view(permission: str = permission) -> Any:
            body = request.get_json(silent=True) if request.method == "POST" else None
            return jsonify({"ok": permission, "body": body})

        app.add_url_rule(f"/api/v1/_test/{permission}", f"test_{permission}",
                         requires(permission)(view), methods=["GET", "POST", "DELETE"])
    app.add_url_rule("/_test/edit", "test_ui_edit", requires("edit")(lambda: "edited"), methods=["GET", "POST"])
    return app


def users_row(app: Flask, username: str) -> User:
    with session_scope(app.extensions["updraft_engine"]) as session:
        user = session.scalar(select(User).where(User.username == username))
        assert user is not None
        return user


# --- secret key and session cookie ---------------------------------------------------------------


def test_secret_key_is_generated_once_into_home_with_mode_0600(web_settings: Any) -> None:
    from webserver import create_app

    first = create_app(web_settings)
    second = create_app(web_settings)
    key_file = web_settings.home / "webserver_secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", key_file.read_text().strip())
    assert first.secret_key == second.secret_key == key_file.read_text().strip()
    for app in (first, second):
        app.extensions["updraft_engine"].dispose()


def test_configured_secret_key_is_used_and_no_file_is_written(web_settings: Any) -> None:
    from webserver import create_app

    app = create_app(web_settings.with_values(webserver__secret_key="configured-key-" + "x" * 20))
    app.extensions["updraft_engine"].dispose()
    assert app.secret_key == "configured-key-" + "x" * 20
    assert not (web_settings.home / "webserver_secret_key").exists()


def test_login_sets_an_httponly_samesite_session_and_logout_ends_it(
    client: FlaskClient, make_user: Callable[..., Any], app: Flask
) -> None:
    make_user("ann", "Viewer", PASSWORD)
    assert client.get("/api/v1/_missing_").status_code == 404
    response = log_in(client, "ann", next="/api/v1/version")
    assert response.status_code == 302
    assert response.headers["Location"] == "/api/v1/version"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("updraft_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Expires" not in cookie  # a browser-session cookie
    assert users_row(app, "ann").last_login is not None

    home = client.get("/")
    assert home.status_code == 200
    assert "signed in as ann (Viewer)" in home.get_data(as_text=True)
    assert client.get("/api/v1/dags").status_code == 200  # the API accepts the session too

    assert client.post("/logout", data={"csrf_token": page_token(client)}).status_code == 302
    assert client.get("/api/v1/dags").status_code == 401
    assert client.get("/").status_code == 302


def test_wrong_password_on_the_form_is_refused_with_401(client: FlaskClient, make_user: Callable[..., Any]) -> None:
    make_user("ann", "Viewer", PASSWORD)
    response = log_in(client, "ann", "wrong-password")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_login_error_shows_a_script_username_escaped(client: FlaskClient) -> None:
    response = log_in(client, '<script>alert("x")</script>', "whatever-password")
    html = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "<script>" not in html
    assert "&lt;script&gt;alert(" in html


def test_login_redirects_only_to_paths_on_this_site(app: Flask, make_user: Callable[..., Any]) -> None:
    make_user("ann", "Viewer", PASSWORD)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        response = log_in(app.test_client(), "ann", next=target)
        assert response.headers["Location"] == "/", target


def test_unauthenticated_ui_page_redirects_to_login_with_next(client: FlaskClient) -> None:
    response = client.get("/?tab=runs")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2F%3Ftab%3Druns"


def test_deleted_or_deactivated_user_loses_the_session(
    client: FlaskClient, make_user: Callable[..., Any], app: Flask
) -> None:
    from sqlalchemy import update

    make_user("ann", "Viewer", PASSWORD)
    log_in(client, "ann")
    assert client.get("/api/v1/dags").status_code == 200
    with session_scope(app.extensions["updraft_engine"]) as session:
        session.execute(update(User).where(User.username == "ann").values(active=False))
    assert client.get("/api/v1/dags").status_code == 401


def test_a_password_change_ends_existing_sessions(
    client: FlaskClient, make_user: Callable[..., Any], app: Flask
) -> None:
    from sqlalchemy import update

    from webserver.users import hash_password

    make_user("ann", "Viewer", PASSWORD)
    log_in(client, "ann")
    with session_scope(app.extensions["updraft_engine"]) as session:
        session.execute(update(User).where(User.username == "ann").values(password_hash=hash_password("new-password")))
    assert client.get("/api/v1/dags").status_code == 401


# --- CSRF ------------------------------------------------------------------------------------------


def test_login_form_without_csrf_token_is_refused(client: FlaskClient, make_user: Callable[..., Any]) -> None:
    make_user("ann", "Viewer", PASSWORD)
    client.get("/login")
    response = client.post("/login", data={"username": "ann", "password": PASSWORD})
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert client.get("/").status_code == 302


def test_session_requests_that_change_state_need_the_csrf_token(
    guarded: Flask, client: FlaskClient, make_user: Callable[..., Any]
) -> None:
    make_user("olga", "Op", PASSWORD)
    log_in(client, "olga")
    token = page_token(client)

    refused = client.post("/api/v1/_test/edit", json={"a": 1})
    assert refused.status_code == 400
    assert refused.mimetype == "application/problem+json"
    assert "CSRF" in refused.get_json()["detail"]
    assert client.delete("/api/v1/_test/edit", headers={"X-CSRFToken": "0" * 64}).status_code == 400
    assert client.post("/_test/edit", data={"csrf_token": "nope"}).status_code == 400

    accepted = client.post("/api/v1/_test/edit", json={"a": 1}, headers={"X-CSRFToken": token})
    assert accepted.status_code == 200
    assert accepted.get_json() == {"ok": "edit", "body": {"a": 1}}
    assert client.post("/_test/edit", data={"csrf_token": token}).status_code == 200
    assert client.get("/api/v1/_test/edit").status_code == 200  # reads need no token

    # The token of another browser session does not work in this one.
    other = guarded.test_client()
    log_in(other, "olga")
    assert client.post("/api/v1/_test/edit", headers={"X-CSRFToken": page_token(other)}).status_code == 400


def test_a_new_login_gets_a_new_csrf_token(client: FlaskClient, make_user: Callable[..., Any]) -> None:
    make_user("ann", "Viewer", PASSWORD)
    before = login_token(client)
    log_in(client, "ann")
    assert page_token(client) != before


def test_logout_without_token_is_refused(client: FlaskClient, make_user: Callable[..., Any]) -> None:
    make_user("ann", "Viewer", PASSWORD)
    log_in(client, "ann")
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200


def test_basic_auth_requests_need_no_csrf_token_but_not_from_another_site(
    guarded: Flask, client: FlaskClient, make_user: Callable[..., Any]
) -> None:
    make_user("olga", "Op", PASSWORD)
    assert client.post("/api/v1/_test/edit", json={}, headers=basic("olga", PASSWORD)).status_code == 200
    cross = client.post("/api/v1/_test/edit", json={}, headers={**basic("olga", PASSWORD), "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 400
    assert cross.mimetype == "application/problem+json"


# --- basic auth and roles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "no valid credentials"),
        (basic("ann", "wrong-password"), "wrong"),
        (basic("nobody", PASSWORD), "wrong"),
        ({"Authorization": "Bearer abc"}, "no valid credentials"),
        ({"Authorization": "Basic !!!not-base64"}, "no valid credentials"),
    ],
)
def test_api_without_valid_credentials_is_401_problem_with_www_authenticate(
    guarded: Flask, client: FlaskClient, make_user: Callable[..., Any], headers: dict[str, str], detail: str
) -> None:
    make_user("ann", "Viewer", PASSWORD)
    response = client.get("/api/v1/_test/read", headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert detail in body["detail"]
    assert response.headers["WWW-Authenticate"] == 'Basic realm="updraft"'


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("Viewer", {"read"}), ("Op", {"read", "edit"}), ("Admin", {"read", "edit", "admin"})],
)
def test_roles_grant_read_edit_admin(
    guarded: Flask, client: FlaskClient, make_user: Callable[..., Any], role: str, allowed: set[str]
) -> None:
    make_user("someone", role, PASSWORD)
    for permission in ("read", "edit", "admin"):
        response = client.post(f"/api/v1/_test/{permission}", json={}, headers=basic("someone", PASSWORD))
        if permission in allowed:
            assert response.status_code == 200, (role, permission)
        else:
            assert response.status_code == 403, (role, permission)
            assert response.mimetype == "application/problem+json"
            assert response.get_json()["detail"] == f"role {role} may not {permission}"


def test_ui_page_forbidden_for_a_viewer_is_an_html_403(
    guarded: Flask, client: FlaskClient, make_user: Callable[..., Any]
) -> None:
    make_user("ann", "Viewer", PASSWORD)
    log_in(client, "ann")
    response = client.get("/_test/edit")
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    assert "role Viewer may not edit" in response.get_data(as_text=True)


# --- throttling --------------------------------------------------------------------------------------


def test_failed_logins_for_a_user_are_throttled_then_released(
    clock: FakeClock, client: FlaskClient, make_user: Callable[..., Any], app: Flask
) -> None:
    make_user("ann", "Viewer", PASSWORD)
    for _ in range(5):
        assert log_in(client, "ann", "wrong-password").status_code == 401
    assert users_row(app, "ann").failed_login_count == 5

    refused = log_in(client, "ann")  # even the right password, during the cool-down
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.get_data(as_text=True)
    assert int(refused.headers["Retry-After"]) == 300
    api = client.get("/api/v1/dags", headers=basic("ann", PASSWORD))
    assert api.status_code == 429
    assert api.mimetype == "application/problem+json"

    clock.now += 301
    assert log_in(client, "ann").status_code == 302
    row = users_row(app, "ann")
    assert row.failed_login_count == 0
    assert row.last_login is not None


def test_basic_auth_failures_count_too_and_success_resets(
    clock: FakeClock, guarded: Flask, client: FlaskClient, make_user: Callable[..., Any], app: Flask
) -> None:
    make_user("ann", "Viewer", PASSWORD)
    for _ in range(4):
        assert client.get("/api/v1/_test/read", headers=basic("ann", "wrong-password")).status_code == 401
    assert client.get("/api/v1/_test/read", headers=basic("ann", PASSWORD)).status_code == 200
    assert users_row(app, "ann").failed_login_count == 0
    for _ in range(4):  # the count started again after the success
        assert client.get("/api/v1/_test/read", headers=basic("ann", "wrong-password")).status_code == 401
    assert client.get("/api/v1/_test/read", headers=basic("ann", PASSWORD)).status_code == 200


def test_failed_logins_from_one_address_are_throttled_across_user_names(
    clock: FakeClock, client: FlaskClient, make_user: Callable[..., Any]
) -> None:
    make_user("ann", "Viewer", PASSWORD)
    for i in range(20):
        assert client.get("/api/v1/dags", headers=basic(f"guess{i}", "wrong-password")).status_code == 401
    assert client.get("/api/v1/dags", headers=basic("ann", PASSWORD)).status_code == 429
    other_address = client.get("/api/v1/dags", headers=basic("ann", PASSWORD),
                               environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other_address.status_code == 200
    clock.now += 301
    assert client.get("/api/v1/dags", headers=basic("ann", PASSWORD)).status_code == 200


def test_throttle_forgets_the_stalest_keys_beyond_its_bound() -> None:
    fake = FakeClock()
    throttle = LoginThrottle(per_user=1, per_address=1000, window_s=60.0, max_keys=4, clock=fake)
    for i in range(10):
        throttle.failed(f"user{i}", "1.2.3.4")
    assert len(throttle._failures) <= 4
    assert throttle.retry_after("user9", "5.6.7.8") == 60.0
    assert throttle.retry_after("user0", "5.6.7.8") is None


# --- bodies, headers ------------------------------------------------------------------------------------


def test_oversized_body_is_413_problem(guarded: Flask, client: FlaskClient, make_user: Callable[..., Any]) -> None:
    make_user("olga", "Op", PASSWORD)
    body = json.dumps({"conf": "x" * (1024 * 1024 + 10)})
    response = client.post("/api/v1/_test/edit", data=body, content_type="application/json",
                           headers=basic("olga", PASSWORD))
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 413


def test_oversized_login_form_is_413(client: FlaskClient) -> None:
    response = client.post("/login", data={"username": "x" * (1024 * 1024 + 10), "password": "y"})
    assert response.status_code == 413


@pytest.mark.parametrize("path", ["/login", "/api/v1/health", "/api/v1/nope", "/nope"])
def test_security_headers_on_every_response(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp


# --- health ------------------------------------------------------------------------------------------------


def test_health_reports_the_scheduler_heartbeat(client: FlaskClient, app: Flask) -> None:
    from scheduler.clock import utcnow

    body = client.get("/api/v1/health").get_json()
    assert body == {"metadatabase": {"status": "healthy"},
                    "scheduler": {"status": None, "latest_scheduler_heartbeat": None}}

    now = utcnow()
    with session_scope(app.extensions["updraft_engine"]) as session:
        job = Job(job_type="SchedulerJob", hostname="h", pid=1, state="running", start_date=now, latest_heartbeat=now)
        session.add(job)
        session.flush()
        job_id = job.id
    body = client.get("/api/v1/health").get_json()
    assert body["scheduler"]["status"] == "healthy"
    from datetime import datetime

    assert datetime.fromisoformat(body["scheduler"]["latest_scheduler_heartbeat"]) == now

    with session_scope(app.extensions["updraft_engine"]) as session:
        session.get(Job, job_id).latest_heartbeat = now - timedelta(seconds=31)  # type: ignore[union-attr]
    assert client.get("/api/v1/health").get_json()["scheduler"]["status"] == "unhealthy"


def test_a_verified_password_is_remembered_only_for_the_same_hash(app, make_user):  # noqa: ANN001
    """The basic-auth cache skips scrypt for repeated good credentials, never for a changed password."""
    from sqlalchemy import update

    from scheduler.db.models import User
    from webserver import users
    from webserver.db import read_session, write_session

    make_user("cachey", "Viewer", "first-pass-123")
    calls: list[str] = []
    real_check = users.check_password

    def counting_check(password: str, stored: str) -> bool:
        calls.append(password)
        return real_check(password, stored)

    users.check_password = counting_check
    try:
        with app.app_context():
            with read_session() as session:
                assert users.authenticate(session, "cachey", "first-pass-123") is not None
                assert users.authenticate(session, "cachey", "first-pass-123") is not None
                assert users.authenticate(session, "cachey", "wrong-pass-123") is None
            assert calls == ["first-pass-123", "wrong-pass-123"]  # the second good check came from the cache
            with write_session() as session:
                session.execute(
                    update(User).where(User.username == "cachey").values(password_hash=users.hash_password("new-pass-123"))
                )
            with read_session() as session:
                assert users.authenticate(session, "cachey", "first-pass-123") is None  # old password: hash changed
                assert users.authenticate(session, "cachey", "new-pass-123") is not None
    finally:
        users.check_password = real_check
