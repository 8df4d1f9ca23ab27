"""CPU time of the scheduler loop's task side for one step of a chain or a fan-out, no task processes involved.

    .venv/bin/python bench/iteration_bench.py [--chain 40] [--fanout 300] [--repeat 3]

A temporary SQLite home with one DAG file (a chain of ``--chain`` PythonOperators) and a
manual run of it. An executor that runs nothing stands in for the LocalExecutor: after each
iteration the test marks what was queued as succeeded (one UPDATE), so the next iteration has
exactly one step of work: read the running run, decide it, schedule and queue the next task.
Reported: the median wall and CPU time of ``TaskScheduler.run_once`` over the chain, the best
of ``--repeat`` chains. That is the scheduler's share of every hop of the chain in
``bench/task_bench.py``.

With ``--fanout N``: ``N`` independent tasks and 32 executor slots instead. After each
iteration the oldest queued task is marked succeeded and its slot freed, so each iteration
decides the whole run and queues one task in the one free slot: the scheduler's share of
every task of the fan-out in ``bench/task_bench.py`` (which wakes it once a try ends).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def one_run(home: Path, length: int, *, fanout: bool) -> tuple[float, float]:
    (home / "dags").mkdir()
    (home / "dags" / "chain.py").write_text(
        "from datetime import datetime\nfrom scheduler import DAG, PythonOperator\n\ndef noop():\n    pass\n\n"
        f"with DAG('chain', schedule=None, start_date=datetime(2024, 1, 1), max_active_tasks={length}):\n"
        f"    tasks = [PythonOperator(task_id=f't{{i:03d}}', python_callable=noop) for i in range({length})]\n"
        + ("" if fanout else "    for a, b in zip(tasks, tasks[1:]):\n        a >> b\n")
    )
    os.environ.update(UPDRAFT_HOME=str(home), UPDRAFT__CORE__DAGS_FOLDER=str(home / "dags"),
                      UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION="false")
    from sqlalchemy import select, text

    from scheduler.clock import utcnow
    from scheduler.config import load_settings
    from scheduler.db import store
    from scheduler.db.engine import make_engine, session_scope
    from scheduler.db.migrate import upgrade
    from scheduler.db.models import SerializedDag
    from scheduler.executors.base import BaseExecutor
    from scheduler.loop import Scheduler
    from scheduler.serialization import SerializedDAG
    from scheduler.states import DagRunState, DagRunType

    class NoExecutor(BaseExecutor):
        parallelism = 32
        running: dict[Any, Any] = {}  # noqa: RUF012 - nothing ever runs

        def __init__(self) -> None:
            self.queued: list[Any] = []

        def start(self, on_event: Any) -> None:
            pass

        def queue(self, workload: Any) -> None:
            self.queued.append(workload)

        def drain_events(self) -> list[Any]:
            return []

        def open_slots(self) -> int:
            return 32 - len(self.queued)

        def end(self, *, timeout: float) -> None:
            pass

    settings = load_settings()
    engine = make_engine(settings.sql_alchemy_conn)
    upgrade(engine)
    executor = NoExecutor()
    scheduler = Scheduler(engine, settings, executor=executor)
    now = utcnow()
    scheduler.run_once(now)  # parses the file
    with session_scope(engine) as session:
        sdag = SerializedDAG.from_dict(session.scalar(select(SerializedDag.data)))
        store.create_dag_run(session, dag_id="chain", run_id="r", run_type=DagRunType.MANUAL, logical_date=now,
                             data_interval=sdag.timetable.infer_manual_data_interval(run_after=now), conf={},
                             state=DagRunState.QUEUED, run_after=now, now=now, external_trigger=True)
    scheduler.run_once(utcnow())  # starts the run and queues the first task
    tasks = scheduler._task_scheduler()
    walls, cpus = [], []
    while executor.queued:
        stamp = utcnow().replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        done = executor.queued[:1] if fanout else list(executor.queued)
        with engine.begin() as connection:
            for workload in done:
                connection.execute(text("UPDATE task_instance SET state='success', start_date=:t, end_date=:t "
                                        "WHERE id=:i"), {"t": stamp, "i": workload.ti_id})
        del executor.queued[:len(done)]
        wall, cpu = time.perf_counter(), time.process_time()
        tasks.run_once(utcnow())
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    scheduler.close()
    engine.dispose()
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--fanout", type=int, default=0, help="N independent tasks instead of a chain")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="updraft-iteration-") as tmp:
            results.append(one_run(Path(tmp), args.fanout or args.chain, fanout=bool(args.fanout)))
    wall, cpu = min(results, key=lambda r: r[1])
    shape = {"fanout": args.fanout} if args.fanout else {"chain": args.chain}
    print(json.dumps({**shape, "median iteration wall (ms)": round(wall * 1000, 2),
                      "median iteration CPU (ms)": round(cpu * 1000, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
