"""`updraft tasks clear | states-for-dag-run | mark` and `updraft dags mark-run`, end to end.

A real `updraft` process on a real SQLite file. Runs are created with `dags trigger`; their
task instances are written straight into the database (what the scheduler and the task
runner would have recorded), then the CLI is run against them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from scheduler.db.engine import session_scope
from scheduler.db.models import DagRun, TaskInstance
from scheduler.states import DagRunState
from scheduler.states import TaskInstanceState as S
from tests.backend import clean_environ, home_database_url

DAG_FILE = '''
from datetime import datetime

from scheduler import DAG, EmptyOperator

with DAG("shop", schedule=None, start_date=datetime(2024, 1, 1)):
    extract = EmptyOperator(task_id="extract", retries=2)
    transform = EmptyOperator(task_id="transform", retries=1)
    load = EmptyOperator(task_id="load")
    report = EmptyOperator(task_id="report")
    extract >> transform >> [load, report]
'''

T0 = datetime(2024, 3, 1, 6, tzinfo=UTC)


def run_cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = clean_environ()
    env["UPDRAFT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        capture_output=True, text=True, env=env, cwd=home, timeout=120,
        input=stdin if stdin is not None else "",
    )


def ok(home: Path, *args: str, stdin: str | None = None) -> str:
    result = run_cli(home, *args, stdin=stdin)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "shop.py").write_text(DAG_FILE)
    return home


@pytest.fixture
def engine(home: Path) -> Iterator[Engine]:
    from scheduler.db.engine import make_engine

    ok(home, "dags", "list")
    engine = make_engine(home_database_url(home))
    yield engine
    engine.dispose()


def make_run(home: Path, engine: Engine, run_id: str, logical: datetime, run_state: DagRunState,
             tis: dict[str, tuple[S, int]]) -> None:
    """Trigger a run, then record its state and task instances as if it had run."""
    ok(home, "dags", "trigger", "shop", "--run-id", run_id, "--logical-date", logical.isoformat())
    retries = {"extract": 2, "transform": 1}
    with session_scope(engine) as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == run_id))
        assert run is not None
        run.state = run_state
        run.start_date = logical
        run.end_date = logical + timedelta(hours=1) if run_state in (DagRunState.SUCCESS, DagRunState.FAILED) else None
        for task_id, (state, try_number) in tis.items():
            session.add(TaskInstance(
                dag_id="shop", run_id=run_id, task_id=task_id, state=state, try_number=try_number,
                max_tries=retries.get(task_id, 0), start_date=logical if try_number else None,
                end_date=logical + timedelta(minutes=1) if state in (S.SUCCESS, S.FAILED) else None,
                updated_at=logical,
            ))


@pytest.fixture
def runs(home: Path, engine: Engine) -> Engine:
    make_run(home, engine, "ok_run", T0, DagRunState.SUCCESS,
             {"extract": (S.SUCCESS, 1), "transform": (S.SUCCESS, 1), "load": (S.SUCCESS, 1), "report": (S.SUCCESS, 1)})
    make_run(home, engine, "bad_run", T0 + timedelta(days=1), DagRunState.FAILED, {
        "extract": (S.SUCCESS, 1), "transform": (S.FAILED, 2), "load": (S.UPSTREAM_FAILED, 0),
        "report": (S.UPSTREAM_FAILED, 0)})
    make_run(home, engine, "live_run", T0 + timedelta(days=2), DagRunState.RUNNING, {
        "extract": (S.SUCCESS, 1), "transform": (S.RUNNING, 1), "load": (S.NONE, 0), "report": (S.NONE, 0)})
    return engine


def states(engine: Engine, run_id: str) -> dict[str, str]:
    with session_scope(engine, readonly=True) as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.state).where(TaskInstance.run_id == run_id))
        return {task_id: str(state) for task_id, state in rows}


def run_state(engine: Engine, run_id: str) -> str:
    with session_scope(engine, readonly=True) as session:
        return str(session.scalar(select(DagRun.state).where(DagRun.run_id == run_id)))


# --- tasks clear --------------------------------------------------------------------------------


def test_clear_yes_with_regex_and_downstream(runs: Engine, home: Path) -> None:
    out = ok(home, "tasks", "clear", "shop", "-t", "^transform$", "-d", "-s", "2024-03-01", "-e", "2024-03-01T23:00",
             "--yes")
    assert "You are about to clear these 3 task instance(s) of DAG 'shop':" in out
    assert "Cleared 3 task instance(s)" in out
    assert "Are you sure" not in out
    assert states(runs, "ok_run") == {"extract": "success", "transform": "none", "load": "none", "report": "none"}
    assert run_state(runs, "ok_run") == "queued"
    assert run_state(runs, "bad_run") == "failed"  # outside the date range


def test_clear_prompt_answered_no_changes_nothing(runs: Engine, home: Path) -> None:
    out = ok(home, "tasks", "clear", "shop", "--only-failed", stdin="n\n")
    assert "You are about to clear these 3 task instance(s)" in out
    lines = [line for line in out.splitlines() if line.startswith("| bad_run")]
    assert len(lines) == 3 and "failed" in lines[0] and "upstream_failed" in lines[1]
    assert "Are you sure? [y/N]" in out and "Cancelled, nothing was cleared" in out
    assert states(runs, "bad_run")["transform"] == "failed"
    assert run_state(runs, "bad_run") == "failed"
    # no answer at all (end of input) is a no as well
    out = ok(home, "tasks", "clear", "shop", "--only-failed")
    assert "Cancelled, nothing was cleared" in out
    assert states(runs, "bad_run")["transform"] == "failed"


def test_clear_prompt_answered_yes(runs: Engine, home: Path) -> None:
    out = ok(home, "tasks", "clear", "shop", "-f", stdin="y\n")
    assert "Cleared 3 task instance(s)" in out
    assert states(runs, "bad_run") == {"extract": "success", "transform": "none", "load": "none", "report": "none"}
    assert run_state(runs, "bad_run") == "queued"
    with session_scope(runs, readonly=True) as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.run_id == "bad_run",
                                                       TaskInstance.task_id == "transform"))
        assert ti is not None and (ti.try_number, ti.max_tries) == (2, 3)


def test_clear_only_running_upstream_and_dry_run(runs: Engine, home: Path) -> None:
    out = ok(home, "tasks", "clear", "shop", "-t", "^transform$", "-u", "--dry-run")
    assert "You are about to clear these 6 task instance(s)" in out and "Dry run: nothing was cleared" in out
    assert states(runs, "ok_run")["extract"] == "success"
    ok(home, "tasks", "clear", "shop", "-r", "-y")
    assert states(runs, "live_run")["transform"] == "none"
    assert run_state(runs, "live_run") == "running"
    assert ok(home, "tasks", "clear", "shop", "-t", "^nothing$", "-y").strip() == "No task instances to clear"


def test_clear_errors(runs: Engine, home: Path) -> None:
    result = run_cli(home, "tasks", "clear", "nope", "--yes")
    assert result.returncode == 2 and "updraft: error: DAG 'nope' not found" in result.stderr
    result = run_cli(home, "tasks", "clear", "shop", "-t", "(", "--yes")
    assert result.returncode == 2 and "-t/--task-regex: invalid task regex '('" in result.stderr
    result = run_cli(home, "tasks", "clear", "shop", "-s", "2024-03-05", "-e", "2024-03-01", "--yes")
    assert result.returncode == 2 and "is after --end-date" in result.stderr
    result = run_cli(home, "tasks", "clear", "shop", "-s", "yesterday", "--yes")
    assert result.returncode == 2 and "--start-date" in result.stderr
    assert run_state(runs, "bad_run") == "failed"


# --- tasks states-for-dag-run ---------------------------------------------------------------------


def test_states_for_dag_run_table_and_json(runs: Engine, home: Path) -> None:
    table = ok(home, "tasks", "states-for-dag-run", "shop", "bad_run")
    header = [c.strip() for c in table.splitlines()[1].strip("|").split("|")]
    assert header == ["dag_id", "run_id", "logical_date", "task_id", "map_index", "state", "try_number",
                      "start_date", "end_date"]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[3:-1]]
    assert [(row[3], row[5], row[6]) for row in body] == [
        ("extract", "success", "1"), ("transform", "failed", "2"), ("load", "upstream_failed", "0"),
        ("report", "upstream_failed", "0")]  # the DAG's task order
    records = json.loads(ok(home, "tasks", "states-for-dag-run", "shop", "live_run", "--output", "json"))
    assert records[1] == {
        "dag_id": "shop", "run_id": "live_run", "logical_date": "2024-03-03T06:00:00+00:00", "task_id": "transform",
        "map_index": -1, "state": "running", "try_number": 1, "start_date": "2024-03-03T06:00:00+00:00",
        "end_date": None,
    }
    assert [r["state"] for r in records] == ["success", "running", "none", "none"]
    plain = ok(home, "tasks", "states-for-dag-run", "shop", "ok_run", "-o", "plain")
    assert plain.splitlines()[0].split() == ["dag_id", "run_id", "logical_date", "task_id", "map_index", "state",
                                             "try_number", "start_date", "end_date"]


def test_states_for_dag_run_errors(runs: Engine, home: Path) -> None:
    result = run_cli(home, "tasks", "states-for-dag-run", "shop", "missing")
    assert result.returncode == 2 and "updraft: error: DAG run 'missing' of DAG 'shop' not found" in result.stderr
    result = run_cli(home, "tasks", "states-for-dag-run", "ghost", "ok_run")
    assert result.returncode == 2 and "DAG 'ghost' not found" in result.stderr


# --- marking ----------------------------------------------------------------------------------------


def test_tasks_mark(runs: Engine, home: Path) -> None:
    out = ok(home, "tasks", "mark", "shop", "live_run", "transform", "--state", "success")
    assert out.strip() == "Task instance shop.transform of run live_run: running -> success"
    assert states(runs, "live_run")["transform"] == "success"
    ok(home, "tasks", "mark", "shop", "live_run", "load", "--state", "skipped")
    assert states(runs, "live_run")["load"] == "skipped"
    assert run_state(runs, "live_run") == "running"


def test_tasks_mark_errors(runs: Engine, home: Path) -> None:
    result = run_cli(home, "tasks", "mark", "shop", "live_run", "nope", "--state", "success")
    assert result.returncode == 2 and "Task 'nope' not found in DAG 'shop'" in result.stderr
    result = run_cli(home, "tasks", "mark", "shop", "live_run", "load", "--state", "success", "--map-index", "3")
    assert result.returncode == 2
    assert "Task 'load' (map index 3) has no task instance in DAG run 'live_run' of DAG 'shop'" in result.stderr
    result = run_cli(home, "tasks", "mark", "shop", "no_run", "load", "--state", "failed")
    assert result.returncode == 2 and "DAG run 'no_run' of DAG 'shop' not found" in result.stderr
    result = run_cli(home, "tasks", "mark", "ghost", "live_run", "load", "--state", "failed")
    assert result.returncode == 2 and "DAG 'ghost' not found" in result.stderr
    result = run_cli(home, "tasks", "mark", "shop", "live_run", "load", "--state", "running")
    assert result.returncode == 2 and "invalid choice: 'running'" in result.stderr
    assert states(runs, "live_run")["load"] == "none"


def test_dags_mark_run_failed_success_and_queued(runs: Engine, home: Path) -> None:
    out = ok(home, "dags", "mark-run", "shop", "live_run", "--state", "failed")
    assert out.splitlines()[0] == "DAG run live_run of DAG shop: running -> failed; 3 task instance(s) changed"
    assert "  transform: running -> failed" in out and "  load: none -> skipped" in out
    assert states(runs, "live_run") == {"extract": "success", "transform": "failed", "load": "skipped",
                                        "report": "skipped"}
    assert run_state(runs, "live_run") == "failed"
    out = ok(home, "dags", "mark-run", "shop", "bad_run", "--state", "success")
    assert "failed -> success; 0 task instance(s) changed" in out
    assert run_state(runs, "bad_run") == "success"
    out = ok(home, "dags", "mark-run", "shop", "ok_run", "--state", "queued")
    assert "success -> queued; 4 task instance(s) changed" in out
    assert set(states(runs, "ok_run").values()) == {"none"}
    assert run_state(runs, "ok_run") == "queued"


def test_dags_mark_run_errors(runs: Engine, home: Path) -> None:
    result = run_cli(home, "dags", "mark-run", "shop", "nope", "--state", "success")
    assert result.returncode == 2 and "DAG run 'nope' of DAG 'shop' not found" in result.stderr
    result = run_cli(home, "dags", "mark-run", "ghost", "ok_run", "--state", "success")
    assert result.returncode == 2 and "DAG 'ghost' not found" in result.stderr
    result = run_cli(home, "dags", "mark-run", "shop", "ok_run")
    assert result.returncode == 2 and "--state" in result.stderr
