"""The official ``apache-airflow-client`` (2.10.0) against a real server: list, get, trigger, runs, TIs, logs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.config import Settings
from tests.web.test_api_resources import PASSWORD, build_world

client_lib = pytest.importorskip("airflow_client.client")


@pytest.fixture
def server_url(app: Any, web_settings: Settings, make_user: Any) -> Iterator[str]:
    from werkzeug.serving import make_server

    make_user("admin", "Admin", PASSWORD)
    build_world(web_settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api/v1"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_official_client(server_url: str) -> None:
    from airflow_client.client.api import dag_api, dag_run_api, task_instance_api
    from airflow_client.client.model.dag import DAG
    from airflow_client.client.model.dag_run import DAGRun

    configuration = client_lib.Configuration(host=server_url, username="admin", password=PASSWORD)
    with client_lib.ApiClient(configuration) as api_client:
        dags = dag_api.DAGApi(api_client)
        listed = dags.get_dags()
        assert [d.dag_id for d in listed.dags] == ["etl", "manual"]
        etl = dags.get_dag("etl")
        assert etl.schedule_interval.value == "0 6 * * *" and [t.name for t in etl.tags] == ["daily", "etl"] or \
            [t.name for t in etl.tags] == ["etl", "daily"]
        assert dags.patch_dag("etl", DAG(is_paused=False), update_mask=["is_paused"]).is_paused is False
        tasks = dags.get_tasks("etl")
        assert [t.task_id for t in tasks.tasks] == ["extract", "load"]

        runs = dag_run_api.DAGRunApi(api_client)
        created = runs.post_dag_run("etl", DAGRun(dag_run_id="from-client", conf={"n": 3}))
        assert created.dag_run_id == "from-client" and created.conf == {"n": 3}
        assert str(created.state) == "queued"
        listed_runs = runs.get_dag_runs("etl")
        assert sorted(r.dag_run_id for r in listed_runs.dag_runs) == ["from-client", "run1"]
        with pytest.raises(client_lib.ApiException) as conflict:
            runs.post_dag_run("etl", DAGRun(dag_run_id="from-client"))
        assert conflict.value.status == 409

        tis = task_instance_api.TaskInstanceApi(api_client)
        instances = tis.get_task_instances("etl", "run1")
        assert [(t.task_id, str(t.state)) for t in instances.task_instances] == [
            ("extract", "failed"), ("load", "upstream_failed")]
        log = tis.get_log("etl", "run1", "extract", 1, full_content=True)
        assert log.content == "line one\n<b>line two</b>\n"
        with pytest.raises(client_lib.ApiException) as missing:
            dags.get_dag("nope")
        assert missing.value.status == 404
