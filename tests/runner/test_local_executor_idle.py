"""The LocalExecutor holds a fork server only while there is work: started by the first run or
workload, stopped after ``IDLE_STOP_S`` with nothing to run, started again by the next one."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from scheduler.executors import local
from scheduler.executors.local import LocalExecutor
from scheduler.states import TaskInstanceState

from .harness import Env, process_gone, wait_for

OK = """
def ok():
    return "done"

with DAG("idle", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    PythonOperator(task_id="a", python_callable=ok)
    PythonOperator(task_id="b", python_callable=ok)
"""


@pytest.fixture
def executor(env: Env) -> Iterator[LocalExecutor]:
    executor = LocalExecutor(env.settings)
    woken = threading.Event()
    executor.start(woken.set)
    try:
        yield executor
    finally:
        executor.end(timeout=5)


def test_no_fork_server_until_there_is_work(executor: LocalExecutor) -> None:
    executor.keep_warm(False)
    assert executor._proc is None  # an idle scheduler holds no fork server


def test_a_running_run_starts_it_and_idleness_stops_it(executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    executor.keep_warm(True)
    proc = executor._proc
    assert proc is not None and proc.poll() is None

    executor.keep_warm(False)  # idle for less than IDLE_STOP_S: kept
    assert executor._proc is proc

    monkeypatch.setattr(local, "IDLE_STOP_S", 0.0)
    executor.keep_warm(False)
    assert executor._proc is None
    wait_for(lambda: process_gone(proc.pid), "the idle fork server to exit")
    assert executor.drain_events() == []  # stopping an idle server loses nothing


def test_work_after_an_idle_stop_starts_a_new_server_and_runs(
    env: Env, executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = env.write_dag("idle", OK)
    ids = env.queue("idle", path, {"a": "queued", "b": "queued"})

    executor.queue(env.workload(ids["a"], "idle", "a", path))
    first = executor._proc
    assert first is not None
    wait_for(lambda: env.ti(ids["a"]).state is TaskInstanceState.SUCCESS, "task a to succeed")
    wait_for(lambda: not executor.running, "task a's process to be reported ended")

    monkeypatch.setattr(local, "IDLE_STOP_S", 0.0)
    executor.keep_warm(False)
    wait_for(lambda: process_gone(first.pid), "the idle fork server to exit")

    executor.queue(env.workload(ids["b"], "idle", "b", path))
    second = executor._proc
    assert second is not None and second.pid != first.pid
    wait_for(lambda: env.ti(ids["b"]).state is TaskInstanceState.SUCCESS, "task b to succeed on the new server")
    wait_for(lambda: not executor.running, "task b's process to be reported ended")
    assert all(event.kind != "lost" for event in executor.drain_events())


def test_a_busy_server_is_not_stopped(env: Env, executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    path = env.write_dag("idle", OK)
    ids = env.queue("idle", path, {"a": "queued"})
    monkeypatch.setattr(local, "IDLE_STOP_S", 0.0)
    executor.queue(env.workload(ids["a"], "idle", "a", path))
    proc = executor._proc
    executor.keep_warm(False)  # a workload is running: kept whatever the idle time
    assert executor._proc is proc
    wait_for(lambda: env.ti(ids["a"]).state is TaskInstanceState.SUCCESS, "task a to succeed")
