"""plan_run and effective_weights on serialized DAGs built from real DAG objects (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler import DAG, EmptyOperator, PythonOperator
from scheduler.dagrun_logic import effective_weights, plan_run
from scheduler.serialization import SerializedDAG, serialize_dag
from scheduler.states import DagRunState
from scheduler.states import TaskInstanceState as S

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def noop() -> None:
    pass


def sdag_of(build) -> SerializedDAG:  # noqa: ANN001
    with DAG("d", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        build()
    return SerializedDAG.from_dict(serialize_dag(dag, fileloc="/x.py"))


def py(task_id: str, **kwargs) -> PythonOperator:  # noqa: ANN003
    return PythonOperator(task_id=task_id, python_callable=noop, **kwargs)


def chain_abc() -> None:
    py("a") >> py("b") >> py("c")


def test_roots_are_scheduled_and_the_rest_wait() -> None:
    plan = plan_run(sdag_of(chain_abc), {"a": S.NONE, "b": S.NONE, "c": S.NONE}, {}, NOW)
    assert {t: new for t, (_, new, _) in plan.changes.items()} == {"a": S.SCHEDULED}
    assert plan.run_state is None


def test_a_failure_cascades_upstream_failed_and_fails_the_run() -> None:
    plan = plan_run(sdag_of(chain_abc), {"a": S.FAILED, "b": S.NONE, "c": S.NONE}, {}, NOW)
    assert {t: new for t, (_, new, _) in plan.changes.items()} == {"b": S.UPSTREAM_FAILED, "c": S.UPSTREAM_FAILED}
    assert plan.run_state is DagRunState.FAILED


def test_skips_cascade_and_the_run_succeeds() -> None:
    plan = plan_run(sdag_of(chain_abc), {"a": S.SKIPPED, "b": S.NONE, "c": S.NONE}, {}, NOW)
    assert {t: new for t, (_, new, _) in plan.changes.items()} == {"b": S.SKIPPED, "c": S.SKIPPED}
    assert plan.run_state is DagRunState.SUCCESS


def test_empty_operators_succeed_without_running() -> None:
    def build() -> None:
        EmptyOperator(task_id="start") >> py("work")

    plan = plan_run(sdag_of(build), {"start": S.NONE, "work": S.NONE}, {}, NOW)
    assert {t: new for t, (_, new, _) in plan.changes.items()} == {"start": S.SUCCESS, "work": S.SCHEDULED}


def test_a_retry_waits_for_its_time_and_reports_when() -> None:
    due = NOW + timedelta(minutes=5)
    sdag = sdag_of(chain_abc)
    states = {"a": S.UP_FOR_RETRY, "b": S.NONE, "c": S.NONE}
    early = plan_run(sdag, states, {"a": due}, NOW)
    assert early.changes == {} and early.next_due == due and early.run_state is None
    late = plan_run(sdag, states, {"a": due}, due)
    assert late.changes["a"][1] is S.SCHEDULED


def test_depends_on_past_holds_the_task_and_is_not_a_deadlock() -> None:
    def build() -> None:
        py("a", depends_on_past=True)

    plan = plan_run(sdag_of(build), {"a": S.NONE}, {}, NOW, past_allows=lambda task_id: False)
    assert plan.changes == {} and plan.waiting_on_past == ["a"] and plan.run_state is None
    allowed = plan_run(sdag_of(build), {"a": S.NONE}, {}, NOW, past_allows=lambda task_id: True)
    assert allowed.changes["a"][1] is S.SCHEDULED


def test_a_leaf_decides_the_run_not_a_middle_task() -> None:
    def build() -> None:
        py("a") >> py("b") >> py("c", trigger_rule="all_done")

    plan = plan_run(sdag_of(build), {"a": S.SUCCESS, "b": S.FAILED, "c": S.SUCCESS}, {}, NOW)
    assert plan.run_state is DagRunState.SUCCESS


def test_weights_follow_the_weight_rule() -> None:
    def build() -> None:
        a = py("a", priority_weight=1)
        b = py("b", priority_weight=2)
        c = py("c", priority_weight=4)
        a >> b >> c
        py("up", priority_weight=1, weight_rule="upstream")
        py("abs", priority_weight=7, weight_rule="absolute")
        c >> py("d", priority_weight=8, weight_rule="upstream")

    weights = effective_weights(sdag_of(build))
    assert weights["a"] == 1 + 2 + 4 + 8
    assert weights["b"] == 2 + 4 + 8
    assert weights["c"] == 4 + 8
    assert weights["d"] == 8 + 4 + 2 + 1
    assert weights["up"] == 1 and weights["abs"] == 7
