"""The crash-recovery harness, long: hundreds of SIGKILLs of `updraft scheduler` and of task processes.

    .venv/bin/python bench/crash_bench.py [--cycles 200] [--task-kills 60] [--dags 4] [--seed N]

Runs ``tests/crash/harness.py`` (the same scenario as ``tests/crash/test_crash_recovery.py``,
with more cycles and a workload sized so that tasks are still running at the last cycle):
interval DAGs with a fixed set of due runs under the real scheduler (LocalExecutor, SQLite),
the scheduler SIGKILLed at random moments and restarted ``--cycles`` times, task processes
SIGKILLed mid-try ``--task-kills`` times, then the last scheduler finishes every run and the
invariants are checked (every due run exactly once and successful, no try executed twice or
twice at once, no task executed more often than its tries allow, ``PRAGMA integrity_check``
ok, nothing left running). Prints the date, the machine, the load average before and after
and the figures; exits 1 when an invariant is broken.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from parse_bench import machine  # noqa: E402  (bench/ is on sys.path as the script's folder)

from tests.crash.harness import Plan, run_crash_cycles  # noqa: E402


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the harness, which kills its processes


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200, help="scheduler SIGKILL/restart cycles")
    parser.add_argument("--task-kills", type=int, default=60, help="task processes SIGKILLed mid-try")
    parser.add_argument("--dags", type=int, default=4)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--quiet", action="store_true", help="no line per cycle")
    args = parser.parse_args()

    # About 5-6 new executions per scheduler life plus one per task kill, with a margin, 3 tasks per run.
    executions = args.cycles * 8 + args.task_kills * 2
    runs_per_dag = max(8, -(-executions // (3 * args.dags)))
    plan = Plan(
        dags=args.dags, runs_per_dag=runs_per_dag, scheduler_kills=args.cycles, task_kills=args.task_kills,
        seed=args.seed, finish_deadline_s=600.0,
    )
    date = subprocess.run(["date"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"date: {date}\nmachine: {machine()}\nload average before: {os.getloadavg()}")
    print(f"plan: {plan}", flush=True)
    started = time.monotonic()

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"{time.monotonic() - started:7.1f} s  {line}", flush=True)

    with tempfile.TemporaryDirectory(prefix="updraft-crash-") as tmp:
        report = run_crash_cycles(Path(tmp) / "home", plan, progress)
    print(f"load average after: {os.getloadavg()}")
    print(report.summary())
    if report.scheduler_log_errors:
        print(f"{len(report.scheduler_log_errors)} error lines in the scheduler logs, e.g.:")
        print("\n---\n".join(report.scheduler_log_errors[:10]))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
