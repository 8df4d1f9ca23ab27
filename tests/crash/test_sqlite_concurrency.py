"""SQLite under concurrent writers: scheduler, webserver and CLI at once never show "database is locked".

For 12 s, on one SQLite file: the real scheduler (LocalExecutor) runs a busy DAG (six tasks
per run, up to 8 runs at once); the real webserver (gunicorn, two workers) receives API writes
from three client threads (trigger runs, pause and unpause, clear task instances, set
Variables); a CLI thread runs `updraft dags trigger`, `updraft tasks clear ... --yes` and
`updraft variables set` in a loop. Then the DAG is left unpaused and every run must finish.
No request may answer anything but 200, no CLI command may fail, and no log (scheduler,
webserver, task tries) may mention "database is locked".

The postgres pass (UPDRAFT_TEST_BACKEND=postgres) runs the same load on a PostgreSQL database:
there a deadlock or a failed request would show the same way.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash.test_webserver_kill import start_server
from tests.e2e.test_execution_e2e import Home
from tests.web.test_server import free_port

DURATION_S = 12.0
FINISH_DEADLINE_S = 90.0
CLIENT_THREADS = 3
#: Runs each client thread triggers at most (each is six tries for the scheduler to finish).
TRIGGERS_PER_THREAD = 10
AUTH = "Basic " + base64.b64encode(b"admin:busy-test-pass").decode()
LOCKED = "database is locked"

BUSY_DAG = """
from datetime import datetime
from scheduler import DAG, PythonOperator


def work(ti, **_):
    print("working on", ti.task_id)
    return ti.task_id


with DAG("busy", schedule=None, start_date=datetime(2024, 1, 1), max_active_runs=8, max_active_tasks=8):
    first = PythonOperator(task_id="t0", python_callable=work)
    last = PythonOperator(task_id="t5", python_callable=work)
    for i in range(1, 5):
        first >> PythonOperator(task_id=f"t{i}", python_callable=work) >> last
"""


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "home")
    try:
        yield h
    finally:
        h.close()


class ApiWriters:
    """Client threads sending a random mix of API writes until stopped; every answer is kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[str, int, str]] = []  # (what, status, body when not 200)
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(CLIENT_THREADS)]
        for t in self.threads:
            t.start()

    def _request(self, method: str, path: str, body: object) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=json.dumps(body), headers={
                "Authorization": AUTH, "Content-Type": "application/json", "Accept": "application/json"})
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            conn.close()

    def _loop(self, index: int) -> None:
        rng = random.Random(index)
        n = 0
        triggered: list[str] = []
        while not self.stop.is_set():
            n += 1
            kind = rng.choice(["trigger", "pause", "clear", "variable"])
            if kind == "clear" and not triggered or kind == "trigger" and len(triggered) >= TRIGGERS_PER_THREAD:
                kind = "variable"
            if kind == "trigger":
                triggered.append(f"api_{index}_{n}")
                status, text = self._request("POST", "/api/v1/dags/busy/dagRuns", {"dag_run_id": triggered[-1]})
            elif kind == "pause":
                status, text = self._request("PATCH", "/api/v1/dags/busy?update_mask=is_paused",
                                             {"is_paused": rng.random() < 0.3})
            elif kind == "clear":
                status, text = self._request("POST", "/api/v1/dags/busy/clearTaskInstances",
                                             {"dry_run": False, "only_failed": False, "task_ids": ["t5"],
                                              "dag_run_id": rng.choice(triggered)})
            else:
                status, text = self._request("POST", "/api/v1/variables", {"key": f"k{index}", "value": str(n)})
            with self.lock:
                self.answers.append((kind, status, "" if status == 200 else text[:500]))


def test_scheduler_webserver_and_cli_writing_at_once_never_see_a_locked_database(home: Home, tmp_path: Path) -> None:
    home.dag("busy.py", BUSY_DAG)
    home.cli("users", "create", "-u", "admin", "-r", "Admin", "-p", "busy-test-pass")
    home.cli("dags", "unpause", "busy")
    sched = home.start_scheduler(core__parallelism="8")
    port = free_port()
    web_log = tmp_path / "webserver.log"
    web = start_server(home.root, home.env, port, web_log)
    writers: ApiWriters | None = None
    cli_results: list[tuple[list[str], int, str]] = []
    try:
        writers = ApiWriters(port)
        deadline = time.monotonic() + DURATION_S
        n = 0
        while time.monotonic() < deadline:  # the CLI loop, in this thread
            n += 1
            for args in (["dags", "trigger", "busy", "--run-id", f"cli_{n}"],
                         ["tasks", "clear", "busy", "-t", "^t5$", "--yes"],
                         ["variables", "set", "cli_key", str(n)]):
                result = home.cli(*args, check=False)
                cli_results.append((args, result.returncode, result.stderr))
        writers.stop.set()
        for t in writers.threads:
            t.join(timeout=60)
        home.cli("dags", "unpause", "busy")
        home.wait_for("every run to finish", lambda: _unfinished(home) == 0, FINISH_DEADLINE_S, sched)
        assert sched.signal(signal.SIGTERM) == 0
        web.send_signal(signal.SIGTERM)
        assert web.wait(timeout=30) == 0
    finally:
        if writers is not None:
            writers.stop.set()
        if web.poll() is None:
            web.kill()
            web.wait()

    answers = writers.answers
    by_kind = Counter((kind, status) for kind, status, _ in answers)
    print(f"\n{len(answers)} API writes {dict(by_kind)}; {len(cli_results)} CLI commands; "
          f"{_count(home, 'SELECT count(*) FROM dag_run')} runs, "
          f"{_count(home, 'SELECT count(*) FROM task_instance_history')} task tries")
    assert [a for a in answers if a[1] != 200] == []
    assert {kind for kind, _, _ in answers} == {"trigger", "pause", "clear", "variable"}
    assert [(args, rc, err) for args, rc, err in cli_results if rc != 0 or "locked" in err] == []
    assert len(cli_results) >= 3
    logs = {"scheduler": sched.log(), "webserver": web_log.read_text()}
    logs |= {str(p): p.read_text(errors="replace") for p in home.logs.rglob("*.log")}
    assert [name for name, text in logs.items() if LOCKED in text] == []
    assert "Traceback" not in logs["webserver"]
    assert _count(home, "SELECT count(*) FROM dag_run WHERE state != 'success'") == 0
    assert _count(home, "SELECT count(*) FROM task_instance_history") > 30  # the scheduler really worked meanwhile


def _count(home: Home, sql: str) -> int:
    with home.engine.connect() as conn:
        from sqlalchemy import text

        return int(conn.execute(text(sql)).scalar_one())


def _unfinished(home: Home) -> int:
    return _count(home, "SELECT count(*) FROM dag_run WHERE state NOT IN ('success', 'failed')")


if not sys.platform.startswith("linux"):  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="reads /proc")
