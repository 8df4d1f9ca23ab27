"""A DAG's schedule as the author writes it: validated when the DAG is built, errors name the DAG,
the expression and the reason. (Needs the real timetables package, not the stub.)"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from scheduler import DAG, EmptyOperator, Param
from scheduler.authoring import dag as dag_module
from scheduler.exceptions import DagDefinitionError, ScheduleError
from scheduler.serialization import SerializedDAG, serialize_dag

START = datetime(2024, 1, 1)


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    dag_module.reset_created_dags()


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "minute"),
        ("0 25 * * *", "hour"),
        ("0 0 32 * *", "day"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * 8", "week"),
        ("* * * *", "field"),
        ("* * * * * * *", "field"),
        ("0 6 * * mon-funday", "week"),
        ("every day", "field"),
    ],
)
def test_invalid_cron_names_dag_expression_and_why(expression, reason):
    with pytest.raises(ScheduleError) as info:
        DAG("bad_cron", schedule=expression, start_date=START)
    message = str(info.value)
    assert "DAG 'bad_cron'" in message
    assert expression in message
    assert reason in message.lower()


def test_unknown_preset_names_it():
    with pytest.raises(ScheduleError, match=r"DAG 'p'.*@fortnightly"):
        DAG("p", schedule="@fortnightly", start_date=START)


def test_empty_schedule_string_is_rejected():
    with pytest.raises(ScheduleError, match="DAG 'e'"):
        DAG("e", schedule="", start_date=START)


@pytest.mark.parametrize("schedule", [5, 1.5, ["0 6 * * *"], {"cron": "* * * * *"}])
def test_schedule_of_the_wrong_type_is_rejected(schedule):
    with pytest.raises(ScheduleError, match="DAG 'w'"):
        DAG("w", schedule=schedule, start_date=START)


@pytest.mark.parametrize("delta", [timedelta(0), timedelta(hours=-1)])
def test_non_positive_timedelta_schedule_is_rejected(delta):
    with pytest.raises(ScheduleError, match="DAG 'd'.*positive"):
        DAG("d", schedule=delta, start_date=START)


def test_schedule_errors_are_dag_definition_errors():
    assert issubclass(ScheduleError, DagDefinitionError)
    with pytest.raises(DagDefinitionError):
        DAG("x", schedule="nonsense", start_date=START)


@pytest.mark.parametrize(
    "schedule",
    [
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@yearly",
        "@once",
        "0 6 * * *",
        "*/15 9-17 * * 1-5",
        timedelta(hours=6),
    ],
)
def test_valid_schedules_can_be_scheduled(schedule):
    d = DAG("ok", schedule=schedule, start_date=START, timezone="Europe/Berlin")
    assert d.timetable.can_be_scheduled
    assert d.schedule == schedule


def test_no_schedule_means_manual_only():
    assert not DAG("m", schedule=None).timetable.can_be_scheduled
    assert not DAG("m2").timetable.can_be_scheduled


def test_cron_summary_is_the_expression():
    assert DAG("c", schedule="0 6 * * *", start_date=START).timetable.summary == "0 6 * * *"


def test_schedule_interval_alias_validates_too():
    d = DAG("alias", schedule_interval="@daily", start_date=START)
    assert d.timetable.can_be_scheduled
    with pytest.raises(ScheduleError, match="DAG 'alias2'.*61 \\* \\* \\* \\*"):
        DAG("alias2", schedule_interval="61 * * * *", start_date=START)


def test_timetable_object_is_used_as_is():
    timetable = DAG("src", schedule="0 6 * * *", start_date=START).timetable
    assert DAG("dst", schedule=timetable, start_date=START).timetable is timetable
    assert DAG("dst2", timetable=timetable, start_date=START).timetable is timetable


def test_missing_start_date_error_names_the_schedule():
    with DAG("nostart", schedule="0 6 * * *") as d:
        EmptyOperator(task_id="a")
    with pytest.raises(
        DagDefinitionError, match=r"DAG 'nostart' has schedule '0 6 \* \* \*' but no start_date"
    ):
        d.validate()


def test_param_without_default_on_a_cron_schedule_is_an_error():
    with pytest.raises(DagDefinitionError, match="param 'who' has no default"):
        DAG("p", schedule="0 6 * * *", start_date=START, params={"who": Param(type="string")})


@pytest.mark.parametrize("schedule", [None, "@once", "@daily", "30 6 * * 1-5", timedelta(hours=2)])
def test_timetable_survives_serialization(schedule):
    d = DAG("ser", schedule=schedule, start_date=START, timezone="Europe/Berlin")
    restored = SerializedDAG.from_dict(json.loads(json.dumps(serialize_dag(d))))
    assert restored.timetable == d.timetable
    assert restored.timetable.can_be_scheduled == d.timetable.can_be_scheduled
