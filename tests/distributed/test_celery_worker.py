"""``updraft celery worker``: queues route tries; a worker dying mid-try never runs a try twice; bad input.

Real processes: one ``updraft scheduler`` (CeleryExecutor) on a fresh PostgreSQL database,
``updraft celery worker`` s on Redis (a distinct database number, and a prefix on every
queue of this test run).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from scheduler.config import load_settings
from scheduler.db.engine import make_engine
from scheduler.exceptions import ConfigError
from tests.backend import clean_environ
from tests.distributed.cluster import REDIS_URL, Cluster, broker_problem, count, updraft

pytest.importorskip("celery")

DEADLINE_S = 40.0

HEADER = '''\
import os, time
from datetime import datetime, timedelta, timezone
from scheduler import DAG, PythonOperator

MARKERS = {markers!r}


def mark(text):
    fd = os.open(MARKERS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\\n").encode())
    finally:
        os.close(fd)

'''


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    problem = broker_problem(REDIS_URL)
    if problem is not None:
        pytest.skip(problem)
    cluster = Cluster(
        tmp_path, pg_url, broker=REDIS_URL,
        scheduler__task_instance_heartbeat_sec="0.5", scheduler__task_instance_heartbeat_timeout="3",
        celery__visibility_timeout="2", core__killed_task_cleanup_time="1",
    )
    try:
        yield cluster
    finally:
        cluster.stop_all()
        cluster.clean_broker()


def ti_state(engine: Engine, task_id: str) -> tuple[str, int]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT state, try_number FROM task_instance WHERE task_id = :t"), {"t": task_id}).one()
        conn.rollback()
    return str(row.state), int(row.try_number)


def process_tree(pid: int) -> set[int]:
    """``pid`` and every live process below it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found = {pid}
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.postgres
def test_a_task_runs_only_on_a_worker_of_its_queue(redis_cluster: Cluster, engine: Engine) -> None:
    cluster = redis_cluster
    (cluster.dags / "routed.py").write_text(HEADER.format(markers=str(cluster.markers)) + '''
with DAG("routed", schedule="@once", start_date=datetime(2024, 1, 1, tzinfo=timezone.utc)):
    PythonOperator(task_id="fast_one", queue="fast", python_callable=lambda: mark("fast_one"))
    PythonOperator(task_id="plain_one", python_callable=lambda: mark("plain_one"))
''')
    cluster.migrate()
    cluster.worker("fast-worker", concurrency=1, queues="fast")
    cluster.scheduler("scheduler")
    cluster.wait_for("the fast task to succeed", lambda: count(
        engine, "SELECT count(*) FROM task_instance WHERE task_id = 'fast_one' AND state = 'success'") == 1,
        DEADLINE_S)
    # Nothing listens on the default queue yet: its task was sent there and waits.
    assert ti_state(engine, "plain_one") == ("queued", 1)
    assert cluster.markers.read_text().split() == ["fast_one"]
    cluster.worker("default-worker", concurrency=1)
    cluster.wait_for("the run to succeed", lambda: count(
        engine, "SELECT count(*) FROM dag_run WHERE state = 'success'") == 1, DEADLINE_S)
    assert sorted(cluster.markers.read_text().split()) == ["fast_one", "plain_one"]
    # The log a worker wrote is served by the web server (one machine: the same log folder). The
    # worker's runner writes its last line after the commit the scheduler may already have seen.
    written = cluster.home / "logs" / "dag_id=routed"
    cluster.wait_for("the fast task's last log line", lambda: any(
        "Recorded state success" in p.read_text() for p in written.rglob("task_id=fast_one/attempt=1.log")),
        DEADLINE_S)
    content = api_log(cluster, "routed", "fast_one")
    assert "Starting attempt 1 of 1 of routed.fast_one" in content and "Recorded state success" in content


def api_log(cluster: Cluster, dag_id: str, task_id: str) -> str:
    import base64

    from scheduler.db.engine import session_scope
    from webserver.app import create_app
    from webserver.users import create_user

    settings = load_settings({k: v for k, v in cluster.env.items() if k.startswith("UPDRAFT")})
    app = create_app(settings)
    try:
        with session_scope(app.extensions["updraft_engine"]) as session:
            create_user(session, username="reader", password="correct-horse", role="Viewer")
        engine = app.extensions["updraft_engine"]
        with engine.connect() as conn:
            run_id = conn.execute(text("SELECT run_id FROM dag_run WHERE dag_id = :d"), {"d": dag_id}).scalar()
            conn.rollback()
        token = base64.b64encode(b"reader:correct-horse").decode()
        response = app.test_client().get(
            f"/api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1?full_content=true",
            headers={"Authorization": f"Basic {token}"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return str(response.get_json()["content"])
    finally:
        app.extensions["updraft_engine"].dispose()


@pytest.mark.postgres
def test_a_worker_killed_mid_try_never_runs_it_twice_and_the_try_is_retried(
    redis_cluster: Cluster, engine: Engine
) -> None:
    cluster = redis_cluster
    (cluster.dags / "slow.py").write_text(HEADER.format(markers=str(cluster.markers)) + '''
def work(ti=None, **_):
    mark(f"try {ti.try_number} started")
    if ti.try_number == 1:
        time.sleep(120)  # its worker is killed meanwhile


with DAG("slow", schedule="@once", start_date=datetime(2024, 1, 1, tzinfo=timezone.utc)):
    PythonOperator(task_id="long", python_callable=work, retries=1, retry_delay=timedelta(seconds=0))
''')
    cluster.migrate()
    doomed = cluster.worker("doomed-worker", concurrency=1)
    cluster.scheduler("scheduler")
    cluster.wait_for("try 1 to start", lambda: cluster.markers.exists()
                     and "try 1 started" in cluster.markers.read_text(), DEADLINE_S)
    for pid in process_tree(doomed.pid):  # the whole worker: main process, pool, runner, task
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    doomed.wait(timeout=10)
    survivor = cluster.worker("survivor", concurrency=1)
    cluster.wait_for("the run to succeed", lambda: count(
        engine, "SELECT count(*) FROM dag_run WHERE state = 'success'") == 1, DEADLINE_S)
    # The dead worker's message came back to the survivor (Redis visibility timeout 2 s), which found the try
    # already started and did not run it; the try was failed by its heartbeat timeout and retried.
    cluster.wait_for("the redelivered message to be refused", lambda: "not queued any more" in (
        cluster.tmp / "survivor.log").read_text(errors="replace"), DEADLINE_S)
    assert cluster.markers.read_text().splitlines() == ["try 1 started", "try 2 started"]
    assert ti_state(engine, "long") == ("success", 2)
    with engine.connect() as conn:
        reason = conn.execute(text("SELECT extra FROM log WHERE task_id = 'long' AND event = 'up_for_retry'")).scalar()
        conn.rollback()
    assert reason is not None and "no heartbeat" in reason
    assert survivor.poll() is None


def test_the_worker_refuses_bad_settings_and_arguments_with_a_clear_message(tmp_path: Path) -> None:
    env = clean_environ()
    env.update(UPDRAFT_HOME=str(tmp_path), UPDRAFT__CELERY__BROKER_URL="kafka://127.0.0.1:9092")
    done = subprocess.run([updraft(), "celery", "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "[celery] broker_url: unsupported scheme 'kafka'" in done.stderr
    env["UPDRAFT__CELERY__BROKER_URL"] = REDIS_URL
    done = subprocess.run([updraft(), "celery", "worker", "--queues", "a,b c"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "--queues: 'b c' is not a queue name" in done.stderr
    done = subprocess.run([updraft(), "celery", "worker", "--concurrency", "none"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "expected a whole number of processes" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_scheduler_with_a_bad_broker_url_stops_with_the_setting_named(tmp_path: Path) -> None:
    settings = load_settings({"UPDRAFT_HOME": str(tmp_path), "UPDRAFT__CORE__EXECUTOR": "CeleryExecutor",
                              "UPDRAFT__CELERY__BROKER_URL": "localhost:6379"})
    from scheduler.executors import make_executor

    with pytest.raises(ConfigError, match=r"\[celery\] broker_url: unsupported scheme 'localhost'"):
        make_executor(settings)


def test_a_message_that_is_not_a_workload_is_dropped_with_a_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from scheduler.celery_app import EXIT_BAD_MESSAGE, run_message

    settings = load_settings({"UPDRAFT_HOME": str(tmp_path)})
    assert run_message('{"kind": "launch_missiles"}', settings) == EXIT_BAD_MESSAGE
    assert run_message("not json", settings) == EXIT_BAD_MESSAGE
    assert run_message({"kind": "task"}, settings) == EXIT_BAD_MESSAGE
    messages = [r.getMessage() for r in caplog.records]
    assert any("unknown workload kind 'launch_missiles'" in m for m in messages)
    assert any("body is dict, not an updraft workload" in m for m in messages)


def test_a_try_that_cannot_be_sent_goes_back_to_scheduled_unconsumed(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from scheduler.db import migrate
    from scheduler.executors.celery_executor import CeleryExecutor
    from scheduler.workloads import TaskWorkload
    from tests.distributed.test_ha import add_run_with_tis, ti_states

    engine = make_engine(sqlite_url)
    migrate.upgrade(engine)
    add_run_with_tis(engine, [("t", "queued", 1, None), ("u", "queued", 1, None)])
    settings = load_settings({"UPDRAFT_HOME": str(tmp_path), "UPDRAFT__DATABASE__SQL_ALCHEMY_CONN": sqlite_url,
                              "UPDRAFT__CORE__EXECUTOR": "CeleryExecutor",
                              "UPDRAFT__CELERY__BROKER_URL": "redis://127.0.0.1:1/0",  # nothing listens there
                              "UPDRAFT__CELERY__OPERATION_TIMEOUT": "1"})
    executor = CeleryExecutor(settings)
    executor.start(lambda: None)
    try:
        with engine.connect() as conn:
            ids = dict(conn.execute(text("SELECT task_id, id FROM task_instance")).all())
        for task_id in ("t", "u"):  # one batch: the second is given back without another wait on the broker
            executor.queue(TaskWorkload(ti_id=ids[task_id], dag_id="d", run_id="r", task_id=task_id, map_index=-1,
                                        try_number=1, fileloc="/nowhere/d.py"))
        # Both queued again later as try 1: nothing consumed.
        assert ti_states(engine) == {"t": ("scheduled", 0), "u": ("scheduled", 0)}
        assert executor.running == {} and executor.open_slots() == 0  # no more sends for a few seconds
        messages = [r.getMessage() for r in caplog.records]
        assert any("cannot send d.t r try 1 to queue default" in m for m in messages)
        assert any("not sending d.u r try 1: the broker failed a moment ago" in m for m in messages)
    finally:
        executor.end(timeout=0)
        engine.dispose()
