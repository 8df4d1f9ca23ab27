"""``updraft dags test`` and ``updraft tasks test``: a DAG run (or one task) in this process, no database.

Tasks run one at a time in topological order. Each pending task's trigger rule is
evaluated from its upstream states; a retry runs at once (retry_delay is not awaited);
a sensor in reschedule mode is poked again, in the same try, once its reschedule date
has come (that wait is real: it sleeps);
branch and short-circuit skips are applied to tasks still pending. The run is failed
when a leaf task is failed or upstream_failed, success otherwise (Airflow's rule).
Log lines look like Airflow's: ``[2026-11-25T22:00:00.123+0000] {dag_id.task_id} INFO - ...``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from scheduler.clock import make_aware, utcnow
from scheduler.exceptions import ParamValidationError
from scheduler.execution import TryOutcome, execute_try, run_callbacks
from scheduler.logfmt import AirflowFormatter, standalone_logger
from scheduler.runtime import MemoryXComStore, RuntimeDagRun, RuntimeTaskInstance
from scheduler.states import DagRunState, TaskInstanceState
from scheduler.templating import Context, build_context, resolve_task_params
from scheduler.trigger_rules import Decision, UpstreamCounts, evaluate

if TYPE_CHECKING:
    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.authoring.dag import DAG

S = TaskInstanceState
Variables = Callable[[str], str | None]


@dataclass
class DagTestResult:
    """The outcome of an in-process run. ``tries`` is 0 for tasks never executed (skipped,
    upstream_failed, and EmptyOperators marked success directly)."""

    state: DagRunState
    task_states: dict[str, TaskInstanceState]
    tries: dict[str, int]
    run_id: str
    logical_date: datetime
    xcoms: dict[str, dict[str, Any]]
    durations: dict[str, float] = field(default_factory=dict)
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    #: mapped task id -> map index -> state, and the return values of the map indexes in order
    mapped_states: dict[str, dict[int, TaskInstanceState]] = field(default_factory=dict)
    mapped_xcoms: dict[str, list[Any]] = field(default_factory=dict)
    #: the runs this test saw (its own, and those its tasks triggered)
    dag_runs: MemoryDagRunsService | None = None


# --- log lines -------------------------------------------------------------------------------


_AirflowFormatter = AirflowFormatter


def _logger(name: str, out: TextIO) -> logging.Logger:
    """A logger outside the logging tree (no global state, no propagation) writing to ``out``."""
    return standalone_logger(name, out)


@contextlib.contextmanager
def _stdout_to(out: TextIO) -> Iterator[None]:
    if out is sys.stdout:
        yield
    else:
        with contextlib.redirect_stdout(out):
            yield


# --- the run ------------------------------------------------------------------------------------


@dataclass
class _Run:
    """One in-process DAG run: its identity, its settings and what happened so far."""

    dag: DAG
    conf: dict[str, Any]
    variables: Variables | None
    out: TextIO
    dag_run: RuntimeDagRun
    xcom: MemoryXComStore = field(default_factory=MemoryXComStore)
    states: dict[str, TaskInstanceState] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    #: mapped task id -> map index -> state (a mapped task's own entry in ``states`` sums them up)
    mapped_states: dict[str, dict[int, TaskInstanceState]] = field(default_factory=dict)
    dag_runs: MemoryDagRunsService | None = None
    max_map_length: int = 1024
    _logs: dict[str, logging.Logger] = field(default_factory=dict)

    def log(self, task_id: str | None = None) -> logging.Logger:
        name = self.dag.dag_id if task_id is None else f"{self.dag.dag_id}.{task_id}"
        if name not in self._logs:
            self._logs[name] = _logger(name, self.out)
        return self._logs[name]

    def context(self, task: BaseOperator, ti: RuntimeTaskInstance) -> Context:
        context = self._context(task, ti)
        if self.dag_runs is not None:
            context["dag_runs_service"] = self.dag_runs
        return context

    def _context(self, task: BaseOperator, ti: RuntimeTaskInstance) -> Context:
        return build_context(
            dag=self.dag,
            task=task,
            ti=ti,
            run_id=self.dag_run.run_id,
            logical_date=self.dag_run.logical_date,
            data_interval_start=self.dag_run.data_interval_start,
            data_interval_end=self.dag_run.data_interval_end,
            conf=self.conf,
            params=resolve_task_params(task, self.conf),
            run_type=self.dag_run.run_type,
            variables=self.variables,
            dag_run=self.dag_run,
        )

    def try_once(
        self, task: BaseOperator, try_number: int, max_tries: int,
        on_rendered: Callable[[dict[str, Any]], None] | None = None,
        reschedules: list[datetime] | None = None, map_index: int = -1, first_start: datetime | None = None,
    ) -> TryOutcome:
        """One try on a shallow copy of the task, so rendering never changes the DAG's own task.

        ``reschedules``: start times of this try's earlier runs that ended up_for_reschedule;
        ``first_start``: the first of them in an earlier try (a sensor's timeout counts from it, as in Airflow).
        """
        working = copy.copy(task)
        log = self.log(task.task_id)
        ti = RuntimeTaskInstance(
            task=working, run_id=self.dag_run.run_id, xcom=self.xcom, try_number=try_number,
            max_tries=max_tries, dag_run=self.dag_run, log=log, map_index=map_index,
        )
        ti.first_try_start = first_start or (reschedules[0] if reschedules else None)  # type: ignore[attr-defined]
        ti.task_reschedule_count = len(reschedules or ())  # type: ignore[attr-defined]
        context = self.context(working, ti)
        label = task.task_id if map_index < 0 else f"{task.task_id}[{map_index}]"
        log.info("Running task %s (try %d of %d)", label, try_number, max_tries + 1)
        with _stdout_to(self.out):
            return execute_try(working, context, xcom=self.xcom, log=log, on_rendered=on_rendered)

    # --- scheduling ----------------------------------------------------------------------------

    def run_all(self) -> None:
        order = self.dag.topological_order()
        self.states = {tid: S.NONE for tid in order}
        self.tries = {tid: 0 for tid in order}
        self.durations = {tid: 0.0 for tid in order}
        progressed = True
        while progressed:
            progressed = False
            for task_id in order:
                if self.states[task_id] is S.NONE and self._step(self.dag.task_dict[task_id]):
                    progressed = True
        stuck = [t for t, s in self.states.items() if not s.is_finished]
        if stuck:  # pragma: no cover - every rule decides once all upstream tasks are final
            raise RuntimeError(f"DAG '{self.dag.dag_id}': tasks {stuck} could not be decided")

    def _step(self, task: BaseOperator) -> bool:
        """Decide and, if ready, run one pending task; False while it must wait."""
        counts = UpstreamCounts.from_states(self._upstream_states(task))
        decision = evaluate(task.trigger_rule, counts)
        log = self.log(task.task_id)
        if decision is Decision.WAIT:
            return False
        if decision is Decision.SKIP:
            self.states[task.task_id] = S.SKIPPED
            log.info("Marking task as SKIPPED: trigger rule '%s' can no longer be met (%s)",
                     task.trigger_rule.value, _describe(counts))
        elif decision is Decision.UPSTREAM_FAILED:
            self.states[task.task_id] = S.UPSTREAM_FAILED
            log.info("Marking task as UPSTREAM_FAILED: trigger rule '%s' can no longer be met (%s)",
                     task.trigger_rule.value, _describe(counts))
        elif task.is_mapped:
            self._run_mapped(task)
        elif _runs_without_executing(task):
            self.states[task.task_id] = S.SUCCESS
            log.info("Marking task as SUCCESS without running it (%s)", type(task).__name__)
        else:
            self._run_with_retries(task)
        return True

    def _upstream_states(self, task: BaseOperator) -> list[TaskInstanceState]:
        """The states the trigger rule counts: one per upstream task, one per map index of a mapped one."""
        states: list[TaskInstanceState] = []
        for u in sorted(task.upstream_task_ids):
            if u in self.mapped_states and self.mapped_states[u]:
                states.extend(self.mapped_states[u].values())
            else:
                states.append(self.states[u])
        return states

    def _run_mapped(self, task: BaseOperator) -> None:
        """Expand a mapped task now that its input is known, and run every map index (retries each)."""
        from scheduler.authoring.mapping import MappedOperator, MappingError

        assert isinstance(task, MappedOperator)
        log = self.log(task.task_id)
        probe = RuntimeTaskInstance(task=task, run_id=self.dag_run.run_id, xcom=self.xcom, dag_run=self.dag_run, log=log)
        probe_context = self.context(task, probe)
        try:
            length = task.map_length(lambda arg: arg.resolve(probe_context), self.max_map_length)
        except MappingError as exc:
            self.states[task.task_id] = S.FAILED
            log.error("Marking task as FAILED: %s", exc)
            return
        if length == 0:
            self.states[task.task_id] = S.SKIPPED
            log.info("Marking task as SKIPPED: it maps over nothing (length 0)")
            return
        log.info("Expanding mapped task into %d task instances", length)
        self.mapped_states[task.task_id] = {i: S.NONE for i in range(length)}
        for index in range(length):
            self._run_with_retries(task, map_index=index)
        final = list(self.mapped_states[task.task_id].values())
        if any(st is S.FAILED for st in final):
            self.states[task.task_id] = S.FAILED
        elif all(st is S.SKIPPED for st in final):
            self.states[task.task_id] = S.SKIPPED
        else:
            self.states[task.task_id] = S.SUCCESS

    def _run_with_retries(self, task: BaseOperator, map_index: int = -1) -> None:
        max_tries = task.retries
        try_number = 1
        reschedules: list[datetime] = []
        first_start: datetime | None = None  # a retry does not start a rescheduled sensor's timeout over
        while True:
            started = utcnow()
            outcome = self.try_once(task, try_number, max_tries, reschedules=reschedules, map_index=map_index,
                                    first_start=first_start)
            self.tries[task.task_id] = max(self.tries[task.task_id], try_number)
            self.durations[task.task_id] += outcome.duration
            if outcome.state is S.UP_FOR_RESCHEDULE and outcome.reschedule_date is not None:
                reschedules.append(started)
                self._wait_until(task, outcome.reschedule_date)
                continue
            first_start = first_start or (reschedules[0] if reschedules else None)
            reschedules = []
            if not outcome.up_for_retry:
                break
            try_number += 1
            self.log(task.task_id).info(
                "retrying (try %d of %d), retry_delay not awaited in dags test", try_number, max_tries + 1
            )
        if map_index >= 0:
            self.mapped_states[task.task_id][map_index] = outcome.state
        else:
            self.states[task.task_id] = outcome.state
        for skipped in outcome.skip_task_ids:
            if self.states.get(skipped) is S.NONE:
                self.states[skipped] = S.SKIPPED
                self.log(skipped).info("Marking task as SKIPPED: skipped by '%s'", task.task_id)

    def _wait_until(self, task: BaseOperator, when: datetime) -> None:
        """A sensor in reschedule mode: sleep (in real time) until its next poke is due; same try.

        The sensor's own timeout (counted from the first poke of the try) ends the waiting.
        """
        delay = max((when - utcnow()).total_seconds(), 0.0)
        self.log(task.task_id).info("up_for_reschedule: poking again at %s (waiting %.3gs)", when.isoformat(), delay)
        time.sleep(delay)

    # --- the end ------------------------------------------------------------------------------------

    def final_state(self) -> DagRunState:
        for leaf in self.dag.leaves:
            if self.states[leaf.task_id] in (S.FAILED, S.UPSTREAM_FAILED):
                return DagRunState.FAILED
            if any(st in (S.FAILED, S.UPSTREAM_FAILED) for st in self.mapped_states.get(leaf.task_id, {}).values()):
                return DagRunState.FAILED
        return DagRunState.SUCCESS

    def dag_callbacks(self, state: DagRunState) -> None:
        """The DAG's on_success / on_failure callback, with the context of the deciding task."""
        callbacks = self.dag.on_success_callback if state is DagRunState.SUCCESS else self.dag.on_failure_callback
        if callbacks is None or not self.states:
            return
        order = list(self.states)
        if state is DagRunState.SUCCESS:
            task_id = order[-1]
            reason = "success"
        else:
            task_id = next((t for t in order if self.states[t] is S.FAILED), order[-1])
            reason = "task_failure"
        task = self.dag.task_dict[task_id]
        ti = RuntimeTaskInstance(
            task=task, run_id=self.dag_run.run_id, xcom=self.xcom, try_number=max(self.tries[task_id], 1),
            dag_run=self.dag_run, log=self.log(),
        )
        ti.state = self.states[task_id]
        context = self.context(task, ti)
        context["reason"] = reason
        with _stdout_to(self.out):
            run_callbacks(callbacks, context, self.log(), f"DAG {'on_success' if reason == 'success' else 'on_failure'}_callback")

    def summary(self, state: DagRunState) -> None:
        rows = [("task_id", "state", "tries", "duration")]
        for t, st in self.states.items():
            rows.append((t, str(st), str(self.tries[t]), f"{self.durations[t]:.2f}s"))
            rows += [(f"{t}[{i}]", str(ms), "", "") for i, ms in sorted(self.mapped_states.get(t, {}).items())]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        self.out.write("\n".join(lines) + "\n")
        self.log().info("Dag run %s finished with state %s", self.dag_run.run_id, state.value)
        self.out.flush()


class MemoryDagRunsService:
    """The runs other DAGs' operators see in ``dags test``: kept in memory, nothing recorded.

    A TriggerDagRunOperator's run is run at once, in this process, when ``dag_loader`` can
    load the triggered DAG (its outcome is then known to ``wait_for_completion`` and to
    ExternalTaskSensors); otherwise it stays queued.
    """

    def __init__(self, *, dag_loader: Callable[[str], DAG] | None, out: TextIO, variables: Variables | None,
                 current: DAG) -> None:
        self.dag_loader = dag_loader
        self.out = out
        self.variables = variables
        self._dags: dict[str, DAG] = {current.dag_id: current}
        #: (dag_id, run_id) -> (logical_date, state, task states)
        self.runs: dict[tuple[str, str], tuple[datetime, str, dict[str, str]]] = {}
        self.triggered: list[tuple[str, str, dict[str, Any]]] = []

    def record(self, dag_id: str, run_id: str, logical_date: datetime, state: str,
               task_states: dict[str, str] | None = None) -> None:
        self.runs[(dag_id, run_id)] = (logical_date, state, dict(task_states or {}))

    def _dag(self, dag_id: str) -> DAG | None:
        if dag_id not in self._dags and self.dag_loader is not None:
            try:
                self._dags[dag_id] = self.dag_loader(dag_id)
            except Exception:  # noqa: BLE001 - an unknown or broken DAG is "does not exist" here
                return None
        return self._dags.get(dag_id)

    def dag_exists(self, dag_id: str) -> bool:
        return self._dag(dag_id) is not None or self.dag_loader is None

    def task_ids(self, dag_id: str) -> list[str] | None:
        dag = self._dag(dag_id)
        return None if dag is None else list(dag.task_dict)

    def group_task_ids(self, dag_id: str, group_id: str) -> list[str]:
        dag = self._dag(dag_id)
        group = dag.task_group_dict.get(group_id) if dag is not None else None
        return [] if group is None else [t.task_id for t in group.iter_tasks()]

    def trigger(self, dag_id: str, *, run_id: str, logical_date: datetime, conf: dict[str, Any]) -> None:
        from scheduler.authoring.cross_dag import DagRunExists

        if (dag_id, run_id) in self.runs:
            raise DagRunExists(f"DAGRun with DAG ID: '{dag_id}' and DAGRun ID: '{run_id}' already exists")
        self.triggered.append((dag_id, run_id, dict(conf)))
        self.record(dag_id, run_id, logical_date, "queued")
        dag = self._dag(dag_id) if self.dag_loader is not None else None
        if dag is None:
            return
        result = run_dag_in_process(dag, logical_date=logical_date, conf=conf, variables=self.variables,
                                    out=self.out, dag_loader=self.dag_loader, dag_runs=self)
        # the nested run is keyed by its own run id; keep the one the operator asked for too
        self.record(dag_id, run_id, logical_date, result.state.value,
                    {t: str(s) for t, s in result.task_states.items()})

    def reset(self, dag_id: str, run_id: str) -> None:
        logical_date, _state, _tasks = self.runs.pop((dag_id, run_id))
        self.trigger(dag_id, run_id=run_id, logical_date=logical_date, conf={})

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        found = self.runs.get((dag_id, run_id))
        return None if found is None else found[1]

    def count(self, dag_id: str, logical_dates: Any, task_ids: Any, states: Any) -> int:
        wanted = {str(s) for s in states}
        dates = set(logical_dates)
        total = 0
        for (d, _r), (when, state, tasks) in self.runs.items():
            if d != dag_id or when not in dates:
                continue
            if task_ids is None:
                total += state in wanted
            else:
                total += sum(1 for t in task_ids if tasks.get(t) in wanted)
        return total


def _runs_without_executing(task: BaseOperator) -> bool:
    """EmptyOperator without callbacks is marked success directly, as Airflow's scheduler does."""
    return bool(task.inherits_from_empty_operator and not task.on_execute_callback and not task.on_success_callback)


def _describe(counts: UpstreamCounts) -> str:
    parts = [f"{name}={getattr(counts, name)}" for name in ("success", "skipped", "failed", "upstream_failed")]
    return f"upstream: total={counts.total}, " + ", ".join(parts)


# --- entry points -------------------------------------------------------------------------------


def _check_conf(dag: DAG, conf: Any) -> dict[str, Any]:
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise ParamValidationError(f"DAG '{dag.dag_id}': conf must be a JSON object (a dict), got {type(conf).__name__}")
    return conf


def _start(
    dag: DAG, logical_date: datetime | None, conf: Any, variables: Variables | None, out: TextIO | None,
    run_id_prefix: str, dag_loader: Callable[[str], DAG] | None = None,
) -> _Run:
    """Validate conf and params (before anything runs) and set up the run's identity."""
    run_conf = _check_conf(dag, conf)
    dag.resolve_params(run_conf)
    for task in dag.tasks:
        resolve_task_params(task, run_conf)
    when = utcnow() if logical_date is None else make_aware(logical_date, dag.timezone).astimezone(UTC)
    interval = dag.timetable.infer_manual_data_interval(run_after=when)
    run_id = run_id_prefix.format(when.isoformat())
    dag_run = RuntimeDagRun(
        dag_id=dag.dag_id, run_id=run_id, logical_date=when,
        data_interval_start=interval.start.astimezone(UTC), data_interval_end=interval.end.astimezone(UTC),
        run_type="manual", conf=run_conf, start_date=utcnow(),
    )
    run = _Run(dag=dag, conf=run_conf, variables=variables, out=out or sys.stdout, dag_run=dag_run)
    run.dag_runs = MemoryDagRunsService(dag_loader=dag_loader, out=run.out, variables=variables, current=dag)
    run.dag_runs.record(dag.dag_id, run_id, when, "running")
    return run


def run_dag_in_process(
    dag: DAG,
    *,
    logical_date: datetime | None = None,
    conf: dict[str, Any] | None = None,
    variables: Variables | None = None,
    out: TextIO | None = None,
    dag_loader: Callable[[str], DAG] | None = None,
    dag_runs: MemoryDagRunsService | None = None,
) -> DagTestResult:
    """Run every task of ``dag`` once in this process (``updraft dags test``); nothing is recorded.

    ``logical_date`` defaults to now (a naive one is read in the DAG's time zone); the run id
    is ``manual__<iso>``; invalid conf raises ParamValidationError before anything runs.
    Output (log lines, task output, the summary table) goes to ``out`` (default: stdout).
    """
    run = _start(dag, logical_date, conf, variables, out, "manual__{}", dag_loader)
    if dag_runs is not None:  # a DAG triggered by another in the same `dags test` shares its runs
        dag_runs.record(dag.dag_id, run.dag_run.run_id, run.dag_run.logical_date, "running")
        run.dag_runs = dag_runs
    run.log().info("Running DAG %s, run %s (data interval %s to %s)", dag.dag_id, run.dag_run.run_id,
                   run.dag_run.data_interval_start.isoformat(), run.dag_run.data_interval_end.isoformat())
    run.run_all()
    state = run.final_state()
    run.dag_run.state = state.value
    run.dag_callbacks(state)
    run.summary(state)
    assert run.dag_runs is not None
    run.dag_runs.record(dag.dag_id, run.dag_run.run_id, run.dag_run.logical_date, state.value,
                        {**{t: str(s) for t, s in run.states.items()}})
    return DagTestResult(
        state=state,
        task_states=dict(run.states),
        tries=dict(run.tries),
        run_id=run.dag_run.run_id,
        logical_date=run.dag_run.logical_date,
        xcoms=run.xcom.for_run(dag.dag_id, run.dag_run.run_id),
        durations=dict(run.durations),
        data_interval_start=run.dag_run.data_interval_start,
        data_interval_end=run.dag_run.data_interval_end,
        mapped_states={t: dict(m) for t, m in run.mapped_states.items()},
        mapped_xcoms={t: run.xcom.pull_mapped(dag.dag_id, run.dag_run.run_id, t, "return_value")
                      for t in run.mapped_states},
        dag_runs=run.dag_runs,
    )


def run_task_in_process(
    dag: DAG,
    task_id: str,
    *,
    logical_date: datetime | None = None,
    conf: dict[str, Any] | None = None,
    variables: Variables | None = None,
    out: TextIO | None = None,
) -> TryOutcome:
    """One try of one task, ignoring its dependencies and recording nothing (``updraft tasks test``).

    Prints the rendered template fields, then the task's output and log lines. XComs of
    upstream tasks are not available (they pull as None). Raises TaskNotFound for an unknown id.
    """
    task = dag.get_task(task_id)
    run = _start(dag, logical_date, conf, variables, out, "__updraft_temporary_run_{}__")

    def show(rendered: dict[str, Any]) -> None:
        for name, value in rendered.items():
            text = json.dumps(value, indent=2, sort_keys=True) if isinstance(value, dict | list) else str(value)
            run.out.write(f"# {'-' * 58}\n# property: {name}\n# {'-' * 58}\n{text}\n")
        run.out.flush()

    outcome = run.try_once(task, 1, 0, on_rendered=show)
    run.log(task_id).info("Task %s finished with state %s (not recorded)", task_id, outcome.state.value)
    return outcome
