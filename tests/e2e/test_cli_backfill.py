"""`updraft dags backfill` end to end: a real `updraft` process, a real SQLite file.

Expected instants were worked out by hand (Europe/Berlin: UTC+1 until 2024-03-31
02:00 local, UTC+2 after; a daily 02:30 job fires at 03:00 CEST on the day of the gap).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.backend import clean_environ, home_database_url, shared_home_database

DAG_FILE = '''
from datetime import datetime

from scheduler import DAG, EmptyOperator, Param

with DAG("bf_daily", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False):
    EmptyOperator(task_id="noop")

with DAG("bf_dry", schedule="@daily", start_date=datetime(2024, 1, 1)):
    EmptyOperator(task_id="noop")

with DAG("bf_berlin", schedule="30 2 * * *", start_date=datetime(2024, 1, 1), timezone="Europe/Berlin",
         params={"count": Param(1, type="integer", minimum=1)}):
    EmptyOperator(task_id="noop")

with DAG("bf_reprocess", schedule="@daily", start_date=datetime(2024, 1, 1)):
    EmptyOperator(task_id="noop")

with DAG("bf_manual", schedule=None, start_date=datetime(2024, 1, 1)):
    EmptyOperator(task_id="noop")

with DAG("bf_once", schedule="@once", start_date=datetime(2024, 1, 1)):
    EmptyOperator(task_id="noop")
'''


def run_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed `updraft` console script, as a user runs it."""
    env = clean_environ(keep_database=False)  # the module's home has a database of its own
    env["UPDRAFT_HOME"] = str(home)
    updraft = Path(sys.executable).parent / "updraft"
    command = [str(updraft)] if updraft.exists() else [sys.executable, "-m", "scheduler.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=home, timeout=timeout)


def run_json(home: Path, *args: str) -> Any:
    result = run_cli(home, *args, "--output", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One UPDRAFT_HOME for the module; each test uses its own DAG or dates."""
    home = tmp_path_factory.mktemp("backfill") / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "backfill_dags.py").write_text(DAG_FILE)
    with shared_home_database(home):
        yield home


@pytest.fixture
def engine(home: Path) -> Iterator[Engine]:
    from scheduler.db.engine import make_engine

    assert run_cli(home, "dags", "list").returncode == 0
    engine = make_engine(home_database_url(home, environ={}))
    yield engine
    engine.dispose()


def utc(month: int, day: int, hour: int = 0, minute: int = 0) -> str:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC).isoformat()


def runs_of(home: Path, dag_id: str) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in run_json(home, "dags", "list-runs", dag_id)}


def test_backfill_table_output_creates_queued_runs(home: Path) -> None:
    result = run_cli(home, "dags", "backfill", "bf_daily", "--start-date", "2024-03-01", "--end-date", "2024-03-03")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "logical_date" in lines[1] and "run_id" in lines[1] and "outcome" in lines[1]
    for day in (1, 2, 3):
        (row,) = [line for line in lines if utc(3, day) in line and "backfill__" in line]
        assert f"backfill__{utc(3, day)}" in row and "created" in row
    assert "is paused" in result.stderr and "updraft dags unpause bf_daily" in result.stderr
    listed = runs_of(home, "bf_daily")
    assert sorted(listed) == [f"backfill__{utc(3, d)}" for d in (1, 2, 3)]
    assert {(r["run_type"], r["state"]) for r in listed.values()} == {("backfill", "queued")}


def test_backfill_json_across_the_dst_gap_with_conf_then_again_skips(home: Path, engine: Engine) -> None:
    from sqlalchemy import select

    from scheduler.db.engine import session_scope
    from scheduler.db.models import DagRun

    args = ("dags", "backfill", "bf_berlin", "-s", "2024-03-30T00:00:00+01:00", "-e", "2024-04-01T12:00:00+02:00")
    first = run_json(home, *args, "--conf", '{"count": 2}')
    assert first == [
        {"logical_date": utc(3, 30, 1, 30), "run_id": f"backfill__{utc(3, 30, 1, 30)}", "outcome": "created"},
        {"logical_date": utc(3, 31, 1), "run_id": f"backfill__{utc(3, 31, 1)}", "outcome": "created"},
        {"logical_date": utc(4, 1, 0, 30), "run_id": f"backfill__{utc(4, 1, 0, 30)}", "outcome": "created"},
    ]
    listed = runs_of(home, "bf_berlin")
    gap_run = listed[f"backfill__{utc(3, 31, 1)}"]
    assert (gap_run["data_interval_start"], gap_run["data_interval_end"]) == (utc(3, 30, 1, 30), utc(3, 31, 1))
    with session_scope(engine, readonly=True) as session:
        stored = session.scalars(select(DagRun).where(DagRun.dag_id == "bf_berlin")).all()
    assert [(r.conf, r.external_trigger) for r in stored] == [({"count": 2}, False)] * 3
    again = run_json(home, *args)
    assert [r["outcome"] for r in again] == ["skipped (exists, queued)"] * 3
    assert [r["run_id"] for r in again] == [r["run_id"] for r in first]
    assert len(runs_of(home, "bf_berlin")) == 3


def test_dry_run_prints_the_plan_and_writes_nothing(home: Path) -> None:
    result = run_cli(home, "dags", "backfill", "bf_dry", "-s", "2024-04-01", "-e", "2024-04-02", "--dry-run", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"logical_date": utc(4, 1), "run_id": f"backfill__{utc(4, 1)}", "outcome": "would be created"},
        {"logical_date": utc(4, 2), "run_id": f"backfill__{utc(4, 2)}", "outcome": "would be created"},
    ]
    assert "dry run" in result.stderr
    assert runs_of(home, "bf_dry") == {}


def test_reprocess_failed_requeues_only_the_failed_run(home: Path, engine: Engine) -> None:
    from scheduler.db import store
    from scheduler.db.engine import session_scope

    day = datetime(2024, 2, 1, tzinfo=UTC)
    with session_scope(engine) as session:
        for offset, state in ((0, "failed"), (1, "success")):
            logical = day.replace(day=1 + offset)
            store.create_dag_run(
                session, dag_id="bf_reprocess", run_id=f"scheduled__{logical.isoformat()}", run_type="scheduled",
                logical_date=logical, data_interval=None, conf={}, state=state, run_after=logical, now=logical,
                external_trigger=False,
            )
    base = ("dags", "backfill", "bf_reprocess", "-s", "2024-02-01", "-e", "2024-02-03")
    dry = run_json(home, *base, "--reprocess-behavior", "failed", "--dry-run")
    assert [r["outcome"] for r in dry] == ["would be requeued", "skipped (exists, success)", "would be created"]
    done = run_json(home, *base, "--reprocess-behavior", "failed")
    assert done == [
        {"logical_date": utc(2, 1), "run_id": f"scheduled__{utc(2, 1)}", "outcome": "requeued"},
        {"logical_date": utc(2, 2), "run_id": f"scheduled__{utc(2, 2)}", "outcome": "skipped (exists, success)"},
        {"logical_date": utc(2, 3), "run_id": f"backfill__{utc(2, 3)}", "outcome": "created"},
    ]
    states = {r["run_id"]: (r["run_type"], r["state"]) for r in runs_of(home, "bf_reprocess").values()}
    assert states == {
        f"scheduled__{utc(2, 1)}": ("scheduled", "queued"),
        f"scheduled__{utc(2, 2)}": ("scheduled", "success"),
        f"backfill__{utc(2, 3)}": ("backfill", "queued"),
    }


def test_a_range_without_dates_is_not_an_error(home: Path) -> None:
    result = run_cli(home, "dags", "backfill", "bf_daily", "-s", "2024-03-10T01:00:00", "-e", "2024-03-10T23:00:00",
                     "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert "no logical dates between 2024-03-10T01:00:00+00:00 and 2024-03-10T23:00:00+00:00" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no_such_dag", "-s", "2024-03-01", "-e", "2024-03-02"), "updraft: error: DAG 'no_such_dag' not found"),
        (("bf_daily", "-s", "2024-03-05", "-e", "2024-03-01"),
         "--start-date 2024-03-05T00:00:00+00:00 is after --end-date 2024-03-01T00:00:00+00:00"),
        (("bf_manual", "-s", "2024-03-01", "-e", "2024-03-02"),
         "DAG 'bf_manual' has no time-based schedule (schedule=None)"),
        (("bf_once", "-s", "2024-03-01", "-e", "2024-03-02"), "DAG 'bf_once' has no time-based schedule (schedule='@once')"),
        (("bf_daily", "-s", "March 1st", "-e", "2024-03-02"), "--start-date: 'March 1st' is not an ISO 8601 date"),
        (("bf_daily", "-s", "2024-03-01", "-e", "2024-13-01"), "--end-date: '2024-13-01' is not an ISO 8601 date"),
        (("bf_berlin", "-s", "2024-03-01", "-e", "2024-03-02", "--conf", "{nope"), "--conf is not valid JSON"),
        (("bf_berlin", "-s", "2024-03-01", "-e", "2024-03-02", "--conf", "[1]"), "--conf must be a JSON object"),
        (("bf_berlin", "-s", "2024-03-01", "-e", "2024-03-02", "--conf", '{"count": 0}'), "count"),
        (("bf_daily", "-s", "2024-03-01"), "the following arguments are required: --end-date"),
        (("bf_daily", "-s", "2024-03-01", "-e", "2024-03-02", "--reprocess-behavior", "all"),
         "argument --reprocess-behavior: invalid choice: 'all'"),
    ],
    ids=["unknown-dag", "start-after-end", "no-schedule", "once", "bad-start", "bad-end", "conf-not-json",
         "conf-not-object", "conf-fails-params", "missing-end", "bad-reprocess"],
)
def test_errors_exit_2_with_the_reason_and_write_nothing(home: Path, args: tuple[str, ...], message: str) -> None:
    result = run_cli(home, "dags", "backfill", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    if args[0] in ("bf_manual", "bf_once"):
        assert runs_of(home, args[0]) == {}
    if "--conf" in args:
        assert not any(r["logical_date"] == utc(3, 1, 1, 30) for r in runs_of(home, "bf_berlin").values())
