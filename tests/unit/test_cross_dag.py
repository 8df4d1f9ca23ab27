"""TriggerDagRunOperator, ExternalTaskSensor and LatestOnlyOperator against the in-memory runs of ``dags test``."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from scheduler import DAG, EmptyOperator, task
from scheduler.authoring.cross_dag import ExternalTaskSensor, LatestOnlyOperator, TriggerDagRunOperator
from scheduler.authoring.taskgroup import TaskGroup
from scheduler.clock import utcnow
from scheduler.dagtest import MemoryDagRunsService, run_dag_in_process
from scheduler.exceptions import DagDefinitionError
from scheduler.runtime import MemoryXComStore, RuntimeDagRun, RuntimeTaskInstance
from scheduler.states import DagRunState

START = datetime(2024, 1, 1)
DAY = datetime(2024, 3, 5, 6, tzinfo=UTC)


def _service(current: DAG, others: dict[str, DAG]) -> MemoryDagRunsService:
    return MemoryDagRunsService(dag_loader=others.__getitem__, out=io.StringIO(), variables=None, current=current)


def _upstream_dag() -> DAG:
    with DAG("up", schedule="@daily", start_date=START) as up:
        with TaskGroup("grp"):
            EmptyOperator(task_id="a")
        EmptyOperator(task_id="done")
    return up


def _sensor_dag(**kwargs: object) -> DAG:
    with DAG("down", schedule=None, start_date=START) as down:
        ExternalTaskSensor(task_id="wait", external_dag_id="up", poke_interval=0, timeout=0, **kwargs)  # type: ignore[arg-type]
    return down


@pytest.mark.parametrize(("kwargs", "recorded", "expected"), [
    ({"external_task_id": "done"}, [("r1", DAY, "success", {"done": "success"})], "success"),
    ({"external_task_id": "done"}, [("r1", DAY, "running", {"done": "running"})], "failed"),  # timeout 0: fails
    ({"external_task_id": "done", "execution_delta": timedelta(days=1)},
     [("r0", DAY - timedelta(days=1), "success", {"done": "success"})], "success"),
    ({"external_task_id": "done", "execution_date_fn": lambda d: [d - timedelta(days=1), d]},
     [("r0", DAY - timedelta(days=1), "success", {"done": "success"})], "failed"),  # one of two dates missing
    ({}, [("r1", DAY, "success", {})], "success"),  # the whole run
    ({"external_task_group_id": "grp"}, [("r1", DAY, "success", {"grp.a": "success"})], "success"),
    ({"external_task_id": "done", "failed_states": ["failed"]}, [("r1", DAY, "failed", {"done": "failed"})],
     "failed"),
    ({"external_task_id": "done", "skipped_states": ["skipped"]}, [("r1", DAY, "success", {"done": "skipped"})],
     "skipped"),
])
def test_external_task_sensor(kwargs: dict[str, object], recorded: list[tuple], expected: str) -> None:  # type: ignore[type-arg]
    down = _sensor_dag(**kwargs)
    service = _service(down, {"up": _upstream_dag()})
    for run_id, when, state, tasks in recorded:
        service.record("up", run_id, when, state, tasks)
    result = run_dag_in_process(down, logical_date=DAY, out=io.StringIO(), dag_runs=service)
    assert str(result.task_states["wait"]) == expected


def test_external_task_sensor_check_existence_fails_at_once_naming_the_missing_task() -> None:
    down = _sensor_dag(external_task_id="nope", check_existence=True)
    out = io.StringIO()
    service = _service(down, {"up": _upstream_dag()})
    result = run_dag_in_process(down, logical_date=DAY, out=out, dag_runs=service)
    assert str(result.task_states["wait"]) == "failed"
    assert "the external DAG 'up' has no task 'nope'" in out.getvalue()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"external_task_id": "a", "external_task_ids": ["b"]}, "external_task_id or external_task_ids"),
    ({"execution_delta": timedelta(1), "execution_date_fn": lambda d: d}, "execution_delta or execution_date_fn"),
    ({"allowed_states": ["success"], "failed_states": ["success"]}, "more than one of allowed_states"),
    ({"execution_delta": 5}, "execution_delta must be a timedelta"),
])
def test_external_task_sensor_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DagDefinitionError, match=message):
        _sensor_dag(**kwargs)


def _target() -> DAG:
    with DAG("target", schedule=None, start_date=START, params={"n": 1}) as target:
        @task
        def show(params=None):
            if params["n"] < 0:
                raise ValueError("negative")
            return params["n"]

        show()
    return target


def test_trigger_runs_the_target_in_dags_test_and_waits_for_it() -> None:
    with DAG("ctl", schedule=None, start_date=START) as ctl:
        TriggerDagRunOperator(task_id="go", trigger_dag_id="target", trigger_run_id="child", conf={"n": 7},
                              wait_for_completion=True, poke_interval=0)
    result = run_dag_in_process(ctl, logical_date=DAY, out=io.StringIO(), dag_loader={"target": _target()}.__getitem__)
    assert result.state is DagRunState.SUCCESS
    assert result.xcoms["go"]["trigger_run_id"] == "child"
    assert result.dag_runs is not None and result.dag_runs.run_state("target", "child") == "success"


def test_trigger_failures_unknown_dag_failed_target_existing_run() -> None:
    with DAG("ctl", schedule=None, start_date=START) as ctl:
        TriggerDagRunOperator(task_id="unknown", trigger_dag_id="nope")
        TriggerDagRunOperator(task_id="fails", trigger_dag_id="target", trigger_run_id="bad", conf={"n": -1},
                              wait_for_completion=True, poke_interval=0)
        TriggerDagRunOperator(task_id="first", trigger_dag_id="target", trigger_run_id="same")
        second = TriggerDagRunOperator(task_id="again", trigger_dag_id="target", trigger_run_id="same")
        skip = TriggerDagRunOperator(task_id="again_skip", trigger_dag_id="target", trigger_run_id="same",
                                     skip_when_already_exists=True)
        reset = TriggerDagRunOperator(task_id="again_reset", trigger_dag_id="target", trigger_run_id="same",
                                      reset_dag_run=True)
        ctl.task_dict["first"] >> [second, skip, reset]
    out = io.StringIO()
    result = run_dag_in_process(ctl, logical_date=DAY, out=out, dag_loader={"target": _target()}.__getitem__)
    states = {t: str(s) for t, s in result.task_states.items()}
    assert states == {"unknown": "failed", "fails": "failed", "first": "success", "again": "failed",
                      "again_skip": "skipped", "again_reset": "success"}
    text = out.getvalue()
    assert "DAG 'nope' to trigger does not exist" in text
    assert "run bad of DAG target ended failed" in text
    assert "DAGRun with DAG ID: 'target' and DAGRun ID: 'same' already exists" in text


def test_trigger_bad_arguments() -> None:
    with DAG("ctl", schedule=None, start_date=START):
        with pytest.raises(DagDefinitionError, match="trigger_dag_id must be a DAG id"):
            TriggerDagRunOperator(task_id="a", trigger_dag_id="")
        with pytest.raises(DagDefinitionError, match="conf must be a dict"):
            TriggerDagRunOperator(task_id="b", trigger_dag_id="x", conf=[1])  # type: ignore[arg-type]
        with pytest.raises(DagDefinitionError, match="poke_interval must be seconds"):
            TriggerDagRunOperator(task_id="c", trigger_dag_id="x", poke_interval=-1)


def _latest_only_skips(run_type: str, end: datetime) -> list[str]:
    with DAG("lo", schedule="@daily", start_date=START):
        latest = LatestOnlyOperator(task_id="latest")
        latest >> EmptyOperator(task_id="after")
    start = end - timedelta(days=1)
    dag_run = RuntimeDagRun(dag_id="lo", run_id="r", logical_date=end, data_interval_start=start,
                            data_interval_end=end, run_type=run_type)
    ti = RuntimeTaskInstance(task=latest, run_id="r", xcom=MemoryXComStore(), dag_run=dag_run)
    context = {"dag_run": dag_run, "ti": ti, "logical_date": end, "data_interval_start": start,
               "data_interval_end": end}
    latest.execute(context)
    return ti.skipped_task_ids


def test_latest_only_skips_downstream_except_in_the_latest_or_a_manual_run() -> None:
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    assert _latest_only_skips("scheduled", today) == []  # now falls in the next interval: latest
    assert _latest_only_skips("scheduled", today - timedelta(days=3)) == ["after"]
    assert _latest_only_skips("manual", today - timedelta(days=3)) == []
