"""The successor of a recorded try is queued ahead of the full decision (TaskScheduler.follow_recorded).

When the loop queues a try it notes each downstream task that waits only for that try
(all_success, every other upstream a success, not mapped, no depends_on_past, not an
EmptyOperator). When the try's runner announces its record, the next iteration checks
that in the database and queues the task through the usual queueing step before it
decides the runs again. These tests drive ``run_once`` with an executor that runs
nothing: the test plays the runner (it writes the try's state and announces its record)
and checks what is queued, and that whatever no longer holds is left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text, update

from scheduler import task_scheduling
from scheduler.config import Settings
from scheduler.db import store
from scheduler.db.engine import session_scope
from scheduler.db.models import DagRun, Pool, SerializedDag, TaskInstance
from scheduler.executors.base import BaseExecutor, ExecutorEvent
from scheduler.loop import Scheduler
from scheduler.serialization import SerializedDAG
from scheduler.states import DagRunState, DagRunType
from scheduler.workloads import TaskWorkload
from tests.scheduler.dagfolder import folder_settings, make_folder, write

NOW = datetime(2024, 5, 11, 12, 0, tzinfo=UTC)


class Announcing(BaseExecutor):
    """Runs nothing; the test announces records as runners would."""

    def __init__(self) -> None:
        self.queued: list[TaskWorkload] = []
        self.recorded: list[tuple[Any, ...]] = []
        self.events: list[ExecutorEvent] = []

    def start(self, on_event: Any) -> None:
        pass

    def queue(self, workload: Any) -> None:
        self.queued.append(workload)

    def drain_events(self) -> list[Any]:
        events, self.events = self.events, []
        return events

    def drain_recorded(self) -> list[tuple[Any, ...]]:
        keys, self.recorded = self.recorded, []
        return keys

    @property
    def running(self) -> dict[tuple[Any, ...], Any]:
        return {w.key: w for w in self.queued}

    def end(self, *, timeout: float) -> None:
        pass


@dataclass
class Env:
    scheduler: Scheduler
    executor: Announcing
    folder: Path

    @property
    def engine(self) -> Engine:
        return self.scheduler.engine

    def dag(self, body: str) -> None:
        """The DAG 'f' (manual runs) with tasks ``body`` defines; parsed and unpaused."""
        write(self.folder, "f.py", (
            "from datetime import datetime\n"
            "from scheduler import DAG, EmptyOperator, PythonOperator\n\n"
            "def noop():\n    pass\n\n"
            "with DAG('f', schedule=None, start_date=datetime(2024, 1, 1)):\n"
            "    def t(name, **kw):\n        return PythonOperator(task_id=name, python_callable=noop, **kw)\n"
            + "".join(f"    {line}\n" for line in body.strip().splitlines())
        ))
        self.scheduler.sync_dags(NOW)
        with session_scope(self.engine) as session:
            store.set_paused(session, "f", False)

    def trigger(self) -> None:
        with session_scope(self.engine) as session:
            sdag = SerializedDAG.from_dict(session.scalar(select(SerializedDag.data).where(SerializedDag.dag_id == "f")))
            store.create_dag_run(session, dag_id="f", run_id="r", run_type=DagRunType.MANUAL, logical_date=NOW,
                                 data_interval=sdag.timetable.infer_manual_data_interval(run_after=NOW), conf={},
                                 state=DagRunState.QUEUED, run_after=NOW, now=NOW, external_trigger=True)
        self.scheduler.run_once(NOW)

    def tasks(self) -> Any:
        return self.scheduler._task_scheduler()

    def state(self, task_id: str) -> str:
        with session_scope(self.engine, readonly=True) as session:
            return str(session.scalar(select(TaskInstance.state).where(TaskInstance.task_id == task_id)).value)

    def queued_ids(self) -> list[str]:
        return [w.task_id for w in self.executor.queued]

    def finish(self, task_id: str, state: str = "success", *, announce: bool = True) -> None:
        """Play the try's runner: record its state and announce it."""
        (workload,) = [w for w in self.executor.queued if w.task_id == task_id]
        self.executor.queued.remove(workload)
        with self.engine.begin() as connection:
            connection.execute(text("UPDATE task_instance SET state = :s, end_date = :t WHERE id = :i"),
                               {"s": state, "t": NOW.replace(tzinfo=None), "i": workload.ti_id})
        if announce:
            self.executor.recorded.append(workload.key)


@pytest.fixture
def env(tmp_path: Path, db_engine: Engine) -> Iterator[Env]:
    settings: Settings = folder_settings(tmp_path, make_folder(tmp_path))
    executor = Announcing()
    with Scheduler(db_engine, settings, executor=executor) as scheduler:
        yield Env(scheduler, executor, tmp_path / "dags")


def test_the_next_task_of_a_chain_is_queued_from_the_record_alone(env: Env) -> None:
    env.dag("a = t('a'); b = t('b'); c = t('c'); a >> b >> c")
    env.trigger()
    assert env.queued_ids() == ["a"]
    env.finish("a")
    assert env.tasks().follow_recorded(NOW) == 1  # before any decision of the run
    assert env.queued_ids() == ["b"] and env.state("b") == "queued"

    env.tasks().run_once(NOW)  # the full decision finds b queued and notes c behind it
    assert env.queued_ids() == ["b"]
    env.finish("b")
    assert env.tasks().follow_recorded(NOW) == 1
    assert env.queued_ids() == ["c"]


def test_a_failed_try_or_an_unannounced_one_queues_nothing_ahead(env: Env) -> None:
    env.dag("a = t('a', retries=0); b = t('b'); a >> b")
    env.trigger()
    env.finish("a", "failed")
    assert env.tasks().follow_recorded(NOW) == 0
    assert env.state("b") == "none" and env.queued_ids() == []


def test_a_stale_announcement_of_an_earlier_try_is_ignored(env: Env) -> None:
    env.dag("a = t('a'); b = t('b'); a >> b")
    env.trigger()
    (workload,) = env.executor.queued
    env.finish("a", announce=False)
    env.executor.recorded.append((workload.ti_id, workload.try_number - 1))
    assert env.tasks().follow_recorded(NOW) == 0
    assert env.state("b") == "none"


def test_a_task_with_another_upstream_still_running_waits(env: Env) -> None:
    env.dag("a = t('a'); x = t('x'); b = t('b'); [a, x] >> b")
    env.trigger()
    assert sorted(env.queued_ids()) == ["a", "x"]
    env.finish("a")
    assert env.tasks().follow_recorded(NOW) == 0  # x is still queued: b was never noted
    assert env.state("b") == "none"
    env.tasks().run_once(NOW)
    env.finish("x")
    env.tasks().run_once(NOW)  # the usual way
    assert env.state("b") == "queued"


@pytest.mark.parametrize("kind", ["one_success", "depends_on_past", "empty"])
def test_other_trigger_rules_past_dependencies_and_empty_operators_are_left_to_the_decision(
    env: Env, kind: str
) -> None:
    downstream = {
        "one_success": "b = t('b', trigger_rule='one_success')",
        "depends_on_past": "b = t('b', depends_on_past=True)",
        "empty": "b = EmptyOperator(task_id='b')",
    }[kind]
    env.dag(f"a = t('a'); {downstream}; a >> b")
    env.trigger()
    env.finish("a")
    assert env.tasks().follow_recorded(NOW) == 0
    assert env.state("b") == "none"


def test_a_run_that_stopped_running_gets_nothing_queued(env: Env) -> None:
    env.dag("a = t('a'); b = t('b'); a >> b")
    env.trigger()
    env.finish("a")
    with session_scope(env.engine) as session:
        session.execute(update(DagRun).values(state=DagRunState.FAILED))
    assert env.tasks().follow_recorded(NOW) == 0
    assert env.state("b") == "none"


def test_the_queueing_limits_still_apply(env: Env) -> None:
    env.dag("a = t('a'); b = t('b', pool='tiny'); a >> b")
    with session_scope(env.engine) as session:
        session.add(Pool(pool="tiny", slots=0, description=""))
    env.trigger()
    env.finish("a")
    assert env.tasks().follow_recorded(NOW) == 0
    assert env.state("b") == "scheduled"  # ready, but its pool has no slot: as the full decision would leave it


# --- iterations that need no decision ------------------------------------------------------------------


@pytest.fixture
def decisions(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """When the full decision ran, from the test's first ``only_recorded`` iteration on (the dead-try
    check and the decision's age limit, both timed, kept out of the way)."""
    tasks = env.tasks()
    tasks._next_dead_check = float("inf")
    monkeypatch.setattr(task_scheduling, "MAX_DECISION_AGE_SECONDS", 3600.0)
    calls: list[datetime] = []
    original = tasks.schedule_task_instances

    def counted(now: datetime, **kwargs: Any) -> datetime | None:
        calls.append(now)
        return original(now, **kwargs)

    monkeypatch.setattr(tasks, "schedule_task_instances", counted)
    return calls


def run_state(env: Env) -> str:
    with session_scope(env.engine, readonly=True) as session:
        return str(session.scalar(select(DagRun.state)).value)


def test_a_chain_runs_on_records_alone_and_decides_once_at_its_end(env: Env, decisions: list[datetime]) -> None:
    env.dag("a = t('a'); b = t('b'); c = t('c'); a >> b >> c")
    env.trigger()
    decisions.clear()
    for task_id, successor in (("a", "b"), ("b", "c")):
        env.finish(task_id)
        env.tasks().run_once(NOW, only_recorded=True)
        assert env.queued_ids() == [successor] and env.state(successor) == "queued"
        assert decisions == []  # every successor of the record was queued: nothing else to decide
    env.finish("c")
    env.tasks().run_once(NOW, only_recorded=True)  # c has no successor: the decision finishes the run
    assert len(decisions) == 1
    assert run_state(env) == "success"


@pytest.mark.parametrize("why", ["woken otherwise", "past-bound DAG", "outlets", "successor left to the decision",
                                 "a try ended badly", "due by time", "decision too old"])
def test_an_iteration_decides_when_the_record_is_not_the_whole_story(
    env: Env, decisions: list[datetime], monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    body = {
        "past-bound DAG": "a = t('a'); b = t('b'); x = t('x', depends_on_past=True); a >> b",
        "outlets": "from scheduler.authoring.assets import Asset\na = t('a', outlets=[Asset('s3://x')]); b = t('b'); a >> b",
        "successor left to the decision": "a = t('a'); b = t('b'); c = t('c', trigger_rule='one_success'); a >> [b, c]",
        "a try ended badly": "a = t('a'); b = t('b'); x = t('x', retries=0); a >> b",
    }.get(why, "a = t('a'); b = t('b'); a >> b")
    env.dag(body)
    env.trigger()
    decisions.clear()
    now = NOW
    if why == "a try ended badly":
        (x,) = [w for w in env.executor.queued if w.task_id == "x"]
        env.executor.events.append(ExecutorEvent(key=x.key, kind="task", returncode=-9))
    elif why == "due by time":
        env.tasks()._decided_due = NOW  # as when a retry or a timeout falls due
        now = NOW + timedelta(seconds=1)
    elif why == "decision too old":
        monkeypatch.setattr(task_scheduling, "MAX_DECISION_AGE_SECONDS", 0.0)
    env.finish("a")
    env.tasks().run_once(now, only_recorded=why != "woken otherwise")
    assert env.state("b") == "queued"  # queued from the record either way
    assert len(decisions) == 1
    if why == "a try ended badly":
        assert env.state("x") == "failed"
