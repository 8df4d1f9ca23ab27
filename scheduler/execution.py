"""One try of one task, in this process: render, execute, push XCom, call the callbacks.

No database: the caller builds the context (``templating.build_context``), passes an
XCom store and a logger, records the outcome and decides whether another try follows.
The task's stdout goes wherever the caller's stdout goes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scheduler.clock import utcnow
from scheduler.exceptions import TaskFailedNoRetry, TaskRescheduled, TaskSkipped, UpdraftError, XComError
from scheduler.runtime import RETURN_KEY, RuntimeTaskInstance, XComStore
from scheduler.states import TaskInstanceState
from scheduler.templating import render_template_fields

if TYPE_CHECKING:
    from scheduler.authoring.baseoperator import BaseOperator


#: The contexts of the tries running in this process, innermost last (``get_current_context``).
_CONTEXTS: list[dict[str, Any]] = []


def current_context() -> dict[str, Any]:
    """The context of the task try running in this process; RuntimeError outside a try."""
    if not _CONTEXTS:
        raise RuntimeError("no task is running in this process: get_current_context() works only inside a task")
    return _CONTEXTS[-1]


class TaskExecutionTimeout(UpdraftError):
    """The task ran longer than its execution_timeout (Airflow: AirflowTaskTimeout); retries apply."""


@dataclass
class TryOutcome:
    """How one try ended.

    ``state`` is success, failed or skipped. A failed try is ``up_for_retry`` when the
    failure allows retries and tries remain (``ti.try_number <= ti.max_tries``); the
    retry callback was then called instead of the failure callback.
    """

    state: TaskInstanceState
    return_value: Any = None
    error: str | None = None
    fail_fast_no_retry: bool = False
    skip_task_ids: list[str] = field(default_factory=list)
    rendered_fields: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    up_for_retry: bool = False
    #: Set when a sensor in reschedule mode asked to poke again later (state up_for_reschedule).
    reschedule_date: datetime | None = None


def execute_try(
    task: BaseOperator,
    context: dict[str, Any],
    *,
    xcom: XComStore,
    log: logging.Logger,
    on_rendered: Callable[[dict[str, Any]], None] | None = None,
) -> TryOutcome:
    """Run one try of ``task`` with ``context`` (whose ``ti`` is a RuntimeTaskInstance using ``xcom``).

    Order: clear this task instance's XComs, render templated fields (a TemplateError
    fails the try), pre_execute, on_execute_callback, execute (bounded by
    execution_timeout where signals allow), push the return value, post_execute; then
    on_success / on_retry / on_failure callbacks, whose errors are logged and never
    change the outcome. ``on_rendered`` (``tasks test``) sees the rendered fields before
    anything executes.
    """
    _CONTEXTS.append(context)
    try:
        return _execute_try(task, context, xcom=xcom, log=log, on_rendered=on_rendered)
    finally:
        _CONTEXTS.pop()


def _execute_try(
    task: BaseOperator,
    context: dict[str, Any],
    *,
    xcom: XComStore,
    log: logging.Logger,
    on_rendered: Callable[[dict[str, Any]], None] | None = None,
) -> TryOutcome:
    ti: RuntimeTaskInstance = context["ti"]
    started = time.monotonic()
    ti.start_date = utcnow()
    ti.state = TaskInstanceState.RUNNING
    xcom.clear(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
    outcome = TryOutcome(state=TaskInstanceState.FAILED)
    error: BaseException | None = None
    try:
        if task.is_mapped:  # the real operator of this map index
            task = _unmap(task, context)
        outcome.rendered_fields = render_template_fields(task, context)
        if "templates_dict" in task.template_fields:
            context["templates_dict"] = getattr(task, "templates_dict", None)
        if on_rendered is not None:
            on_rendered(outcome.rendered_fields)
        log.info("Executing %r on %s", task, context.get("logical_date"))
        task.pre_execute(context)
        run_callbacks(task.on_execute_callback, context, log, "on_execute_callback")
        with _execution_timeout(task):
            result = task.execute(context)
        _push_result(task, ti, result)
        task.post_execute(context, result)
    except TaskRescheduled as exc:
        outcome.state = TaskInstanceState.UP_FOR_RESCHEDULE
        outcome.reschedule_date = exc.reschedule_date
        log.info("Rescheduling task '%s' to %s", ti.task_id, exc.reschedule_date.isoformat())
    except TaskSkipped as exc:
        outcome.state = TaskInstanceState.SKIPPED
        log.info("Skipping task '%s': %s", ti.task_id, str(exc) or type(exc).__name__)
    except TaskFailedNoRetry as exc:
        error = exc
        outcome.fail_fast_no_retry = True
        outcome.error = traceback.format_exc()
        log.error("Task '%s' failed without retries: %s\n%s", ti.task_id, exc, outcome.error.rstrip())
    except (Exception, SystemExit) as exc:
        error = exc
        outcome.error = traceback.format_exc()
        log.error("Task '%s' failed with exception\n%s", ti.task_id, outcome.error.rstrip())
    else:
        outcome.state = TaskInstanceState.SUCCESS
        outcome.return_value = result
        outcome.skip_task_ids = list(ti.skipped_task_ids)
    outcome.duration = time.monotonic() - started
    ti.end_date = utcnow()
    _finish(task, ti, context, outcome, error, log)
    return outcome


def _unmap(task: BaseOperator, context: dict[str, Any]) -> BaseOperator:
    from scheduler.authoring.mapping import MappedOperator

    assert isinstance(task, MappedOperator)
    ti: RuntimeTaskInstance = context["ti"]
    if ti.map_index < 0:
        raise UpdraftError(f"mapped task '{task.task_id}' runs only as expanded instances (map_index >= 0)")
    real = task.unmap(ti.map_index, lambda arg: arg.resolve(context))
    context["task"] = real
    ti.task = real
    return real


def _finish(
    task: BaseOperator,
    ti: RuntimeTaskInstance,
    context: dict[str, Any],
    outcome: TryOutcome,
    error: BaseException | None,
    log: logging.Logger,
) -> None:
    if outcome.state is TaskInstanceState.SUCCESS:
        ti.state = TaskInstanceState.SUCCESS
        log.info("Marking task as SUCCESS. dag_id=%s, task_id=%s, run_id=%s", ti.dag_id, ti.task_id, ti.run_id)
        run_callbacks(task.on_success_callback, context, log, "on_success_callback")
        return
    if outcome.state is TaskInstanceState.UP_FOR_RESCHEDULE:
        ti.state = TaskInstanceState.UP_FOR_RESCHEDULE
        return
    if outcome.state is TaskInstanceState.SKIPPED:
        ti.state = TaskInstanceState.SKIPPED
        log.info("Marking task as SKIPPED. dag_id=%s, task_id=%s, run_id=%s", ti.dag_id, ti.task_id, ti.run_id)
        return
    context["exception"] = error
    outcome.up_for_retry = not outcome.fail_fast_no_retry and ti.try_number <= ti.max_tries
    if outcome.up_for_retry:
        ti.state = TaskInstanceState.UP_FOR_RETRY
        log.info("Marking task as UP_FOR_RETRY. dag_id=%s, task_id=%s, run_id=%s", ti.dag_id, ti.task_id, ti.run_id)
        run_callbacks(task.on_retry_callback, context, log, "on_retry_callback")
    else:
        ti.state = TaskInstanceState.FAILED
        log.info("Marking task as FAILED. dag_id=%s, task_id=%s, run_id=%s", ti.dag_id, ti.task_id, ti.run_id)
        run_callbacks(task.on_failure_callback, context, log, "on_failure_callback")


def _push_result(task: BaseOperator, ti: RuntimeTaskInstance, result: Any) -> None:
    """The return value to XCom (``return_value``), and key by key for multiple_outputs."""
    if not task.do_xcom_push or result is None:
        return
    if task.multiple_outputs:
        if not isinstance(result, Mapping):
            raise XComError(
                f"task '{task.task_id}': returned {type(result).__name__}, "
                "but multiple_outputs needs a dict"
            )
        for key in result:
            if not isinstance(key, str):
                raise XComError(
                    f"task '{task.task_id}': multiple_outputs needs string keys, got {key!r} ({type(key).__name__})"
                )
        for key, value in result.items():
            ti.xcom_push(key, value)
    ti.xcom_push(RETURN_KEY, result)


def run_callbacks(
    callbacks: Callable[..., Any] | list[Callable[..., Any]] | None,
    context: Mapping[str, Any],
    log: logging.Logger,
    name: str,
) -> None:
    """Call each callback (one or a list) with the context; log, never raise, what they raise."""
    if callbacks is None:
        return
    for callback in callbacks if isinstance(callbacks, list | tuple) else [callbacks]:
        try:
            callback(context)
        except Exception:
            log.exception("Error when executing %s %s", name, getattr(callback, "__name__", repr(callback)))


@contextlib.contextmanager
def _execution_timeout(task: BaseOperator) -> Iterator[None]:
    """Raise TaskExecutionTimeout in the task after ``execution_timeout`` (main thread, SIGALRM only)."""
    limit = task.execution_timeout
    usable = (
        limit is not None
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable or limit is None:
        yield
        return
    seconds = max(limit.total_seconds(), 0.001)

    def on_alarm(signum: int, frame: Any) -> None:
        raise TaskExecutionTimeout(f"task '{task.task_id}' timed out after {limit}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except TaskExecutionTimeout:
        task.on_kill()
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
