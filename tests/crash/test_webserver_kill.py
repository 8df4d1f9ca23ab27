"""`updraft webserver` (gunicorn) SIGKILLed in the middle of API writes, then restarted on the same port.

Two client threads trigger runs through the REST API without pause, each with a run id of its
own. Four times: the master is SIGKILLed once a random number of triggers went through in its
life, either while the clients keep writing (requests in flight) or once they are idle; then the
old workers must be gone within seconds (they die with their master; an idle orphaned sync worker
would otherwise hold the port for half of gunicorn's timeout, 60 s) and a new server starts on
the same port and serves. At the end every trigger answered 200 exists exactly once, nothing
answered a 5xx, and the database passes its integrity check.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.backend import clean_environ, home_database_url, integrity_problems, query
from tests.crash.harness import wait_dead
from tests.e2e.test_execution_e2e import alive, descendants
from tests.web.test_server import free_port

CYCLES = 4
DEADLINE_S = 30.0
#: How long the old workers may take to exit after their master was killed.
WORKERS_GONE_S = 10.0
AUTH = "Basic " + base64.b64encode(b"admin:crash-test-pass").decode()
DAG = """
from datetime import datetime
from scheduler import DAG, EmptyOperator

with DAG("web_target", schedule=None, start_date=datetime(2024, 1, 1)):
    EmptyOperator(task_id="noop")
"""


def updraft(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=60)
    assert result.returncode == 0, f"updraft {' '.join(args)}: {result.stderr}"
    return result


class Clients:
    """Threads that trigger runs as fast as the server answers; every outcome is kept."""

    def __init__(self, port: int, threads: int = 2) -> None:
        self.port = port
        self.go = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[str, int | str]] = []  # (run_id, HTTP status or the exception's name)
        self.in_flight = 0
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def ok(self) -> int:
        with self.lock:
            return sum(1 for _, status in self.outcomes if status == 200)

    def _loop(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            if not self.go.wait(timeout=0.1):
                continue
            with self.lock:
                self.in_flight += 1
            n += 1
            run_id = f"web_{index}_{n}"
            body = json.dumps({"dag_run_id": run_id, "conf": {}})
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("POST", "/api/v1/dags/web_target/dagRuns", body=body, headers={
                    "Authorization": AUTH, "Content-Type": "application/json", "Accept": "application/json"})
                status: int | str = conn.getresponse().status
            except OSError as exc:
                status = type(exc).__name__
                time.sleep(0.02)  # nothing listens: pace the reconnection attempts
            finally:
                conn.close()
            with self.lock:
                self.outcomes.append((run_id, status))
                self.in_flight -= 1

    def idle(self) -> bool:
        with self.lock:
            return self.in_flight == 0


def start_server(home: Path, env: dict[str, str], port: int, log: Path,
                 preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """`updraft webserver` with two workers on ``port``, once it answers its health check."""
    with log.open("a") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "webserver", "--port", str(port),
                                 "--workers", "2"], stdout=fh, stderr=fh, env=env, cwd=home, preexec_fn=preexec_fn)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/v1/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"the webserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the webserver did not serve within {DEADLINE_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)  # polling a socket that is not listening yet


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_webserver_killed_mid_request_restarts_and_loses_no_acknowledged_write(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "web_target.py").write_text(DAG)
    env = clean_environ()
    env.update({"UPDRAFT_HOME": str(home), "UPDRAFT__CORE__PARSING_PROCESSES": "1",
                "UPDRAFT__CORE__DAGS_FOLDER": str(home / "dags")})
    updraft("users", "create", "-u", "admin", "-r", "Admin", "-p", "crash-test-pass", env=env, cwd=home)
    updraft("dags", "list", env=env, cwd=home)  # the DAG into the database
    port = free_port()
    log = tmp_path / "webserver.log"
    rng = random.Random(7)
    clients = Clients(port)
    procs: list[subprocess.Popen[bytes]] = []
    leftovers: list[int] = []
    try:
        for cycle in range(CYCLES):
            busy = cycle % 2 == 0
            proc = start_server(home, env, port, log)
            procs.append(proc)
            target = clients.ok() + rng.randint(3, 15)
            clients.go.set()
            deadline = time.monotonic() + DEADLINE_S
            while clients.ok() < target:
                assert time.monotonic() < deadline, f"no progress; outcomes {Counter(s for _, s in clients.outcomes)}"
                time.sleep(0.005)  # polling the clients' progress
            if not busy:
                clients.go.clear()
                while not clients.idle():
                    assert time.monotonic() < deadline, "a request never ended"
                    time.sleep(0.005)  # polling the clients
            workers = descendants(proc.pid)
            assert workers, "the master has no workers"
            proc.send_signal(signal.SIGKILL)  # busy: while the clients keep writing, so a request is in flight
            assert proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL
            clients.go.clear()
            gone = all(wait_dead(pid, WORKERS_GONE_S) for pid in workers)
            leftovers += [pid for pid in workers if alive(pid)]
            assert gone, f"workers {sorted(workers)} outlived their killed master by {WORKERS_GONE_S} s"
        proc = start_server(home, env, port, log)
        procs.append(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        clients.stop.set()
        clients.go.set()
        for t in clients.threads:
            t.join(timeout=DEADLINE_S)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for pid in leftovers:  # only workers of the servers this test started
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    statuses = Counter(status for _, status in clients.outcomes)
    assert not [s for s in statuses if isinstance(s, int) and s != 200], statuses  # no 5xx, no 409 either
    acknowledged = [run_id for run_id, status in clients.outcomes if status == 200]
    url = home_database_url(home, env)
    assert integrity_problems(url) == []
    stored = Counter(r[0] for r in query(url, "SELECT run_id FROM dag_run WHERE dag_id = 'web_target'"))
    assert [r for r, n in stored.items() if n > 1] == []
    assert [r for r in acknowledged if r not in stored] == []
    # A request cut off by the kill may or may not have committed; no other run may exist.
    attempted = {run_id for run_id, _ in clients.outcomes}
    assert set(stored) <= attempted
    assert "Traceback" not in log.read_text()
    print(f"\n{CYCLES} webserver SIGKILLs survived; outcomes {dict(statuses)}")
