"""Benchmark: what a running `updraft scheduler` costs while idle, and how quickly it notices things.

    .venv/bin/python bench/scheduler_bench.py [--dags 1000] [--idle-seconds 30] [--repeat 5]

On a temporary UPDRAFT_HOME (SQLite), with ``--dags`` small DAG files (paused at
creation, the default):

1. **start**: `updraft scheduler` is started; the time until every DAG is in the
   ``dag`` table;
2. **idle CPU**: after a short settle, the CPU time (utime + stime, and cutime +
   cstime for reaped children) of the scheduler and every process below it (the parse
   workers and their children, found by walking /proc), over ``--idle-seconds``, as a
   percentage of one core; and the resident memory of those processes;
3. **new file -> listed**: a new DAG file is written and the ``dag`` table polled
   every 10 ms until its row is there; ``--repeat`` times, a random pause between
   samples so they fall anywhere in the scheduler's cycle;
4. **trigger**: one more DAG (no schedule, max_active_runs high enough) is added and
   unpaused; then ``--repeat`` times ``updraft dags trigger``: the time from starting
   the command until the run row exists, and from the row existing until the
   scheduler has moved the run from queued to running.

Targets: idle <= 1 % of a core with 1,000 paused DAGs, new file listed <= 2 s,
trigger -> run exists <= 0.5 s. Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from parse_bench import machine  # bench/ is sys.path[0] when this file is run as a script

IDLE_TARGET_PCT = 1.0
NEW_FILE_TARGET_S = 2.0
TRIGGER_TARGET_S = 0.5
POLL_S = 0.01
#: How long to let the scheduler settle after the last DAG is listed, before the idle window.
SETTLE_S = 3.0
DEADLINE_S = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

DAG_TEMPLATE = '''"""Generated DAG {index} for the scheduler benchmark."""
from datetime import datetime

from scheduler import DAG, BashOperator, EmptyOperator

with DAG("{dag_id}", schedule="{minute} {hour} * * *", start_date=datetime(2024, 1, 1), catchup=False,
         tags=["bench"]) as dag:
    EmptyOperator(task_id="start") >> BashOperator(task_id="work", bash_command="echo {{{{ ds }}}}")
'''

TRIGGER_DAG = '''"""The DAG the scheduler benchmark triggers: no schedule, room for every run it starts."""
from datetime import datetime

from scheduler import DAG, EmptyOperator

with DAG("bench_trigger", schedule=None, start_date=datetime(2024, 1, 1), max_active_runs=10000) as dag:
    EmptyOperator(task_id="noop")
'''


def write_dag(folder: Path, index: int, dag_id: str) -> None:
    text = DAG_TEMPLATE.format(index=index, dag_id=dag_id, minute=index % 60, hour=(index // 60) % 24)
    path = folder / f"{dag_id}.py"
    tmp = path.with_suffix(".tmp")  # not a .py: the scheduler never sees a half-written file
    tmp.write_text(text)
    tmp.rename(path)


def updraft() -> list[str]:
    script = Path(sys.executable).with_name("updraft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "scheduler.cli"]


def bench_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDRAFT")}
    env["UPDRAFT_HOME"] = str(home)
    env["UPDRAFT__CORE__LOAD_EXAMPLES"] = "false"
    return env


class Db:
    """Read-only polling of the scheduler's SQLite database with the stdlib driver (no SQLAlchemy in the way)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def scalar(self, sql: str, *params: object) -> Any:
        if not self.path.exists():
            return None
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            row = conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        finally:
            conn.close()
        return None if row is None else row[0]

    def dag_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM dag WHERE is_active") or 0)

    def has_dag(self, dag_id: str) -> bool:
        return self.scalar("SELECT 1 FROM dag WHERE dag_id = ?", dag_id) is not None

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        value = self.scalar("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
        return None if value is None else str(value)


def poll(what: str, check: Callable[[], bool], deadline_s: float = DEADLINE_S) -> float:
    """Poll ``check`` every 10 ms; the perf_counter time at which it first held."""
    deadline = time.perf_counter() + deadline_s
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(POLL_S)


# --- /proc -------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: [0] is the state, [1] the parent id."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (zombies included: their CPU is not yet in the parent's cutime)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    tree = {root}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return sorted(tree)


def tree_cpu_seconds(root: int) -> tuple[float, int]:
    """CPU seconds used so far by ``root`` and its descendants, and how many processes that is.

    For each live process utime + stime + cutime + cstime: a child's time moves into its
    parent's cutime/cstime when it is reaped, so nothing is counted twice or lost.
    """
    ticks = 0
    pids = process_tree(root)
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:  # fields[11:15]: utime stime cutime cstime (stat fields 14-17)
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLK_TCK, len(pids)


def tree_rss_mib(root: int) -> float:
    pages = 0
    for pid in process_tree(root):
        try:
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError):
            pass
    return pages * PAGE_SIZE / 2**20


# --- the measurements --------------------------------------------------------------------------


def summary(samples: list[float], unit: str = "s", digits: int = 3) -> str:
    listed = ", ".join(f"{s:.{digits}f}" for s in samples)
    return f"median {statistics.median(samples):.{digits}f} {unit}, max {max(samples):.{digits}f} {unit} [{listed}]"


def measure_idle(pid: int, seconds: float) -> tuple[float, int, float]:
    cpu0, _ = tree_cpu_seconds(pid)
    wall0 = time.perf_counter()
    time.sleep(seconds)  # the measured window: the scheduler is left alone
    cpu1, processes = tree_cpu_seconds(pid)
    wall1 = time.perf_counter()
    return 100.0 * (cpu1 - cpu0) / (wall1 - wall0), processes, tree_rss_mib(pid)


def measure_new_files(dags: Path, db: Db, repeat: int, rng: random.Random) -> list[float]:
    samples = []
    for i in range(repeat):
        time.sleep(rng.uniform(0.0, 1.5))  # land anywhere in the scheduler's cycle
        dag_id = f"bench_new_{i:03d}"
        started = time.perf_counter()
        write_dag(dags, 90000 + i, dag_id)
        seen = poll(f"{dag_id} to be listed", partial(db.has_dag, dag_id))
        samples.append(seen - started)
    return samples


def measure_triggers(env: dict[str, str], home: Path, db: Db, repeat: int,
                     rng: random.Random) -> tuple[list[float], list[float], list[float]]:
    """(start of `dags trigger` -> run row, run row -> started (running or already finished), the command's own wall time), polled every 10 ms."""
    to_row, to_running, command = [], [], []
    for i in range(repeat):
        time.sleep(rng.uniform(0.0, 1.5))  # land anywhere in the scheduler's cycle
        run_id = f"bench_{i:03d}"
        started = time.perf_counter()
        proc = subprocess.Popen([*updraft(), "dags", "trigger", "bench_trigger", "--run-id", run_id],
                                env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        row = running = exited = None
        deadline = started + DEADLINE_S
        while running is None or exited is None:
            now = time.perf_counter()
            if exited is None and proc.poll() is not None:
                exited = now
                if proc.returncode != 0:
                    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise SystemExit(f"dags trigger failed ({proc.returncode}): {stderr}")
            if running is None:
                state = db.run_state("bench_trigger", run_id)
                if state is not None and row is None:
                    row = now
                if state in ("running", "success", "failed"):  # started (an EmptyOperator run may end at once)
                    running = now
            if now > deadline:
                proc.kill()
                raise SystemExit(f"timed out waiting for run {run_id} (row {row}, running {running})")
            time.sleep(POLL_S)
        if proc.stderr is not None:
            proc.stderr.close()
        assert row is not None
        to_row.append(row - started)
        to_running.append(running - row)
        command.append(exited - started)
    return to_row, to_running, command


def run_cli(env: dict[str, str], home: Path, *args: str) -> None:
    done = subprocess.run([*updraft(), *args], env=env, cwd=home, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"updraft {' '.join(args)} failed ({done.returncode}): {done.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dags", type=int, default=1000, help="paused DAG files (default 1000)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="length of the idle window (default 30)")
    parser.add_argument("--repeat", type=int, default=5, help="samples of each latency (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random pauses between samples")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (and the scheduler's log)")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="updraft-scheduler-bench-"))
    home = work / "home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    db = Db(home / "updraft.db")
    env = bench_env(home)
    log = (work / "scheduler.log").open("w")
    proc: subprocess.Popen[bytes] | None = None
    try:
        for index in range(args.dags):
            write_dag(dags, index, f"bench_{index:05d}")
        print(f"scheduler benchmark: {args.dags} paused DAGs, {time.strftime('%Y-%m-%d')}")
        print(f"  machine: {machine()}")

        started = time.perf_counter()
        proc = subprocess.Popen([*updraft(), "scheduler"], env=env, cwd=home, stdout=log, stderr=log)
        listed = poll(f"{args.dags} DAGs to be listed", lambda: db.dag_count() >= args.dags)
        print(f"  start -> {args.dags} DAGs listed : {listed - started:.2f} s")

        time.sleep(SETTLE_S)  # let the first sync's leftovers finish before the idle window
        idle_pct, processes, rss = measure_idle(proc.pid, args.idle_seconds)
        print(f"  idle CPU over {args.idle_seconds:.0f} s     : {idle_pct:.2f} % of one core "
              f"({processes} processes: scheduler + parse workers; {rss:.0f} MiB resident)")

        new_file = measure_new_files(dags, db, args.repeat, rng)
        print(f"  new file -> listed         : {summary(new_file)}")

        (dags / "bench_trigger.py").write_text(TRIGGER_DAG)
        poll("bench_trigger to be listed", lambda: db.has_dag("bench_trigger"))
        run_cli(env, home, "dags", "unpause", "bench_trigger")
        to_row, to_running, command = measure_triggers(env, home, db, args.repeat, rng)
        print(f"  dags trigger -> run exists : {summary(to_row)}")
        print(f"  run exists -> running      : {summary(to_running)}")
        print(f"  `dags trigger` wall time   : {summary(command)}")

        ok_idle = idle_pct <= IDLE_TARGET_PCT
        ok_new = max(new_file) <= NEW_FILE_TARGET_S
        ok_trigger = max(to_row) <= TRIGGER_TARGET_S
        print(f"  targets: idle <= {IDLE_TARGET_PCT:.0f} %: {'met' if ok_idle else 'MISSED'}; "
              f"new file <= {NEW_FILE_TARGET_S:.0f} s: {'met' if ok_new else 'MISSED'}; "
              f"trigger <= {TRIGGER_TARGET_S} s: {'met' if ok_trigger else 'MISSED'} (max of {args.repeat})")
        return 0 if ok_idle and ok_new and ok_trigger else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if args.keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
