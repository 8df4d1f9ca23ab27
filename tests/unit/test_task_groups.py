"""Task groups and edge labels: ids, wiring, default_args, nesting, @task_group, serialization, errors."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from scheduler import DAG, BranchPythonOperator, EmptyOperator, task
from scheduler.authoring.edges import Label
from scheduler.authoring.taskgroup import TaskGroup, task_group
from scheduler.dagtest import run_dag_in_process
from scheduler.exceptions import DagDefinitionError
from scheduler.serialization import SerializedDAG, serialize_dag

START = datetime(2024, 1, 1)


def test_group_ids_prefix_task_ids_and_nest() -> None:
    with DAG("g", schedule=None, start_date=START) as dag:
        with TaskGroup("outer") as outer:
            EmptyOperator(task_id="a")
            with TaskGroup("inner") as inner:
                EmptyOperator(task_id="b")
        with TaskGroup("flat", prefix_group_id=False):
            EmptyOperator(task_id="c")
    assert sorted(dag.task_dict) == ["c", "outer.a", "outer.inner.b"]
    assert inner.group_id == "outer.inner" and inner.label == "inner"
    assert dag.task_group_dict == {"outer": outer, "outer.inner": inner, "flat": dag.task_group_dict["flat"]}
    assert dag.task_dict["outer.inner.b"].task_group is inner


def test_group_wiring_uses_its_roots_and_leaves() -> None:
    with DAG("g", schedule=None, start_date=START):
        start = EmptyOperator(task_id="start")
        with TaskGroup("grp") as grp:
            a = EmptyOperator(task_id="a")
            b = EmptyOperator(task_id="b")
            c = EmptyOperator(task_id="c")
            a >> [b, c]
        end = EmptyOperator(task_id="end")
        start >> grp >> end
    assert [t.task_id for t in grp.roots] == ["grp.a"]
    assert sorted(t.task_id for t in grp.leaves) == ["grp.b", "grp.c"]
    assert start.downstream_task_ids == {"grp.a"}
    assert end.upstream_task_ids == {"grp.b", "grp.c"}
    assert a.upstream_task_ids == {"start"}


def test_group_default_args_override_the_dags_and_nest() -> None:
    with DAG("g", schedule=None, start_date=START, default_args={"retries": 1, "owner": "dag"}) as dag:
        EmptyOperator(task_id="top")
        with TaskGroup("grp", default_args={"retries": 4}):
            EmptyOperator(task_id="in_group")
            EmptyOperator(task_id="explicit", retries=0)
            with TaskGroup("inner", default_args={"owner": "inner"}):
                EmptyOperator(task_id="deep")
    tasks = dag.task_dict
    assert (tasks["top"].retries, tasks["grp.in_group"].retries, tasks["grp.explicit"].retries) == (1, 4, 0)
    assert (tasks["grp.inner.deep"].retries, tasks["grp.inner.deep"].owner) == (4, "inner")
    assert tasks["grp.in_group"].owner == "dag"


def test_task_group_decorator_returns_the_functions_output_or_the_group() -> None:
    with DAG("g", schedule=None, start_date=START) as dag:
        @task
        def one(x):
            return x + 1

        @task
        def show(v):
            return v

        @task_group
        def pipeline(x):
            return one(one(x))

        @task_group(group_id="side", default_args={"retries": 2})
        def side():
            EmptyOperator(task_id="e")

        show(pipeline(1))
        second = pipeline(10)
        group = side()
        group >> second
    assert isinstance(group, TaskGroup)
    assert sorted(dag.task_dict) == ["pipeline.one", "pipeline.one__1", "pipeline__1.one", "pipeline__1.one__1",
                                     "show", "side.e"]
    assert dag.task_dict["show"].upstream_task_ids == {"pipeline.one__1"}
    assert dag.task_dict["side.e"].retries == 2
    assert dag.task_dict["pipeline__1.one__1"].upstream_task_ids == {"pipeline__1.one", "side.e"}
    result = run_dag_in_process(dag, logical_date=datetime(2024, 1, 2, tzinfo=UTC), out=io.StringIO())
    assert result.xcoms["show"]["return_value"] == 3


def test_a_branch_may_name_a_group_to_follow() -> None:
    with DAG("g", schedule=None, start_date=START) as dag:
        branch = BranchPythonOperator(task_id="branch", python_callable=lambda: "left")
        with TaskGroup("left") as left:
            EmptyOperator(task_id="x") >> EmptyOperator(task_id="y")
        with TaskGroup("right") as right:
            EmptyOperator(task_id="x")
        branch >> [left, right]
    result = run_dag_in_process(dag, out=io.StringIO())
    states = {t: str(s) for t, s in result.task_states.items()}
    assert states == {"branch": "success", "left.x": "success", "left.y": "success", "right.x": "skipped"}


def test_the_group_tree_and_edge_labels_are_serialized() -> None:
    with DAG("g", schedule=None, start_date=START) as dag:
        start = EmptyOperator(task_id="start")
        with TaskGroup("grp", tooltip="the group") as grp:
            EmptyOperator(task_id="a")
        end = EmptyOperator(task_id="end")
        start >> Label("go") >> grp
        grp.set_downstream(end, edge_modifier=Label("done"))
    data = serialize_dag(dag)
    tree = data["task_group"]
    assert tree["id"] is None
    assert [c["id"] for c in tree["children"]] == ["start", "grp", "end"]
    group = tree["children"][1]
    assert (group["type"], group["label"], group["tooltip"]) == ("group", "grp", "the group")
    assert group["children"] == [{"type": "task", "id": "grp.a"}]
    assert data["edge_info"] == [
        {"upstream": "grp.a", "downstream": "end", "label": "done"},
        {"upstream": "start", "downstream": "grp.a", "label": "go"},
    ]
    by_id = {t["task_id"]: t for t in data["tasks"]}
    assert by_id["grp.a"]["task_group"] == "grp" and by_id["start"]["task_group"] is None
    assert SerializedDAG.from_dict(data).tasks["grp.a"].get("task_group") == "grp"


def test_labels_between_lists_and_inside_chains() -> None:
    with DAG("g", schedule=None, start_date=START) as dag:
        a, b, c = (EmptyOperator(task_id=n) for n in "abc")
        [a, b] >> Label("both") >> c
    assert c.upstream_task_ids == {"a", "b"}
    assert dag.get_edge_info("a", "c") == {"label": "both"} == dag.get_edge_info("b", "c")


@pytest.mark.parametrize(("build", "message"), [
    (lambda: TaskGroup("lonely"), "task group 'lonely' was created outside a DAG"),
    (lambda: TaskGroup("bad id!", dag=DAG("x", schedule=None)), "group_id 'bad id!'"),
    (lambda: Label(3), "an edge label must be a string"),  # type: ignore[arg-type]
])
def test_bad_group_definitions_are_clear_errors(build: object, message: str) -> None:
    with pytest.raises(DagDefinitionError, match=message):
        build()  # type: ignore[operator]


def test_a_duplicate_group_id_and_wiring_an_empty_group_are_clear_errors() -> None:
    with DAG("g", schedule=None, start_date=START):
        with TaskGroup("grp"):
            EmptyOperator(task_id="a")
        with pytest.raises(DagDefinitionError, match="group_id 'grp' has already been added to the DAG 'g'"):
            TaskGroup("grp")
        empty = TaskGroup("empty")
        with pytest.raises(DagDefinitionError, match="task group 'empty' is empty"):
            empty >> EmptyOperator(task_id="b")
