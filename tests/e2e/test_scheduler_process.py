"""`updraft scheduler` as a real process on a temporary UPDRAFT_HOME: creates runs, notices new files, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import Dag, DagRun
from tests.backend import clean_environ, home_database_url

#: How long the scheduler may take to create runs or notice a new file (it looks about once a second).
DEADLINE_S = 10.0
#: How long it may take to exit after SIGTERM.
EXIT_DEADLINE_S = 5.0


def dag_file(dag_id: str, start: datetime) -> str:
    return (
        "from datetime import datetime\n"
        "from scheduler import DAG, EmptyOperator\n"
        f"with DAG({dag_id!r}, schedule='@daily', start_date=datetime({start.year}, {start.month}, {start.day}),\n"
        "         catchup=True):\n"
        "    EmptyOperator(task_id='noop')\n"
    )


def cli_env(home: Path) -> dict[str, str]:
    env = clean_environ()
    env["UPDRAFT_HOME"] = str(home)
    env["UPDRAFT__CORE__PARSING_PROCESSES"] = "1"
    return env


def wait_for(what: str, check: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.1)  # polling the database, not waiting for a fixed time


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    return home


@pytest.fixture
def engine(home: Path) -> Iterator[Engine]:
    engine = make_engine(home_database_url(home))
    yield engine
    engine.dispose()


def test_scheduler_creates_runs_notices_new_files_and_stops_on_sigterm(home: Path, engine: Engine) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=3)
    (home / "dags" / "catchup.py").write_text(dag_file("catchup", start))
    env = cli_env(home)
    unpause = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "dags", "unpause", "catchup"],
        capture_output=True, text=True, env=env, cwd=home, timeout=60,
    )
    assert unpause.returncode == 0, unpause.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "scheduler"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=home,
    )
    try:
        expected = {start + timedelta(days=i) for i in range(4)}

        def runs_exist() -> bool:
            with session_scope(engine, readonly=True) as session:
                found = set(session.scalars(select(DagRun.logical_date).where(DagRun.dag_id == "catchup")))
            return expected <= found

        wait_for("the catchup runs", runs_exist)

        (home / "dags" / "newcomer.py").write_text(dag_file("newcomer", start))

        def newcomer_listed() -> bool:
            with session_scope(engine, readonly=True) as session:
                return session.get(Dag, "newcomer") is not None

        wait_for("the new DAG file to be parsed", newcomer_listed)

        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=EXIT_DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert f"scheduler started, dags folder {home / 'dags'}" in stderr
    assert "scheduler stopped (received SIGTERM)" in stderr
    with session_scope(engine, readonly=True) as session:
        paused = session.scalar(select(Dag.is_paused).where(Dag.dag_id == "newcomer"))
        newcomer_runs = session.scalars(select(DagRun.id).where(DagRun.dag_id == "newcomer")).all()
    assert paused is True and newcomer_runs == []  # new DAGs are paused at creation
