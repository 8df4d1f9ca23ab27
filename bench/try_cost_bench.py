"""CPU, wall time and copy-on-write page faults of one task try, as the fork server runs it.

    .venv/bin/python bench/try_cost_bench.py [--tries 30] [--tasks 300]

A temporary SQLite database with one DAG file of ``--tasks`` no-op PythonOperators, all
queued. In this process: the fork server's warm-up (``task_runner.warm_up``), then for each
way of running a try, ``--tries`` tries one after the other, each in a forked child that
connects ahead (as a spare runner does) and runs ``run_workload``:

* ``supervised``: the runner forks a task process for the code (``updraft tasks run``);
* ``direct``: the try's code runs in the runner itself (the fork server's children);
* ``direct + zygote``: the same, forked from a process that imported the DAG file
  already (``task_runner.preload``), as the fork server's per-file zygotes do.

Reported per try, from ``getrusage(RUSAGE_CHILDREN)`` around each child (so the task
process of the supervised way is counted too): wall time, user + system CPU, and minor
page faults. CPU time is far less sensitive to other load on the machine than wall time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=30)
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="updraft-try-cost-") as tmp:
        return measure(Path(tmp), args.tries, args.tasks)


def measure(tmp: Path, tries: int, tasks: int) -> int:
    from scheduler.db.engine import make_engine
    from scheduler.db.migrate import upgrade
    from tests.runner.harness import Env, make_settings

    for name in ("dags", "logs", "markers", "home"):
        (tmp / name).mkdir()
    url = f"sqlite:///{tmp}/updraft.db"
    engine = make_engine(url)
    upgrade(engine)
    settings = make_settings(tmp, url)
    env = Env(tmp, url, engine, settings, tmp / "dags", tmp / "logs", tmp / "markers")
    path = tmp / "dags" / "wide.py"
    path.write_text(
        "from datetime import datetime\nfrom scheduler import DAG, PythonOperator\n\ndef noop():\n    pass\n\n"
        f"with DAG('wide', schedule=None, start_date=datetime(2024, 1, 1), max_active_tasks={tasks}):\n"
        f"    tasks = [PythonOperator(task_id=f't{{i:03d}}', python_callable=noop) for i in range({tasks})]\n"
    )
    modes = ("supervised", "direct", "direct + zygote")
    ids = env.queue("wide", path, {f"t{i:03d}": "queued" for i in range(tries * len(modes))})
    engine.dispose()

    from scheduler import task_runner

    task_runner.warm_up(settings)
    gc.collect()
    gc.freeze()
    results = {}
    next_task = 0
    for mode in modes:
        if mode == "direct + zygote":
            reason = task_runner.preload(str(path), settings)
            assert reason is None, reason
            gc.collect()
            gc.freeze()
        wall = cpu = faults = 0.0
        for _ in range(tries):
            task_id = f"t{next_task:03d}"
            next_task += 1
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                task_runner.prepare(settings)
                code = task_runner.run_workload(env.workload(ids[task_id], "wide", task_id, path), settings,
                                                direct=mode != "supervised")
                os._exit(code)
            os.waitpid(pid, 0)
            wall += time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            faults += after.ru_minflt - before.ru_minflt
            if env.ti(ids[task_id]).state != "success":
                print(f"{mode}: {task_id} did not succeed", file=sys.stderr)
                return 1
        results[mode] = {
            "wall per try (ms)": round(wall / tries * 1000, 2),
            "CPU per try (ms)": round(cpu / tries * 1000, 2),
            "page faults per try": round(faults / tries),
        }
    print(json.dumps({"tasks in the DAG file": tasks, "tries per way": tries, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
