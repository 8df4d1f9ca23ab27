"""Every route x every role (anonymous, Viewer, Op, Admin) -> allowed or refused, from one table.

The routes are enumerated from the Flask url_map: a route (or a method) added without an
entry in :data:`ACCESS` fails :func:`test_every_route_has_an_entry`. Refused means 401
(API, anonymous) or a redirect to the login page (UI, anonymous), and 403 for a role
without the permission. Allowed means anything else below 500 (400 for an empty body, 404
for a name that does not exist, 200, 204, 302 after an action, ...).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from scheduler.config import Settings
from tests.web.test_api_resources import PASSWORD, build_world

#: (rule, method) -> who may: "public" (anyone), "read" (Viewer and up), "edit" (Op and up), "admin" (Admin).
ACCESS: dict[tuple[str, str], str] = {
    # --- UI
    ("/", "GET"): "read",
    ("/login", "GET"): "public",
    ("/login", "POST"): "public",
    ("/logout", "POST"): "public",
    ("/static/<path:filename>", "GET"): "public",
    ("/events", "GET"): "read",
    ("/assets", "GET"): "read",
    ("/ui/dags/status", "GET"): "read",
    ("/dags/<dag_id>", "GET"): "read",
    ("/dags/<dag_id>/code", "GET"): "read",
    ("/dags/<dag_id>/durations", "GET"): "read",
    ("/dags/<dag_id>/gantt", "GET"): "read",
    ("/dags/<dag_id>/graph", "GET"): "read",
    ("/dags/<dag_id>/grid.json", "GET"): "read",
    ("/dags/<dag_id>/grid_data.json", "GET"): "read",
    ("/dags/<dag_id>/runs", "GET"): "read",
    ("/dags/<dag_id>/runs/<run_id>", "GET"): "read",
    ("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>", "GET"): "read",
    ("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/log.json", "GET"): "read",
    ("/dags/<dag_id>/pause", "POST"): "edit",
    ("/dags/<dag_id>/unpause", "POST"): "edit",
    ("/dags/<dag_id>/trigger", "GET"): "edit",
    ("/dags/<dag_id>/trigger", "POST"): "edit",
    ("/dags/<dag_id>/runs/<run_id>/mark/<state>", "GET"): "edit",
    ("/dags/<dag_id>/runs/<run_id>/mark/<state>", "POST"): "edit",
    ("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/clear", "GET"): "edit",
    ("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/clear", "POST"): "edit",
    ("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/mark/<state>", "GET"): "edit",
    ("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/mark/<state>", "POST"): "edit",
    # --- API
    ("/api/v1/health", "GET"): "public",
    ("/api/v1/version", "GET"): "public",
    ("/api/v1/openapi.json", "GET"): "public",
    ("/api/v1/dags", "GET"): "read",
    ("/api/v1/dags", "PATCH"): "edit",
    ("/api/v1/dags/<dag_id>", "GET"): "read",
    ("/api/v1/dags/<dag_id>", "PATCH"): "edit",
    ("/api/v1/dags/<dag_id>/details", "GET"): "read",
    ("/api/v1/dags/<dag_id>/tasks", "GET"): "read",
    ("/api/v1/dags/<dag_id>/tasks/<task_id>", "GET"): "read",
    ("/api/v1/dags/<dag_id>/clearTaskInstances", "POST"): "edit",
    ("/api/v1/dags/<dag_id>/dagRuns", "GET"): "read",
    ("/api/v1/dags/<dag_id>/dagRuns", "POST"): "edit",
    ("/api/v1/dags/~/dagRuns/list", "POST"): "read",
    ("/api/v1/dags/<dag_id>/dagRuns/<dag_run_id>", "GET"): "read",
    ("/api/v1/dags/<dag_id>/dagRuns/<dag_run_id>", "PATCH"): "edit",
    ("/api/v1/dags/<dag_id>/dagRuns/<dag_run_id>", "DELETE"): "edit",
    ("/api/v1/dags/<dag_id>/dagRuns/<dag_run_id>/clear", "POST"): "edit",
    ("/api/v1/dags/<dag_id>/dagRuns/<dag_run_id>/taskInstances", "GET"): "read",
    ("/api/v1/dags/<dag_id>/dagRuns/<dag_run_id>/taskInstances/<task_id>", "GET"): "read",
    ("/api/v1/dags/<dag_id>/dagRuns/<dag_run_id>/taskInstances/<task_id>", "PATCH"): "edit",
    ("/api/v1/dags/<dag_id>/dagRuns/<dag_run_id>/taskInstances/<task_id>/logs/<int:task_try_number>", "GET"): "read",
    ("/api/v1/importErrors", "GET"): "read",
    ("/api/v1/importErrors/<int:import_error_id>", "GET"): "read",
    ("/api/v1/eventLogs", "GET"): "read",
    ("/api/v1/eventLogs/<event_log_id>", "GET"): "read",
    ("/api/v1/datasets", "GET"): "read",
    ("/api/v1/datasets/events", "GET"): "read",
    ("/api/v1/variables", "GET"): "read",
    ("/api/v1/variables", "POST"): "edit",
    ("/api/v1/variables/<variable_key>", "GET"): "read",
    ("/api/v1/variables/<variable_key>", "PATCH"): "edit",
    ("/api/v1/variables/<variable_key>", "DELETE"): "edit",
    ("/api/v1/pools", "GET"): "read",
    ("/api/v1/pools", "POST"): "edit",
    ("/api/v1/pools/<pool_name>", "GET"): "read",
    ("/api/v1/pools/<pool_name>", "PATCH"): "edit",
    ("/api/v1/pools/<pool_name>", "DELETE"): "edit",
    ("/api/v1/connections", "GET"): "edit",
    ("/api/v1/connections", "POST"): "edit",
    ("/api/v1/connections/<connection_id>", "GET"): "edit",
    ("/api/v1/connections/<connection_id>", "PATCH"): "edit",
    ("/api/v1/connections/<connection_id>", "DELETE"): "edit",
}

ROLES = ("anonymous", "Viewer", "Op", "Admin")
GRANTS = {"anonymous": {"public"}, "Viewer": {"public", "read"}, "Op": {"public", "read", "edit"},
          "Admin": {"public", "read", "edit", "admin"}}
#: Values for path variables (the world built by tests/web/test_api_resources.build_world).
VALUES = {"dag_id": "etl", "run_id": "run1", "dag_run_id": "run1", "task_id": "extract", "state": "success",
          "task_try_number": "1", "import_error_id": "1", "event_log_id": "1", "variable_key": "k",
          "pool_name": "default_pool", "connection_id": "c", "filename": "updraft.css"}


def routes(app: Flask) -> list[tuple[str, str]]:
    return sorted((rule.rule, method) for rule in app.url_map.iter_rules()
                  for method in rule.methods or () if method not in ("HEAD", "OPTIONS"))


def url_of(rule: str) -> str:
    import re

    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[-1]
        assert name in VALUES, f"no test value for path variable {name!r} of {rule}: add one to VALUES"
        return VALUES[name]

    return re.sub(r"<([^>]+)>", value, rule)


def test_every_route_has_an_entry(app: Flask) -> None:
    present = set(routes(app))
    missing = sorted(present - set(ACCESS))
    assert not missing, f"routes without an authorization entry in ACCESS: {missing}"
    stale = sorted(set(ACCESS) - present)
    assert not stale, f"entries in ACCESS for routes that do not exist any more: {stale}"


@pytest.fixture
def world(web_settings: Settings, make_user: Any) -> Settings:
    for role in ("Viewer", "Op", "Admin"):
        make_user(role.lower(), role, PASSWORD)
    build_world(web_settings)
    return web_settings


def headers_for(role: str) -> dict[str, str]:
    if role == "anonymous":
        return {"Accept": "application/json"}
    token = base64.b64encode(f"{role.lower()}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": "application/json"}


@pytest.mark.parametrize("role", ROLES)
def test_each_route_allows_exactly_the_roles_in_the_table(world: Settings, client: FlaskClient, app: Flask,
                                                          role: str) -> None:
    wrong: list[str] = []
    for rule, method in routes(app):
        need = ACCESS.get((rule, method))
        if need is None:
            continue  # reported by test_every_route_has_an_entry
        url = url_of(rule)
        kwargs: dict[str, Any] = {"headers": headers_for(role)}
        if method in ("POST", "PATCH", "PUT"):
            kwargs["json" if rule.startswith("/api/") else "data"] = {}
        response = client.open(url, method=method, **kwargs)
        response.close()  # static files are streamed from an open file
        status = response.status_code
        allowed = need in GRANTS[role]
        to_login = status == 302 and response.headers.get("Location", "").startswith("/login?")
        if status >= 500:
            wrong.append(f"{method} {url} as {role}: {status} (server error)")
        elif allowed and (status in (401, 403) or to_login):
            wrong.append(f"{method} {url} as {role}: refused with {status}, but {need!r} allows it")
        elif not allowed:
            if role == "anonymous":
                expected_ok = status == 401 if rule.startswith("/api/") else to_login
                if not expected_ok:
                    wrong.append(f"{method} {url} as anonymous: {status}, expected "
                                 f"{'401' if rule.startswith('/api/') else 'a redirect to /login'}")
            elif status != 403:
                wrong.append(f"{method} {url} as {role}: {status}, expected 403 ({need!r} needed)")
            if rule.startswith("/api/") and response.mimetype != "application/problem+json":
                wrong.append(f"{method} {url} as {role}: refusal is {response.mimetype}, not problem+json")
    assert not wrong, "\n".join(wrong)
