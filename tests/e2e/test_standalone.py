"""`updraft standalone` as a real process: migrates, says what runs where, runs a triggered DAG, stops on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import DagRun
from tests.e2e.test_scheduler_process import cli_env, wait_for

DAG = (
    "from datetime import datetime\n"
    "from scheduler import DAG, BashOperator\n"
    "with DAG('hello', schedule=None, start_date=datetime(2024, 1, 1)):\n"
    "    BashOperator(task_id='say', bash_command='echo hello from standalone')\n"
)


def test_standalone_migrates_reports_runs_a_dag_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "hello.py").write_text(DAG)
    env = {**cli_env(home), "UPDRAFT__CORE__DAGS_FOLDER": str(home / "dags")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "standalone"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=home,
    )
    engine = make_engine(f"sqlite:///{home / 'updraft.db'}")
    try:
        wait_for("the database to be migrated", lambda: (home / "updraft.db").exists())
        trigger = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "dags", "unpause", "hello"],
            capture_output=True, text=True, env=env, cwd=home, timeout=60,
        )
        assert trigger.returncode == 0, trigger.stderr
        trigger = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "dags", "trigger", "hello", "--run-id", "r1"],
            capture_output=True, text=True, env=env, cwd=home, timeout=60,
        )
        assert trigger.returncode == 0, trigger.stderr

        def finished() -> bool:
            with session_scope(engine, readonly=True) as session:
                return session.scalar(select(DagRun.state).where(DagRun.run_id == "r1")) == "success"

        wait_for("the triggered run to succeed", finished, 30.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        engine.dispose()
    assert proc.returncode == 0, err
    assert "updraft standalone" in out
    assert f"dags folder: {home / 'dags'}" in out
    assert f"database:    sqlite:///{home / 'updraft.db'}" in out
    assert "LocalExecutor" in out
    assert "scheduler stopped (received SIGINT)" in err
    log = home / "logs" / "dag_id=hello" / "run_id=r1" / "task_id=say" / "attempt=1.log"
    assert "hello from standalone" in log.read_text()
