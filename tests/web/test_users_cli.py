"""`updraft users create | list | delete` as real subprocesses on a fresh home."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.db.engine import make_engine, session_scope
from tests.backend import clean_environ, home_database_url
from webserver.users import authenticate


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def updraft(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environ()
    env["UPDRAFT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        capture_output=True, text=True, env=env, cwd=home, timeout=60, stdin=subprocess.DEVNULL,
    )


def can_log_in(home: Path, username: str, password: str) -> bool:
    engine = make_engine(home_database_url(home))
    try:
        with session_scope(engine, readonly=True) as session:
            return authenticate(session, username, password) is not None
    finally:
        engine.dispose()


def test_create_list_delete(home: Path) -> None:
    made = updraft(home, "users", "create", "--username", "ann", "--role", "Op", "--password", "s3cret-pass",
                   "--email", "ann@example.com", "--firstname", "Ann", "--lastname", "Smith")
    assert made.returncode == 0, made.stderr
    assert "User 'ann' created with role Op." in made.stdout
    assert "s3cret-pass" not in made.stdout
    assert can_log_in(home, "ann", "s3cret-pass")

    listed = updraft(home, "users", "list", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [{
        "id": 1, "username": "ann", "email": "ann@example.com", "first_name": "Ann", "last_name": "Smith",
        "roles": ["Op"], "active": True,
    }]
    for fmt in ("table", "plain"):
        shown = updraft(home, "users", "list", "-o", fmt)
        assert shown.returncode == 0
        assert "ann@example.com" in shown.stdout
        assert "Op" in shown.stdout
        assert "scrypt" not in shown.stdout

    gone = updraft(home, "users", "delete", "--username", "ann")
    assert gone.returncode == 0, gone.stderr
    assert "User 'ann' deleted." in gone.stdout
    assert json.loads(updraft(home, "users", "list", "-o", "json").stdout) == []


def test_random_password_is_printed_once_and_works(home: Path) -> None:
    made = updraft(home, "users", "create", "-u", "bob", "-r", "Viewer", "--use-random-password")
    assert made.returncode == 0, made.stderr
    line = next(line for line in made.stdout.splitlines() if line.startswith("Password"))
    password = line.rsplit(" ", 1)[1]
    assert len(password) >= 16
    assert can_log_in(home, "bob", password)
    assert password not in updraft(home, "users", "list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "-u", "x", "-r", "Boss", "-p", "long-enough"), "unknown role 'Boss'; expected one of Viewer, Op, Admin"),
        (("create", "-u", "x", "-r", "Viewer", "-p", "short"), "password must have at least 8 characters"),
        (("create", "-u", "x", "-r", "Viewer"), "give --password or --use-random-password"),
        (("create", "-u", "x", "-r", "Viewer", "-p", "long-enough", "--use-random-password"), "not allowed with"),
        (("delete", "-u", "nobody"), "user 'nobody' does not exist"),
    ],
)
def test_errors_exit_2_with_a_clear_message(home: Path, args: tuple[str, ...], message: str) -> None:
    result = updraft(home, "users", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_duplicate_user_exits_2(home: Path) -> None:
    assert updraft(home, "users", "create", "-u", "ann", "-r", "Viewer", "-p", "first-pass").returncode == 0
    again = updraft(home, "users", "create", "-u", "ann", "-r", "Admin", "-p", "second-pass")
    assert again.returncode == 2
    assert "user 'ann' already exists" in again.stderr
    assert can_log_in(home, "ann", "first-pass")
