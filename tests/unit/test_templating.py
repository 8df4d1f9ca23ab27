"""The Jinja context and the rendering of templated fields."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler import DAG, BashOperator, Param, PythonOperator, dag, task
from scheduler.authoring.baseoperator import BaseOperator
from scheduler.exceptions import ParamValidationError, TemplateError
from scheduler.runtime import MemoryXComStore, RuntimeDagRun, RuntimeTaskInstance
from scheduler.templating import (
    build_context,
    ds_add,
    ds_format,
    render_string,
    render_template_fields,
    resolve_task_params,
    to_jsonable,
)

# 23:30 in New York on 9 March 2024 is 04:30 UTC on the 10th: ds/ts are the UTC values.
LOGICAL = datetime(2024, 3, 9, 23, 30, 15, tzinfo=ZoneInfo("America/New_York"))
RUN_ID = "manual__2024-03-10T04:30:15+00:00"


def make_context(
    op: BaseOperator,
    *,
    conf: dict[str, Any] | None = None,
    variables: dict[str, str] | None = None,
    xcom: MemoryXComStore | None = None,
) -> dict[str, Any]:
    ti = RuntimeTaskInstance(task=op, run_id=RUN_ID, xcom=xcom or MemoryXComStore())
    return build_context(
        dag=op.dag,
        task=op,
        ti=ti,
        run_id=RUN_ID,
        logical_date=LOGICAL,
        data_interval_start=LOGICAL - timedelta(days=1),
        data_interval_end=LOGICAL,
        conf=conf,
        params=resolve_task_params(op, conf),
        variables=None if variables is None else variables.get,
    )


def bash(bash_command: str, **dag_kwargs: Any) -> BashOperator:
    with DAG("tpl", schedule=None, **dag_kwargs):
        return BashOperator(task_id="b", bash_command=bash_command)


def render(text: str, **ctx_kwargs: Any) -> Any:
    op = bash(text)
    return render_template_fields(op, make_context(op, **ctx_kwargs))["bash_command"]


# --- the context ------------------------------------------------------------------------------


def test_context_has_airflows_keys() -> None:
    op = bash("true")
    context = make_context(op)
    assert set(context) == {
        "dag", "task", "ti", "task_instance", "run_id", "dag_run", "conf", "params", "macros", "var", "conn",
        "logical_date", "execution_date", "data_interval_start", "data_interval_end",
        "ds", "ds_nodash", "ts", "ts_nodash", "ts_nodash_with_tz", "task_instance_key_str",
        "inlets", "outlets", "templates_dict", "expanded_ti_count", "map_index_template", "test_mode",
    }
    assert context["dag"] is op.dag and context["task"] is op
    assert context["ti"] is context["task_instance"]
    assert context["run_id"] == RUN_ID
    assert context["inlets"] == [] and context["outlets"] == []
    assert context["templates_dict"] is None and context["expanded_ti_count"] is None


def test_dates_are_in_utc_like_airflow() -> None:
    context = make_context(bash("true"))
    assert context["ds"] == "2024-03-10"
    assert context["ds_nodash"] == "20240310"
    assert context["ts"] == "2024-03-10T04:30:15+00:00"
    assert context["ts_nodash"] == "20240310T043015"
    assert context["ts_nodash_with_tz"] == "20240310T043015+0000"
    assert context["logical_date"] == datetime(2024, 3, 10, 4, 30, 15, tzinfo=UTC)
    assert context["logical_date"].tzinfo is UTC
    assert context["execution_date"] == context["logical_date"]
    assert context["data_interval_start"] == datetime(2024, 3, 9, 4, 30, 15, tzinfo=UTC)
    assert context["data_interval_end"] == context["logical_date"]
    assert context["task_instance_key_str"] == "tpl__b__20240310"


def test_date_keys_and_filters_render() -> None:
    assert render("{{ ds }} {{ ts }} {{ logical_date | ds_nodash }} {{ data_interval_start | ts_nodash }}") == (
        "2024-03-10 2024-03-10T04:30:15+00:00 20240310 20240309T043015"
    )


def test_dag_run_conf_params_and_ti() -> None:
    with DAG("tpl", schedule=None, params={"n": Param(1, type="integer"), "who": "world"}):
        op = BashOperator(task_id="b", bash_command="true", params={"who": "task"})
    context = make_context(op, conf={"n": 7, "extra": "x"})
    run = context["dag_run"]
    assert isinstance(run, RuntimeDagRun)
    assert (run.dag_id, run.run_id, run.run_type, run.logical_date) == ("tpl", RUN_ID, "manual", context["logical_date"])
    assert run.conf == {"n": 7, "extra": "x"} == context["conf"]
    assert run.data_interval_start == context["data_interval_start"]
    assert context["params"] == {"n": 7, "who": "task", "extra": "x"}  # DAG < task < conf
    assert context["ti"].get_dagrun() is run
    assert render_template_fields(op, context)["bash_command"] == "true"
    with pytest.raises(ParamValidationError, match="'n'"):
        make_context(op, conf={"n": "seven"})


def test_templates_see_context_objects() -> None:
    text = "{{ dag.dag_id }}/{{ task.task_id }}/{{ ti.try_number }}/{{ dag_run.conf.k }}/{{ conf.k }}/{{ run_id }}"
    assert render(text, conf={"k": "v"}) == f"tpl/b/1/v/v/{RUN_ID}"


def test_macros() -> None:
    assert ds_add("2015-01-01", 5) == "2015-01-06"
    assert ds_add("2015-01-06", -5) == "2015-01-01"
    assert ds_add("2015-01-06", 0) == "2015-01-06"
    assert ds_format("2015-01-01", "%Y-%m-%d", "%m-%d-%y") == "01-01-15"
    assert render("{{ macros.ds_add(ds, -1) }} {{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m/%Y') }}") == (
        "2024-03-09 10/03/2024"
    )
    assert render("{{ (logical_date + macros.timedelta(hours=1)).hour }}") == "5"
    assert render("{{ macros.datetime(2020, 1, 2).strftime('%Y') }}") == "2020"
    assert render("{{ macros.json.dumps({'a': 1}) }}") == '{"a": 1}'
    assert len(render("{{ macros.uuid.uuid4() }}")) == 36
    assert 0 <= float(render("{{ macros.random() }}")) < 1
    assert float(render("{{ macros.time.time() }}")) > 0


# --- variables --------------------------------------------------------------------------------


VARIABLES = {"bucket": "s3://data", "cfg": '{"retries": 3, "tags": ["a"]}', "broken": "{nope"}


def test_variables_by_value_json_and_get() -> None:
    assert render("{{ var.value.bucket }}", variables=VARIABLES) == "s3://data"
    assert render("{{ var.value['bucket'] }}", variables=VARIABLES) == "s3://data"
    assert render("{{ var.json.cfg.retries }} {{ var.json.cfg.tags[0] }}", variables=VARIABLES) == "3 a"
    assert render("{{ var.value.get('missing', 'dflt') }}", variables=VARIABLES) == "dflt"
    assert render("{{ var.json.get('missing', {'x': 1}).x }}", variables=VARIABLES) == "1"
    assert render("{{ var.value.get('bucket', 'dflt') }}", variables=VARIABLES) == "s3://data"


@pytest.mark.parametrize(
    "text",
    ["{{ var.value.missing }}", "{{ var.value['missing'] }}", "{{ var.json.missing }}", "{{ var.value.get('missing') }}"],
)
def test_unknown_variable_names_it_the_task_and_the_field(text: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(text, variables=VARIABLES)
    assert str(info.value).startswith("task 'b', field 'bash_command': ")
    assert "Variable 'missing' does not exist" in str(info.value)


def test_variable_that_is_not_json_is_named() -> None:
    with pytest.raises(TemplateError, match="Variable 'broken' is not valid JSON"):
        render("{{ var.json.broken }}", variables=VARIABLES)


def test_no_variable_getter_means_no_variables() -> None:
    with pytest.raises(TemplateError, match="Variable 'bucket' does not exist"):
        render("{{ var.value.bucket }}")
    assert render("{{ var.value.get('bucket', 'none') }}") == "none"


def test_variables_work_from_python_code_too() -> None:
    context = make_context(bash("true"), variables=VARIABLES)
    assert context["var"].value.bucket == "s3://data"
    assert context["var"].json.get("cfg") == {"retries": 3, "tags": ["a"]}


# --- errors -------------------------------------------------------------------------------------


def test_undefined_variable_error_names_task_and_field() -> None:
    with pytest.raises(TemplateError) as info:
        render("echo {{ foo }}")
    assert str(info.value) == "task 'b', field 'bash_command': 'foo' is undefined"


def test_undefined_attribute_is_an_error_too() -> None:
    with pytest.raises(TemplateError, match="task 'b', field 'bash_command': .*'nope'"):
        render("{{ dag_run.conf.nope }}")


def test_syntax_error_names_task_field_and_line() -> None:
    with pytest.raises(TemplateError) as info:
        render("echo one\necho {{ ds }\n")
    message = str(info.value)
    assert message.startswith("task 'b', field 'bash_command': template syntax error at line 2: ")


def test_error_inside_a_template_is_wrapped_naming_the_field() -> None:
    with DAG("tpl", schedule=None):
        op = PythonOperator(task_id="p", python_callable=print, op_kwargs={"x": "{{ 1 / 0 }}"})
    with pytest.raises(TemplateError, match="task 'p', field 'op_kwargs': rendering failed: ZeroDivisionError"):
        render_template_fields(op, make_context(op))


# --- template files ---------------------------------------------------------------------------------


def test_sh_file_is_loaded_from_the_dag_folder_and_rendered(tmp_path: Path) -> None:
    (tmp_path / "script.sh").write_text("echo {{ ds }}\necho {{ params.who }}\n")
    with DAG("tpl", schedule=None, fileloc=str(tmp_path / "my_dag.py"), params={"who": "me"}):
        op = BashOperator(task_id="b", bash_command="script.sh")
    rendered = render_template_fields(op, make_context(op))
    assert rendered["bash_command"] == "echo 2024-03-10\necho me"
    assert op.bash_command == "echo 2024-03-10\necho me"


def test_template_searchpath_and_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "run.sh").write_text("echo searchpath {{ ds_nodash }}")
    (tmp_path / "abs.bash").write_text("echo absolute {{ ds_nodash }}")
    with DAG("tpl", schedule=None, fileloc=str(tmp_path / "elsewhere" / "d.py"), template_searchpath=str(tmp_path / "sql")):
        op = BashOperator(task_id="b", bash_command="run.sh")
        op2 = BashOperator(task_id="b2", bash_command=str(tmp_path / "abs.bash"))
    assert render_template_fields(op, make_context(op))["bash_command"] == "echo searchpath 20240310"
    assert render_template_fields(op2, make_context(op2))["bash_command"] == "echo absolute 20240310"


def test_missing_template_file_names_the_file_and_the_folders(tmp_path: Path) -> None:
    with DAG("tpl", schedule=None, fileloc=str(tmp_path / "d.py")):
        op = BashOperator(task_id="b", bash_command="nothere.sh")
    with pytest.raises(TemplateError) as info:
        render_template_fields(op, make_context(op))
    assert "task 'b', field 'bash_command': template file 'nothere.sh' not found in" in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_syntax_error_in_a_template_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.sh").write_text("echo ok\n\necho {% if %}\n")
    with DAG("tpl", schedule=None, fileloc=str(tmp_path / "d.py")):
        op = BashOperator(task_id="b", bash_command="bad.sh")
    with pytest.raises(TemplateError, match=r"field 'bash_command': template syntax error \(template file 'bad.sh'\) at line 3"):
        render_template_fields(op, make_context(op))


def test_trailing_space_keeps_a_command_from_being_read_as_a_file() -> None:
    assert render("./run.sh ") == "./run.sh "


# --- rendering values ----------------------------------------------------------------------------


def test_nested_structures_are_rendered_keys_left_alone() -> None:
    with DAG("tpl", schedule=None):
        op = PythonOperator(
            task_id="p",
            python_callable=print,
            op_args=["{{ ds }}", ("{{ ds_nodash }}", 5), {"{{ ds }}": ["{{ run_id }}", None]}],
            op_kwargs={"when": {"day": "{{ ds }}", "n": 3, "flags": {"{{ ts_nodash }}"}}},
        )
    rendered = render_template_fields(op, make_context(op))
    assert op.op_args == ["2024-03-10", ("20240310", 5), {"{{ ds }}": [RUN_ID, None]}]
    assert op.op_kwargs == {"when": {"day": "2024-03-10", "n": 3, "flags": {"20240310T043015"}}}
    assert rendered["op_args"] == ["2024-03-10", ["20240310", 5], {"{{ ds }}": [RUN_ID, None]}]
    assert rendered["op_kwargs"] == {"when": {"day": "2024-03-10", "n": 3, "flags": ["20240310T043015"]}}
    assert rendered["templates_dict"] is None
    json.dumps(rendered)


def test_native_rendering_keeps_python_types() -> None:
    with DAG("tpl", schedule=None, render_template_as_native_obj=True, params={"n": 4}):
        op = PythonOperator(
            task_id="p", python_callable=print,
            op_kwargs={"n": "{{ params.n + 1 }}", "items": "{{ [params.n, 'x'] }}", "text": "{{ ds }}"},
        )
    render_template_fields(op, make_context(op))
    assert op.op_kwargs == {"n": 5, "items": [4, "x"], "text": "2024-03-10"}


def test_without_native_rendering_everything_is_text() -> None:
    with DAG("tpl", schedule=None, params={"n": 4}):
        op = PythonOperator(task_id="p", python_callable=print, op_kwargs={"n": "{{ params.n + 1 }}"})
    render_template_fields(op, make_context(op))
    assert op.op_kwargs == {"n": "5"}


def test_user_defined_macros_and_filters() -> None:
    op = bash(
        "{{ greeting }} {{ 'abc' | shout }}",
        user_defined_macros={"greeting": "hello"},
        user_defined_filters={"shout": lambda s: s.upper() + "!"},
    )
    assert render_template_fields(op, make_context(op))["bash_command"] == "hello ABC!"


def test_xcom_args_are_resolved_and_not_rendered_again() -> None:
    with DAG("tpl", schedule=None):
        @task
        def produce() -> dict[str, str]:
            return {"a": "x"}

        out = produce()
        op = PythonOperator(
            task_id="p", python_callable=print,
            op_args=[out], op_kwargs={"nested": [out["a"], "{{ ds }}"], "whole": out},
        )
    xcom = MemoryXComStore()
    xcom.push("tpl", RUN_ID, "produce", -1, "return_value", {"a": "{{ not rendered }}"})
    xcom.push("tpl", RUN_ID, "produce", -1, "a", "{{ raw }}")
    render_template_fields(op, make_context(op, xcom=xcom))
    assert op.op_args == [{"a": "{{ not rendered }}"}]
    assert op.op_kwargs == {"nested": ["{{ raw }}", "2024-03-10"], "whole": {"a": "{{ not rendered }}"}}


def test_missing_xcom_resolves_to_none() -> None:
    with DAG("tpl", schedule=None):
        up = BashOperator(task_id="up", bash_command="true")
        op = PythonOperator(task_id="p", python_callable=print, op_args=[up.output])
    render_template_fields(op, make_context(op))
    assert op.op_args == [None]


def test_dag_params_of_a_dag_function_are_resolved() -> None:
    @dag(schedule=None)
    def with_param(size: int = 3) -> None:
        @task
        def show(n: int) -> int:
            return n

        show(size)

    built = with_param()
    op = built.get_task("show")
    render_template_fields(op, make_context(op, conf={"size": 10}))
    assert op.op_args == [10]


def test_render_string_renders_text_with_the_dag_environment() -> None:
    op = bash("true", user_defined_macros={"who": "you"})
    assert render_string(op, "hi {{ who }} {{ ds }}", make_context(op)) == "hi you 2024-03-10"
    with pytest.raises(TemplateError, match="^task 'b': 'nope' is undefined$"):
        render_string(op, "{{ nope }}", make_context(op))


def test_to_jsonable() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    assert to_jsonable({"a": (1, when), 2: {"b"}, "o": object}) == {
        "a": [1, "2024-01-01T00:00:00+00:00"], "2": ["b"], "o": str(object),
    }


# --- deprecation and imports ---------------------------------------------------------------------------


def test_execution_date_use_is_logged_as_deprecated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scheduler.templating")
    assert render("{{ ds }}") == "2024-03-10"
    assert "execution_date" not in caplog.text
    assert render("{{ execution_date | ds }}") == "2024-03-10"
    assert "'execution_date' is deprecated; use 'logical_date'" in caplog.text
    caplog.clear()
    context = make_context(bash("true"))
    assert context["execution_date"] == context["logical_date"]
    assert "deprecated" in caplog.text


def test_importing_templating_does_not_import_jinja() -> None:
    code = "import sys, scheduler.templating, scheduler.execution, scheduler.dagtest; print('jinja2' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
