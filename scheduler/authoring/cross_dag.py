"""Operators that look beyond their own run: TriggerDagRunOperator, ExternalTaskSensor, LatestOnlyOperator.

The first two read and write other DAGs' runs through a :class:`DagRunsService`: in a
real try it is backed by the metadata database (``scheduler.db.cross_dag``); ``dags
test`` passes one that keeps runs in memory (and runs a triggered DAG in-process when
it can load it). The service is found in the context (key ``dag_runs_service``) or,
in a task runner's try, made from the try's database access.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from scheduler.authoring.baseoperator import BaseOperator
from scheduler.authoring.operators import BranchMixin, EmptyOperator
from scheduler.authoring.sensors import BaseSensorOperator
from scheduler.clock import make_aware, parse_datetime, utcnow
from scheduler.exceptions import DagDefinitionError, TaskFailedNoRetry, TaskSkipped, UpdraftError

logger = logging.getLogger(__name__)

#: XCom keys TriggerDagRunOperator pushes (Airflow's names).
XCOM_RUN_ID = "trigger_run_id"
XCOM_LOGICAL_DATE_ISO = "trigger_logical_date_iso"
XCOM_EXECUTION_DATE_ISO = "trigger_execution_date_iso"


class DagRunExists(UpdraftError):
    """The run a TriggerDagRunOperator asked for already exists."""


class DagRunsService(Protocol):
    """What cross-DAG operators may ask of the runs of other DAGs."""

    def dag_exists(self, dag_id: str) -> bool: ...

    def task_ids(self, dag_id: str) -> list[str] | None:
        """The DAG's task ids with their task group ids (``None``: no such DAG)."""
        ...

    def group_task_ids(self, dag_id: str, group_id: str) -> list[str]: ...

    def trigger(self, dag_id: str, *, run_id: str, logical_date: datetime, conf: dict[str, Any]) -> None:
        """Create a queued manual run; :class:`DagRunExists` when the run id is taken."""
        ...

    def reset(self, dag_id: str, run_id: str) -> None:
        """Clear an existing run so it runs again from the start."""
        ...

    def run_state(self, dag_id: str, run_id: str) -> str | None: ...

    def count(self, dag_id: str, logical_dates: Sequence[datetime], task_ids: Sequence[str] | None,
              states: Iterable[str]) -> int:
        """How many runs (``task_ids`` None) or task instances of those tasks, in runs at those logical
        dates, are in ``states``."""
        ...


def dag_runs_service(context: dict[str, Any]) -> DagRunsService:
    """The service of this try (see the module documentation)."""
    service = context.get("dag_runs_service")
    if service is not None:
        return service  # type: ignore[no-any-return]
    xcom = getattr(context.get("ti"), "_xcom", None)
    engine_factory = getattr(xcom, "_engine_factory", None)
    engine = getattr(xcom, "_engine", None)
    if engine_factory is None and engine is None:
        raise UpdraftError("this task needs the metadata database to reach other DAGs' runs, and has none here")
    from scheduler.db.cross_dag import DbDagRunsService

    factory: Callable[[], Any] = engine_factory if engine_factory is not None else (lambda: engine)
    return DbDagRunsService(factory)


def _as_datetime(value: Any, what: str, tz: Any) -> datetime:
    if isinstance(value, datetime):
        return make_aware(value, tz).astimezone(UTC)
    if isinstance(value, str):
        try:
            return parse_datetime(value, tz).astimezone(UTC)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    raise TypeError(f"{what} must be a datetime or ISO 8601 text, got {value!r}")


class TriggerDagRunOperator(BaseOperator):
    """Starts a run of another DAG (``trigger_dag_id``) with ``conf``; optionally waits for it to finish."""

    template_fields: Sequence[str] = ("trigger_dag_id", "trigger_run_id", "logical_date", "conf")
    template_fields_renderers = {"conf": "py"}
    ui_color = "#ffefeb"

    def __init__(
        self,
        *,
        trigger_dag_id: str,
        trigger_run_id: str | None = None,
        conf: dict[str, Any] | None = None,
        logical_date: str | datetime | None = None,
        execution_date: str | datetime | None = None,
        reset_dag_run: bool = False,
        wait_for_completion: bool = False,
        poke_interval: float | timedelta = 60,
        allowed_states: Iterable[str] | None = None,
        failed_states: Iterable[str] | None = None,
        skip_when_already_exists: bool = False,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        if not isinstance(trigger_dag_id, str) or not trigger_dag_id:
            raise DagDefinitionError(f"task '{task_id}': trigger_dag_id must be a DAG id, got {trigger_dag_id!r}")
        if conf is not None and not isinstance(conf, dict):
            raise DagDefinitionError(f"task '{task_id}': conf must be a dict, got {type(conf).__name__}")
        if execution_date is not None:
            if logical_date is not None:
                raise DagDefinitionError(f"task '{task_id}': pass logical_date or execution_date, not both")
            logical_date = execution_date
        self.trigger_dag_id = trigger_dag_id
        self.trigger_run_id = trigger_run_id
        self.conf = conf or {}
        self.logical_date = logical_date
        self.reset_dag_run = bool(reset_dag_run)
        self.wait_for_completion = bool(wait_for_completion)
        seconds = poke_interval.total_seconds() if isinstance(poke_interval, timedelta) else poke_interval
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise DagDefinitionError(f"task '{task_id}': poke_interval must be seconds >= 0, got {poke_interval!r}")
        self.poke_interval = float(seconds)
        self.allowed_states = [str(s) for s in (allowed_states or ["success"])]
        self.failed_states = [str(s) for s in (failed_states or ["failed"])]
        self.skip_when_already_exists = bool(skip_when_already_exists)
        self.deferrable = deferrable
        super().__init__(**kwargs)
        if execution_date is not None and self.has_dag:
            self.dag.note_deprecation("TriggerDagRunOperator(execution_date=...) is deprecated; use logical_date")

    def execute(self, context: dict[str, Any]) -> Any:
        service = dag_runs_service(context)
        tz = self.dag.timezone if self.has_dag else UTC
        when = utcnow() if self.logical_date is None else _as_datetime(self.logical_date, "logical_date", tz)
        run_id = self.trigger_run_id or f"manual__{when.isoformat()}"
        if not isinstance(self.conf, dict):
            raise TypeError(f"task '{self.task_id}': conf must render to a dict, got {type(self.conf).__name__}")
        if not service.dag_exists(self.trigger_dag_id):
            raise TaskFailedNoRetry(f"task '{self.task_id}': DAG '{self.trigger_dag_id}' to trigger does not exist")
        try:
            service.trigger(self.trigger_dag_id, run_id=run_id, logical_date=when, conf=dict(self.conf))
            print(f"Triggered DAG {self.trigger_dag_id}: run {run_id}", flush=True)
        except DagRunExists:
            if self.skip_when_already_exists:
                raise TaskSkipped(f"run {run_id} of DAG {self.trigger_dag_id} already exists; skipping") from None
            if not self.reset_dag_run:
                raise
            service.reset(self.trigger_dag_id, run_id)
            print(f"Cleared run {run_id} of DAG {self.trigger_dag_id} to run again", flush=True)
        ti = context["ti"]
        ti.xcom_push(XCOM_RUN_ID, run_id)
        ti.xcom_push(XCOM_LOGICAL_DATE_ISO, when.isoformat())
        ti.xcom_push(XCOM_EXECUTION_DATE_ISO, when.isoformat())
        if not self.wait_for_completion:
            return None
        while True:
            state = service.run_state(self.trigger_dag_id, run_id)
            if state in self.failed_states:
                raise UpdraftError(f"run {run_id} of DAG {self.trigger_dag_id} ended {state} (failed_states)")
            if state in self.allowed_states:
                print(f"Run {run_id} of DAG {self.trigger_dag_id} ended {state}", flush=True)
                return None
            print(f"Waiting for run {run_id} of DAG {self.trigger_dag_id} (state {state}); "
                  f"next look in {self.poke_interval:g}s", flush=True)
            time.sleep(self.poke_interval)


class ExternalTaskSensor(BaseSensorOperator):
    """Waits for a task (``external_task_id``), several tasks, a task group or a whole run of another DAG.

    The other run is the one whose logical date is this run's minus ``execution_delta``,
    or the date(s) ``execution_date_fn(logical_date[, context])`` returns (default: the
    same logical date). It is done when every awaited task instance (or run) is in
    ``allowed_states``; one in ``failed_states`` fails the sensor, one in
    ``skipped_states`` skips it.
    """

    template_fields: Sequence[str] = ("external_dag_id", "external_task_id", "external_task_ids")
    ui_color = "#4db7db"

    def __init__(
        self,
        *,
        external_dag_id: str,
        external_task_id: str | None = None,
        external_task_ids: Iterable[str] | None = None,
        external_task_group_id: str | None = None,
        allowed_states: Iterable[str] | None = None,
        skipped_states: Iterable[str] | None = None,
        failed_states: Iterable[str] | None = None,
        execution_delta: timedelta | None = None,
        execution_date_fn: Callable[..., Any] | None = None,
        check_existence: bool = False,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        where = f"task '{task_id}'"
        if external_task_id is not None and external_task_ids is not None:
            raise DagDefinitionError(f"{where}: pass external_task_id or external_task_ids, not both")
        ids = [external_task_id] if external_task_id is not None else list(external_task_ids or [])
        if external_task_group_id is not None and ids:
            raise DagDefinitionError(f"{where}: pass external_task_group_id or external task ids, not both")
        if execution_delta is not None and execution_date_fn is not None:
            raise DagDefinitionError(f"{where}: pass execution_delta or execution_date_fn, not both")
        if execution_delta is not None and not isinstance(execution_delta, timedelta):
            raise DagDefinitionError(f"{where}: execution_delta must be a timedelta, got {execution_delta!r}")
        if execution_date_fn is not None and not callable(execution_date_fn):
            raise DagDefinitionError(f"{where}: execution_date_fn must be callable, got {execution_date_fn!r}")
        allowed = [str(s) for s in (allowed_states or ["success"])]
        failed = [str(s) for s in (failed_states or [])]
        skipped = [str(s) for s in (skipped_states or [])]
        overlap = (set(allowed) & set(failed)) | (set(allowed) & set(skipped)) | (set(failed) & set(skipped))
        if overlap:
            raise DagDefinitionError(
                f"{where}: a state cannot be in more than one of allowed_states, failed_states and skipped_states: "
                f"{sorted(overlap)}"
            )
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        self.external_task_ids = ids
        self.external_task_group_id = external_task_group_id
        self.allowed_states = allowed
        self.skipped_states = skipped
        self.failed_states = failed
        self.execution_delta = execution_delta
        self.execution_date_fn = execution_date_fn
        self.check_existence = bool(check_existence)
        self.deferrable = deferrable
        super().__init__(**kwargs)

    def _dates(self, context: dict[str, Any]) -> list[datetime]:
        logical: datetime = context["logical_date"]
        if self.execution_delta is not None:
            return [logical - self.execution_delta]
        if self.execution_date_fn is None:
            return [logical]
        fn = self.execution_date_fn
        try:
            n = len([p for p in inspect.signature(fn).parameters.values()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        except (TypeError, ValueError):
            n = 1
        result = fn(logical, context) if n >= 2 else fn(logical)
        values = list(result) if isinstance(result, list | tuple) else [result]
        tz = self.dag.timezone if self.has_dag else UTC
        return [_as_datetime(v, "execution_date_fn result", tz) for v in values]

    def _awaited_tasks(self, service: DagRunsService) -> list[str] | None:
        if self.external_task_group_id is not None:
            ids = service.group_task_ids(self.external_dag_id, self.external_task_group_id)
            if not ids:
                raise TaskFailedNoRetry(
                    f"task group '{self.external_task_group_id}' does not exist in DAG '{self.external_dag_id}' "
                    "or has no tasks"
                )
            return ids
        return list(self.external_task_ids) or None

    def poke(self, context: dict[str, Any]) -> bool:
        service = dag_runs_service(context)
        dates = self._dates(context)
        if self.check_existence:
            known = service.task_ids(self.external_dag_id)
            if known is None:
                raise TaskFailedNoRetry(f"the external DAG '{self.external_dag_id}' does not exist")
            missing = [t for t in self.external_task_ids if t not in known]
            if missing:
                raise TaskFailedNoRetry(
                    f"the external DAG '{self.external_dag_id}' has no task {', '.join(repr(t) for t in missing)}"
                )
        tasks = self._awaited_tasks(service)
        what = (f"tasks {tasks}" if tasks else "the run") + f" of DAG '{self.external_dag_id}'"
        print(f"Poking for {what} at {', '.join(d.isoformat() for d in dates)} ... ", flush=True)
        expected = len(dates) * (len(tasks) if tasks else 1)
        if self.failed_states and service.count(self.external_dag_id, dates, tasks, self.failed_states):
            message = f"{what} ended in one of {self.failed_states}"
            if self.soft_fail:
                raise TaskSkipped(message)
            raise TaskFailedNoRetry(message)
        if self.skipped_states and service.count(self.external_dag_id, dates, tasks, self.skipped_states):
            raise TaskSkipped(f"{what} ended in one of {self.skipped_states}; skipping")
        done = service.count(self.external_dag_id, dates, tasks, self.allowed_states)
        return bool(done >= expected)


class ExternalTaskMarker(EmptyOperator):
    """Marks a dependency of another DAG's task on this one (Airflow clears across DAGs with it).

    In updraft it is an EmptyOperator that records the external task; clearing does not
    cross DAGs.
    """

    template_fields: Sequence[str] = ("external_dag_id", "external_task_id", "logical_date")
    ui_color = "#4db7db"

    def __init__(self, *, external_dag_id: str, external_task_id: str, logical_date: str | None = None,
                 execution_date: str | None = None, recursion_depth: int = 10, **kwargs: Any) -> None:
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        self.logical_date = logical_date or execution_date or "{{ logical_date.isoformat() }}"
        self.recursion_depth = recursion_depth
        super().__init__(**kwargs)


class LatestOnlyOperator(BranchMixin, BaseOperator):
    """Lets downstream tasks run only in the latest scheduled run (and in runs triggered by hand).

    A run is the latest when now falls after its own data interval's end and no later
    than the next run's: otherwise its direct downstream tasks are skipped (their own
    downstream follow their trigger rules).
    """

    ui_color = "#e9ffdb"

    def execute(self, context: dict[str, Any]) -> Any:
        dag_run = context.get("dag_run")
        if getattr(dag_run, "run_type", "manual") == "manual" or getattr(dag_run, "external_trigger", False):
            print("Externally triggered DAG run: allowing execution to proceed.", flush=True)
            return list(self.downstream_task_ids)
        from scheduler.timetables.base import DataInterval

        start, end = context["data_interval_start"], context["data_interval_end"]
        next_info = self.dag.timetable.next_dagrun_info(
            last_automated_data_interval=DataInterval(start, end), last_logical_date=context["logical_date"],
            start_date=None, end_date=None, catchup=True, now=utcnow(),
        )
        if next_info is None:
            print("Last scheduled run: allowing execution to proceed.", flush=True)
            return list(self.downstream_task_ids)
        now = utcnow()
        left, right = next_info.data_interval.start, next_info.data_interval.end
        print(f"Checking latest only: left window {left.isoformat()}, right window {right.isoformat()}, "
              f"now {now.isoformat()}", flush=True)
        if left < now <= right:
            print("Latest: allowing execution to proceed.", flush=True)
            return list(self.downstream_task_ids)
        print("Not the latest run: skipping the direct downstream tasks.", flush=True)
        self.skip_all_except(context, [])
        return []
