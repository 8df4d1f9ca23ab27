"""`updraft` commands that meet a transient database error: a command that is one unit of work runs again
as a whole; when every attempt fails, or for any other database error, the command says what and why in
one line (no traceback) and exits 1, having changed nothing.

In this process (``scheduler.cli.main``) on a real SQLite file: another connection holds the write lock
and the command's connections give up on a lock at once, so SQLite raises "database is locked".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler import cli
from tests.locks import HeldWriteLock

pytestmark = pytest.mark.sqlite_only  # the lock is SQLite's


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    monkeypatch.setenv("UPDRAFT_HOME", str(home))
    monkeypatch.chdir(home)
    assert cli.main(["db", "migrate"]) == 0
    monkeypatch.setattr("scheduler.db.engine.SQLITE_BUSY_TIMEOUT_MS", 0)
    return home


@pytest.fixture
def locked(home: Path) -> Iterator[HeldWriteLock]:
    lock = HeldWriteLock(home / "updraft.db")
    yield lock
    lock.stop()


def variable_keys(capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert cli.main(["variables", "list", "-o", "json"]) == 0
    return [v["key"] for v in json.loads(capsys.readouterr().out)]


def test_a_write_command_that_meets_a_lock_runs_again_and_writes_once(
    locked: HeldWriteLock, capsys: pytest.CaptureFixture[str]
) -> None:
    locked.release_after = 1
    assert cli.main(["variables", "set", "region", "eu"]) == 0
    out = capsys.readouterr().out
    assert out.count("Variable region created") == 1
    assert len(locked.retries) == 1 and "updraft variables set" in locked.retries[0]
    assert variable_keys(capsys) == ["region"]


def test_a_command_that_stays_locked_says_so_in_one_line_and_changes_nothing(
    locked: HeldWriteLock, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["variables", "set", "region", "eu"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("updraft: database error: database is locked; the database stayed busy")
    assert "nothing was changed: run the command again" in captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    assert len(locked.retries) == 4
    locked.unlock()
    assert variable_keys(capsys) == []


def test_a_command_outside_the_retried_ones_is_not_run_again(
    locked: HeldWriteLock, capsys: pytest.CaptureFixture[str]
) -> None:
    (Path.cwd() / "dags" / "one.py").write_text(
        "from datetime import datetime\nfrom scheduler import DAG, EmptyOperator\n"
        "with DAG('one', schedule=None, start_date=datetime(2024, 1, 1)):\n    EmptyOperator(task_id='t')\n"
    )
    locked.unlock()
    assert cli.main(["dags", "list", "-o", "plain"]) == 0
    locked.holder.execute("BEGIN IMMEDIATE")
    capsys.readouterr()
    # users create may ask for a password: it is never run again, and says what happened.
    assert cli.main(["users", "create", "-u", "ann", "-r", "Viewer", "-p", "correct-horse-battery"]) == 1
    captured = capsys.readouterr()
    assert locked.retries == []
    assert captured.err.startswith("updraft: database error: database is locked")


def test_a_database_error_that_is_not_transient_is_one_line_too(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    with sqlite3.connect(home / "updraft.db") as db:
        db.execute("DROP TABLE variable")
    assert cli.main(["variables", "set", "region", "eu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("updraft: database error: no such table: variable")
    assert "run the command again" not in err and "Traceback" not in err
