"""Task groups, dynamic task mapping, cross-DAG operators and Airflow imports through the real scheduler.

``Scheduler.run_once(now)`` with an InlineExecutor (the task runner in forked children),
on SQLite and PostgreSQL, as in ``test_task_scenarios``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from scheduler.clock import utcnow
from scheduler.db import store
from scheduler.db.engine import session_scope
from scheduler.db.models import DagRun, Log, TaskInstance, XCom
from tests.scheduler.test_task_scenarios import RUN, Env

DAG_ID = "scn"


@pytest.fixture
def env(tmp_path: Path, db_engine: Engine, db_url: str) -> Iterator[Env]:
    e = Env(tmp_path, db_engine, db_url)
    try:
        yield e
    finally:
        e.close()


def mapped_rows(e: Env, task_id: str, run_id: str = RUN, dag_id: str = DAG_ID) -> list[tuple[int, str, int]]:
    with session_scope(e.engine, readonly=True) as session:
        rows = session.execute(
            select(TaskInstance.map_index, TaskInstance.state, TaskInstance.try_number)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id)
            .order_by(TaskInstance.map_index)
        )
        return [(i, str(s), n) for i, s, n in rows]


def mapped_xcoms(e: Env, task_id: str, run_id: str = RUN, dag_id: str = DAG_ID) -> list[object]:
    with session_scope(e.engine, readonly=True) as session:
        rows = session.execute(
            select(XCom.value).where(XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id,
                                     XCom.key == "return_value", XCom.map_index >= 0).order_by(XCom.map_index)
        )
        return [r.value for r in rows]


# --- dynamic task mapping --------------------------------------------------------------------------


def test_mapping_over_an_upstream_list_one_instance_per_element_and_results_in_order(env: Env) -> None:
    env.dag('''
        @task
        def numbers():
            return [3, 1, 2]

        @task
        def double(x, factor):
            return x * factor

        @task
        def total(values):
            marker("total", json.dumps(values))
            return sum(values)

        total(double.partial(factor=10).expand(x=numbers()))
        BashOperator.partial(task_id="echo").expand(bash_command=["echo a", "echo b"])
    ''', prelude="import json")
    env.trigger()
    env.step()
    assert env.run_state() == "success"
    assert mapped_rows(env, "double") == [(0, "success", 1), (1, "success", 1), (2, "success", 1)]
    assert mapped_xcoms(env, "double") == [30, 10, 20]
    assert env.marker("total") == "[30, 10, 20]\n"
    assert env.xcom("total") == 60
    assert mapped_rows(env, "echo") == [(0, "success", 1), (1, "success", 1)]
    assert mapped_xcoms(env, "echo") == ["a", "b"]


def test_mapping_over_nothing_skips_and_retries_apply_per_instance(env: Env) -> None:
    env.dag('''
        @task
        def nothing():
            return []

        @task
        def each(x):
            return x

        @task(retries=1, retry_delay=timedelta(seconds=0))
        def flaky(x):
            if x == 2 and count("flaky") == 1:
                raise ValueError("first try of element 2 fails")
            return x

        each.expand(x=nothing())
        flaky.expand(x=[1, 2])
    ''')
    env.trigger()
    env.step()
    env.step(utcnow() + timedelta(seconds=5))
    assert mapped_rows(env, "each") == [(-1, "skipped", 0)]
    assert mapped_rows(env, "flaky") == [(0, "success", 1), (1, "success", 2)]
    assert env.run_state() == "success"


def test_mapping_over_a_non_list_or_too_long_a_list_fails_with_the_reason(env: Env) -> None:
    env.reconfigure(core__max_map_length="3")
    env.dag('''
        @task
        def one():
            return 5

        @task
        def each(x):
            return x

        each.override(task_id="not_a_list").expand(x=one())
        each.override(task_id="too_long").expand(x=[1, 2, 3, 4])
    ''')
    env.trigger()
    env.step()
    assert mapped_rows(env, "not_a_list") == [(-1, "failed", 0)]
    assert mapped_rows(env, "too_long") == [(-1, "failed", 0)]
    assert env.run_state() == "failed"
    with session_scope(env.engine, readonly=True) as session:
        reasons = dict(session.execute(select(Log.task_id, Log.extra).where(Log.dag_id == DAG_ID)).all())
    assert "needs a list or a dict to map over, got int" in reasons["not_a_list"]
    assert "4 elements to map over is more than the allowed 3" in reasons["too_long"]
    assert "max_map_length" in reasons["too_long"]


# --- task groups --------------------------------------------------------------------------------------


def test_task_groups_run_with_prefixed_ids_group_default_args_and_group_wiring(env: Env) -> None:
    env.dag('''
        from scheduler.authoring.taskgroup import TaskGroup
        start = PythonOperator(task_id="start", python_callable=lambda: marker("order", "start"))
        with TaskGroup("grp", default_args={"retries": 3}) as grp:
            a = PythonOperator(task_id="a", python_callable=lambda: marker("order", "grp.a"))
            b = PythonOperator(task_id="b", python_callable=lambda: marker("order", "grp.b"))
            a >> b
        end = PythonOperator(task_id="end", python_callable=lambda: marker("order", "end"))
        start >> grp >> end
    ''')
    env.trigger()
    env.step()
    assert env.states() == {"start": "success", "grp.a": "success", "grp.b": "success", "end": "success"}
    assert env.marker("order") == "start\ngrp.a\ngrp.b\nend\n"
    assert env.ti("grp.a").max_tries == 3 and env.ti("start").max_tries == 0


# --- cross-DAG --------------------------------------------------------------------------------------


def test_trigger_dag_run_creates_a_manual_run_with_conf_and_an_external_sensor_waits_for_it(env: Env) -> None:
    env.dag('''
        @task
        def receive(**context):
            marker("received", context["dag_run"].conf["message"])
            return context["dag_run"].conf["message"]

        receive()
    ''', dag_id="target")
    env.dag('''
        from scheduler.authoring.cross_dag import ExternalTaskSensor, LatestOnlyOperator, TriggerDagRunOperator
        trigger = TriggerDagRunOperator(task_id="trigger", trigger_dag_id="target", trigger_run_id="child_{{ ds }}",
                                        logical_date="{{ logical_date.isoformat() }}",
                                        conf={"message": "hi from {{ dag.dag_id }}"})
        wait = ExternalTaskSensor(task_id="wait", external_dag_id="target", external_task_id="receive",
                                  mode="reschedule", poke_interval=1, timeout=600)
        latest = LatestOnlyOperator(task_id="latest")
        after = EmptyOperator(task_id="after")
        trigger >> wait >> latest >> after
    ''', dag_id="ctl")
    env.trigger(dag_id="ctl")
    env.step()
    assert env.states(dag_id="ctl")["trigger"] == "success"
    assert env.xcom("trigger", key="trigger_run_id", dag_id="ctl") == "child_2024-01-01"
    with session_scope(env.engine, readonly=True) as session:
        child = session.scalar(select(DagRun).where(DagRun.dag_id == "target"))
        assert child is not None
        assert (child.run_id, str(child.run_type), child.conf) == ("child_2024-01-01", "manual",
                                                                    {"message": "hi from ctl"})
        assert child.external_trigger
    assert env.run_state("child_2024-01-01", dag_id="target") == "success"
    assert env.marker("received") == "hi from ctl\n"
    # the sensor found the target's task done at the same logical date (now or at its next poke)
    env.step(utcnow() + timedelta(seconds=5))
    assert env.states(dag_id="ctl") == {"trigger": "success", "wait": "success", "latest": "success",
                                        "after": "success"}
    assert env.run_state(dag_id="ctl") == "success"


def test_trigger_dag_run_of_an_unknown_dag_fails_the_task_with_the_reason(env: Env) -> None:
    env.dag('''
        from scheduler.authoring.cross_dag import TriggerDagRunOperator
        TriggerDagRunOperator(task_id="trigger", trigger_dag_id="no_such_dag", retries=2)
    ''')
    env.trigger()
    env.step()
    assert env.states() == {"trigger": "failed"}  # no retries: the DAG will not appear by retrying
    assert "DAG 'no_such_dag' to trigger does not exist" in env.log_text("trigger", 1)


# --- the Airflow-style corpus, unchanged, through the scheduler ---------------------------------------

CORPUS = Path(__file__).resolve().parents[1] / "airflow_corpus"


@pytest.fixture
def sqlite_env(tmp_path: Path, sqlite_url: str) -> Iterator[Env]:
    """An Env on SQLite only (the corpus is large; PostgreSQL runs the scenarios above)."""
    from scheduler.db import migrate
    from scheduler.db.engine import make_engine

    engine = make_engine(sqlite_url)
    migrate.upgrade(engine)
    e = Env(tmp_path, engine, sqlite_url)
    try:
        yield e
    finally:
        e.close()
        engine.dispose()


def test_the_airflow_corpus_runs_unchanged_through_the_scheduler(sqlite_env: Env) -> None:
    e = sqlite_env
    # corpus_cross_dag.py waits inside a try for another run: the e2e test runs it with real processes
    files = [p for p in sorted(CORPUS.glob("corpus_*.py")) if p.name != "corpus_cross_dag.py"]
    for path in files:
        shutil.copy(path, e.folder / path.name)
    e.scheduler.sync_dags(utcnow())
    with session_scope(e.engine) as session:
        errors = {err.filename: err.stack_trace for err in store.list_import_errors(session)}
        dag_ids = [d.dag_id for d in store.list_dags(session)]
        for dag_id in dag_ids:
            store.set_paused(session, dag_id, False)
    assert errors == {}
    assert len(dag_ids) == len(files) + 1  # corpus_assets.py defines two DAGs
    when = datetime(2024, 3, 5, 6, tzinfo=UTC)  # a Tuesday
    for dag_id in dag_ids:
        e.trigger("corpus", dag_id=dag_id, logical_date=when)
    e.step()
    assert {d: e.run_state("corpus", dag_id=d) for d in dag_ids} == dict.fromkeys(dag_ids, "success")
    assert mapped_xcoms(e, "add_one", "corpus", "corpus_mapping") == [2, 3, 4]
    assert e.xcom("sum_products", run_id="corpus", dag_id="corpus_mapping") == 90
    assert e.xcom("show", run_id="corpus", dag_id="corpus_task_groups") == 42
    assert e.xcom("echo", run_id="corpus", dag_id="corpus_airflow2_names") == "2024-03-05 2024-03-05"
    # the producer updated both datasets: the consumer got an asset-triggered run too
    assert runs_of(e, "corpus_assets_consumer") == [("manual", "success"), ("dataset_triggered", "success")]
    branching = e.states("corpus", dag_id="corpus_branching")
    assert (branching["weekday"], branching["weekend"], branching["join"]) == ("success", "skipped", "success")
    assert e.ti("section_1.task_2", "corpus", "corpus_task_groups").max_tries == 2


# --- assets ------------------------------------------------------------------------------------------


def asset_events(e: Env) -> list[tuple[str, str | None, str | None, int]]:
    from scheduler.db.models import Asset, AssetEvent

    with session_scope(e.engine, readonly=True) as session:
        rows = session.execute(
            select(Asset.uri, AssetEvent.source_dag_id, AssetEvent.source_task_id, AssetEvent.source_map_index)
            .join(Asset, Asset.id == AssetEvent.asset_id).order_by(AssetEvent.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def runs_of(e: Env, dag_id: str) -> list[tuple[str, str]]:
    with session_scope(e.engine, readonly=True) as session:
        rows = session.execute(select(DagRun.run_type, DagRun.state).where(DagRun.dag_id == dag_id)
                               .order_by(DagRun.id))
        return [(str(t), str(s)) for t, s in rows]


def test_a_dag_scheduled_on_assets_runs_once_all_of_them_were_updated(env: Env) -> None:
    prelude = "from scheduler.authoring.assets import Asset\nA = Asset('s3://bucket/a')\nB = Asset('s3://bucket/b')"
    env.dag('''
        @task(outlets=[A])
        def make_a():
            return "a"

        @task(outlets=[B])
        def make_b():
            return "b"

        make_a()
        make_b()
    ''', dag_id="producer", prelude=prelude)
    env.dag('''
        @task
        def consume(**context):
            marker("consumed", context["dag_run"].run_type)
        consume()
    ''', dag_id="consumer", prelude=prelude, schedule="[A, B]")
    env.dag('''
        EmptyOperator(task_id="noop")
    ''', dag_id="either", prelude=prelude, schedule="A | B")
    env.trigger(dag_id="producer")
    env.step()
    assert env.run_state(dag_id="producer") == "success"
    assert asset_events(env) == [("s3://bucket/a", "producer", "make_a", -1), ("s3://bucket/b", "producer", "make_b", -1)]
    env.step()
    assert runs_of(env, "consumer") == [("dataset_triggered", "success")]
    assert runs_of(env, "either") == [("dataset_triggered", "success")]
    assert env.marker("consumed") == "dataset_triggered\n"
    # the queue was consumed: nothing more runs until the assets are updated again
    env.step()
    assert len(runs_of(env, "consumer")) == 1
    env.trigger("r2", dag_id="producer", logical_date=datetime(2024, 1, 2, tzinfo=UTC))
    env.step()
    env.step()
    assert runs_of(env, "consumer") == [("dataset_triggered", "success")] * 2
