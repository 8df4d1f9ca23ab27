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
    #: Changes of expanded (map_index >= 0) instances: (task_id, map_index) -> (old, new, why).
    mapped_changes: dict[tuple[str, int], tuple[S, S, str]] = field(default_factory=dict)
    #: Mapped tasks to expand now: task_id -> how many instances (their -1 instance becomes index 0).
    expansions: dict[str, int] = field(default_factory=dict)


#: What ``map_length`` answers for a mapped task ready to expand: a length, or the reason it cannot expand.
MapLength = Callable[[str], "int | str"]


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
    skipped_by: Callable[[str], str | None] = lambda task_id: None,
    mapped_states: Mapping[str, Mapping[int, S]] | None = None,
    mapped_retry_at: Mapping[tuple[str, int], datetime | None] | None = None,
    map_length: MapLength | None = None,
) -> RunPlan:
    """Decide the run's moves at ``now``; ``states`` has every unexpanded task instance of the run by task_id.

    ``past_allows(task_id)`` answers depends_on_past (the caller looks up the previous
    run); it is asked only for tasks that have depends_on_past set and are otherwise ready.
    ``skipped_by(task_id)`` names the direct upstream branch or short-circuit whose successful
    try skipped the task (None when none did): a task cleared after it was skipped so is
    skipped again, as in Airflow, until that upstream runs again. It is asked only for tasks
    that are otherwise ready.

    Mapped tasks: ``mapped_states`` has the instances of tasks already expanded
    (task_id -> map_index -> state; ``mapped_retry_at`` their next_retry_at), which a
    downstream trigger rule counts one by one. A mapped task still unexpanded (its -1
    instance in ``states``) whose trigger rule is met is expanded: ``map_length(task_id)``
    says into how many instances (``plan.expansions``; 0 skips it), or why it cannot be
    (the task fails).
    """
    plan = RunPlan()
    current = dict(states)
    mapped: dict[str, dict[int, S]] = {t: dict(m) for t, m in (mapped_states or {}).items() if m}
    retry_at = dict(mapped_retry_at or {})
    progressed = True

    def change(task_id: str, new: S, why: str) -> None:
        nonlocal progressed
        plan.changes[task_id] = (states[task_id], new, why)
        current[task_id] = new
        progressed = True

    def change_mapped(task_id: str, index: int, new: S, why: str) -> None:
        nonlocal progressed
        old = (mapped_states or {}).get(task_id, {}).get(index, S.NONE)
        plan.mapped_changes[(task_id, index)] = (old, new, why)
        mapped[task_id][index] = new
        progressed = True

    def upstream_states(task_id: str) -> list[S]:
        found: list[S] = []
        for u in sorted(sdag.tasks[task_id].upstream):
            if u in mapped:
                found.extend(mapped[u].values())
            elif u in current:
                found.append(current[u])
        return found

    while progressed:
        progressed = False
        for task_id in sdag.task_order:
            if task_id in mapped:
                if task_id in plan.expansions:
                    continue  # its instances are decided once they exist (the caller's next look)
                _plan_mapped(sdag, task_id, mapped[task_id], retry_at, now, plan, upstream_states, change_mapped)
                continue
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
            counts = UpstreamCounts.from_states(upstream_states(task_id))
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
            elif (by := skipped_by(task_id)) is not None:
                change(task_id, S.SKIPPED, f"'{by}' skipped it when it ran; clear '{by}' to decide again")
            elif task.get("depends_on_past") and not past_allows(task_id):
                if task_id not in plan.waiting_on_past:
                    plan.waiting_on_past.append(task_id)
            elif task.get("is_mapped"):
                length = map_length(task_id) if map_length is not None else "no way to read what it maps over"
                if isinstance(length, str):
                    change(task_id, S.FAILED, f"cannot expand the mapped task: {length}")
                elif length == 0:
                    change(task_id, S.SKIPPED, "mapped over nothing (length 0)")
                else:
                    plan.expansions[task_id] = length
                    mapped[task_id] = {i: S.NONE for i in range(length)}
                    current.pop(task_id, None)
                    progressed = True
            elif runs_without_executing(sdag, task_id):
                change(task_id, S.SUCCESS, "EmptyOperator: marked success without running")
            else:
                change(task_id, S.SCHEDULED, "trigger rule met")
    _decide_run_state(sdag, current, plan, mapped)
    return plan


def _plan_mapped(
    sdag: SerializedDAG, task_id: str, instances: dict[int, S], retry_at: Mapping[tuple[str, int], datetime | None],
    now: datetime, plan: RunPlan, upstream_states: Callable[[str], list[S]],
    change_mapped: Callable[[str, int, S, str], None],
) -> None:
    """The instances of an expanded mapped task: retries and reschedules whose time came, and new ones
    (decided by the task's trigger rule, as the unexpanded task was)."""
    task = sdag.tasks[task_id]
    decision: Decision | None = None
    counts: UpstreamCounts | None = None
    for index in sorted(instances):
        state = instances[index]
        if state in WAITING_FOR_TIME:
            due = retry_at.get((task_id, index))
            if due is None or due <= now:
                why = "retry delay over" if state is S.UP_FOR_RETRY else "time for the next poke"
                change_mapped(task_id, index, S.SCHEDULED, why)
            elif plan.next_due is None or due < plan.next_due:
                plan.next_due = due
            continue
        if state is not S.NONE:
            continue
        if decision is None:
            counts = UpstreamCounts.from_states(upstream_states(task_id))
            decision = evaluate(task.trigger_rule, counts)
        if decision is Decision.WAIT:
            continue
        if decision is Decision.SKIP:
            change_mapped(task_id, index, S.SKIPPED, f"trigger rule '{task.trigger_rule}' can no longer be met")
        elif decision is Decision.UPSTREAM_FAILED:
            change_mapped(task_id, index, S.UPSTREAM_FAILED, f"trigger rule '{task.trigger_rule}' can no longer be met")
        else:
            change_mapped(task_id, index, S.SCHEDULED, "trigger rule met")


def _decide_run_state(
    sdag: SerializedDAG, current: Mapping[str, S], plan: RunPlan, mapped: Mapping[str, Mapping[int, S]] | None = None,
) -> None:
    mapped = mapped or {}
    unfinished = [t for t, s in current.items() if s not in FINISHED]
    unfinished += [f"{t}[{i}]" for t, m in mapped.items() for i, s in sorted(m.items()) if s not in FINISHED]
    leaves = [t for t in sdag.leaves if t in current]
    if not unfinished:
        failed = [t for t in leaves if current[t] in (S.FAILED, S.UPSTREAM_FAILED)]
        failed += [t for t in sdag.leaves if t in mapped
                   and any(s in (S.FAILED, S.UPSTREAM_FAILED) for s in mapped[t].values())]
        if failed:
            plan.run_state = DagRunState.FAILED
            plan.run_reason = f"task_failure: leaf tasks {failed} failed or upstream_failed"
        else:
            plan.run_state = DagRunState.SUCCESS
            plan.run_reason = "success"
        return
    movable = [t for t in unfinished if t in current and current[t] is not S.NONE]
    movable += [t for t, m in mapped.items() if any(s not in FINISHED and s is not S.NONE for s in m.values())]
    if movable or plan.waiting_on_past or plan.expansions:
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
