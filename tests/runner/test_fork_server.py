"""The LocalExecutor's fork server for real: zygotes per DAG file, what they import, and a try's death.

The server runs as the executor starts it (``python -m scheduler.executors.fork_server`` with the
settings in its environment); the test writes workloads on its stdin and reads its events.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.workloads import to_json

from .harness import Env

EVENT_DEADLINE_S = 60.0

COUNTING = """
marker("imports", "x")  # one character per import of this file

def ok():
    return @VALUE@

with DAG("counted", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    for i in range(3):
        PythonOperator(task_id=f"t{i}", python_callable=ok)
"""


class Server:
    def __init__(self, env: Env) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT__")}
        environ.update(env.settings.to_environ())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.executors.fork_server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=environ, start_new_session=True, bufsize=0,
        )
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self.wait_event(lambda e: e["event"] == "ready")

    def run(self, workload: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": "run", "workload": json.loads(to_json(workload))}).encode() + b"\n")

    def wait_event(self, match: Any) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + EVENT_DEADLINE_S
        while True:
            for event in self.events:
                if match(event):
                    self.events.remove(event)
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {EVENT_DEADLINE_S} s; saw {self.events}")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"the fork server exited ({self.proc.wait()}); events {self.events}")
                self.buffer += chunk
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    try:
                        self.events.append(json.loads(line))
                    except ValueError:
                        pass  # not an event line

    def exited(self, ti_id: int) -> dict[str, Any]:
        return self.wait_event(lambda e: e["event"] == "exited" and e["key"] and e["key"][0] == ti_id)

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=EVENT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise
        finally:
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@pytest.fixture
def server(env: Env) -> Iterator[Server]:
    srv = Server(env)
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.close()


def run_all(env: Env, srv: Server, path: Path, task_ids: list[str], ids: dict[str, int]) -> list[dict[str, Any]]:
    for task_id in task_ids:
        srv.run(env.workload(ids[task_id], "counted", task_id, path))
    return [srv.exited(ids[task_id]) for task_id in task_ids]


def test_tries_of_a_file_run_from_one_zygote_that_imported_it_once(env: Env, server: Server) -> None:
    path = env.write_dag("counted", COUNTING.replace("@VALUE@", "'first'"))
    ids = env.queue("counted", path, {"t0": "queued", "t1": "queued", "t2": "queued"})
    exits = run_all(env, server, path, ["t0", "t1", "t2"], ids)
    assert [e["returncode"] for e in exits] == [0, 0, 0]
    assert all(env.ti(ids[t]).state == "success" for t in ("t0", "t1", "t2"))
    assert env.marker("imports") == "x"  # the zygote's import served the three tries
    assert server.close() == 0


def test_a_changed_file_gets_a_new_zygote_and_its_new_code(env: Env, server: Server) -> None:
    path = env.write_dag("counted", COUNTING.replace("@VALUE@", "'first'"))
    ids = env.queue("counted", path, {"t0": "queued", "t1": "queued", "t2": "queued"})
    run_all(env, server, path, ["t0"], ids)
    stat = path.stat()
    env.write_dag("counted", COUNTING.replace("@VALUE@", "'second'"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime even within one clock tick
    run_all(env, server, path, ["t1"], ids)
    assert env.marker("imports") == "xx"
    assert (env.ti(ids["t0"]).state, env.ti(ids["t1"]).state) == ("success", "success")
    from sqlalchemy import select

    from scheduler.db.engine import session_scope
    from scheduler.db.models import XCom

    with session_scope(env.engine, readonly=True) as session:
        values = {row[0]: row[1] for row in session.execute(select(XCom.task_id, XCom.value).where(XCom.dag_id == "counted"))}
    assert values == {"t0": "first", "t1": "second"}


def test_a_file_that_starts_a_thread_at_import_gets_no_zygote(env: Env, server: Server) -> None:
    threaded = COUNTING.replace("@VALUE@", "'ok'") + (
        "\nimport threading\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    )
    path = env.write_dag("counted", threaded)
    ids = env.queue("counted", path, {"t0": "queued", "t1": "queued"})
    exits = run_all(env, server, path, ["t0", "t1"], ids)
    assert [e["returncode"] for e in exits] == [0, 0]
    assert (env.ti(ids["t0"]).state, env.ti(ids["t1"]).state) == ("success", "success")
    # The zygote's import, refused for its thread, then one import per try.
    assert env.marker("imports") == "xxx"


def test_a_killed_try_is_an_exit_event_and_a_line_in_its_log(env: Env, server: Server) -> None:
    path = env.write_dag("counted", COUNTING.replace("@VALUE@", "os.kill(os.getpid(), signal.SIGKILL)"))
    ids = env.queue("counted", path, {"t0": "queued"})
    [exit_event] = run_all(env, server, path, ["t0"], ids)
    assert exit_event["returncode"] == -signal.SIGKILL
    assert env.ti(ids["t0"]).state == "running"  # the scheduler fails it from this event
    text = env.log_of("counted", "t0")
    assert "the task process died: killed by signal SIGKILL" in text


SLEEPY = """
def nap():
    marker("napping", os.getpid())
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(MARKERS, "wake")) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "rested"

with DAG("counted", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    PythonOperator(task_id="t0", python_callable=nap)
"""


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2:].split()[1])


def test_a_dead_zygote_reports_its_running_tries_lost_and_they_record_themselves(env: Env, server: Server) -> None:
    from .harness import wait_for

    path = env.write_dag("counted", SLEEPY)
    ids = env.queue("counted", path, {"t0": "queued"})
    server.run(env.workload(ids["t0"], "counted", "t0", path))
    try_pid = int(wait_for(lambda: env.marker("napping"), "the try to start"))
    zygote = _parent_of(try_pid)
    assert zygote != server.proc.pid  # the try was forked by its file's zygote, not by the server
    os.kill(zygote, signal.SIGKILL)
    lost = server.wait_event(lambda e: e["event"] == "lost")
    assert [ids["t0"], 1] in lost["keys"] and lost["returncode"] == -signal.SIGKILL
    (env.markers / "wake").write_text("")
    wait_for(lambda: env.ti(ids["t0"]).state == "success", "the orphaned try to record its success")


def test_a_note_of_a_workload_written_to_a_zygote_that_died_meanwhile_is_a_lost_try(env: Env, server: Server) -> None:
    """The executor wrote a workload down a zygote's direct line; its note reaches the server after
    the zygote died: nobody knows whether the zygote read it, so the server reports it lost."""
    from .harness import wait_for

    path = env.write_dag("counted", SLEEPY)
    ids = env.queue("counted", path, {"t0": "queued"})
    server.run(env.workload(ids["t0"], "counted", "t0", path))
    zygote = _parent_of(int(wait_for(lambda: env.marker("napping"), "the try to start")))
    os.kill(zygote, signal.SIGKILL)
    server.wait_event(lambda e: e["event"] == "lost")
    assert server.proc.stdin is not None
    server.proc.stdin.write(json.dumps({"op": "noted", "zygote": zygote, "key": [4242, 3]}).encode() + b"\n")
    lost = server.wait_event(lambda e: e["event"] == "lost")
    assert lost["keys"] == [[4242, 3]]
    (env.markers / "wake").write_text("")


def test_a_malformed_note_is_rejected_and_the_server_goes_on(env: Env, server: Server) -> None:
    assert server.proc.stdin is not None
    server.proc.stdin.write(json.dumps({"op": "noted", "zygote": "nine", "key": 7}).encode() + b"\n")
    rejected = server.wait_event(lambda e: e["event"] == "rejected")
    assert "malformed note" in rejected["error"]
    path = env.write_dag("counted", SLEEPY)
    ids = env.queue("counted", path, {"t0": "queued"})
    (env.markers / "wake").write_text("")  # the task does not wait
    server.run(env.workload(ids["t0"], "counted", "t0", path))
    assert server.exited(ids["t0"])["returncode"] == 0


POLICY = """
import os

def report():
    marker(f"policy-{os.getpid()}", os.sched_getscheduler(0))

with DAG("policy", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    for i in range(2):
        PythonOperator(task_id=f"t{i}", python_callable=report)
"""


def _children_of(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _policies(env: Env) -> dict[int, int]:
    """try pid -> the scheduling policy it ran its task under."""
    return {int(p.name.split("-")[1]): int(p.read_text()) for p in env.markers.glob("policy-*")}


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="needs Linux scheduling policies")
def test_spares_wait_at_idle_priority_and_run_their_try_at_normal_priority(env: Env, server: Server) -> None:
    from scheduler.executors.fork_server import _probe_idle_priority

    from .harness import wait_for

    if not _probe_idle_priority():
        pytest.skip("this user may not raise a process back from idle priority (spares then stay normal)")
    path = env.write_dag("policy", POLICY)
    ids = env.queue("policy", path, {"t0": "queued", "t1": "queued"})
    server.run(env.workload(ids["t0"], "policy", "t0", path))
    assert server.exited(ids["t0"])["returncode"] == 0
    (first,) = _policies(env)
    (zygote,) = _children_of(server.proc.pid)

    def ready_spares() -> list[int] | None:
        found = [pid for pid in _children_of(zygote) if pid != first]  # the first try may not be reaped yet
        return found if len(found) == 2 else None

    spares = wait_for(ready_spares, "the zygote's two spares")
    assert all(os.sched_getscheduler(pid) == os.SCHED_IDLE for pid in spares)
    assert os.sched_getscheduler(zygote) == os.SCHED_OTHER  # it serves at normal priority, forks included

    server.run(env.workload(ids["t1"], "policy", "t1", path))
    assert server.exited(ids["t1"])["returncode"] == 0
    (second,) = set(_policies(env)) - {first}
    assert second in spares  # a spare took it ...
    assert _policies(env)[second] == os.SCHED_OTHER  # ... raised to normal priority before it ran the task
    assert server.close() == 0
