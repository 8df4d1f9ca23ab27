"""serialize_dag -> JSON -> SerializedDAG keeps what the scheduler and webserver need."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler import DAG, BashOperator, EmptyOperator, Param, PythonOperator, TriggerRule, task
from scheduler.authoring import dag as dag_module
from scheduler.exceptions import CycleError
from scheduler.serialization import SerializedDAG, dag_hash, serialize_dag


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    dag_module.reset_created_dags()


def noop(**_: Any) -> None:
    return None


def on_fail(ctx: Any) -> None:
    return None


def build() -> DAG:
    with DAG(
        "etl",
        schedule=None,
        start_date=datetime(2024, 1, 1, 6),
        end_date=datetime(2025, 1, 1),
        timezone="Europe/Berlin",
        catchup=True,
        max_active_runs=2,
        max_active_tasks=8,
        dagrun_timeout=timedelta(hours=2),
        default_args={"retries": 2, "retry_delay": timedelta(minutes=5), "owner": "data"},
        params={"n": Param(5, type="integer", minimum=1, description="rows"), "free": Param(type="string")},
        tags=["etl", "daily"],
        description="nightly load",
        doc_md="# ETL",
        on_failure_callback=on_fail,
        is_paused_upon_creation=True,
    ) as d:
        extract = BashOperator(task_id="extract", bash_command="echo {{ ds }}", pool="io", pool_slots=2)
        transform = PythonOperator(
            task_id="transform",
            python_callable=noop,
            op_kwargs={"x": 1},
            execution_timeout=timedelta(minutes=10),
        )
        cleanup = EmptyOperator(task_id="cleanup", trigger_rule=TriggerRule.ALL_DONE, retries=0)

        @task(priority_weight=7)
        def report(value: Any) -> None:
            return None

        extract >> transform >> cleanup
        report(transform.output)
    return d


def round_trip(d: DAG) -> SerializedDAG:
    text = json.dumps(serialize_dag(d))
    return SerializedDAG.from_dict(json.loads(text))


def test_serialized_dag_is_json():
    data = serialize_dag(build())
    assert json.loads(json.dumps(data)) == data


def test_round_trip_keeps_dag_fields():
    s = round_trip(build())
    assert s.dag_id == "etl"
    assert s.timezone == ZoneInfo("Europe/Berlin")
    assert s.start_date == datetime(2024, 1, 1, 5, tzinfo=UTC)
    assert s.end_date == datetime(2024, 12, 31, 23, tzinfo=UTC)
    assert s.catchup is True
    assert s.max_active_runs == 2 and s.max_active_tasks == 8
    assert s.dagrun_timeout == timedelta(hours=2)
    assert s.data["tags"] == ["daily", "etl"]
    assert s.data["description"] == "nightly load"
    assert s.data["doc_md"] == "# ETL"
    assert s.data["is_paused_upon_creation"] is True
    assert s.data["has_on_failure_callback"] is True and s.data["has_on_success_callback"] is False
    assert s.data["owners"] == ["data"]
    assert s.fileloc.endswith("test_serialization.py")


def test_round_trip_keeps_tasks_edges_and_task_settings():
    s = round_trip(build())
    assert set(s.tasks) == {"extract", "transform", "cleanup", "report"}
    t = s.tasks
    assert t["extract"].downstream == {"transform"} and t["extract"].upstream == frozenset()
    assert t["transform"].upstream == {"extract"}
    assert t["transform"].downstream == {"cleanup", "report"}
    assert t["report"].upstream == {"transform"}
    assert t["cleanup"].trigger_rule == "all_done"
    assert t["extract"].trigger_rule == "all_success"
    assert t["extract"].retries == 2 and t["cleanup"].retries == 0
    assert t["extract"].pool == "io" and t["extract"].pool_slots == 2
    assert t["transform"].pool == "default_pool"
    assert t["report"].priority_weight == 7
    assert t["cleanup"].is_empty and not t["extract"].is_empty
    assert t["extract"].operator == "BashOperator"
    assert t["report"].operator == "@task"
    assert t["transform"].get("execution_timeout") == 600.0
    assert t["extract"].get("retry_delay") == 300.0
    assert t["extract"].get("templates") == {"bash_command": "echo {{ ds }}", "env": None, "cwd": None}


def test_round_trip_roots_leaves_and_order():
    s = round_trip(build())
    assert s.roots == ["extract"]
    assert sorted(s.leaves) == ["cleanup", "report"]
    assert s.task_order.index("extract") < s.task_order.index("transform") < s.task_order.index("cleanup")


def test_round_trip_keeps_params_with_schema_and_missing_defaults():
    params = round_trip(build()).params
    assert params["n"] == 5
    assert params.get_param("n").schema == {"type": "integer", "minimum": 1, "description": "rows"}
    assert params.get_param("n").description == "rows"
    assert not params.get_param("free").has_value
    assert params.resolve({"free": "x"}) == {"n": 5, "free": "x"}


def test_serialized_task_exposes_xcomarg_inputs_as_display_text():
    data = serialize_dag(build())
    report = next(t for t in data["tasks"] if t["task_id"] == "report")
    assert report["templates"]["op_args"] == ["XComArg('transform', key='return_value')"]


def test_serialize_refuses_a_dag_with_a_cycle():
    with DAG("cyc", schedule=None) as d:
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
        a >> b >> a
    with pytest.raises(CycleError):
        serialize_dag(d)


def test_dag_hash_is_stable_and_changes_with_the_dag():
    first = dag_hash(serialize_dag(build()))
    assert first == dag_hash(serialize_dag(build()))
    d = build()
    d.get_task("cleanup").retries = 4
    assert dag_hash(serialize_dag(d)) != first


def test_minimal_dag_round_trip():
    d = DAG("tiny", schedule=None)
    s = round_trip(d)
    assert s.tasks == {} and s.roots == [] and s.leaves == []
    assert s.start_date is None and s.end_date is None
    assert s.timezone is UTC
    assert s.max_active_runs is None and s.dagrun_timeout is None


def test_task_dates_are_stored_as_aware_utc_read_in_the_dags_timezone():
    with DAG(
        "tz", schedule=None, timezone="Europe/Berlin", default_args={"start_date": datetime(2024, 1, 1)}
    ) as d:
        EmptyOperator(task_id="a", end_date=datetime(2024, 7, 1, tzinfo=UTC))
    task_data = round_trip(d).tasks["a"].data
    assert task_data["start_date"] == "2023-12-31T23:00:00+00:00"
    assert task_data["end_date"] == "2024-07-01T00:00:00+00:00"
