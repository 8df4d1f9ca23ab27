"""Hostile DAG files: each gets a clear result from the real parser, and the scheduler's database and the web UI
(rendered through the Flask test client) come out unharmed, with every file's text and ids escaped.

Beyond the zoo of test_parsing_zoo.py: very large files, a DAG of 10,000 tasks, deep recursion at
import (a RecursionError, and a crash of the interpreter once the limit is raised), a file that forks
or starts threads at import, a NUL byte, deeply nested brackets, DAG and task ids with unicode,
slashes or HTML, import errors whose text is HTML.
"""

from __future__ import annotations

import base64
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from scheduler.clock import utcnow
from scheduler.config import Settings, load_settings
from scheduler.dag_processing import SyncReport, sync_dag_folder
from scheduler.db import migrate
from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import Dag, DagCode, ParseImportError, SerializedDag
from tests.backend import pass_database_env

HEADER = "from datetime import datetime\nfrom scheduler import DAG, EmptyOperator\n"
TIMEOUT = "15"  # generous: under a loaded machine a 3 s import budget ran out for files meant to crash
BIG_LINES = 100_000  # 10 MB of comments before the DAG
XSS = "<script>alert('x')</script>"


def dag_file(body: str) -> str:
    return HEADER + textwrap.dedent(body).lstrip("\n")


def files(pid_file: Path) -> dict[str, str | bytes]:
    return {
        "big.py": HEADER + ("# " + "p" * 98 + "\n") * BIG_LINES
        + 'with DAG("big", schedule=None):\n    EmptyOperator(task_id="a")\n',
        "ten_thousand.py": dag_file("""
            with DAG("ten_thousand", schedule=None) as dag:
                prev = None
                for i in range(10000):
                    t = EmptyOperator(task_id=f"t{i:05d}")
                    if prev is not None and i % 100:
                        prev >> t
                    prev = t
        """),
        "recursion.py": dag_file("""
            def down(n):
                return down(n + 1)
            down(0)
        """),
        "recursion_crash.py": dag_file("""
            import sys
            sys.setrecursionlimit(10**8)
            nest = []
            for _ in range(2_000_000):
                nest = [nest]
            repr(nest)
        """),
        "nested_brackets.py": HEADER + "x = " + "[" * 200_000 + "]" * 200_000 + "\n",
        "forks_and_sleeps.py": dag_file(f"""
            import os, time
            child = os.fork()
            if child == 0:
                time.sleep(1000)
                os._exit(0)
            with open({str(pid_file)!r}, "w") as fh:
                fh.write(str(child))
            with DAG("forks_and_sleeps", schedule=None):
                EmptyOperator(task_id="a")
        """),
        "forks_and_continues.py": dag_file("""
            import os
            child = os.fork() == 0
            with DAG("forked_child" if child else "forked_parent", schedule=None):
                EmptyOperator(task_id="a")
        """),
        "threads.py": dag_file("""
            import threading, time
            threading.Thread(target=time.sleep, args=(1000,)).start()
            threading.Thread(target=lambda: [time.sleep(0.001) for _ in iter(int, 1)], daemon=True).start()
            with DAG("threads", schedule=None):
                EmptyOperator(task_id="a")
        """),
        "nul_byte.py": HEADER.encode() + b"x = 1\x00\n",
        "not_utf8_id.py": HEADER.encode() + b'DAG("caf\xe9", schedule=None)\n',
        "unicode_ids.py": dag_file(f"""
            with DAG("日本語_dag", schedule=None, description={XSS!r}, tags=["<b>tag</b>"],
                     doc_md={XSS!r}):
                EmptyOperator(task_id="ü_task", doc_md={XSS!r})
        """),
        "html_error.py": dag_file(f"""
            raise ValueError({XSS!r})
        """),
        "html_dag_id.py": dag_file("""
            DAG("<img src=x onerror=alert(1)>", schedule=None)
        """),
        "slash_dag_id.py": dag_file("""
            DAG("../../etc/passwd", schedule=None)
        """),
        "slash_task_id.py": dag_file("""
            with DAG("slash_task", schedule=None):
                EmptyOperator(task_id="a/../../b")
        """),
    }


@pytest.fixture(scope="module")
def world_database() -> Iterator[dict[str, str]]:
    """The module's database: the home's SQLite file, or a PostgreSQL database (by the pass)."""
    with pass_database_env() as entries:
        yield entries


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, world_database: dict[str, str]
) -> tuple[Settings, SyncReport, dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("hostile")
    home, folder = tmp / "home", tmp / "dags"
    folder.mkdir(parents=True)
    pid_file = tmp / "forked.pid"
    for name, content in files(pid_file).items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    settings = load_settings({"UPDRAFT_HOME": str(home), "UPDRAFT__CORE__DAGS_FOLDER": str(folder),
                              "UPDRAFT__CORE__DAGBAG_IMPORT_TIMEOUT": TIMEOUT,
                              "UPDRAFT__CORE__PARSING_PROCESSES": "2", **world_database}, cwd=tmp)
    engine = make_engine(settings.sql_alchemy_conn)
    try:
        migrate.upgrade(engine)
        report = sync_dag_folder(engine, settings, now=utcnow())
        with session_scope(engine, readonly=True) as session:
            errors = {Path(e.filename).name: e.stack_trace for e in session.scalars(select(ParseImportError))}
            dags = {d.dag_id: d for d in session.scalars(select(Dag))}
            tasks = {row.dag_id: len(row.data["tasks"]) for row in session.scalars(select(SerializedDag))}
            code_sizes = dict(session.execute(select(DagCode.fileloc, func.length(DagCode.source))).all())
    finally:
        engine.dispose()
    state = {"errors": errors, "dags": dags, "tasks": tasks, "code_sizes": code_sizes}
    return settings, report, state, pid_file


def test_large_files_and_10000_tasks_parse_and_are_stored(world: Any) -> None:
    settings, _, state, _ = world
    assert {"big", "ten_thousand"} <= set(state["dags"])
    assert state["tasks"]["ten_thousand"] == 10_000
    assert state["code_sizes"][str(settings.dags_folder / "big.py")] > 10_000_000


def test_deep_recursion_is_a_short_clear_error(world: Any) -> None:
    error = world[2]["errors"]["recursion.py"]
    assert error.rstrip().endswith("RecursionError: maximum recursion depth exceeded")
    assert "Previous line repeated" in error and len(error) < 10_000


def test_a_crash_from_recursion_with_a_raised_limit_is_reported_not_shared(world: Any) -> None:
    error = world[2]["errors"]["recursion_crash.py"]
    assert "the import ended the process: killed by signal SIGSEGV" in error
    nested = world[2]["errors"]["nested_brackets.py"]
    assert "SyntaxError: too many nested parentheses" in nested


def test_a_file_that_forks_leaves_no_process_behind(world: Any) -> None:
    settings, _, state, pid_file = world
    assert "forks_and_sleeps" in state["dags"]
    deadline = time.monotonic() + 30
    pid = int(pid_file.read_text())
    while Path(f"/proc/{pid}").exists() and _state_of(pid) not in ("Z", "X") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists() or _state_of(pid) in ("Z", "X"), "the forked child still runs"
    # A fork that carries on: the import's own process answers, and the copy is killed with the rest of
    # its process group when that process ends. If the copy answered too before it was killed, the file
    # is an error; otherwise the import process's result stands. Which happens depends on scheduling,
    # but the two results are never mixed up, and the copy never wins.
    error = state["errors"].get("forks_and_continues.py")
    assert "forked_child" not in state["dags"]
    if error is not None:
        assert "the import returned an unreadable result" in error
        assert "forked_parent" not in state["dags"]
    else:
        assert "forked_parent" in state["dags"]


def _state_of(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "X"
    return stat[stat.rfind(")") + 2:].split()[0]


def test_threads_started_at_import_do_not_hold_the_parse(world: Any) -> None:
    _, report, state, _ = world
    assert "threads" in state["dags"]
    assert "threads.py" not in state["errors"]


def test_bytes_that_cannot_be_source_are_clear_errors(world: Any) -> None:
    errors = world[2]["errors"]
    assert "source code string cannot contain null bytes" in errors["nul_byte.py"]
    assert "'utf-8' codec can't decode byte 0xe9" in errors["not_utf8_id.py"]


def test_ids_with_html_or_slashes_are_refused_by_name_unicode_letters_are_fine(world: Any) -> None:
    errors, dags = world[2]["errors"], world[2]["dags"]
    assert "dag_id '<img src=x onerror=alert(1)>' is invalid: use only letters, digits" in errors["html_dag_id.py"]
    assert "dag_id '../../etc/passwd' is invalid" in errors["slash_dag_id.py"]
    assert "task_id 'a/../../b' (operator EmptyOperator) is invalid" in errors["slash_task_id.py"]
    assert "日本語_dag" in dags


# --- the UI and the API over these --------------------------------------------------------------


@pytest.fixture(scope="module")
def client(world: Any) -> Any:
    from webserver import create_app
    from webserver.users import create_user

    settings = world[0]
    app = create_app(settings)
    app.config["TESTING"] = True
    with session_scope(app.extensions["updraft_engine"]) as session:
        create_user(session, username="admin", password="correct-horse", role="Admin")
    yield app.test_client()
    app.extensions["updraft_engine"].dispose()


AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:correct-horse").decode()}


def page(client: FlaskClient, url: str) -> str:
    response = client.get(url, headers=AUTH)
    assert response.status_code == 200, (url, response.status_code)
    return response.get_data(as_text=True)


def test_the_dag_list_and_import_error_banner_escape_everything(client: FlaskClient) -> None:
    html = page(client, "/")
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "日本語_dag" in html
    assert "&lt;script&gt;" in html or "&lt;img src=x" in html  # the banner shows the texts, escaped
    listing = page(client, "/?search=%3Cimg")
    assert "<img src=x" not in listing


@pytest.mark.parametrize("url", [
    "/dags/%E6%97%A5%E6%9C%AC%E8%AA%9E_dag",
    "/dags/%E6%97%A5%E6%9C%AC%E8%AA%9E_dag/graph",
    "/dags/%E6%97%A5%E6%9C%AC%E8%AA%9E_dag/code",
    "/dags/big/code",
])
def test_dag_pages_of_unicode_and_big_dags_escape_their_text(client: FlaskClient, url: str) -> None:
    html = page(client, url)
    assert XSS not in html and "<b>tag</b>" not in html


def test_the_api_serves_the_10000_task_dag_and_unicode_ids(client: FlaskClient) -> None:
    tasks = client.get("/api/v1/dags/ten_thousand/tasks", headers=AUTH)
    assert tasks.status_code == 200 and tasks.get_json()["total_entries"] == 10_000
    unicode_dag = client.get("/api/v1/dags/%E6%97%A5%E6%9C%AC%E8%AA%9E_dag", headers=AUTH)
    assert unicode_dag.status_code == 200 and unicode_dag.get_json()["description"] == XSS  # JSON, not HTML
    errors = client.get("/api/v1/importErrors?limit=100", headers=AUTH).get_json()
    assert errors["total_entries"] >= 9


def test_the_caller_goes_on_parsing_after_the_zoo(world: Any) -> None:
    """The sync ran in this process, as the scheduler's does: a later sync still works and sees a new file."""
    settings = world[0]
    (settings.dags_folder / "after.py").write_text(dag_file("""
        with DAG("after_the_hostiles", schedule=None):
            EmptyOperator(task_id="a")
    """))
    engine = make_engine(settings.sql_alchemy_conn)
    try:
        report = sync_dag_folder(engine, settings, now=utcnow())
        with session_scope(engine, readonly=True) as session:
            assert session.get(Dag, "after_the_hostiles") is not None
    finally:
        engine.dispose()
    assert (report.parsed, report.errors) == (1, 0)


@pytest.mark.parametrize("url", [
    "/?page=" + "9" * 40,
    "/dags/big/runs/none/tasks/a?map_index=" + "9" * 40,
    "/dags/big/runs/none/tasks/a/log.json?try=1&offset=" + "9" * 40,
    "/dags/big/runs/none/tasks/a/log.json?try=1&map_index=" + "9" * 40,
    "/api/v1/importErrors/" + "9" * 40,
    "/api/v1/dags?offset=" + "9" * 40,
    "/api/v1/eventLogs?map_index=" + "9" * 40,
    "/events?page=" + "9" * 40,
])
def test_numbers_too_big_for_the_database_are_not_server_errors(client: FlaskClient, url: str) -> None:
    assert client.get(url, headers=AUTH).status_code < 500
