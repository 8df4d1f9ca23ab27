"""The `updraft` command end to end: a real process, a real database (SQLite file or PostgreSQL), the example DAGs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from scheduler.db import migrate
from scheduler.db.engine import make_engine
from tests.backend import clean_environ, home_database_url

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "dags"


def run_cli(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = clean_environ()
    full_env["UPDRAFT_HOME"] = str(home)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=home,
        timeout=timeout,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An UPDRAFT_HOME whose dags/ holds a copy of the example DAGs."""
    home = tmp_path / "home"
    shutil.copytree(EXAMPLES, home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    return home


@pytest.mark.empty_database
def test_db_migrate_check_reset(home: Path) -> None:
    first = run_cli(home, "db", "migrate")
    assert first.returncode == 0, first.stderr
    engine = make_engine(home_database_url(home))
    try:
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    finally:
        engine.dispose()
    again = run_cli(home, "db", "migrate")
    assert again.returncode == 0, again.stderr
    check = run_cli(home, "db", "check")
    assert check.returncode == 0 and "OK" in check.stdout
    refused = run_cli(home, "db", "reset")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    reset = run_cli(home, "db", "reset", "--yes")
    assert reset.returncode == 0, reset.stderr


@pytest.mark.empty_database
def test_db_check_on_a_missing_database_says_what_to_do(home: Path) -> None:
    result = run_cli(home, "db", "check")
    assert result.returncode == 1
    assert "updraft db migrate" in result.stderr


def test_dags_list_json_has_the_api_fields(home: Path) -> None:
    result = run_cli(home, "dags", "list", "--output", "json")
    assert result.returncode == 0, result.stderr
    dags = {d["dag_id"]: d for d in json.loads(result.stdout)}
    assert set(dags) == {"tutorial_etl", "taskflow_pipeline", "branching", "params_form"}
    etl = dags["tutorial_etl"]
    assert set(etl) >= {"dag_id", "is_paused", "schedule_interval", "next_dagrun", "tags", "fileloc"}
    assert etl["schedule_interval"] == {"__type": "CronExpression", "value": "0 6 * * *"}
    assert etl["tags"] == [{"name": "etl"}, {"name": "example"}]
    assert etl["is_paused"] is True
    assert etl["fileloc"] == str(home / "dags" / "tutorial_etl.py")
    assert dags["params_form"]["schedule_interval"] is None


def test_dags_list_table_and_plain(home: Path) -> None:
    table = run_cli(home, "dags", "list")
    assert table.returncode == 0, table.stderr
    assert "tutorial_etl" in table.stdout and "dag_id" in table.stdout
    plain = run_cli(home, "dags", "list", "-o", "plain")
    assert plain.returncode == 0
    assert plain.stdout.splitlines()[0].split()[0] == "dag_id"


def test_import_errors_listed_and_cleared(home: Path) -> None:
    broken = home / "dags" / "broken.py"
    broken.write_text("from scheduler import DAG\nwith DAG('broken', schedule=None) as d:\n    x = (\n")
    result = run_cli(home, "dags", "list-import-errors", "-o", "json")
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout)
    assert [e["filename"] for e in errors] == [str(broken)]
    assert "SyntaxError" in errors[0]["stack_trace"]
    assert set(errors[0]) == {"filename", "stack_trace", "timestamp"}
    broken.write_text("from scheduler import DAG\nwith DAG('broken', schedule=None) as d:\n    pass\n")
    fixed = run_cli(home, "dags", "list-import-errors", "-o", "json")
    assert json.loads(fixed.stdout) == []
    listed = json.loads(run_cli(home, "dags", "list", "-o", "json").stdout)
    assert "broken" in {d["dag_id"] for d in listed}


@pytest.mark.parametrize("dag_id", ["tutorial_etl", "taskflow_pipeline", "branching", "params_form"])
def test_every_example_dag_passes_dags_test(home: Path, dag_id: str) -> None:
    result = run_cli(home, "dags", "test", dag_id, "2024-05-06")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "success" in result.stdout


def test_dags_test_output_shows_templates_and_xcom(home: Path) -> None:
    result = run_cli(home, "dags", "test", "tutorial_etl", "2024-05-06")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "extracting 2024-05-06" in result.stdout
    assert "loaded 3 rows for 20240506" in result.stdout


def test_branching_skips_the_other_path(home: Path) -> None:
    # 2024-05-04 is a Saturday.
    result = run_cli(home, "dags", "test", "branching", "2024-05-04")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weekday_report" in result.stdout and "skipped" in result.stdout


def test_dags_test_exits_1_when_the_run_fails(home: Path) -> None:
    (home / "dags" / "failing.py").write_text(
        "from scheduler import DAG, BashOperator\n"
        "with DAG('failing', schedule=None) as d:\n"
        "    BashOperator(task_id='boom', bash_command='echo about to fail; exit 3')\n"
    )
    result = run_cli(home, "dags", "test", "failing")
    assert result.returncode == 1
    assert "about to fail" in result.stdout
    assert "failed" in result.stdout


def test_dags_test_conf_is_validated_against_params(home: Path) -> None:
    ok = run_cli(home, "dags", "test", "params_form", "--conf", '{"replicas": 4, "dry_run": false}')
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "deploying 4 replicas to staging" in ok.stdout
    bad = run_cli(home, "dags", "test", "params_form", "--conf", '{"replicas": 40}')
    assert bad.returncode == 2
    assert "replicas" in bad.stderr
    not_json = run_cli(home, "dags", "test", "params_form", "--conf", "{nope")
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr
    not_object = run_cli(home, "dags", "test", "params_form", "--conf", "[1]")
    assert not_object.returncode == 2 and "JSON object" in not_object.stderr


def test_tasks_test_renders_templates_and_prints_the_log(home: Path) -> None:
    result = run_cli(home, "tasks", "test", "tutorial_etl", "extract", "2024-05-06")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "extracting 2024-05-06 (interval" in result.stdout


def test_tasks_list(home: Path) -> None:
    result = run_cli(home, "tasks", "list", "tutorial_etl")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["extract", "load", "transform"]
    as_json = json.loads(run_cli(home, "tasks", "list", "tutorial_etl", "-o", "json").stdout)
    assert [t["task_id"] for t in as_json] == ["extract", "transform", "load"]


def test_dags_show_prints_dot(home: Path) -> None:
    result = run_cli(home, "dags", "show", "tutorial_etl")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('digraph "tutorial_etl"')
    assert '"extract" -> "transform";' in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("dags", "test", "nope"),
        ("tasks", "test", "tutorial_etl", "nope"),
        ("tasks", "list", "nope"),
        ("dags", "show", "nope"),
        ("dags", "pause", "nope"),
    ],
)
def test_unknown_ids_exit_2_naming_them(home: Path, args: tuple[str, ...]) -> None:
    result = run_cli(home, *args)
    assert result.returncode == 2
    assert "'nope' not found" in result.stderr


def test_bad_usage_exits_2(home: Path) -> None:
    assert run_cli(home, "dags").returncode == 2
    assert run_cli(home, "dags", "list", "-o", "xml").returncode == 2
    bad_date = run_cli(home, "dags", "test", "tutorial_etl", "yesterday")
    assert bad_date.returncode == 2 and "ISO 8601" in bad_date.stderr


def test_bad_config_value_names_the_key(home: Path) -> None:
    result = run_cli(home, "dags", "list", env={"UPDRAFT__CORE__DAGBAG_IMPORT_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "dagbag_import_timeout" in result.stderr and "number" in result.stderr
    home.mkdir(exist_ok=True)
    (home / "updraft.toml").write_text("[core]\nparallelism = 'lots'\n")
    result = run_cli(home, "dags", "list")
    assert result.returncode == 2
    assert "parallelism" in result.stderr and "integer" in result.stderr


def test_pause_and_unpause(home: Path) -> None:
    assert run_cli(home, "dags", "unpause", "tutorial_etl").returncode == 0
    dags = {d["dag_id"]: d for d in json.loads(run_cli(home, "dags", "list", "-o", "json").stdout)}
    assert dags["tutorial_etl"]["is_paused"] is False
    assert run_cli(home, "dags", "pause", "tutorial_etl").returncode == 0
    dags = {d["dag_id"]: d for d in json.loads(run_cli(home, "dags", "list", "-o", "json").stdout)}
    assert dags["tutorial_etl"]["is_paused"] is True


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip()


def test_console_script_is_installed(home: Path) -> None:
    script = Path(sys.executable).parent / "updraft"
    assert script.exists(), "the `updraft` console script is not installed beside this Python"
    result = subprocess.run([str(script), "version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_templates_read_variables_from_the_database(home: Path) -> None:
    assert run_cli(home, "db", "migrate").returncode == 0
    engine = make_engine(home_database_url(home))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO variable (key, val, is_encrypted) VALUES (:key, :val, :encrypted)"),
                         {"key": "greeting", "val": "hello from a variable", "encrypted": False})
    finally:
        engine.dispose()
    (home / "dags" / "uses_var.py").write_text(
        "from scheduler import DAG, BashOperator\n"
        "with DAG('uses_var', schedule=None) as d:\n"
        "    BashOperator(task_id='say', bash_command='echo {{ var.value.greeting }}')\n"
        "    BashOperator(task_id='missing', bash_command='echo {{ var.value.nope }}')\n"
    )
    ok = run_cli(home, "tasks", "test", "uses_var", "say")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "hello from a variable" in ok.stdout
    missing = run_cli(home, "tasks", "test", "uses_var", "missing")
    assert missing.returncode == 1
    assert "nope" in missing.stdout + missing.stderr
