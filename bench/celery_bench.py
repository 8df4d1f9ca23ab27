"""Task throughput and per-hop latency through Celery, with one and with two schedulers, on PostgreSQL.

    .venv/bin/python bench/celery_bench.py [--broker redis://127.0.0.1:6379/15] [--fanout 300] [--chain 30]
                                           [--workers 2] [--concurrency 2] [--repeat 2]

For each scheduler count (1, then 2) it creates a fresh PostgreSQL database
(``--pg``, default the local server), a temporary UPDRAFT_HOME, and starts ``--workers``
``updraft celery worker`` s (``--concurrency`` processes each) and the schedulers
(``core.executor = CeleryExecutor``, a queue prefix of its own on the broker). Then it
triggers, ``--repeat`` times each:

* a fan-out of ``--fanout`` independent no-op PythonOperators: tasks per second over
  the span from the first try's start to the last one's end (the task runner's own
  timestamps in ``task_instance``);
* a chain of ``--chain`` no-op PythonOperators: the **hop** is the gap from one task's
  ``end_date`` to the next one's ``start_date`` (the runner claimed it on a worker), so
  it includes the scheduler noticing the end, deciding, queueing, the broker message and
  the worker taking it.

It prints JSON with the medians, and the load average before and after (the machine may
be shared). Nothing is asserted: the figures go in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UPDRAFT = [sys.executable, "-m", "scheduler.cli"]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from task_bench import dag_source, run_cli  # noqa: E402 - the same DAG files and CLI calls


def pg_admin(server: str, sql: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server).set(drivername="postgresql", database="postgres")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(sql)


def wait_run(db_url: str, dag_id: str, run_id: str, deadline_s: float = 600.0) -> list[tuple[str, datetime, datetime]]:
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    deadline = time.monotonic() + deadline_s
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT state FROM dag_run WHERE dag_id=%s AND run_id=%s", (dag_id, run_id)).fetchone()
            if row and row[0] in ("success", "failed"):
                if row[0] != "success":
                    raise SystemExit(f"{dag_id} run {run_id} ended {row[0]}")
                return list(conn.execute(
                    "SELECT task_id, start_date, end_date FROM task_instance WHERE dag_id=%s AND run_id=%s "
                    "ORDER BY task_id", (dag_id, run_id),
                ).fetchall())
            if time.monotonic() > deadline:
                raise SystemExit(f"{dag_id} run {run_id} did not finish in {deadline_s} s")
            time.sleep(0.05)  # polling the database for the run's end


def measure(args: argparse.Namespace, schedulers: int) -> dict[str, object]:
    name = f"updraft_celery_bench_{uuid.uuid4().hex[:8]}"
    pg_admin(args.pg, f'CREATE DATABASE "{name}"')
    from sqlalchemy.engine import make_url

    db_url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    procs: list[subprocess.Popen[bytes]] = []
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    try:
        with tempfile.TemporaryDirectory(prefix="updraft-celery-bench-") as tmp:
            home = Path(tmp)
            (home / "dags").mkdir()
            (home / "dags" / "chain.py").write_text(dag_source("chain", args.chain, chain=True))
            (home / "dags" / "fanout.py").write_text(dag_source("fanout", args.fanout, chain=False))
            env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
            env.update(
                UPDRAFT_HOME=str(home),
                UPDRAFT__DATABASE__SQL_ALCHEMY_CONN=db_url,
                UPDRAFT__CORE__DAGS_FOLDER=str(home / "dags"),
                UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION="false",
                UPDRAFT__CORE__PARSING_PROCESSES="1",
                UPDRAFT__CORE__EXECUTOR="CeleryExecutor",
                UPDRAFT__CELERY__BROKER_URL=args.broker,
                UPDRAFT__CELERY__QUEUE_PREFIX=prefix,
                PYTHONPATH=str(REPO),
            )
            run_cli(env, "db", "migrate")
            run_cli(env, "dags", "list")
            for i in range(args.workers):
                log = (home / f"worker{i}.log").open("w")
                procs.append(subprocess.Popen([*UPDRAFT, "celery", "worker", "--concurrency", str(args.concurrency)],
                                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home))
            for i in range(schedulers):
                log = (home / f"scheduler{i}.log").open("w")
                procs.append(subprocess.Popen([*UPDRAFT, "scheduler"], env=env, stdout=log,
                                              stderr=subprocess.STDOUT, cwd=home))
            rates: list[float] = []
            hops: list[float] = []
            for i in range(args.repeat):
                run_id = f"fanout_{i}"
                run_cli(env, "dags", "trigger", "fanout", "--run-id", run_id)
                rows = wait_run(db_url, "fanout", run_id)
                span = (max(r[2] for r in rows) - min(r[1] for r in rows)).total_seconds()
                rates.append(len(rows) / span)
                run_id = f"chain_{i}"
                run_cli(env, "dags", "trigger", "chain", "--run-id", run_id)
                rows = sorted(wait_run(db_url, "chain", run_id), key=lambda r: r[0])
                hops.extend((b[1] - a[2]).total_seconds() for a, b in zip(rows, rows[1:], strict=False))
            hops.sort()
            return {
                "schedulers": schedulers,
                "fan-out tasks/s (median)": round(statistics.median(rates), 1),
                "fan-out tasks/s per run": [round(r, 1) for r in rates],
                "hop median (ms)": round(statistics.median(hops) * 1000, 1),
                "hop p90 (ms)": round(hops[int(len(hops) * 0.9)] * 1000, 1),
            }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pg_admin(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        clean_broker(args.broker, prefix)


def clean_broker(broker: str, prefix: str) -> None:
    """Remove this run's queue (and on Redis its keys) from the broker."""
    if broker.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker)
        try:
            for key in client.scan_iter(match=f"*{prefix}*"):
                client.delete(key)
        finally:
            client.close()
        return
    from kombu import Connection

    with Connection(broker, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.queue_delete(f"{prefix}default")
        channel.exchange_delete(f"{prefix}default")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--fanout", type=int, default=300)
    parser.add_argument("--chain", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    result: dict[str, object] = {
        "broker": args.broker.split("://", 1)[0],
        "workers x concurrency": f"{args.workers} x {args.concurrency}",
        "load average before": [round(x, 2) for x in os.getloadavg()],
        "runs": [measure(args, 1), measure(args, 2)],
        "load average after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
