"""/api/v1 resources through the Flask test client: shapes, pagination, auth, errors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import Settings

ETL_DAG = '''
from datetime import datetime
from scheduler import DAG, EmptyOperator, Param
with DAG("etl", schedule="0 6 * * *", start_date=datetime(2024, 5, 1), catchup=False,
         description="<script>alert('x')</script> & friends", tags=["etl", "daily"],
         default_args={"owner": "alice"}, params={"n": Param(1, type="integer")}):
    extract = EmptyOperator(task_id="extract")
    load = EmptyOperator(task_id="load")
    extract >> load
'''
MANUAL_DAG = '''
from datetime import datetime
from scheduler import DAG, EmptyOperator
with DAG("manual", schedule=None, start_date=datetime(2024, 5, 1)):
    EmptyOperator(task_id="only")
'''
BROKEN_DAG = "from scheduler import DAG\nimport does_not_exist_anywhere\n"

PASSWORD = "correct-horse-battery"
ADMIN = ("admin", PASSWORD)
VIEWER = ("viewer", PASSWORD)


def auth(user: tuple[str, str] = ADMIN) -> dict[str, str]:
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": "application/json"}


def build_world(settings: Settings, *, extra_dags: int = 0) -> None:
    """DAG files parsed into the database, one run of etl with two task instances and a log."""
    from scheduler.clock import utcnow
    from scheduler.dag_processing import sync_dag_folder
    from scheduler.db import store
    from scheduler.db.engine import make_engine, session_scope
    from scheduler.db.models import TaskInstance
    from scheduler.states import DagRunState, DagRunType
    from scheduler.task_logs import log_path
    from scheduler.timetables.base import DataInterval

    folder = settings.dags_folder
    (folder / "etl.py").write_text(ETL_DAG)
    (folder / "manual.py").write_text(MANUAL_DAG)
    (folder / "broken.py").write_text(BROKEN_DAG)
    for i in range(extra_dags):
        (folder / f"extra_{i:03d}.py").write_text(MANUAL_DAG.replace('"manual"', f'"extra_{i:03d}"'))
    engine = make_engine(settings.sql_alchemy_conn)
    try:
        sync_dag_folder(engine, settings, now=utcnow())
        when = datetime(2024, 6, 1, 6, tzinfo=UTC)
        with session_scope(engine) as session:
            store.create_dag_run(
                session, dag_id="etl", run_id="run1", run_type=DagRunType.SCHEDULED, logical_date=when,
                data_interval=DataInterval(when, when), conf={"n": 2}, state=DagRunState.RUNNING,
                run_after=when, now=when, external_trigger=False,
            )
            session.add(TaskInstance(dag_id="etl", run_id="run1", task_id="extract", state="failed", try_number=1,
                                     max_tries=0, start_date=when, end_date=when, duration=1.5,
                                     operator="EmptyOperator"))
            session.add(TaskInstance(dag_id="etl", run_id="run1", task_id="load", state="upstream_failed",
                                     try_number=0))
    finally:
        engine.dispose()
    path = log_path(settings.log_folder, "etl", "run1", "extract", -1, 1)
    path.parent.mkdir(parents=True)
    path.write_text("line one\n<b>line two</b>\n")


@pytest.fixture
def world(web_settings: Settings, make_user: Any) -> Settings:
    make_user("admin", "Admin", PASSWORD)
    make_user("viewer", "Viewer", PASSWORD)
    make_user("op", "Op", PASSWORD)
    build_world(web_settings)
    return web_settings


def problem_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert set(body) >= {"type", "title", "status", "detail"} and body["status"] == status
    return body  # type: ignore[no-any-return]


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


# --- dags -------------------------------------------------------------------------------------------


def test_list_dags_shapes(world: Settings, client: Any) -> None:
    body = ok(client.get("/api/v1/dags", headers=auth()))
    assert body["total_entries"] == 2
    etl, manual = body["dags"]
    assert etl["dag_id"] == "etl" and manual["dag_id"] == "manual"
    assert etl["schedule_interval"] == {"__type": "CronExpression", "value": "0 6 * * *"}
    assert manual["schedule_interval"] is None
    assert etl["tags"] == [{"name": "etl"}, {"name": "daily"}] or etl["tags"] == [{"name": "daily"}, {"name": "etl"}]
    assert etl["owners"] == ["alice"]
    assert etl["is_paused"] is True and etl["is_active"] is True  # paused at creation, as in Airflow and etl["is_subdag"] is False
    assert isinstance(etl["max_active_runs"], (int, type(None)))
    assert etl["fileloc"].endswith("etl.py")
    datetime.fromisoformat(etl["last_parsed_time"])
    # The description comes back verbatim: JSON is not HTML.
    assert etl["description"] == "<script>alert('x')</script> & friends"


def test_list_dags_filters_and_order(world: Settings, client: Any) -> None:
    assert [d["dag_id"] for d in ok(client.get("/api/v1/dags?tags=etl", headers=auth()))["dags"]] == ["etl"]
    assert ok(client.get("/api/v1/dags?tags=nope", headers=auth()))["total_entries"] == 0
    assert [d["dag_id"] for d in ok(client.get("/api/v1/dags?dag_id_pattern=MAN", headers=auth()))["dags"]] == ["manual"]
    assert [d["dag_id"] for d in ok(client.get("/api/v1/dags?order_by=-dag_id", headers=auth()))["dags"]] == [
        "manual", "etl"]
    assert ok(client.get("/api/v1/dags?paused=false", headers=auth()))["total_entries"] == 0
    assert ok(client.get("/api/v1/dags?paused=true", headers=auth()))["total_entries"] == 2
    problem_of(client.get("/api/v1/dags?order_by=bogus", headers=auth()), 400)
    problem_of(client.get("/api/v1/dags?paused=maybe", headers=auth()), 400)
    problem_of(client.get("/api/v1/dags?limit=abc", headers=auth()), 400)
    problem_of(client.get("/api/v1/dags?limit=0", headers=auth()), 400)
    problem_of(client.get("/api/v1/dags?offset=-1", headers=auth()), 400)
    assert "bogus" in problem_of(client.get("/api/v1/dags?bogus=1", headers=auth()), 400)["detail"]


def test_list_dags_pagination(web_settings: Settings, make_user: Any, client: Any) -> None:
    make_user("admin", "Admin", PASSWORD)
    build_world(web_settings, extra_dags=103)
    body = ok(client.get("/api/v1/dags", headers=auth()))
    assert body["total_entries"] == 105 and len(body["dags"]) == 100
    body = ok(client.get("/api/v1/dags?limit=10&offset=100", headers=auth()))
    assert body["total_entries"] == 105 and len(body["dags"]) == 5
    assert body["dags"][-1]["dag_id"] == "manual"
    assert len(ok(client.get("/api/v1/dags?limit=1000", headers=auth()))["dags"]) == 100
    # A first page holding the whole list is its own count; a full first page is not (counted in SQL).
    assert ok(client.get("/api/v1/dags?limit=105", headers=auth()))["total_entries"] == 105
    assert ok(client.get("/api/v1/dags?limit=104", headers=auth()))["total_entries"] == 105
    assert ok(client.get("/api/v1/dags?limit=100&offset=5", headers=auth()))["total_entries"] == 105


def test_get_and_patch_dag(world: Settings, client: Any) -> None:
    assert ok(client.get("/api/v1/dags/etl", headers=auth()))["dag_id"] == "etl"
    assert problem_of(client.get("/api/v1/dags/nope", headers=auth()), 404)["title"] == "DAG not found"
    body = ok(client.patch("/api/v1/dags/etl?update_mask=is_paused", json={"is_paused": True}, headers=auth()))
    assert body["is_paused"] is True
    assert ok(client.get("/api/v1/dags/etl", headers=auth()))["is_paused"] is True
    body = ok(client.patch("/api/v1/dags/etl", json={"is_paused": False}, headers=auth(("op", PASSWORD))))
    assert body["is_paused"] is False
    problem_of(client.patch("/api/v1/dags/etl", json={"is_paused": "yes"}, headers=auth()), 400)
    problem_of(client.patch("/api/v1/dags/etl?update_mask=tags", json={"is_paused": True}, headers=auth()), 400)
    problem_of(client.patch("/api/v1/dags/etl", json={}, headers=auth()), 400)
    problem_of(client.patch("/api/v1/dags/nope", json={"is_paused": True}, headers=auth()), 404)


def test_dag_details_and_tasks(world: Settings, client: Any) -> None:
    details = ok(client.get("/api/v1/dags/etl/details", headers=auth()))
    assert details["catchup"] is False and "n" in details["params"]
    tasks = ok(client.get("/api/v1/dags/etl/tasks", headers=auth()))
    assert tasks["total_entries"] == 2
    extract = tasks["tasks"][0]
    assert extract["task_id"] == "extract" and extract["downstream_task_ids"] == ["load"]
    assert extract["class_ref"]["class_name"] == "EmptyOperator"
    assert extract["retry_delay"]["__type"] == "TimeDelta"
    assert extract["owner"] == "alice"
    assert ok(client.get("/api/v1/dags/etl/tasks/load", headers=auth()))["task_id"] == "load"
    problem_of(client.get("/api/v1/dags/etl/tasks/nope", headers=auth()), 404)
    problem_of(client.get("/api/v1/dags/nope/tasks", headers=auth()), 404)
    assert [t["task_id"] for t in ok(client.get("/api/v1/dags/etl/tasks?order_by=-task_id", headers=auth()))["tasks"]] \
        == ["load", "extract"]


# --- dag runs ---------------------------------------------------------------------------------------


def test_list_and_get_runs(world: Settings, client: Any) -> None:
    body = ok(client.get("/api/v1/dags/etl/dagRuns", headers=auth()))
    assert body["total_entries"] == 1
    run = body["dag_runs"][0]
    assert run["dag_run_id"] == "run1" and run["state"] == "running" and run["run_type"] == "scheduled"
    assert run["conf"] == {"n": 2} and run["logical_date"] == "2024-06-01T06:00:00+00:00"
    assert ok(client.get("/api/v1/dags/etl/dagRuns?state=success", headers=auth()))["total_entries"] == 0
    assert ok(client.get("/api/v1/dags/~/dagRuns", headers=auth()))["total_entries"] == 1
    assert ok(client.get("/api/v1/dags/etl/dagRuns?limit=1", headers=auth()))["total_entries"] == 1  # a full page
    past = ok(client.get("/api/v1/dags/etl/dagRuns?offset=3", headers=auth()))
    assert past == {"dag_runs": [], "total_entries": 1}
    problem_of(client.get("/api/v1/dags/etl/dagRuns?state=bogus", headers=auth()), 400)
    problem_of(client.get("/api/v1/dags/etl/dagRuns?start_date_gte=notadate", headers=auth()), 400)
    assert ok(client.get("/api/v1/dags/etl/dagRuns/run1", headers=auth()))["dag_id"] == "etl"
    assert problem_of(client.get("/api/v1/dags/etl/dagRuns/nope", headers=auth()), 404)["title"] == "DAGRun not found"
    assert problem_of(client.get("/api/v1/dags/nope/dagRuns", headers=auth()), 404)["title"] == "DAG not found"


def test_trigger_run(world: Settings, client: Any) -> None:
    body = ok(client.post("/api/v1/dags/etl/dagRuns", json={"dag_run_id": "mine", "conf": {"n": 5}},
                          headers=auth()))
    assert body["dag_run_id"] == "mine" and body["state"] == "queued" and body["run_type"] == "manual"
    assert body["conf"] == {"n": 5} and body["external_trigger"] is True
    body = ok(client.post("/api/v1/dags/manual/dagRuns", json={}, headers=auth()))
    assert body["dag_run_id"].startswith("manual__") and body["conf"] == {}
    body = ok(client.post("/api/v1/dags/manual/dagRuns", json={"logical_date": "2024-01-02T03:04:05+01:00",
                                                               "conf": {"html": "<img src=x onerror=alert(1)>"}},
                          headers=auth()))
    assert body["logical_date"] == "2024-01-02T02:04:05+00:00"
    assert body["conf"] == {"html": "<img src=x onerror=alert(1)>"}
    dup = problem_of(client.post("/api/v1/dags/etl/dagRuns", json={"dag_run_id": "mine"}, headers=auth()), 409)
    assert dup["detail"] == "DAGRun with DAG ID: 'etl' and DAGRun ID: 'mine' already exists"


def test_trigger_run_bad_input(world: Settings, client: Any) -> None:
    bad = problem_of(client.post("/api/v1/dags/etl/dagRuns", data="{not json", headers=auth(),
                                 content_type="application/json"), 400)
    assert bad["detail"] == "Request body is not valid JSON"
    bad = problem_of(client.post("/api/v1/dags/etl/dagRuns", json={"conf": "a string"}, headers=auth()), 400)
    assert bad["detail"] == "'a string' is not of type 'object' - 'conf'"
    bad = problem_of(client.post("/api/v1/dags/etl/dagRuns", json={"conf": {"n": "many"}}, headers=auth()), 400)
    assert "n" in bad["detail"]
    problem_of(client.post("/api/v1/dags/etl/dagRuns", json=[1, 2], headers=auth()), 400)
    problem_of(client.post("/api/v1/dags/etl/dagRuns", json={"dag_run_id": 7}, headers=auth()), 400)
    problem_of(client.post("/api/v1/dags/etl/dagRuns", json={"logical_date": "yesterday"}, headers=auth()), 400)
    problem_of(client.post("/api/v1/dags/etl/dagRuns", json={"surprise": 1}, headers=auth()), 400)
    problem_of(client.post("/api/v1/dags/etl/dagRuns", json={"dag_run_id": "  "}, headers=auth()), 400)
    problem_of(client.post("/api/v1/dags/etl/dagRuns", data=b"\xff\xfe", headers=auth(),
                           content_type="application/json"), 400)
    problem_of(client.post("/api/v1/dags/nope/dagRuns", json={}, headers=auth()), 404)


def test_mark_delete_and_clear_run(world: Settings, client: Any) -> None:
    body = ok(client.patch("/api/v1/dags/etl/dagRuns/run1", json={"state": "success"}, headers=auth()))
    assert body["state"] == "success"
    tis = ok(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances", headers=auth()))["task_instances"]
    assert {t["task_id"]: t["state"] for t in tis} == {"extract": "failed", "load": "upstream_failed"}
    problem_of(client.patch("/api/v1/dags/etl/dagRuns/run1", json={"state": "running"}, headers=auth()), 400)
    problem_of(client.patch("/api/v1/dags/etl/dagRuns/nope", json={"state": "failed"}, headers=auth()), 404)

    dry = ok(client.post("/api/v1/dags/etl/dagRuns/run1/clear", json={"dry_run": True}, headers=auth()))
    assert sorted(t["task_id"] for t in dry["task_instances"]) == ["extract", "load"]
    assert dry["task_instances"][0]["dag_run_id"] == "run1"
    cleared = ok(client.post("/api/v1/dags/etl/dagRuns/run1/clear", json={"dry_run": False}, headers=auth()))
    assert cleared["state"] == "queued"
    tis = ok(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances", headers=auth()))["task_instances"]
    assert [t["state"] for t in tis] == [None, None]

    assert client.delete("/api/v1/dags/etl/dagRuns/run1", headers=auth()).status_code == 204
    problem_of(client.get("/api/v1/dags/etl/dagRuns/run1", headers=auth()), 404)
    problem_of(client.delete("/api/v1/dags/etl/dagRuns/run1", headers=auth()), 404)


# --- task instances ---------------------------------------------------------------------------------


def test_task_instance_shapes(world: Settings, client: Any) -> None:
    body = ok(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances", headers=auth()))
    assert body["total_entries"] == 2
    extract = body["task_instances"][0]
    assert extract["task_id"] == "extract" and extract["state"] == "failed"
    assert extract["hostname"] == "" and extract["executor_config"] == "{}"
    assert extract["try_number"] == 1 and extract["duration"] == 1.5
    assert extract["execution_date"] == "2024-06-01T06:00:00+00:00"
    assert body["task_instances"][1]["start_date"] is None
    assert ok(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances?limit=1&offset=1",
                         headers=auth()))["task_instances"][0]["task_id"] == "load"
    for limit, offset in ((1, 0), (2, 0), (3, 0), (1, 1), (5, 2)):  # one page, a full page, past the end
        page = ok(client.get(f"/api/v1/dags/etl/dagRuns/run1/taskInstances?limit={limit}&offset={offset}",
                             headers=auth()))
        assert page["total_entries"] == 2 and len(page["task_instances"]) == max(min(limit, 2 - offset), 0)
    assert ok(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances?state=failed",
                         headers=auth()))["total_entries"] == 1
    assert ok(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances/load", headers=auth()))["state"] == \
        "upstream_failed"
    nf = problem_of(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances/nope", headers=auth()), 404)
    assert nf["title"] == "Task instance not found"
    problem_of(client.get("/api/v1/dags/etl/dagRuns/nope/taskInstances", headers=auth()), 404)


def test_mark_task_instance(world: Settings, client: Any) -> None:
    url = "/api/v1/dags/etl/dagRuns/run1/taskInstances/extract"
    ref = ok(client.patch(url, json={"new_state": "success"}, headers=auth()))
    assert ref == {"task_id": "extract", "dag_id": "etl", "dag_run_id": "run1",
                   "execution_date": "2024-06-01T06:00:00+00:00"}
    assert ok(client.get(url, headers=auth()))["state"] == "failed"  # dry run by default, as in Airflow
    ok(client.patch(url, json={"new_state": "success", "dry_run": False}, headers=auth()))
    assert ok(client.get(url, headers=auth()))["state"] == "success"
    problem_of(client.patch(url, json={"new_state": "running", "dry_run": False}, headers=auth()), 400)
    problem_of(client.patch(url, json={"dry_run": False}, headers=auth()), 400)


def test_logs(world: Settings, client: Any) -> None:
    url = "/api/v1/dags/etl/dagRuns/run1/taskInstances/extract/logs/1"
    body = ok(client.get(url + "?full_content=True", headers=auth()))
    assert body == {"content": "line one\n<b>line two</b>\n", "continuation_token": "25"}
    with open(world.log_folder / "dag_id=etl/run_id=run1/task_id=extract/attempt=1.log", "a") as log:
        log.write("more\n")
    assert ok(client.get(url + "?token=25", headers=auth())) == {"content": "more\n", "continuation_token": "30"}
    problem_of(client.get(url + "?token=abc", headers=auth()), 400)
    text = client.get(url, headers={**auth(), "Accept": "text/plain"})
    assert text.status_code == 200 and text.mimetype == "text/plain" and "line two" in text.get_data(as_text=True)
    problem_of(client.get(url[:-1] + "2", headers=auth()), 404)
    problem_of(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances/nope/logs/1", headers=auth()), 404)
    problem_of(client.get(url + "?full_content=perhaps", headers=auth()), 400)
    problem_of(client.get(url[:-1] + "x", headers=auth()), 404)


def test_clear_task_instances(world: Settings, client: Any) -> None:
    url = "/api/v1/dags/etl/clearTaskInstances"
    body = ok(client.post(url, json={"dry_run": True}, headers=auth()))
    assert sorted(t["task_id"] for t in body["task_instances"]) == ["extract", "load"]  # only_failed by default
    body = ok(client.post(url, json={"dry_run": True, "task_ids": ["extract"], "dag_run_id": "run1"},
                          headers=auth()))
    assert [t["task_id"] for t in body["task_instances"]] == ["extract"]
    body = ok(client.post(url, json={"dry_run": True, "task_ids": ["extract"], "include_downstream": True,
                                     "only_failed": False}, headers=auth()))
    assert sorted(t["task_id"] for t in body["task_instances"]) == ["extract", "load"]
    body = ok(client.post(url, json={"dry_run": False, "task_ids": ["extract"]}, headers=auth()))
    assert [t["task_id"] for t in body["task_instances"]] == ["extract"]
    assert ok(client.get("/api/v1/dags/etl/dagRuns/run1/taskInstances/extract", headers=auth()))["state"] is None
    problem_of(client.post(url, json={"task_ids": "extract"}, headers=auth()), 400)
    problem_of(client.post(url, json={"task_ids": ["nope"]}, headers=auth()), 404)
    problem_of(client.post(url, json={"dag_run_id": "nope"}, headers=auth()), 404)
    problem_of(client.post("/api/v1/dags/nope/clearTaskInstances", json={}, headers=auth()), 404)


# --- import errors, variables, pools ----------------------------------------------------------------


def test_import_errors(world: Settings, client: Any) -> None:
    body = ok(client.get("/api/v1/importErrors", headers=auth()))
    assert body["total_entries"] == 1
    error = body["import_errors"][0]
    assert error["filename"].endswith("broken.py") and "does_not_exist_anywhere" in error["stack_trace"]
    assert isinstance(error["import_error_id"], int)
    assert ok(client.get(f"/api/v1/importErrors/{error['import_error_id']}", headers=auth())) == error
    problem_of(client.get("/api/v1/importErrors/999", headers=auth()), 404)


def test_variables(world: Settings, client: Any) -> None:
    assert ok(client.get("/api/v1/variables", headers=auth())) == {"variables": [], "total_entries": 0}
    body = ok(client.post("/api/v1/variables", json={"key": "k", "value": "v", "description": "d"}, headers=auth()))
    assert body == {"key": "k", "value": "v", "description": "d"}
    ok(client.post("/api/v1/variables", json={"key": "k", "value": "v2"}, headers=auth()))
    assert ok(client.get("/api/v1/variables/k", headers=auth())) == {"key": "k", "value": "v2", "description": "d"}
    body = ok(client.patch("/api/v1/variables/k?update_mask=value", json={"key": "k", "value": "v3"},
                           headers=auth()))
    assert body["value"] == "v3"
    problem_of(client.patch("/api/v1/variables/k", json={"key": "other", "value": "x"}, headers=auth()), 400)
    problem_of(client.patch("/api/v1/variables/nope", json={"key": "nope", "value": "x"}, headers=auth()), 404)
    problem_of(client.post("/api/v1/variables", json={"key": "k", "value": 3}, headers=auth()), 400)
    problem_of(client.post("/api/v1/variables", json={"value": "x"}, headers=auth()), 400)
    assert ok(client.get("/api/v1/variables", headers=auth()))["total_entries"] == 1
    assert client.delete("/api/v1/variables/k", headers=auth()).status_code == 204
    problem_of(client.get("/api/v1/variables/k", headers=auth()), 404)
    problem_of(client.delete("/api/v1/variables/k", headers=auth()), 404)


def test_pools(world: Settings, client: Any) -> None:
    body = ok(client.get("/api/v1/pools", headers=auth()))
    assert body["total_entries"] == 1
    default = body["pools"][0]
    assert default["name"] == "default_pool" and default["slots"] == 128
    assert {k: default[k] for k in ("occupied_slots", "running_slots", "queued_slots", "open_slots")} == {
        "occupied_slots": 0, "running_slots": 0, "queued_slots": 0, "open_slots": 128}
    body = ok(client.post("/api/v1/pools", json={"name": "small", "slots": 2, "description": "x"}, headers=auth()))
    assert body["name"] == "small" and body["open_slots"] == 2 and body["include_deferred"] is False
    problem_of(client.post("/api/v1/pools", json={"name": "small", "slots": 2}, headers=auth()), 409)
    problem_of(client.post("/api/v1/pools", json={"name": "x", "slots": "2"}, headers=auth()), 400)
    body = ok(client.patch("/api/v1/pools/small?update_mask=slots", json={"slots": 5}, headers=auth()))
    assert body["slots"] == 5
    body = ok(client.patch("/api/v1/pools/small", json={"name": "big", "slots": 7}, headers=auth()))
    assert body["name"] == "big"
    assert ok(client.get("/api/v1/pools/big", headers=auth()))["slots"] == 7
    problem_of(client.patch("/api/v1/pools/default_pool", json={"name": "other", "slots": 1}, headers=auth()), 400)
    assert problem_of(client.delete("/api/v1/pools/default_pool", headers=auth()), 400)["detail"] == \
        "Default Pool can't be deleted"
    assert client.delete("/api/v1/pools/big", headers=auth()).status_code == 204
    problem_of(client.get("/api/v1/pools/big", headers=auth()), 404)


def test_pool_counts_running_tasks(world: Settings, client: Any, app: Any) -> None:
    from sqlalchemy import update

    from scheduler.db.engine import session_scope
    from scheduler.db.models import TaskInstance

    with session_scope(app.extensions["updraft_engine"]) as session:
        session.execute(update(TaskInstance).where(TaskInstance.task_id == "extract").values(state="running"))
        session.execute(update(TaskInstance).where(TaskInstance.task_id == "load").values(state="queued"))
    pool = ok(client.get("/api/v1/pools/default_pool", headers=auth()))
    assert (pool["running_slots"], pool["queued_slots"], pool["occupied_slots"], pool["open_slots"]) == (1, 1, 2, 126)


# --- auth on every endpoint -------------------------------------------------------------------------

READS = [
    "/api/v1/dags", "/api/v1/dags/etl", "/api/v1/dags/etl/details", "/api/v1/dags/etl/tasks",
    "/api/v1/dags/etl/tasks/extract", "/api/v1/dags/etl/dagRuns", "/api/v1/dags/etl/dagRuns/run1",
    "/api/v1/dags/etl/dagRuns/run1/taskInstances", "/api/v1/dags/etl/dagRuns/run1/taskInstances/extract",
    "/api/v1/dags/etl/dagRuns/run1/taskInstances/extract/logs/1", "/api/v1/importErrors", "/api/v1/variables",
    "/api/v1/variables/k", "/api/v1/pools", "/api/v1/pools/default_pool",
]
EDITS = [
    ("PATCH", "/api/v1/dags/etl", {"is_paused": False}),
    ("POST", "/api/v1/dags/etl/dagRuns", {}),
    ("PATCH", "/api/v1/dags/etl/dagRuns/run1", {"state": "success"}),
    ("DELETE", "/api/v1/dags/etl/dagRuns/run1", None),
    ("POST", "/api/v1/dags/etl/dagRuns/run1/clear", {"dry_run": False}),
    ("PATCH", "/api/v1/dags/etl/dagRuns/run1/taskInstances/extract", {"new_state": "success", "dry_run": False}),
    ("POST", "/api/v1/dags/etl/clearTaskInstances", {"dry_run": False}),
    ("POST", "/api/v1/variables", {"key": "k2", "value": "v"}),
    ("PATCH", "/api/v1/variables/k", {"key": "k", "value": "v"}),
    ("DELETE", "/api/v1/variables/k", None),
    ("POST", "/api/v1/pools", {"name": "p", "slots": 1}),
    ("PATCH", "/api/v1/pools/default_pool", {"name": "default_pool", "slots": 1}),
    ("DELETE", "/api/v1/pools/default_pool", None),
]


def test_every_endpoint_needs_credentials(world: Settings, client: Any) -> None:
    problem_of(client.get(READS[0], headers=auth(("admin", "wrong-password"))), 401)
    for url in READS:
        problem_of(client.get(url), 401)
    for method, url, body in EDITS:
        problem_of(client.open(url, method=method, json=body), 401)


def test_viewer_reads_but_may_not_edit(world: Settings, client: Any) -> None:
    ok(client.post("/api/v1/variables", json={"key": "k", "value": "v"}, headers=auth()))
    for url in READS:
        assert client.get(url, headers=auth(VIEWER)).status_code == 200, url
    for method, url, body in EDITS:
        problem_of(client.open(url, method=method, json=body, headers=auth(VIEWER)), 403)
    # Nothing changed.
    assert ok(client.get("/api/v1/dags/etl", headers=auth()))["is_paused"] is True
    assert ok(client.get("/api/v1/dags/etl/dagRuns", headers=auth()))["total_entries"] == 1
    assert ok(client.get("/api/v1/variables/k", headers=auth()))["value"] == "v"


def test_audit_log_records_changes(world: Settings, client: Any, app: Any) -> None:
    from sqlalchemy import select

    from scheduler.db.engine import session_scope
    from scheduler.db.models import Log

    ok(client.patch("/api/v1/dags/etl", json={"is_paused": True}, headers=auth(("op", PASSWORD))))
    with session_scope(app.extensions["updraft_engine"], readonly=True) as session:
        rows = [(r.event, r.owner, r.dag_id) for r in session.scalars(select(Log))]
    assert ("api.dag.pause", "op", "etl") in rows


def test_unknown_route_is_problem_json(world: Settings, client: Any) -> None:
    problem_of(client.get("/api/v1/nothing-here", headers=auth()), 404)
    problem_of(client.put("/api/v1/dags/etl", json={}, headers=auth()), 405)


def test_json_not_html(world: Settings, client: Any) -> None:
    response = client.get("/api/v1/dags/etl", headers=auth())
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert json.loads(response.get_data(as_text=True))["description"].startswith("<script>")


def test_log_path_is_under_the_log_folder(world: Settings) -> None:
    from scheduler.task_logs import log_path

    path = log_path(world.log_folder, "etl", "..", "..", -1, 1)
    assert Path(world.log_folder) in path.parents
