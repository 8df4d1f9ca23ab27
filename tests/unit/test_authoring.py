"""The authoring API: DAG, @dag, operators, default_args, wiring, cycles, @task, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import scheduler
from scheduler import (
    DAG,
    BashOperator,
    BranchPythonOperator,
    EmptyOperator,
    Param,
    PythonOperator,
    ShortCircuitOperator,
    TriggerRule,
    XComArg,
    chain,
    cross_downstream,
    dag,
    task,
)
from scheduler.authoring import dag as dag_module
from scheduler.authoring.dag import DagParam
from scheduler.exceptions import CycleError, DagDefinitionError, TaskNotFound, UpdraftError

START = datetime(2024, 1, 1)


@pytest.fixture(autouse=True)
def _clean_registry():
    dag_module.reset_created_dags()
    yield
    dag_module.reset_created_dags()
    assert dag_module.current_dag() is None, "a test left a DAG context open"


def edges(d: DAG) -> set[tuple[str, str]]:
    return {(t.task_id, down) for t in d.tasks for down in t.downstream_task_ids}


def noop(**_: Any) -> None:
    return None


# --- the package -------------------------------------------------------------------------------


def test_import_scheduler_does_not_import_heavy_dependencies():
    code = (
        "import sys, scheduler\n"
        "heavy = ('jinja2', 'sqlalchemy', 'jsonschema', 'croniter', 'flask')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_building_a_dag_does_not_import_the_database_or_web_layers():
    code = (
        "import sys\n"
        "from datetime import timedelta\n"
        "from scheduler import DAG, BashOperator, PythonOperator, EmptyOperator, task, chain\n"
        "with DAG('d', schedule=None, default_args={'retries': 1}) as d:\n"
        "    a = BashOperator(task_id='a', bash_command='echo 1')\n"
        "    b = PythonOperator(task_id='b', python_callable=print)\n"
        "    @task\n"
        "    def c(x):\n"
        "        return x\n"
        "    chain(a, b, c(b.output))\n"
        "d.validate()\n"
        "heavy = ('sqlalchemy', 'flask', 'jinja2')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_exports_resolve_and_unknown_names_raise_attribute_error():
    for name in scheduler.__all__:
        assert getattr(scheduler, name) is not None
    assert scheduler.TriggerRule is TriggerRule
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        scheduler.Nope  # noqa: B018


# --- DAG construction and parameters -------------------------------------------------------------


def test_dag_as_context_manager_collects_tasks():
    with DAG("etl", schedule=None) as d:
        extract = BashOperator(task_id="extract", bash_command="echo {{ ds }}")
        load = PythonOperator(task_id="load", python_callable=noop)
        extract >> load
    assert d.task_ids == ["extract", "load"]
    assert extract.dag is d and load.dag_id == "etl"
    assert edges(d) == {("extract", "load")}
    assert dag_module.current_dag() is None


def test_nested_dag_contexts_restore_the_outer_dag():
    with DAG("outer", schedule=None) as outer:
        with DAG("inner", schedule=None) as inner:
            EmptyOperator(task_id="i")
        EmptyOperator(task_id="o")
    assert outer.task_ids == ["o"] and inner.task_ids == ["i"]


def test_dag_context_is_left_even_when_the_body_raises():
    with pytest.raises(RuntimeError):
        with DAG("boom", schedule=None):
            raise RuntimeError("x")
    assert dag_module.current_dag() is None


def test_operators_take_dag_argument_outside_a_context():
    d = DAG("explicit", schedule=None)
    a = EmptyOperator(task_id="a", dag=d)
    b = EmptyOperator(task_id="b", dag=d)
    a >> b
    assert d.task_ids == ["a", "b"]
    assert d.get_task("a") is a
    assert d.has_task("b") and not d.has_task("c")


def test_task_dag_setter_and_edge_to_dagless_task_adds_it():
    d = DAG("late", schedule=None)
    a = EmptyOperator(task_id="a")
    assert not a.has_dag
    a.dag = d
    b = EmptyOperator(task_id="b")
    a >> b
    assert d.task_ids == ["a", "b"]


def test_get_task_unknown_raises_task_not_found():
    d = DAG("d", schedule=None)
    with pytest.raises(TaskNotFound, match="'nope'.*'d'") as info:
        d.get_task("nope")
    assert isinstance(info.value, LookupError)


def test_every_dag_parameter_is_stored():
    def on_ok(ctx: Any) -> None: ...

    def on_fail(ctx: Any) -> None: ...

    d = DAG(
        "full",
        description="the description",
        schedule=None,
        start_date=datetime(2024, 1, 1, 6),
        end_date=datetime(2024, 12, 31),
        timezone="Europe/Berlin",
        catchup=True,
        max_active_runs=3,
        max_active_tasks=7,
        default_args={"retries": 2, "owner": "ann"},
        params={"n": 5},
        tags=["b", "a"],
        doc_md="# Doc",
        dagrun_timeout=timedelta(hours=1),
        on_success_callback=on_ok,
        on_failure_callback=[on_fail],
        is_paused_upon_creation=False,
    )
    assert d.dag_id == "full"
    assert d.description == "the description"
    assert d.schedule is None
    assert d.timezone == ZoneInfo("Europe/Berlin")
    assert d.start_date == datetime(2024, 1, 1, 5, tzinfo=UTC)
    assert d.end_date == datetime(2024, 12, 30, 23, tzinfo=UTC)
    assert d.catchup is True
    assert d.max_active_runs == 3
    assert d.max_active_tasks == 7
    assert d.default_args == {"retries": 2, "owner": "ann"}
    assert dict(d.params) == {"n": 5}
    assert sorted(d.tags) == ["a", "b"]
    assert d.doc_md == "# Doc"
    assert d.dagrun_timeout == timedelta(hours=1)
    assert d.on_success_callback is on_ok
    assert d.on_failure_callback == [on_fail]
    assert d.is_paused_upon_creation is False


def test_dag_defaults():
    d = DAG("plain")
    assert d.schedule is None
    assert d.catchup is False
    assert d.timezone is UTC
    assert d.start_date is None and d.end_date is None
    assert d.max_active_runs is None and d.max_active_tasks is None
    assert d.tags == [] and dict(d.params) == {} and d.default_args == {}
    assert d.tasks == []


def test_default_args_is_copied_not_shared():
    shared = {"retries": 1}
    d = DAG("copy", default_args=shared)
    shared["retries"] = 9
    assert d.default_args == {"retries": 1}


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
@pytest.mark.parametrize("name", ["max_active_runs", "max_active_tasks"])
def test_bad_max_active_values_are_rejected(name, value):
    with pytest.raises(DagDefinitionError, match=rf"DAG 'x': {name} must be an integer >= 1, got"):
        DAG("x", **{name: value})


@pytest.mark.parametrize("tags", ["nightly", ["ok", 3], [None]])
def test_tags_must_be_strings(tags):
    with pytest.raises(DagDefinitionError, match="DAG 'x': tags must be a list of strings"):
        DAG("x", tags=tags)


def test_end_date_before_start_date_is_rejected():
    with pytest.raises(DagDefinitionError, match="DAG 'x': end_date .* is before start_date"):
        DAG("x", start_date=datetime(2024, 2, 1), end_date=datetime(2024, 1, 1))


def test_start_and_end_date_must_be_datetimes():
    with pytest.raises(DagDefinitionError, match="DAG 'x': start_date must be a datetime, got '2024-01-01'"):
        DAG("x", start_date="2024-01-01")
    with pytest.raises(DagDefinitionError, match="DAG 'x': end_date must be a datetime"):
        DAG("x", end_date=20240101)


def test_unknown_timezone_names_the_dag_and_zone():
    with pytest.raises(DagDefinitionError, match=r"DAG 'x': unknown time zone 'Mars/Olympus'"):
        DAG("x", timezone="Mars/Olympus")


def test_timezone_of_the_wrong_type_is_a_definition_error():
    with pytest.raises(DagDefinitionError, match="DAG 'x': timezone must be"):
        DAG("x", timezone=5)


def test_naive_start_date_is_read_in_the_dags_timezone():
    d = DAG("x", start_date=datetime(2024, 7, 1, 6), timezone="America/New_York")
    assert d.start_date == datetime(2024, 7, 1, 10, tzinfo=UTC)
    assert d.start_date.tzinfo is not None


def test_naive_start_date_without_timezone_is_utc():
    d = DAG("x", start_date=START)
    assert d.timezone is UTC
    assert d.start_date == datetime(2024, 1, 1, tzinfo=UTC)


def test_aware_start_date_zone_is_used_when_no_timezone_given():
    tokyo = ZoneInfo("Asia/Tokyo")
    d = DAG("x", start_date=datetime(2024, 1, 1, 9, tzinfo=tokyo))
    assert d.timezone == tokyo
    assert d.start_date == datetime(2024, 1, 1, 0, tzinfo=UTC)


def test_explicit_timezone_wins_over_aware_start_date_zone():
    d = DAG("x", start_date=datetime(2024, 1, 1, 9, tzinfo=ZoneInfo("Asia/Tokyo")), timezone="Europe/London")
    assert d.timezone == ZoneInfo("Europe/London")
    assert d.start_date == datetime(2024, 1, 1, 0, tzinfo=UTC)


def test_timezone_given_as_a_zoneinfo_object():
    assert DAG("x", timezone=ZoneInfo("Europe/Paris")).timezone == ZoneInfo("Europe/Paris")


def test_start_date_from_default_args():
    d = DAG("x", default_args={"start_date": datetime(2024, 3, 1)}, timezone="Europe/Berlin")
    assert d.start_date == datetime(2024, 2, 29, 23, tzinfo=UTC)


def test_dagrun_timeout_must_be_a_timedelta():
    with pytest.raises(DagDefinitionError, match="DAG 'x': dagrun_timeout must be a timedelta"):
        DAG("x", dagrun_timeout=3600)


def test_schedule_interval_is_a_deprecated_alias_and_conflicts_with_schedule():
    d = DAG("x", schedule_interval=None)
    assert d.schedule is None
    assert any("schedule_interval" in msg for msg in d.deprecations)
    with pytest.raises(DagDefinitionError, match="DAG 'y': pass schedule or schedule_interval, not both"):
        DAG("y", schedule=None, schedule_interval=None)


@pytest.mark.parametrize("bad", ["", "has space", "semi;colon", "slash/id", "ü" * 0 + "x" * 251, None, 5])
def test_invalid_dag_ids(bad):
    with pytest.raises(DagDefinitionError, match="dag_id"):
        DAG(bad)


@pytest.mark.parametrize("good", ["etl", "etl.daily", "etl-daily_2", "E" * 250])
def test_valid_dag_ids(good):
    assert DAG(good).dag_id == good


# --- validate(): cycles and start_date ---------------------------------------------------------------


def test_two_cycle_is_named():
    with DAG("c2", schedule=None) as d:
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
        a >> b >> a
    with pytest.raises(CycleError) as info:
        d.validate()
    assert str(info.value) == "DAG 'c2' has a cycle: a >> b >> a"
    assert info.value.cycle == ["a", "b", "a"]
    assert info.value.dag_id == "c2"


def test_three_cycle_is_named_in_edge_order():
    with DAG("c3", schedule=None) as d:
        a, b, c = (EmptyOperator(task_id=t) for t in "abc")
        a >> b >> c >> a
    with pytest.raises(CycleError, match=r"DAG 'c3' has a cycle: a >> b >> c >> a$"):
        d.validate()


def test_cycle_not_involving_roots_and_with_tasks_downstream_of_it():
    with DAG("deep", schedule=None) as d:
        root, x, y, z, after, other = (
            EmptyOperator(task_id=t) for t in ("root", "x", "y", "z", "a_after", "other")
        )
        root >> x >> y >> z >> x
        y >> after  # 'a_after' sorts first among the unresolved tasks but is not on the cycle
        root >> other
    with pytest.raises(CycleError) as info:
        d.validate()
    assert info.value.cycle == ["x", "y", "z", "x"]
    assert "x >> y >> z >> x" in str(info.value)


def test_every_reported_cycle_edge_exists():
    with DAG("many", schedule=None) as d:
        ts = [EmptyOperator(task_id=f"t{i}") for i in range(6)]
        chain(*ts)
        ts[5] >> ts[2]
        ts[4] >> ts[1]
    with pytest.raises(CycleError) as info:
        d.topological_order()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and len(cycle) >= 3
    for up, down in zip(cycle, cycle[1:], strict=False):
        assert down in d.get_task(up).downstream_task_ids


def test_self_dependency_is_rejected_at_once():
    with DAG("self", schedule=None):
        a = EmptyOperator(task_id="a")
        with pytest.raises(DagDefinitionError, match="'a' cannot depend on itself"):
            a >> a


def test_topological_order_puts_upstream_first():
    with DAG("topo", schedule=None) as d:
        a, b, c, e = (EmptyOperator(task_id=t) for t in ("d_a", "c_b", "b_c", "a_e"))
        a >> [b, c] >> e
    order = d.topological_order()
    assert order.index("d_a") < order.index("c_b") < order.index("a_e")
    assert order.index("d_a") < order.index("b_c") < order.index("a_e")
    assert sorted(order) == sorted(d.task_ids)


def test_scheduled_dag_without_start_date_fails_validate_naming_the_dag():
    with DAG("nostart", schedule="@daily") as d:
        EmptyOperator(task_id="a")
    with pytest.raises(DagDefinitionError, match="DAG 'nostart' .*no start_date"):
        d.validate()


def test_manual_dag_needs_no_start_date():
    with DAG("manual", schedule=None) as d:
        EmptyOperator(task_id="a")
    d.validate()
    assert d.start_date is None


def test_scheduled_dag_takes_start_date_from_default_args_or_its_tasks():
    with DAG("da", schedule="@daily", default_args={"start_date": START}) as d1:
        EmptyOperator(task_id="a")
    d1.validate()
    assert d1.start_date == datetime(2024, 1, 1, tzinfo=UTC)

    with DAG("tk", schedule="@daily") as d2:
        EmptyOperator(task_id="a", start_date=datetime(2024, 5, 1))
        EmptyOperator(task_id="b", start_date=datetime(2024, 3, 1))
    d2.validate()
    assert d2.start_date == datetime(2024, 3, 1, tzinfo=UTC)


# --- operators -----------------------------------------------------------------------------------


def test_operator_common_parameters_are_stored():
    def cb(ctx: Any) -> None: ...

    with DAG("ops", schedule=None):
        t = EmptyOperator(
            task_id="t",
            retries=3,
            retry_delay=timedelta(minutes=1),
            retry_exponential_backoff=True,
            max_retry_delay=timedelta(minutes=30),
            execution_timeout=timedelta(seconds=90),
            trigger_rule=TriggerRule.ALL_DONE,
            pool="etl",
            pool_slots=2,
            priority_weight=10,
            depends_on_past=True,
            on_failure_callback=cb,
            on_success_callback=cb,
            on_retry_callback=cb,
            owner="bob",
        )
    assert t.retries == 3
    assert t.retry_delay == timedelta(minutes=1)
    assert t.retry_exponential_backoff is True
    assert t.max_retry_delay == timedelta(minutes=30)
    assert t.execution_timeout == timedelta(seconds=90)
    assert t.trigger_rule == TriggerRule.ALL_DONE
    assert t.pool == "etl" and t.pool_slots == 2
    assert t.priority_weight == 10
    assert t.depends_on_past is True
    assert t.on_failure_callback is cb and t.on_success_callback is cb and t.on_retry_callback is cb
    assert t.owner == "bob"


def test_operator_defaults():
    with DAG("ops", schedule=None):
        t = EmptyOperator(task_id="t")
    assert t.retries == 0
    assert t.retry_delay == timedelta(minutes=5)
    assert t.trigger_rule == TriggerRule.ALL_SUCCESS
    assert t.pool == "default_pool" and t.pool_slots == 1
    assert t.priority_weight == 1
    assert t.execution_timeout is None
    assert t.depends_on_past is False


def test_timedeltas_may_be_given_in_seconds():
    t = EmptyOperator(task_id="t", retry_delay=30, execution_timeout=1.5)
    assert t.retry_delay == timedelta(seconds=30)
    assert t.execution_timeout == timedelta(seconds=1.5)
    with pytest.raises(DagDefinitionError, match="task 't': retry_delay must be a timedelta or seconds"):
        EmptyOperator(task_id="t", retry_delay="5m")


def test_trigger_rule_given_as_string_is_parsed():
    t = EmptyOperator(task_id="t", trigger_rule="none_failed_min_one_success")
    assert t.trigger_rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS


def test_every_airflow_trigger_rule_is_known():
    expected = {
        "all_success",
        "all_failed",
        "all_done",
        "all_done_min_one_success",
        "all_skipped",
        "one_success",
        "one_failed",
        "one_done",
        "none_failed",
        "none_failed_min_one_success",
        "none_skipped",
        "always",
    }
    assert expected <= {r.value for r in TriggerRule}


def test_unknown_trigger_rule_names_the_task_and_lists_valid_rules():
    with pytest.raises(DagDefinitionError) as info:
        EmptyOperator(task_id="flaky", trigger_rule="sometimes")
    message = str(info.value)
    assert "task 'flaky'" in message
    assert "'sometimes'" in message
    for rule in TriggerRule:
        assert rule.value in message


@pytest.mark.parametrize("retries", [-1, "3", 1.5, True])
def test_bad_retries_are_rejected_naming_the_task(retries):
    with pytest.raises(DagDefinitionError, match="task 'r': retries must be an integer >= 0"):
        EmptyOperator(task_id="r", retries=retries)


def test_retries_none_means_zero():
    assert EmptyOperator(task_id="r", retries=None).retries == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pool_slots": 0}, "pool_slots must be an integer >= 1"),
        ({"priority_weight": "high"}, "priority_weight must be an integer"),
        ({"weight_rule": "sideways"}, "unknown weight_rule 'sideways'"),
        ({"max_active_tis_per_dag": 0}, "max_active_tis_per_dag must be an integer >= 1 or None, got 0"),
        ({"max_active_tis_per_dagrun": "2"}, "max_active_tis_per_dagrun must be an integer >= 1 or None, got '2'"),
        ({"max_active_tis_per_dag": True}, "max_active_tis_per_dag must be an integer >= 1 or None, got True"),
    ],
)
def test_other_operator_validation(kwargs, match):
    with pytest.raises(DagDefinitionError, match=f"task 'v': {match}"):
        EmptyOperator(task_id="v", **kwargs)


def test_unknown_operator_argument_names_the_operator_task_and_argument():
    with pytest.raises(DagDefinitionError, match=r"EmptyOperator \(task_id: t\): retriez"):
        EmptyOperator(task_id="t", retriez=3)


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "é!", "x" * 251, None, 3])
def test_invalid_task_ids(bad):
    with pytest.raises(DagDefinitionError, match="task_id"):
        EmptyOperator(task_id=bad)


def test_task_id_error_names_the_operator_class():
    with pytest.raises(DagDefinitionError, match=r"task_id 'bad id' \(operator BashOperator\) is invalid"):
        BashOperator(task_id="bad id", bash_command="true")


def test_duplicate_task_id_names_task_and_dag():
    with DAG("dups", schedule=None):
        EmptyOperator(task_id="same")
        with pytest.raises(
            DagDefinitionError, match="Task id 'same' has already been added to the DAG 'dups'"
        ):
            EmptyOperator(task_id="same")


def test_task_cannot_move_to_another_dag():
    d1 = DAG("one", schedule=None)
    d2 = DAG("two", schedule=None)
    t = EmptyOperator(task_id="t", dag=d1)
    with pytest.raises(DagDefinitionError, match="'t' already belongs to DAG 'one'"):
        d2.add_task(t)


def test_edges_across_dags_are_rejected():
    a = EmptyOperator(task_id="a", dag=DAG("one", schedule=None))
    b = EmptyOperator(task_id="b", dag=DAG("two", schedule=None))
    with pytest.raises(DagDefinitionError, match="different DAGs"):
        a >> b


def test_edges_between_dagless_tasks_are_rejected():
    with pytest.raises(DagDefinitionError, match="belong to no DAG"):
        EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")


def test_python_operator_requires_a_callable():
    with pytest.raises(DagDefinitionError, match="task 'p': python_callable must be callable"):
        PythonOperator(task_id="p", python_callable="print")


def test_python_operator_stores_its_arguments():
    with DAG("py", schedule=None):
        p = PythonOperator(task_id="p", python_callable=noop, op_args=(1, 2), op_kwargs={"a": 1})
    assert p.python_callable is noop
    assert p.op_args == [1, 2] and p.op_kwargs == {"a": 1}
    assert "op_kwargs" in p.template_fields


@pytest.mark.parametrize("command", [None, 42, ["echo", "hi"]])
def test_bash_operator_requires_a_string_command(command):
    with pytest.raises(DagDefinitionError, match="task 'b': bash_command must be a string"):
        BashOperator(task_id="b", bash_command=command)


def test_bash_operator_defaults_skip_on_exit_code_99_and_templates_its_command():
    b = BashOperator(task_id="b", bash_command="echo hi")
    assert b.skip_on_exit_code == frozenset({99})
    assert "bash_command" in b.template_fields
    assert (
        BashOperator(task_id="c", bash_command="x", skip_on_exit_code=None).skip_on_exit_code == frozenset()
    )
    assert BashOperator(task_id="d", bash_command="x", skip_on_exit_code=[3, 4]).skip_on_exit_code == {3, 4}


def test_branch_and_short_circuit_operators_construct():
    with DAG("br", schedule=None) as d:
        br = BranchPythonOperator(task_id="br", python_callable=lambda: "a")
        sc = ShortCircuitOperator(task_id="sc", python_callable=lambda: True)
        a = EmptyOperator(task_id="a")
        br >> a
        sc >> a
    assert br.is_branch and not sc.is_branch
    assert sc.ignore_downstream_trigger_rules is True
    assert edges(d) == {("br", "a"), ("sc", "a")}
    with pytest.raises(DagDefinitionError, match="python_callable must be callable"):
        BranchPythonOperator(task_id="x", python_callable=None)


def test_empty_operator_is_marked_as_empty():
    assert EmptyOperator(task_id="e").inherits_from_empty_operator is True
    assert BashOperator(task_id="b", bash_command="x").inherits_from_empty_operator is False


# --- default_args -----------------------------------------------------------------------------------


def test_default_args_apply_to_accepted_parameters():
    with DAG(
        "da", schedule=None, default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "pool": "p"}
    ):
        t = BashOperator(task_id="t", bash_command="true")
    assert t.retries == 2 and t.retry_delay == timedelta(minutes=1) and t.pool == "p"


def test_explicit_arguments_win_over_default_args():
    with DAG("da", schedule=None, default_args={"retries": 2, "owner": "ann"}):
        t = EmptyOperator(task_id="t", retries=5)
    assert t.retries == 5 and t.owner == "ann"


def test_explicit_none_is_an_explicit_argument():
    with DAG("da", schedule=None, default_args={"execution_timeout": timedelta(hours=1)}):
        t = EmptyOperator(task_id="t", execution_timeout=None)
    assert t.execution_timeout is None


def test_operator_specific_default_args_only_reach_operators_that_accept_them():
    args = {"bash_command": "echo default", "env": {"A": "1"}, "op_kwargs": {"x": 1}, "retries": 1}
    with DAG("mixed", schedule=None, default_args=args):
        py = PythonOperator(task_id="py", python_callable=noop)
        bash = BashOperator(task_id="bash")
        empty = EmptyOperator(task_id="empty")
    assert py.op_kwargs == {"x": 1} and py.retries == 1 and not hasattr(py, "bash_command")
    assert bash.bash_command == "echo default" and bash.env == {"A": "1"} and bash.retries == 1
    assert empty.retries == 1


def test_unknown_default_args_are_ignored():
    with DAG("da", schedule=None, default_args={"no_such_argument": 1}):
        t = EmptyOperator(task_id="t")
    assert not hasattr(t, "no_such_argument")


def test_default_args_with_dag_argument_outside_a_context():
    d = DAG("da", schedule=None, default_args={"retries": 4})
    assert EmptyOperator(task_id="t", dag=d).retries == 4


def test_operator_level_default_args_override_the_dags():
    with DAG("da", schedule=None, default_args={"retries": 1, "pool": "dagpool"}):
        t = EmptyOperator(task_id="t", default_args={"retries": 3})
    assert t.retries == 3 and t.pool == "dagpool"


def test_default_args_params_merge_with_task_params():
    with DAG("da", schedule=None, default_args={"params": {"a": 1, "b": 2}}) as d:
        t = EmptyOperator(task_id="t", params={"b": 20, "c": 30})
        u = EmptyOperator(task_id="u")
    assert dict(t.params) == {"a": 1, "b": 20, "c": 30}
    assert dict(u.params) == {"a": 1, "b": 2}
    assert dict(d.params) == {"a": 1, "b": 2}


def test_dag_params_win_over_default_args_params():
    d = DAG("da", schedule=None, default_args={"params": {"a": 1, "b": 2}}, params={"b": 3})
    assert dict(d.params) == {"a": 1, "b": 3}


def test_default_args_reach_taskflow_tasks_and_bash_only_args_do_not_break_them():
    with DAG("tf", schedule=None, default_args={"retries": 2, "bash_command": "echo x", "cwd": "/tmp"}) as d:

        @task
        def py() -> int:
            return 1

        @task.bash
        def sh() -> str:
            return "echo hi"

        py()
        sh()
    assert d.get_task("py").retries == 2
    assert d.get_task("sh").retries == 2
    assert d.get_task("sh").cwd == "/tmp"


# --- wiring ---------------------------------------------------------------------------------------------


def test_rshift_and_lshift_between_single_tasks_return_the_right_operand():
    with DAG("w", schedule=None) as d:
        a, b, c = (EmptyOperator(task_id=t) for t in "abc")
        assert (a >> b) is b
        assert (c << b) is b
    assert edges(d) == {("a", "b"), ("b", "c")}
    assert a.downstream_list == [b] and c.upstream_list == [b]


def test_shift_with_lists_on_either_side():
    with DAG("w", schedule=None) as d:
        a, b, c, e, f, g = (EmptyOperator(task_id=t) for t in "abcefg")
        a >> [b, c]  # task >> list
        [b, c] >> e  # list >> task (reflected)
        f << [a, e]  # task << list
        [f] << g  # list << task (reflected)
    assert edges(d) == {("a", "b"), ("a", "c"), ("b", "e"), ("c", "e"), ("a", "f"), ("e", "f"), ("g", "f")}


def test_reflected_shift_returns_the_task_for_further_chaining():
    with DAG("w", schedule=None) as d:
        a, b, c = (EmptyOperator(task_id=t) for t in "abc")
        result = [a, b] >> c
        assert result is c
    assert edges(d) == {("a", "c"), ("b", "c")}


def test_shifting_to_something_that_is_not_a_task_is_a_clear_error():
    with DAG("w", schedule=None):
        a = EmptyOperator(task_id="a")
        with pytest.raises(DagDefinitionError, match="cannot set a dependency on 'b'"):
            a >> "b"


def test_set_upstream_and_set_downstream():
    with DAG("w", schedule=None) as d:
        a, b, c = (EmptyOperator(task_id=t) for t in "abc")
        a.set_downstream([b, c])
        c.set_upstream(b)
    assert edges(d) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_roots_and_leaves():
    with DAG("w", schedule=None) as d:
        a, b, c, e = (EmptyOperator(task_id=t) for t in "abce")
        a >> b
        c >> b
    assert {t.task_id for t in d.roots} == {"a", "c", "e"}
    assert {t.task_id for t in d.leaves} == {"b", "e"}


def test_get_flat_relative_ids():
    with DAG("w", schedule=None):
        a, b, c, e = (EmptyOperator(task_id=t) for t in "abce")
        a >> b >> c
        e >> c
    assert a.get_flat_relative_ids() == {"b", "c"}
    assert c.get_flat_relative_ids(upstream=True) == {"a", "b", "e"}


def test_chain_simple_and_with_lists():
    with DAG("ch", schedule=None) as d:
        a, b, c, e = (EmptyOperator(task_id=t) for t in "abce")
        chain(a, [b, c], e)
    assert edges(d) == {("a", "b"), ("a", "c"), ("b", "e"), ("c", "e")}


def test_chain_pairs_adjacent_lists_of_equal_length():
    with DAG("ch", schedule=None) as d:
        t1, t2, t3, t4, t5, t6 = (EmptyOperator(task_id=f"t{i}") for i in range(1, 7))
        chain(t1, [t2, t3], [t4, t5], t6)
    assert edges(d) == {("t1", "t2"), ("t1", "t3"), ("t2", "t4"), ("t3", "t5"), ("t4", "t6"), ("t5", "t6")}


def test_chain_with_lists_of_different_lengths_fails():
    with DAG("ch", schedule=None) as d:
        a, b, c = (EmptyOperator(task_id=t) for t in "abc")
        with pytest.raises(
            DagDefinitionError, match="chain: adjacent lists must have the same length, got 2 and 1"
        ):
            chain([a, b], [c])
    assert edges(d) == set()


def test_chain_accepts_xcomargs():
    with DAG("ch", schedule=None) as d:

        @task
        def one() -> int:
            return 1

        @task
        def two() -> int:
            return 2

        e = EmptyOperator(task_id="e")
        chain(one(), [two(), e])
    assert edges(d) == {("one", "two"), ("one", "e")}


def test_cross_downstream():
    with DAG("cd", schedule=None) as d:
        a, b, c, e = (EmptyOperator(task_id=t) for t in "abce")
        cross_downstream([a, b], [c, e])
    assert edges(d) == {("a", "c"), ("a", "e"), ("b", "c"), ("b", "e")}


# --- TaskFlow ----------------------------------------------------------------------------------------------


def test_task_call_returns_an_xcomarg_and_passing_it_adds_the_edge():
    with DAG("tf", schedule=None) as d:

        @task
        def extract() -> int:
            return 1

        @task
        def load(value: int, *, label: str = "") -> None:
            return None

        out = extract()
        load(out, label=extract())
    assert isinstance(out, XComArg)
    assert out.operator is d.get_task("extract")
    assert out.key == "return_value"
    assert edges(d) == {("extract", "load"), ("extract__1", "load")}
    load_task = d.get_task("load")
    assert load_task.op_args == [out]
    assert isinstance(load_task.op_kwargs["label"], XComArg)


def test_xcomarg_nested_in_containers_adds_edges():
    with DAG("tf", schedule=None) as d:

        @task
        def src() -> int:
            return 1

        @task
        def sink(items: list[Any], mapping: dict[str, Any]) -> None:
            return None

        a = src()
        b = src()
        sink([a], {"k": (b,)})
    assert edges(d) == {("src", "sink"), ("src__1", "sink")}


def test_operator_output_passed_to_a_task_adds_the_edge():
    with DAG("tf", schedule=None) as d:
        b = BashOperator(task_id="b", bash_command="echo 1")

        @task
        def use(v: str) -> None:
            return None

        use(b.output)
        PythonOperator(task_id="p", python_callable=noop, op_kwargs={"v": b.output})
    assert edges(d) == {("b", "use"), ("b", "p")}


def test_repeated_calls_get_unique_task_ids():
    with DAG("tf", schedule=None) as d:

        @task
        def step() -> None:
            return None

        ids = [step().operator.task_id for _ in range(4)]
    assert ids == ["step", "step__1", "step__2", "step__3"]
    assert d.task_ids == ids


def test_same_function_in_two_dags_gets_the_plain_id_in_each():
    @task
    def step() -> None:
        return None

    with DAG("one", schedule=None) as d1:
        step()
    with DAG("two", schedule=None) as d2:
        step()
    assert d1.task_ids == ["step"] and d2.task_ids == ["step"]


def test_override_changes_task_id_and_arguments_without_changing_the_original():
    with DAG("tf", schedule=None, default_args={"retries": 1}) as d:

        @task(pool="p")
        def work(x: int) -> int:
            return x

        work(1)
        work.override(task_id="custom", retries=5)(2)
        work.override(trigger_rule="all_done")(3)
    assert d.task_ids == ["work", "custom", "work__1"]
    assert d.get_task("work").retries == 1
    custom = d.get_task("custom")
    assert custom.retries == 5 and custom.pool == "p"
    assert d.get_task("work__1").trigger_rule is TriggerRule.ALL_DONE


def test_task_decorator_with_explicit_task_id():
    with DAG("tf", schedule=None) as d:

        @task(task_id="named", retries=2)
        def f() -> None:
            return None

        f()
        f()
    assert d.task_ids == ["named", "named__1"]
    assert d.get_task("named").retries == 2


def test_wrong_call_arguments_name_the_task():
    with DAG("tf", schedule=None):

        @task
        def needs(x: int) -> int:
            return x

        with pytest.raises(TypeError, match="@task 'needs'.*missing a required argument: 'x'"):
            needs()


def test_decorated_task_keeps_function_metadata_and_doc():
    with DAG("tf", schedule=None) as d:

        @task
        def documented() -> None:
            """Does a thing."""

        documented()
    assert documented.__name__ == "documented"
    assert d.get_task("documented").doc_md == "Does a thing."


def _dict_return() -> dict[str, int]:
    return {}


def _typing_dict_return() -> dict:  # bare dict
    return {}


def _int_return() -> int:
    return 1


def _no_annotation():
    return {}


@pytest.mark.parametrize(
    ("func", "expected"),
    [(_dict_return, True), (_typing_dict_return, True), (_int_return, False), (_no_annotation, False)],
)
def test_multiple_outputs_is_inferred_from_a_dict_return_annotation(func, expected):
    with DAG("tf", schedule=None) as d:
        task(func)()
    assert d.tasks[0].multiple_outputs is expected


def test_explicit_multiple_outputs_wins_over_inference():
    with DAG("tf", schedule=None) as d:
        task(multiple_outputs=False)(_dict_return)()
        task(multiple_outputs=True)(_int_return)()
    assert [t.multiple_outputs for t in d.tasks] == [False, True]


def test_xcomarg_getitem_selects_a_key_and_still_adds_the_edge():
    with DAG("tf", schedule=None) as d:

        @task
        def pair() -> dict[str, int]:
            return {"a": 1, "b": 2}

        @task
        def use(a: int) -> None:
            return None

        out = pair()
        picked = out["a"]
        use(picked)
    assert isinstance(picked, XComArg)
    assert picked.key == "a" and picked.operator is out.operator
    assert out.key == "return_value"
    assert edges(d) == {("pair", "use")}


def test_xcomarg_shift_operators():
    with DAG("tf", schedule=None) as d:

        @task
        def a() -> None:
            return None

        b = EmptyOperator(task_id="b")
        c = EmptyOperator(task_id="c")
        e = EmptyOperator(task_id="e")
        out = a()
        assert (out >> b) is b
        c << out
        [e] >> out
    assert edges(d) == {("a", "b"), ("a", "c"), ("e", "a")}


def test_task_to_xcomarg_shift():
    with DAG("tf", schedule=None) as d:

        @task
        def a() -> None:
            return None

        b = EmptyOperator(task_id="b")
        b >> a()
    assert edges(d) == {("b", "a")}


def test_xcomarg_is_not_iterable_while_defining():
    with DAG("tf", schedule=None):

        @task
        def a() -> list[int]:
            return [1]

        out = a()
        with pytest.raises(TypeError, match="XComArg of task 'a' is not iterable"):
            list(out)


def test_task_branch_short_circuit_and_bash_variants():
    with DAG("tf", schedule=None) as d:

        @task.branch
        def choose() -> str:
            return "x"

        @task.short_circuit
        def gate() -> bool:
            return True

        @task.bash(env={"A": "1"})
        def sh() -> str:
            return "echo hi"

        @task.python
        def plain() -> None:
            return None

        choose()
        gate()
        sh()
        plain()
    assert isinstance(d.get_task("choose"), BranchPythonOperator)
    assert d.get_task("choose").is_branch
    assert isinstance(d.get_task("gate"), ShortCircuitOperator)
    assert isinstance(d.get_task("sh"), BashOperator)
    assert d.get_task("sh").env == {"A": "1"}
    assert isinstance(d.get_task("plain"), PythonOperator)


def test_task_outside_a_dag_builds_a_dagless_task():
    @task
    def lonely() -> None:
        return None

    out = lonely()
    assert not out.operator.has_dag
    with pytest.raises(DagDefinitionError, match="'lonely' is not assigned to a DAG"):
        out.operator.dag  # noqa: B018


# --- @dag -----------------------------------------------------------------------------------------------------


def test_dag_decorator_uses_the_function_name_and_builds_tasks():
    @dag(schedule=None, start_date=START, tags=["tf"])
    def my_pipeline():
        @task
        def a() -> int:
            return 1

        @task
        def b(x: int) -> None:
            return None

        b(a())

    d = my_pipeline()
    assert isinstance(d, DAG)
    assert d.dag_id == "my_pipeline"
    assert d.tags == ["tf"]
    assert edges(d) == {("a", "b")}
    assert dag_module.current_dag() is None


def test_dag_decorator_without_parentheses_and_with_explicit_id():
    @dag
    def bare():
        EmptyOperator(task_id="t")

    @dag("custom_id", schedule=None)
    def named():
        EmptyOperator(task_id="t")

    @dag(dag_id="kw_id")
    def by_keyword():
        pass

    assert bare().dag_id == "bare"
    assert named().dag_id == "custom_id"
    assert by_keyword().dag_id == "kw_id"


def test_dag_decorator_docstring_becomes_doc_md():
    @dag(schedule=None)
    def documented():
        """Loads the warehouse.

        More words.
        """

    d = documented()
    assert "Loads the warehouse." in d.doc_md


def test_dag_decorator_function_parameters_become_params_and_dagparams_are_passed_in():
    seen: dict[str, Any] = {}

    @dag(schedule=None)
    def parametrised(n=5, label=Param("x", type="string", enum=["x", "y"]), required=Param(type="integer")):  # noqa: B008
        seen.update(n=n, label=label, required=required)

    d = parametrised()
    assert dict(d.params) == {"n": 5, "label": "x", "required": dag_module.NOTSET}
    assert d.params.get_param("label").schema == {"type": "string", "enum": ["x", "y"]}
    assert not d.params.get_param("required").has_value
    for name in ("n", "label", "required"):
        assert isinstance(seen[name], DagParam)
        assert seen[name].name == name and seen[name].dag is d
    assert seen["n"].resolve({"params": {"n": 7}}) == 7


def test_dag_decorator_call_arguments_set_param_defaults():
    @dag(schedule=None)
    def p(n=1, m=2):
        pass

    assert dict(p(10).params) == {"n": 10, "m": 2}
    assert dict(p(m=20).params) == {"n": 1, "m": 20}


def test_dag_decorator_parameter_without_default_on_a_schedule_is_an_error():
    @dag(schedule="@daily", start_date=START)
    def needs_input(value):
        pass

    with pytest.raises(DagDefinitionError, match="param 'value' has no default"):
        needs_input()


def test_dag_decorator_invalid_param_default_is_an_error():
    @dag(schedule=None)
    def bad(n=Param("five", type="integer")):  # noqa: B008
        pass

    with pytest.raises(DagDefinitionError, match="DAG 'bad': invalid default: param 'n'"):
        bad()


def test_dag_decorator_factory_builds_independent_dags():
    @dag(schedule=None)
    def twice():
        EmptyOperator(task_id="t")

    first, second = twice(), twice()
    assert first is not second
    assert first.get_task("t") is not second.get_task("t")


def test_dagparam_default_sets_the_dag_param():
    d = DAG("dp", schedule=None)
    ref = DagParam(d, "size", 3)
    assert dict(d.params) == {"size": 3}
    assert repr(ref) == "DagParam('size')"


def test_created_dags_are_recorded_for_the_parser():
    DAG("first", schedule=None)
    DAG("second", schedule=None)
    assert [d.dag_id for d in dag_module.reset_created_dags()] == ["first", "second"]
    assert dag_module.reset_created_dags() == []


def test_definition_errors_are_updraft_value_errors():
    with pytest.raises(UpdraftError):
        DAG("bad id")
    with pytest.raises(ValueError):
        DAG("bad id")


def test_dag_decorator_function_value_wins_over_params_and_keeps_the_schema():
    @dag(
        schedule=None, params={"n": Param(1, type="integer", minimum=1, description="rows"), "other": "kept"}
    )
    def both(n=2):
        pass

    d = both()
    assert dict(d.params) == {"n": 2, "other": "kept"}
    assert d.params.get_param("n").schema == {"type": "integer", "minimum": 1, "description": "rows"}
    assert dict(both(7).params)["n"] == 7
    with pytest.raises(DagDefinitionError, match="param 'n': 0 is less than the minimum of 1"):
        both(0)


def test_dag_decorator_required_argument_keeps_a_declared_param():
    @dag(schedule=None, params={"n": Param(3, type="integer")})
    def declared(n):
        pass

    assert dict(declared().params) == {"n": 3}
