"""The grid's per-process caches (webserver/cache.py): finished runs' cells and decoded serialized DAGs.

Each test proves both halves: the cache is used (its hit count moves, or a write that bypasses the
documented writers is not seen), and every documented change shows on the very next request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from scheduler.config import Settings
from tests.web.test_ui_runs import PASSWORD, build_world, cell, csrf_from, engine_of, log_in, page


@pytest.fixture
def op(client: FlaskClient, app: Flask, web_settings: Settings, make_user: Callable[..., Any]) -> FlaskClient:
    make_user("op", "Op", PASSWORD)
    build_world(app, web_settings)  # etl: run1 failed (finished), run2 running
    log_in(client, "op")
    return client


def grid(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/dags/etl/grid_data.json")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()  # type: ignore[no-any-return]


def state_of(document: dict[str, Any], run_id: str, task_id: str) -> str | None:
    found = cell(document, run_id, task_id)
    return None if found is None else document["states"][found[0]]


def columns_cache(app: Flask) -> Any:
    from webserver.cache import grid_columns

    with app.app_context():
        return grid_columns()


def set_ti(app: Flask, run_id: str, task_id: str, **values: Any) -> None:
    """Write a task instance the way a task runner does: the row only, the run untouched."""
    from scheduler.db.engine import session_scope
    from scheduler.db.models import TaskInstance

    with session_scope(engine_of(app)) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == "etl", TaskInstance.run_id == run_id, TaskInstance.task_id == task_id,
        ).values(**values))


def test_a_finished_runs_cells_are_cached_and_a_running_runs_are_read_each_time(op: FlaskClient, app: Flask) -> None:
    first = grid(op)
    cache = columns_cache(app)
    assert len(cache) == 1 and cache.hits == 0  # run1 (failed) only: run2 is running
    assert grid(op) == first and cache.hits == 1
    assert grid_page_document(op) == first and cache.hits == 2  # the page and its JSON share the cache

    # A task finishing in the running run shows at once (never cached) ...
    set_ti(app, "run2", "extract", state="success", try_number=1, duration=4.0)
    after = grid(op)
    assert state_of(after, "run2", "extract") == "success" and cell(after, "run2", "extract")[1:] == [1, 4.0]
    # ... while a write to a finished run that bypasses clear / mark is not seen: the cache is in use.
    set_ti(app, "run1", "report", state="failed")
    assert state_of(grid(op), "run1", "report") == "success"


def grid_page_document(client: FlaskClient) -> dict[str, Any]:
    from tests.web.test_ui_runs import grid_document

    return grid_document(page(client, "/dags/etl"))


def test_marking_a_task_instance_of_a_finished_run_shows_on_the_next_request(op: FlaskClient, app: Flask) -> None:
    assert state_of(grid(op), "run1", "transform") == "upstream_failed"
    assert state_of(grid(op), "run1", "transform") == "upstream_failed" and columns_cache(app).hits == 1
    token = csrf_from(page(op, "/dags/etl/runs/run1/tasks/transform/mark/success"))
    assert op.post("/dags/etl/runs/run1/tasks/transform/mark/success", data={"csrf_token": token}).status_code == 302
    document = grid(op)
    assert state_of(document, "run1", "transform") == "success"
    assert state_of(document, "run1", "extract") == "failed"  # the rest of the run as it was


def test_clearing_a_finished_run_shows_on_the_next_request(op: FlaskClient, app: Flask) -> None:
    before = grid(op)
    assert state_of(before, "run1", "extract") == "failed" and before["runs"][0]["state"] == "failed"
    grid(op)
    url = "/dags/etl/runs/run1/tasks/extract/clear?downstream=1"
    token = csrf_from(page(op, url))
    assert op.post(url, data={"csrf_token": token, "downstream": "1"}).status_code == 302
    after = grid(op)
    assert after["runs"][0]["state"] == "queued" and after["active"] is True
    assert all(state_of(after, "run1", t) == "none" for t in ("extract", "transform", "load", "report"))


def test_marking_a_run_and_the_scheduler_finishing_one_show_on_the_next_request(op: FlaskClient, app: Flask) -> None:
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops
    from scheduler.db.engine import session_scope
    from scheduler.db.models import DagRun

    grid(op)
    grid(op)
    # The user marks the finished run1 success (its instances are all finished: only the run changes).
    with session_scope(engine_of(app)) as session:
        ti_ops.mark_dag_run(session, "etl", "run1", "success", now=utcnow())
    assert grid(op)["runs"][0]["state"] == "success"

    # run2 finishes as the scheduler ends a run: its instances first (runner writes), then the run row.
    for task_id in ("extract", "transform", "load", "report"):
        set_ti(app, "run2", task_id, state="success", try_number=1, duration=1.0)
    with session_scope(engine_of(app)) as session:
        session.execute(update(DagRun).where(DagRun.dag_id == "etl", DagRun.run_id == "run2")
                        .values(state="success", end_date=utcnow(), updated_at=utcnow()))
    document = grid(op)
    assert document["runs"][1]["state"] == "success" and document["active"] is False
    assert all(state_of(document, "run2", t) == "success" for t in ("extract", "transform", "load", "report"))
    hits = columns_cache(app).hits
    assert grid(op) == document and columns_cache(app).hits == hits + 2  # both finished runs now cached


def test_a_finished_run_with_unfinished_cells_is_never_cached(op: FlaskClient, app: Flask) -> None:
    set_ti(app, "run1", "load", state="none")  # an oddity: a failed run with an instance not yet decided
    assert state_of(grid(op), "run1", "load") == "none"
    assert len(columns_cache(app)) == 0
    set_ti(app, "run1", "load", state="skipped")
    assert state_of(grid(op), "run1", "load") == "skipped"


def test_a_reparsed_dag_shows_its_new_tasks_on_the_next_request(
    op: FlaskClient, app: Flask, web_settings: Settings,
) -> None:
    from scheduler.clock import utcnow
    from scheduler.dag_processing import sync_dag_folder
    from tests.web.test_ui_runs import ETL_DAG

    assert "notify" not in [t["id"] for t in grid(op)["tasks"]]
    assert "notify" not in page(op, "/dags/etl/graph")
    path = web_settings.dags_folder / "etl.py"
    path.write_text(ETL_DAG + '    notify = EmptyOperator(task_id="notify")\n    load >> notify\n')
    assert sync_dag_folder(engine_of(app), web_settings, now=utcnow()).errors == 0
    tasks = [t["id"] for t in grid(op)["tasks"]]
    assert tasks.index("notify") > tasks.index("load")
    assert 'data-node="t:notify"' in page(op, "/dags/etl/graph")


def test_lru_cache_keeps_to_its_budget_dropping_the_least_recently_used() -> None:
    from webserver.cache import LruCache

    cache = LruCache(10)
    cache.put("a", 1, weight=4)
    cache.put("b", 2, weight=4)
    assert cache.get("a") == 1  # now b is the least recently used
    cache.put("c", 3, weight=4)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3 and cache.weight == 8
    cache.put("a", 5, weight=2)  # replacing an entry replaces its weight
    assert cache.weight == 6 and cache.get("a") == 5
    cache.put("huge", 0, weight=11)  # larger than the whole budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2
    with pytest.raises(ValueError, match="at least 1"):
        LruCache(0)
