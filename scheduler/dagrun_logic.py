"""Deciding a running DAG run's next moves from its task-instance states: pure, no database.

:func:`plan_run` is what one scheduler iteration asks of each running run: which
task instances are ready (their trigger rule is met, their retry or reschedule time
has come, their previous run allows it), which can never run (skipped, upstream
failed), which EmptyOperators succeed without running, and whether the run is over.
Decisions cascade within one call: a skip decided here is seen by the task after it.

:func:`effective_weights` turns each task's priority_weight and weight_rule into the
number the queueing order uses (Airflow's downstream / upstream / absolute rules).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from scheduler.serialization import SerializedDAG
from scheduler.states import DagRunState, TaskInstanceState
from scheduler.trigger_rules import Decision, UpstreamCounts, evaluate

S = TaskInstanceState

FINISHED = frozenset({S.SUCCESS, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.REMOVED})
#: States in which an executor holds (or is about to hold) a try.
IN_FLIGHT = frozenset({S.SCHEDULED, S.QUEUED, S.RUNNING})
#: States that wait for a time (next_retry_at) before they are scheduled again.
WAITING_FOR_TIME = frozenset({S.UP_FOR_RETRY, S.UP_FOR_RESCHEDULE})


@dataclass
class RunPlan:
    """What to change in one run. ``changes`` maps task_id -> (old state, new state, why)."""

    changes: dict[str, tuple[S, S, str]] = field(default_factory=dict)
    #: success / failed once every task instance is finished (or nothing can move); None while running.
    run_state: DagRunState | None = None
    run_reason: str = ""
    #: The earliest next_retry_at among instances still waiting for their time (when to look again).
    next_due: datetime | None = None
    #: Task ids held back only by depends_on_past.
    waiting_on_past: list[str] = field(default_factory=list)


def runs_without_executing(sdag: SerializedDAG, task_id: str) -> bool:
    """EmptyOperators with no success callback are marked success by the scheduler, as Airflow does."""
    task = sdag.tasks[task_id]
    return task.is_empty and not task.get("has_on_success_callback") and not task.get("has_on_execute_callback")


def plan_run(
    sdag: SerializedDAG,
    states: Mapping[str, S],
    next_retry_at: Mapping[str, datetime | None],
    now: datetime,
    *,
    past_allows: Callable[[str], bool] = lambda task_id: True,
) -> RunPlan:
    """Decide the run's moves at ``now``; ``states`` has every task instance of the run by task_id.

    ``past_allows(task_id)`` answers depends_on_past (the caller looks up the previous
    run); it is asked only for tasks that have depends_on_past set and are otherwise ready.
    """
    plan = RunPlan()
    current = dict(states)
    progressed = True

    def change(task_id: str, new: S, why: str) -> None:
        nonlocal progressed
        plan.changes[task_id] = (states[task_id], new, why)
        current[task_id] = new
        progressed = True

    while progressed:
        progressed = False
        for task_id in sdag.task_order:
            state = current.get(task_id)
            if state is None:
                continue
            if state in WAITING_FOR_TIME:
                due = next_retry_at.get(task_id)
                if due is None or due <= now:
                    why = "retry delay over" if state is S.UP_FOR_RETRY else "time for the next poke"
                    change(task_id, S.SCHEDULED, why)
                elif plan.next_due is None or due < plan.next_due:
                    plan.next_due = due
                continue
            if state is not S.NONE:
                continue
            task = sdag.tasks[task_id]
            counts = UpstreamCounts.from_states(current[u] for u in sorted(task.upstream) if u in current)
            decision = evaluate(task.trigger_rule, counts)
            if decision is Decision.WAIT:
                continue
            if decision is Decision.SKIP:
                change(task_id, S.SKIPPED, f"trigger rule '{task.trigger_rule}' can no longer be met ({_describe(counts)})")
            elif decision is Decision.UPSTREAM_FAILED:
                change(
                    task_id, S.UPSTREAM_FAILED,
                    f"trigger rule '{task.trigger_rule}' can no longer be met ({_describe(counts)})",
                )
            elif task.get("depends_on_past") and not past_allows(task_id):
                if task_id not in plan.waiting_on_past:
                    plan.waiting_on_past.append(task_id)
            elif runs_without_executing(sdag, task_id):
                change(task_id, S.SUCCESS, "EmptyOperator: marked success without running")
            else:
                change(task_id, S.SCHEDULED, "trigger rule met")
    _decide_run_state(sdag, current, plan)
    return plan


def _decide_run_state(sdag: SerializedDAG, current: Mapping[str, S], plan: RunPlan) -> None:
    unfinished = [t for t, s in current.items() if s not in FINISHED]
    leaves = [t for t in sdag.leaves if t in current]
    if not unfinished:
        failed = [t for t in leaves if current[t] in (S.FAILED, S.UPSTREAM_FAILED)]
        if failed:
            plan.run_state = DagRunState.FAILED
            plan.run_reason = f"task_failure: leaf tasks {failed} failed or upstream_failed"
        else:
            plan.run_state = DagRunState.SUCCESS
            plan.run_reason = "success"
        return
    movable = [t for t in unfinished if current[t] is not S.NONE]
    if movable or plan.waiting_on_past:
        return
    # Every unfinished instance is 'none' and none can ever be decided: Airflow calls this a deadlock.
    plan.run_state = DagRunState.FAILED
    plan.run_reason = f"deadlock: tasks {sorted(unfinished)} can never be scheduled"


def _describe(counts: UpstreamCounts) -> str:
    parts = [f"{name}={getattr(counts, name)}" for name in ("success", "skipped", "failed", "upstream_failed")]
    return f"upstream: total={counts.total}, " + ", ".join(parts)


def effective_weights(sdag: SerializedDAG) -> dict[str, int]:
    """Each task's queueing priority: its own priority_weight, plus (weight_rule ``downstream``, the default)
    the weights of every task downstream of it, or (``upstream``) of every task upstream; ``absolute``: its own."""
    own = {t: task.priority_weight for t, task in sdag.tasks.items()}
    result: dict[str, int] = {}
    for task_id, task in sdag.tasks.items():
        rule = task.weight_rule
        if rule == "absolute":
            result[task_id] = own[task_id]
            continue
        neighbours = "downstream" if rule != "upstream" else "upstream"
        seen: set[str] = set()
        stack = [task_id]
        while stack:
            for other in getattr(sdag.tasks[stack.pop()], neighbours):
                if other not in seen and other in sdag.tasks:
                    seen.add(other)
                    stack.append(other)
        result[task_id] = own[task_id] + sum(own[t] for t in seen)
    return result
