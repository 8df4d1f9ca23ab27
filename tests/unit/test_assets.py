"""Assets: URIs, conditions, schedules made of assets (alone or with a timetable), and their serialized form."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from scheduler import DAG, EmptyOperator
from scheduler.authoring import airflow_shim
from scheduler.authoring.assets import Asset, AssetAll, AssetAny, AssetOrTimeSchedule, evaluate_condition
from scheduler.exceptions import DagDefinitionError, ScheduleError
from scheduler.serialization import SerializedDAG, serialize_dag
from scheduler.timetables import CronTriggerTimetable

START = datetime(2024, 1, 1)
A, B, C = Asset("s3://b/a"), Asset("s3://b/b"), Asset("file:///data/c.csv")


@pytest.mark.parametrize(("uri", "message"), [
    ("", "must be a non-empty string"),
    (5, "must be a non-empty string"),
    (" s3://x", "surrounding spaces"),
    ("airflow://x", "the 'airflow' scheme is reserved"),
    ("x" * 3001, "longer than 3000"),
])
def test_bad_asset_uris_are_refused(uri: object, message: str) -> None:
    with pytest.raises(DagDefinitionError, match=message):
        Asset(uri)  # type: ignore[arg-type]


def test_conditions_all_any_and_operators() -> None:
    cond = (A | B) & C
    assert isinstance(cond, AssetAll)
    data = cond.serialize()
    assert data == {"type": "all", "objects": [{"type": "any", "objects": [{"type": "asset", "uri": "s3://b/a"},
                                                                           {"type": "asset", "uri": "s3://b/b"}]},
                                               {"type": "asset", "uri": "file:///data/c.csv"}]}
    for updated, expected in [({"s3://b/a"}, False), ({"s3://b/a", "file:///data/c.csv"}, True),
                              ({"s3://b/b", "file:///data/c.csv"}, True), ({"file:///data/c.csv"}, False)]:
        assert cond.evaluate(updated) is expected
        assert evaluate_condition(data, updated) is expected
    assert AssetAny(A, B).uris() == ["s3://b/a", "s3://b/b"]
    with pytest.raises(DagDefinitionError, match="expected an Asset"):
        A | "s3://x"  # type: ignore[operator]


def test_a_dag_scheduled_on_assets_has_no_time_runs_and_serializes_its_condition() -> None:
    with DAG("consumer", schedule=[A, B], start_date=START) as dag:
        EmptyOperator(task_id="t", outlets=[C, "not an asset"])
    data = serialize_dag(dag)
    assert not dag.timetable.can_be_scheduled
    assert data["timetable_summary"] == "Asset"
    assert data["asset_condition"] == AssetAll(A, B).serialize()
    assert data["tasks"][0]["outlet_assets"] == ["file:///data/c.csv"]
    assert SerializedDAG.from_dict(data).timetable.can_be_scheduled is False


def test_asset_or_time_schedule_keeps_the_timetable_and_adds_the_condition() -> None:
    schedule = AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC"), assets=A | B)
    with DAG("both", schedule=schedule, start_date=START) as dag:
        EmptyOperator(task_id="t")
    data = serialize_dag(dag)
    assert data["timetable"]["__type"] == "cron" and dag.timetable.can_be_scheduled
    assert data["asset_condition"]["type"] == "any"


def test_a_list_mixing_assets_and_other_things_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="a list schedule must hold only assets"):
        DAG("bad", schedule=[A, "@daily"], start_date=START)


@pytest.fixture
def shim() -> Iterator[None]:
    airflow_shim.install()
    try:
        yield
    finally:
        airflow_shim.uninstall()


def test_airflow_dataset_names_are_served(shim: None) -> None:
    from airflow.datasets import Dataset
    from airflow.timetables.datasets import DatasetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable as AirflowCron

    assert Dataset is Asset and DatasetOrTimeSchedule is AssetOrTimeSchedule and AirflowCron is CronTriggerTimetable
