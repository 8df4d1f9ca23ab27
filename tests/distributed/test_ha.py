"""Several schedulers on one database (scheduler/db/ha.py): liveness, adoption, the pool lock, SQLite's one scheduler.

The database tests use real databases (a SQLite file, a fresh PostgreSQL database); the
refusal test runs two real ``updraft scheduler`` processes on one SQLite file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, text

from scheduler.clock import utcnow
from scheduler.config import load_settings
from scheduler.db import ha, migrate
from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import Dag, DagRun, Job, Pool, TaskInstance
from scheduler.executors.inline import InlineExecutor
from scheduler.task_scheduling import TaskScheduler
from tests.backend import clean_environ

HOST = socket.gethostname()
THRESHOLD = timedelta(seconds=30)
DEADLINE_S = 30.0


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def add_job(engine: Engine, *, pid: int, heartbeat_age: float, host: str = HOST, state: str = "running") -> int:
    now = utcnow()
    with session_scope(engine) as session:
        job = Job(job_type="SchedulerJob", hostname=host, pid=pid, state=state, start_date=now - timedelta(hours=1),
                  latest_heartbeat=now - timedelta(seconds=heartbeat_age))
        session.add(job)
        session.flush()
        return job.id


def add_run_with_tis(engine: Engine, tis: list[tuple[str, str, int, int | None]]) -> None:
    """A DAG, one running run, and task instances (task_id, state, try_number, queued_by_job_id)."""
    now = utcnow()
    with session_scope(engine) as session:
        session.add(Dag(dag_id="d", fileloc="/nowhere/d.py", is_paused=False, is_active=True))
        session.flush()
        session.add(DagRun(dag_id="d", run_id="r", run_type="manual", state="running", logical_date=now,
                           run_after=now, queued_at=now, conf={}, external_trigger=True))
        session.flush()
        for task_id, state, try_number, job_id in tis:
            session.execute(insert(TaskInstance).values(
                dag_id="d", run_id="r", task_id=task_id, map_index=-1, state=state, try_number=try_number,
                max_tries=0, queued_by_job_id=job_id, queued_dttm=now, updated_at=now,
            ))


def ti_states(engine: Engine) -> dict[str, tuple[str, int]]:
    with session_scope(engine, readonly=True) as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number))
        return {task_id: (str(state), int(n)) for task_id, state, n in rows}


def job_state(engine: Engine, job_id: int) -> str:
    with session_scope(engine, readonly=True) as session:
        return str(session.scalar(select(Job.state).where(Job.id == job_id)))


# --- liveness ----------------------------------------------------------------------------------


def test_liveness_needs_a_fresh_heartbeat_and_on_this_host_a_live_pid() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fresh = now - timedelta(seconds=5)
    stale = now - timedelta(seconds=31)
    me, gone = os.getpid(), _dead_pid()
    assert ha.is_alive(ha.JobInfo(1, HOST, me, fresh), now=now, threshold=THRESHOLD)
    assert not ha.is_alive(ha.JobInfo(1, HOST, me, stale), now=now, threshold=THRESHOLD)
    assert not ha.is_alive(ha.JobInfo(1, HOST, gone, fresh), now=now, threshold=THRESHOLD)
    # Another host's pid cannot be checked from here: its heartbeat alone decides.
    assert ha.is_alive(ha.JobInfo(1, "elsewhere.example", gone, fresh), now=now, threshold=THRESHOLD)
    assert not ha.is_alive(ha.JobInfo(1, "elsewhere.example", gone, stale), now=now, threshold=THRESHOLD)


# --- SQLite: one scheduler -----------------------------------------------------------------------


def test_sqlite_refuses_a_second_live_scheduler_naming_it(sqlite_engine: Engine) -> None:
    add_job(sqlite_engine, pid=os.getppid(), heartbeat_age=2)
    with pytest.raises(ha.SchedulerAlreadyRunning) as info, session_scope(sqlite_engine) as session:
        ha.refuse_second_sqlite_scheduler(session, now=utcnow(), threshold=THRESHOLD)
    message = str(info.value)
    assert f"pid {os.getppid()}" in message and HOST in message and "SQLite" in message


@pytest.mark.parametrize("pid_alive, heartbeat_age, state", [
    (False, 2, "running"),   # killed on this host a moment ago: restartable at once
    (True, 31, "running"),   # no heartbeat for longer than the threshold
    (True, 2, "success"),    # stopped cleanly
])
def test_sqlite_allows_a_scheduler_after_a_dead_or_stopped_one(
    sqlite_engine: Engine, pid_alive: bool, heartbeat_age: float, state: str
) -> None:
    add_job(sqlite_engine, pid=os.getppid() if pid_alive else _dead_pid(), heartbeat_age=heartbeat_age, state=state)
    with session_scope(sqlite_engine) as session:
        ha.refuse_second_sqlite_scheduler(session, now=utcnow(), threshold=THRESHOLD)


@pytest.mark.postgres
def test_postgres_allows_several_live_schedulers(pg_engine: Engine) -> None:
    add_job(pg_engine, pid=os.getppid(), heartbeat_age=1)
    with session_scope(pg_engine) as session:
        ha.refuse_second_sqlite_scheduler(session, now=utcnow(), threshold=THRESHOLD)


@pytest.mark.sqlite_only  # SQLite's own refusal: PostgreSQL runs several schedulers
def test_a_second_scheduler_process_on_sqlite_exits_1_naming_the_first(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    env = clean_environ()
    env.update(UPDRAFT_HOME=str(home), UPDRAFT__CORE__PARSING_PROCESSES="1")
    updraft = str(Path(sys.executable).with_name("updraft"))
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([updraft, "scheduler"], env=env, stderr=log, stdout=subprocess.DEVNULL)
    try:
        engine = make_engine(f"sqlite:///{home / 'updraft.db'}")
        deadline = time.monotonic() + DEADLINE_S

        def recorded() -> bool:
            try:
                with session_scope(engine, readonly=True) as session:
                    return session.scalar(select(Job.id).where(Job.pid == first.pid, Job.state == "running")) is not None
            except Exception:  # noqa: BLE001 - the first scheduler is still creating the database
                return False

        while not recorded():
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "the first scheduler never recorded its job"
            time.sleep(0.05)  # polling the database for a condition
        engine.dispose()
        second = subprocess.run([updraft, "scheduler"], env=env, capture_output=True, text=True, timeout=DEADLINE_S)
        assert second.returncode == 1, second.stderr
        assert f"pid {first.pid} on host {HOST}" in second.stderr
        assert "SQLite supports one scheduler at a time" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one is unharmed
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=DEADLINE_S)
        log.close()


# --- adoption ------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_dead_schedulers_queued_tries_go_back_once_and_its_running_ones_stay(pg_engine: Engine) -> None:
    dead = add_job(pg_engine, pid=4242, heartbeat_age=45, host="gone.example")
    live = add_job(pg_engine, pid=4343, heartbeat_age=1, host="alive.example")
    add_run_with_tis(pg_engine, [
        ("dead_queued", "queued", 2, dead),
        ("dead_running", "running", 1, dead),
        ("live_queued", "queued", 1, live),
    ])
    assert ha.adopt_dead_schedulers(pg_engine, now=utcnow(), threshold=THRESHOLD, own_job_id=live) == 1
    assert ti_states(pg_engine) == {
        "dead_queued": ("scheduled", 1),  # the try is not consumed: it runs as try 2 when queued again
        "dead_running": ("running", 1),   # left to the task heartbeat timeout
        "live_queued": ("queued", 1),
    }
    assert (job_state(pg_engine, dead), job_state(pg_engine, live)) == ("failed", "running")
    # A second scheduler looking afterwards finds nothing left to adopt.
    assert ha.adopt_dead_schedulers(pg_engine, now=utcnow(), threshold=THRESHOLD, own_job_id=None) == 0
    assert ti_states(pg_engine)["dead_queued"] == ("scheduled", 1)


@pytest.mark.postgres
def test_a_starting_scheduler_leaves_a_live_schedulers_queued_tries_alone(pg_engine: Engine, tmp_path: Path) -> None:
    live = add_job(pg_engine, pid=4343, heartbeat_age=1, host="alive.example")
    ended = add_job(pg_engine, pid=4444, heartbeat_age=600, host="alive.example", state="success")
    add_run_with_tis(pg_engine, [("live_queued", "queued", 1, live), ("ended_queued", "queued", 1, ended)])
    settings = load_settings({"UPDRAFT_HOME": str(tmp_path), "UPDRAFT__DATABASE__SQL_ALCHEMY_CONN": "sqlite://"})
    tasks = TaskScheduler(pg_engine, settings, InlineExecutor(settings), job_id=None)
    tasks.reconcile_at_start(utcnow())
    assert ti_states(pg_engine) == {"live_queued": ("queued", 1), "ended_queued": ("scheduled", 0)}


# --- the pool lock -------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_queueing_transaction_holds_every_pool_row(pg_engine: Engine) -> None:
    with session_scope(pg_engine) as session:
        session.add(Pool(pool="small", slots=8, description="", include_deferred=False))
    with session_scope(pg_engine) as holder:
        ha.lock_pools(holder)
        with pg_engine.connect() as other:
            other.execute(text("SET lock_timeout = '100ms'"))
            for name in ("default_pool", "small"):
                with pytest.raises(Exception, match="lock"):
                    other.execute(text("SELECT id FROM slot_pool WHERE pool = :p FOR UPDATE"), {"p": name})
                other.rollback()
                other.execute(text("SET lock_timeout = '100ms'"))
    # Released at commit: the same lock is free again.
    with pg_engine.connect() as other:
        other.execute(text("SET lock_timeout = '100ms'"))
        assert len(other.execute(text("SELECT id FROM slot_pool FOR UPDATE")).all()) == 2
        other.rollback()


def test_the_pool_lock_is_a_no_op_on_sqlite(sqlite_engine: Engine) -> None:
    with session_scope(sqlite_engine) as session:
        ha.lock_pools(session)
        assert session.scalar(select(Pool.slots).where(Pool.pool == "default_pool")) is not None


@pytest.mark.postgres
def test_a_scheduler_taken_for_dead_comes_back_to_running_on_its_next_heartbeat(pg_engine: Engine) -> None:
    slow = add_job(pg_engine, pid=4242, heartbeat_age=45, host="slow.example")
    ha.adopt_dead_schedulers(pg_engine, now=utcnow(), threshold=THRESHOLD, own_job_id=None)
    assert job_state(pg_engine, slow) == "failed"
    with session_scope(pg_engine) as session:
        ha.heartbeat(session, slow, now=utcnow())
    assert job_state(pg_engine, slow) == "running"
    with session_scope(pg_engine, readonly=True) as session:
        assert slow in ha.live_scheduler_ids(session, now=utcnow(), threshold=THRESHOLD)
