"""`updraft dags next-execution` and `updraft dags trigger` end to end: a real process, a real SQLite file.

The DAGs live in one small file written into a temporary DAG folder; the expected
instants below were worked out by hand (Europe/Berlin is UTC+1 until 2024-03-31
02:00 local, UTC+2 after).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from tests.backend import clean_environ, home_database_url, shared_home_database

BERLIN = ZoneInfo("Europe/Berlin")

DAG_FILE = '''
from datetime import datetime, timedelta

from scheduler import DAG, EmptyOperator, Param

with DAG("berlin_catchup", schedule="0 6 * * *", start_date=datetime(2024, 3, 29),
         timezone="Europe/Berlin", catchup=True):
    EmptyOperator(task_id="noop")

with DAG("berlin_catchup_runs", schedule="0 6 * * *", start_date=datetime(2024, 3, 29),
         timezone="Europe/Berlin", catchup=True):
    EmptyOperator(task_id="noop")

with DAG("berlin_no_catchup", schedule="0 6 * * *", start_date=datetime(2024, 1, 1),
         timezone="Europe/Berlin", catchup=False):
    EmptyOperator(task_id="noop")

with DAG("berlin_ending", schedule="0 6 * * *", start_date=datetime(2024, 3, 29),
         end_date=datetime(2024, 3, 30, 12), timezone="Europe/Berlin", catchup=True):
    EmptyOperator(task_id="noop")

with DAG("every_6h", schedule=timedelta(hours=6), start_date=datetime(2024, 1, 1), catchup=True):
    EmptyOperator(task_id="noop")

with DAG("manual_only", schedule=None, start_date=datetime(2024, 1, 1),
         params={"count": Param(1, type="integer", minimum=1)}):
    EmptyOperator(task_id="noop")
'''


def run_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = clean_environ(keep_database=False)  # the module's home has a database of its own
    env["UPDRAFT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=timeout,
    )


def run_json(home: Path, *args: str) -> list[dict[str, object]]:
    result = run_cli(home, *args, "--output", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One UPDRAFT_HOME for the module (each test uses its own DAG or run ids)."""
    home = tmp_path_factory.mktemp("runs") / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "run_dags.py").write_text(DAG_FILE)
    with shared_home_database(home):
        yield home


@pytest.fixture
def engine(home: Path) -> Iterator[Engine]:
    """An engine on the CLI's database (migrated and synced by a CLI call first)."""
    from scheduler.db.engine import make_engine

    assert run_cli(home, "dags", "list").returncode == 0
    engine = make_engine(home_database_url(home, environ={}))
    yield engine
    engine.dispose()


def utc(year: int, month: int, day: int, hour: int = 0) -> str:
    return datetime(year, month, day, hour, tzinfo=UTC).isoformat()


def record(logical: str, start: str, end: str) -> dict[str, str]:
    return {"logical_date": logical, "data_interval_start": start, "data_interval_end": end}


# --- next-execution ----------------------------------------------------------------------------


def test_next_execution_catchup_starts_at_start_date_across_spring_forward(home: Path) -> None:
    runs = run_json(home, "dags", "next-execution", "berlin_catchup", "-n", "4")
    assert runs == [
        record(utc(2024, 3, 29, 5), utc(2024, 3, 28, 5), utc(2024, 3, 29, 5)),
        record(utc(2024, 3, 30, 5), utc(2024, 3, 29, 5), utc(2024, 3, 30, 5)),
        # 06:00 CEST (UTC+2) on the day the clocks go forward.
        record(utc(2024, 3, 31, 4), utc(2024, 3, 30, 5), utc(2024, 3, 31, 4)),
        record(utc(2024, 4, 1, 4), utc(2024, 3, 31, 4), utc(2024, 4, 1, 4)),
    ]
    default = run_json(home, "dags", "next-execution", "berlin_catchup")
    assert default == runs[:1]


def _berlin_six_before(now: datetime) -> datetime:
    local = now.astimezone(BERLIN)
    fire = datetime(local.year, local.month, local.day, 6, tzinfo=BERLIN)
    if fire > local:
        day = local.date() - timedelta(days=1)
        fire = datetime(day.year, day.month, day.day, 6, tzinfo=BERLIN)
    return fire


def _berlin_days(first: datetime, count: int) -> list[dict[str, str]]:
    """Records for ``count`` daily 06:00 Berlin fire times from ``first`` (wall-clock days)."""
    fires = [first.replace(tzinfo=None) + timedelta(days=i) for i in range(-1, count)]
    instants = [f.replace(tzinfo=BERLIN).astimezone(UTC).isoformat() for f in fires]
    return [record(instants[i + 1], instants[i], instants[i + 1]) for i in range(count)]


def test_next_execution_without_catchup_starts_at_the_latest_due_fire_time(home: Path) -> None:
    before = _berlin_six_before(datetime.now(UTC))
    runs = run_json(home, "dags", "next-execution", "berlin_no_catchup", "-n", "3")
    after = _berlin_six_before(datetime.now(UTC))
    assert runs in (_berlin_days(before, 3), _berlin_days(after, 3))


def test_next_execution_stops_at_end_date(home: Path) -> None:
    runs = run_json(home, "dags", "next-execution", "berlin_ending", "-n", "5")
    assert [r["logical_date"] for r in runs] == [utc(2024, 3, 29, 5), utc(2024, 3, 30, 5)]


def test_next_execution_timedelta_schedule(home: Path) -> None:
    runs = run_json(home, "dags", "next-execution", "every_6h", "-n", "3")
    assert runs == [
        record(utc(2024, 1, 1, 0), utc(2023, 12, 31, 18), utc(2024, 1, 1, 0)),
        record(utc(2024, 1, 1, 6), utc(2024, 1, 1, 0), utc(2024, 1, 1, 6)),
        record(utc(2024, 1, 1, 12), utc(2024, 1, 1, 6), utc(2024, 1, 1, 12)),
    ]


def test_next_execution_manual_only_dag_is_empty_with_a_note(home: Path) -> None:
    result = run_cli(home, "dags", "next-execution", "manual_only", "-n", "3", "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert "schedule=None" in result.stderr


def test_next_execution_bad_usage_exits_2(home: Path) -> None:
    unknown = run_cli(home, "dags", "next-execution", "no_such_dag")
    assert unknown.returncode == 2
    assert "no_such_dag" in unknown.stderr
    zero = run_cli(home, "dags", "next-execution", "berlin_catchup", "-n", "0")
    assert zero.returncode == 2
    assert "at least 1" in zero.stderr


def test_scheduled_runs_continue_the_list_and_manual_runs_take_no_slot(home: Path, engine: Engine) -> None:
    from scheduler.db import store
    from scheduler.db.engine import session_scope
    from scheduler.timetables.base import DataInterval

    slot = datetime(2024, 3, 30, 5, tzinfo=UTC)
    now = datetime.now(UTC)

    def scheduled(session: Any, run_id: str) -> Any:
        return store.create_dag_run(
            session,
            dag_id="berlin_catchup_runs",
            run_id=run_id,
            run_type="scheduled",
            logical_date=slot,
            data_interval=DataInterval(datetime(2024, 3, 29, 5, tzinfo=UTC), slot),
            conf={},
            state="success",
            run_after=slot,
            now=now,
            external_trigger=False,
        )

    with session_scope(engine) as session:
        scheduled(session, "scheduled__2024-03-30T05:00:00+00:00")
        with pytest.raises(store.DagRunAlreadyExists, match="logical date"):
            scheduled(session, "scheduled__again")
        with pytest.raises(store.DagRunAlreadyExists, match="DAGRun ID: 'scheduled__2024-03-30T05:00:00"):
            scheduled(session, "scheduled__2024-03-30T05:00:00+00:00")
    # The failed inserts were rolled back to their savepoints; the first run was committed.

    runs = run_json(home, "dags", "next-execution", "berlin_catchup_runs", "-n", "2")
    assert runs == [
        record(utc(2024, 3, 31, 4), utc(2024, 3, 30, 5), utc(2024, 3, 31, 4)),
        record(utc(2024, 4, 1, 4), utc(2024, 3, 31, 4), utc(2024, 4, 1, 4)),
    ]

    # A manual run at the scheduled run's logical date: allowed, and it moves nothing.
    (manual,) = run_json(home, "dags", "trigger", "berlin_catchup_runs", "--logical-date", "2024-03-30T06:00:00+01:00")
    assert manual["run_id"] == "manual__2024-03-30T05:00:00+00:00"
    assert manual["logical_date"] == utc(2024, 3, 30, 5)
    assert (manual["data_interval_start"], manual["data_interval_end"]) == (utc(2024, 3, 29, 5), utc(2024, 3, 30, 5))
    listed = run_json(home, "dags", "list-runs", "berlin_catchup_runs")
    assert sorted((r["run_type"], r["logical_date"]) for r in listed) == [
        ("manual", utc(2024, 3, 30, 5)),
        ("scheduled", utc(2024, 3, 30, 5)),
    ]
    assert run_json(home, "dags", "next-execution", "berlin_catchup_runs") == runs[:1]


# --- trigger -----------------------------------------------------------------------------------


def test_trigger_with_conf_run_id_and_logical_date_is_listed(home: Path) -> None:
    (run,) = run_json(home, "dags", "trigger", "manual_only", "--run-id", "my_run",
                      "--conf", '{"count": 3, "note": "hi"}', "--logical-date", "2024-05-06T10:00:00+02:00")
    assert run == {
        "dag_id": "manual_only",
        "run_id": "my_run",
        "state": "queued",
        "run_type": "manual",
        "logical_date": utc(2024, 5, 6, 8),
        "data_interval_start": utc(2024, 5, 6, 8),
        "data_interval_end": utc(2024, 5, 6, 8),
        "external_trigger": True,
        "conf": {"count": 3, "note": "hi"},
    }
    listed = {r["run_id"]: r for r in run_json(home, "dags", "list-runs", "manual_only")}
    assert listed["my_run"]["state"] == "queued"
    assert listed["my_run"]["run_type"] == "manual"
    assert listed["my_run"]["logical_date"] == utc(2024, 5, 6, 8)
    table = run_cli(home, "dags", "list-runs", "manual_only")
    assert "my_run" in table.stdout


def test_trigger_defaults_logical_date_to_now_and_stores_conf_as_given(home: Path) -> None:
    before = datetime.now(UTC)
    (run,) = run_json(home, "dags", "trigger", "manual_only", "--conf", '{"other": 1}')
    after = datetime.now(UTC)
    logical = datetime.fromisoformat(str(run["logical_date"]))
    assert before <= logical <= after
    assert logical.utcoffset() == timedelta(0)
    assert run["run_id"] == f"manual__{logical.isoformat()}"
    assert run["conf"] == {"other": 1}  # the param default is not written into the stored conf
    # Nothing scheduled exists for this DAG, so nothing appears in its next executions either.
    assert run_json(home, "dags", "next-execution", "manual_only") == []


def test_trigger_rejects_bad_conf_duplicates_and_unknown_dags(home: Path) -> None:
    bad = run_cli(home, "dags", "trigger", "manual_only", "--run-id", "bad", "--conf", '{"count": 0}')
    assert bad.returncode == 2
    assert "count" in bad.stderr
    not_json = run_cli(home, "dags", "trigger", "manual_only", "--conf", "{nope")
    assert not_json.returncode == 2 and "--conf" in not_json.stderr

    first = run_cli(home, "dags", "trigger", "manual_only", "--run-id", "dup")
    assert first.returncode == 0, first.stderr
    again = run_cli(home, "dags", "trigger", "manual_only", "--run-id", "dup")
    assert again.returncode == 2
    assert "DAGRun with DAG ID: 'manual_only' and DAGRun ID: 'dup' already exists" in again.stderr

    unknown = run_cli(home, "dags", "trigger", "no_such_dag")
    assert unknown.returncode == 2 and "no_such_dag" in unknown.stderr

    run_ids = {r["run_id"] for r in run_json(home, "dags", "list-runs", "manual_only")}
    assert "dup" in run_ids and "bad" not in run_ids
