"""States of DAG runs and task instances, stored as their lowercase values.

Task instance transitions (the scheduler and the task runner move along these
edges only, each move a compare-and-set UPDATE)::

    none ──> scheduled ──> queued ──> running ──> success
      │          │            │          ├──────> failed
      │          │            │          ├──────> up_for_retry ──> scheduled
      │          │            │          ├──────> up_for_reschedule ──> scheduled
      │          │            │          └──────> skipped
      ├──> skipped            └──> (back to scheduled when an executor loses it)
      ├──> upstream_failed
      └──> removed

Any state may be cleared back to ``none`` by a user, and marked success/failed.

DAG run transitions::

    queued ──> running ──> success
                      └──> failed
"""

from __future__ import annotations

from enum import StrEnum


class TaskInstanceState(StrEnum):
    """The state of one task instance (one task in one run)."""

    NONE = "none"  #: created, upstream not decided yet
    SCHEDULED = "scheduled"  #: ready to run, waiting for an executor slot
    QUEUED = "queued"  #: handed to an executor
    RUNNING = "running"  #: a try is executing
    SUCCESS = "success"  #: finished without error
    FAILED = "failed"  #: finished with an error and no retries left
    UP_FOR_RETRY = "up_for_retry"  #: failed, another try is due after retry_delay
    UP_FOR_RESCHEDULE = "up_for_reschedule"  #: a sensor in reschedule mode waits for its next poke
    SKIPPED = "skipped"  #: not run: skipped by a branch, short-circuit or a skip exception
    UPSTREAM_FAILED = "upstream_failed"  #: not run: its trigger rule can no longer be met
    REMOVED = "removed"  #: the task disappeared from the DAG after the run was created

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_TI_STATES


class DagRunState(StrEnum):
    """The state of one DAG run."""

    QUEUED = "queued"  #: created, waiting for max_active_runs to allow it
    RUNNING = "running"  #: its tasks are being scheduled
    SUCCESS = "success"  #: every task finished and no leaf failed
    FAILED = "failed"  #: a leaf failed or upstream_failed, or the run timed out

    @property
    def is_finished(self) -> bool:
        return self in (DagRunState.SUCCESS, DagRunState.FAILED)


class DagRunType(StrEnum):
    """How a run came to be; the run_id prefix is the value."""

    SCHEDULED = "scheduled"  #: created by the timetable
    MANUAL = "manual"  #: triggered by a user (UI, API, CLI)
    BACKFILL = "backfill"  #: created by `dags backfill`
    ASSET_TRIGGERED = "dataset_triggered"  #: created by an asset update (Airflow 2's API name)


FINISHED_TI_STATES = frozenset(
    {
        TaskInstanceState.SUCCESS,
        TaskInstanceState.FAILED,
        TaskInstanceState.SKIPPED,
        TaskInstanceState.UPSTREAM_FAILED,
        TaskInstanceState.REMOVED,
    }
)

#: States in which a task instance is held by an executor.
ACTIVE_TI_STATES = frozenset({TaskInstanceState.QUEUED, TaskInstanceState.RUNNING})

#: Allowed automatic transitions of a task instance (user actions may set any state).
TI_TRANSITIONS: dict[TaskInstanceState, frozenset[TaskInstanceState]] = {
    TaskInstanceState.NONE: frozenset(
        {
            TaskInstanceState.SCHEDULED,
            TaskInstanceState.SKIPPED,
            TaskInstanceState.UPSTREAM_FAILED,
            TaskInstanceState.REMOVED,
        }
    ),
    TaskInstanceState.SCHEDULED: frozenset(
        {TaskInstanceState.QUEUED, TaskInstanceState.SKIPPED, TaskInstanceState.UPSTREAM_FAILED}
    ),
    TaskInstanceState.QUEUED: frozenset({TaskInstanceState.RUNNING, TaskInstanceState.SCHEDULED, TaskInstanceState.FAILED}),
    TaskInstanceState.RUNNING: frozenset(
        {
            TaskInstanceState.SUCCESS,
            TaskInstanceState.FAILED,
            TaskInstanceState.UP_FOR_RETRY,
            TaskInstanceState.UP_FOR_RESCHEDULE,
            TaskInstanceState.SKIPPED,
        }
    ),
    TaskInstanceState.UP_FOR_RETRY: frozenset({TaskInstanceState.SCHEDULED}),
    TaskInstanceState.UP_FOR_RESCHEDULE: frozenset({TaskInstanceState.SCHEDULED}),
    TaskInstanceState.SUCCESS: frozenset(),
    TaskInstanceState.FAILED: frozenset(),
    TaskInstanceState.SKIPPED: frozenset(),
    TaskInstanceState.UPSTREAM_FAILED: frozenset(),
    TaskInstanceState.REMOVED: frozenset(),
}


def can_transition(old: TaskInstanceState, new: TaskInstanceState) -> bool:
    """True when the scheduler or runner may move a task instance from ``old`` to ``new``."""
    return new in TI_TRANSITIONS[old]

#: The XCom key under which a try that skipped tasks (a branch, a short-circuit) lists
#: them, so that such a task cleared on its own is skipped again. The key is Airflow's.
SKIPPED_XCOM_KEY = "skipmixin_key"
