"""An unwritable log folder (its path is a regular file, which stops root too): each try fails with a clear message,
the scheduler loop goes on, a later run with a usable folder succeeds, and the web server shows the failed tries
without a server error."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.db import migrate
from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import Log
from tests.backend import home_database_url
from tests.scheduler.test_task_scenarios import Env

DAY2 = datetime(2024, 1, 2, tzinfo=UTC)
AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:correct-horse").decode(), "Accept": "application/json"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    url = home_database_url(tmp_path)
    engine = make_engine(url)
    migrate.upgrade(engine)
    scenario = Env(tmp_path, engine, url)
    yield scenario
    scenario.close()
    engine.dispose()


def test_tries_fail_clearly_and_everything_keeps_going(env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("the log folder's path is taken by this file\n")
    env.reconfigure(logging__base_log_folder=str(blocker))
    env.dag("""
        a = PythonOperator(task_id="a", python_callable=ok)
        b = PythonOperator(task_id="b", python_callable=ok)
        a >> b
    """)
    env.trigger("r1")
    env.step()
    assert env.states("r1") == {"a": "failed", "b": "upstream_failed"}
    assert env.run_state("r1") == "failed"
    with session_scope(env.engine, readonly=True) as session:
        reasons = [row.extra or "" for row in session.scalars(select(Log).where(Log.task_id == "a"))]
    assert any(f"cannot write the task log {blocker}/dag_id=scn/run_id=r1/task_id=a/attempt=1.log: Not a directory"
               in reason for reason in reasons), reasons

    # The same scheduler process, the folder usable again: the next run succeeds.
    env.reconfigure()
    env.trigger("r2", logical_date=DAY2)
    env.step()
    assert env.states("r2") == {"a": "success", "b": "success"}

    # The web server, still configured with the blocked folder, shows the failed try without a server error.
    from webserver import create_app
    from webserver.users import create_user

    app = create_app(env.settings.with_values(logging__base_log_folder=str(blocker)))
    try:
        with session_scope(app.extensions["updraft_engine"]) as session:
            create_user(session, username="admin", password="correct-horse", role="Admin")
        client = app.test_client()
        api_log = client.get("/api/v1/dags/scn/dagRuns/r1/taskInstances/a/logs/1", headers=AUTH)
        assert api_log.status_code == 404 and api_log.mimetype == "application/problem+json"
        assert "has no log" in api_log.get_json()["detail"]
        huge = client.get("/api/v1/dags/scn/dagRuns/r2/taskInstances/a/logs/1?token=" + "9" * 40, headers=AUTH)
        assert huge.status_code == 400 and "is not a continuation token" in huge.get_json()["detail"]
        page = client.get("/dags/scn/runs/r1/tasks/a", headers=AUTH)
        assert page.status_code == 200
        chunk = client.get("/dags/scn/runs/r1/tasks/a/log.json?try_number=1", headers=AUTH)
        assert chunk.status_code < 500
        events = client.get("/api/v1/eventLogs?task_id=a&run_id=r1", headers=AUTH).get_json()
        assert any("cannot write the task log" in (e["extra"] or "") for e in events["event_logs"])
    finally:
        app.extensions["updraft_engine"].dispose()

