"""The ``airflow`` import shim: what it serves, what it refuses (clearly), and when it stays out of the way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.authoring import airflow_shim
from scheduler.parsing import DagFileImportError, load_dags_from_file, parse_files


@pytest.fixture
def shim() -> Iterator[None]:
    assert airflow_shim.install()
    try:
        yield
    finally:
        airflow_shim.uninstall()


def test_core_modules_resolve_to_updraft_objects(shim: None) -> None:
    import airflow
    from airflow.decorators import dag, task, task_group
    from airflow.exceptions import AirflowFailException, AirflowSkipException
    from airflow.models.dag import DAG
    from airflow.models.param import Param
    from airflow.operators.bash import BashOperator
    from airflow.operators.empty import EmptyOperator
    from airflow.sdk import DAG as SdkDAG
    from airflow.sensors.python import PythonSensor
    from airflow.utils.trigger_rule import TriggerRule

    import scheduler
    from scheduler.authoring.taskgroup import task_group as our_task_group

    assert airflow.DAG is DAG is SdkDAG is scheduler.DAG
    assert (dag, task, task_group) == (scheduler.dag, scheduler.task, our_task_group)
    assert BashOperator is scheduler.BashOperator and EmptyOperator is scheduler.EmptyOperator
    assert PythonSensor is scheduler.PythonSensor and Param is scheduler.Param
    assert AirflowSkipException is scheduler.TaskSkipped and AirflowFailException is scheduler.TaskFailedNoRetry
    assert TriggerRule.ALL_DONE.value == "all_done"
    assert airflow.__version__ == airflow_shim.VERSION


def test_a_provider_module_is_an_import_error_naming_it(shim: None) -> None:
    with pytest.raises(ModuleNotFoundError) as info:
        import airflow.providers.amazon.aws.hooks.s3  # noqa: F401
    text = str(info.value)
    assert "airflow.providers.amazon" in text and "updraft does not provide" in text
    assert "docs/migrating-from-airflow.md" in text


def test_a_missing_name_in_a_served_module_is_an_import_error_listing_what_is_there(shim: None) -> None:
    with pytest.raises(ImportError) as info:
        from airflow.operators.python import PythonVirtualenvOperator  # noqa: F401
    text = str(info.value)
    assert "PythonVirtualenvOperator" in text and "updraft does not provide it" in text
    assert "PythonOperator" in text  # what the module does serve


def test_the_import_error_reaches_the_parser_naming_the_missing_module(tmp_path: Path) -> None:
    path = tmp_path / "uses_s3.py"
    path.write_text(textwrap.dedent("""\
        from datetime import datetime
        from airflow import DAG
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        with DAG("uses_s3", schedule=None, start_date=datetime(2024, 1, 1)):
            pass
    """))
    [result] = parse_files([path], timeout=20, processes=1, default_timezone="UTC", dags_folder=tmp_path)
    assert result.dags == []
    assert result.error is not None
    assert "No module named 'airflow.providers.amazon'" in result.error
    assert "uses_s3.py" in result.error  # the traceback starts at the DAG file's line


def test_the_same_file_fails_clearly_in_process_too(tmp_path: Path) -> None:
    path = tmp_path / "uses_hook.py"
    path.write_text("from airflow.hooks.base import BaseHook\n")
    try:
        with pytest.raises(DagFileImportError) as info:
            load_dags_from_file(path, default_timezone="UTC", dags_folder=tmp_path)
    finally:
        airflow_shim.uninstall()
    assert "No module named 'airflow.hooks'" in str(info.value)


def test_a_real_airflow_package_wins_and_the_shim_is_not_installed(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "airflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    code = textwrap.dedent("""\
        import sys
        from scheduler.authoring import airflow_shim
        installed = airflow_shim.install()
        import airflow
        print(installed, getattr(airflow, "REAL", False), any(isinstance(f, airflow_shim.AirflowShimFinder)
              for f in sys.meta_path))
    """)
    env_path = f"{tmp_path / 'site'}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["False", "True", "False"]


def test_the_scheduler_and_webserver_processes_never_install_the_shim() -> None:
    code = textwrap.dedent("""\
        import sys
        import scheduler.loop, scheduler.cli, webserver
        from scheduler.authoring import airflow_shim
        print(any(isinstance(f, airflow_shim.AirflowShimFinder) for f in sys.meta_path), "airflow" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_deprecated_airflow2_names_are_noted_on_the_dag(shim: None) -> None:
    from datetime import datetime

    from airflow import DAG
    from airflow.operators.dummy import DummyOperator

    with DAG("old", schedule_interval="@daily", start_date=datetime(2024, 1, 1)) as dag:
        DummyOperator(task_id="d")
    assert dag.deprecations == ["schedule_interval is deprecated; use schedule",
                                "DummyOperator is deprecated; use EmptyOperator"]
    assert dag.task_dict["d"].inherits_from_empty_operator
