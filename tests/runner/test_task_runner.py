"""The task runner for real: a migrated database, a DAG file, run_workload in a forked child; then the rows and logs."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from scheduler.db.engine import session_scope
from scheduler.db.models import Log, TaskInstance, TaskInstanceHistory, TaskReschedule, XCom
from scheduler.task_logs import log_path
from scheduler.workloads import CallbackWorkload
from tests.backend import clean_environ

from .harness import LOGICAL_DATE, RUN_ID, Env, process_gone, wait_for

LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000\] \{runner\} INFO - Starting attempt 1 of 1", re.M)


def xcoms(env: Env, dag_id: str) -> dict[tuple[str, str], object]:
    with session_scope(env.engine, readonly=True) as session:
        rows = session.execute(select(XCom).where(XCom.dag_id == dag_id)).scalars()
        return {(r.task_id, r.key): r.value for r in rows}


def history(env: Env, dag_id: str, task_id: str) -> list[TaskInstanceHistory]:
    with session_scope(env.engine, readonly=True) as session:
        return list(session.execute(
            select(TaskInstanceHistory).where(TaskInstanceHistory.dag_id == dag_id,
                                              TaskInstanceHistory.task_id == task_id)
            .order_by(TaskInstanceHistory.try_number)
        ).scalars())


def failure_logs(env: Env, dag_id: str) -> list[Log]:
    with session_scope(env.engine, readonly=True) as session:
        return list(session.execute(select(Log).where(Log.dag_id == dag_id)).scalars())


# --- success, XCom, log file ------------------------------------------------------------------------


def blocked_writing_to(pid: int, fd: int) -> bool:
    """Whether the process sits in write(2) on ``fd`` (from /proc/PID/syscall: number, then arguments)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    write_syscall = 1  # x86_64
    return len(fields) > 1 and fields[0] == str(write_syscall) and int(fields[1], 16) == fd


def test_the_log_ends_with_the_recorded_state_before_the_scheduler_is_told(env: Env) -> None:
    # The executor's channel is a pipe filled to the brim: the runner's announcement blocks in
    # write(2) until it is drained, so the log can be read at exactly the moment of the wake-up.
    path = env.write_dag("told", """
        with DAG("told", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=lambda: print("ran"))
    """)
    ids = env.queue("told", path, {"t": "queued"})
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"x" * 4096)
    os.set_blocking(write_end, True)
    runner = env.start(env.workload(ids["t"], "told", "t", path), event_fd=write_end)
    try:
        wait_for(lambda: blocked_writing_to(runner.pid, write_end), "the runner to announce its recorded state")
        assert env.ti(ids["t"]).state == "success"
        assert "Recorded state success for try 1" in env.log_of("told", "t"), runner.stderr()
        os.set_blocking(read_end, False)
        drained = bytearray()

        def announced() -> bool:
            with contextlib.suppress(BlockingIOError):
                drained.extend(os.read(read_end, 1 << 20))
            return b'"event": "recorded"' in drained

        wait_for(announced, "the announcement behind the filler")
        assert runner.wait() == 0, runner.stderr()
    finally:
        if not process_gone(runner.pid):  # a failed check leaves it blocked on the full pipe
            os.kill(runner.pid, signal.SIGKILL)
            runner.wait()
        os.close(read_end)
        os.close(write_end)




def test_success_records_state_xcom_history_and_log(env: Env) -> None:
    path = env.write_dag("ok", """
        def hello(**context):
            print("hello from the task", context["ds"])
            import logging
            logging.getLogger("user").info("a logging line")
            return {"answer": 42}

        with DAG("ok", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="hello", python_callable=hello)
    """)
    ids = env.queue("ok", path, {"hello": "queued"})
    code, stderr = env.run(env.workload(ids["hello"], "ok", "hello", path))
    assert code == 0, stderr
    ti = env.ti(ids["hello"])
    assert ti.state == "success"
    assert ti.try_number == 1 and ti.end_date is not None and ti.start_date is not None
    assert ti.duration is not None and ti.duration >= 0
    assert ti.last_heartbeat_at is not None and ti.hostname and ti.pid
    assert xcoms(env, "ok") == {("hello", "return_value"): {"answer": 42}}
    [row] = history(env, "ok", "hello")
    assert (row.try_number, row.state) == (1, "success")
    log_file = env.logs / "dag_id=ok" / f"run_id={RUN_ID}" / "task_id=hello" / "attempt=1.log"
    assert log_file.is_file()
    text = log_file.read_text()
    assert "hello from the task 2026-01-01" in text
    assert "{user} INFO - a logging line" in text
    assert LINE.search(text), text
    assert "Recorded state success for try 1" in text
    assert failure_logs(env, "ok") == []


def test_xcom_push_and_pull_across_tasks_and_rendered_fields(env: Env) -> None:
    path = env.write_dag("xc", """
        def produce(ti, **_):
            ti.xcom_push("extra", [1, 2, 3])
            return "produced"

        def consume(ti, **_):
            return {"value": ti.xcom_pull(task_ids="produce"), "extra": ti.xcom_pull(task_ids="produce", key="extra"),
                    "missing": ti.xcom_pull(task_ids="produce", key="nope", default="dflt")}

        with DAG("xc", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            a = PythonOperator(task_id="produce", python_callable=produce)
            b = PythonOperator(task_id="consume", python_callable=consume)
            c = BashOperator(task_id="echo", bash_command="echo run {{ run_id }} got {{ ti.xcom_pull(task_ids='produce') }}")
            a >> b >> c
    """)
    ids = env.queue("xc", path, {"produce": "queued", "consume": "none", "echo": "none"})
    assert env.run(env.workload(ids["produce"], "xc", "produce", path))[0] == 0
    env.requeue(ids["consume"], 1)
    assert env.run(env.workload(ids["consume"], "xc", "consume", path))[0] == 0
    env.requeue(ids["echo"], 1)
    assert env.run(env.workload(ids["echo"], "xc", "echo", path))[0] == 0
    values = xcoms(env, "xc")
    assert values[("produce", "return_value")] == "produced"
    assert values[("produce", "extra")] == [1, 2, 3]
    assert values[("consume", "return_value")] == {"value": "produced", "extra": [1, 2, 3], "missing": "dflt"}
    assert values[("echo", "return_value")] == f"run {RUN_ID} got produced"
    echo = env.ti(ids["echo"])
    assert echo.state == "success"
    assert echo.rendered_fields is not None
    assert echo.rendered_fields["bash_command"] == f"echo run {RUN_ID} got produced"
    assert f"run {RUN_ID} got produced" in env.log_of("xc", "echo")


def test_non_json_return_value_fails_with_the_xcom_message(env: Env) -> None:
    path = env.write_dag("nonjson", """
        with DAG("nonjson", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=lambda: object())
    """)
    ids = env.queue("nonjson", path, {"t": "queued"})
    assert env.run(env.workload(ids["t"], "nonjson", "t", path))[0] == 0
    assert env.ti(ids["t"]).state == "failed"
    assert "not JSON-serialisable" in env.log_of("nonjson", "t")
    [log] = failure_logs(env, "nonjson")
    assert log.event == "failed" and "not JSON-serialisable" in (log.extra or "")
    assert xcoms(env, "nonjson") == {}


# --- failures and retries ---------------------------------------------------------------------------


def test_raising_task_with_retries_is_up_for_retry_after_retry_delay(env: Env) -> None:
    path = env.write_dag("retry", """
        def boom():
            raise ValueError("kaboom")

        with DAG("retry", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=boom, retries=2, retry_delay=timedelta(seconds=30),
                           on_retry_callback=on_retry, on_failure_callback=on_failure)
    """)
    ids = env.queue("retry", path, {"t": "queued"}, max_tries=2)
    assert env.run(env.workload(ids["t"], "retry", "t", path))[0] == 0
    ti = env.ti(ids["t"])
    assert ti.state == "up_for_retry"
    assert ti.end_date is not None
    assert ti.next_retry_at == ti.end_date + timedelta(seconds=30)
    assert "kaboom" in (env.marker("on_retry") or "") and env.marker("on_failure") is None
    [row] = history(env, "retry", "t")
    assert (row.try_number, row.state) == (1, "failed")
    assert "ValueError: kaboom" in env.log_of("retry", "t")
    # The last try fails for good and calls the failure callback.
    env.requeue(ids["t"], 3)
    assert env.run(env.workload(ids["t"], "retry", "t", path, try_number=3))[0] == 0
    ti = env.ti(ids["t"])
    assert ti.state == "failed" and ti.next_retry_at is None
    assert "kaboom" in (env.marker("on_failure") or "")
    assert [h.try_number for h in history(env, "retry", "t")] == [1, 3]


def test_exponential_backoff_delay_is_airflows_formula(env: Env) -> None:
    path = env.write_dag("expo", """
        with DAG("expo", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=lambda: 1 / 0, retries=5,
                           retry_delay=timedelta(seconds=10), retry_exponential_backoff=True)
            PythonOperator(task_id="capped", python_callable=lambda: 1 / 0, retries=5,
                           retry_delay=timedelta(seconds=10), retry_exponential_backoff=True,
                           max_retry_delay=timedelta(seconds=25))
    """)
    ids = env.queue("expo", path, {"t": "queued", "capped": "queued"}, try_number=3, max_tries=5)
    for task_id in ("t", "capped"):
        assert env.run(env.workload(ids[task_id], "expo", task_id, path, try_number=3))[0] == 0
    base = math.ceil(10 * 2 ** (3 - 1))  # 40 s for try 3
    key = f"expo#t#{LOGICAL_DATE}#3".encode()  # Airflow's f-string: str() of the date, "2026-01-01 00:00:00+00:00"
    expected = base + int(hashlib.sha1(key).hexdigest(), 16) % base
    ti = env.ti(ids["t"])
    assert ti.state == "up_for_retry"
    assert ti.end_date is not None
    assert ti.next_retry_at == ti.end_date + timedelta(seconds=expected)
    assert 40 <= expected < 80
    capped = env.ti(ids["capped"])
    assert capped.end_date is not None
    assert capped.next_retry_at == capped.end_date + timedelta(seconds=25)


def test_fail_fast_exception_fails_despite_retries(env: Env) -> None:
    path = env.write_dag("ff", """
        def stop():
            raise TaskFailedNoRetry("give up now")

        with DAG("ff", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=stop, retries=3, on_failure_callback=on_failure)
    """)
    ids = env.queue("ff", path, {"t": "queued"}, max_tries=3)
    assert env.run(env.workload(ids["t"], "ff", "t", path))[0] == 0
    ti = env.ti(ids["t"])
    assert ti.state == "failed" and ti.next_retry_at is None
    assert "give up now" in (env.marker("on_failure") or "")


def test_skip_exception_and_branch_skips(env: Env) -> None:
    path = env.write_dag("br", """
        def skip():
            raise TaskSkipped("nothing to do")

        with DAG("br", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            s = PythonOperator(task_id="skipper", python_callable=skip)
            b = BranchPythonOperator(task_id="branch", python_callable=lambda: "left")
            left = EmptyOperator(task_id="left")
            right = EmptyOperator(task_id="right")
            after = EmptyOperator(task_id="after_right")
            b >> [left, right]
            right >> after
    """)
    ids = env.queue("br", path, {"skipper": "queued", "branch": "queued", "left": "none", "right": "scheduled",
                                 "after_right": "none"})
    assert env.run(env.workload(ids["skipper"], "br", "skipper", path))[0] == 0
    assert env.ti(ids["skipper"]).state == "skipped"
    assert env.run(env.workload(ids["branch"], "br", "branch", path))[0] == 0
    assert env.ti(ids["branch"]).state == "success"
    assert env.ti(ids["right"]).state == "skipped"
    assert env.ti(ids["right"]).end_date is not None
    assert env.ti(ids["left"]).state == "none"
    assert env.ti(ids["after_right"]).state == "none"  # the scheduler's trigger rules take it from here


def test_import_error_fails_the_try(env: Env) -> None:
    path = env.write_dag("broken", """
        with DAG("broken", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=lambda: 1)
        raise RuntimeError("this file is broken")
    """)
    ids = env.queue("broken", path, {"t": "queued"}, max_tries=1)
    assert env.run(env.workload(ids["t"], "broken", "t", path))[0] == 0
    assert env.ti(ids["t"]).state == "up_for_retry"
    text = env.log_of("broken", "t")
    assert "failed to import" in text and "this file is broken" in text


# --- the task process dies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("os._exit(3)", "the task process died: exit code 3"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "the task process died: killed by signal SIGKILL"),
        ("ctypes.string_at(0)", "the task process died: killed by signal SIGSEGV"),
    ],
    ids=["os_exit", "sigkill", "segfault"],
)
def test_task_process_death_fails_the_try_and_calls_the_callback(env: Env, code: str, message: str) -> None:
    path = env.write_dag("dies", f"""
        def die():
            print("about to die", flush=True)
            {code}

        with DAG("dies", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=die, on_failure_callback=on_failure)
    """)
    ids = env.queue("dies", path, {"t": "queued"})
    exit_code, stderr = env.run(env.workload(ids["t"], "dies", "t", path))
    assert exit_code == 0, stderr
    ti = env.ti(ids["t"])
    assert ti.state == "failed"
    assert env.marker("on_failure") == message
    text = env.log_of("dies", "t")
    assert "about to die" in text and message in text
    [log] = failure_logs(env, "dies")
    assert log.extra == message


# --- termination ---------------------------------------------------------------------------------------


def test_execution_timeout_kills_the_task_and_its_bash_grandchild(env: Env) -> None:
    path = env.write_dag("slow", """
        with DAG("slow", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            BashOperator(task_id="t", bash_command="sleep 60 & echo CHILD=$!; wait",
                         execution_timeout=timedelta(seconds=3), on_failure_callback=on_failure)
    """)
    ids = env.queue("slow", path, {"t": "queued"})
    exit_code, stderr = env.run(env.workload(ids["t"], "slow", "t", path))
    assert exit_code == 0, stderr
    assert env.ti(ids["t"]).state == "failed"
    text = env.log_of("slow", "t")
    child = int(re.search(r"CHILD=(\d+)", text).group(1))  # type: ignore[union-attr]
    wait_for(lambda: process_gone(child), f"the bash grandchild {child} to be gone", deadline_s=10)
    message = "Timeout: the task ran longer than its execution_timeout (0:00:03)"
    assert message in text
    [log] = failure_logs(env, "slow")
    assert log.extra == message
    assert env.marker("on_failure")  # called in the task process, with the timeout exception


def test_cleared_while_running_terminates_and_records_nothing(env: Env) -> None:
    path = env.write_dag("wait", """
        def waiter():
            marker("started", os.getpid())
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(MARKERS, "release")) and time.monotonic() < deadline:
                time.sleep(0.05)
            marker("finished")

        with DAG("wait", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=waiter, on_failure_callback=on_failure)
    """)
    ids = env.queue("wait", path, {"t": "queued"})
    runner = env.start(env.workload(ids["t"], "wait", "t", path))
    task_pid = int(wait_for(lambda: env.marker("started"), "the task to start"))
    with session_scope(env.engine) as session:
        session.execute(update(TaskInstance).where(TaskInstance.id == ids["t"]).values(state="none"))
    assert runner.wait() == 0, runner.stderr()
    assert process_gone(task_pid)
    assert env.ti(ids["t"]).state == "none"
    assert env.marker("finished") is None and env.marker("on_failure") is None
    assert history(env, "wait", "t") == []
    assert "state changed externally to none; terminating the task" in env.log_of("wait", "t")


def test_not_queued_is_not_run(env: Env) -> None:
    path = env.write_dag("nq", """
        with DAG("nq", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=lambda: marker("ran"))
    """)
    ids = env.queue("nq", path, {"t": "queued"}, try_number=2)
    code, stderr = env.run(env.workload(ids["t"], "nq", "t", path, try_number=1))  # a stale try
    assert code == 0
    assert "not queued any more (state queued, try 2); not running it" in stderr
    with session_scope(env.engine) as session:
        session.execute(update(TaskInstance).where(TaskInstance.id == ids["t"]).values(state="success"))
    code, stderr = env.run(env.workload(ids["t"], "nq", "t", path, try_number=2))
    assert code == 0 and "not queued any more (state success); not running it" in stderr
    assert env.marker("ran") is None
    assert not (env.logs / "dag_id=nq").exists()


def test_unwritable_log_folder_fails_the_try_with_a_clear_message(env: Env) -> None:
    blocker = env.tmp / "not-a-dir"
    blocker.write_text("")
    bad = env.with_settings(logging__base_log_folder=str(blocker / "logs"))
    path = env.write_dag("nolog", """
        with DAG("nolog", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=lambda: marker("ran"))
    """)
    ids = bad.queue("nolog", path, {"t": "queued"})
    code, stderr = bad.run(bad.workload(ids["t"], "nolog", "t", path))
    assert code == 0, stderr
    assert "cannot write the task log" in stderr and "Not a directory" in stderr
    assert bad.ti(ids["t"]).state == "failed"
    [log] = failure_logs(bad, "nolog")
    assert "cannot write the task log" in (log.extra or "")
    assert bad.marker("ran") is None


# --- reschedule and callbacks -------------------------------------------------------------------------


def test_reschedule_keeps_the_try_number_and_exposes_the_first_poke(env: Env) -> None:
    path = env.write_dag("poke", """
        def poke(ti, **_):
            marker("first", f"{ti.first_try_start.isoformat() if ti.first_try_start else None};")
            if os.path.exists(os.path.join(MARKERS, "ready")):
                return "done"
            raise TaskRescheduled(datetime(2030, 1, 1, tzinfo=__import__("datetime").timezone.utc))

        with DAG("poke", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="s", python_callable=poke)
    """)
    ids = env.queue("poke", path, {"s": "queued"})
    assert env.run(env.workload(ids["s"], "poke", "s", path))[0] == 0
    ti = env.ti(ids["s"])
    assert ti.state == "up_for_reschedule" and ti.try_number == 0
    assert ti.next_retry_at is not None and ti.next_retry_at.year == 2030
    with session_scope(env.engine, readonly=True) as session:
        [tr] = session.execute(select(TaskReschedule)).scalars()
    assert tr.ti_id == ids["s"] and tr.try_number == 1 and tr.reschedule_date.year == 2030
    assert history(env, "poke", "s") == []
    # The scheduler queues the next poke with the same try number.
    (env.markers / "ready").write_text("")
    env.requeue(ids["s"], 1)
    assert env.run(env.workload(ids["s"], "poke", "s", path))[0] == 0
    ti = env.ti(ids["s"])
    assert ti.state == "success" and ti.try_number == 1
    assert env.marker("first") == f"None;{tr.start_date.isoformat()};"
    text = env.log_of("poke", "s")
    assert text.count("Starting attempt 1 of 1") == 2  # both pokes appended to the same file


def test_dag_callback_workload_calls_the_callback(env: Env) -> None:
    path = env.write_dag("cb", """
        def on_dag_failure(context):
            marker("dag_failure", f"{context['reason']}|{context['run_id']}|{context['ti'].task_id}|{context['dag'].dag_id}")
            print("printed by the callback")

        with DAG("cb", schedule=None, start_date=datetime(2025, 1, 1), on_failure_callback=on_dag_failure) as dag:
            PythonOperator(task_id="t", python_callable=lambda: 1)
    """)
    env.queue("cb", path, {"t": "failed"})
    workload = CallbackWorkload(callback="dag_failure", dag_id="cb", run_id=RUN_ID, fileloc=str(path),
                                reason="task_failure")
    code, stderr = env.run(workload)
    assert code == 0, stderr
    assert env.marker("dag_failure") == f"task_failure|{RUN_ID}|t|cb"
    text = (env.logs / "dag_id=cb" / f"run_id={RUN_ID}" / "callbacks.log").read_text()
    assert "printed by the callback" in text


def test_task_callback_workload_gets_the_reason_as_exception(env: Env) -> None:
    path = env.write_dag("tcb", """
        with DAG("tcb", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=lambda: 1, on_failure_callback=on_failure)
    """)
    ids = env.queue("tcb", path, {"t": "failed"})
    workload = CallbackWorkload(callback="task_failure", dag_id="tcb", run_id=RUN_ID, fileloc=str(path),
                                task_id="t", try_number=1, ti_id=ids["t"], reason="the executor lost the task")
    assert env.run(workload)[0] == 0
    assert env.marker("on_failure") == "the executor lost the task"


def test_mapped_log_path() -> None:
    assert log_path("/l", "d", "r", "t", 3, 2) == Path("/l/dag_id=d/run_id=r/task_id=t/map_index=3/attempt=2.log")
    assert log_path("/l", "d", "r", "t", -1, 1) == Path("/l/dag_id=d/run_id=r/task_id=t/attempt=1.log")


def test_cli_tasks_run(env: Env) -> None:
    import subprocess
    import sys

    path = env.write_dag("cli", """
        with DAG("cli", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
            BashOperator(task_id="t", bash_command="echo from the cli")
    """)
    ids = env.queue("cli", path, {"t": "queued"})
    cli_env = clean_environ()
    cli_env.update({
        "UPDRAFT_HOME": str(env.tmp / "home"),
        "UPDRAFT__DATABASE__SQL_ALCHEMY_CONN": env.url,
        "UPDRAFT__CORE__DAGS_FOLDER": str(env.dags),
        "UPDRAFT__LOGGING__BASE_LOG_FOLDER": str(env.logs),
    })
    done = subprocess.run([sys.executable, "-m", "scheduler.cli", "tasks", "run", "cli", "t", RUN_ID,
                           "--try-number", "1"], env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert env.ti(ids["t"]).state == "success"
    assert "from the cli" in env.log_of("cli", "t")
    again = subprocess.run([sys.executable, "-m", "scheduler.cli", "tasks", "run", "cli", "nope", RUN_ID,
                            "--try-number", "1"], env=cli_env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "no task instance of task 'nope'" in again.stderr


def test_timeout_enforced_by_the_supervisor_escalates_to_sigkill(env: Env) -> None:
    # The task blocks SIGALRM (execution.py's own timer) and ignores SIGTERM: only the supervisor can end it.
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
    code, stderr = quick.run(quick.workload(ids["t"], "stubborn", "t", path))
    assert code == 0, stderr
    ti = quick.ti(ids["t"])
    assert ti.state == "up_for_retry"
    assert ti.end_date is not None
    assert ti.next_retry_at == ti.end_date + timedelta(seconds=5)
    message = "Timeout: the task ran longer than its execution_timeout (0:00:00.500000)"
    assert quick.marker("on_retry") == message  # the task process could not: the supervisor called it
    assert process_gone(int(quick.marker("started") or 0))
    text = quick.log_of("stubborn", "t")
    assert "sending SIGKILL" in text and "killed by signal SIGKILL" in text


def test_runner_stopped_by_sigterm_fails_the_try(env: Env) -> None:
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
    runner = env.start(env.workload(ids["t"], "stopped", "t", path))
    task_pid = int(wait_for(lambda: env.marker("started"), "the task to start"))
    os.kill(runner.pid, signal.SIGTERM)
    assert runner.wait() == 0, runner.stderr()
    assert process_gone(task_pid)
    assert env.ti(ids["t"]).state == "failed"
    assert env.marker("on_failure") == "the task runner received SIGTERM"
    assert "the task runner received SIGTERM; terminating the task" in env.log_of("stopped", "t")
