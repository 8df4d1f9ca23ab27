"""Short end-to-end scenarios of the task side: ``Scheduler.run_once(now)`` with an InlineExecutor.

Each scenario writes a DAG file, triggers a run and steps the loop: one ``run_once`` at
``now`` decides and queues what is ready, and the InlineExecutor runs those tries for
real (the task runner in a forked child) before ``run_once`` returns, so the next
iteration sees their outcomes. :meth:`Env.step` repeats ``run_once(now)`` until
nothing changes. The runner stamps real time (end dates, next_retry_at), so scenarios
that wait for a retry or a reschedule use ``now`` = the real clock plus an offset.
Both database backends run every scenario (``db_engine``).
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from scheduler.clock import utcnow
from scheduler.config import load_settings
from scheduler.db import store, ti_ops
from scheduler.db.engine import session_scope
from scheduler.db.models import DagRun, Pool, TaskInstance, TaskReschedule, XCom
from scheduler.executors.inline import InlineExecutor
from scheduler.loop import Scheduler
from scheduler.serialization import SerializedDAG
from scheduler.states import DagRunState, DagRunType
from scheduler.task_logs import log_path
from scheduler.workloads import CallbackWorkload, TaskWorkload

DAY1 = datetime(2024, 1, 1, tzinfo=UTC)
DAG_ID = "scn"
RUN = "r1"
#: The most iterations one step may take before the scenario is declared stuck.
MAX_ITERATIONS = 40

HEADER = '''\
import os, time
from datetime import datetime, timedelta
from scheduler import (DAG, BashOperator, BranchPythonOperator, EmptyOperator, PythonOperator, PythonSensor,
                       ShortCircuitOperator, TaskFailedNoRetry, TaskSkipped, task)
MARKERS = {markers!r}


def marker(name, text=""):
    with open(os.path.join(MARKERS, name), "a") as fh:
        fh.write(str(text) + "\\n")


def count(name):
    marker(name, "x")
    with open(os.path.join(MARKERS, name)) as fh:
        return len(fh.read().split())


def exists(name):
    return os.path.exists(os.path.join(MARKERS, name))


def ok():
    return "ok"


def boom():
    raise ValueError("boom")


def skip():
    raise TaskSkipped("not today")


'''


class Env:
    """A DAG folder, a scheduler with an InlineExecutor, and readers for the outcome."""

    def __init__(self, tmp: Path, engine: Engine, url: str) -> None:
        self.tmp = tmp
        self.engine = engine
        self.url = url
        self.folder = tmp / "dags"
        self.markers = tmp / "markers"
        self.folder.mkdir()
        self.markers.mkdir()
        #: How many workloads each run_once of the last step queued (its final, idle iteration left out).
        self.per_iteration: list[int] = []
        self._scheduler: Scheduler | None = None
        self.reconfigure()

    @property
    def scheduler(self) -> Scheduler:
        assert self._scheduler is not None
        return self._scheduler

    def reconfigure(self, **extra: str) -> None:
        """A new scheduler and executor with these settings (``core__parallelism="2"``)."""
        self.close()
        env = {
            "UPDRAFT_HOME": str(self.tmp / "home"),
            "UPDRAFT__DATABASE__SQL_ALCHEMY_CONN": self.url,
            "UPDRAFT__CORE__DAGS_FOLDER": str(self.folder),
            "UPDRAFT__CORE__PARSING_PROCESSES": "1",
            "UPDRAFT__CORE__DAGBAG_IMPORT_TIMEOUT": "20",
            "UPDRAFT__CORE__KILLED_TASK_CLEANUP_TIME": "2",
            "UPDRAFT__LOGGING__BASE_LOG_FOLDER": str(self.tmp / "logs"),
        }
        env.update({f"UPDRAFT__{k.upper()}": v for k, v in extra.items()})
        self.settings = load_settings(env, cwd=self.tmp)
        self.executor = InlineExecutor(self.settings)
        self._scheduler = Scheduler(self.engine, self.settings, executor=self.executor)

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()

    # --- setting up ---------------------------------------------------------------------------------

    def dag(self, body: str, *, dag_id: str = DAG_ID, prelude: str = "", **dag_kwargs: Any) -> None:
        """Write a DAG file (``body`` runs inside ``with DAG(dag_id, **dag_kwargs) as dag:``, the values
        being Python source; ``prelude`` before it), parse it and unpause it."""
        kwargs = {"schedule": "None", "start_date": "datetime(2024, 1, 1)", **{k: str(v) for k, v in dag_kwargs.items()}}
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        text = (
            HEADER.format(markers=str(self.markers))
            + textwrap.dedent(prelude).strip() + "\n\n"
            + f"with DAG({dag_id!r}, {args}) as dag:\n"
            + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")
        )
        path = self.folder / f"{dag_id}.py"
        path.write_text(text)
        self.scheduler.sync_dags(utcnow())
        with session_scope(self.engine) as session:
            assert store.get_dag(session, dag_id) is not None, f"DAG {dag_id} did not parse"
            store.set_paused(session, dag_id, False)

    def trigger(self, run_id: str = RUN, *, dag_id: str = DAG_ID, logical_date: datetime = DAY1) -> None:
        with session_scope(self.engine) as session:
            store.create_dag_run(
                session, dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL, logical_date=logical_date,
                data_interval=None, conf={}, state=DagRunState.QUEUED, run_after=logical_date, now=utcnow(),
                external_trigger=True,
            )

    # --- driving ------------------------------------------------------------------------------------

    def _fingerprint(self) -> tuple[Any, ...]:
        with session_scope(self.engine, readonly=True) as session:
            tis = sorted(session.execute(select(TaskInstance.id, TaskInstance.state, TaskInstance.try_number)).all())
            runs = sorted(session.execute(select(DagRun.id, DagRun.state)).all())
        return (tuple(map(tuple, tis)), tuple(map(tuple, runs)), len(self.executor.history))

    def step(self, now: datetime | None = None) -> None:
        """run_once(now) until an iteration changes nothing (now: the real clock)."""
        now = now or utcnow()
        self.per_iteration = []
        before = self._fingerprint()
        for _ in range(MAX_ITERATIONS):
            queued = len(self.executor.history)
            self.scheduler.run_once(now)
            self.per_iteration.append(len(self.executor.history) - queued)
            after = self._fingerprint()
            if after == before:
                self.per_iteration.pop()
                return
            before = after
        raise AssertionError(f"still changing after {MAX_ITERATIONS} iterations")

    # --- reading ------------------------------------------------------------------------------------

    def states(self, run_id: str = RUN, dag_id: str = DAG_ID) -> dict[str, str]:
        with session_scope(self.engine, readonly=True) as session:
            rows = session.execute(
                select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
                )
            )
            return {task_id: str(state) for task_id, state in rows}

    def ti(self, task_id: str, run_id: str = RUN, dag_id: str = DAG_ID) -> TaskInstance:
        with session_scope(self.engine, readonly=True) as session:
            row = session.scalar(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
                )
            )
            assert row is not None, f"no task instance {task_id} in {run_id}"
            return row

    def run_state(self, run_id: str = RUN, dag_id: str = DAG_ID) -> str:
        with session_scope(self.engine, readonly=True) as session:
            state = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
            return str(state)

    def xcom(self, task_id: str, key: str = "return_value", run_id: str = RUN, dag_id: str = DAG_ID) -> Any:
        with session_scope(self.engine, readonly=True) as session:
            return session.scalar(
                select(XCom.value).where(
                    XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id, XCom.key == key
                )
            )

    def log_path(self, task_id: str, try_number: int, run_id: str = RUN, dag_id: str = DAG_ID) -> Path:
        return log_path(self.settings.log_folder, dag_id, run_id, task_id, -1, try_number)

    def log_text(self, task_id: str, try_number: int, run_id: str = RUN, dag_id: str = DAG_ID) -> str:
        return self.log_path(task_id, try_number, run_id, dag_id).read_text()

    def marker(self, name: str) -> str | None:
        """What the DAG's ``marker(name, text)`` calls wrote (one line each); None: never called."""
        path = self.markers / name
        return path.read_text() if path.exists() else None

    def task_order(self) -> list[str]:
        """The task ids of the task workloads queued so far, in order."""
        return [w.task_id for w in self.executor.history if isinstance(w, TaskWorkload)]

    def callbacks(self) -> list[str]:
        return [w.callback for w in self.executor.history if isinstance(w, CallbackWorkload)]

    def structure(self, dag_id: str = DAG_ID) -> dict[str, ti_ops.TaskShape]:
        with session_scope(self.engine, readonly=True) as session:
            data = store.get_serialized_dag(session, dag_id)
        assert data is not None
        return ti_ops.structure_from_serialized(SerializedDAG.from_dict(data))


@pytest.fixture
def env(tmp_path: Path, db_engine: Engine, db_url: str) -> Iterator[Env]:
    e = Env(tmp_path, db_engine, db_url)
    try:
        yield e
    finally:
        e.close()


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


# --- trigger rules ---------------------------------------------------------------------------------

#: The upstream mixes each rule is judged on: s success, f failed, k skipped, u upstream_failed.
MIXES = ("s", "f", "k", "u", "sf", "sk", "fk", "sfk")
#: Airflow's outcome of each rule for each mix (in MIXES order): R runs, K skipped, U upstream_failed.
TRUTH = {
    "all_success": "RUKUUKUU",
    "all_failed": "KRKRKKKK",
    "all_done": "RRRRRRRR",
    "all_done_min_one_success": "RUKURKKK",
    "all_skipped": "KKRKKKKK",
    "one_success": "RUKURRUR",
    "one_failed": "KRKRRKRR",
    "one_done": "RRKKRRRR",
    "none_failed": "RURUURUU",
    "none_failed_min_one_success": "RUKUURUU",
    "none_skipped": "RRKRRKKK",
    "always": "RRRRRRRR",
}
#: For each rule, a mix on which a real task with that rule runs.
DECIDING = {
    "all_success": "s", "all_failed": "fu", "all_done": "sfk", "all_done_min_one_success": "sf",
    "all_skipped": "k", "one_success": "sfk", "one_failed": "sf", "one_done": "fk", "none_failed": "sk",
    "none_failed_min_one_success": "sk", "none_skipped": "sfu", "always": "fu",
}
OUTCOME = {"R": "success", "K": "skipped", "U": "upstream_failed"}


@pytest.mark.parametrize("rule", sorted(TRUTH))
def test_trigger_rule(env: Env, rule: str) -> None:
    # Real upstreams: s succeeds, f raises, k raises TaskSkipped, u is upstream_failed behind f.
    # Each mix feeds an EmptyOperator judge (decided by the scheduler alone); 'real' runs for real.
    env.dag(f"""
        up = dict(s=PythonOperator(task_id='s', python_callable=ok), f=PythonOperator(task_id='f', python_callable=boom),
                  k=PythonOperator(task_id='k', python_callable=skip), u=EmptyOperator(task_id='u'))
        up['f'] >> up['u']
        for mix in {MIXES!r}:
            judge = EmptyOperator(task_id='judge_' + mix, trigger_rule={rule!r})
            [up[c] for c in mix] >> judge
        real = PythonOperator(task_id='real', trigger_rule={rule!r}, python_callable=lambda: marker('real', 'ran'))
        [up[c] for c in {DECIDING[rule]!r}] >> real
    """)
    env.trigger()
    env.step()
    states = env.states()
    assert {k: states[k] for k in "sfku"} == {"s": "success", "f": "failed", "k": "skipped", "u": "upstream_failed"}
    assert {m: states[f"judge_{m}"] for m in MIXES} == {m: OUTCOME[c] for m, c in zip(MIXES, TRUTH[rule], strict=True)}
    assert states["real"] == "success" and env.marker("real") == "ran\n"
    assert "real" in env.task_order() and not any(t.startswith("judge_") for t in env.task_order())


def test_one_success_does_not_wait_for_an_upstream_still_retrying(env: Env) -> None:
    env.dag("""
        a = PythonOperator(task_id='a', python_callable=ok)
        b = PythonOperator(task_id='b', python_callable=boom, retries=1, retry_delay=timedelta(hours=1))
        [a, b] >> PythonOperator(task_id='c', trigger_rule='one_success', python_callable=ok)
    """)
    env.trigger()
    env.step()
    assert env.states() == {"a": "success", "b": "up_for_retry", "c": "success"}
    assert env.run_state() == "running"


# --- branching, short-circuit, skips -----------------------------------------------------------------


def test_branch_python_operator_follows_one_path(env: Env) -> None:
    env.dag("""
        pick = BranchPythonOperator(task_id='pick', python_callable=lambda: 'left')
        left = PythonOperator(task_id='left', python_callable=ok)
        right = PythonOperator(task_id='right', python_callable=ok)
        join = PythonOperator(task_id='join', python_callable=ok, trigger_rule='none_failed_min_one_success')
        pick >> [left, right] >> join
    """)
    env.trigger()
    env.step()
    assert env.states() == {"pick": "success", "left": "success", "right": "skipped", "join": "success"}
    assert env.task_order() == ["pick", "left", "join"]
    assert env.xcom("pick") == "left"
    assert env.run_state() == "success"


def test_branch_does_not_skip_a_direct_downstream_task_that_follows_the_chosen_branch(env: Env) -> None:
    # Airflow's "empty branch" rule: 'join' is directly downstream of 'pick' but also downstream of the
    # followed 'left', so it is not skipped; 'right' is.
    env.dag("""
        pick = BranchPythonOperator(task_id='pick', python_callable=lambda: 'left')
        left = PythonOperator(task_id='left', python_callable=ok)
        right = PythonOperator(task_id='right', python_callable=ok)
        join = PythonOperator(task_id='join', python_callable=ok, trigger_rule='none_failed_min_one_success')
        pick >> [left, right, join]
        left >> join
        right >> join
    """)
    env.trigger()
    env.step()
    assert env.states() == {"pick": "success", "left": "success", "right": "skipped", "join": "success"}
    assert env.run_state() == "success"


def test_branch_may_follow_a_task_that_is_not_directly_downstream(env: Env) -> None:
    # Airflow accepts any task id of the DAG (the branch does not fail): each direct downstream task that
    # is not the followed one nor downstream of it is skipped, here 'mid' too, and 'deep' behind it.
    env.dag("""
        pick = BranchPythonOperator(task_id='pick', python_callable=lambda: 'deep')
        pick >> PythonOperator(task_id='mid', python_callable=ok) >> PythonOperator(task_id='deep', python_callable=ok)
        pick >> PythonOperator(task_id='other', python_callable=ok)
    """)
    env.trigger()
    env.step()
    assert env.states() == {"pick": "success", "mid": "skipped", "deep": "skipped", "other": "skipped"}
    assert env.task_order() == ["pick"]


def test_task_branch_decorator_follows_one_path(env: Env) -> None:
    env.dag("""
        @task.branch
        def pick():
            return ['b']

        @task
        def a(): return 'a'

        @task
        def b(): return 'b'

        @task(trigger_rule='none_failed_min_one_success')
        def join(): return 'joined'

        pick() >> [a(), b()] >> join()
    """)
    env.trigger()
    env.step()
    assert env.states() == {"pick": "success", "a": "skipped", "b": "success", "join": "success"}
    assert env.xcom("join") == "joined" and env.xcom("a") is None


def test_short_circuit_false_skips_everything_downstream(env: Env) -> None:
    env.dag("""
        gate = ShortCircuitOperator(task_id='gate', python_callable=lambda: False)
        a = PythonOperator(task_id='a', python_callable=ok)
        b = PythonOperator(task_id='b', python_callable=ok, trigger_rule='all_done')
        gate >> a >> b
    """)
    env.trigger()
    env.step()
    assert env.states() == {"gate": "success", "a": "skipped", "b": "skipped"}
    assert env.task_order() == ["gate"]
    assert env.run_state() == "success"


def test_short_circuit_respecting_trigger_rules_skips_only_direct_downstream(env: Env) -> None:
    env.dag("""
        gate = ShortCircuitOperator(task_id='gate', python_callable=lambda: 0, ignore_downstream_trigger_rules=False)
        a = PythonOperator(task_id='a', python_callable=ok)
        b = PythonOperator(task_id='b', python_callable=ok, trigger_rule='all_done')
        gate >> a >> b
    """)
    env.trigger()
    env.step()
    assert env.states() == {"gate": "success", "a": "skipped", "b": "success"}


def test_short_circuit_true_lets_downstream_run(env: Env) -> None:
    env.dag("""
        ShortCircuitOperator(task_id='gate', python_callable=lambda: 'yes') >> PythonOperator(task_id='a', python_callable=ok)
    """)
    env.trigger()
    env.step()
    assert env.states() == {"gate": "success", "a": "success"}


def test_bash_exit_99_skips_and_exit_1_fails(env: Env) -> None:
    env.dag("""
        skipper = BashOperator(task_id='skipper', bash_command='echo leaving; exit 99')
        failer = BashOperator(task_id='failer', bash_command='exit 1')
        skipper >> PythonOperator(task_id='after_skip', python_callable=ok)
        failer >> PythonOperator(task_id='after_fail', python_callable=ok)
    """)
    env.trigger()
    env.step()
    assert env.states() == {
        "skipper": "skipped", "failer": "failed", "after_skip": "skipped", "after_fail": "upstream_failed",
    }
    assert "leaving" in env.log_text("skipper", 1)
    assert env.run_state() == "failed"


def test_task_skipped_exception_skips_and_cascades(env: Env) -> None:
    env.dag("""
        PythonOperator(task_id='a', python_callable=skip) >> EmptyOperator(task_id='b') >> PythonOperator(task_id='c', python_callable=ok)
    """)
    env.trigger()
    env.step()
    assert env.states() == {"a": "skipped", "b": "skipped", "c": "skipped"}
    assert env.task_order() == ["a"]
    assert env.run_state() == "success"


# --- retries, backoff, timeouts ----------------------------------------------------------------------


def test_retry_waits_for_its_delay_then_runs_try_2(env: Env) -> None:
    env.dag("""
        PythonOperator(task_id='a', python_callable=lambda: count('a') >= 2 or boom(), retries=2, retry_delay=timedelta(hours=1))
    """)
    env.trigger()
    t0 = utcnow()
    env.step(t0)
    ti = env.ti("a")
    assert (ti.state, ti.try_number) == ("up_for_retry", 1)
    assert ti.end_date is not None and ti.next_retry_at == ti.end_date + hours(1)
    assert "ValueError: boom" in env.log_text("a", 1)
    assert env.scheduler.run_once(t0) == pytest.approx((ti.next_retry_at - t0).total_seconds(), abs=1e-3)

    env.step(ti.next_retry_at - timedelta(seconds=1))  # not yet due
    assert (env.ti("a").state, env.task_order()) == ("up_for_retry", ["a"])

    env.step(ti.next_retry_at)
    ti = env.ti("a")
    assert (ti.state, ti.try_number, ti.next_retry_at) == ("success", 2, None)
    assert env.log_path("a", 2).exists() and "Starting attempt 2 of 3" in env.log_text("a", 2)
    assert env.run_state() == "success"


def test_exponential_backoff_delays_grow(env: Env) -> None:
    from scheduler.retry_policy import RetryPolicy, retry_delay

    env.dag("""
        PythonOperator(task_id='a', python_callable=boom, retries=3, retry_delay=timedelta(seconds=10),
                       retry_exponential_backoff=True)
    """)
    env.trigger()
    env.step()
    delays = []
    for try_number in (1, 2, 3):
        ti = env.ti("a")
        assert (ti.state, ti.try_number) == ("up_for_retry", try_number)
        assert ti.next_retry_at is not None and ti.end_date is not None
        delays.append(ti.next_retry_at - ti.end_date)
        env.step(ti.next_retry_at)
    assert (env.ti("a").state, env.ti("a").try_number) == ("failed", 4)
    policy = RetryPolicy(timedelta(seconds=10), exponential=True)
    assert delays == [
        retry_delay(policy, dag_id=DAG_ID, task_id="a", logical_date=DAY1, run_id=RUN, try_number=n) for n in (1, 2, 3)
    ]
    assert timedelta(seconds=10) <= delays[0] < delays[1] < delays[2] < timedelta(seconds=80)
    # Airflow's jitter: the SHA-1 of "dag_id#task_id#<str(logical date)>#try_number" (a datetime as str()
    # gives it, with a space, not isoformat's 'T'), modulo the base.
    expected = []
    for n, base in ((1, 10), (2, 20), (3, 40)):
        digest = hashlib.sha1(f"{DAG_ID}#a#2024-01-01 00:00:00+00:00#{n}".encode()).hexdigest()
        expected.append(timedelta(seconds=base + int(digest, 16) % base))
    assert delays == expected


def test_task_failed_no_retry_fails_at_once(env: Env) -> None:
    env.dag("""
        def fatal():
            raise TaskFailedNoRetry('no point')
        PythonOperator(task_id='a', python_callable=fatal, retries=3, on_retry_callback=lambda c: marker('retry'),
                       on_failure_callback=lambda c: marker('failure', c['exception']))
    """)
    env.trigger()
    env.step()
    ti = env.ti("a")
    assert (ti.state, ti.try_number, ti.next_retry_at) == ("failed", 1, None)
    assert env.marker("failure") == "no point\n" and env.marker("retry") is None
    assert env.run_state() == "failed"


def test_execution_timeout_fails_the_try_and_retries_apply(env: Env) -> None:  # ~1 s: two tries time out
    env.dag("""
        PythonOperator(task_id='slow', python_callable=lambda: time.sleep(30), execution_timeout=timedelta(seconds=0.5),
                       retries=1, retry_delay=timedelta(seconds=0), on_retry_callback=cb('retry'),
                       on_failure_callback=cb('failure'))
    """, prelude=CALLBACKS)
    env.trigger()
    t0 = utcnow()
    env.scheduler.run_once(t0)  # starts the run
    env.scheduler.run_once(t0)  # try 1: times out
    assert (env.ti("slow").state, env.ti("slow").try_number) == ("up_for_retry", 1)
    env.step(utcnow())  # try 2: times out too, no retries left
    ti = env.ti("slow")
    assert (ti.state, ti.try_number) == ("failed", 2)
    assert ti.duration is not None and ti.duration < 10
    assert "execution_timeout" in env.log_text("slow", 1) and "execution_timeout" in env.log_text("slow", 2)
    assert (env.marker("retry"), env.marker("failure")) == ("slow try 1\n", "slow try 2\n")


# --- depends_on_past -------------------------------------------------------------------------------------


def test_depends_on_past_waits_for_the_previous_run(env: Env) -> None:
    env.dag("""
        PythonOperator(task_id='t', depends_on_past=True,
                       python_callable=lambda run_id: boom() if run_id == 'r1' else 'fine')
    """)
    env.trigger("r1", logical_date=DAY1)
    env.trigger("r2", logical_date=DAY1 + timedelta(days=1))
    env.step()
    assert (env.states("r1"), env.run_state("r1")) == ({"t": "failed"}, "failed")
    assert (env.states("r2"), env.run_state("r2")) == ({"t": "none"}, "running")

    with session_scope(env.engine) as session:
        ti_ops.mark_task_instance(session, (DAG_ID, "r1", "t"), "success", now=utcnow())
    env.step()
    assert (env.states("r2"), env.run_state("r2")) == ({"t": "success"}, "success")
    assert env.task_order() == ["t", "t"]


def test_wait_for_downstream_waits_for_the_previous_runs_direct_downstream(env: Env) -> None:
    env.dag("""
        t = PythonOperator(task_id='t', wait_for_downstream=True, python_callable=ok)
        t >> PythonOperator(task_id='d', python_callable=lambda run_id: boom() if run_id == 'r1' else 'fine')
    """)
    env.trigger("r1", logical_date=DAY1)
    env.trigger("r2", logical_date=DAY1 + timedelta(days=1))
    env.step()
    assert (env.states("r1"), env.run_state("r1")) == ({"t": "success", "d": "failed"}, "failed")
    assert (env.states("r2"), env.run_state("r2")) == ({"t": "none", "d": "none"}, "running")

    with session_scope(env.engine) as session:
        ti_ops.mark_task_instance(session, (DAG_ID, "r1", "d"), "success", now=utcnow())
    env.step()
    assert (env.states("r2"), env.run_state("r2")) == ({"t": "success", "d": "success"}, "success")


# --- priority, pools, max_active_tasks, parallelism ------------------------------------------------------


def test_priority_weight_orders_queueing(env: Env) -> None:
    env.dag("""
        for name, weight in [('low', 1), ('high', 5), ('mid', 3)]:
            PythonOperator(task_id=name, python_callable=ok, priority_weight=weight)
    """)
    env.trigger()
    env.step()
    assert env.task_order() == ["high", "mid", "low"]
    assert env.per_iteration[0] == 3


def test_a_stopping_scheduler_decides_and_queues_nothing_more_and_the_next_one_carries_on(env: Env) -> None:
    env.dag("PythonOperator(task_id='a', python_callable=ok) >> PythonOperator(task_id='b', python_callable=ok)")
    env.trigger("r1")
    env.step()
    assert env.states("r1") == {"a": "success", "b": "success"}
    env.trigger("r2")
    env.scheduler.stop("test")
    env.scheduler.run_once(utcnow())  # the run is started (run side) but nothing is decided or queued
    assert env.states("r2") == {}
    assert env.task_order() == ["a", "b"]
    env.reconfigure()  # the next scheduler
    env.step()
    assert env.states("r2") == {"a": "success", "b": "success"}
    assert env.run_state("r2") == "success"


def test_default_weight_rule_adds_the_downstream_weights(env: Env) -> None:
    env.dag("""
        PythonOperator(task_id='x', python_callable=ok) >> EmptyOperator(task_id='y') >> EmptyOperator(task_id='z')
        PythonOperator(task_id='w', python_callable=ok, priority_weight=2)
        PythonOperator(task_id='v', python_callable=ok, priority_weight=2, weight_rule='absolute')
    """)
    env.trigger()
    env.step()
    assert {t: env.ti(t).priority_weight for t in "xyzwv"} == {"x": 3, "y": 2, "z": 1, "w": 2, "v": 2}
    assert env.task_order()[0] == "x"


def add_pool(env: Env, name: str, slots: int) -> None:
    with session_scope(env.engine) as session:
        session.execute(insert(Pool).values(pool=name, slots=slots, description=None, include_deferred=False))


def test_pool_of_one_slot_queues_one_per_iteration_by_priority(env: Env) -> None:
    add_pool(env, "one", 1)
    env.dag("""
        for name, weight in [('a', 1), ('b', 3), ('c', 2)]:
            PythonOperator(task_id=name, python_callable=ok, pool='one', priority_weight=weight)
        PythonOperator(task_id='free', python_callable=ok, priority_weight=0)
    """)
    env.trigger()
    env.step()
    assert env.task_order() == ["b", "free", "c", "a"]
    assert env.per_iteration[:3] == [2, 1, 1]
    assert env.run_state() == "success"


def test_task_needing_more_slots_than_its_pool_has_stays_scheduled(env: Env) -> None:
    add_pool(env, "small", 1)
    env.dag("""
        PythonOperator(task_id='big', python_callable=ok, pool='small', pool_slots=2)
        PythonOperator(task_id='nopool', python_callable=ok, pool='no_such_pool')
        PythonOperator(task_id='fits', python_callable=ok, pool='small')
    """)
    env.trigger()
    env.step()
    assert env.states() == {"big": "scheduled", "nopool": "scheduled", "fits": "success"}
    assert env.task_order() == ["fits"]
    assert env.run_state() == "running"


def test_a_full_pool_does_not_starve_ready_tasks_of_lower_priority(env: Env) -> None:
    add_pool(env, "closed", 0)
    env.reconfigure(core__parallelism="1")  # looks at the first 1 * 4 + 64 = 68 candidates
    env.dag("""
        for i in range(70):
            PythonOperator(task_id=f'waiting_{i}', python_callable=ok, pool='closed', priority_weight=10)
        PythonOperator(task_id='free', python_callable=ok)
    """)
    env.trigger()
    env.step()
    assert env.states()["free"] == "success"


def test_max_active_tasks_queues_one_per_iteration(env: Env) -> None:
    env.dag("""
        for name in 'abc':
            PythonOperator(task_id=name, python_callable=ok)
    """, max_active_tasks=1)
    env.trigger()
    env.step()
    assert env.per_iteration[:3] == [1, 1, 1] and sorted(env.task_order()) == ["a", "b", "c"]
    assert env.run_state() == "success"


def test_max_active_tis_per_dag_bounds_a_task_across_its_runs(env: Env) -> None:
    env.dag("""
        PythonOperator(task_id='t', python_callable=ok, max_active_tis_per_dag=1)
        PythonOperator(task_id='u', python_callable=ok)
    """)
    for n, run_id in enumerate(("r1", "r2", "r3")):
        env.trigger(run_id, logical_date=DAY1 + timedelta(days=n))
    env.step()
    # the first iteration: t of one run and u of all three; then t of each other run, one at a time
    assert env.per_iteration[:3] == [4, 1, 1]
    assert env.task_order().count("t") == 3
    assert {env.run_state(r) for r in ("r1", "r2", "r3")} == {"success"}


def test_max_active_tis_per_dagrun_bounds_a_mapped_tasks_instances_in_each_run(env: Env) -> None:
    env.dag("""
        PythonOperator.partial(task_id='m', python_callable=lambda x: x, max_active_tis_per_dagrun=2).expand(
            op_args=[[1], [2], [3], [4], [5]])
    """)
    env.trigger("r1")
    env.trigger("r2", logical_date=DAY1 + timedelta(days=1))
    env.step()
    assert [n for n in env.per_iteration if n][:3] == [4, 4, 2]  # two of each run's five at a time (after expanding)
    assert {env.run_state("r1"), env.run_state("r2")} == {"success"}


def test_a_task_at_its_limit_does_not_hide_ready_tasks_of_lower_priority(env: Env) -> None:
    # Two free slots make a page of candidates 72 long: the 80 instances of 'busy' (high priority, one at a
    # time) fill it, so 'low' gets the other slot only because 'busy' is left out of the next page.
    env.reconfigure(core__parallelism="2")
    env.dag("""
        PythonOperator.partial(task_id='busy', python_callable=lambda x: x, priority_weight=100,
                               max_active_tis_per_dag=1).expand(op_args=[[i] for i in range(80)])
        (PythonOperator(task_id='gate1', python_callable=ok) >> PythonOperator(task_id='gate2', python_callable=ok)
         >> PythonOperator(task_id='low', python_callable=ok, priority_weight=1))
    """)
    env.trigger()
    for _ in range(8):
        env.scheduler.run_once(utcnow())
    order = env.task_order()
    assert "low" in order and order.index("low") > order.index("busy"), order


def test_core_parallelism_bounds_the_tries_queued_per_iteration(env: Env) -> None:
    env.reconfigure(core__parallelism="2")
    env.dag("""
        for name, weight in [('a', 3), ('b', 2), ('c', 1)]:
            PythonOperator(task_id=name, python_callable=ok, priority_weight=weight)
    """)
    env.trigger()
    env.step()
    assert env.per_iteration[:2] == [2, 1] and env.task_order() == ["a", "b", "c"]


# --- callbacks -------------------------------------------------------------------------------------------


CALLBACKS = """
def dag_ok(context):
    marker('dag_success', context['dag_run'].run_id + ' ' + context['reason'])


def dag_failed(context):
    marker('dag_failure', context['dag_run'].run_id + ' ' + context['reason'])


def cb(name):
    return lambda context: marker(name, context['ti'].task_id + ' try ' + str(context['ti'].try_number))
"""


def test_task_callbacks(env: Env) -> None:
    env.dag("""
        PythonOperator(task_id='good', python_callable=ok, on_success_callback=cb('success'))
        PythonOperator(task_id='bad', python_callable=boom, on_failure_callback=cb('failure'))
        PythonOperator(task_id='flaky', python_callable=lambda: count('flaky') >= 2 or boom(), retries=1,
                       retry_delay=timedelta(seconds=0), on_retry_callback=cb('retry'), on_success_callback=cb('success'))
        EmptyOperator(task_id='empty', on_success_callback=cb('success'))
    """, prelude=CALLBACKS)
    env.trigger()
    env.step()
    env.step()  # the retry of 'flaky' is due now
    assert env.states() == {"good": "success", "bad": "failed", "flaky": "success", "empty": "success"}
    assert sorted((env.marker("success") or "").splitlines()) == ["empty try 1", "flaky try 2", "good try 1"]
    assert env.marker("failure") == "bad try 1\n"
    assert env.marker("retry") == "flaky try 1\n"
    assert "empty" in env.task_order()  # an EmptyOperator with a success callback really runs


def test_dag_callbacks_arrive_as_callback_workloads(env: Env) -> None:
    env.dag("""
        PythonOperator(task_id='t', python_callable=lambda run_id: boom() if run_id == 'bad' else 1)
    """, prelude=CALLBACKS, on_success_callback="dag_ok", on_failure_callback="dag_failed")
    env.trigger("good")
    env.trigger("bad", logical_date=DAY1 + timedelta(days=1))
    env.step()
    assert (env.run_state("good"), env.run_state("bad")) == ("success", "failed")
    assert sorted(env.callbacks()) == ["dag_failure", "dag_success"]
    assert env.marker("dag_success") == "good success\n"
    assert env.marker("dag_failure") == "bad task_failure\n"


# --- sensors ---------------------------------------------------------------------------------------------


def test_sensor_poke_mode_succeeds_on_the_third_poke_in_one_try(env: Env) -> None:
    env.dag("""
        PythonSensor(task_id='wait', python_callable=lambda: count('pokes') >= 3, poke_interval=0.01) >> PythonOperator(task_id='after', python_callable=ok)
    """)
    env.trigger()
    env.step()
    assert env.states() == {"wait": "success", "after": "success"}
    assert env.marker("pokes") == "x\n" * 3
    assert env.ti("wait").try_number == 1 and env.task_order() == ["wait", "after"]


def test_sensor_reschedule_mode_frees_the_slot_and_pokes_again_later(env: Env) -> None:
    env.dag("""
        PythonSensor(task_id='wait', mode='reschedule', poke_interval=60, python_callable=lambda: exists('go'))
    """)
    env.trigger()
    t0 = utcnow()
    env.step(t0)
    ti = env.ti("wait")
    assert ti.state == "up_for_reschedule" and ti.try_number == 0  # a poke is not a try
    assert ti.next_retry_at is not None and ti.end_date is not None
    assert timedelta(seconds=59) <= ti.next_retry_at - ti.end_date <= timedelta(seconds=61)
    with session_scope(env.engine, readonly=True) as session:
        reschedules = session.execute(select(TaskReschedule.try_number, TaskReschedule.reschedule_date)).all()
    assert [tuple(r) for r in reschedules] == [(1, ti.next_retry_at)]

    env.step(t0 + timedelta(seconds=30))  # not due yet
    assert env.ti("wait").state == "up_for_reschedule" and len(env.task_order()) == 1

    (env.markers / "go").touch()
    env.step(ti.next_retry_at)
    ti = env.ti("wait")
    assert (ti.state, ti.try_number) == ("success", 1)
    assert [w.try_number for w in env.executor.history if isinstance(w, TaskWorkload)] == [1, 1]
    assert env.log_text("wait", 1).count("Poking callable") == 2 and not env.log_path("wait", 2).exists()
    assert env.run_state() == "success"


def test_sensor_poke_mode_timeout_fails_without_retry_or_skips_with_soft_fail(env: Env) -> None:
    env.dag("""
        PythonSensor(task_id='hard', python_callable=lambda: False, poke_interval=0.01, timeout=0.05, retries=2)
        PythonSensor(task_id='soft', python_callable=lambda: False, poke_interval=0.01, timeout=0.05, soft_fail=True)
    """)
    env.trigger()
    env.step()
    assert env.states() == {"hard": "failed", "soft": "skipped"}
    assert env.ti("hard").try_number == 1 and "Sensor has timed out" in env.log_text("hard", 1)


def test_sensor_reschedule_mode_timeout_counts_from_the_first_try_not_the_retry(env: Env) -> None:
    # Airflow measures a rescheduled sensor's timeout from the first poke of its first try (since the last
    # clear): a retry after a poke that raised does not start the timeout over. Instead of waiting out the
    # timeout, the test moves the first try's poke an hour back once that try has ended.
    env.dag("""
        PythonSensor(task_id='wait', mode='reschedule', poke_interval=0.01, timeout=1800, retries=1,
                     retry_delay=timedelta(0), python_callable=lambda: count('pokes') == 2 and boom())
    """)
    env.trigger()
    env.step(utcnow())  # try 1, poke 1: not yet
    assert env.ti("wait").state == "up_for_reschedule"
    env.step(utcnow())  # try 1, poke 2: raises
    assert (env.ti("wait").state, env.ti("wait").try_number) == ("up_for_retry", 1)
    with session_scope(env.engine) as session:
        for row in session.scalars(select(TaskReschedule)):
            row.start_date -= timedelta(hours=1)
    env.step(utcnow())  # try 2, poke 3: not yet, and 1 h since the first try's first poke > the 30 min timeout
    ti = env.ti("wait")
    assert (ti.state, ti.try_number) == ("failed", 2)
    assert env.marker("pokes") == "x\n" * 3
    assert "Sensor has timed out" in env.log_text("wait", 2)


def test_sensor_reschedule_mode_exponential_backoff_intervals_grow(env: Env) -> None:
    env.dag("""
        PythonSensor(task_id='wait', mode='reschedule', poke_interval=60, exponential_backoff=True,
                     python_callable=lambda: False)
    """)
    env.trigger()
    env.step()
    intervals = []
    for _ in range(3):
        ti = env.ti("wait")
        assert ti.state == "up_for_reschedule"
        assert ti.next_retry_at is not None and ti.end_date is not None
        intervals.append(ti.next_retry_at - ti.end_date)
        env.step(ti.next_retry_at)
    assert intervals[0] < intervals[1] < intervals[2], intervals


# --- clear and re-run -----------------------------------------------------------------------------------


def test_clear_a_failed_task_reruns_it_and_its_downstream(env: Env) -> None:
    env.dag("""
        PythonOperator(task_id='a', python_callable=lambda: count('a') >= 2 or boom()) >> PythonOperator(task_id='b', python_callable=ok)
    """)
    env.trigger()
    env.step()
    assert (env.states(), env.run_state()) == ({"a": "failed", "b": "upstream_failed"}, "failed")

    with session_scope(env.engine) as session:
        cleared = ti_ops.clear_task_instances(
            session, DAG_ID, dag_structure=env.structure(), now=utcnow(), task_regex="^a$", include_downstream=True,
        )
        assert sorted(t.task_id for t in cleared) == ["a", "b"]
    assert (env.states(), env.run_state()) == ({"a": "none", "b": "none"}, "queued")
    env.step()
    assert (env.states(), env.run_state()) == ({"a": "success", "b": "success"}, "success")
    assert (env.ti("a").try_number, env.ti("b").try_number) == (2, 1)
    assert env.log_path("a", 2).exists()


def test_a_task_a_branch_skipped_stays_skipped_when_cleared_alone(env: Env) -> None:
    # Airflow: clearing a task that a branch skipped skips it again; clearing the branch lets it decide anew.
    env.dag("""
        pick = BranchPythonOperator(task_id='pick', python_callable=lambda: 'left' if count('picks') == 1 else 'right')
        pick >> [PythonOperator(task_id='left', python_callable=ok),
                 PythonOperator(task_id='right', python_callable=lambda: marker('right_ran'))]
    """)
    env.trigger()
    env.step()
    assert env.states() == {"pick": "success", "left": "success", "right": "skipped"}

    def clear(regex: str) -> None:
        with session_scope(env.engine) as session:
            ti_ops.clear_task_instances(session, DAG_ID, dag_structure=env.structure(), now=utcnow(),
                                        task_regex=regex, include_downstream=True)

    clear("^right$")
    assert env.states()["right"] == "none"
    env.step()
    assert (env.states(), env.run_state()) == ({"pick": "success", "left": "success", "right": "skipped"}, "success")
    assert env.marker("right_ran") is None
    assert env.task_order() == ["pick", "left"]

    clear("^pick$")  # the branch runs again and now follows 'right'
    env.step()
    assert (env.states(), env.run_state()) == ({"pick": "success", "left": "skipped", "right": "success"}, "success")
    assert env.marker("right_ran") is not None


def test_a_task_a_short_circuit_skipped_stays_skipped_when_cleared_alone(env: Env) -> None:
    env.dag("""
        ShortCircuitOperator(task_id='check', python_callable=lambda: False) >> PythonOperator(
            task_id='after', python_callable=lambda: marker('after_ran'))
    """)
    env.trigger()
    env.step()
    assert env.states() == {"check": "success", "after": "skipped"}
    with session_scope(env.engine) as session:
        ti_ops.clear_task_instances(session, DAG_ID, dag_structure=env.structure(), now=utcnow(), task_regex="^after$")
    env.step()
    assert (env.states(), env.run_state()) == ({"check": "success", "after": "skipped"}, "success")
    assert env.marker("after_ran") is None


# --- XCom ----------------------------------------------------------------------------------------------


def test_xcom_through_taskflow(env: Env) -> None:
    env.dag("""
        @task
        def one():
            return 1

        @task(multiple_outputs=True)
        def pair():
            return {'x': 10, 'y': 20}

        @task
        def add(a, b, c):
            return a + b + c

        p = pair()
        add(one(), p['x'], p['y'])
    """)
    env.trigger()
    env.step()
    assert (env.xcom("one"), env.xcom("pair", "x"), env.xcom("add")) == (1, 10, 31)
    assert env.run_state() == "success"


def test_xcom_push_and_pull_in_python_operators(env: Env) -> None:
    env.dag("""
        def push(ti):
            ti.xcom_push('payload', {'n': 41})
            return 'pushed'

        def pull(ti):
            return ti.xcom_pull(task_ids='push', key='payload')['n'] + 1, ti.xcom_pull(task_ids='push')

        PythonOperator(task_id='push', python_callable=push) >> PythonOperator(task_id='pull', python_callable=pull)
    """)
    env.trigger()
    env.step()
    assert env.xcom("push", "payload") == {"n": 41}
    assert env.xcom("pull") == [42, "pushed"]


# --- run timeout, dead tries ------------------------------------------------------------------------------


def test_dagrun_timeout_fails_the_run_and_skips_the_unfinished(env: Env) -> None:
    env.dag("""
        a = PythonOperator(task_id='a', python_callable=boom, retries=1, retry_delay=timedelta(hours=1))
        a >> PythonOperator(task_id='b', python_callable=ok)
        PythonOperator(task_id='c', python_callable=ok)
    """, prelude=CALLBACKS, dagrun_timeout="timedelta(minutes=5)", on_failure_callback="dag_failed")
    env.trigger()
    t0 = utcnow()
    env.step(t0)
    assert env.states() == {"a": "up_for_retry", "b": "none", "c": "success"}
    env.step(t0 + timedelta(minutes=4))
    assert env.run_state() == "running"
    env.step(t0 + timedelta(minutes=5))
    assert env.run_state() == "failed"
    assert env.states() == {"a": "skipped", "b": "skipped", "c": "success"}
    assert env.marker("dag_failure") == f"{RUN} timed_out\n"


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def start_run_with_a_running_ti(env: Env, body: str, *, hostname: str, max_tries: int = 0) -> datetime:
    """The DAG's run started, with its task 't' 'running' try 1 under a pid that is gone."""
    env.dag(body, prelude=CALLBACKS)
    env.trigger()
    now = utcnow()
    env.scheduler.start_queued_runs(now)
    with session_scope(env.engine) as session:
        session.execute(
            insert(TaskInstance).values(
                dag_id=DAG_ID, run_id=RUN, task_id="t", map_index=-1, state="running", try_number=1, max_tries=max_tries,
                pid=dead_pid(), hostname=hostname, start_date=now, last_heartbeat_at=now, updated_at=now,
            )
        )
    return now


def test_dead_try_is_retried_when_tries_remain(env: Env) -> None:
    now = start_run_with_a_running_ti(env, """
        PythonOperator(task_id='t', python_callable=ok, retries=1, retry_delay=timedelta(minutes=10),
                       on_retry_callback=cb('retry'))
    """, hostname=socket.gethostname(), max_tries=1)
    env.step(now)
    ti = env.ti("t")
    assert (ti.state, ti.try_number) == ("up_for_retry", 1)
    assert ti.next_retry_at == now + timedelta(minutes=10)
    assert env.callbacks() == ["task_retry"] and env.marker("retry") == "t try 1\n"
    env.step(ti.next_retry_at)
    assert (env.ti("t").state, env.ti("t").try_number) == ("success", 2)


def test_dead_try_recorded_by_the_runner_on_this_host_is_recognised(env: Env) -> None:
    now = start_run_with_a_running_ti(env, """
        PythonOperator(task_id='t', python_callable=ok)
    """, hostname=socket.gethostname())  # what the task runner writes when it claims a try
    env.step(now)
    assert env.ti("t").state == "failed"


def test_dead_try_with_zero_retry_delay_is_retried_at_once(env: Env) -> None:
    now = start_run_with_a_running_ti(env, """
        PythonOperator(task_id='t', python_callable=ok, retries=1, retry_delay=timedelta(0))
    """, hostname=socket.gethostname(), max_tries=1)
    env.step(now)
    assert (env.ti("t").state, env.ti("t").try_number) == ("success", 2)


def test_dead_try_with_a_stale_heartbeat_on_another_host_is_retried(env: Env) -> None:
    now = start_run_with_a_running_ti(env, """
        PythonOperator(task_id='t', python_callable=ok, retries=1, retry_delay=timedelta(seconds=1))
    """, hostname="some-other-host", max_tries=1)
    env.step(now + timedelta(seconds=299))  # heartbeat 299 s old: still trusted
    assert env.ti("t").state == "running"
    env.reconfigure()  # a fresh scheduler checks at once (the check runs every 5 s)
    env.step(now + timedelta(seconds=301))
    assert env.ti("t").state == "up_for_retry"
    env.step(now + timedelta(seconds=302))
    assert (env.ti("t").state, env.ti("t").try_number) == ("success", 2)


def test_a_try_queued_by_an_earlier_scheduler_is_queued_again(env: Env) -> None:
    env.dag("PythonOperator(task_id='t', python_callable=ok)")
    env.trigger()
    now = utcnow()
    env.scheduler.start_queued_runs(now)
    with session_scope(env.engine) as session:
        session.execute(
            insert(TaskInstance).values(
                dag_id=DAG_ID, run_id=RUN, task_id="t", map_index=-1, state="queued", try_number=1, max_tries=0,
                queued_by_job_id=12345, queued_dttm=now, updated_at=now,
            )
        )
    env.step(now)
    assert (env.ti("t").state, env.ti("t").try_number) == ("success", 1)


def test_a_runner_killed_mid_try_is_failed_from_its_exit_event(env: Env) -> None:
    env.dag("""
        import signal
        # The try's code runs in the runner's own process (the executors' direct mode): it kills its runner.
        PythonOperator(task_id='t', python_callable=lambda: os.kill(os.getpid(), signal.SIGKILL), retries=1,
                       retry_delay=timedelta(hours=1), on_retry_callback=cb('retry'))
    """, prelude=CALLBACKS)
    env.trigger()
    env.step()
    ti = env.ti("t")
    assert (ti.state, ti.try_number) == ("up_for_retry", 1)
    assert env.callbacks() == ["task_retry"] and env.marker("retry") == "t try 1\n"


def test_dead_try_fails_when_no_tries_remain(env: Env) -> None:
    now = start_run_with_a_running_ti(env, """
        PythonOperator(task_id='t', python_callable=ok, on_failure_callback=cb('failure'))
    """, hostname=socket.gethostname())
    env.step(now)
    assert (env.ti("t").state, env.run_state()) == ("failed", "failed")
    assert env.callbacks() == ["task_failure"] and env.marker("failure") == "t try 1\n"
