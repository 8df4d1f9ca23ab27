"""The DAG, run and task instance pages of the UI (webserver/ui_runs.py) through the Flask test client."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from scheduler.config import Settings

PASSWORD = "correct-horse"

ETL_DAG = '''
from datetime import datetime
from scheduler import DAG, BashOperator, EmptyOperator
with DAG("etl", schedule="0 6 * * *", start_date=datetime(2024, 5, 1), catchup=False,
         description="<script>alert('desc')</script> nightly"):
    extract = BashOperator(task_id="extract", bash_command="echo {{ ds }}", retries=2)
    transform = EmptyOperator(task_id="transform")
    load = EmptyOperator(task_id="load")
    report = EmptyOperator(task_id="report")
    extract >> transform >> load
    extract >> report
'''

# 1 start task and 12 layers of 10 tasks, each task fed by two tasks of the layer before it.
WIDE_DAG = '''
from datetime import datetime
from scheduler import DAG, EmptyOperator
with DAG("wide", schedule=None, start_date=datetime(2024, 5, 1)):
    prev = [EmptyOperator(task_id="start")]
    for layer in range(12):
        row = [EmptyOperator(task_id=f"t{layer:02d}_{i:02d}") for i in range(10)]
        for i, t in enumerate(row):
            prev[i % len(prev)] >> t
            prev[(i + 3) % len(prev)] >> t
        prev = row
'''

WHEN = datetime(2024, 6, 1, 6, tzinfo=UTC)
XSS = "<script>alert('x')</script>"
EVIL_TASK = '<img src=x onerror="alert(1)">'


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, html
    return match.group(1)


def log_in(client: FlaskClient, username: str) -> None:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)


def engine_of(app: Flask) -> Any:
    return app.extensions["updraft_engine"]


def build_world(app: Flask, settings: Settings) -> None:
    """etl and wide parsed; etl has run1 (failed: extract failed on its 2nd try) and run2 (running)."""
    from scheduler.clock import utcnow
    from scheduler.dag_processing import sync_dag_folder
    from scheduler.db import store
    from scheduler.db.engine import session_scope
    from scheduler.db.models import TaskInstance, TaskInstanceHistory, XCom
    from scheduler.states import DagRunState, DagRunType
    from scheduler.task_logs import log_path
    from scheduler.timetables.base import DataInterval

    (settings.dags_folder / "etl.py").write_text(ETL_DAG)
    (settings.dags_folder / "wide.py").write_text(WIDE_DAG)
    engine = engine_of(app)
    report = sync_dag_folder(engine, settings, now=utcnow())
    assert report.errors == 0
    later = WHEN + timedelta(days=1)
    with session_scope(engine) as session:
        store.create_dag_run(
            session, dag_id="etl", run_id="run1", run_type=DagRunType.SCHEDULED, logical_date=WHEN,
            data_interval=DataInterval(WHEN - timedelta(days=1), WHEN), conf={}, state=DagRunState.FAILED,
            run_after=WHEN, now=WHEN, external_trigger=False,
        )
        store.create_dag_run(
            session, dag_id="etl", run_id="run2", run_type=DagRunType.MANUAL, logical_date=later,
            data_interval=DataInterval(later, later), conf={"note": XSS}, state=DagRunState.RUNNING,
            run_after=later, now=later, external_trigger=True,
        )
        s = WHEN + timedelta(minutes=1)

        def ti(run_id: str, task_id: str, state: str, try_number: int = 0, start: int | None = None,
               seconds: float | None = None, **extra: Any) -> None:
            begin = None if start is None else s + timedelta(seconds=start)
            end = None if begin is None or seconds is None else begin + timedelta(seconds=seconds)
            session.add(TaskInstance(dag_id="etl", run_id=run_id, task_id=task_id, state=state,
                                     try_number=try_number, max_tries=2, start_date=begin, end_date=end,
                                     duration=seconds, operator="EmptyOperator", hostname="worker-1", **extra))

        ti("run1", "extract", "failed", 2, 60, 5.0, rendered_fields={"bash_command": "echo 2024-06-01"})
        ti("run1", "transform", "upstream_failed")
        ti("run1", "load", "upstream_failed")
        ti("run1", "report", "success", 1, 70, 2.5)
        ti("run1", EVIL_TASK, "removed")
        session.add(TaskInstanceHistory(dag_id="etl", run_id="run1", task_id="extract", try_number=1,
                                        state="failed", start_date=s, end_date=s + timedelta(seconds=3),
                                        duration=3.0, hostname="worker-1"))
        session.add(XCom(dag_id="etl", run_id="run1", task_id="report", key="return_value",
                         value={"html": XSS}, timestamp=s))
        ti("run2", "extract", "running", 1, 0)
        ti("run2", "transform", "none")
        ti("run2", "load", "none")
        ti("run2", "report", "none")

    def write_log(run_id: str, task_id: str, try_number: int, text: str) -> Path:
        path = log_path(settings.log_folder, "etl", run_id, task_id, -1, try_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    write_log("run1", "extract", 1, "first try output\n")
    write_log("run1", "extract", 2, f"second try output\n{XSS}\n")
    write_log("run2", "extract", 1, "started\n")


@pytest.fixture
def world(app: Flask, web_settings: Settings, make_user: Callable[..., Any]) -> Settings:
    make_user("viewer", "Viewer", PASSWORD)
    make_user("op", "Op", PASSWORD)
    build_world(app, web_settings)
    return web_settings


@pytest.fixture
def viewer(client: FlaskClient, world: Settings) -> FlaskClient:
    log_in(client, "viewer")
    return client


@pytest.fixture
def op(client: FlaskClient, world: Settings) -> FlaskClient:
    log_in(client, "op")
    return client


def page(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    html = response.get_data(as_text=True)
    if status == 200:
        assert response.mimetype == "text/html"
        assert_safe_markup(html)
    return html


class _MarkupCheck(HTMLParser):
    """Collects what the CSP would block or what would run: inline scripts, style, event handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        # A JSON data block is never executed (the grid's document); any other script must come from src.
        if tag == "script" and "src" not in names and dict(attrs).get("type") != "application/json":
            self.problems.append("inline <script>")
        if tag in ("style", "img", "iframe", "object"):
            self.problems.append(f"<{tag}>")
        self.problems.extend(f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on"))


def assert_safe_markup(html: str) -> None:
    """Under the CSP: no inline script or style, no event handler; so no test payload got through unescaped."""
    checker = _MarkupCheck()
    checker.feed(html)
    assert not checker.problems, checker.problems
    assert "<script>alert" not in html and "<img src=x" not in html


def ti_row(app: Flask, run_id: str, task_id: str) -> Any:
    from scheduler.db.engine import session_scope
    from scheduler.db.models import TaskInstance

    with session_scope(engine_of(app), readonly=True) as session:
        return session.scalar(select(TaskInstance).where(
            TaskInstance.dag_id == "etl", TaskInstance.run_id == run_id, TaskInstance.task_id == task_id))


def run_row(app: Flask, run_id: str) -> Any:
    from scheduler.db.engine import session_scope
    from scheduler.db.models import DagRun

    with session_scope(engine_of(app), readonly=True) as session:
        return session.scalar(select(DagRun).where(DagRun.dag_id == "etl", DagRun.run_id == run_id))


# --- the DAG's tabs ----------------------------------------------------------------------------------


def grid_document(html: str) -> dict[str, Any]:
    """The grid's JSON document carried by the page (drawn by static/grid.js)."""
    import json

    found = re.search(r'<script type="application/json" id="ur-grid-data">(.*?)</script>', html, re.S)
    assert found, "the grid page carries no grid document"
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def cell(grid: dict[str, Any], run_id: str, task_id: str) -> Any:
    column = [r["id"] for r in grid["runs"]].index(run_id)
    row = [t["id"] for t in grid["tasks"]].index(task_id)
    return grid["cells"][column][row]


def test_grid_carries_runs_by_tasks_as_compact_data_drawn_by_its_script(viewer: FlaskClient) -> None:
    html = page(viewer, "/dags/etl")
    assert 'href="/static/dag.css"' in html and 'src="/static/grid.js"' in html
    assert 'data-grid-poll="/dags/etl/grid_data.json?num_runs=25"' in html and 'data-dag-url="/dags/etl"' in html
    assert "ur-new-runs" not in html and "reload the page" not in html  # new runs appear as new columns
    assert 'data-poll=' not in html  # grid.js refreshes the grid; dag.js's poller stays off
    grid = grid_document(html)
    assert grid["dag_id"] == "etl" and grid["num_runs"] == 25
    # The runs, oldest first, with their states; one row per task in topological order.
    assert [(r["id"], r["state"]) for r in grid["runs"]] == [("run1", "failed"), ("run2", "running")]
    assert grid["runs"][0]["when"] == "2024-06-01 06:00:00 UTC"
    ids = [t["id"] for t in grid["tasks"]]
    assert ids[0] == "extract" and set(ids[1:4]) == {"transform", "load", "report"}
    # A task instance whose task left the DAG keeps its row, marked gone.
    assert grid["tasks"][-1] == {"id": EVIL_TASK, "group": None, "gone": True}
    # Cells: [state code, try number, duration in seconds]; codes index the document's state list.
    states = grid["states"]
    failed = cell(grid, "run1", "extract")
    assert states[failed[0]] == "failed" and failed[1:] == [2, 5.0]
    assert states[cell(grid, "run1", "load")[0]] == "upstream_failed"
    assert states[cell(grid, "run2", "extract")[0]] == "running"
    assert cell(grid, "run2", EVIL_TASK) is None  # no task instance: drawn as an empty cell
    assert grid["active"] is True
    # The DAG description from the DAG file is escaped; ids in the document cannot close its script element.
    assert "&lt;script&gt;alert(&#39;desc&#39;)&lt;/script&gt; nightly" in html
    assert EVIL_TASK not in html and "\\u003cimg src=x onerror=" in html


def test_grid_data_json_is_the_same_document_and_refuses_bad_input(viewer: FlaskClient) -> None:
    body = viewer.get("/dags/etl/grid_data.json?num_runs=1").get_json()
    assert [r["id"] for r in body["runs"]] == ["run2"] and body["num_runs"] == 1
    full = viewer.get("/dags/etl/grid_data.json").get_json()
    assert full == grid_document(page(viewer, "/dags/etl"))
    response = viewer.get("/dags/nope/grid_data.json")
    assert response.status_code == 404 and response.get_json() == {"error": "DAG 'nope' does not exist"}
    response = viewer.get("/dags/etl/grid_data.json?num_runs=many")
    assert response.status_code == 400 and "num_runs must be a whole number, not 'many'" in response.get_json()["error"]
    assert viewer.get("/dags/etl/grid_data.json?num_runs=100000").get_json()["num_runs"] == 200
    html = page(viewer, "/dags/etl?num_runs=x", 400)
    assert "num_runs must be a whole number" in html


def test_grid_summarises_a_mapped_task_into_one_cell(viewer: FlaskClient, app: Flask) -> None:
    from scheduler.db.engine import session_scope
    from scheduler.db.models import TaskInstance

    with session_scope(engine_of(app)) as session:
        for index, (state, seconds) in enumerate([("success", 1.0), ("failed", 4.25), ("running", None)]):
            session.add(TaskInstance(dag_id="etl", run_id="run1", task_id="fan", map_index=index, state=state,
                                     try_number=1, max_tries=0, duration=seconds, operator="EmptyOperator"))
        # The unmapped instance of a task that became mapped counts with its mapped ones (it comes first).
        session.add(TaskInstance(dag_id="etl", run_id="run2", task_id="fan", map_index=-1, state="up_for_retry",
                                 try_number=2, max_tries=3, duration=9.5, operator="EmptyOperator"))
        session.add(TaskInstance(dag_id="etl", run_id="run2", task_id="fan", map_index=0, state="success",
                                 try_number=1, max_tries=0, duration=1.0, operator="EmptyOperator"))
    grid = viewer.get("/dags/etl/grid_data.json").get_json()
    fan = cell(grid, "run1", "fan")
    assert grid["states"][fan[0]] == "failed" and fan[1:] == [1, 4.25, 3]
    both = cell(grid, "run2", "fan")
    assert grid["states"][both[0]] == "up_for_retry" and both[1:] == [2, 9.5, 2]


def test_grid_json_refreshes_states_and_says_when_runs_are_active(viewer: FlaskClient, app: Flask) -> None:
    body = viewer.get("/dags/etl/grid.json").get_json()
    assert body["latest"] == ["run1", "run2"]
    assert body["runs"]["run1"]["state"] == "failed" and body["runs"]["run2"]["state"] == "running"
    assert body["tis"]["run1"]["extract"] == {"state": "failed", "try_number": 2, "duration": "5.0s"}
    assert body["tis"]["run2"]["extract"]["state"] == "running"
    assert body["active"] is True
    only = viewer.get("/dags/etl/grid.json?run_id=run1").get_json()
    assert list(only["runs"]) == ["run1"] and only["active"] is False and only["latest"] == ["run1", "run2"]
    assert viewer.get("/dags/nope/grid.json").status_code == 404
    assert viewer.get("/dags/etl/grid.json?num_runs=x").status_code == 400


def test_graph_has_one_node_per_task_edges_and_the_chosen_runs_states(viewer: FlaskClient) -> None:
    html = page(viewer, "/dags/etl/graph")  # the latest run by default
    nodes = re.findall(r'data-node="t:([^"]+)"', html)
    assert sorted(nodes) == ["extract", "load", "report", "transform"]
    assert len(re.findall(r'<path class="ur-edge"', html)) == 3
    assert 'data-from="t:extract" data-to="t:transform"' in html
    assert re.search(r'class="ur-node ur-task st-running"[^>]*data-task="extract"', html)
    html = page(viewer, "/dags/etl/graph?run_id=run1")
    assert re.search(r'class="ur-node ur-task st-failed"[^>]*data-task="extract"', html)
    assert re.search(r'class="ur-node ur-task st-success"[^>]*data-task="report"', html)
    assert 'href="/dags/etl/runs/run1/tasks/extract"' in html
    # Layers run left to right: extract before transform before load.
    xs = {k: float(x) for x, k in re.findall(r'translate\(([\d.]+),[\d.]+\)"[^>]*data-node="t:(\w+)"', html)}
    assert xs["extract"] < xs["transform"] < xs["load"]
    page(viewer, "/dags/etl/graph?run_id=nope", 404)


def test_graph_of_a_120_task_dag_renders_every_node_and_edge(viewer: FlaskClient) -> None:
    html = page(viewer, "/dags/wide/graph")
    assert len(re.findall(r'data-node="t:', html)) == 121
    assert len(re.findall(r'<path class="ur-edge"', html)) == 10 + 11 * 20
    assert 'class="ur-scroll ur-graph-box"' in html
    assert "121 nodes in 13 layers" in html


def test_layered_layout_keeps_edges_pointing_right_and_nodes_apart() -> None:
    from webserver.graph_layout import NODE_H, layered_layout

    order = ["a", "b", "c", "d", "e", "f"]
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d"), ("e", "f"), ("d", "f")]
    layout = layered_layout(order, edges)
    for u, v in edges:
        assert layout.nodes[u].x < layout.nodes[v].x
    assert layout.nodes["e"].x == layout.nodes["d"].x  # a source sits next to its successor
    by_column: dict[float, list[float]] = {}
    for node in layout.nodes.values():
        by_column.setdefault(node.x, []).append(node.y)
    for ys in by_column.values():
        ys.sort()
        assert all(b - a >= NODE_H for a, b in zip(ys, ys[1:], strict=False))
    assert len(layout.edges) == len(edges) and all(d.startswith("M") for _, _, d in layout.edges)
    # An edge against the given order (a cycle through a collapsed group) does not break the layout.
    assert len(layered_layout(["x", "y"], [("x", "y"), ("y", "x")]).edges) == 2


def test_task_groups_collapse_into_one_node_and_expand(viewer: FlaskClient, app: Flask) -> None:
    from scheduler.db.engine import session_scope
    from scheduler.db.models import SerializedDag

    with session_scope(engine_of(app)) as session:
        row = session.get(SerializedDag, "etl")
        assert row is not None
        data = dict(row.data)
        data["tasks"] = [dict(t, task_group="section" if t["task_id"] in ("transform", "load") else None)
                         for t in data["tasks"]]
        row.data = data
    html = page(viewer, "/dags/etl/graph?run_id=run1")
    assert sorted(re.findall(r'data-node="([^"]+)"', html)) == ["g:section", "t:extract", "t:report"]
    assert re.search(r'class="ur-node ur-group st-upstream_failed"', html)
    assert "group · 2 tasks" in html
    assert 'href="/dags/etl/graph?run_id=run1&amp;expand=section"' in html
    html = page(viewer, "/dags/etl/graph?run_id=run1&expand=section")
    assert sorted(re.findall(r'data-node="([^"]+)"', html)) == ["t:extract", "t:load", "t:report", "t:transform"]
    assert "collapse section" in html


def test_code_runs_gantt_and_durations_pages(viewer: FlaskClient) -> None:
    html = page(viewer, "/dags/etl/code")
    assert "BashOperator(task_id=&#34;extract&#34;" in html
    assert "etl.py" in html and '<span class="ur-line">' in html
    html = page(viewer, "/dags/etl/runs")
    assert "run1" in html and "run2" in html and "Page 1 of 1" in html
    assert "&lt;script&gt;" in html  # run2's conf, escaped
    html = page(viewer, "/dags/etl/runs?state=failed")
    assert "run1" in html and "/runs/run2" not in html
    html = page(viewer, "/dags/etl/gantt?run_id=run1")
    assert len(re.findall(r'class="ur-bar st-failed"', html)) == 1  # extract's last try
    assert 'class="ur-bar st-failed ur-prev"' in html  # its first try, from the history
    assert 'class="ur-bar st-success"' in html  # report
    assert ">extract<" in html and "3 task instances not started" in html
    html = page(viewer, "/dags/etl/durations")
    assert "(whole run)" in html and "extract" in html
    assert re.search(r'<rect class="ur-bar st-failed"[^>]*><title>run1: 5.0s \(failed\)</title>', html)


def test_run_history_paginates(viewer: FlaskClient, app: Flask) -> None:
    from scheduler.db import store
    from scheduler.db.engine import session_scope
    from scheduler.states import DagRunState, DagRunType

    with session_scope(engine_of(app)) as session:
        for i in range(30):
            when = WHEN - timedelta(days=i + 1)
            store.create_dag_run(session, dag_id="etl", run_id=f"old{i:02d}", run_type=DagRunType.SCHEDULED,
                                 logical_date=when, data_interval=None, conf={}, state=DagRunState.SUCCESS,
                                 run_after=when, now=when, external_trigger=False)
    html = page(viewer, "/dags/etl/runs")
    assert "32 runs" in html and "Page 1 of 2" in html and "/dags/etl/runs?page=2" in html
    assert "/runs/run2" in html and "/runs/old29" not in html
    html = page(viewer, "/dags/etl/runs?page=2")
    assert "/runs/old29" in html and "/runs/run2" not in html
    page(viewer, "/dags/etl/runs?page=x", 400)


# --- run and task instance pages -----------------------------------------------------------------------


def test_run_page_shows_states_tries_durations_and_escaped_conf(viewer: FlaskClient) -> None:
    html = page(viewer, "/dags/etl/runs/run1")
    assert re.search(r'class="ur-state st-failed" data-run="run1" data-show="state">failed<', html)
    assert re.search(r'data-task="extract" data-show="try_number">2<', html)
    assert "5.0s" in html and "2.5s" in html
    assert "/dags/etl/runs/run1/tasks/report" in html
    assert "Mark success" not in html  # a Viewer sees no actions
    html = page(viewer, "/dags/etl/runs/run2")
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert 'data-poll="/dags/etl/grid.json?run_id=run2"' in html


def test_task_instance_page_shows_tries_rendered_fields_xcoms_and_the_log(viewer: FlaskClient) -> None:
    html = page(viewer, "/dags/etl/runs/run1/tasks/extract")
    assert "2 of 3" in html  # try 2 of max_tries + 1
    assert "/dags/etl/runs/run1/tasks/extract?try=1" in html and "/dags/etl/runs/run1/tasks/extract?try=2" in html
    assert "3.0s" in html and "5.0s" in html
    assert "Log of try 2" in html and "second try output" in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html  # the log line, escaped
    assert "bash_command" in html and "echo 2024-06-01" in html
    assert 'data-live=""' in html  # a finished try is not followed
    html = page(viewer, "/dags/etl/runs/run1/tasks/extract?try=1")
    assert "Log of try 1" in html and "first try output" in html and "second try output" not in html
    html = page(viewer, "/dags/etl/runs/run1/tasks/report")
    assert "return_value" in html and "&lt;script&gt;" in html  # the XCom value, escaped
    assert "No log was found for try 1" in html
    html = page(viewer, "/dags/etl/runs/run2/tasks/transform")
    assert "echo {{ ds }}" not in html and "This task has no template fields" in html
    html = page(viewer, "/dags/etl/runs/run2/tasks/extract")
    assert "Not rendered yet" in html and "echo {{ ds }}" in html
    assert 'data-live="1"' in html and "/dags/etl/runs/run2/tasks/extract/log.json?map_index=-1&amp;try=1" in html


def test_log_json_tails_from_an_offset(viewer: FlaskClient, world: Settings) -> None:
    from scheduler.task_logs import log_path

    url = "/dags/etl/runs/run2/tasks/extract/log.json?try=1"
    first = viewer.get(url).get_json()
    assert first == {"text": "started\n", "offset": 8, "live": True, "state": "running"}
    path = log_path(world.log_folder, "etl", "run2", "extract", -1, 1)
    with open(path, "a") as handle:
        handle.write("more <b>output</b> ✓\n")
    second = viewer.get(f"{url}&offset={first['offset']}").get_json()
    assert second["text"] == "more <b>output</b> ✓\n" and second["offset"] == path.stat().st_size
    assert viewer.get(f"{url}&offset={second['offset']}").get_json()["text"] == ""
    done = viewer.get("/dags/etl/runs/run1/tasks/extract/log.json?try=2").get_json()
    assert done["live"] is False and done["text"].startswith("second try output")
    assert viewer.get("/dags/etl/runs/run1/tasks/extract/log.json?try=9").get_json()["text"] == ""
    assert viewer.get("/dags/etl/runs/run1/tasks/nope/log.json?try=1").status_code == 404
    assert viewer.get(f"{url}&offset=-1").status_code == 400
    assert viewer.get("/dags/etl/runs/run1/tasks/extract/log.json").status_code == 400


# --- actions -------------------------------------------------------------------------------------------


def test_clear_confirms_then_clears_with_downstream_and_requeues_the_run(op: FlaskClient, app: Flask) -> None:
    url = "/dags/etl/runs/run1/tasks/extract/clear?downstream=1"
    html = page(op, url)
    assert "Clear extract?" in html
    assert all(f"<td>{t}</td>" in html for t in ("extract", "transform", "load", "report"))
    assert ti_row(app, "run1", "extract").state == "failed"  # the confirmation changes nothing
    token = csrf_from(html)
    response = op.post(url, data={"csrf_token": token, "downstream": "1"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/dags/etl/runs/run1")
    for task_id in ("extract", "transform", "load", "report"):
        assert ti_row(app, "run1", task_id).state == "none"
    assert run_row(app, "run1").state == "queued"
    assert "Cleared 4 task instances." in page(op, "/dags/etl/runs/run1")


def test_clear_only_failed_and_upstream_options(op: FlaskClient, app: Flask) -> None:
    html = page(op, "/dags/etl/runs/run1/tasks/load/clear?upstream=1&only_failed=1")
    assert "3 task instances will change" in html  # extract (failed), transform and load (upstream_failed)
    token = csrf_from(html)
    op.post("/dags/etl/runs/run1/tasks/load/clear", data={"csrf_token": token, "upstream": "1", "only_failed": "1"})
    assert ti_row(app, "run1", "extract").state == "none" and ti_row(app, "run1", "report").state == "success"


def test_mark_task_instance_and_run_behind_a_confirmation(op: FlaskClient, app: Flask) -> None:
    html = page(op, "/dags/etl/runs/run1/tasks/transform/mark/success")
    assert "Mark transform success?" in html and "upstream_failed" in html
    token = csrf_from(html)
    assert op.post("/dags/etl/runs/run1/tasks/transform/mark/success",
                   data={"csrf_token": token}).status_code == 302
    assert ti_row(app, "run1", "transform").state == "success"

    html = page(op, "/dags/etl/runs/run2/mark/failed")
    assert "Run state: running → failed" in html and "4 task instances will change" in html
    assert op.post("/dags/etl/runs/run2/mark/failed", data={"csrf_token": token}).status_code == 302
    assert run_row(app, "run2").state == "failed"
    assert ti_row(app, "run2", "extract").state == "failed" and ti_row(app, "run2", "load").state == "skipped"

    op.post("/dags/etl/runs/run2/mark/queued", data={"csrf_token": token})
    assert run_row(app, "run2").state == "queued" and ti_row(app, "run2", "extract").state == "none"
    page(op, "/dags/etl/runs/run2/mark/running", 404)
    page(op, "/dags/etl/runs/run2/tasks/extract/mark/skippy", 404)
    assert "Mark success" in page(op, "/dags/etl/runs/run1")


def test_actions_are_forbidden_for_a_viewer(viewer: FlaskClient, app: Flask) -> None:
    token = csrf_from(page(viewer, "/dags/etl"))
    assert viewer.get("/dags/etl/runs/run1/tasks/extract/clear").status_code == 403
    assert viewer.post("/dags/etl/runs/run1/tasks/extract/clear", data={"csrf_token": token}).status_code == 403
    assert viewer.post("/dags/etl/runs/run1/tasks/extract/mark/success", data={"csrf_token": token}).status_code == 403
    assert viewer.post("/dags/etl/runs/run1/mark/success", data={"csrf_token": token}).status_code == 403
    assert ti_row(app, "run1", "extract").state == "failed" and run_row(app, "run1").state == "failed"


def test_actions_without_the_csrf_token_are_refused(op: FlaskClient, app: Flask) -> None:
    assert op.post("/dags/etl/runs/run1/tasks/extract/clear").status_code == 400
    assert op.post("/dags/etl/runs/run1/mark/success", data={"csrf_token": "forged"}).status_code == 400
    assert ti_row(app, "run1", "extract").state == "failed" and run_row(app, "run1").state == "failed"


# --- errors and escaping ---------------------------------------------------------------------------------


def test_unknown_dag_run_or_task_is_an_html_404(viewer: FlaskClient) -> None:
    for url in ("/dags/nope", "/dags/nope/graph", "/dags/nope/code", "/dags/nope/runs", "/dags/nope/gantt",
                "/dags/nope/durations", "/dags/etl/runs/nope", "/dags/etl/runs/nope/tasks/extract",
                "/dags/etl/runs/run1/tasks/nope", "/dags/etl/gantt?run_id=nope"):
        html = page(viewer, url, 404)
        assert "Not Found" in html and "<html" in html, url


def test_a_script_task_id_is_escaped_on_its_page_and_in_the_grid(viewer: FlaskClient) -> None:
    from urllib.parse import quote

    html = page(viewer, "/dags/etl/runs/run1/tasks/" + quote(EVIL_TASK, safe=""))
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "no longer in the DAG" in html
    html = page(viewer, "/dags/etl/durations")
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html


def test_pages_need_a_login(client: FlaskClient, world: Settings) -> None:
    response = client.get("/dags/etl/runs/run1")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")
