"""`updraft scheduler` with the LocalExecutor, end to end: real processes on real DAG files.

Each test writes DAG files into a temporary UPDRAFT_HOME (the DAG folder, the log folder
and, on SQLite, the database are set explicitly and the CLI runs with ``cwd`` = that home,
so nothing of the repository is picked up), triggers a run with ``updraft dags trigger``
and starts ``updraft scheduler`` as a child process (stderr to a file). The test then
reads the metadata database from outside, polling it until a condition holds or a
deadline passes; it never sleeps to synchronise. What is checked: task instance states
and try numbers, the ``xcom`` and ``task_instance_history`` tables, the log file of every
try at its exact path (``{base_log_folder}/dag_id=D/run_id=R/task_id=T/attempt=N.log``),
processes killed from outside (the task process, its supervisor, the scheduler itself),
execution timeouts, graceful shutdown, restart, parallelism and the CLI's views of a
finished run. One test repeats the mixed DAG on PostgreSQL.

Tasks that must be caught mid-try write their pid to a marker file (atomically: written
to a temporary name, then renamed) and sleep; the test acts once both the file and the
``running`` state are visible. Every process a test may leave behind (a scheduler, its
fork server and runners, an orphaned task process) is killed in the fixture's teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from scheduler.db.engine import make_engine, session_scope
from scheduler.db.models import DagRun, Job, TaskInstance, TaskInstanceHistory, XCom
from tests.backend import CONN_ENV, clean_environ, home_database_url, pass_database_env

#: The logical date every test triggers with; its ``ds`` is 2024-03-01.
LOGICAL = datetime(2024, 3, 1, 6, tzinfo=UTC)
#: The run id ``dags trigger`` gives a run with that logical date.
RUN_ID = f"manual__{LOGICAL.isoformat()}"
#: How long a small DAG may take from the scheduler's start to the end of its run (typically 2-4 s).
RUN_DEADLINE_S = 30.0
#: How long a try may take to be seen running after the scheduler starts.
START_DEADLINE_S = 20.0
#: How long the scheduler may take to notice a killed runner: far below the 300 s heartbeat timeout.
NOTICE_DEADLINE_S = 5.0
#: How long a process may take to exit after its signal.
EXIT_DEADLINE_S = 15.0
#: How long a runner may take to write its last log line after its state is committed.
LOG_DEADLINE_S = 10.0
#: How often the database is polled.
POLL_S = 0.02
#: core.killed_task_cleanup_time: the grace between SIGTERM and SIGKILL of a task's processes.
CLEANUP_S = 2.0


def _updraft() -> list[str]:
    script = Path(sys.executable).with_name("updraft")
    return [str(script)] if script.exists() else [sys.executable, "-m", "scheduler.cli"]


# --- processes ---------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def program(pid: int) -> str | None:
    """The name of the program ``pid`` runs (argv[0]); None when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return None


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (walking /proc for parent ids)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = parent_of(int(entry))
            if parent is not None and alive(int(entry)):
                parents[int(entry)] = parent
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def kill_quietly(proc: tuple[int, int | None]) -> None:
    """SIGKILL ``(pid, start time)`` if that very process still exists (never a reused pid)."""
    pid, started = proc
    if started is None or start_time(pid) != started:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class SchedulerProcess:
    """One life of `updraft scheduler`, its stderr in a file readable while it runs."""

    def __init__(self, home: Home, name: str, extra_env: dict[str, str]) -> None:
        self.log_path = home.root / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*_updraft(), "scheduler"],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**home.env, **extra_env},
            cwd=home.root,
        )
        #: Every process seen below it (the fork server, runners), as (pid, start time), for the teardown.
        self.seen: set[tuple[int, int | None]] = set()

    def log(self) -> str:
        return self.log_path.read_text()

    def remember_children(self) -> None:
        if self.proc.poll() is None:
            self.seen |= {(pid, start_time(pid)) for pid in descendants(self.proc.pid)}

    def signal(self, sig: signal.Signals) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code."""
        self.remember_children()
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the scheduler did not exit within {EXIT_DEADLINE_S} s of {sig.name}:\n{self.tail()}"
            )

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def close(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and kill whatever it left behind."""
        self.remember_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=EXIT_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for proc in self.seen:
            kill_quietly(proc)
        self._log.close()


class Home:
    """A temporary UPDRAFT_HOME: DAG folder, log folder, marker folder, database, CLI and schedulers."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        self.dags = root / "dags"
        self.logs = root / "logs"
        self.markers = root / "markers"
        for folder in (self.dags, self.logs, self.markers):
            folder.mkdir(parents=True, exist_ok=True)
        self.url = url or home_database_url(root)
        self.env = clean_environ()
        self.env.update(
            {
                "UPDRAFT_HOME": str(root),
                "UPDRAFT__DATABASE__SQL_ALCHEMY_CONN": self.url,
                "UPDRAFT__CORE__DAGS_FOLDER": str(self.dags),
                "UPDRAFT__CORE__PARSING_PROCESSES": "1",
                "UPDRAFT__CORE__KILLED_TASK_CLEANUP_TIME": str(CLEANUP_S),
                "UPDRAFT__LOGGING__BASE_LOG_FOLDER": str(self.logs),
                # A scheduler stopped at the end of a test leaves its tries little time (test 4 sets 30 s).
                "UPDRAFT__SCHEDULER__GRACEFUL_SHUTDOWN_TIMEOUT": "2",
            }
        )
        self.schedulers: list[SchedulerProcess] = []
        #: Processes the test learnt of (task pids from marker files), killed first at the end.
        self.extra_pids: set[tuple[int, int | None]] = set()
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        for proc in self.extra_pids:  # first: an orphaned task process may hold the executor's pipes
            kill_quietly(proc)
        for sched in self.schedulers:
            sched.close()
        if self._engine is not None:
            self._engine.dispose()

    # -- CLI ---------------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*_updraft(), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=60,
        )
        if check:
            assert result.returncode == 0, f"updraft {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def dag(self, filename: str, source: str) -> None:
        (self.dags / filename).write_text(source.replace("@MARKERS@", repr(str(self.markers))))

    def trigger(self, dag_id: str) -> None:
        """Unpause the DAG and trigger a run at LOGICAL (id RUN_ID)."""
        self.cli("dags", "unpause", dag_id)
        out = json.loads(
            self.cli("dags", "trigger", dag_id, "--logical-date", LOGICAL.isoformat(), "-o", "json").stdout
        )
        assert [r["run_id"] for r in out] == [RUN_ID]

    def start_scheduler(self, **settings: str) -> SchedulerProcess:
        extra = {f"UPDRAFT__{k.upper()}": v for k, v in settings.items()}
        sched = SchedulerProcess(self, f"scheduler-{len(self.schedulers) + 1}", extra)
        self.schedulers.append(sched)
        return sched

    # -- waiting -------------------------------------------------------------------------------

    def wait_for(
        self, what: str, check: Callable[[], Any], deadline_s: float, sched: SchedulerProcess | None = None
    ) -> float:
        """Poll ``check`` until truthy; returns the seconds it took. Fails at the deadline or if ``sched`` died."""
        started = time.monotonic()
        while not check():
            if sched is not None and sched.proc.poll() is not None:
                pytest.fail(
                    f"the scheduler exited ({sched.proc.returncode}) while waiting for {what}:\n{sched.tail()}"
                )
            if time.monotonic() - started > deadline_s:
                tail = f"\nscheduler log:\n{sched.tail()}" if sched is not None else ""
                pytest.fail(
                    f"timed out after {deadline_s} s waiting for {what}; states {self.states_safe()}{tail}"
                )
            if sched is not None:
                sched.remember_children()
            time.sleep(POLL_S)  # polling the database, not waiting for a fixed time
        return time.monotonic() - started

    def wait_run_finished(
        self, dag_id: str, sched: SchedulerProcess, deadline_s: float = RUN_DEADLINE_S
    ) -> str:
        self.wait_for(
            f"run {RUN_ID} of {dag_id} to finish",
            lambda: self.run_state(dag_id) in ("success", "failed"),
            deadline_s,
            sched,
        )
        return self.run_state(dag_id) or ""

    def marker_pid(self, name: str) -> int | None:
        """The pid a task wrote to markers/<name>.pid (None until it did)."""
        path = self.markers / f"{name}.pid"
        if not path.exists():
            return None
        pid = int(path.read_text())
        if not any(known == pid for known, _ in self.extra_pids):
            self.extra_pids.add((pid, start_time(pid)))
        return pid

    # -- reading the database ---------------------------------------------------------------------

    def run_state(self, dag_id: str) -> str | None:
        with session_scope(self.engine, readonly=True) as session:
            state = session.scalar(
                select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == RUN_ID)
            )
        return None if state is None else str(state)

    def tis(self, dag_id: str) -> dict[str, TaskInstance]:
        with session_scope(self.engine, readonly=True) as session:
            rows = session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == RUN_ID)
            ).all()
            session.expunge_all()
        return {r.task_id: r for r in rows}

    def ti(self, dag_id: str, task_id: str) -> TaskInstance:
        found = self.tis(dag_id).get(task_id)
        assert found is not None, f"no task instance {dag_id}.{task_id} in run {RUN_ID}"
        return found

    def state(self, dag_id: str, task_id: str) -> str | None:
        """The instance's state (None while it does not exist)."""
        found = self.tis(dag_id).get(task_id)
        return None if found is None else str(found.state)

    def states(self, dag_id: str) -> dict[str, str]:
        return {t: str(ti.state) for t, ti in self.tis(dag_id).items()}

    def states_safe(self) -> str:
        try:
            with session_scope(self.engine, readonly=True) as session:
                rows = session.execute(
                    select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number)
                ).all()
            return ", ".join(f"{r.task_id}={r.state}/{r.try_number}" for r in rows)
        except Exception as exc:  # noqa: BLE001 - only for a failure message
            return f"(unreadable: {exc})"

    def history(self, dag_id: str) -> dict[str, list[tuple[int, str]]]:
        """task_id -> [(try_number, state)] of task_instance_history, by try."""
        with session_scope(self.engine, readonly=True) as session:
            rows = session.execute(
                select(TaskInstanceHistory.task_id, TaskInstanceHistory.try_number, TaskInstanceHistory.state)
                .where(TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == RUN_ID)
                .order_by(TaskInstanceHistory.task_id, TaskInstanceHistory.try_number)
            ).all()
        found: dict[str, list[tuple[int, str]]] = {}
        for r in rows:
            found.setdefault(r.task_id, []).append((r.try_number, str(r.state)))
        return found

    def xcoms(self, dag_id: str) -> dict[tuple[str, str], Any]:
        with session_scope(self.engine, readonly=True) as session:
            rows = session.execute(
                select(XCom.task_id, XCom.key, XCom.value, XCom.map_index).where(
                    XCom.dag_id == dag_id, XCom.run_id == RUN_ID
                )
            ).all()
        assert all(r.map_index == -1 for r in rows)
        return {(r.task_id, r.key): r.value for r in rows}

    def log_path(self, dag_id: str, task_id: str, attempt: int) -> Path:
        return (
            self.logs
            / f"dag_id={dag_id}"
            / f"run_id={RUN_ID}"
            / f"task_id={task_id}"
            / f"attempt={attempt}.log"
        )

    def log_text(self, dag_id: str, task_id: str, attempt: int) -> str:
        path = self.log_path(dag_id, task_id, attempt)
        assert path.is_file(), (
            f"no log file at {path}; found {sorted(str(p) for p in self.logs.rglob('*.log'))}"
        )
        return path.read_text()

    def final_log_text(self, dag_id: str, task_id: str, attempt: int) -> str:
        """The try's log once its runner wrote the recorded state, its last line.

        The scheduler may find a committed state on its own before that line is written.
        """
        path = self.log_path(dag_id, task_id, attempt)
        self.wait_for(f"the last line of {path.name} of {dag_id}.{task_id}",
                      lambda: path.is_file() and "Recorded state" in path.read_text(), LOG_DEADLINE_S)
        return path.read_text()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "home")
    try:
        yield h
    finally:
        h.close()


# --- 1. a DAG mixing operators: states, XComs, logs, history --------------------------------------

MIXED_DAG = """
import os
from datetime import datetime, timedelta

from scheduler import DAG, BashOperator, BranchPythonOperator, PythonOperator, task

MARKERS = @MARKERS@


def produce():
    print("produce: handing over 41")
    return {"n": 41, "tag": "produced"}


def pick_branch(ti):
    n = ti.xcom_pull(task_ids="produce")["n"]
    print(f"pick: n is {n}, going left")
    return "left" if n > 40 else "right"


def flaky():
    marker = os.path.join(MARKERS, "flaky.marker")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("flaky: the first try fails on purpose")
    print("flaky: the second try succeeds")
    return "recovered"


with DAG("mixed", schedule=None, start_date=datetime(2024, 1, 1)):
    produce_task = PythonOperator(task_id="produce", python_callable=produce)
    bash = BashOperator(
        task_id="bash",
        bash_command="echo bash: ds={{ ds }} n={{ ti.xcom_pull(task_ids='produce')['n'] }}",
    )
    produce_task >> bash

    @task
    def double(payload):
        print(f"double: got {payload['n']}")
        return payload["n"] * 2

    @task
    def combine(doubled, line):
        print(f"combine: {doubled} and {line}")
        return {"doubled": doubled, "bash_line": line}

    combined = combine(double(produce_task.output), bash.output)

    pick = BranchPythonOperator(task_id="pick", python_callable=pick_branch)
    left = BashOperator(task_id="left", bash_command="echo went left")
    right = BashOperator(task_id="right", bash_command="echo went right")
    produce_task >> pick >> [left, right]

    flaky_task = PythonOperator(task_id="flaky", python_callable=flaky, retries=1, retry_delay=timedelta(seconds=0))

    @task(trigger_rule="none_failed_min_one_success")
    def finish(summary, recovered):
        print(f"finish: {summary['doubled']} {recovered}")
        return f"{summary['doubled']}-{recovered}"

    done = finish(combined, flaky_task.output)
    [left, right] >> done
"""

BASH_LINE = "bash: ds=2024-03-01 n=41"

#: task_id -> (state, try_number, max_tries)
MIXED_STATES = {
    "produce": ("success", 1, 0),
    "bash": ("success", 1, 0),
    "double": ("success", 1, 0),
    "combine": ("success", 1, 0),
    "pick": ("success", 1, 0),
    "left": ("success", 1, 0),
    "right": ("skipped", 0, 0),
    "flaky": ("success", 2, 1),
    "finish": ("success", 1, 0),
}

MIXED_XCOMS = {
    "produce": {"n": 41, "tag": "produced"},
    "bash": BASH_LINE,
    "double": 82,
    "combine": {"doubled": 82, "bash_line": BASH_LINE},
    "pick": "left",
    "left": "went left",
    "flaky": "recovered",
    "finish": "82-recovered",
}

#: What each task prints, found in the log of its (last) try.
MIXED_OUTPUT = {
    "produce": "produce: handing over 41",
    "bash": BASH_LINE,
    "double": "double: got 41",
    "combine": f"combine: 82 and {BASH_LINE}",
    "pick": "pick: n is 41, going left",
    "left": "went left",
    "flaky": "flaky: the second try succeeds",
    "finish": "finish: 82 recovered",
}


@dataclass
class MixedRun:
    home: Home
    run_state: str
    scheduler_log: str
    scheduler_rc: int


def run_mixed(home: Home) -> MixedRun:
    home.dag("mixed.py", MIXED_DAG)
    home.trigger("mixed")
    sched = home.start_scheduler()
    state = home.wait_run_finished("mixed", sched)
    rc = sched.signal(signal.SIGTERM)
    return MixedRun(home, state, sched.log(), rc)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedRun]:
    """The mixed DAG run once (on the pass's database), shared by the tests that read its outcome."""
    with pass_database_env() as database:
        h = Home(tmp_path_factory.mktemp("mixed") / "home", database.get(CONN_ENV))
        try:
            yield run_mixed(h)
        finally:
            h.close()


def check_states(m: MixedRun) -> None:
    assert m.run_state == "success", m.scheduler_log
    tis = m.home.tis("mixed")
    assert {t: (str(ti.state), ti.try_number, ti.max_tries) for t, ti in tis.items()} == MIXED_STATES
    for task_id, ti in tis.items():
        if task_id == "right":
            continue
        assert ti.pid is not None and ti.hostname, task_id
        assert ti.start_date is not None and ti.end_date is not None and ti.end_date >= ti.start_date, task_id
    assert m.scheduler_rc == 0, m.scheduler_log


def check_xcoms(m: MixedRun) -> None:
    xcoms = m.home.xcoms("mixed")
    returned = {task_id: value for (task_id, key), value in xcoms.items() if key == "return_value"}
    assert returned == MIXED_XCOMS
    assert ("right", "return_value") not in xcoms  # skipped: never ran


def check_logs(m: MixedRun) -> None:
    h = m.home
    for task_id, (state, tries, max_tries) in MIXED_STATES.items():
        task_dir = h.log_path("mixed", task_id, 1).parent
        if state == "skipped":
            assert not task_dir.exists(), f"a skipped task has logs: {sorted(task_dir.iterdir())}"
            continue
        assert sorted(p.name for p in task_dir.iterdir()) == [f"attempt={n}.log" for n in range(1, tries + 1)]
        for attempt in range(1, tries + 1):
            text = h.log_text("mixed", task_id, attempt)
            assert (
                f"Starting attempt {attempt} of {max_tries + 1} of mixed.{task_id}, run {RUN_ID}" in text
            ), text
            assert text.count("Starting attempt") == 1, text
        last = h.final_log_text("mixed", task_id, tries)
        assert MIXED_OUTPUT[task_id] in last, last
        assert f"Recorded state success for try {tries}" in last, last
    first = h.final_log_text("mixed", "flaky", 1)
    assert (
        "Traceback (most recent call last)" in first
        and "RuntimeError: flaky: the first try fails on purpose" in first
    )
    assert "Recorded state up_for_retry for try 1" in first
    assert "flaky: the second try succeeds" not in first
    assert "RuntimeError" not in h.log_text("mixed", "flaky", 2)


def check_history(m: MixedRun) -> None:
    history = m.home.history("mixed")
    expected = {
        task_id: [(n, "failed" if n < tries else state) for n in range(1, tries + 1)]
        for task_id, (state, tries, _) in MIXED_STATES.items()
        if tries
    }
    assert history == expected
    assert history["flaky"] == [(1, "failed"), (2, "success")]


def test_mixed_dag_task_states_and_run_success(mixed: MixedRun) -> None:
    check_states(mixed)


def test_mixed_dag_xcoms_in_the_xcom_table(mixed: MixedRun) -> None:
    check_xcoms(mixed)


def test_mixed_dag_log_file_of_each_try(mixed: MixedRun) -> None:
    check_logs(mixed)


def test_mixed_dag_task_instance_history_one_row_per_try(mixed: MixedRun) -> None:
    check_history(mixed)


# --- 7. the CLI's views of the finished run ----------------------------------------------------------


def test_cli_states_for_dag_run_and_list_runs_show_the_finished_states(mixed: MixedRun) -> None:
    h = mixed.home
    records = json.loads(h.cli("tasks", "states-for-dag-run", "mixed", RUN_ID, "-o", "json").stdout)
    assert {r["task_id"]: (r["state"], r["try_number"]) for r in records} == {
        t: (s, n) for t, (s, n, _) in MIXED_STATES.items()
    }
    assert {r["run_id"] for r in records} == {RUN_ID}
    order = [r["task_id"] for r in records]
    for upstream, downstream in (
        ("produce", "bash"),
        ("bash", "combine"),
        ("pick", "left"),
        ("combine", "finish"),
    ):
        assert order.index(upstream) < order.index(downstream), order  # the DAG's order: upstream first

    table = h.cli("tasks", "states-for-dag-run", "mixed", RUN_ID).stdout
    lines = table.splitlines()
    for task_id, (state, _, _) in MIXED_STATES.items():
        assert any(task_id in line.split() and state in line.split() for line in lines), (task_id, table)

    runs = json.loads(h.cli("dags", "list-runs", "mixed", "-o", "json").stdout)
    assert [(r["run_id"], r["state"], r["run_type"]) for r in runs] == [(RUN_ID, "success", "manual")]
    assert runs[0]["end_date"] is not None
    assert json.loads(h.cli("dags", "list-runs", "mixed", "--state", "failed", "-o", "json").stdout) == []
    table = h.cli("dags", "list-runs", "mixed").stdout
    assert any(RUN_ID in line and "success" in line for line in table.splitlines()), table


# --- the same on PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_mixed_dag_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    h = Home(tmp_path / "home", url=pg_url)
    try:
        h.cli("db", "migrate")
        m = run_mixed(h)
        check_states(m)
        check_xcoms(m)
        check_logs(m)
        check_history(m)
    finally:
        h.close()


# --- 2. killed processes ----------------------------------------------------------------------------

SLEEPER = """
import os
import time
from datetime import datetime, timedelta

from scheduler import DAG, PythonOperator

MARKERS = @MARKERS@


def sleeper(name):
    def run():
        path = os.path.join(MARKERS, name + ".pid")
        if os.path.exists(path):
            print(f"{name}: a later try, done at once")
            return "second"
        with open(path + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename(path + ".tmp", path)
        print(f"{name}: pid written, sleeping", flush=True)
        time.sleep(60)
        return "woke up"
    return run


with DAG("victims", schedule=None, start_date=datetime(2024, 1, 1)):
    PythonOperator(task_id="victim", python_callable=sleeper("victim"), retries=@RETRIES@,
                   retry_delay=timedelta(seconds=@DELAY@))
"""


def sleeper_dag(*, retries: int, retry_delay_s: int) -> str:
    return SLEEPER.replace("@RETRIES@", str(retries)).replace("@DELAY@", str(retry_delay_s))


def _wait_caught(h: Home, dag_id: str, task_id: str, sched: SchedulerProcess) -> tuple[int, int]:
    """Wait until the task is running and has written its pid; returns (task's pid, the pid its instance records).

    Under the LocalExecutor a try's code runs in the try's own process (the fork server's
    direct mode), so the two are the same process.
    """
    h.wait_for(
        f"{task_id} to run and write its pid",
        lambda: h.marker_pid(task_id) is not None and h.state(dag_id, task_id) == "running",
        START_DEADLINE_S,
        sched,
    )
    task_pid = h.marker_pid(task_id)
    ti = h.ti(dag_id, task_id)
    assert task_pid is not None and ti.pid is not None
    return task_pid, ti.pid


def test_task_process_killed_by_sigkill_fails_the_try(home: Home) -> None:
    home.dag("victims.py", sleeper_dag(retries=0, retry_delay_s=0))
    home.trigger("victims")
    sched = home.start_scheduler()
    task_pid, recorded_pid = _wait_caught(home, "victims", "victim", sched)
    assert recorded_pid == task_pid  # the try runs in its own process: the one its instance records

    os.kill(task_pid, signal.SIGKILL)
    home.wait_for(
        "the try to fail", lambda: home.state("victims", "victim") == "failed", NOTICE_DEADLINE_S, sched
    )
    ti = home.ti("victims", "victim")
    assert (ti.try_number, ti.max_tries) == (1, 0)
    text = home.log_text("victims", "victim", 1)
    assert "victim: pid written, sleeping" in text
    assert "the task process died: killed by signal SIGKILL" in text  # noted by the fork server
    # Logged by the scheduler just after it committed the failure.
    home.wait_for("the scheduler's note", lambda: "its runner was killed by SIGKILL" in sched.log(),
                  NOTICE_DEADLINE_S, sched)
    assert home.history("victims") == {"victim": [(1, "failed")]}
    assert home.wait_run_finished("victims", sched) == "failed"


def test_killed_try_with_retries_is_noticed_from_the_executor_event(home: Home) -> None:
    home.dag("victims.py", sleeper_dag(retries=1, retry_delay_s=3600))
    home.trigger("victims")
    sched = home.start_scheduler()
    task_pid, _ = _wait_caught(home, "victims", "victim", sched)

    os.kill(task_pid, signal.SIGKILL)
    took = home.wait_for(
        "the try to be marked up_for_retry",
        lambda: home.state("victims", "victim") == "up_for_retry",
        NOTICE_DEADLINE_S,
        sched,
    )
    assert took < NOTICE_DEADLINE_S  # the executor's event, not the 300 s heartbeat timeout
    ti = home.ti("victims", "victim")
    assert (ti.try_number, ti.max_tries) == (1, 1)
    assert ti.next_retry_at is not None and ti.end_date is not None
    assert (
        3500 <= (ti.next_retry_at - ti.end_date).total_seconds() <= 3700
    )  # the task's own retry_delay (1 h)
    home.wait_for(
        "the scheduler's note (logged just after the commit)",
        lambda: all(part in sched.log() for part in
                    ("victims.victim", "its runner was killed by SIGKILL", "marked up_for_retry")),
        NOTICE_DEADLINE_S, sched,
    )


def test_killed_try_then_retried_records_both_tries(home: Home) -> None:
    home.dag("victims.py", sleeper_dag(retries=1, retry_delay_s=0))
    home.trigger("victims")
    sched = home.start_scheduler()
    task_pid, _ = _wait_caught(home, "victims", "victim", sched)

    os.kill(task_pid, signal.SIGKILL)
    assert home.wait_run_finished("victims", sched) == "success", sched.log()
    ti = home.ti("victims", "victim")
    assert (str(ti.state), ti.try_number) == ("success", 2)
    assert ti.pid != task_pid
    assert "victim: a later try, done at once" in home.log_text("victims", "victim", 2)
    assert home.xcoms("victims") == {("victim", "return_value"): "second"}
    assert home.history("victims") == {"victim": [(1, "failed"), (2, "success")]}


# --- 3. execution_timeout ------------------------------------------------------------------------------

TIMEOUT_DAG = """
from datetime import datetime, timedelta

from scheduler import DAG, BashOperator

MARKERS = @MARKERS@

with DAG("slow", schedule=None, start_date=datetime(2024, 1, 1)):
    BashOperator(
        task_id="too_slow",
        bash_command=f"echo $$ > {MARKERS}/sleep.pid.tmp && mv {MARKERS}/sleep.pid.tmp {MARKERS}/sleep.pid && "
                     "echo about to sleep && exec sleep 60",
        execution_timeout=timedelta(seconds=1),
    )
"""


def test_execution_timeout_fails_the_try_and_ends_the_command(home: Home) -> None:
    home.dag("slow.py", TIMEOUT_DAG)
    home.trigger("slow")
    sched = home.start_scheduler()
    home.wait_for("the sleep to start", lambda: home.marker_pid("sleep") is not None, START_DEADLINE_S, sched)
    sleep_pid = home.marker_pid("sleep")
    assert sleep_pid is not None
    home.wait_for("the command to become `sleep`", lambda: program(sleep_pid) == "sleep", 5.0, sched)

    state = home.wait_run_finished("slow", sched, deadline_s=1 + CLEANUP_S + 10)
    ti = home.ti("slow", "too_slow")
    assert (state, str(ti.state), ti.try_number) == ("failed", "failed", 1)
    assert not alive(sleep_pid), "the command's sleep outlived the timed-out try"
    assert ti.duration is not None and 1.0 <= ti.duration < 1 + CLEANUP_S + 5
    text = home.final_log_text("slow", "too_slow", 1)
    assert "about to sleep" in text
    assert "Timeout: the task ran longer than its execution_timeout (0:00:01)" in text
    assert "Recorded state failed for try 1" in text
    assert home.history("slow")["too_slow"] == [(1, "failed")]


# --- 4. graceful shutdown / 5. restart ----------------------------------------------------------------

NAPPER = """
import os
import time
from datetime import datetime

from scheduler import DAG, PythonOperator

MARKERS = @MARKERS@


def nap(seconds):
    with open(os.path.join(MARKERS, "nap.pid.tmp"), "w") as fh:
        fh.write(str(os.getpid()))
    os.rename(os.path.join(MARKERS, "nap.pid.tmp"), os.path.join(MARKERS, "nap.pid"))
    print("nap: falling asleep", flush=True)
    time.sleep(seconds)
    print("nap: slept well")
    return "rested"


with DAG("napper", schedule=None, start_date=datetime(2024, 1, 1)):
    PythonOperator(task_id="nap", python_callable=nap, op_args=[@SECONDS@]) >> PythonOperator(
        task_id="after", python_callable=lambda: "after nap")
"""


def test_sigterm_waits_for_the_running_try_then_exits_0(home: Home) -> None:
    home.dag("napper.py", NAPPER.replace("@SECONDS@", "2"))
    home.trigger("napper")
    sched = home.start_scheduler(scheduler__graceful_shutdown_timeout="30")
    _wait_caught(home, "napper", "nap", sched)

    sched.remember_children()
    sched.proc.send_signal(signal.SIGTERM)
    try:
        rc = sched.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the scheduler did not exit within 30 s of SIGTERM:\n{sched.tail()}")
    exited_at = datetime.now(UTC)

    assert rc == 0, sched.log()
    ti = home.ti("napper", "nap")
    assert (str(ti.state), ti.try_number) == ("success", 1), sched.log()
    assert ti.end_date is not None and ti.end_date <= exited_at  # it waited for the try
    assert home.history("napper")["nap"] == [(1, "success")]
    assert home.xcoms("napper")[("nap", "return_value")] == "rested"
    assert "nap: slept well" in home.log_text("napper", "nap", 1)
    log = sched.log()
    assert "waiting up to 30 s for 1 running task tries to finish" in log
    assert "scheduler stopped (received SIGTERM)" in log
    assert home.state("napper", "after") in ("none", "scheduled")  # nothing new started after SIGTERM


def test_scheduler_killed_mid_try_then_restarted_finishes_without_duplicates(home: Home) -> None:
    home.dag("napper.py", NAPPER.replace("@SECONDS@", "3"))
    home.trigger("napper")
    first = home.start_scheduler()
    task_pid, supervisor_pid = _wait_caught(home, "napper", "nap", first)

    assert first.signal(signal.SIGKILL) == -signal.SIGKILL
    killed_at = datetime.now(UTC)
    assert alive(supervisor_pid) and alive(task_pid), "the try did not outlive its scheduler"
    assert home.state("napper", "nap") == "running"

    second = home.start_scheduler()
    state = home.wait_run_finished("napper", second)
    assert state == "success", second.log()
    tis = home.tis("napper")
    assert {t: (str(ti.state), ti.try_number) for t, ti in tis.items()} == {
        "nap": ("success", 1),
        "after": ("success", 1),
    }
    assert (
        tis["nap"].pid == supervisor_pid
        and tis["nap"].end_date is not None
        and tis["nap"].end_date > killed_at
    )
    assert home.history("napper") == {"nap": [(1, "success")], "after": [(1, "success")]}
    assert sorted(p.name for p in home.log_path("napper", "nap", 1).parent.iterdir()) == ["attempt=1.log"]
    text = home.final_log_text("napper", "nap", 1)
    assert (
        text.count("Starting attempt") == 1
        and "nap: slept well" in text
        and "Recorded state success for try 1" in text
    )
    assert "ended without recording its state" not in second.log()
    with session_scope(home.engine, readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2
        assert session.scalar(select(func.count()).select_from(DagRun)) == 1


# --- 6. many tasks under core.parallelism ------------------------------------------------------------------

FANOUT = """
import time
from datetime import datetime

from scheduler import DAG, PythonOperator


def work(i):
    time.sleep(0.3)
    print(f"work {i} done")
    return i


with DAG("fanout", schedule=None, start_date=datetime(2024, 1, 1), max_active_tasks=64):
    join = PythonOperator(task_id="join", python_callable=lambda: "joined")
    for i in range(50):
        PythonOperator(task_id=f"w{i:02d}", python_callable=work, op_args=[i]) >> join
"""

PARALLELISM = 8


def test_fifty_tasks_and_a_join_never_exceed_core_parallelism(home: Home) -> None:
    home.dag("fanout.py", FANOUT)
    home.trigger("fanout")
    sched = home.start_scheduler(core__parallelism=str(PARALLELISM))

    samples: list[tuple[int, int]] = []  # (running, queued + running)
    deadline = time.monotonic() + RUN_DEADLINE_S

    def done() -> bool:
        with session_scope(home.engine, readonly=True) as session:
            by_state = {
                str(state): n
                for state, n in session.execute(
                    select(TaskInstance.state, func.count())
                    .where(TaskInstance.dag_id == "fanout")
                    .group_by(TaskInstance.state)
                ).all()
            }
            run = session.scalar(select(DagRun.state).where(DagRun.dag_id == "fanout"))
        running = by_state.get("running", 0)
        samples.append((running, running + by_state.get("queued", 0)))
        return str(run) in ("success", "failed")

    while not done():
        if sched.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the fan-out did not finish; states {home.states_safe()}\n{sched.tail()}")
        time.sleep(POLL_S)  # the sampling interval

    states = home.states("fanout")
    assert len(states) == 51 and set(states.values()) == {"success"}
    assert home.run_state("fanout") == "success"
    assert {ti.try_number for ti in home.tis("fanout").values()} == {1}
    max_running = max(r for r, _ in samples)
    max_active = max(a for _, a in samples)
    assert max_running <= PARALLELISM, f"{max_running} tries running at once"
    assert max_active <= PARALLELISM, f"{max_active} tries queued or running at once"
    assert max_running >= PARALLELISM // 2, (
        f"parallelism not used: at most {max_running} running ({len(samples)} samples)"
    )
    xcoms = home.xcoms("fanout")
    assert xcoms[("join", "return_value")] == "joined"
    assert {xcoms[(f"w{i:02d}", "return_value")] for i in range(50)} == set(range(50))
    assert "work 7 done" in home.log_text("fanout", "w07", 1)
