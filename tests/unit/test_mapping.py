"""Dynamic task mapping: definition errors, expansion in ``dags test``, and the scheduler's plan for mapped tasks."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from scheduler import DAG, BashOperator, PythonOperator, task
from scheduler.dagrun_logic import plan_run
from scheduler.dagtest import run_dag_in_process
from scheduler.exceptions import DagDefinitionError
from scheduler.serialization import SerializedDAG, serialize_dag
from scheduler.states import DagRunState, TaskInstanceState

S = TaskInstanceState
START = datetime(2024, 1, 1)
NOW = datetime(2024, 1, 2, tzinfo=UTC)


def run(dag: DAG, **kwargs: object):  # type: ignore[no-untyped-def]
    return run_dag_in_process(dag, logical_date=NOW, out=io.StringIO(), **kwargs)  # type: ignore[arg-type]


def test_expand_over_a_literal_and_the_cartesian_product() -> None:
    with DAG("m", schedule=None, start_date=START) as dag:
        @task
        def pair(a, b):
            return f"{a}{b}"

        pair.expand(a=["x", "y"], b=[1, 2, 3])
        PythonOperator.partial(task_id="classic", python_callable=lambda n: n * 2).expand(op_args=[[1], [2]])
    result = run(dag)
    assert result.mapped_xcoms["pair"] == ["x1", "x2", "x3", "y1", "y2", "y3"]
    assert result.mapped_xcoms["classic"] == [2, 4]


def test_expand_over_a_dict_gives_key_value_pairs_and_expand_kwargs_gives_each_its_kwargs() -> None:
    with DAG("m", schedule=None, start_date=START) as dag:
        @task
        def source():
            return {"a": 1, "b": 2}

        @task
        def show(item):
            return f"{item[0]}={item[1]}"

        show.expand(item=source())
        BashOperator.partial(task_id="bash").expand_kwargs(
            [{"bash_command": "echo one"}, {"bash_command": "echo $X", "env": {"X": "two"}}]
        )
    result = run(dag)
    assert result.mapped_xcoms["show"] == ["a=1", "b=2"]
    assert result.mapped_xcoms["bash"] == ["one", "two"]


def test_mapping_over_a_mapped_output_and_reducing_it() -> None:
    with DAG("m", schedule=None, start_date=START) as dag:
        @task
        def plus(x):
            return x + 1

        @task
        def total(values):
            return sum(values)

        total(plus.expand(x=plus.override(task_id="first").expand(x=[1, 2, 3])))
    result = run(dag)
    assert result.mapped_xcoms["first"] == [2, 3, 4]
    assert result.mapped_xcoms["plus"] == [3, 4, 5]
    assert result.xcoms["total"]["return_value"] == 12


def test_mapped_instances_retry_one_by_one_and_a_failed_one_fails_the_run() -> None:
    calls: list[int] = []
    with DAG("m", schedule=None, start_date=START) as dag:
        @task(retries=1)
        def flaky(x):
            calls.append(x)
            if x == 2:
                raise ValueError("always fails")
            return x

        flaky.expand(x=[1, 2, 3])
    result = run(dag)
    assert calls == [1, 2, 2, 3]
    assert result.mapped_states["flaky"] == {0: S.SUCCESS, 1: S.FAILED, 2: S.SUCCESS}
    assert result.state is DagRunState.FAILED


def test_empty_input_skips_and_a_too_long_one_fails_in_dags_test() -> None:
    with DAG("m", schedule=None, start_date=START) as dag:
        @task
        def each(x):
            return x

        each.override(task_id="empty").expand(x=[])
    assert str(run(dag).task_states["empty"]) == "skipped"

    with DAG("m2", schedule=None, start_date=START) as dag2:
        @task
        def many():
            return list(range(2000))

        @task
        def each2(x):
            return x

        each2.expand(x=many())
    out = io.StringIO()
    result = run_dag_in_process(dag2, logical_date=NOW, out=out)
    assert str(result.task_states["each2"]) == "failed"
    assert "2000 elements to map over is more than the allowed 1024" in out.getvalue()


@pytest.mark.parametrize(("build", "message"), [
    (lambda: BashOperator.partial(task_id="b").expand(bash_comand=["x"]), "has no argument bash_comand"),
    (lambda: BashOperator.partial(task_id="b").expand(bash_command="echo"), "can only map over a list"),
    (lambda: BashOperator.partial(task_id="b", bash_command="x").expand(bash_command=["y"]),
     "bash_command given to both partial"),
    (lambda: BashOperator.partial(task_id="b").expand(), "needs at least one argument"),
    (lambda: BashOperator.partial(task_id="b").expand_kwargs("x"), "expand_kwargs\\(\\) needs a list"),
    (lambda: BashOperator.partial(bash_command="x").expand(env=[{}]), "needs a task_id"),
])
def test_bad_mapping_definitions_are_clear_errors(build: object, message: str) -> None:
    with DAG("m", schedule=None, start_date=START), pytest.raises(DagDefinitionError, match=message):
        build()  # type: ignore[operator]


def test_taskflow_mapping_checks_argument_names() -> None:
    with DAG("m", schedule=None, start_date=START):
        @task
        def f(x):
            return x

        with pytest.raises(DagDefinitionError, match="has no argument y to map over"):
            f.expand(y=[1])
        with pytest.raises(TypeError, match="partial\\(\\) got unexpected arguments z"):
            f.partial(z=1).expand(x=[1])


# --- the scheduler's plan (pure) --------------------------------------------------------------------


def _sdag() -> SerializedDAG:
    with DAG("m", schedule=None, start_date=START) as dag:
        @task
        def src():
            return [1, 2]

        @task(retries=2)
        def each(x):
            return x

        @task
        def reduce(values):
            return values

        reduce(each.expand(x=src()))
    return SerializedDAG.from_dict(serialize_dag(dag))


def test_plan_expands_a_ready_mapped_task_and_waits_for_its_instances() -> None:
    sdag = _sdag()
    assert sdag.tasks["each"].get("is_mapped") is True
    asked: list[str] = []

    def length(task_id: str) -> int:
        asked.append(task_id)
        return 2

    states = {"src": S.SUCCESS, "each": S.NONE, "reduce": S.NONE}
    plan = plan_run(sdag, states, {}, NOW, map_length=length)
    assert plan.expansions == {"each": 2} and asked == ["each"]
    assert plan.changes == {} and plan.run_state is None

    # once expanded: instances scheduled by the task's trigger rule, reduce waits for all of them
    plan = plan_run(sdag, {"src": S.SUCCESS, "reduce": S.NONE}, {}, NOW,
                    mapped_states={"each": {0: S.NONE, 1: S.SUCCESS}}, map_length=length)
    assert {k: v[1] for k, v in plan.mapped_changes.items()} == {("each", 0): S.SCHEDULED}
    assert "reduce" not in plan.changes

    # a failed instance makes the downstream upstream_failed and the run fail
    plan = plan_run(sdag, {"src": S.SUCCESS, "reduce": S.NONE}, {}, NOW,
                    mapped_states={"each": {0: S.FAILED, 1: S.SUCCESS}})
    assert plan.changes["reduce"][1] is S.UPSTREAM_FAILED
    assert plan.run_state is DagRunState.FAILED


def test_plan_retries_a_mapped_instance_when_its_delay_is_over_and_fails_an_unexpandable_task() -> None:
    sdag = _sdag()
    later = NOW + timedelta(minutes=5)
    plan = plan_run(sdag, {"src": S.SUCCESS, "reduce": S.NONE}, {}, NOW,
                    mapped_states={"each": {0: S.UP_FOR_RETRY, 1: S.UP_FOR_RETRY}},
                    mapped_retry_at={("each", 0): NOW - timedelta(seconds=1), ("each", 1): later})
    assert {k: v[1] for k, v in plan.mapped_changes.items()} == {("each", 0): S.SCHEDULED}
    assert plan.next_due == later

    plan = plan_run(sdag, {"src": S.SUCCESS, "each": S.NONE, "reduce": S.NONE}, {}, NOW,
                    map_length=lambda t: "mapped task 'each': needs a list")
    assert plan.changes["each"] == (S.NONE, S.FAILED, "cannot expand the mapped task: mapped task 'each': needs a list")
    assert plan.changes["reduce"][1] is S.UPSTREAM_FAILED

    plan = plan_run(sdag, {"src": S.SUCCESS, "each": S.NONE, "reduce": S.NONE}, {}, NOW, map_length=lambda t: 0)
    assert plan.changes["each"][1] is S.SKIPPED and plan.changes["reduce"][1] is S.SKIPPED
    assert plan.run_state is DagRunState.SUCCESS
