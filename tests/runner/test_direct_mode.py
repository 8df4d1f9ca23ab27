"""Direct mode: the try's code runs in the runner's own process (as under the LocalExecutor's fork server).

The same database rows and log lines as the supervised mode for everything the process itself
can see; a process that dies records nothing (the fork server's exit event tells the scheduler).
"""

from __future__ import annotations

import os
import re
import signal
from datetime import timedelta

from sqlalchemy import select, update

from scheduler.db.engine import session_scope
from scheduler.db.models import Log, TaskInstance, TaskInstanceHistory, XCom

from .harness import Env, process_gone, wait_for


def test_direct_success_records_state_xcom_history_and_log_in_one_process(env: Env) -> None:
    path = env.write_dag("ok", """
        def hello(**context):
            print("hello from", os.getpid(), context["ds"])
            return {"answer": 42}

        with DAG("ok", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="hello", python_callable=hello)
    """)
    ids = env.queue("ok", path, {"hello": "queued"})
    runner = env.start(env.workload(ids["hello"], "ok", "hello", path), direct=True)
    assert runner.wait() == 0, runner.stderr()
    ti = env.ti(ids["hello"])
    assert ti.state == "success" and ti.pid == runner.pid  # no task process of its own
    text = env.log_of("ok", "hello")
    assert f"hello from {runner.pid} 2026-01-01" in text
    assert "Recorded state success for try 1" in text
    with session_scope(env.engine, readonly=True) as session:
        assert session.scalar(select(XCom.value).where(XCom.dag_id == "ok")) == {"answer": 42}
        assert [h.state for h in session.scalars(select(TaskInstanceHistory))] == ["success"]


def test_direct_execution_timeout_fails_and_ends_the_bash_grandchild(env: Env) -> None:
    path = env.write_dag("slow", """
        with DAG("slow", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            BashOperator(task_id="t", bash_command="sleep 60 & echo CHILD=$!; wait",
                         execution_timeout=timedelta(seconds=3), on_failure_callback=on_failure)
    """)
    ids = env.queue("slow", path, {"t": "queued"})
    code, stderr = env.run(env.workload(ids["t"], "slow", "t", path), direct=True)
    assert code == 0, stderr
    assert env.ti(ids["t"]).state == "failed"
    text = env.log_of("slow", "t")
    child = int(re.search(r"CHILD=(\d+)", text).group(1))  # type: ignore[union-attr]
    wait_for(lambda: process_gone(child), f"the bash grandchild {child} to be gone", deadline_s=10)
    assert "Timeout: the task ran longer than its execution_timeout (0:00:03)" in text
    assert env.marker("on_failure")


def test_direct_timeout_ignored_by_the_task_is_recorded_by_the_watchdog(env: Env) -> None:
    quick = env.with_settings(core__killed_task_cleanup_time="0.5")
    path = quick.write_dag("stubborn", """
        def stubborn():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            marker("started", os.getpid())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.05)

        with DAG("stubborn", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=stubborn, execution_timeout=timedelta(seconds=0.5),
                           retries=1, retry_delay=timedelta(seconds=5), on_retry_callback=on_retry)
    """)
    ids = quick.queue("stubborn", path, {"t": "queued"}, max_tries=1)
    runner = quick.start(quick.workload(ids["t"], "stubborn", "t", path), direct=True)
    assert runner.wait() == -signal.SIGKILL, runner.stderr()  # the watchdog ended its own process group
    ti = quick.ti(ids["t"])
    assert ti.state == "up_for_retry"
    assert ti.end_date is not None and ti.next_retry_at == ti.end_date + timedelta(seconds=5)
    message = "Timeout: the task ran longer than its execution_timeout (0:00:00.500000)"
    assert quick.marker("on_retry") == message
    assert "recording the failure and sending SIGKILL" in quick.log_of("stubborn", "t")
    with session_scope(quick.engine, readonly=True) as session:
        assert session.scalar(select(Log.extra).where(Log.dag_id == "stubborn")) == message


def test_direct_cleared_while_running_stops_and_records_nothing(env: Env) -> None:
    path = env.write_dag("wait", """
        def waiter():
            marker("started", os.getpid())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.05)
            marker("finished")

        with DAG("wait", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=waiter, on_failure_callback=on_failure)
    """)
    ids = env.queue("wait", path, {"t": "queued"})
    runner = env.start(env.workload(ids["t"], "wait", "t", path), direct=True)
    wait_for(lambda: env.marker("started"), "the task to start")
    with session_scope(env.engine) as session:
        session.execute(update(TaskInstance).where(TaskInstance.id == ids["t"]).values(state="none"))
    assert runner.wait() == 128 + signal.SIGTERM, runner.stderr()
    assert env.ti(ids["t"]).state == "none"
    assert env.marker("finished") is None and env.marker("on_failure") is None
    assert "state changed externally to none; terminating the task" in env.log_of("wait", "t")


def test_direct_sigterm_fails_the_try_through_the_task(env: Env) -> None:
    path = env.write_dag("stopped", """
        def waiter():
            marker("started", os.getpid())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.05)

        with DAG("stopped", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=waiter, on_failure_callback=on_failure)
    """)
    ids = env.queue("stopped", path, {"t": "queued"})
    runner = env.start(env.workload(ids["t"], "stopped", "t", path), direct=True)
    wait_for(lambda: env.marker("started"), "the task to start")
    os.kill(runner.pid, signal.SIGTERM)
    assert runner.wait() == 0, runner.stderr()
    ti = env.ti(ids["t"])
    assert ti.state == "failed"
    assert env.marker("on_failure") == "the task runner received SIGTERM"
    assert "the task runner received SIGTERM; terminating the task" in env.log_of("stopped", "t")


def test_direct_death_records_nothing_and_exits_with_the_death(env: Env) -> None:
    path = env.write_dag("dies", """
        def die():
            print("about to die", flush=True)
            os._exit(3)

        with DAG("dies", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=die, on_failure_callback=on_failure)
    """)
    ids = env.queue("dies", path, {"t": "queued"})
    code, _ = env.run(env.workload(ids["t"], "dies", "t", path), direct=True)
    assert code == 3  # the fork server reports this exit; the scheduler fails the try and sends the callback
    assert env.ti(ids["t"]).state == "running"
    assert env.marker("on_failure") is None
    assert "about to die" in env.log_of("dies", "t")
