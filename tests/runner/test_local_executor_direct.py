"""Direct lines: the LocalExecutor writes a DAG file's workloads straight to the file's ready zygote.

The fork server hands the executor the write end of a pipe each ready zygote reads
(``scheduler.executors.local``, module docstring). These tests run a real executor, fork
server, zygotes and tries: workloads after the zygote is ready go to it directly and run;
a changed file is routed through the server again (a new zygote, whose line replaces the
old one, and the old zygote exits once its line is closed); a zygote killed while the
executor holds its line costs no workload: the write fails, the server routes it, and the
try runs; and every line is closed when the executor ends.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from scheduler.executors.local import LocalExecutor
from scheduler.states import TaskInstanceState

from .harness import Env, process_gone, wait_for
from .test_task_runner import xcoms

S = TaskInstanceState

SOURCE = """
def ok():
    return {value!r}

with DAG("direct", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    for name in "abcdef":
        PythonOperator(task_id=name, python_callable=ok)
"""


@pytest.fixture
def executor(env: Env) -> Iterator[LocalExecutor]:
    executor = LocalExecutor(env.settings)
    executor.start(threading.Event().set)
    try:
        yield executor
    finally:
        executor.end(timeout=5)
        assert executor._direct == {} and executor._closing == []  # every direct line closed with the executor


def lines(executor: LocalExecutor, path: str) -> dict[int, int]:
    """zygote pid -> the write end the executor holds, for ``path``."""
    with executor._lock:
        return {pid: entry[3] for pid, entry in executor._direct.items() if entry[1] == path}


def returned(env: Env, task_id: str) -> object:
    return xcoms(env, "direct")[(task_id, "return_value")]


def run(env: Env, executor: LocalExecutor, ids: dict[str, int], task_id: str, path: str) -> None:
    executor.queue(env.workload(ids[task_id], "direct", task_id, path))
    wait_for(lambda: env.ti(ids[task_id]).state is S.SUCCESS, f"task {task_id} to succeed")
    wait_for(lambda: not executor.running, f"task {task_id}'s process to be reported ended")


def with_a_ready_zygote(env: Env, executor: LocalExecutor) -> tuple[str, dict[str, int], int]:
    """The DAG file, its queued instances, and the pid of its zygote once the executor holds its line
    (task a ran through the server, which started the zygote)."""
    path = str(env.write_dag("direct", SOURCE.format(value="one")))
    ids = env.queue("direct", path, dict.fromkeys("abcdef", "queued"))
    run(env, executor, ids, "a", path)
    wait_for(lambda: len(lines(executor, path)) == 1, "the zygote's direct line to reach the executor")
    (zygote,) = lines(executor, path)
    return path, ids, zygote


def test_workloads_go_straight_to_the_ready_zygote_and_run(env: Env, executor: LocalExecutor,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path, ids, zygote = with_a_ready_zygote(env, executor)

    written: list[int] = []
    original = os.write

    def spying_write(fd: int, data: bytes) -> int:
        written.append(fd)
        return original(fd, data)

    monkeypatch.setattr(os, "write", spying_write)
    run(env, executor, ids, "b", path)
    monkeypatch.undo()
    assert lines(executor, path)[zygote] in written  # b went down the zygote's line
    assert returned(env, "b") == "one"
    assert all(event.kind != "lost" for event in executor.drain_events())


def test_a_changed_file_gets_a_new_zygote_and_the_old_one_leaves(env: Env, executor: LocalExecutor) -> None:
    path, ids, old = with_a_ready_zygote(env, executor)

    env.write_dag("direct", SOURCE.format(value="two, longer"))  # another size: another signature
    run(env, executor, ids, "b", path)
    assert returned(env, "b") == "two, longer"  # not the old zygote's code
    wait_for(lambda: old not in lines(executor, path), "the old zygote's line to be closed")
    # The loop's thread closes dropped lines at its next iteration (keep_warm) or workload.
    wait_for(lambda: executor.keep_warm(True) or process_gone(old), "the old zygote to exit once its line is closed")
    wait_for(lambda: len(lines(executor, path)) == 1, "the new zygote's direct line")
    run(env, executor, ids, "c", path)
    assert returned(env, "c") == "two, longer"


def test_a_killed_zygote_loses_no_workload(env: Env, executor: LocalExecutor) -> None:
    path, ids, zygote = with_a_ready_zygote(env, executor)
    os.kill(zygote, signal.SIGKILL)
    wait_for(lambda: process_gone(zygote), "the killed zygote to be gone")

    run(env, executor, ids, "b", path)  # the write to its line fails; the server routes b
    assert zygote not in lines(executor, path)
    assert returned(env, "b") == "one"


def test_a_zygote_dead_but_not_reaped_yet_loses_no_workload(env: Env, executor: LocalExecutor) -> None:
    """The server holds the routed workload before it has reaped the zygote (stopped meanwhile here,
    which forces the order a busy machine can take): its write to the dead zygote fails, and it
    starts the workload itself."""
    path, ids, zygote = with_a_ready_zygote(env, executor)
    server = executor._proc
    assert server is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        os.kill(zygote, signal.SIGKILL)
        wait_for(lambda: process_gone(zygote), "the killed zygote to be gone")
        executor.queue(env.workload(ids["b"], "direct", "b", path))  # its line fails: routed to the server
    finally:
        os.kill(server.pid, signal.SIGCONT)
    wait_for(lambda: env.ti(ids["b"]).state is S.SUCCESS, "task b to succeed")
    assert returned(env, "b") == "one"
    wait_for(lambda: not executor.running, "b's process to be reported ended")
    assert all(event.kind != "lost" for event in executor.drain_events())
