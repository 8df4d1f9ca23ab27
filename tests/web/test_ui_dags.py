"""The DAG list, pause/unpause, the trigger form and the list's status feed (Flask test client)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from scheduler.db.engine import session_scope
from scheduler.db.models import Dag, DagRun, Log

PASSWORD = "correct-horse"
T0 = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
XSS = "<script>alert(1)</script>"


# --- helpers -------------------------------------------------------------------------------------


def engine_of(app: Flask) -> Any:
    return app.extensions["updraft_engine"]


def build_dag(dag_id: str, **kwargs: Any) -> dict[str, Any]:
    """A real DAG built in this process and serialized as the parser would."""
    from scheduler import DAG, EmptyOperator
    from scheduler.serialization import serialize_dag

    kwargs.setdefault("start_date", datetime(2024, 1, 1, tzinfo=UTC))
    kwargs.setdefault("schedule", None)
    owner = kwargs.pop("owner", "airflow")
    with DAG(dag_id, default_args={"owner": owner}, **kwargs) as dag:
        EmptyOperator(task_id="only")
    return serialize_dag(dag, fileloc=f"/dags/{dag_id}.py")


def record(app: Flask, fileloc: str, dags: list[dict[str, Any]], *, error: str | None = None,
           paused: bool = False) -> None:
    from scheduler.db import store

    with session_scope(engine_of(app)) as session:
        store.record_parse_result(
            session, fileloc=fileloc, mtime=1.0, size=1, content_hash=fileloc, dags=dags, error=error,
            source="# source\n", duration=0.01, now=T0, paused_at_creation=paused,
        )


def add_dags(app: Flask, *dags: dict[str, Any], paused: bool = False) -> None:
    for data in dags:
        record(app, data["fileloc"], [data], paused=paused)


def add_run(app: Flask, dag_id: str, run_id: str, state: str, *, minutes: int = 0, conf: Any = None) -> None:
    from scheduler.db import store

    when = T0 + timedelta(minutes=minutes)
    with session_scope(engine_of(app)) as session:
        store.create_dag_run(
            session, dag_id=dag_id, run_id=run_id, run_type="manual", logical_date=when, data_interval=None,
            conf=conf, state=state, run_after=when, now=when, external_trigger=True,
        )


def set_next_run(app: Flask, dag_id: str, when: datetime) -> None:
    with session_scope(engine_of(app)) as session:
        row = session.get(Dag, dag_id)
        assert row is not None
        row.next_dagrun = when


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, html
    return match.group(1)


def log_in(client: FlaskClient, make_user: Callable[..., Any], role: str) -> str:
    """Create a user with ``role``, log in, return the session's CSRF token."""
    username = role.lower()
    make_user(username, role, PASSWORD)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    return csrf_from(client.get("/").get_data(as_text=True))


def text(response: Any) -> str:
    return response.get_data(as_text=True)


def listed_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-dag-id="([^"]+)"', html)


@pytest.fixture
def op(client: FlaskClient, make_user: Callable[..., Any]) -> str:
    return log_in(client, make_user, "Op")


@pytest.fixture
def viewer(client: FlaskClient, make_user: Callable[..., Any]) -> str:
    return log_in(client, make_user, "Viewer")


# --- the list ------------------------------------------------------------------------------------


def test_list_shows_owner_schedule_next_run_last_run_and_dots(app: Flask, client: FlaskClient, op: str) -> None:
    add_dags(app, build_dag("etl", schedule="0 6 * * *", owner="alice", tags=["daily"], description="Loads"),
             build_dag("adhoc", owner="bob"))
    set_next_run(app, "etl", datetime(2024, 5, 2, 6, 0, tzinfo=UTC))
    add_run(app, "etl", "r1", "success", minutes=0)
    add_run(app, "etl", "r2", "failed", minutes=10)
    add_run(app, "etl", "r3", "running", minutes=20)

    html = text(client.get("/"))
    assert listed_ids(html) == ["adhoc", "etl"]
    etl = html[html.index('data-dag-id="etl"'):]
    assert "alice" in etl and "<code>0 6 * * *</code>" in etl and "At 06:00" in etl
    assert "2024-05-02 06:00 UTC" in etl
    assert 'class="state-label state-running">running' in etl
    dots = re.findall(r'class="dot state-(\w+)" href="/dags/etl/runs/(\w+)"', etl)
    assert dots == [("success", "r1"), ("failed", "r2"), ("running", "r3")]
    assert "Never, external triggers only" in html[html.index('data-dag-id="adhoc"'):]
    assert 'href="/dags/etl/trigger"' in etl and 'action="/dags/etl/pause"' in etl
    assert '<script src="/static/dags.js" defer></script>' in html


def test_search_tag_and_paused_filters(app: Flask, client: FlaskClient, op: str) -> None:
    add_dags(app, build_dag("sales_daily", tags=["sales", "daily"], owner="carol"),
             build_dag("sales_hourly", tags=["sales"]), build_dag("hr_report", tags=["hr"]))
    add_dags(app, build_dag("sleepy", tags=["daily"]), paused=True)

    assert listed_ids(text(client.get("/?search=SALES"))) == ["sales_daily", "sales_hourly"]
    assert listed_ids(text(client.get("/?search=carol"))) == ["sales_daily"]
    assert listed_ids(text(client.get("/?tags=daily"))) == ["sales_daily", "sleepy"]
    assert listed_ids(text(client.get("/?tags=hr&tags=daily"))) == ["hr_report", "sales_daily", "sleepy"]
    assert listed_ids(text(client.get("/?status=paused"))) == ["sleepy"]
    html = text(client.get("/?status=active&tags=daily"))
    assert listed_ids(html) == ["sales_daily"]
    assert re.search(r'All <span class="count">2</span>', html)
    assert re.search(r'Paused <span class="count">1</span>', html)
    assert "No DAGs match these filters." in text(client.get("/?search=nothing-like-this"))
    assert "%" not in "".join(listed_ids(text(client.get("/?search=%25"))))  # LIKE wildcards are escaped
    assert listed_ids(text(client.get("/?search=%25"))) == []
    # "_" is a LIKE wildcard too, and "/" the escape character of the pattern: both match only themselves.
    assert listed_ids(text(client.get("/?search=s_d"))) == ["sales_daily"]
    assert listed_ids(text(client.get("/?search=sa_es"))) == []  # as a wildcard, "_" would match both "sales"
    assert listed_ids(text(client.get("/?search=%2F"))) == []
    # Each shape of filter (search, tags, status) reuses its statement with new values.
    assert listed_ids(text(client.get("/?search=hourly"))) == ["sales_hourly"]
    assert listed_ids(text(client.get("/?tags=hr"))) == ["hr_report"]


def test_pagination_in_pages_of_fifty(app: Flask, client: FlaskClient, op: str) -> None:
    record(app, "/dags/many.py", [build_dag(f"dag_{i:03d}") for i in range(120)])
    add_run(app, "dag_060", "only_run", "success")

    first = text(client.get("/"))
    assert listed_ids(first) == [f"dag_{i:03d}" for i in range(50)]
    assert "1–50 of 120" in first and "page 1 of 3" in first and 'href="/?page=2" rel="next"' in first
    second = text(client.get("/?page=2"))
    assert listed_ids(second)[0] == "dag_050" and len(listed_ids(second)) == 50
    assert 'href="/dags/dag_060/runs/only_run"' in second
    third = text(client.get("/?page=3"))
    assert listed_ids(third) == [f"dag_{i:03d}" for i in range(100, 120)]
    assert 'rel="next"' not in third and 'href="/?page=2" rel="prev"' in third
    assert listed_ids(text(client.get("/?page=99"))) == listed_ids(third)  # past the end: the last page
    assert listed_ids(text(client.get("/?page=x"))) == listed_ids(first)


def test_list_queries_do_not_grow_with_the_page(app: Flask, client: FlaskClient, op: str) -> None:
    from sqlalchemy import event

    record(app, "/dags/many.py", [build_dag(f"dag_{i:03d}") for i in range(60)])
    for i in range(0, 60, 3):
        add_run(app, f"dag_{i:03d}", "a", "success")
        add_run(app, f"dag_{i:03d}", "b", "running", minutes=1)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine_of(app), "before_cursor_execute", count)
    try:
        assert client.get("/").status_code == 200
    finally:
        event.remove(engine_of(app), "before_cursor_execute", count)
    assert sum("dag_run" in s for s in statements) == 1
    assert len(statements) < 12, statements


def test_import_errors_banner_shows_escaped_tracebacks(app: Flask, client: FlaskClient, op: str) -> None:
    trace = f'Traceback (most recent call last):\n  File "/dags/bad.py", line 1\nNameError: {XSS} & "quotes"'
    record(app, "/dags/bad.py", [], error=trace)

    html = text(client.get("/"))
    assert "1 DAG file could not be imported" in html
    assert "<code>/dags/bad.py</code>" in html
    assert XSS not in html
    assert "NameError: &lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34;" in html


def test_import_errors_banner_counts_the_files_it_does_not_list(app: Flask, client: FlaskClient, op: str) -> None:
    for index in range(49):
        record(app, f"/dags/bad_{index:02d}.py", [], error="SyntaxError")
    html = text(client.get("/"))
    assert "49 DAG files could not be imported" in html and " more (<code>" not in html
    record(app, "/dags/bad_49.py", [], error="SyntaxError")  # a full banner: 50 listed, the count from SQL
    html = text(client.get("/"))
    assert "50 DAG files could not be imported" in html and " more (<code>" not in html
    for index in range(50, 53):
        record(app, f"/dags/bad_{index:02d}.py", [], error="SyntaxError")
    html = text(client.get("/"))
    assert "53 DAG files could not be imported" in html and "and 3 more (<code>" in html
    assert html.count('<details class="import-error">') == 50


def test_everything_from_dag_files_is_escaped(app: Flask, client: FlaskClient, op: str) -> None:
    from scheduler import Param

    add_dags(app, build_dag("xss", description=XSS, tags=[XSS], owner=XSS,
                            params={"p": Param(XSS, type="string", description=XSS, title=XSS)}))
    add_run(app, "xss", "r1", "success")
    for page in (text(client.get("/")), text(client.get("/dags/xss/trigger"))):
        assert XSS not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<script>" not in page.replace('<script src="/static/dags.js" defer></script>', "")


# --- pause and unpause ---------------------------------------------------------------------------


def is_paused(app: Flask, dag_id: str) -> bool:
    with session_scope(engine_of(app), readonly=True) as session:
        row = session.get(Dag, dag_id)
        assert row is not None
        return row.is_paused


def test_op_pauses_and_unpauses_and_goes_back_to_the_list(app: Flask, client: FlaskClient, op: str) -> None:
    add_dags(app, build_dag("etl"))
    response = client.post("/dags/etl/pause", data={"csrf_token": op, "next": "/?status=active&page=1"})
    assert response.status_code == 302 and response.headers["Location"] == "/?status=active&page=1"
    assert is_paused(app, "etl")
    assert 'action="/dags/etl/unpause"' in text(client.get("/"))
    response = client.post("/dags/etl/unpause", data={"csrf_token": op, "next": "https://evil.example/"})
    assert response.headers["Location"] == "/"
    assert not is_paused(app, "etl")
    with session_scope(engine_of(app), readonly=True) as session:
        events = list(session.scalars(select(Log.event).where(Log.dag_id == "etl").order_by(Log.id)))
    assert events == ["ui.dag.pause", "ui.dag.unpause"]
    assert client.post("/dags/nope/pause", data={"csrf_token": op}).status_code == 404


def test_viewer_sees_no_controls_and_may_not_pause_or_trigger(app: Flask, client: FlaskClient, viewer: str) -> None:
    add_dags(app, build_dag("etl"))
    html = text(client.get("/"))
    assert listed_ids(html) == ["etl"]
    assert "/pause" not in html and "/trigger" not in html and 'class="badge badge-active">active' in html
    assert client.post("/dags/etl/pause", data={"csrf_token": viewer}).status_code == 403
    assert client.get("/dags/etl/trigger").status_code == 403
    assert client.post("/dags/etl/trigger", data={"csrf_token": viewer}).status_code == 403
    assert not is_paused(app, "etl")


def test_posts_without_the_csrf_token_are_refused(app: Flask, client: FlaskClient, op: str) -> None:
    add_dags(app, build_dag("etl"))
    assert client.post("/dags/etl/pause").status_code == 400
    assert client.post("/dags/etl/pause", data={"csrf_token": "0" * 64}).status_code == 400
    assert client.post("/dags/etl/trigger", data={"conf": "{}"}).status_code == 400
    assert not is_paused(app, "etl")
    with session_scope(engine_of(app), readonly=True) as session:
        assert session.scalar(select(DagRun.id)) is None


def test_anonymous_is_sent_to_the_login_page(app: Flask, client: FlaskClient) -> None:
    response = client.get("/?page=2")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")
    assert client.get("/ui/dags/status?ids=etl").status_code == 302


# --- the trigger form ----------------------------------------------------------------------------


@pytest.fixture
def typed_dag(app: Flask) -> str:
    from scheduler import Param

    add_dags(app, build_dag("typed", schedule="@daily", params={
        "name": Param("world", type="string", minLength=2, description="Who to greet"),
        "count": Param(3, type="integer", minimum=1, maximum=10),
        "ratio": Param(0.5, type="number"),
        "dry_run": Param(True, type="boolean"),
        "env": Param("dev", enum=["dev", "prod"]),
        "hosts": Param(["a", "b"], type="array", items={"type": "string"}),
        "extra": Param({"k": 1}, type="object"),
        "untyped": 7,
    }))
    return "typed"


def runs_of(app: Flask, dag_id: str) -> list[DagRun]:
    with session_scope(engine_of(app), readonly=True) as session:
        return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)))


def form_data(token: str, **values: Any) -> dict[str, Any]:
    """The trigger form as a browser posts it with the defaults of ``typed_dag`` and ``values`` on top."""
    data: dict[str, Any] = {
        "csrf_token": token, "param:name": "world", "param:count": "3", "param:ratio": "0.5",
        "param:dry_run": ["false", "true"], "param:env": '"dev"', "param:hosts": "a\nb",
        "param:extra": '{"k": 1}', "param:untyped": "7", "run_id": "", "logical_date": "", "conf": "",
    }
    data.update({k.replace("__", ":"): v for k, v in values.items()})
    return data


def test_trigger_form_renders_typed_inputs_from_params(client: FlaskClient, op: str, typed_dag: str) -> None:
    html = text(client.get("/dags/typed/trigger"))
    assert re.search(r'<input type="text" id="param-0" name="param:name" value="world"\s+minlength="2">', html)
    assert "Who to greet" in html
    assert re.search(r'<input type="number" id="param-1" name="param:count" value="3"\s+step="1" min="1" max="10"'
                     r' required>', html)
    assert re.search(r'type="number" id="param-2" name="param:ratio" value="0.5"\s+step="any"', html)
    assert '<input type="checkbox" id="param-3" name="param:dry_run" value="true" checked>' in html
    assert '<option value="&#34;dev&#34;" selected>dev</option>' in html
    assert '<option value="&#34;prod&#34;">prod</option>' in html
    assert re.search(r'name="param:hosts"[^>]*>a\nb</textarea>', html)
    assert re.search(r'name="param:extra"[^>]*>\{\n  &#34;k&#34;: 1\n\}</textarea>', html)
    assert re.search(r'type="number" id="param-7" name="param:untyped" value="7"', html)
    assert 'name="conf"' in html and 'name="run_id"' in html and 'name="logical_date"' in html


def test_invalid_values_rerender_with_field_messages_and_400(app: Flask, client: FlaskClient, op: str,
                                                             typed_dag: str) -> None:
    response = client.post("/dags/typed/trigger", data=form_data(op, param__count="11", param__name="x"))
    assert response.status_code == 400
    html = text(response)
    assert re.search(r"param-1.*?class=\"field-error\" role=\"alert\">param &#39;count&#39;: 11 is greater than "
                     r"the maximum of 10", html, re.S)
    assert "is too short" in html
    assert 'value="11"' in html  # what was typed is kept
    response = client.post("/dags/typed/trigger", data=form_data(op, param__count="three", param__env='"qa"',
                                                                 param__extra="{nope", logical_date="soon"))
    html = text(response)
    assert response.status_code == 400
    assert "&#39;three&#39; is not a whole number." in html
    assert "Choose one of the listed values." in html and "Not valid JSON" in html
    assert "&#39;soon&#39; is not an ISO 8601 date" in html
    assert runs_of(app, "typed") == []


def test_valid_form_creates_the_run_with_its_conf(app: Flask, client: FlaskClient, op: str, typed_dag: str) -> None:
    response = client.post("/dags/typed/trigger", data=form_data(
        op, param__count="4", param__dry_run="false", param__env='"prod"', param__hosts="x\n\n y \n",
        run_id="my_run", logical_date="2024-06-01T12:00:00+02:00",
    ))
    assert response.status_code == 302 and response.headers["Location"] == "/dags/typed"
    [run] = runs_of(app, "typed")
    assert run.run_id == "my_run" and run.run_type == "manual" and run.state == "queued"
    assert run.logical_date == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert run.conf == {"name": "world", "count": 4, "ratio": 0.5, "dry_run": False, "env": "prod",
                        "hosts": ["x", "y"], "extra": {"k": 1}, "untyped": 7}
    with client.session_transaction() as session:
        flashes = session.get("_flashes", [])
    assert flashes and "run my_run is queued" in flashes[0][1]
    again = client.post("/dags/typed/trigger", data=form_data(op, run_id="my_run"))
    assert again.status_code == 400 and "already exists" in text(again)


def test_raw_json_conf_adds_and_overrides_keys(app: Flask, client: FlaskClient, op: str, typed_dag: str) -> None:
    conf = json.dumps({"count": 9, "note": "<b>hi</b>"})
    response = client.post("/dags/typed/trigger", data=form_data(op, conf=conf))
    assert response.status_code == 302
    [run] = runs_of(app, "typed")
    assert run.conf["count"] == 9 and run.conf["note"] == "<b>hi</b>"
    assert run.run_id.startswith("manual__")

    for bad, message in (("[1]", "must be a JSON object, not list"), ("{", "not valid JSON"),
                         ('{"count": 0}', "0 is less than the minimum of 1")):
        response = client.post("/dags/typed/trigger", data=form_data(op, conf=bad))
        assert response.status_code == 400, bad
        assert message in text(response), bad
    assert len(runs_of(app, "typed")) == 1


def test_dag_without_params_triggers_from_the_json_editor(app: Flask, client: FlaskClient, op: str) -> None:
    add_dags(app, build_dag("plain"), paused=True)
    html = text(client.get("/dags/plain/trigger"))
    assert "<legend>Params</legend>" not in html and "<details class=\"field\" open>" in html
    assert "This DAG is paused" in html
    response = client.post("/dags/plain/trigger", data={"csrf_token": op, "conf": '{"a": [1, 2]}'})
    assert response.status_code == 302
    assert runs_of(app, "plain")[0].conf == {"a": [1, 2]}
    assert client.get("/dags/nope/trigger").status_code == 404


# --- the status feed -----------------------------------------------------------------------------


def test_status_endpoint_returns_recent_runs_and_states(app: Flask, client: FlaskClient, viewer: str) -> None:
    add_dags(app, build_dag("etl"), build_dag("other"))
    add_dags(app, build_dag("sleepy"), paused=True)
    set_next_run(app, "etl", datetime(2024, 5, 2, 6, 0, tzinfo=UTC))
    for i in range(12):
        add_run(app, "etl", f"r{i:02d}", "success" if i < 11 else "running", minutes=i)

    response = client.get("/ui/dags/status?ids=etl,sleepy,other,unknown")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()["dags"]
    assert set(body) == {"etl", "sleepy", "other"}
    etl = body["etl"]
    assert [r["run_id"] for r in etl["recent_runs"]] == [f"r{i:02d}" for i in range(2, 12)]
    assert etl["last_run"]["state"] == "running" and etl["last_run"]["url"] == "/dags/etl/runs/r11"
    assert etl["next_dagrun"] == "2024-05-02T06:00:00+00:00" and etl["is_paused"] is False
    assert body["sleepy"]["is_paused"] is True and body["other"]["last_run"] is None
    assert client.get("/ui/dags/status").get_json() == {"dags": {}}
    too_many = ",".join(f"d{i}" for i in range(101))
    assert client.get(f"/ui/dags/status?ids={too_many}").status_code == 400


# --- the list's SQL on each backend ----------------------------------------------------------------


def test_tag_filter_and_recent_runs_on_each_backend(db_url: str, tmp_path: Any) -> None:
    """JSON tag matching and the UNION ALL of per-DAG run queries, on SQLite and PostgreSQL."""
    from scheduler.config import load_settings
    from webserver import create_app
    from webserver.ui_dags import ListFilter, load_dag_list

    settings = load_settings(environ={"UPDRAFT_HOME": str(tmp_path / "home"),
                                      "UPDRAFT__DATABASE__SQL_ALCHEMY_CONN": db_url}, cwd=tmp_path)
    app = create_app(settings)
    try:
        add_dags(app, build_dag("a", tags=["x", 'q"uote']), build_dag("b", tags=["xy"]), build_dag("c"))
        add_dags(app, build_dag("d", tags=["x"]), paused=True)
        for i in range(12):
            add_run(app, "a", f"r{i:02d}", "success", minutes=i)
        add_run(app, "b", "only", "failed")
        with app.test_request_context("/"), session_scope(engine_of(app), readonly=True) as session:
            page = load_dag_list(session, ListFilter(tags=("x",)))
            assert [r.dag.dag_id for r in page.rows] == ["a", "d"]
            assert page.counts == {"active": 1, "paused": 1, "all": 2}
            assert [r.dag.dag_id for r in load_dag_list(session, ListFilter(tags=('q"uote',))).rows] == ["a"]
            assert [r.dag.dag_id for r in load_dag_list(session, ListFilter(status="paused")).rows] == ["d"]
            rows = {r.dag.dag_id: r for r in load_dag_list(session, ListFilter()).rows}
            assert [d.run_id for d in rows["a"].runs] == [f"r{i:02d}" for i in range(2, 12)]
            assert [d.state for d in rows["b"].runs] == ["failed"] and rows["c"].runs == []
            assert page.all_tags == ["q\"uote", "x", "xy"]
    finally:
        app.extensions["updraft_engine"].dispose()
