"""Two schedulers and two Celery workers on PostgreSQL, one scheduler SIGKILLed midway: every run once, every task once.

Real processes throughout: ``updraft scheduler`` x2 (CeleryExecutor), ``updraft celery
worker`` x2, a fresh PostgreSQL database, and a Redis or RabbitMQ broker (a test-run
prefix on every queue, so nothing else on the broker is touched). The DAG is a fan-out of
six tasks scheduled every minute with catchup from 35 minutes ago, so 36 or more runs
(216+ tries) are due at once. Each task appends one line per execution to a marker file.
Once a third of the tries ran, one scheduler is killed with SIGKILL; the other must
adopt its work (its job row is marked failed: at once here, since its pid is gone on this host; a
scheduler on another host after the health threshold) and finish.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from scheduler.db.engine import make_engine
from tests.distributed.cluster import AMQP_URL, REDIS_URL, Cluster, broker_problem, count, marker_lines

pytest.importorskip("celery")

TASKS = ("start", "b0", "b1", "b2", "b3", "end")
CATCHUP_MINUTES = 35
MIN_RUNS = CATCHUP_MINUTES + 1
DEADLINE_S = 60.0


def fan_out_dag(markers: Path, start: datetime) -> str:
    return f'''\
import os
from datetime import datetime, timezone
from scheduler import DAG, PythonOperator

MARKERS = {str(markers)!r}


def mark(ti=None, run_id=None, **_):
    fd = os.open(MARKERS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{{run_id}} {{ti.task_id}} {{ti.try_number}}\\n".encode())
    finally:
        os.close(fd)


with DAG("fan", schedule="* * * * *", catchup=True, max_active_runs=64, max_active_tasks=16,
         start_date=datetime({start.year}, {start.month}, {start.day}, {start.hour}, {start.minute},
                             tzinfo=timezone.utc)):
    first = PythonOperator(task_id="start", python_callable=mark)
    last = PythonOperator(task_id="end", python_callable=mark)
    for i in range(4):
        first >> PythonOperator(task_id=f"b{{i}}", python_callable=mark) >> last
'''


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_two_schedulers_two_workers_a_scheduler_killed_midway(
    tmp_path: Path, pg_url: str, engine: Engine, broker: str
) -> None:
    url = REDIS_URL if broker == "redis" else AMQP_URL
    problem = broker_problem(url)
    if problem is not None:
        pytest.skip(problem)
    cluster = Cluster(tmp_path, pg_url, broker=url)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=CATCHUP_MINUTES)
    (cluster.dags / "fan.py").write_text(fan_out_dag(cluster.markers, start))
    cluster.migrate()
    try:
        cluster.worker("worker1")
        cluster.worker("worker2")
        doomed = cluster.scheduler("scheduler1")
        cluster.scheduler("scheduler2")
        cluster.wait_for("both schedulers to record their jobs", lambda: count(
            engine, "SELECT count(*) FROM scheduler_job WHERE state = 'running'") == 2, DEADLINE_S)
        cluster.wait_for("both schedulers to queue tries and a third of the tries to run", lambda: count(
            engine, "SELECT count(DISTINCT queued_by_job_id) FROM task_instance") == 2
            and len(marker_lines(cluster)) >= 70, DEADLINE_S)
        cluster.kill(doomed)
        doomed_job = count(engine, "SELECT id FROM scheduler_job WHERE pid = :pid", pid=doomed.pid)

        def finished() -> bool:
            runs = count(engine, "SELECT count(*) FROM dag_run")
            unfinished = count(engine, "SELECT count(*) FROM dag_run WHERE state <> 'success'")
            adopted = count(engine, "SELECT count(*) FROM scheduler_job WHERE id = :id AND state = 'failed'",
                            id=doomed_job)
            return runs >= MIN_RUNS and unfinished == 0 and adopted == 1

        cluster.wait_for("every run to succeed and the killed scheduler to be adopted", finished, DEADLINE_S)
        with engine.connect() as conn:
            runs = conn.execute(text("SELECT run_id, logical_date, state FROM dag_run ORDER BY logical_date")).all()
            conn.rollback()
        executions = marker_lines(cluster)
    finally:
        cluster.stop_all()
        cluster.clean_broker()

    # Every run exists once: one per minute from the start date, no gap, no duplicate.
    dates = [row.logical_date for row in runs]
    assert len(dates) >= MIN_RUNS
    assert dates == [start + timedelta(minutes=i) for i in range(len(dates))]
    assert len({row.run_id for row in runs}) == len(runs)
    # Every task of every finished run executed exactly once (a run created since may be under way).
    per_try = Counter((run_id, task_id) for run_id, task_id, _try in executions)
    assert [key for key, n in per_try.items() if n > 1] == []
    succeeded = {row.run_id for row in runs if row.state == "success"}
    assert {(r, t) for r, t in per_try if r in succeeded} == {(r, t) for r in succeeded for t in TASKS}
    assert all(try_number == 1 for _r, _t, try_number in executions)
    assert os.path.getsize(cluster.markers) > 0
