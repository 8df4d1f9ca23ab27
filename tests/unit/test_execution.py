"""One try of one task: rendering, execute, XCom, outcomes and callbacks."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler import DAG, BashOperator, PythonOperator, task
from scheduler.authoring.baseoperator import BaseOperator
from scheduler.exceptions import TaskFailedNoRetry, TaskSkipped, XComError
from scheduler.execution import TryOutcome, execute_try
from scheduler.runtime import MemoryXComStore, RuntimeTaskInstance
from scheduler.states import TaskInstanceState as S
from scheduler.templating import build_context

LOGICAL = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
RUN_ID = "manual__2024-05-01T06:00:00+00:00"


class Harness:
    """Runs tries of a task against one XCom store and records what was logged."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.xcom = MemoryXComStore()
        self.log = logging.getLogger("tests.execution")
        caplog.set_level(logging.INFO, logger="tests.execution")
        self.caplog = caplog
        self.contexts: list[dict[str, Any]] = []

    def run(self, op: BaseOperator, *, try_number: int = 1, conf: dict[str, Any] | None = None) -> TryOutcome:
        ti = RuntimeTaskInstance(task=op, run_id=RUN_ID, xcom=self.xcom, try_number=try_number, log=self.log)
        context = build_context(
            dag=op.dag, task=op, ti=ti, run_id=RUN_ID, logical_date=LOGICAL,
            data_interval_start=LOGICAL - timedelta(days=1), data_interval_end=LOGICAL,
            conf=conf, params=dict(conf or {}),
        )
        self.contexts.append(context)
        return execute_try(op, context, xcom=self.xcom, log=self.log)

    def pulled(self, task_id: str, key: str = "return_value") -> Any:
        return self.xcom.pull("ex", RUN_ID, task_id, -1, key, default="<missing>")


@pytest.fixture
def h(caplog: pytest.LogCaptureFixture) -> Harness:
    return Harness(caplog)


def python(fn: Any, **kwargs: Any) -> PythonOperator:
    with DAG("ex", schedule=None):
        return PythonOperator(task_id="p", python_callable=fn, **kwargs)


# --- success and XCom --------------------------------------------------------------------------------


def test_success_pushes_the_return_value(h: Harness) -> None:
    outcome = h.run(python(lambda ds: {"day": ds}))
    assert outcome.state is S.SUCCESS
    assert outcome.return_value == {"day": "2024-05-01"}
    assert outcome.error is None and not outcome.up_for_retry and not outcome.fail_fast_no_retry
    assert outcome.duration >= 0
    assert h.pulled("p") == {"day": "2024-05-01"}
    assert h.contexts[0]["ti"].state is S.SUCCESS


def test_none_is_not_pushed_and_do_xcom_push_false_pushes_nothing(h: Harness) -> None:
    h.run(python(lambda: None))
    assert h.pulled("p") == "<missing>"
    outcome = h.run(python(lambda: 5, do_xcom_push=False))
    assert outcome.return_value == 5
    assert h.pulled("p") == "<missing>"


def test_xcoms_of_an_earlier_try_are_cleared(h: Harness) -> None:
    op = python(lambda ti: ti.xcom_push("extra", 1) if ti.try_number == 1 else None)
    h.run(op)
    assert h.pulled("p", "extra") == 1
    h.run(op, try_number=2)
    assert h.pulled("p", "extra") == "<missing>"


def test_multiple_outputs_pushes_each_key_and_the_whole(h: Harness) -> None:
    with DAG("ex", schedule=None):
        @task(multiple_outputs=True)
        def split() -> dict[str, int]:
            return {"a": 1, "b": 2}

        op = split().operator
    assert h.run(op).state is S.SUCCESS
    assert (h.pulled("split", "a"), h.pulled("split", "b")) == (1, 2)
    assert h.pulled("split") == {"a": 1, "b": 2}


def test_multiple_outputs_inferred_from_the_dict_annotation(h: Harness) -> None:
    with DAG("ex", schedule=None):
        @task
        def split() -> dict[str, int]:
            return {"a": 1}

        op = split().operator
    h.run(op)
    assert h.pulled("split", "a") == 1


def test_multiple_outputs_with_a_non_dict_fails_clearly(h: Harness) -> None:
    outcome = h.run(python(lambda: [1, 2], multiple_outputs=True))
    assert outcome.state is S.FAILED
    assert outcome.error is not None
    assert "XComError: task 'p': returned list, but multiple_outputs needs a dict" in outcome.error
    assert h.pulled("p") == "<missing>"


def test_a_return_value_that_is_not_json_fails_naming_task_and_key(h: Harness) -> None:
    outcome = h.run(python(lambda: object()))
    assert outcome.state is S.FAILED
    assert outcome.error is not None
    assert "task 'p': XCom value for key 'return_value' is not JSON-serialisable (object)" in outcome.error


def test_xcom_push_and_pull_from_task_code(h: Harness) -> None:
    h.xcom.push("ex", RUN_ID, "up", -1, "return_value", "u")
    h.xcom.push("ex", RUN_ID, "other", -1, "k", [1])

    def body(ti: RuntimeTaskInstance) -> Any:
        ti.xcom_push("mine", {"x": 1})
        return {
            "one": ti.xcom_pull(task_ids="up"),
            "many": ti.xcom_pull(task_ids=["other", "up", "absent"], key="k"),
            "own": ti.xcom_pull(key="mine"),
            "default": ti.xcom_pull(task_ids="absent", default="d"),
        }

    outcome = h.run(python(body))
    assert outcome.return_value == {"one": "u", "many": [[1], None, None], "own": {"x": 1}, "default": "d"}


def test_xcom_push_of_a_bad_value_raises_xcom_error(h: Harness) -> None:
    op = python(lambda: None)
    ti = RuntimeTaskInstance(task=op, run_id=RUN_ID, xcom=h.xcom)
    with pytest.raises(XComError, match="task 'p': XCom value for key 'when' is not JSON-serialisable"):
        ti.xcom_push("when", datetime.now(UTC))
    with pytest.raises(XComError, match="non-empty string"):
        ti.xcom_push("", 1)


# --- failure, skip, rendering -------------------------------------------------------------------------


def test_task_skipped_ends_skipped(h: Harness) -> None:
    def body() -> None:
        raise TaskSkipped("nothing to do")

    outcome = h.run(python(body))
    assert outcome.state is S.SKIPPED
    assert outcome.error is None
    assert "nothing to do" in h.caplog.text


def test_task_failed_no_retry_fails_without_retry(h: Harness) -> None:
    def body() -> None:
        raise TaskFailedNoRetry("bad input")

    with DAG("ex", schedule=None):
        op = PythonOperator(task_id="p", python_callable=body, retries=3)
    outcome = h.run(op)
    assert outcome.state is S.FAILED
    assert outcome.fail_fast_no_retry and not outcome.up_for_retry
    assert outcome.error is not None and "bad input" in outcome.error


def test_an_exception_fails_with_its_traceback_logged(h: Harness) -> None:
    def explode() -> None:
        raise ValueError("kaboom")

    outcome = h.run(python(explode))
    assert outcome.state is S.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("Traceback (most recent call last):")
    assert "in explode" in outcome.error and "ValueError: kaboom" in outcome.error
    assert "ValueError: kaboom" in h.caplog.text
    assert not outcome.fail_fast_no_retry and not outcome.up_for_retry


def test_retries_left_make_the_failure_up_for_retry(h: Harness) -> None:
    with DAG("ex", schedule=None):
        op = PythonOperator(task_id="p", python_callable=lambda: 1 / 0, retries=1)
    assert h.run(op, try_number=1).up_for_retry
    last = h.run(op, try_number=2)
    assert last.state is S.FAILED and not last.up_for_retry


def test_a_template_error_fails_the_try_before_execute(h: Harness) -> None:
    called: list[str] = []
    op = python(lambda: called.append("x"), op_args=["{{ nope }}"])
    outcome = h.run(op)
    assert outcome.state is S.FAILED
    assert outcome.error is not None
    assert "TemplateError: task 'p', field 'op_args': 'nope' is undefined" in outcome.error
    assert called == []


def test_rendered_fields_are_returned(h: Harness) -> None:
    outcome = h.run(python(lambda x: x, op_kwargs={"x": "{{ ds_nodash }}"}))
    assert outcome.rendered_fields == {"templates_dict": None, "op_args": [], "op_kwargs": {"x": "20240501"}}
    assert outcome.return_value == "20240501"


def test_templates_dict_is_rendered_and_given_to_the_callable(h: Harness) -> None:
    outcome = h.run(python(lambda templates_dict: templates_dict["day"], templates_dict={"day": "{{ ds }}"}))
    assert outcome.return_value == "2024-05-01"


def test_pre_and_post_execute_run_around_execute(h: Harness) -> None:
    calls: list[str] = []

    class Recording(BaseOperator):
        def pre_execute(self, context: dict[str, Any]) -> None:
            calls.append("pre")

        def execute(self, context: dict[str, Any]) -> Any:
            calls.append("execute")
            return 3

        def post_execute(self, context: dict[str, Any], result: Any = None) -> None:
            calls.append(f"post:{result}")

    with DAG("ex", schedule=None):
        op = Recording(task_id="r", on_execute_callback=lambda ctx: calls.append("on_execute"))
    assert h.run(op).state is S.SUCCESS
    assert calls == ["pre", "on_execute", "execute", "post:3"]


def test_branch_skips_are_reported_only_on_success(h: Harness) -> None:
    def body(ti: RuntimeTaskInstance) -> None:
        ti.skip_tasks(["a", "b"])
        ti.skip_tasks(["a"])

    assert h.run(python(body)).skip_task_ids == ["a", "b"]

    def failing(ti: RuntimeTaskInstance) -> None:
        ti.skip_tasks(["a"])
        raise RuntimeError("after skipping")

    assert h.run(python(failing)).skip_task_ids == []


def test_execution_timeout_fails_the_try(h: Harness) -> None:
    def forever() -> None:
        while True:
            pass

    with DAG("ex", schedule=None):
        op = PythonOperator(task_id="p", python_callable=forever, execution_timeout=timedelta(milliseconds=50))
    outcome = h.run(op)
    assert outcome.state is S.FAILED
    assert outcome.error is not None and "TaskExecutionTimeout: task 'p' timed out" in outcome.error


# --- callbacks ----------------------------------------------------------------------------------------


def test_callbacks_get_the_context_and_their_errors_are_logged(h: Harness) -> None:
    seen: list[tuple[str, str]] = []

    def record(name: str) -> Any:
        return lambda context: seen.append((name, context["ti"].task_id))

    def broken(context: dict[str, Any]) -> None:
        raise RuntimeError("callback broke")

    with DAG("ex", schedule=None):
        ok = PythonOperator(task_id="ok", python_callable=lambda: 1,
                            on_success_callback=[broken, record("success")], on_failure_callback=record("failure"))
        bad = PythonOperator(task_id="bad", python_callable=lambda: 1 / 0, retries=1,
                             on_retry_callback=record("retry"), on_failure_callback=[record("failure"), broken],
                             on_success_callback=record("success"), on_execute_callback=broken)
        skip = PythonOperator(task_id="skip", python_callable=lambda: (_ for _ in ()).throw(TaskSkipped()),
                              on_success_callback=record("success"), on_failure_callback=record("failure"))
    assert h.run(ok).state is S.SUCCESS
    assert h.run(bad, try_number=1).up_for_retry
    assert h.run(bad, try_number=2).state is S.FAILED
    assert h.run(skip).state is S.SKIPPED
    assert seen == [("success", "ok"), ("retry", "bad"), ("failure", "bad")]
    assert h.caplog.text.count("RuntimeError: callback broke") == 4
    assert "Error when executing on_success_callback broken" in h.caplog.text
    assert "Error when executing on_execute_callback broken" in h.caplog.text


def test_failure_callback_sees_the_exception(h: Harness) -> None:
    seen: list[Any] = []
    op = python(lambda: 1 / 0, on_failure_callback=lambda context: seen.append(context["exception"]))
    h.run(op)
    assert len(seen) == 1 and isinstance(seen[0], ZeroDivisionError)


# --- bash ------------------------------------------------------------------------------------------------


def bash_op(command: str, **kwargs: Any) -> BashOperator:
    with DAG("ex", schedule=None):
        return BashOperator(task_id="b", bash_command=command, **kwargs)


def test_bash_returns_the_last_line(h: Harness, capfd: pytest.CaptureFixture[str]) -> None:
    outcome = h.run(bash_op("echo first; echo {{ ds }}"))
    assert outcome.state is S.SUCCESS
    assert outcome.return_value == "2024-05-01"
    assert h.pulled("b") == "2024-05-01"
    assert "first\n2024-05-01\n" in capfd.readouterr().out


def test_bash_exit_99_skips_and_other_codes_fail(h: Harness) -> None:
    assert h.run(bash_op("exit 99")).state is S.SKIPPED
    failed = h.run(bash_op("echo oops; exit 3"))
    assert failed.state is S.FAILED
    assert failed.error is not None and "non-zero exit code 3" in failed.error
    assert h.run(bash_op("exit 5", skip_on_exit_code=[5])).state is S.SKIPPED


def test_bash_env_replaces_or_extends_the_environment(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_PARENT", "parent")
    only = h.run(bash_op('echo "${FROM_PARENT:-unset}-$MINE-$AIRFLOW_CTX_DAG_ID"', env={"MINE": "{{ ds_nodash }}"}))
    assert only.return_value == "unset-20240501-ex"
    both = h.run(bash_op('echo "$FROM_PARENT-$MINE"', env={"MINE": "m"}, append_env=True))
    assert both.return_value == "parent-m"
    inherited = h.run(bash_op('echo "$FROM_PARENT"'))
    assert inherited.return_value == "parent"


def test_bash_cwd(h: Harness, tmp_path: Path) -> None:
    outcome = h.run(bash_op("pwd", cwd=str(tmp_path)))
    assert os.path.realpath(outcome.return_value) == os.path.realpath(tmp_path)
    missing = h.run(bash_op("pwd", cwd=str(tmp_path / "nope")))
    assert missing.state is S.FAILED
    assert missing.error is not None and "does not exist" in missing.error
