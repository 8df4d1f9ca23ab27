"""The Airflow-style corpus (tests/airflow_corpus): parsed by the real parser and run by ``dags test``, unchanged.

No real Airflow is installed: every ``airflow`` import is served by updraft's shim.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.authoring import airflow_shim
from scheduler.authoring.dag import DAG
from scheduler.dagtest import run_dag_in_process
from scheduler.parsing import load_dags_from_file, parse_files
from scheduler.states import DagRunState

CORPUS = Path(__file__).resolve().parents[1] / "airflow_corpus"
FILES = sorted(CORPUS.glob("corpus_*.py"))
#: A Tuesday: the branch follows "weekday"
WHEN = datetime(2024, 3, 5, 6, tzinfo=UTC)


@pytest.fixture
def corpus() -> Iterator[dict[str, DAG]]:
    """Every corpus DAG, imported in this process (the shim is removed again afterwards)."""
    dags: dict[str, DAG] = {}
    try:
        for path in FILES:
            dags.update(load_dags_from_file(path, default_timezone="UTC", dags_folder=CORPUS))
        yield dags
    finally:
        airflow_shim.uninstall()


def test_real_airflow_is_not_installed_here() -> None:
    # the corpus runs on the shim; were Airflow installed, the shim would stay out of the way
    assert not airflow_shim.real_airflow_installed()


def test_every_corpus_file_parses_in_the_real_parser_without_errors() -> None:
    results = parse_files(FILES, timeout=30, processes=2, default_timezone="UTC", dags_folder=CORPUS)
    errors = {Path(r.fileloc).name: r.error for r in results if r.error}
    assert errors == {}
    dag_ids = sorted(d["dag_id"] for r in results for d in r.dags)
    assert dag_ids == sorted([
        "corpus_assets_consumer", "corpus_assets_producer", "corpus_airflow2_names", "corpus_branching", "corpus_classic", "corpus_controller", "corpus_mapping",
        "corpus_params", "corpus_sdk", "corpus_sensors", "corpus_task_groups", "corpus_taskflow",
        "corpus_trigger_target",
    ])
    by_id = {d["dag_id"]: d for r in results for d in r.dags}
    assert by_id["corpus_airflow2_names"]["deprecations"] == [
        "schedule_interval is deprecated; use schedule",
        "DummyOperator is deprecated; use EmptyOperator",
    ]
    groups = by_id["corpus_task_groups"]["task_group"]
    assert [c["id"] for c in groups["children"] if c["type"] == "group"] == ["section_1", "section_2", "numbers"]
    mapped = {t["task_id"]: t for t in by_id["corpus_mapping"]["tasks"] if t["is_mapped"]}
    assert sorted(mapped) == ["add_one", "bash_mapped", "combine", "multiply"]
    assert by_id["corpus_assets_consumer"]["asset_condition"]["type"] == "all"
    labels = {(e["upstream"], e["downstream"]): e["label"] for e in by_id["corpus_branching"]["edge_info"]}
    assert labels == {("branching", "weekday"): "Monday to Friday", ("branching", "weekend"): "Saturday, Sunday"}


@pytest.mark.parametrize("dag_id", [
    "corpus_assets_consumer", "corpus_assets_producer", "corpus_airflow2_names", "corpus_branching", "corpus_classic", "corpus_mapping", "corpus_params", "corpus_sdk",
    "corpus_sensors", "corpus_task_groups", "corpus_taskflow", "corpus_trigger_target",
])
def test_each_corpus_dag_runs_in_dags_test(corpus: dict[str, DAG], dag_id: str) -> None:
    out = io.StringIO()
    result = run_dag_in_process(corpus[dag_id], logical_date=WHEN, out=out, dag_loader=corpus.__getitem__)
    assert result.state is DagRunState.SUCCESS, out.getvalue()


def test_corpus_outputs_in_dags_test(corpus: dict[str, DAG]) -> None:
    out = io.StringIO()
    run = run_dag_in_process(corpus["corpus_taskflow"], logical_date=WHEN, out=out)
    assert run.xcoms["load"]["return_value"] == 1236.7
    assert run.xcoms["transform"]["count"] == 3

    run = run_dag_in_process(corpus["corpus_mapping"], logical_date=WHEN, out=out)
    assert run.mapped_xcoms["add_one"] == [2, 3, 4]
    assert run.xcoms["sum_it"]["return_value"] == 9
    assert run.xcoms["sum_products"]["return_value"] == 90
    assert run.mapped_xcoms["combine"] == [12, 34]
    assert run.mapped_xcoms["bash_mapped"] == ["one", "two"]

    run = run_dag_in_process(corpus["corpus_branching"], logical_date=WHEN, out=out)
    states = {t: str(s) for t, s in run.task_states.items()}
    assert states["weekday"] == "success" and states["weekend"] == "skipped" and states["join"] == "success"
    assert states["small"] == "success" and states["large"] == "skipped"
    assert states["never"] == "skipped" and states["after"] == "success"

    run = run_dag_in_process(corpus["corpus_airflow2_names"], logical_date=WHEN, out=out)
    assert run.xcoms["echo"]["return_value"] == "2024-03-05 2024-03-05"
    assert run.xcoms["python"]["return_value"] == "20240305"

    run = run_dag_in_process(corpus["corpus_task_groups"], logical_date=WHEN, out=out)
    assert run.xcoms["show"]["return_value"] == 42
    assert corpus["corpus_task_groups"].task_dict["section_1.task_2"].retries == 2
    assert corpus["corpus_task_groups"].task_dict["section_2.inner_section_2.task_2"].retries == 1

    run = run_dag_in_process(corpus["corpus_params"], logical_date=WHEN, out=out, conf={"count": 3})
    assert run.xcoms["greet"]["return_value"] == "hello world 3"


def test_the_controller_triggers_its_target_in_process_and_sees_it_finish(corpus: dict[str, DAG]) -> None:
    out = io.StringIO()
    run = run_dag_in_process(corpus["corpus_controller"], logical_date=WHEN, out=out, dag_loader=corpus.__getitem__)
    assert run.state is DagRunState.SUCCESS, out.getvalue()
    assert run.xcoms["trigger"]["trigger_run_id"] == "triggered_20240305"
    assert run.dag_runs is not None
    assert run.dag_runs.triggered == [("corpus_trigger_target", "triggered_20240305",
                                       {"message": "hello from corpus_controller"})]
    assert run.dag_runs.run_state("corpus_trigger_target", "triggered_20240305") == "success"
    assert "received 'hello from corpus_controller'" in out.getvalue()
    # a manual run is never skipped by LatestOnlyOperator
    assert str(run.task_states["notify"]) == "success"
