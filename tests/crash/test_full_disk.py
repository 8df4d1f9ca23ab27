"""A full disk, simulated with RLIMIT_FSIZE: a try whose log outgrows the limit fails with a clear reason.

The scheduler and the webserver are started with a file-size limit of 8 MiB (``setrlimit`` in
the child before ``exec``; every process they fork inherits it, and Python ignores SIGXFSZ, so a
write past the limit fails with EFBIG, "File too large", as a write to a full disk fails with
ENOSPC). One task prints 12 MiB; the small SQLite database stays far below the limit. The
flooding try must fail, naming the error in its audit row; its downstream ``all_done`` task,
another DAG's run and a run triggered afterwards must succeed in the same scheduler process; the
webserver under the same limit keeps answering.
"""

from __future__ import annotations

import base64
import http.client
import json
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.db.engine import session_scope
from scheduler.db.models import DagRun
from tests.crash.test_webserver_kill import start_server
from tests.e2e.test_execution_e2e import RUN_DEADLINE_S, Home, SchedulerProcess, _updraft
from tests.web.test_server import free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics of Linux")

LIMIT = 8 << 20
AUTH = "Basic " + base64.b64encode(b"admin:disk-test-pass").decode()
DAGS = """
from datetime import datetime
from scheduler import DAG, PythonOperator


def flood():
    line = "x" * 1023
    for _ in range(12 * 1024):
        print(line)
    return "never"


def small():
    print("small: done")
    return "ok"


with DAG("flood", schedule=None, start_date=datetime(2024, 1, 1)):
    PythonOperator(task_id="flood", python_callable=flood) >> PythonOperator(
        task_id="after", python_callable=small, trigger_rule="all_done")

with DAG("calm", schedule=None, start_date=datetime(2024, 1, 1)):
    PythonOperator(task_id="small", python_callable=small)
"""


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


class LimitedScheduler(SchedulerProcess):
    """`updraft scheduler` under the file-size limit (the same class, so the home cleans it up)."""

    def __init__(self, home: Home) -> None:
        self.log_path = home.root / "scheduler-limited.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([*_updraft(), "scheduler"], stdout=subprocess.DEVNULL, stderr=self._log,
                                     env=home.env, cwd=home.root, preexec_fn=limit_file_size)
        self.seen = set()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "home")
    try:
        yield h
    finally:
        h.close()


def api(port: int, path: str) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": AUTH, "Accept": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def run_states(home: Home, dag_id: str) -> dict[str, str]:
    with session_scope(home.engine, readonly=True) as session:
        rows = session.execute(select(DagRun.run_id, DagRun.state).where(DagRun.dag_id == dag_id)).all()
    return {run_id: str(state) for run_id, state in rows}


def test_a_try_that_fills_the_disk_fails_clearly_and_everything_keeps_going(home: Home, tmp_path: Path) -> None:
    home.dag("flood.py", DAGS)
    home.cli("users", "create", "-u", "admin", "-r", "Admin", "-p", "disk-test-pass")
    for dag_id in ("flood", "calm"):
        home.cli("dags", "unpause", dag_id)
    home.cli("dags", "trigger", "flood", "--run-id", "r1")
    home.cli("dags", "trigger", "calm", "--run-id", "c1")
    sched = LimitedScheduler(home)
    home.schedulers.append(sched)
    port = free_port()
    web = start_server(home.root, home.env, port, tmp_path / "webserver.log", preexec_fn=limit_file_size)
    try:
        home.wait_for("both runs to finish", lambda: run_states(home, "flood").get("r1") in ("success", "failed")
                      and run_states(home, "calm").get("c1") in ("success", "failed"), RUN_DEADLINE_S, sched)
        home.cli("dags", "trigger", "calm", "--run-id", "c2")  # the same scheduler process goes on
        home.wait_for("the later run to finish", lambda: run_states(home, "calm").get("c2") in ("success", "failed"),
                      RUN_DEADLINE_S, sched)

        status, body = api(port, "/api/v1/dags/flood/dagRuns/r1/taskInstances")
        assert status == 200, body
        assert isinstance(body, dict)
        states = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in body["task_instances"]}
        status, events = api(port, "/api/v1/eventLogs?task_id=flood&run_id=r1")
        assert status == 200, events
        status, _ = api(port, "/api/v1/dags/flood/dagRuns/r1/taskInstances/flood/logs/1")
        assert status < 500
        assert sched.signal(signal.SIGTERM) == 0
        web.send_signal(signal.SIGTERM)
        assert web.wait(timeout=30) == 0
    finally:
        if web.poll() is None:
            web.kill()
            web.wait()

    assert states == {"flood": ("failed", 1), "after": ("success", 1)}
    assert run_states(home, "calm") == {"c1": "success", "c2": "success"}
    assert run_states(home, "flood") == {"r1": "success"}  # its leaf (all_done) succeeded: Airflow's rule
    assert isinstance(events, dict)
    reasons = [e["extra"] or "" for e in events["event_logs"] if e["event"] == "failed"]
    assert any("OSError: [Errno 27] File too large" in r for r in reasons), reasons
    log = home.logs / "dag_id=flood" / "run_id=r1" / "task_id=flood" / "attempt=1.log"
    assert log.stat().st_size == LIMIT  # the try wrote up to the limit, then its write failed
    assert "small: done" in (home.logs / "dag_id=calm" / "run_id=c2" / "task_id=small" / "attempt=1.log").read_text()
