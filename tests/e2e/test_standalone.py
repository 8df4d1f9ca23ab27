"""`updraft standalone` as a real process: migrates, says what runs where, serves the web UI/API with a
generated admin password, runs a triggered DAG, stops (webserver included) on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.db import migrate
from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import DagRun
from tests.backend import home_database_url
from tests.e2e.test_scheduler_process import cli_env, wait_for
from tests.web.test_server import basic, fetch, free_port, wait_until_serving

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
    port = free_port()
    env = {**cli_env(home), "UPDRAFT__CORE__DAGS_FOLDER": str(home / "dags"),
           "UPDRAFT__WEBSERVER__WEB_SERVER_PORT": str(port)}
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "standalone"],
            stdout=out_file, stderr=err_file, text=True, env=env, cwd=home,
        )
    engine = make_engine(home_database_url(home))
    try:
        wait_for("the standalone banner", lambda: "stop with Ctrl-C" in out_path.read_text())
        banner = out_path.read_text()
        assert f"webserver:   http://127.0.0.1:{port} (gunicorn" in banner
        password = banner.split("login:       admin / ", 1)[1].split()[0]
        assert "(generated now; stored hashed, never shown again)" in banner
        status, _, health = wait_until_serving(f"http://127.0.0.1:{port}/api/v1/health", proc)
        assert status == 200
        assert health["metadatabase"]["status"] == "healthy"
        wait_for("the scheduler to be reported healthy",
                 lambda: fetch(f"http://127.0.0.1:{port}/api/v1/health")[2]["scheduler"]["status"] == "healthy")
        assert fetch(f"http://127.0.0.1:{port}/api/v1/dags", basic("admin", password))[0] == 200
        assert fetch(f"http://127.0.0.1:{port}/api/v1/dags", basic("admin", "not-the-password"))[0] == 401
        wait_for("the database to be migrated", lambda: migrate.current_revision(engine) == migrate.HEAD_REVISION)
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
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        engine.dispose()
    out, err = out_path.read_text(), err_path.read_text()
    assert proc.returncode == 0, err
    with pytest.raises(OSError):  # the webserver stopped with the scheduler
        fetch(f"http://127.0.0.1:{port}/api/v1/health")
    assert password not in err
    assert out.count(password) == 1
    assert "updraft standalone" in out
    assert f"dags folder: {home / 'dags'}" in out
    assert f"database:    {home_database_url(home)}" in out
    assert "LocalExecutor" in out
    assert "scheduler stopped (received SIGINT)" in err
    log = home / "logs" / "dag_id=hello" / "run_id=r1" / "task_id=say" / "attempt=1.log"
    assert "hello from standalone" in log.read_text()


def test_standalone_with_users_prints_no_password_and_its_webserver_dies_with_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    port = free_port()
    env = {**cli_env(home), "UPDRAFT__WEBSERVER__WEB_SERVER_PORT": str(port)}
    made = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "users", "create", "-u", "ann", "-r", "Admin", "-p", "s3cret-pass"],
        capture_output=True, text=True, env=env, cwd=home, timeout=60,
    )
    assert made.returncode == 0, made.stderr
    out_path = tmp_path / "out.txt"
    with out_path.open("w") as out_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "standalone"],
            stdout=out_file, stderr=subprocess.DEVNULL, env=env, cwd=home,
        )
    try:
        wait_for("the standalone banner", lambda: "stop with Ctrl-C" in out_path.read_text())
        assert "login:       an existing user" in out_path.read_text()
        assert "admin /" not in out_path.read_text()
        assert wait_until_serving(f"http://127.0.0.1:{port}/api/v1/health", proc)[0] == 200
        assert fetch(f"http://127.0.0.1:{port}/api/v1/dags", basic("ann", "s3cret-pass"))[0] == 200
        proc.kill()  # no chance to stop its children: the webserver must notice by itself
        proc.wait()

        def webserver_gone() -> bool:
            try:
                fetch(f"http://127.0.0.1:{port}/api/v1/health")
            except OSError:
                return True
            return False

        wait_for("the orphaned webserver to stop", webserver_gone, 30.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
