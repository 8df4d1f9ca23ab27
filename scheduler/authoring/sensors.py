"""Sensors: tasks that wait for a condition, poking it until it holds or a timeout passes.

A sensor implements ``poke(context)``, returning a truth value or a
:class:`PokeReturnValue` (whose ``xcom_value`` becomes the task's return value once
it is done). :meth:`BaseSensorOperator.execute` does the waiting, in one of two modes:

* ``mode="poke"`` (default): poke, sleep ``poke_interval``, poke again, in this
  process, until the condition holds or ``timeout`` has passed since the try began.
* ``mode="reschedule"``: poke once per run of the task. Not done yet: raise
  :class:`~scheduler.exceptions.TaskRescheduled` with the next poke's date, which
  frees the worker slot; the task becomes ``up_for_reschedule`` and the same try
  runs again at that date. The timeout counts from the first poke of the first try
  since the last clear (Airflow: a retry does not start it over), which the task
  runner gives as ``context["ti"].first_try_start`` (None on that first poke),
  and the number of earlier reschedules as ``ti.task_reschedule_count`` (or the
  context key ``task_reschedule_count``; used by exponential backoff).

On timeout the task fails without retries (:class:`SensorTimeout`, Airflow's
AirflowSensorTimeout), or is skipped with ``soft_fail=True``. Retries apply to
errors raised by ``poke`` itself, unless ``silent_fail`` (the error is logged and
counts as "not yet") or ``never_fail`` (the task is skipped).

``exponential_backoff`` spaces pokes as Airflow does: before poke ``n + 1`` (n pokes
done) the wait is ``b + j`` where ``b = poke_interval * 2 ** (n - 2)`` and ``j`` in
``[0, b)`` is a deterministic jitter from a SHA-1 of dag id, task id, the try's start
and ``n``; never longer than the time left before the timeout, nor than ``max_wait``.
(Airflow rounds ``b`` down to whole seconds, at least 1; here it is kept in
fractions of a second when ``poke_interval`` is under a second, so short intervals
stay short.)
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.authoring.baseoperator import BaseOperator
from scheduler.authoring.operators import call_with_context
from scheduler.clock import make_aware, parse_datetime, utcnow
from scheduler.exceptions import DagDefinitionError, TaskFailedNoRetry, TaskRescheduled, TaskSkipped

logger = logging.getLogger(__name__)

#: Airflow's [sensors] default_timeout: seven days.
DEFAULT_TIMEOUT = timedelta(days=7)
VALID_MODES = ("poke", "reschedule")


class SensorTimeout(TaskFailedNoRetry):
    """A sensor's condition did not hold within its timeout; the task fails without retries (Airflow: AirflowSensorTimeout)."""


AirflowSensorTimeout = SensorTimeout


@dataclass
class PokeReturnValue:
    """What ``poke`` may return instead of a bool: whether the sensor is done and, if so, the value to push to XCom."""

    is_done: bool
    xcom_value: Any = None

    def __bool__(self) -> bool:
        return bool(self.is_done)


def _seconds(value: Any, task_id: Any, name: str, *, allow_none: bool = False) -> float | None:
    """A duration given as a timedelta or seconds, as seconds >= 0; DagDefinitionError otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise DagDefinitionError(f"task '{task_id}': {name} must be a timedelta or a number of seconds, got {value!r}")
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise DagDefinitionError(f"task '{task_id}': {name} must not be negative, got {value!r}")
    return seconds


class BaseSensorOperator(BaseOperator):
    """Waits for ``poke(context)`` to come true; see the module documentation for the modes and the timeout."""

    ui_color = "#e6f1f2"
    valid_modes: Sequence[str] = VALID_MODES

    def __init__(
        self,
        *,
        poke_interval: timedelta | float = 60,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        soft_fail: bool = False,
        mode: str = "poke",
        exponential_backoff: bool = False,
        max_wait: timedelta | float | None = None,
        silent_fail: bool = False,
        never_fail: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        self.poke_interval = _seconds(poke_interval, task_id, "poke_interval") or 0.0
        self.timeout = _seconds(timeout, task_id, "timeout") or 0.0
        self.max_wait = _seconds(max_wait, task_id, "max_wait", allow_none=True)
        if mode not in self.valid_modes:
            raise DagDefinitionError(
                f"task '{task_id}': unknown sensor mode {mode!r}; expected one of {', '.join(self.valid_modes)}"
            )
        if soft_fail and never_fail:
            raise DagDefinitionError(f"task '{task_id}': soft_fail and never_fail cannot both be set")
        self.mode = mode
        self.soft_fail = bool(soft_fail)
        self.exponential_backoff = bool(exponential_backoff)
        self.silent_fail = bool(silent_fail)
        self.never_fail = bool(never_fail)
        super().__init__(**kwargs)

    @property
    def reschedule(self) -> bool:
        return self.mode == "reschedule"

    def poke(self, context: dict[str, Any]) -> bool | PokeReturnValue:
        """True (or a done PokeReturnValue) once the condition holds; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement poke(context)")

    # --- timing ----------------------------------------------------------------------------------

    @staticmethod
    def now() -> datetime:
        """The current instant (a seam for tests)."""
        return utcnow()

    def next_poke_interval(self, started_at: datetime, elapsed: float, poke_count: int) -> float:
        """Seconds to wait after ``poke_count`` pokes of the try that started at ``started_at``, ``elapsed`` seconds ago."""
        remaining = max(self.timeout - elapsed, 0.0)
        if not self.exponential_backoff:
            return min(self.poke_interval, remaining)
        base = self.poke_interval * 2.0 ** (poke_count - 2)
        if self.poke_interval >= 1:
            base = float(max(int(base), 1))
        if base <= 0:
            return 0.0
        seed = f"{self.dag_id}#{self.task_id}#{started_at.isoformat()}#{poke_count}".encode()
        fraction = int(hashlib.sha1(seed).hexdigest(), 16) % 1_000_000 / 1_000_000
        interval = min(base * (1.0 + fraction), remaining)
        if self.max_wait is not None:
            interval = min(interval, self.max_wait)
        return interval

    # --- running ---------------------------------------------------------------------------------

    def _poke_once(self, context: dict[str, Any], log: Any) -> PokeReturnValue:
        try:
            result = self.poke(context)
        except (TaskSkipped, TaskRescheduled):
            raise
        except TaskFailedNoRetry as exc:
            if self.soft_fail or self.never_fail:
                raise TaskSkipped(f"Skipping: {type(exc).__name__} in poke and soft_fail/never_fail is set: {exc}") from exc
            raise
        except Exception as exc:
            if self.silent_fail:
                log.error("Sensor poke failed (silent_fail is set, poking again later): %s: %s",
                          type(exc).__name__, exc, exc_info=True)
                return PokeReturnValue(False)
            if self.never_fail:
                raise TaskSkipped(f"Skipping: poke raised {type(exc).__name__} and never_fail is set: {exc}") from exc
            raise
        if isinstance(result, PokeReturnValue):
            return result
        return PokeReturnValue(bool(result))

    def execute(self, context: dict[str, Any]) -> Any:
        from scheduler.execution import TaskExecutionTimeout

        ti = context.get("ti")
        log = getattr(ti, "log", None) or logger
        poke_started = self.now()
        first = getattr(ti, "first_try_start", None) if self.reschedule else None
        try_started: datetime = first if isinstance(first, datetime) else poke_started
        if self.reschedule:
            count = context.get("task_reschedule_count", getattr(ti, "task_reschedule_count", 0))
            poke_count = int(count or 0) + 1
        else:
            poke_count = 1
        clock_start = time.monotonic()
        try:
            while True:
                result = self._poke_once(context, log)
                if result.is_done:
                    log.info("Success criteria met. Exiting.")
                    return result.xcom_value
                if self.reschedule:
                    elapsed = (self.now() - try_started).total_seconds()
                else:
                    elapsed = time.monotonic() - clock_start
                if elapsed > self.timeout:
                    raise SensorTimeout(
                        f"Sensor has timed out; run duration of {elapsed:.3f} seconds exceeds "
                        f"the specified timeout of {self.timeout:g} seconds."
                    )
                interval = self.next_poke_interval(try_started, elapsed, poke_count)
                if self.reschedule:
                    when = self.now() + timedelta(seconds=interval)
                    log.info("Condition not met; poking again at %s (reschedule mode)", when.isoformat())
                    raise TaskRescheduled(when)
                log.info("Condition not met; poking again in %.3g seconds", interval)
                time.sleep(interval)
                poke_count += 1
        except (SensorTimeout, TaskExecutionTimeout) as exc:
            if self.soft_fail or self.never_fail:
                raise TaskSkipped(f"Skipping due to soft_fail/never_fail: {exc}") from exc
            raise


# --- built-in sensors ---------------------------------------------------------------------------


class PythonSensor(BaseSensorOperator):
    """Pokes ``python_callable(*op_args, **op_kwargs)`` (context keys it names are passed too) until it returns
    something truthy, or a PokeReturnValue that is done."""

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    template_fields_renderers = {"templates_dict": "json", "op_args": "py", "op_kwargs": "py"}

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(python_callable):
            raise DagDefinitionError(
                f"task '{kwargs.get('task_id')}': python_callable must be callable, got {python_callable!r}"
            )
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict
        super().__init__(**kwargs)

    def poke(self, context: dict[str, Any]) -> PokeReturnValue:
        context = dict(context)
        context["templates_dict"] = self.templates_dict
        name = getattr(self.python_callable, "__name__", repr(self.python_callable))
        log = getattr(context.get("ti"), "log", None) or logger
        log.info("Poking callable: %s", name)
        result = call_with_context(self.python_callable, self.op_args, self.op_kwargs, context)
        return result if isinstance(result, PokeReturnValue) else PokeReturnValue(bool(result))


class FileSensor(BaseSensorOperator):
    """Waits for a file, or a directory holding at least one file (at any depth), to exist.

    ``filepath`` is templated and may be a glob pattern (``**`` matches across directories
    with ``recursive=True``). A relative path is taken from the task's working directory.
    ``fs_conn_id`` is accepted for compatibility with Airflow and ignored: updraft has no
    connections yet, and Airflow's default ``fs_default`` connection has an empty base path.
    """

    template_fields: Sequence[str] = ("filepath",)
    ui_color = "#91818a"

    def __init__(self, *, filepath: str | os.PathLike[str], fs_conn_id: str = "fs_default",
                 recursive: bool = False, **kwargs: Any) -> None:
        if not isinstance(filepath, str | os.PathLike):
            raise DagDefinitionError(f"task '{kwargs.get('task_id')}': filepath must be a string, got {filepath!r}")
        self.filepath = os.fspath(filepath)
        self.fs_conn_id = fs_conn_id
        self.recursive = bool(recursive)
        super().__init__(**kwargs)

    def poke(self, context: dict[str, Any]) -> bool:
        log = getattr(context.get("ti"), "log", None) or logger
        log.info("Poking for file %s", self.filepath)
        for path in sorted(glob.glob(self.filepath, recursive=self.recursive)):
            if os.path.isfile(path):
                log.info("Found file %s", path)
                return True
            for _root, _dirs, files in os.walk(path):
                if files:
                    log.info("Found files in directory %s", path)
                    return True
        return False


class DateTimeSensor(BaseSensorOperator):
    """Waits until ``target_time`` (a datetime, or ISO 8601 text, templated) has passed.

    A naive value is read in the DAG's time zone (UTC for a task without a DAG).
    """

    template_fields: Sequence[str] = ("target_time",)

    def __init__(self, *, target_time: str | datetime, **kwargs: Any) -> None:
        if isinstance(target_time, datetime):
            self.target_time: str = target_time.isoformat()
        elif isinstance(target_time, str):
            self.target_time = target_time
        else:
            raise DagDefinitionError(
                f"task '{kwargs.get('task_id')}': target_time must be a string or a datetime, got {target_time!r}"
            )
        super().__init__(**kwargs)

    def target(self) -> datetime:
        value: Any = self.target_time
        tz = self.dag.timezone if self.has_dag else UTC
        if isinstance(value, datetime):  # rendered natively
            return make_aware(value, tz)
        try:
            return parse_datetime(str(value), tz)
        except ValueError as exc:
            raise ValueError(f"task '{self.task_id}': target_time: {exc}") from None

    def poke(self, context: dict[str, Any]) -> bool:
        target = self.target()
        log = getattr(context.get("ti"), "log", None) or logger
        log.info("Checking if the time (%s) has come", target.isoformat())
        return self.now() > target


class TimeDeltaSensor(BaseSensorOperator):
    """Waits until ``delta`` after the end of the run's data interval."""

    def __init__(self, *, delta: timedelta, **kwargs: Any) -> None:
        if not isinstance(delta, timedelta):
            raise DagDefinitionError(f"task '{kwargs.get('task_id')}': delta must be a timedelta, got {delta!r}")
        self.delta = delta
        super().__init__(**kwargs)

    def poke(self, context: dict[str, Any]) -> bool:
        end = context.get("data_interval_end")
        if not isinstance(end, datetime):
            raise ValueError(f"task '{self.task_id}': the context has no data_interval_end to wait from")
        target = end + self.delta
        log = getattr(context.get("ti"), "log", None) or logger
        log.info("Checking if the time (%s) has come", target.isoformat())
        return self.now() > target
