"""Whole DAG runs in this process (``updraft dags test``) and one task (``updraft tasks test``)."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler import (
    DAG,
    BashOperator,
    BranchPythonOperator,
    EmptyOperator,
    Param,
    PythonOperator,
    ShortCircuitOperator,
    TriggerRule,
    task,
)
from scheduler.dagtest import DagTestResult, run_dag_in_process, run_task_in_process
from scheduler.exceptions import ParamValidationError, TaskNotFound, TaskSkipped
from scheduler.states import DagRunState
from scheduler.states import TaskInstanceState as S

LOGICAL = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def run(dag: DAG, **kwargs: Any) -> tuple[DagTestResult, str]:
    out = io.StringIO()
    kwargs.setdefault("logical_date", LOGICAL)
    result = run_dag_in_process(dag, out=out, **kwargs)
    return result, out.getvalue()


def states(result: DagTestResult) -> dict[str, str]:
    return {k: str(v) for k, v in result.task_states.items()}


def fail() -> None:
    raise RuntimeError("task failed on purpose")


# --- linear runs and XCom ---------------------------------------------------------------------


def test_linear_taskflow_passes_xcoms() -> None:
    with DAG("lin", schedule=None) as dag:
        @task
        def extract() -> list[int]:
            return [1, 2, 3]

        @task
        def transform(values: list[int]) -> int:
            return sum(values)

        @task
        def load(total: int, ds: str | None = None) -> str:
            print(f"loading {total}")
            return f"{ds}:{total}"

        load(transform(extract()))
    result, out = run(dag)
    assert result.state is DagRunState.SUCCESS
    assert states(result) == {"extract": "success", "transform": "success", "load": "success"}
    assert result.tries == {"extract": 1, "transform": 1, "load": 1}
    assert result.xcoms == {
        "extract": {"return_value": [1, 2, 3]},
        "transform": {"return_value": 6},
        "load": {"return_value": "2024-06-01:6"},
    }
    assert result.run_id == "manual__2024-06-01T12:00:00+00:00"
    assert result.logical_date == LOGICAL
    assert result.data_interval_end == LOGICAL
    assert result.data_interval_start is not None and result.data_interval_start <= LOGICAL
    assert "loading 6" in out  # the task's own output goes to `out` too


def test_log_lines_look_like_airflows_and_a_summary_is_printed() -> None:
    with DAG("lin", schedule=None) as dag:
        PythonOperator(task_id="extract", python_callable=lambda: 1)
    _, out = run(dag)
    stamp = r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000\]"
    assert re.search(rf"^{stamp} \{{lin\.extract\}} INFO - Running task extract \(try 1 of 1\)$", out, re.M)
    assert re.search(rf"^{stamp} \{{lin\}} INFO - Dag run manual__2024-06-01T12:00:00\+00:00 finished with state success$", out, re.M)
    assert re.search(r"^task_id\s+state\s+tries\s+duration$", out, re.M)
    assert re.search(r"^extract\s+success\s+1\s+\d+\.\d\ds$", out, re.M)


def test_context_dates_and_rendering_leave_the_dag_unchanged() -> None:
    with DAG("ctx", schedule=None) as dag:
        b = BashOperator(task_id="b", bash_command="echo {{ ds }} {{ run_id }}")
        p = PythonOperator(
            task_id="p",
            python_callable=lambda data_interval_end, logical_date, dag_run: [
                data_interval_end.isoformat(), logical_date.isoformat(), dag_run.run_type,
            ],
        )
        b >> p
    result, _ = run(dag)
    assert result.xcoms["b"]["return_value"] == "2024-06-01 manual__2024-06-01T12:00:00+00:00"
    assert result.xcoms["p"]["return_value"] == [LOGICAL.isoformat(), LOGICAL.isoformat(), "manual"]
    assert b.bash_command == "echo {{ ds }} {{ run_id }}"


def test_naive_logical_date_is_read_in_the_dags_time_zone() -> None:
    with DAG("tz", schedule=None, timezone="Europe/Berlin") as dag:
        EmptyOperator(task_id="e")
    result, _ = run(dag, logical_date=datetime(2024, 1, 1, 1, 0))
    assert result.logical_date == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert result.run_id == "manual__2024-01-01T00:00:00+00:00"


def test_default_logical_date_is_now() -> None:
    with DAG("now", schedule=None) as dag:
        EmptyOperator(task_id="e")
    before = datetime.now(UTC)
    result = run_dag_in_process(dag, out=io.StringIO())
    assert before <= result.logical_date <= datetime.now(UTC)


def test_empty_operator_succeeds_without_running() -> None:
    with DAG("empty", schedule=None) as dag:
        EmptyOperator(task_id="start") >> PythonOperator(task_id="work", python_callable=lambda: 1)
    result, out = run(dag)
    assert states(result) == {"start": "success", "work": "success"}
    assert result.tries == {"start": 0, "work": 1}
    assert "Running task start" not in out


# --- branching and short-circuits ----------------------------------------------------------------------


def test_branch_python_operator_skips_the_branch_not_taken() -> None:
    with DAG("br", schedule=None) as dag:
        branch = BranchPythonOperator(task_id="branch", python_callable=lambda: "left")
        left = PythonOperator(task_id="left", python_callable=lambda: "L")
        right = PythonOperator(task_id="right", python_callable=lambda: "R")
        after_right = PythonOperator(task_id="after_right", python_callable=lambda: "AR")
        join = PythonOperator(task_id="join", python_callable=lambda: "J",
                              trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
        strict_join = EmptyOperator(task_id="strict_join")  # all_success: skipped with the branch
        branch >> [left, right]
        right >> after_right
        [left, after_right] >> join
        [left, after_right] >> strict_join
    result, _ = run(dag)
    assert states(result) == {
        "branch": "success", "left": "success", "right": "skipped", "after_right": "skipped",
        "join": "success", "strict_join": "skipped",
    }
    assert result.state is DagRunState.SUCCESS
    assert result.xcoms["branch"] == {"return_value": "left"}
    assert "right" not in result.xcoms and result.tries["right"] == 0


def test_task_branch_decorator() -> None:
    with DAG("tbr", schedule=None, params={"go": "b"}) as dag:
        @task.branch
        def choose(params: dict[str, Any] | None = None) -> list[str]:
            assert params is not None
            return [params["go"]]

        @task
        def a() -> str:
            return "a"

        @task
        def b() -> str:
            return "b"

        @task(trigger_rule="none_failed_min_one_success")
        def join() -> str:
            return "joined"

        chosen = choose()
        ra, rb = a(), b()
        chosen >> [ra, rb]
        [ra, rb] >> join()
    result, _ = run(dag)
    assert states(result) == {"choose": "success", "a": "skipped", "b": "success", "join": "success"}
    result, _ = run(dag, conf={"go": "a"})
    assert states(result) == {"choose": "success", "a": "success", "b": "skipped", "join": "success"}


def short_circuit_dag(condition: bool, ignore: bool) -> DAG:
    with DAG("sc", schedule=None) as dag:
        check = ShortCircuitOperator(task_id="check", python_callable=lambda: condition,
                                     ignore_downstream_trigger_rules=ignore)
        direct = PythonOperator(task_id="direct", python_callable=lambda: 1)
        cleanup = PythonOperator(task_id="cleanup", python_callable=lambda: 2, trigger_rule=TriggerRule.ALL_DONE)
        other = PythonOperator(task_id="other", python_callable=lambda: 3)
        check >> direct >> cleanup
        other >> cleanup
    return dag


def test_short_circuit_falsy_skips_everything_downstream() -> None:
    result, _ = run(short_circuit_dag(False, ignore=True))
    assert states(result) == {"check": "success", "other": "success", "direct": "skipped", "cleanup": "skipped"}
    assert result.state is DagRunState.SUCCESS


def test_short_circuit_respecting_trigger_rules_skips_only_direct_downstream() -> None:
    result, _ = run(short_circuit_dag(False, ignore=False))
    assert states(result) == {"check": "success", "other": "success", "direct": "skipped", "cleanup": "success"}


def test_short_circuit_truthy_lets_everything_run() -> None:
    result, _ = run(short_circuit_dag(True, ignore=True))
    assert set(states(result).values()) == {"success"}


def test_skips_propagate_through_all_success() -> None:
    def skip() -> None:
        raise TaskSkipped("nothing new")

    with DAG("skip", schedule=None) as dag:
        first = PythonOperator(task_id="first", python_callable=skip)
        second = PythonOperator(task_id="second", python_callable=lambda: 1)
        third = PythonOperator(task_id="third", python_callable=lambda: 1)
        runs_anyway = PythonOperator(task_id="runs_anyway", python_callable=lambda: 1, trigger_rule="all_skipped")
        first >> second >> third >> runs_anyway
    result, _ = run(dag)
    assert states(result) == {"first": "skipped", "second": "skipped", "third": "skipped", "runs_anyway": "success"}
    assert result.tries["first"] == 1 and result.tries["second"] == 0
    assert result.state is DagRunState.SUCCESS


# --- failures ----------------------------------------------------------------------------------------


def test_failure_fails_the_run_and_marks_downstream_upstream_failed() -> None:
    with DAG("fail", schedule=None) as dag:
        ok = PythonOperator(task_id="ok", python_callable=lambda: 1)
        bad = PythonOperator(task_id="bad", python_callable=fail)
        after = PythonOperator(task_id="after", python_callable=lambda: 1)
        last = PythonOperator(task_id="last", python_callable=lambda: 1)
        ok >> bad >> after >> last
    result, out = run(dag)
    assert states(result) == {"ok": "success", "bad": "failed", "after": "upstream_failed", "last": "upstream_failed"}
    assert result.state is DagRunState.FAILED
    assert "RuntimeError: task failed on purpose" in out
    assert "finished with state failed" in out


def test_cleanup_and_alert_tasks_run_after_a_failure() -> None:
    with DAG("cleanup", schedule=None) as dag:
        bad = PythonOperator(task_id="bad", python_callable=fail)
        good = PythonOperator(task_id="good", python_callable=lambda: 1)
        cleanup = PythonOperator(task_id="cleanup", python_callable=lambda: "cleaned", trigger_rule="all_done")
        alert = PythonOperator(task_id="alert", python_callable=lambda: "alerted", trigger_rule="one_failed")
        on_success_only = PythonOperator(task_id="on_success_only", python_callable=lambda: 1)
        [bad, good] >> cleanup
        [bad, good] >> alert
        [bad, good] >> on_success_only
    result, _ = run(dag)
    assert states(result) == {
        "bad": "failed", "good": "success", "cleanup": "success", "alert": "success",
        "on_success_only": "upstream_failed",
    }
    assert result.xcoms["cleanup"] == {"return_value": "cleaned"}
    assert result.xcoms["alert"] == {"return_value": "alerted"}
    assert result.state is DagRunState.FAILED  # a leaf is upstream_failed


def test_the_run_state_comes_from_the_leaves_only() -> None:
    with DAG("leaves", schedule=None) as dag:
        bad = PythonOperator(task_id="bad", python_callable=fail)
        cleanup = PythonOperator(task_id="cleanup", python_callable=lambda: 1, trigger_rule="all_done")
        bad >> cleanup
    result, _ = run(dag)
    assert states(result) == {"bad": "failed", "cleanup": "success"}
    assert result.state is DagRunState.SUCCESS


def test_one_failed_alert_is_skipped_when_nothing_fails() -> None:
    with DAG("quiet", schedule=None) as dag:
        good = PythonOperator(task_id="good", python_callable=lambda: 1)
        alert = PythonOperator(task_id="alert", python_callable=lambda: 1, trigger_rule="one_failed")
        good >> alert
    result, _ = run(dag)
    assert states(result) == {"good": "success", "alert": "skipped"}
    assert result.state is DagRunState.SUCCESS


def test_retries_succeed_on_the_second_try() -> None:
    def flaky(ti: Any) -> str:
        if ti.try_number == 1:
            raise RuntimeError("first try fails")
        return f"ok on try {ti.try_number}"

    with DAG("retry", schedule=None) as dag:
        PythonOperator(task_id="flaky", python_callable=flaky, retries=2)
    result, out = run(dag)
    assert states(result) == {"flaky": "success"}
    assert result.tries == {"flaky": 2}
    assert result.xcoms["flaky"] == {"return_value": "ok on try 2"}
    assert "{retry.flaky} INFO - retrying (try 2 of 3), retry_delay not awaited in dags test" in out
    assert "Running task flaky (try 3 of 3)" not in out


def test_retries_run_out() -> None:
    calls: list[int] = []

    def always(ti: Any) -> None:
        calls.append(ti.try_number)
        raise RuntimeError("never works")

    with DAG("retry_out", schedule=None, default_args={"retries": 2}) as dag:
        PythonOperator(task_id="t", python_callable=always)
    result, _ = run(dag)
    assert calls == [1, 2, 3]
    assert result.tries == {"t": 3}
    assert result.state is DagRunState.FAILED


def test_no_retry_failure_is_not_retried() -> None:
    from scheduler.exceptions import TaskFailedNoRetry

    def stop() -> None:
        raise TaskFailedNoRetry("stop now")

    with DAG("noretry", schedule=None) as dag:
        PythonOperator(task_id="t", python_callable=stop, retries=5)
    result, _ = run(dag)
    assert result.tries == {"t": 1}
    assert states(result) == {"t": "failed"}


# --- params and conf -----------------------------------------------------------------------------------


def params_dag(ran: list[Any]) -> DAG:
    with DAG("params", schedule=None, params={"n": Param(2, type="integer", minimum=1), "name": "x"}) as dag:
        @task
        def show(params: dict[str, Any] | None = None) -> list[Any]:
            assert params is not None
            ran.append(params)
            return [params["n"], params["name"]]

        show()
    return dag


def test_conf_overrides_param_defaults() -> None:
    ran: list[Any] = []
    dag = params_dag(ran)
    result, _ = run(dag)
    assert result.xcoms["show"] == {"return_value": [2, "x"]}
    result, _ = run(dag, conf={"n": 9})
    assert result.xcoms["show"] == {"return_value": [9, "x"]}


def test_invalid_conf_raises_naming_the_param_before_anything_runs() -> None:
    ran: list[Any] = []
    dag = params_dag(ran)
    with pytest.raises(ParamValidationError, match="param 'n'"):
        run(dag, conf={"n": 0})
    with pytest.raises(ParamValidationError, match="conf must be a JSON object"):
        run(dag, conf=["n", 3])  # type: ignore[arg-type]
    assert ran == []


# --- DAG callbacks ---------------------------------------------------------------------------------------


def test_dag_callbacks_get_a_context_and_their_errors_are_logged() -> None:
    seen: list[tuple[str, str, str]] = []

    def record(context: dict[str, Any]) -> None:
        seen.append((context["reason"], context["task"].task_id, context["dag_run"].state))

    def broken(context: dict[str, Any]) -> None:
        raise RuntimeError("dag callback broke")

    with DAG("cb_ok", schedule=None, on_success_callback=[broken, record], on_failure_callback=record) as ok_dag:
        PythonOperator(task_id="a", python_callable=lambda: 1) >> PythonOperator(task_id="b", python_callable=lambda: 1)
    with DAG("cb_bad", schedule=None, on_success_callback=record, on_failure_callback=record) as bad_dag:
        PythonOperator(task_id="a", python_callable=fail) >> PythonOperator(task_id="b", python_callable=lambda: 1)
    _, out = run(ok_dag)
    run(bad_dag)
    assert seen == [("success", "b", "success"), ("task_failure", "a", "failed")]
    assert "RuntimeError: dag callback broke" in out
    assert "Error when executing DAG on_success_callback broken" in out


# --- one task -------------------------------------------------------------------------------------------


def test_run_task_in_process_ignores_dependencies_and_shows_rendered_fields() -> None:
    with DAG("one", schedule=None) as dag:
        up = PythonOperator(task_id="up", python_callable=fail)
        down = BashOperator(task_id="down", bash_command="echo {{ ds }} {{ ti.xcom_pull('up') }}")
        up >> down
    out = io.StringIO()
    outcome = run_task_in_process(dag, "down", logical_date=LOGICAL, out=out)
    text = out.getvalue()
    assert outcome.state is S.SUCCESS
    assert outcome.return_value == "2024-06-01 None"
    assert outcome.rendered_fields["bash_command"] == "echo 2024-06-01 None"
    rendered_at = text.index("# property: bash_command\n# " + "-" * 58 + "\necho 2024-06-01 None\n")
    assert rendered_at < text.index("Executing <Task(BashOperator): down>") < text.index("2024-06-01 None\nCommand exited")
    assert "Running task up" not in text
    assert down.bash_command == "echo {{ ds }} {{ ti.xcom_pull('up') }}"


def test_run_task_in_process_reports_failure_and_unknown_tasks() -> None:
    with DAG("one_bad", schedule=None) as dag:
        PythonOperator(task_id="bad", python_callable=fail, retries=3)
    out = io.StringIO()
    outcome = run_task_in_process(dag, "bad", logical_date=LOGICAL, out=out)
    assert outcome.state is S.FAILED and not outcome.up_for_retry
    assert "RuntimeError: task failed on purpose" in out.getvalue()
    with pytest.raises(TaskNotFound, match="'nope'"):
        run_task_in_process(dag, "nope", out=out)


def test_dag_test_method_runs_the_dag(capsys: pytest.CaptureFixture[str]) -> None:
    with DAG("method", schedule=None) as dag:
        PythonOperator(task_id="t", python_callable=lambda: print("hello from t"))
    result = dag.test(logical_date=LOGICAL)
    assert result.state is DagRunState.SUCCESS
    captured = capsys.readouterr().out
    assert "hello from t" in captured and "{method.t} INFO - Running task t" in captured
