"""`updraft scheduler` stopped by SIGKILL and SIGTERM at random moments of a catchup, then restarted.

Twenty DAGs each have exactly 200 scheduled hourly runs due (an end_date fixes the set,
so the test does not depend on the clock crossing an hour). The scheduler creates at
most 100 runs per DAG per iteration, each DAG's batch in one transaction, so the 4,000
runs take about 40 commits: enough for kills to land while the catchup is under way.

Each cycle starts the real scheduler process, waits until the number of runs passes a
threshold drawn from a seeded random generator, waits a random few milliseconds more
(so the signal lands anywhere in the next batch), sends the cycle's signal and waits
for the process to exit. A final scheduler then finishes the catchup. Every run must
exist exactly once: the expected logical dates, no more, one row each, with consistent
run ids and data intervals, in a database that passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.backend import home_database_url, integrity_problems, query
from tests.e2e.test_scheduler_process import cli_env

DAG_COUNT = 20
RUNS_PER_DAG = 200
TOTAL_RUNS = DAG_COUNT * RUNS_PER_DAG
#: The scheduler's batch: MAX_RUNS_PER_DAG_PER_ITERATION (not imported, so the test reads the process from outside).
BATCH = 100
SEED = 20261126
#: How often the database is polled for progress.
POLL_S = 0.01
#: How long one cycle may wait for the scheduler to reach its threshold. Failure bounds, not waits: on
#: PostgreSQL on this VM in a slow phase the whole catchup took ~50 s, against ~15 s on a quiet day.
PROGRESS_DEADLINE_S = 60.0
#: How long the final scheduler may take to finish the catchup.
FINISH_DEADLINE_S = 120.0
#: How long a process may take to exit after its signal (SIGTERM: the iteration stops at the next run or
#: DAG it would look at, however many runs it holds).
EXIT_DEADLINE_S = 15.0
#: Logged by the loop once its SIGTERM handler is installed.
STARTED = "scheduler started, dags folder"


def catchup_dag_file(dag_id: str, start: datetime, end: datetime) -> str:
    def literal(value: datetime) -> str:
        return f"datetime({value.year}, {value.month}, {value.day}, {value.hour}, tzinfo=timezone.utc)"

    return (
        "from datetime import datetime, timezone\n"
        "from scheduler import DAG, EmptyOperator\n"
        f"with DAG({dag_id!r}, schedule='@hourly', catchup=True, max_active_runs=1000,\n"
        f"         start_date={literal(start)}, end_date={literal(end)}):\n"
        "    EmptyOperator(task_id='noop')\n"
    )


def scheduler_command() -> list[str]:
    script = Path(sys.executable).with_name("updraft")
    if script.exists():
        return [str(script), "scheduler"]
    return [sys.executable, "-m", "scheduler.cli", "scheduler"]


def run_count(db: str) -> int:
    """The number of dag_run rows now (0 while the database or its tables do not exist yet)."""
    rows = query(db, "SELECT count(*) FROM dag_run")
    return int(str(rows[0][0])) if rows else 0


def queued_count(db: str) -> int:
    return int(str(query(db, "SELECT count(*) FROM dag_run WHERE state = 'queued'")[0][0]))


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by walking /proc for parent ids)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


@dataclass
class Cycle:
    signal: signal.Signals
    threshold: int
    count_at_signal: int
    count_after_exit: int
    returncode: int

    @property
    def mid_creation(self) -> bool:
        return 0 < self.count_at_signal < TOTAL_RUNS


class SchedulerProcess:
    """One life of `updraft scheduler`, its stderr appended to a log file."""

    def __init__(self, home: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_fh = log.open("a")
        self.proc = subprocess.Popen(
            scheduler_command(), stdout=subprocess.DEVNULL, stderr=self._log_fh, env=env, cwd=home,
        )

    def stop(self, sig: signal.Signals) -> tuple[int, set[int]]:
        """Send ``sig``, wait for the exit; returns the exit code and the processes it left running."""
        below = descendants(self.proc.pid)
        self.proc.send_signal(sig)
        try:
            returncode = self.proc.wait(timeout=EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the scheduler did not exit within {EXIT_DEADLINE_S} s of {sig.name}\n{self.log_tail()}")
        finally:
            self._log_fh.close()
        deadline = time.monotonic() + EXIT_DEADLINE_S
        left = {pid for pid in below if alive(pid)}
        while left and time.monotonic() < deadline:  # a parse worker exits when its stdin closes
            time.sleep(POLL_S)
            left = {pid for pid in left if alive(pid)}
        return returncode, left

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_fh.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def wait_for_count(db: str, proc: SchedulerProcess, at_least: int, deadline_s: float) -> int:
    deadline = time.monotonic() + deadline_s
    while True:
        count = run_count(db)
        if count >= at_least:
            return count
        if proc.proc.poll() is not None:
            pytest.fail(f"the scheduler exited ({proc.proc.returncode}) at {count} runs\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {at_least} runs (at {count})\n{proc.log_tail()}")
        time.sleep(POLL_S)  # polling the database, not waiting for a fixed time


def poll_until(what: str, proc: SchedulerProcess, check: Callable[[], bool], deadline_s: float = FINISH_DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if proc.proc.poll() is not None:
            pytest.fail(f"the scheduler exited ({proc.proc.returncode}) while waiting for {what}\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}\n{proc.log_tail()}")
        time.sleep(POLL_S)  # polling a condition, not waiting for a fixed time


def wait_until(db: str, moment: float) -> int:
    """Keep polling until the monotonic clock reaches ``moment`` (the randomly chosen signal time); the last count."""
    count = run_count(db)
    while time.monotonic() < moment:
        time.sleep(min(POLL_S / 2, max(0.0, moment - time.monotonic())))
        count = run_count(db)
    return count


def test_catchup_survives_sigkill_and_sigterm_at_random_moments(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    db = home_database_url(home)
    log = tmp_path / "scheduler.log"
    this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = this_hour - timedelta(hours=RUNS_PER_DAG)
    end = start + timedelta(hours=RUNS_PER_DAG - 1)  # the last fire time is an hour ago: all 200 are due
    expected = {start + timedelta(hours=i) for i in range(RUNS_PER_DAG)}
    dag_ids = [f"catchup_{i:02d}" for i in range(DAG_COUNT)]
    for dag_id in dag_ids:
        (home / "dags" / f"{dag_id}.py").write_text(catchup_dag_file(dag_id, start, end))
    env = cli_env(home)
    env["UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "false"

    rng = random.Random(SEED)
    # Six SIGKILLs and one SIGTERM in a random order, then a SIGTERM. A SIGTERM lets the scheduler
    # finish its iteration (a batch for every unfinished DAG), so two early ones would end the catchup.
    signals = [signal.SIGKILL] * 6 + [signal.SIGTERM]
    rng.shuffle(signals)
    signals.append(signal.SIGTERM)

    cycles: list[Cycle] = []
    leftovers: set[int] = set()
    for sig in signals:
        before = run_count(db)
        # Up to 1.5 batches past the count at start, then 0-40 ms more: the signal may land before,
        # inside or after the transaction of any of the next two or three batches.
        threshold = min(before + rng.randint(1, BATCH * 3 // 2), TOTAL_RUNS)
        jitter_s = rng.uniform(0.0, 0.04)
        proc = SchedulerProcess(home, env, log)
        try:
            wait_for_count(db, proc, threshold, PROGRESS_DEADLINE_S)
            count_at_signal = wait_until(db, time.monotonic() + jitter_s)
            returncode, left = proc.stop(sig)
        finally:
            proc.ensure_dead()
        leftovers |= left
        cycles.append(Cycle(sig, threshold, count_at_signal, run_count(db), returncode))

    # The final life finishes the catchup (or finds it finished: then it must add nothing), and starts
    # every run. It is stopped once its signal handlers are in place ("scheduler started" is logged
    # after them), all runs exist and none is left queued.
    lives = log.read_text(errors="replace").count(STARTED)
    proc = SchedulerProcess(home, env, log)
    try:
        poll_until("the final scheduler to start", proc, lambda: log.read_text(errors="replace").count(STARTED) > lives)
        wait_for_count(db, proc, TOTAL_RUNS, FINISH_DEADLINE_S)
        poll_until("every run to be started", proc, lambda: queued_count(db) == 0)
        returncode, left = proc.stop(signal.SIGTERM)
    finally:
        proc.ensure_dead()
    leftovers |= left

    summary = "\n".join(
        f"  {c.signal.name:7} threshold {c.threshold:4}  at signal {c.count_at_signal:4}  after exit "
        f"{c.count_after_exit:4}  exit {c.returncode}" + ("  (mid-creation)" if c.mid_creation else "")
        for c in cycles
    )
    print(f"\nrestart cycles (seed {SEED}):\n{summary}")

    # Every life ended as its signal says: SIGKILL at once, SIGTERM cleanly after its iteration.
    for c in cycles:
        expected_code = -signal.SIGKILL if c.signal is signal.SIGKILL else 0
        assert c.returncode == expected_code, f"{c}\n{summary}"
    assert returncode == 0
    assert leftovers == set(), f"processes outlived their scheduler: {sorted(leftovers)}"
    stops = log.read_text(errors="replace").count("scheduler stopped (received SIGTERM)")
    assert stops == signals.count(signal.SIGTERM) + 1

    # The signals landed while the catchup was under way, not only before or after it.
    mid = [c for c in cycles if c.mid_creation]
    assert any(c.signal is signal.SIGKILL for c in mid), summary
    assert any(c.signal is signal.SIGTERM for c in mid), summary

    # Every run exists exactly once.
    assert integrity_problems(db) == []
    rows = query(db, "SELECT dag_id, run_id, run_type, logical_date, data_interval_start, data_interval_end FROM dag_run")

    def as_utc(value: object) -> datetime:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)  # stored as naive UTC

    slots = Counter((dag_id, as_utc(logical)) for dag_id, _, _, logical, _, _ in rows)
    assert [slot for slot, n in slots.items() if n > 1] == []
    run_ids = Counter((dag_id, run_id) for dag_id, run_id, *_ in rows)
    assert [key for key, n in run_ids.items() if n > 1] == []
    assert len(rows) == TOTAL_RUNS
    for dag_id in dag_ids:
        found = {logical for (d, logical) in slots if d == dag_id}
        assert found == expected, (
            f"{dag_id}: missing {sorted(expected - found)[:5]}, unexpected {sorted(found - expected)[:5]}"
        )
    for dag_id, run_id, run_type, logical, interval_start, interval_end in rows:
        logical_date = as_utc(logical)
        assert run_type == "scheduled"
        assert run_id == f"scheduled__{logical_date.isoformat()}"
        assert as_utc(interval_end) == logical_date  # @hourly: the run fires at the end of its hour
        assert as_utc(interval_end) - as_utc(interval_start) == timedelta(hours=1), (dag_id, run_id)
