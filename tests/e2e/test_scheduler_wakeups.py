"""`updraft scheduler` as a real process that sleeps until something is due, woken by its watchers.

The loop sleeps up to its heartbeat interval when nothing is due; these tests set it to 30 s. What must still be prompt:
a run triggered by another process (only the database watcher reports it), a new,
edited or deleted DAG file (the folder watcher), SIGTERM. And while idle the
process must cost next to no CPU. The deadlines here (3 s) are far below the 30 s
sleep, so a loop that only sleeps fails them.

"Asleep" is observed from outside: the loop's database watcher opens its own
connection to the SQLite file at the start of its first sleep, so the process then
holds two descriptors on ``updraft.db`` (SQLAlchemy's pooled one and the watcher's).
On PostgreSQL (no file) it is the process tree using no CPU for half a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update

from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import Dag, DagRun
from tests.backend import home_database_url
from tests.e2e.test_scheduler_process import cli_env


def _env(home: Path) -> dict[str, str]:
    """The CLI environment, with a 30 s scheduler heartbeat: the longest the loop sleeps unless woken."""
    return {**cli_env(home), "UPDRAFT__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "30"}

#: How long a wake-up may take: far less than the loop's 30 s sleep.
WAKEUP_DEADLINE_S = 3.0
#: How long the process may take to start, migrate, parse and fall asleep.
STARTUP_DEADLINE_S = 20.0
EXIT_DEADLINE_S = 5.0
#: The idle process (and its children) may use at most this share of one core.
IDLE_CPU_SHARE = 0.05
IDLE_WINDOW_S = 3.0
#: On PostgreSQL, how long the started process must use no CPU to count as asleep.
QUIET_S = 0.5


def dag_file(dag_id: str, *, schedule: str | None, start: datetime, end: datetime | None = None) -> str:
    def literal(value: datetime) -> str:
        return f"datetime({value.year}, {value.month}, {value.day}, {value.hour}, tzinfo=timezone.utc)"

    end_arg = "" if end is None else f", end_date={literal(end)}"
    return (
        "from datetime import datetime, timezone\n"
        "from scheduler import DAG, EmptyOperator\n"
        f"with DAG({dag_id!r}, schedule={schedule!r}, start_date={literal(start)}{end_arg},\n"
        "         catchup=True, max_active_runs=1000):\n"
        "    EmptyOperator(task_id='noop')\n"
    )


def wait_for(what: str, check: Callable[[], bool], deadline_s: float, proc: subprocess.Popen[str] | None = None) -> float:
    """Poll ``check`` until true; return the seconds it took. Fails on the deadline or if ``proc`` died."""
    started = time.monotonic()
    while not check():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the scheduler exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() - started > deadline_s:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.02)  # polling an observable condition, not waiting for a fixed time
    return time.monotonic() - started


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    return home


@pytest.fixture
def engine(home: Path) -> Iterator[Engine]:
    engine = make_engine(home_database_url(home))
    yield engine
    engine.dispose()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        capture_output=True, text=True, env=_env(home), cwd=home, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


class SchedulerProcess:
    """The scheduler with its stderr in a file (readable while it runs)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.on_sqlite = home_database_url(home).startswith("sqlite")
        self.log_path = home / "scheduler.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "scheduler"],
            stdout=subprocess.DEVNULL, stderr=self._log, text=True, env=_env(home), cwd=home,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def database_descriptors(self) -> int:
        database = str(self.home / "updraft.db")
        count = 0
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                if os.readlink(fd) == database:
                    count += 1
            except OSError:
                continue  # closed meanwhile
        return count

    def wait_asleep(self) -> None:
        if self.on_sqlite:
            asleep = self.database_descriptors
        else:
            # No file to watch on PostgreSQL: asleep is the whole process tree using no CPU for a while.
            last = [-1.0, time.monotonic()]

            def asleep() -> int:
                used, now = cpu_seconds(self.proc.pid), time.monotonic()
                if used - last[0] > 0.005:
                    last[:] = [used, now]
                return 2 if now - last[1] >= QUIET_S else 0

        wait_for(
            "the scheduler to start and fall asleep",
            lambda: "scheduler ready" in self.log() and asleep() >= 2,
            STARTUP_DEADLINE_S, self.proc,
        )
        assert "watching DAG folder" in self.log()  # the folder watcher, not the once-a-second scan

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=EXIT_DEADLINE_S)
        return self.proc.returncode, time.monotonic() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start_scheduler(home: Path) -> Iterator[Callable[[], SchedulerProcess]]:
    started: list[SchedulerProcess] = []

    def start() -> SchedulerProcess:
        process = SchedulerProcess(home)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, of its reaped children, and of its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ", field 3 (state) is fields[0]
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    total = (utime + stime + cutime + cstime) / ticks
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return total + sum(cpu_seconds(child) for child in children)


def runs(engine: Engine, dag_id: str) -> list[DagRun]:
    with session_scope(engine, readonly=True) as session:
        return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)))


def dag_row(engine: Engine, dag_id: str) -> Dag | None:
    with session_scope(engine, readonly=True) as session:
        return session.get(Dag, dag_id)


MIDNIGHT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


# --- tests --------------------------------------------------------------------------------------


def test_a_triggered_run_is_started_within_seconds(
    home: Path, engine: Engine, start_scheduler: Callable[[], SchedulerProcess]
) -> None:
    (home / "dags" / "manual.py").write_text(dag_file("manual", schedule=None, start=MIDNIGHT - timedelta(days=1)))
    cli(home, "dags", "unpause", "manual")
    scheduler = start_scheduler()
    scheduler.wait_asleep()  # nothing is due by time: the loop now sleeps 30 s unless woken

    cli(home, "dags", "trigger", "manual", "--run-id", "by_hand")
    assert [(r.run_id, r.state.value) for r in runs(engine, "manual")] in (
        [("by_hand", "queued")], [("by_hand", "running")], [("by_hand", "success")],
    )

    def started() -> bool:
        # running, or already success: its only task is an EmptyOperator, which the scheduler marks itself
        return [(r.run_id, r.state.value) for r in runs(engine, "manual")] in (
            [("by_hand", "running")], [("by_hand", "success")],
        )

    wait_for("the triggered run to be started", started, WAKEUP_DEADLINE_S, scheduler.proc)
    assert scheduler.alive()


def test_new_and_edited_files_are_followed_without_duplicates(
    home: Path, engine: Engine, start_scheduler: Callable[[], SchedulerProcess]
) -> None:
    start = MIDNIGHT - timedelta(days=3)
    scheduler = start_scheduler()
    scheduler.wait_asleep()

    path = home / "dags" / "edited.py"
    path.write_text(dag_file("edited", schedule="@daily", start=start, end=start + timedelta(days=1)))
    wait_for("the new file to be listed", lambda: dag_row(engine, "edited") is not None, WAKEUP_DEADLINE_S,
             scheduler.proc)
    cli(home, "dags", "unpause", "edited")
    daily = {start, start + timedelta(days=1)}
    wait_for("the daily runs", lambda: {r.logical_date for r in runs(engine, "edited")} == daily,
             WAKEUP_DEADLINE_S, scheduler.proc)

    # Same size class of edit, new content: @hourly up to a day later (fixed by end_date, not by the clock).
    path.write_text(dag_file("edited", schedule="@hourly", start=start, end=start + timedelta(days=2)))
    hourly = {start + timedelta(days=1, hours=h) for h in range(1, 25)}

    def all_runs_there() -> bool:
        return {r.logical_date for r in runs(engine, "edited")} >= daily | hourly

    wait_for("the hourly runs of the edited file", all_runs_there, WAKEUP_DEADLINE_S, scheduler.proc)
    found = runs(engine, "edited")
    slots = Counter((r.dag_id, r.logical_date) for r in found)
    assert [slot for slot, n in slots.items() if n > 1] == []
    assert set(slots) == {("edited", d) for d in daily | hourly}
    assert scheduler.alive()
    code, _ = scheduler.terminate()
    assert code == 0, scheduler.log()


def test_a_deleted_file_deactivates_its_dag(
    home: Path, engine: Engine, start_scheduler: Callable[[], SchedulerProcess]
) -> None:
    path = home / "dags" / "doomed.py"
    path.write_text(dag_file("doomed", schedule="@daily", start=MIDNIGHT - timedelta(days=1)))
    cli(home, "dags", "list")  # parsed before the scheduler starts
    row = dag_row(engine, "doomed")
    assert row is not None and row.is_active
    scheduler = start_scheduler()
    scheduler.wait_asleep()

    path.unlink()

    def deactivated() -> bool:
        row = dag_row(engine, "doomed")
        return row is not None and not row.is_active

    wait_for("the deleted file's DAG to be deactivated", deactivated, WAKEUP_DEADLINE_S, scheduler.proc)
    assert scheduler.alive()


@pytest.mark.parametrize(
    ("idle_dags", "max_share"),
    [
        pytest.param(0, IDLE_CPU_SHARE, id="no-dags"),
        # 50 unpaused DAGs first due the day after tomorrow. The old once-a-second polling loop
        # used about 4.7% of a core here (scanning the folder and looking at every DAG each
        # second); the sleeping loop looks at nothing until a watcher or the clock says so.
        pytest.param(50, 0.02, id="50-dags-not-due"),
    ],
)
def test_an_idle_scheduler_uses_almost_no_cpu(
    home: Path, engine: Engine, start_scheduler: Callable[[], SchedulerProcess], idle_dags: int, max_share: float
) -> None:
    if idle_dags:
        later = MIDNIGHT + timedelta(days=2)
        for i in range(idle_dags):
            (home / "dags" / f"later_{i:02d}.py").write_text(dag_file(f"later_{i:02d}", schedule="@daily", start=later))
        cli(home, "dags", "list")
        with session_scope(engine) as session:
            session.execute(update(Dag).values(is_paused=False))
    scheduler = start_scheduler()
    scheduler.wait_asleep()
    if idle_dags:
        with session_scope(engine, readonly=True) as session:
            assert session.scalar(select(func.count()).select_from(Dag).where(Dag.is_paused.is_(False))) == idle_dags
    before = cpu_seconds(scheduler.proc.pid)
    # Measuring CPU use over an interval needs the interval itself: this sleep is the
    # measurement window, not a wait for something to happen.
    time.sleep(IDLE_WINDOW_S)
    used = cpu_seconds(scheduler.proc.pid) - before
    assert scheduler.alive()
    assert used < max_share * IDLE_WINDOW_S, f"{used:.3f} s of CPU in {IDLE_WINDOW_S} s idle"
    assert runs(engine, "later_00") == []


def test_sigterm_ends_a_sleeping_scheduler_promptly(
    home: Path, start_scheduler: Callable[[], SchedulerProcess]
) -> None:
    scheduler = start_scheduler()
    scheduler.wait_asleep()  # no DAGs: the loop sleeps its full 30 s
    code, took = scheduler.terminate()
    assert code == 0, scheduler.log()
    assert took < EXIT_DEADLINE_S
    assert "scheduler stopped (received SIGTERM)" in scheduler.log()
