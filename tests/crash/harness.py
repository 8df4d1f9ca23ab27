"""Crash-recovery harness: interval DAGs under the real `updraft scheduler` (LocalExecutor, SQLite), killed again and again.

Used by ``tests/crash/test_crash_recovery.py`` (a dozen cycles) and ``bench/crash_bench.py``
(hundreds). One :func:`run_crash_cycles` call:

1. writes ``plan.dags`` DAG files, each with a fixed set of ``plan.runs_per_dag`` due runs
   (cron every minute, ``catchup=True``, a start_date in the past and an end_date a minute
   ago, so the expected runs do not depend on the clock) and three small tasks per run
   (``a >> [b, c]``, each sleeping 0.1-0.4 s, with ``plan.retries`` retries and no delay);
2. starts the scheduler and, in a seeded random order, either SIGKILLs the scheduler at a
   random moment (after a random number of new task executions plus a random few
   milliseconds) and starts a new one, or SIGKILLs a task process in the middle of its code
   (the pid its ``task_instance`` row records; only a try that has a retry left);
3. lets the last scheduler finish every run within a deadline, stops it with SIGTERM and
   checks the invariants (:func:`check_invariants`).

Every execution of task code is journalled by the task itself: it appends a line
``S|E dag_id run_id task_id try_number pid unix_time`` to a file when it starts and when it
ends (one ``write`` on an ``O_APPEND`` descriptor, under 4 KiB: atomic). From the journal:
no try starts twice, no task runs more often than its tries allow, and no two executions
of one task instance overlap in time (a killed execution ends when the harness saw it die).

Processes are only ever signalled by pid: the schedulers this harness started, and task
processes whose environment carries this run's own ``UPDRAFT_HOME``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.backend import integrity_problems, query
from tests.e2e.test_execution_e2e import Home, SchedulerProcess, alive, start_time
from tests.e2e.test_scheduler_restart import STARTED

#: The tasks of every run and their edges: ``a >> [b, c]``.
TASKS = ("a", "b", "c")
#: How often the journal and the database are polled.
POLL_S = 0.01
#: How long one cycle may wait for the progress it waits for before it acts anyway.
PROGRESS_DEADLINE_S = 20.0
#: How long a SIGKILLed process may take to disappear.
DEATH_DEADLINE_S = 10.0
#: Processes of this home still alive this long after the last scheduler stopped are leftovers.
LEFTOVER_DEADLINE_S = 15.0

DAG_TEMPLATE = '''
import os
import time
import zlib
from datetime import datetime, timedelta, timezone

from scheduler import DAG, PythonOperator

JOURNAL = @JOURNAL@


def _journal(kind, ti):
    line = f"{kind} {ti.dag_id} {ti.run_id} {ti.task_id} {ti.try_number} {os.getpid()} {time.time():.6f}\\n"
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def work(ti, **_):
    _journal("S", ti)
    time.sleep(0.1 + zlib.crc32(f"{ti.dag_id} {ti.run_id} {ti.task_id}".encode()) % 300 / 1000)
    _journal("E", ti)


with DAG(@DAG_ID@, schedule="* * * * *", catchup=True, max_active_runs=@MAX_ACTIVE_RUNS@,
         start_date=@START@, end_date=@END@,
         default_args={"retries": @RETRIES@, "retry_delay": timedelta(0)}):
    a = PythonOperator(task_id="a", python_callable=work)
    a >> [PythonOperator(task_id="b", python_callable=work), PythonOperator(task_id="c", python_callable=work)]
'''


@dataclass
class Plan:
    dags: int = 3
    runs_per_dag: int = 12
    retries: int = 2
    max_active_runs: int = 3
    scheduler_kills: int = 10
    task_kills: int = 4
    #: New task executions to wait for before a scheduler kill: a random number in this range.
    progress: tuple[int, int] = (1, 4)
    #: Then a random delay in this range (seconds), so the signal lands anywhere.
    jitter_s: tuple[float, float] = (0.0, 0.15)
    parallelism: int = 8
    seed: int = 20261126
    finish_deadline_s: float = 90.0


@dataclass
class Kill:
    kind: str  # "scheduler" or "task"
    at: float  # unix time the process was seen dead
    detail: str
    returncode: int | None = None
    target: tuple[str, str, str, int] | None = None  # a killed try: (dag_id, run_id, task_id, try)
    pid: int | None = None
    #: Whether some run was still unfinished when the signal was sent.
    busy: bool = True


@dataclass
class Report:
    plan: Plan
    kills: list[Kill] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    runs: int = 0
    executions: int = 0
    tries_by_number: Counter[int] = field(default_factory=Counter)
    task_kills_skipped: int = 0
    #: Task kills that landed while the try's code ran (its journal has no end line); each must be retried.
    mid_code_kills: int = 0
    leftovers: list[int] = field(default_factory=list)
    scheduler_log_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def scheduler_cycles(self) -> int:
        return sum(1 for k in self.kills if k.kind == "scheduler")

    @property
    def task_cycles(self) -> int:
        return sum(1 for k in self.kills if k.kind == "task")

    @property
    def busy_scheduler_cycles(self) -> int:
        return sum(1 for k in self.kills if k.kind == "scheduler" and k.busy)

    def summary(self) -> str:
        lines = [
            f"seed {self.plan.seed}: {self.scheduler_cycles} scheduler SIGKILL/restart cycles "
            f"({self.busy_scheduler_cycles} while runs were unfinished), "
            f"{self.task_cycles} task-process SIGKILLs ({self.mid_code_kills} mid-code, {self.task_kills_skipped} found no try to kill), "
            f"{self.runs} runs, {self.executions} task executions, tries by number {dict(sorted(self.tries_by_number.items()))}, "
            f"{self.seconds:.1f} s",
        ]
        lines += [f"  VIOLATION: {v}" for v in self.violations]
        return "\n".join(lines)


# --- processes ---------------------------------------------------------------------------------------


def owned(pid: int, home: Home) -> bool:
    """True when ``pid`` runs with this harness's UPDRAFT_HOME (so it is one of ours)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"UPDRAFT_HOME={home.root}".encode() in environ


def processes_of(home: Home) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and alive(int(entry)) and owned(int(entry), home):
            found.add(int(entry))
    return found


def wait_dead(pid: int, deadline_s: float = DEATH_DEADLINE_S) -> bool:
    deadline = time.monotonic() + deadline_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)  # polling the process table
    return True


# --- the journal and the database ----------------------------------------------------------------------


@dataclass
class Execution:
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    pid: int
    start: float
    end: float | None = None


def read_journal(path: Path) -> tuple[list[Execution], list[str]]:
    """The executions the tasks journalled, and lines that make no sense."""
    if not path.exists():
        return [], []
    open_by_pid: dict[tuple[int, str, str, str, int], Execution] = {}
    executions: list[Execution] = []
    problems: list[str] = []
    for line in path.read_text().splitlines():
        parts = line.split(" ")
        if len(parts) != 7 or parts[0] not in ("S", "E"):
            problems.append(f"garbled journal line {line!r}")
            continue
        kind, dag_id, run_id, task_id, try_text, pid_text, at_text = parts
        key = (int(pid_text), dag_id, run_id, task_id, int(try_text))
        if kind == "S":
            execution = Execution(dag_id, run_id, task_id, int(try_text), int(pid_text), float(at_text))
            executions.append(execution)
            open_by_pid[key] = execution
        elif key in open_by_pid and open_by_pid[key].end is None:
            open_by_pid[key].end = float(at_text)
        else:
            problems.append(f"an end with no start: {line!r}")
    return executions, problems


def started_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.startswith(b"S "))


def finished(db: str, expected_runs: int) -> bool:
    """Every expected run exists and is over, and no task instance is still on its way."""
    rows = query(db, "SELECT count(*), sum(CASE WHEN state IN ('success', 'failed') THEN 1 ELSE 0 END) FROM dag_run")
    if not rows or rows[0][0] != expected_runs or rows[0][1] != expected_runs:
        return False
    busy = query(db, "SELECT count(*) FROM task_instance WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry')")
    return busy[0][0] == 0


def as_utc(text: object) -> datetime:
    return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)  # stored as naive UTC


# --- the run ----------------------------------------------------------------------------------------------


def write_dags(home: Home, plan: Plan, journal: Path) -> dict[str, set[datetime]]:
    """The DAG files; returns each DAG's expected logical dates."""
    this_minute = datetime.now(UTC).replace(second=0, microsecond=0)
    start = this_minute - timedelta(minutes=plan.runs_per_dag)
    end = start + timedelta(minutes=plan.runs_per_dag - 1)  # the last fire time is a minute ago: all are due

    def literal(value: datetime) -> str:
        return f"datetime({value.year}, {value.month}, {value.day}, {value.hour}, {value.minute}, tzinfo=timezone.utc)"

    expected: dict[str, set[datetime]] = {}
    for i in range(plan.dags):
        dag_id = f"crash_{i:02d}"
        source = (
            DAG_TEMPLATE.replace("@JOURNAL@", repr(str(journal)))
            .replace("@DAG_ID@", repr(dag_id))
            .replace("@MAX_ACTIVE_RUNS@", str(plan.max_active_runs))
            .replace("@START@", literal(start))
            .replace("@END@", literal(end))
            .replace("@RETRIES@", str(plan.retries))
        )
        (home.dags / f"{dag_id}.py").write_text(source)
        expected[dag_id] = {start + timedelta(minutes=k) for k in range(plan.runs_per_dag)}
    return expected


def _wait(check: Callable[[], bool], deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)  # polling a condition
    return True


def _pause_until(moment: float) -> None:
    """Keep polling the clock until the randomly chosen moment of a signal."""
    while time.monotonic() < moment:
        time.sleep(min(POLL_S, max(0.0, moment - time.monotonic())))


def _kill_scheduler(home: Home, sched: SchedulerProcess, plan: Plan, rng: random.Random, journal: Path,
                    db: str, expected_runs: int) -> Kill:
    target = started_count(journal) + rng.randint(*plan.progress)
    _wait(lambda: started_count(journal) >= target or finished(db, expected_runs) or sched.proc.poll() is not None,
          PROGRESS_DEADLINE_S)
    _pause_until(time.monotonic() + rng.uniform(*plan.jitter_s))
    if sched.proc.poll() is not None:
        return Kill("scheduler", time.time(), f"the scheduler had already exited with {sched.proc.returncode}",
                    returncode=sched.proc.returncode)
    busy = not finished(db, expected_runs)
    returncode = sched.signal(signal.SIGKILL)
    return Kill("scheduler", time.time(), f"after {started_count(journal)} executions", returncode=returncode,
                busy=busy)


def _kill_task(home: Home, plan: Plan, journal: Path, db: str, sched: SchedulerProcess) -> Kill | None:
    """SIGKILL one running try that has a retry left, in the middle of its code; None if none came by."""
    victim: list[tuple[str, str, str, int, int]] = []

    def pick() -> bool:
        sched.remember_children()
        started = {(e.dag_id, e.run_id, e.task_id, e.try_number, e.pid) for e in read_journal(journal)[0] if e.end is None}
        rows = query(
            db,
            "SELECT dag_id, run_id, task_id, try_number, pid FROM task_instance "
            "WHERE state = 'running' AND pid IS NOT NULL AND try_number <= :retries",
            {"retries": plan.retries},
        )
        for dag_id, run_id, task_id, try_number, pid in rows:
            key = (str(dag_id), str(run_id), str(task_id), int(str(try_number)), int(str(pid)))
            if key in started and alive(key[4]) and owned(key[4], home):
                victim.append(key)
                return True
        return False

    if not _wait(pick, PROGRESS_DEADLINE_S):
        return None
    dag_id, run_id, task_id, try_number, pid = victim[0]
    born = start_time(pid)
    if born is None or not owned(pid, home):
        return None
    os.kill(pid, signal.SIGKILL)
    died = wait_dead(pid)
    return Kill("task", time.time(), f"{dag_id}.{task_id} {run_id} try {try_number} pid {pid}"
                + ("" if died else " (still alive!)"), target=(dag_id, run_id, task_id, try_number), pid=pid)


def run_crash_cycles(root: Path, plan: Plan, progress: Callable[[str], None] | None = None) -> Report:
    """Run the whole scenario in a fresh home under ``root``; the report lists every broken invariant."""
    started = time.monotonic()
    home = Home(root)
    db = home.url
    journal = root / "journal.txt"
    report = Report(plan)
    rng = random.Random(plan.seed)
    expected = write_dags(home, plan, journal)
    expected_runs = sum(len(v) for v in expected.values())
    home.env["UPDRAFT__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "false"
    settings = {"core__parallelism": str(plan.parallelism)}
    actions = ["scheduler"] * plan.scheduler_kills + ["task"] * plan.task_kills
    rng.shuffle(actions)
    try:
        sched = home.start_scheduler(**settings)
        for n, action in enumerate(actions, 1):
            if action == "scheduler":
                kill = _kill_scheduler(home, sched, plan, rng, journal, db, expected_runs)
                report.kills.append(kill)
                if kill.returncode != -signal.SIGKILL:
                    report.violations.append(f"scheduler life {n}: {kill.detail}\n{sched.tail()}")
                sched = home.start_scheduler(**settings)
            else:
                task_kill = _kill_task(home, plan, journal, db, sched)
                if task_kill is None:
                    report.task_kills_skipped += 1
                else:
                    report.kills.append(task_kill)
            if progress is not None:
                detail = report.kills[-1].detail if report.kills and report.kills[-1].kind == action else "no try to kill"
                progress(f"{n}/{len(actions)} {action}: {detail}")

        if not _wait(lambda: finished(db, expected_runs) or sched.proc.poll() is not None, plan.finish_deadline_s):
            report.violations.append(
                f"not every run finished within {plan.finish_deadline_s} s of the last restart: "
                f"{query(db, 'SELECT state, count(*) FROM dag_run GROUP BY state')} runs, "
                f"{query(db, 'SELECT state, count(*) FROM task_instance GROUP BY state')} task instances\n{sched.tail()}"
            )
        if sched.proc.poll() is not None:
            report.violations.append(f"the last scheduler exited with {sched.proc.returncode}\n{sched.tail()}")
        else:
            # Its SIGTERM handler is in place once it logs that it started (it may have had nothing left to do).
            if not _wait(lambda: STARTED in sched.log() or sched.proc.poll() is not None, PROGRESS_DEADLINE_S):
                report.violations.append(f"the last scheduler did not start within {PROGRESS_DEADLINE_S} s\n{sched.tail()}")
            returncode = sched.signal(signal.SIGTERM)
            if returncode != 0:
                report.violations.append(f"the last scheduler exited with {returncode} after SIGTERM\n{sched.tail()}")
        # Tries the killed schedulers left running finish by themselves; nothing of ours may outlive them.
        _wait(lambda: not processes_of(home), LEFTOVER_DEADLINE_S)
        report.leftovers = sorted(processes_of(home))
        if report.leftovers:
            report.violations.append(f"processes outlived every scheduler: {report.leftovers}")
        for s in home.schedulers:
            report.scheduler_log_errors += log_errors(s.log())
        check_invariants(db, journal, plan, expected, report)
    finally:
        for pid in processes_of(home):  # only processes carrying this home, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        home.close()
    report.seconds = time.monotonic() - started
    return report


#: A zygote still importing its DAG file when its fork server went away (the scheduler was SIGKILLed) fails to
#: report "ready" on the closed pipe and prints this traceback; it exits at once and held no try. Known noise,
#: ignored until the fork server's zygote treats a closed status pipe as "server gone".
def log_errors(text: str) -> list[str]:
    """Each traceback (with the lines before it and up to its exception line), ERROR line or locked database."""
    lines = text.splitlines()
    found: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("Traceback"):
            end = i + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
                end += 1
            block = "\n".join(lines[max(0, i - 2):end + 1])
            found.append(block)
            i = end + 1
            continue
        if "database is locked" in lines[i] or " ERROR " in lines[i]:
            found.append(lines[i])
        i += 1
    return found


def check_invariants(db: str, journal: Path, plan: Plan, expected: dict[str, set[datetime]], report: Report) -> None:
    v = report.violations
    integrity = integrity_problems(db)
    if integrity:
        v.append(f"the database's integrity check: {integrity}")

    # Every due run exists exactly once, none is missing, none is extra, and every run succeeded.
    runs = query(db, "SELECT dag_id, run_id, logical_date, state, run_type FROM dag_run")
    report.runs = len(runs)
    slots = Counter((str(r[0]), as_utc(r[2])) for r in runs)
    v += [f"run {slot} exists {n} times" for slot, n in slots.items() if n > 1]
    for dag_id, dates in expected.items():
        found = {d for (dag, d) in slots if dag == dag_id}
        if found != dates:
            v.append(f"{dag_id}: missing runs {sorted(dates - found)[:5]}, unexpected runs {sorted(found - dates)[:5]}")
    v += [f"run {r[0]} {r[1]} ended {r[3]}" for r in runs if r[3] != "success"]
    v += [f"run {r[0]} {r[1]} is {r[4]}" for r in runs if r[4] != "scheduled"]

    tis = {
        (str(r[0]), str(r[1]), str(r[2])): (str(r[3]), int(str(r[4])), int(str(r[5])))
        for r in query(db, "SELECT dag_id, run_id, task_id, state, try_number, max_tries FROM task_instance")
    }
    if len(tis) != len(runs) * len(TASKS):
        v.append(f"{len(tis)} task instances for {len(runs)} runs of {len(TASKS)} tasks")
    v += [f"task instance {key} ended {state}" for key, (state, _, _) in tis.items() if state != "success"]
    history = Counter(
        (str(r[0]), str(r[1]), str(r[2]), int(str(r[3])))
        for r in query(db, "SELECT dag_id, run_id, task_id, try_number FROM task_instance_history")
    )
    v += [f"try {key} has {n} history rows" for key, n in history.items() if n > 1]

    # What the tasks themselves journalled.
    executions, problems = read_journal(journal)
    v += problems
    report.executions = len(executions)
    report.tries_by_number = Counter(e.try_number for e in executions)
    killed_at = {(k.target, k.pid): k.at for k in report.kills if k.target is not None and k.pid is not None}
    v += journal_violations(executions, killed_at, {key: value[1] for key, value in tis.items()}, plan.retries)
    v += _unretried_kills(executions, report)
    missing = {(e.dag_id, e.run_id, e.task_id) for e in executions}
    v += [f"{key} succeeded without executing" for key, (state, _, _) in tis.items() if state == "success" and key not in missing]


def _unretried_kills(executions: list[Execution], report: Report) -> list[str]:
    """Each try killed in the middle of its code must have been followed by a later try of its instance.

    A kill can land just after the code ended (the victim was picked while it ran): that try may have
    recorded success, so it needs no retry and is not counted in ``report.mid_code_kills``.
    """
    v: list[str] = []
    for kill in report.kills:
        if kill.target is None:
            continue
        dag_id, run_id, task_id, try_number = kill.target
        same = [e for e in executions if (e.dag_id, e.run_id, e.task_id) == (dag_id, run_id, task_id)]
        victim = [e for e in same if e.try_number == try_number and e.pid == kill.pid]
        if not victim or victim[0].end is not None:
            continue
        report.mid_code_kills += 1
        if not any(e.try_number > try_number for e in same):
            v.append(f"{kill.detail} was killed mid-code and never retried")
    return v


def journal_violations(
    executions: list[Execution],
    killed_at: dict[tuple[tuple[str, str, str, int], int], float],
    final_try: dict[tuple[str, str, str], int],
    retries: int,
) -> list[str]:
    """What the journal shows that must never happen.

    ``killed_at`` maps ((dag_id, run_id, task_id, try), pid) of the executions the harness
    killed to when they were seen dead (their end); ``final_try`` is each instance's last
    try number in the database.
    """
    v: list[str] = []
    by_ti: dict[tuple[str, str, str], list[tuple[Execution, float]]] = defaultdict(list)
    for e in executions:
        end = e.end if e.end is not None else killed_at.get(((e.dag_id, e.run_id, e.task_id, e.try_number), e.pid))
        if end is None:
            v.append(f"{e.dag_id}.{e.task_id} {e.run_id} try {e.try_number} (pid {e.pid}) "
                     "never ended and was not killed by the harness")
            end = float("inf")
        by_ti[(e.dag_id, e.run_id, e.task_id)].append((e, end))
    for key, found in by_ti.items():
        tries = Counter(e.try_number for e, _ in found)
        v += [f"{key} try {t} executed {n} times" for t, n in tries.items() if n > 1]
        if len(found) > retries + 1:
            v.append(f"{key} executed {len(found)} times; its tries allow {retries + 1}")
        if key in final_try and max(tries) > final_try[key]:
            v.append(f"{key} executed try {max(tries)} but the instance ended at try {final_try[key]}")
        ordered = sorted(found, key=lambda pair: pair[0].start)
        for (before, before_end), (after, _) in zip(ordered, ordered[1:], strict=False):
            if after.start < before_end:
                v.append(f"{key}: try {after.try_number} (pid {after.pid}) started while "
                         f"try {before.try_number} (pid {before.pid}) ran")
    return v
