"""Every error updraft raises on purpose derives from UpdraftError.

Lookup errors also derive from LookupError and carry the id they could not find.
The Airflow-named exceptions (AirflowSkipException, ...) are aliases task code may raise.
"""

from __future__ import annotations

from datetime import datetime


class UpdraftError(Exception):
    """Base of every error raised by updraft on purpose."""


class ConfigError(UpdraftError, ValueError):
    """A configuration value is missing or malformed; the message names the key."""


class DagDefinitionError(UpdraftError, ValueError):
    """A DAG or task is defined wrongly (cycle, duplicate id, bad schedule...)."""


class CycleError(DagDefinitionError):
    """The task graph has a cycle; ``cycle`` lists the task ids along it."""

    def __init__(self, dag_id: str, cycle: list[str]) -> None:
        self.dag_id = dag_id
        self.cycle = cycle
        super().__init__(f"DAG '{dag_id}' has a cycle: {' >> '.join(cycle)}")


class ScheduleError(DagDefinitionError):
    """A schedule (cron expression, preset, timedelta) is invalid."""


class ParamValidationError(UpdraftError, ValueError):
    """A DAG param or a run's conf does not satisfy the param's schema."""


class TemplateError(UpdraftError):
    """A templated field could not be rendered; the message names the task and field."""


class DagNotFound(UpdraftError, LookupError):
    def __init__(self, dag_id: str) -> None:
        self.dag_id = dag_id
        super().__init__(f"DAG '{dag_id}' not found")


class TaskNotFound(UpdraftError, LookupError):
    def __init__(self, dag_id: str, task_id: str) -> None:
        self.dag_id = dag_id
        self.task_id = task_id
        super().__init__(f"Task '{task_id}' not found in DAG '{dag_id}'")


class DagRunNotFound(UpdraftError, LookupError):
    def __init__(self, dag_id: str, run_id: str) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        super().__init__(f"DAG run '{run_id}' of DAG '{dag_id}' not found")


class DatabaseError(UpdraftError):
    """The metadata database is unreachable, not migrated, or inconsistent."""


# --- raised by task code -------------------------------------------------------------


class TaskSkipped(UpdraftError):
    """Raise in a task to end it as skipped (Airflow: AirflowSkipException)."""


class TaskRescheduled(UpdraftError):
    """Raised by a sensor in mode='reschedule': free the slot, poke again at ``reschedule_date`` (Airflow: AirflowRescheduleException)."""

    def __init__(self, reschedule_date: datetime) -> None:
        super().__init__(f"rescheduled to {reschedule_date.isoformat()}")
        self.reschedule_date = reschedule_date


class TaskFailedNoRetry(UpdraftError):
    """Raise in a task to fail it at once, without retries (Airflow: AirflowFailException)."""


class XComError(UpdraftError, TypeError):
    """A value pushed to XCom is not JSON-serialisable."""


AirflowException = UpdraftError
AirflowSkipException = TaskSkipped
AirflowFailException = TaskFailedNoRetry
