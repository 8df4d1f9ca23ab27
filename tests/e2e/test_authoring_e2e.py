"""Airflow-style DAG files, unchanged, run by the real `updraft scheduler` (LocalExecutor, real processes).

The corpus's cross-DAG pair (a controller that triggers a target with conf and waits for
it in its try, then an ExternalTaskSensor on the target's task), its mapping DAG and its
task-group DAG; the test polls the database until the runs finish (never sleeps).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.db.engine import session_scope
from scheduler.db.models import DagRun, TaskInstance
from tests.e2e.test_execution_e2e import LOGICAL, RUN_DEADLINE_S, Home

CORPUS = Path(__file__).resolve().parents[1] / "airflow_corpus"


@pytest.fixture
def corpus_home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "home")
    try:
        yield h
    finally:
        h.close()


def test_corpus_cross_dag_mapping_and_groups_under_the_real_scheduler(corpus_home: Home) -> None:
    home = corpus_home
    for name in ("corpus_cross_dag.py", "corpus_mapping.py", "corpus_task_groups.py"):
        shutil.copy(CORPUS / name, home.dags / name)
    home.cli("dags", "unpause", "corpus_trigger_target")
    for dag_id in ("corpus_controller", "corpus_mapping", "corpus_task_groups"):
        home.trigger(dag_id)
    sched = home.start_scheduler()
    for dag_id in ("corpus_controller", "corpus_mapping", "corpus_task_groups"):
        assert home.wait_run_finished(dag_id, sched, deadline_s=2 * RUN_DEADLINE_S) == "success", home.states(dag_id)

    child_id = f"triggered_{LOGICAL:%Y%m%d}"
    with session_scope(home.engine, readonly=True) as session:
        child = session.scalar(select(DagRun).where(DagRun.dag_id == "corpus_trigger_target"))
        assert child is not None
        assert (child.run_id, str(child.state), child.conf) == (child_id, "success",
                                                                 {"message": "hello from corpus_controller"})
        assert child.logical_date == LOGICAL
        mapped = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
            .where(TaskInstance.dag_id == "corpus_mapping", TaskInstance.map_index >= 0)
            .order_by(TaskInstance.task_id, TaskInstance.map_index)
        ).all()
    assert [(t, i, str(s)) for t, i, s in mapped] == [
        ("add_one", 0, "success"), ("add_one", 1, "success"), ("add_one", 2, "success"),
        ("bash_mapped", 0, "success"), ("bash_mapped", 1, "success"),
        ("combine", 0, "success"), ("combine", 1, "success"),
        ("multiply", 0, "success"), ("multiply", 1, "success"),
    ]
    assert home.states("corpus_controller") == {"trigger": "success", "wait_for_target": "success",
                                                "latest_only": "success", "notify": "success"}
    groups = home.states("corpus_task_groups")
    assert groups["section_2.inner_section_2.task_4"] == "success" and groups["numbers.second"] == "success"
    # a mapped instance's log lives under map_index=I
    log = home.logs / "dag_id=corpus_mapping" / f"run_id=manual__{LOGICAL.isoformat()}" / "task_id=bash_mapped"
    assert "two" in (log / "map_index=1" / "attempt=1.log").read_text()


def test_updraft_dags_test_runs_the_corpus_controller_and_its_target_in_process(corpus_home: Home) -> None:
    home = corpus_home
    shutil.copy(CORPUS / "corpus_cross_dag.py", home.dags / "corpus_cross_dag.py")
    shutil.copy(CORPUS / "corpus_mapping.py", home.dags / "corpus_mapping.py")
    result = home.cli("dags", "test", "corpus_controller", "2024-03-05")
    assert "received 'hello from corpus_controller'" in result.stdout
    assert "Dag run manual__2024-03-05T00:00:00+00:00 finished with state success" in result.stdout
    result = home.cli("dags", "test", "corpus_mapping", "2024-03-05")
    assert "add_one[2]" in result.stdout and "Total was 9" in result.stdout
    # nothing was recorded: dags test runs in memory
    with session_scope(home.engine, readonly=True) as session:
        assert session.scalar(select(DagRun.id)) is None
