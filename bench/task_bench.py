"""Task execution speed of the real scheduler with the LocalExecutor, beside a bare interpreter start.

    .venv/bin/python bench/task_bench.py [--repeat 3] [--chain 40] [--fanout 300]

On a temporary UPDRAFT_HOME (SQLite) it starts ``updraft scheduler`` and triggers:

* a chain of ``--chain`` no-op PythonOperators: the hop is the gap from one task's
  end_date to the next one's start_date as the task runner records them (the next
  task's start is when its runner took it: queued -> running); the span is from the
  first start to the last end;
* ``--fanout`` independent no-op PythonOperators: tasks per second over the span
  from the first start to the last end.

and times ``python3 -c pass`` (the reference the targets are stated in). Figures are
medians over ``--repeat`` runs of each DAG. Exit status 1 when a target is missed:
median hop <= one ``python3 -c pass``; chain span <= chain length x that; fan-out
>= 100 tasks/s.
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
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UPDRAFT = [sys.executable, "-m", "scheduler.cli"]


def dag_source(dag_id: str, n: int, *, chain: bool) -> str:
    return (
        "from datetime import datetime\n"
        "from scheduler import DAG, PythonOperator\n\n"
        "def noop():\n    pass\n\n"
        f"with DAG({dag_id!r}, schedule=None, start_date=datetime(2024, 1, 1), max_active_tasks={n},\n"
        "         max_active_runs=1):\n"
        f"    tasks = [PythonOperator(task_id=f't{{i:03d}}', python_callable=noop) for i in range({n})]\n"
        + ("    for a, b in zip(tasks, tasks[1:]):\n        a >> b\n" if chain else "")
    )


def scheduler_cpu(pid: int) -> float:
    """CPU seconds the scheduler process itself has used (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_python(executable: str, repeat: int = 30) -> float:
    """Median wall time of ``executable -c pass``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def system_python() -> str:
    """The machine's own python3 (not a version-manager shim, whose bash wrapper adds ~50 ms)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def run_cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([*UPDRAFT, *args], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"updraft {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def wait_run(db: Path, dag_id: str, run_id: str, deadline_s: float = 300.0) -> list[tuple[str, datetime, datetime]]:
    import sqlite3

    deadline = time.monotonic() + deadline_s
    while True:
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT state FROM dag_run WHERE dag_id=? AND run_id=?", (dag_id, run_id)).fetchone()
            if row and row[0] in ("success", "failed"):
                if row[0] != "success":
                    raise SystemExit(f"{dag_id} run {run_id} ended {row[0]}")
                rows = conn.execute(
                    "SELECT task_id, start_date, end_date FROM task_instance WHERE dag_id=? AND run_id=? ORDER BY task_id",
                    (dag_id, run_id),
                ).fetchall()
                return [(t, _ts(s), _ts(e)) for t, s, e in rows]
        if time.monotonic() > deadline:
            raise SystemExit(f"{dag_id} run {run_id} did not finish in {deadline_s} s")
        time.sleep(0.05)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--fanout", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="updraft-task-bench-") as tmp:
        home = Path(tmp)
        (home / "dags").mkdir()
        (home / "dags" / "chain.py").write_text(dag_source("chain", args.chain, chain=True))
        (home / "dags" / "fanout.py").write_text(dag_source("fanout", args.fanout, chain=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
        env.update(
            UPDRAFT_HOME=str(home),
            UPDRAFT__CORE__DAGS_FOLDER=str(home / "dags"),
            UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION="false",
            UPDRAFT__CORE__PARALLELISM=os.environ.get("BENCH_PARALLELISM", "32"),
            PYTHONPATH=str(REPO),
        )
        run_cli(env, "dags", "list")
        log = (home / "scheduler.log").open("w")
        proc = subprocess.Popen([*UPDRAFT, "scheduler"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
        try:
            hops: list[float] = []
            durations: list[float] = []
            spans: list[float] = []
            rates: list[float] = []
            for i in range(args.repeat):
                run_id = f"chain_{i}"
                run_cli(env, "dags", "trigger", "chain", "--run-id", run_id)
                rows = sorted(wait_run(home / "updraft.db", "chain", run_id), key=lambda r: r[0])
                gaps = [(b[1] - a[2]).total_seconds() for a, b in zip(rows, rows[1:], strict=False)]
                hops.append(statistics.median(gaps))
                durations.append(statistics.median((r[2] - r[1]).total_seconds() for r in rows))
                spans.append((rows[-1][2] - rows[0][1]).total_seconds())
                run_id = f"fanout_{i}"
                run_cli(env, "dags", "trigger", "fanout", "--run-id", run_id)
                rows = wait_run(home / "updraft.db", "fanout", run_id)
                span = (max(r[2] for r in rows) - min(r[1] for r in rows)).total_seconds()
                rates.append(len(rows) / span)
        finally:
            own_cpu = scheduler_cpu(proc.pid)
            proc.send_signal(signal.SIGTERM)
            _, _, usage = os.wait4(proc.pid, 0)  # the scheduler and every process below it
            proc.returncode = 0
            log.close()
        tasks = args.repeat * (args.chain + args.fanout)
    reference = system_python()
    bare = bare_python(reference)
    result = {
        "python3 -c pass (s)": round(bare, 4),
        "python3 used": reference,
        "this interpreter -c pass (s)": round(bare_python(sys.executable), 4),
        "chain length": args.chain,
        "median hop (s)": round(statistics.median(hops), 4),
        "hops per run (s)": [round(h, 4) for h in hops],
        "chain span (s)": round(statistics.median(spans), 3),
        "median chain task, start to end (s)": round(statistics.median(durations), 4),
        "fan-out tasks": args.fanout,
        "fan-out tasks/s": round(statistics.median(rates), 1),
        "fan-out per run": [round(r, 1) for r in rates],
        "CPU per task, all processes (ms)": round((usage.ru_utime + usage.ru_stime) / tasks * 1000, 2),
        "CPU per task, scheduler process (ms)": round(own_cpu / tasks * 1000, 2),
    }
    print(json.dumps(result, indent=2))
    missed = []
    if result["median hop (s)"] > bare:
        missed.append("median hop > python3 -c pass")
    if result["chain span (s)"] > args.chain * bare:
        missed.append(f"chain span > {args.chain} x python3 -c pass")
    if result["fan-out tasks/s"] < 100:
        missed.append("fan-out < 100 tasks/s")
    for line in missed:
        print(f"target missed: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
