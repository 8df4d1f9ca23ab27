"""The scheduler and task processes SIGKILLed at random moments, many times; every invariant must hold.

The scenario is ``tests/crash/harness.py`` (``bench/crash_bench.py`` runs it with hundreds of
cycles): three interval DAGs with 12 due runs each and three small tasks per run, the real
`updraft scheduler` (LocalExecutor, SQLite) SIGKILLed and restarted ten times at random
moments and four task processes SIGKILLed mid-try, then the last scheduler finishes. The
journal checks are also run on made-up journals, so a broken invariant is known to be seen.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.crash.harness import (
    Execution,
    Plan,
    journal_violations,
    log_errors,
    read_journal,
    run_crash_cycles,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_scheduler_and_task_processes_killed_at_random_keep_every_invariant(tmp_path: Path) -> None:
    plan = Plan()
    report = run_crash_cycles(tmp_path / "home", plan)
    print("\n" + report.summary())
    assert report.violations == [], report.summary()
    assert report.scheduler_cycles == plan.scheduler_kills >= 10
    assert report.busy_scheduler_cycles >= 10, report.summary()  # every kill landed while runs were unfinished
    # Tries were really killed mid-code (each such one retried: a violation otherwise) ...
    assert report.mid_code_kills >= 2, report.summary()
    assert sum(n for t, n in report.tries_by_number.items() if t > 1) >= report.mid_code_kills  # ... and retried
    assert report.runs == plan.dags * plan.runs_per_dag
    assert report.scheduler_log_errors == [], report.scheduler_log_errors[:10]


def _e(task: str, try_number: int, pid: int, start: float, end: float | None) -> Execution:
    return Execution("d", "r", task, try_number, pid, start, end)


def test_journal_checks_see_a_try_run_twice_overlapping_tries_and_too_many_tries() -> None:
    final = {("d", "r", "a"): 3, ("d", "r", "b"): 1, ("d", "r", "c"): 2}
    executions = [
        _e("a", 1, 10, 0.0, 1.0), _e("a", 2, 11, 2.0, 3.0), _e("a", 3, 12, 4.0, 5.0), _e("a", 3, 13, 6.0, 7.0),
        _e("b", 1, 20, 0.0, 2.0), _e("b", 2, 21, 1.0, 3.0),
        _e("c", 1, 30, 0.0, None), _e("c", 2, 31, 1.0, 2.0),
    ]
    found = journal_violations(executions, {}, final, retries=2)
    assert "('d', 'r', 'a') try 3 executed 2 times" in found
    assert "('d', 'r', 'a') executed 4 times; its tries allow 3" in found
    assert "('d', 'r', 'b') executed try 2 but the instance ended at try 1" in found
    assert "('d', 'r', 'b'): try 2 (pid 21) started while try 1 (pid 20) ran" in found
    assert "d.c r try 1 (pid 30) never ended and was not killed by the harness" in found
    # A try the harness killed ends when it was seen dead: a retry after that is fine, one before is not.
    assert journal_violations(executions[6:], {(("d", "r", "c", 1), 30): 0.5}, final, retries=2) == []
    assert journal_violations(executions[6:], {(("d", "r", "c", 1), 30): 1.5}, final, retries=2) == [
        "('d', 'r', 'c'): try 2 (pid 31) started while try 1 (pid 30) ran"
    ]


def test_read_journal_pairs_starts_and_ends_and_reports_garbage(tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    journal.write_text(
        "S d r a 1 10 1.0\nS d r b 1 11 1.5\nE d r a 1 10 2.0\nE d r c 1 12 3.0\nhalf a line\n"
    )
    executions, problems = read_journal(journal)
    assert [(e.task_id, e.start, e.end) for e in executions] == [("a", 1.0, 2.0), ("b", 1.5, None)]
    assert problems == ["an end with no start: 'E d r c 1 12 3.0'", "garbled journal line 'half a line'"]


def test_log_errors_keeps_every_traceback_and_error_line() -> None:
    text = "\n".join([
        "zygote for /x/a.py failed:",
        "Traceback (most recent call last):",
        '  File "/x/fork_server.py", line 457, in _spawn_zygote',
        "BrokenPipeError: [Errno 32] Broken pipe",
        "[2026-11-26 06:00:00,000] {scheduler.loop} INFO - fine",
        "[2026-11-26 06:00:00,000] {scheduler.loop} ERROR - the iteration failed",
        "Traceback (most recent call last):",
        '  File "/x/loop.py", line 1, in run_once',
        "sqlite3.OperationalError: database is locked",
    ])
    found = log_errors(text)
    assert len(found) == 3
    assert found[0].endswith("BrokenPipeError: [Errno 32] Broken pipe")
    assert found[1] == "[2026-11-26 06:00:00,000] {scheduler.loop} ERROR - the iteration failed"
    assert found[2].endswith("sqlite3.OperationalError: database is locked")
