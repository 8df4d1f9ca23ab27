"""Four schedulers on one DAG of 1,000 tasks in a pool of 8 slots: never more than 8 tries at once.

Real ``updraft scheduler`` processes (LocalExecutor, each with its own fork server) on
one PostgreSQL database. The queueing step of each scheduler locks the pool rows
(scheduler/db/ha.py), so two schedulers cannot both take the last free slot. Every try's
start and end dates (written by the task runner when it claims the try and when it
records its outcome, both inside the time its instance holds a pool slot) are read back
afterwards, and the largest number of overlapping tries is computed from them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from scheduler.db.engine import make_engine
from tests.distributed.cluster import Cluster, count

TASKS = 1000
SLOTS = 8
SCHEDULERS = 4
DEADLINE_S = 90.0

DAG = f'''\
from datetime import datetime, timezone
from scheduler import DAG, PythonOperator


def noop():
    return None


with DAG("crowd", schedule="@once", start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
         max_active_tasks={TASKS}):
    for i in range({TASKS}):
        PythonOperator(task_id=f"t{{i:04d}}", python_callable=noop, pool="eight")
'''


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(start, 1) for start, _end in intervals] + [(end, -1) for _start, end in intervals],
                    key=lambda e: (e[0], e[1]))
    best = level = 0
    for _when, step in events:
        level += step
        best = max(best, level)
    return best


def test_max_overlap_counts_what_it_should() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    s = timedelta(seconds=1)
    assert max_overlap([(t, t + 2 * s), (t + s, t + 3 * s), (t + 2 * s, t + 4 * s)]) == 2
    assert max_overlap([(t, t + 5 * s)] * 3 + [(t + 5 * s, t + 6 * s)]) == 3


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_four_schedulers_never_exceed_a_pool_of_eight(tmp_path: Path, pg_url: str, engine: Engine) -> None:
    cluster = Cluster(tmp_path, pg_url, core__parallelism="8")
    (cluster.dags / "crowd.py").write_text(DAG)
    cluster.migrate()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO slot_pool (pool, slots, description, include_deferred) "
                          "VALUES ('eight', :n, 'contention test', false)"), {"n": SLOTS})
    try:
        for i in range(SCHEDULERS):
            cluster.scheduler(f"scheduler{i + 1}")
        cluster.wait_for("the run to finish", lambda: count(
            engine, "SELECT count(*) FROM dag_run WHERE state IN ('success', 'failed')") == 1, DEADLINE_S)
    finally:
        cluster.stop_all()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, start_date, end_date, queued_by_job_id FROM task_instance")).all()
        run_state = conn.execute(text("SELECT state FROM dag_run")).scalar()
        conn.rollback()
    assert run_state == "success"
    assert len(rows) == TASKS and {row.state for row in rows} == {"success"}
    assert len({row.queued_by_job_id for row in rows}) == SCHEDULERS  # every scheduler queued some
    overlap = max_overlap([(row.start_date, row.end_date) for row in rows])
    assert 1 < overlap <= SLOTS, f"{overlap} tries held slots of the pool of {SLOTS} at once"
