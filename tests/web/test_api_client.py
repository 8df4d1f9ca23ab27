"""The official ``apache-airflow-client`` (2.10.0) against a live ``updraft webserver`` (gunicorn, one worker).

Covers, through the client: list and get DAGs and their tasks, pause and unpause (PATCH with
``update_mask=is_paused``), trigger a run with conf, read runs and their task instances, read a log,
and the bulk endpoints (``patch_dags``, ``get_dag_runs_batch``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import Settings
from tests.web.test_api_resources import PASSWORD, build_world
from tests.web.test_server import cli_env, free_port, wait_until_serving

client_lib = pytest.importorskip("airflow_client.client")


@pytest.fixture
def server_url(web_settings: Settings, make_user: Any, tmp_path: Path) -> Iterator[str]:
    """``updraft webserver --port <free> --workers 1`` on the fixture's home; yields its API base URL."""
    make_user("admin", "Admin", PASSWORD)
    build_world(web_settings)
    port = free_port()
    with (tmp_path / "web.out").open("w") as out, (tmp_path / "web.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "webserver", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=err, env=cli_env(web_settings.home), cwd=tmp_path, stdin=subprocess.DEVNULL,
        )
    try:
        status, _, _ = wait_until_serving(f"http://127.0.0.1:{port}/api/v1/health", proc)
        assert status == 200
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_official_client_against_a_live_webserver(server_url: str) -> None:
    from airflow_client.client.api import dag_api, dag_run_api, task_instance_api
    from airflow_client.client.model.dag import DAG
    from airflow_client.client.model.dag_run import DAGRun

    configuration = client_lib.Configuration(host=server_url, username="admin", password=PASSWORD)
    with client_lib.ApiClient(configuration) as api_client:
        dags = dag_api.DAGApi(api_client)
        listed = dags.get_dags()
        assert [d.dag_id for d in listed.dags] == ["etl", "manual"]
        assert listed.total_entries == 2
        etl = dags.get_dag("etl")
        assert etl.schedule_interval.value == "0 6 * * *"
        assert sorted(t.name for t in etl.tags) == ["daily", "etl"]
        assert etl.is_paused is True  # paused at creation

        # Unpause, then pause again: each PATCH answers the DAG and a GET sees the change.
        assert dags.patch_dag("etl", DAG(is_paused=False), update_mask=["is_paused"]).is_paused is False
        assert dags.get_dag("etl").is_paused is False
        assert dags.patch_dag("etl", DAG(is_paused=True), update_mask=["is_paused"]).is_paused is True
        assert dags.get_dag("etl").is_paused is True
        assert [d.dag_id for d in dags.get_dags(paused=True).dags] == ["etl", "manual"]

        tasks = dags.get_tasks("etl")
        assert [t.task_id for t in tasks.tasks] == ["extract", "load"]

        runs = dag_run_api.DAGRunApi(api_client)
        created = runs.post_dag_run("etl", DAGRun(dag_run_id="from-client", conf={"n": 3, "who": "client"}))
        assert created.dag_run_id == "from-client" and created.conf == {"n": 3, "who": "client"}
        assert str(created.state) == "queued"
        read_back = runs.get_dag_run("etl", "from-client")
        assert read_back.conf == {"n": 3, "who": "client"} and str(read_back.state) == "queued"
        listed_runs = runs.get_dag_runs("etl")
        assert sorted(r.dag_run_id for r in listed_runs.dag_runs) == ["from-client", "run1"]
        with pytest.raises(client_lib.ApiException) as conflict:
            runs.post_dag_run("etl", DAGRun(dag_run_id="from-client"))
        assert conflict.value.status == 409

        tis = task_instance_api.TaskInstanceApi(api_client)
        run1 = runs.get_dag_run("etl", "run1")
        assert str(run1.state) == "running" and run1.conf == {"n": 2}
        instances = tis.get_task_instances("etl", "run1")
        assert [(t.task_id, str(t.state)) for t in instances.task_instances] == [
            ("extract", "failed"), ("load", "upstream_failed")]
        extract = tis.get_task_instance("etl", "run1", "extract")
        assert extract.try_number == 1 and extract.duration == 1.5

        # build_world wrote the log of extract's first try where the task runner puts it.
        log = tis.get_log("etl", "run1", "extract", 1, full_content=True)
        assert log.content == "line one\n<b>line two</b>\n"

        # The bulk endpoints: unpause every DAG by pattern, then list runs of several DAGs in one request.
        from airflow_client.client.model.list_dag_runs_form import ListDagRunsForm

        unpaused = dags.patch_dags("~", DAG(is_paused=False), update_mask=["is_paused"])
        assert [(d.dag_id, d.is_paused) for d in unpaused.dags] == [("etl", False), ("manual", False)]
        assert unpaused.total_entries == 2
        batch = runs.get_dag_runs_batch(ListDagRunsForm(dag_ids=["etl", "manual"], states=["queued"],
                                                        order_by="dag_run_id", page_limit=10))
        assert [(r.dag_id, r.dag_run_id) for r in batch.dag_runs] == [("etl", "from-client")]
        assert batch.total_entries == 1

        with pytest.raises(client_lib.ApiException) as missing:
            dags.get_dag("nope")
        assert missing.value.status == 404
