"""DAG: a named graph of tasks with a schedule; ``with DAG(...)`` and ``@dag`` as in Airflow."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from scheduler.authoring.baseoperator import validate_id
from scheduler.authoring.params import NOTSET, Param, ParamsDict, check_json
from scheduler.clock import get_timezone, make_aware, timezone_name
from scheduler.exceptions import CycleError, DagDefinitionError, ParamValidationError, ScheduleError

if TYPE_CHECKING:
    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.timetables.base import Timetable

logger = logging.getLogger(__name__)

_dag_stack: list[DAG] = []
_group_stack: list[Any] = []

#: Every DAG created in this process since the last reset; the parser reads it after importing a file.
_created_dags: list[DAG] = []

#: Time zone for DAGs that name none; the parser sets it from [core] default_timezone.
DEFAULT_TIMEZONE: tzinfo = UTC

_UNSET: Any = object()


def current_dag() -> DAG | None:
    return _dag_stack[-1] if _dag_stack else None


def current_group() -> Any:
    return _group_stack[-1] if _group_stack else None


def reset_created_dags() -> list[DAG]:
    """Return and forget the DAGs created so far (used by the parser around each file import)."""
    found = list(_created_dags)
    _created_dags.clear()
    return found


def _caller_file(depth: int) -> str:
    try:
        return sys._getframe(depth).f_code.co_filename
    except ValueError:  # pragma: no cover
        return ""


class DAG:
    """A DAG: ``with DAG("etl", schedule="0 6 * * *", start_date=datetime(2024, 1, 1)) as d: ...``."""

    def __init__(
        self,
        dag_id: str,
        description: str | None = None,
        schedule: Any = _UNSET,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        timezone: str | tzinfo | None = None,
        catchup: bool = False,
        max_active_runs: int | None = None,
        max_active_tasks: int | None = None,
        default_args: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        doc_md: str | None = None,
        dagrun_timeout: timedelta | None = None,
        on_success_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        on_failure_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        is_paused_upon_creation: bool | None = None,
        template_searchpath: str | Iterable[str] | None = None,
        user_defined_macros: dict[str, Any] | None = None,
        user_defined_filters: dict[str, Callable[..., Any]] | None = None,
        render_template_as_native_obj: bool = False,
        owner_links: dict[str, str] | None = None,
        access_control: Any = None,
        jinja_environment_kwargs: dict[str, Any] | None = None,
        dag_display_name: str | None = None,
        fail_fast: bool = False,
        schedule_interval: Any = _UNSET,
        timetable: Timetable | None = None,
        concurrency: int | None = None,
        fileloc: str | None = None,
    ) -> None:
        self.dag_id = validate_id("dag_id", dag_id)
        self.deprecations: list[str] = []
        from scheduler.authoring.taskgroup import TaskGroup

        self.task_dict: dict[str, BaseOperator] = {}
        #: Every task group by its full id; ``task_group`` is the root group (id None).
        self.task_group_dict: dict[str, TaskGroup] = {}
        self.task_group = TaskGroup(None, dag=self)
        #: (upstream task id, downstream task id) -> edge info such as {"label": "yes"}.
        self.edge_info: dict[tuple[str, str], dict[str, Any]] = {}
        self.description = description
        self.default_args = dict(default_args or {})
        self.fileloc = fileloc or _caller_file(2)
        # --- time zone, dates
        if timezone is None:
            aware = start_date or self.default_args.get("start_date")
            if isinstance(aware, datetime) and aware.tzinfo is not None:
                timezone = aware.tzinfo
        if timezone is None:
            self.timezone: tzinfo = DEFAULT_TIMEZONE
        elif not isinstance(timezone, str | tzinfo):
            raise DagDefinitionError(
                f"DAG '{dag_id}': timezone must be an IANA name such as 'Europe/Berlin' or a tzinfo, got {timezone!r}"
            )
        else:
            try:
                self.timezone = get_timezone(timezone) if isinstance(timezone, str) else get_timezone(timezone_name(timezone))
            except ValueError as exc:
                raise DagDefinitionError(f"DAG '{dag_id}': {exc}") from None
        self.start_date = self._date(start_date if start_date is not None else self.default_args.get("start_date"), "start_date")
        self.end_date = self._date(end_date if end_date is not None else self.default_args.get("end_date"), "end_date")
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise DagDefinitionError(f"DAG '{dag_id}': end_date {self.end_date} is before start_date {self.start_date}")
        # --- schedule
        if schedule_interval is not _UNSET:
            self.note_deprecation("schedule_interval is deprecated; use schedule")
            if schedule is not _UNSET:
                raise DagDefinitionError(f"DAG '{dag_id}': pass schedule or schedule_interval, not both")
            schedule = schedule_interval
        if timetable is not None:
            if schedule is not _UNSET:
                raise DagDefinitionError(f"DAG '{dag_id}': pass schedule or timetable, not both")
            schedule = timetable
        self.schedule = None if schedule is _UNSET else schedule
        from scheduler.authoring.assets import split_schedule
        from scheduler.timetables import make_timetable

        try:
            time_schedule, self.asset_condition = split_schedule(self.schedule)
            self.timetable: Timetable = make_timetable(time_schedule, self.timezone)
        except ScheduleError as exc:
            raise ScheduleError(f"DAG '{dag_id}': invalid schedule: {exc}") from None
        self.catchup = bool(catchup)
        if concurrency is not None:
            self.note_deprecation("concurrency is deprecated; use max_active_tasks")
            max_active_tasks = max_active_tasks or concurrency
        self.max_active_runs = self._positive(max_active_runs, "max_active_runs")
        self.max_active_tasks = self._positive(max_active_tasks, "max_active_tasks")
        self.params = ParamsDict(params)
        if "params" in self.default_args:
            self.params = ParamsDict(self.default_args["params"]).merged(self.params)
        if tags is not None and (isinstance(tags, str) or not all(isinstance(t, str) for t in tags)):
            raise DagDefinitionError(f"DAG '{dag_id}': tags must be a list of strings, got {tags!r}")
        self.tags = sorted(set(tags or []))
        self.doc_md = doc_md
        if dagrun_timeout is not None and not isinstance(dagrun_timeout, timedelta):
            raise DagDefinitionError(f"DAG '{dag_id}': dagrun_timeout must be a timedelta, got {dagrun_timeout!r}")
        self.dagrun_timeout = dagrun_timeout
        self.on_success_callback = on_success_callback
        self.on_failure_callback = on_failure_callback
        self.is_paused_upon_creation = is_paused_upon_creation
        if isinstance(template_searchpath, str):
            template_searchpath = [template_searchpath]
        self.template_searchpath = list(template_searchpath or [])
        self.user_defined_macros = dict(user_defined_macros or {})
        self.user_defined_filters = dict(user_defined_filters or {})
        self.render_template_as_native_obj = render_template_as_native_obj
        self.jinja_environment_kwargs = dict(jinja_environment_kwargs or {})
        self.owner_links = dict(owner_links or {})
        self.dag_display_name = dag_display_name
        self.fail_fast = fail_fast
        self._check_params()
        _created_dags.append(self)

    def note_deprecation(self, message: str) -> None:
        """Record (serialized with the DAG) and log an Airflow 2 name this DAG uses."""
        if message not in self.deprecations:
            self.deprecations.append(message)
            logger.warning("DAG '%s': %s", self.dag_id, message)

    def set_edge_info(self, upstream_task_id: str, downstream_task_id: str, info: dict[str, Any]) -> None:
        """Attach display information (``{"label": ...}``) to the edge between two tasks."""
        self.edge_info[(upstream_task_id, downstream_task_id)] = dict(info)

    def get_edge_info(self, upstream_task_id: str, downstream_task_id: str) -> dict[str, Any]:
        return dict(self.edge_info.get((upstream_task_id, downstream_task_id), {}))

    # --- helpers for __init__ ----------------------------------------------------------------

    def _date(self, value: Any, name: str) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return make_aware(value, self.timezone).astimezone(UTC)
        raise DagDefinitionError(f"DAG '{self.dag_id}': {name} must be a datetime, got {value!r}")

    def _positive(self, value: Any, name: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DagDefinitionError(f"DAG '{self.dag_id}': {name} must be an integer >= 1, got {value!r}")
        return value

    def _check_params(self) -> None:
        for name, param in self.params.params().items():
            if param.has_value:
                try:
                    check_json(param.value, f"the default of param '{name}'")
                except TypeError as exc:
                    raise DagDefinitionError(f"DAG '{self.dag_id}': {exc}") from None
                try:
                    param.resolve(name=name)
                except ParamValidationError as exc:
                    raise DagDefinitionError(f"DAG '{self.dag_id}': invalid default: {exc}") from None
            elif self.timetable.can_be_scheduled:
                raise DagDefinitionError(
                    f"DAG '{self.dag_id}': param '{name}' has no default, so the DAG cannot run on a schedule; "
                    "give it a default or use schedule=None"
                )

    # --- context manager -----------------------------------------------------------------------

    def __enter__(self) -> DAG:
        _dag_stack.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _dag_stack.pop()

    # --- tasks -----------------------------------------------------------------------------------

    def add_task(self, task: BaseOperator) -> None:
        if task._dag is self:
            return
        if task._dag is not None:
            raise DagDefinitionError(
                f"task '{task.task_id}' already belongs to DAG '{task._dag.dag_id}'; cannot add it to '{self.dag_id}'"
            )
        if task.task_id in self.task_dict:
            raise DagDefinitionError(f"Task id '{task.task_id}' has already been added to the DAG '{self.dag_id}'")
        self.task_dict[task.task_id] = task
        task._dag = self
        group = task.task_group if task.task_group is not None and task.task_group.dag is self else self.task_group
        group.add(task)

    def add_tasks(self, tasks: Iterable[BaseOperator]) -> None:
        for task in tasks:
            self.add_task(task)

    @property
    def tasks(self) -> list[BaseOperator]:
        return list(self.task_dict.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    def get_task(self, task_id: str) -> BaseOperator:
        from scheduler.exceptions import TaskNotFound

        try:
            return self.task_dict[task_id]
        except KeyError:
            raise TaskNotFound(self.dag_id, task_id) from None

    def has_task(self, task_id: str) -> bool:
        return task_id in self.task_dict

    @property
    def roots(self) -> list[BaseOperator]:
        return [t for t in self.task_dict.values() if not t.upstream_task_ids]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [t for t in self.task_dict.values() if not t.downstream_task_ids]

    @property
    def owner(self) -> str:
        return ", ".join(sorted({t.owner for t in self.task_dict.values()})) or str(self.default_args.get("owner", "updraft"))

    @property
    def owners(self) -> list[str]:
        owners = sorted({t.owner for t in self.task_dict.values()})
        return owners or [str(self.default_args.get("owner", "updraft"))]

    def topological_order(self) -> list[str]:
        """Task ids, every task after all its upstream tasks; raises CycleError naming a cycle."""
        indegree = {tid: len(t.upstream_task_ids) for tid, t in self.task_dict.items()}
        ready = sorted(tid for tid, n in indegree.items() if n == 0)
        order: list[str] = []
        while ready:
            tid = ready.pop(0)
            order.append(tid)
            for down in sorted(self.task_dict[tid].downstream_task_ids):
                indegree[down] -= 1
                if indegree[down] == 0:
                    ready.append(down)
        if len(order) != len(self.task_dict):
            raise CycleError(self.dag_id, self._find_cycle({t for t, n in indegree.items() if n > 0}))
        return order

    def _find_cycle(self, candidates: set[str]) -> list[str]:
        # Every unresolved task has an unresolved upstream task (a task merely downstream of a
        # cycle may have no unresolved downstream one), so walk upstream until a task repeats:
        # that loop, reversed, is a cycle in downstream order.
        path: list[str] = []
        index: dict[str, int] = {}
        node = min(candidates)
        while node not in index:
            index[node] = len(path)
            path.append(node)
            node = min(u for u in self.task_dict[node].upstream_task_ids if u in candidates)
        loop = path[index[node]:][::-1]
        first = loop.index(min(loop))  # start the reported cycle at its smallest id, for stable messages
        loop = loop[first:] + loop[:first]
        return loop + [loop[0]]

    def validate(self) -> None:
        """Whole-DAG checks made once the file has been imported: cycles, start_date."""
        self.topological_order()
        if self.timetable.can_be_scheduled and self.start_date is None:
            starts = [t.start_date for t in self.task_dict.values() if t.start_date is not None]
            if starts:
                self.start_date = min(self._date(s, "start_date") for s in starts)  # type: ignore[type-var]
            else:
                raise DagDefinitionError(
                    f"DAG '{self.dag_id}' has schedule {self.timetable.summary!r} but no start_date; "
                    "pass start_date=datetime(...) to the DAG or in default_args"
                )

    def resolve_params(self, conf: dict[str, Any] | None) -> dict[str, Any]:
        """The run's params from conf (validated, naming the param on error)."""
        return self.params.resolve(conf, dag_id=self.dag_id)

    def test(self, logical_date: datetime | None = None, conf: dict[str, Any] | None = None) -> Any:
        """Run the whole DAG in this process (like ``updraft dags test``); returns the run result."""
        from scheduler.dagtest import run_dag_in_process

        return run_dag_in_process(self, logical_date=logical_date, conf=conf)

    def __repr__(self) -> str:
        return f"<DAG: {self.dag_id}>"


class DagParam:
    """A reference to a DAG param inside an ``@dag`` function body, resolved when the task runs."""

    def __init__(self, dag: DAG, name: str, default: Any = NOTSET) -> None:
        self.dag = dag
        self.name = name
        if default is not NOTSET:
            dag.params[name] = default

    def resolve(self, context: dict[str, Any]) -> Any:
        return context["params"][self.name]

    def __repr__(self) -> str:
        return f"DagParam({self.name!r})"


def dag(dag_id: str | Callable[..., Any] | None = None, **dag_kwargs: Any) -> Any:
    """``@dag(schedule=..., start_date=...)`` on a function: calling it builds the DAG.

    The function's parameters become DAG params (their defaults, or Param objects, are the
    params' defaults); inside the body they are references resolved when the task runs.
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., DAG]:
        sig = inspect.signature(func)

        @functools.wraps(func)
        def factory(*args: Any, **kwargs: Any) -> DAG:
            bound = sig.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            kw = dict(dag_kwargs)
            kw.setdefault("dag_id", dag_id if isinstance(dag_id, str) else func.__name__)
            kw.setdefault("description", (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else None)
            kw.setdefault("doc_md", func.__doc__)
            kw.setdefault("fileloc", inspect.getsourcefile(func) or "")
            params = dict(kw.pop("params", None) or {})
            for name, value in bound.arguments.items():
                # Airflow's order: the function's (or the call's) value wins over params=..., and a
                # plain value given for a param declared as a Param keeps that Param's schema.
                existing = params.get(name)
                if isinstance(existing, Param) and not isinstance(value, Param):
                    schema = {k: v for k, v in existing.schema.items() if k != "description"}
                    value = Param(value, existing.description, **schema)
                params[name] = value
            missing = [n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty and n not in bound.arguments]
            for name in missing:
                params.setdefault(name, Param())
            kw["params"] = params
            with DAG(**kw) as new_dag:
                refs = {name: DagParam(new_dag, name) for name in sig.parameters}
                func(**refs)
            return new_dag

        factory.is_dag_factory = True  # type: ignore[attr-defined]
        return factory

    if callable(dag_id):
        func, dag_id = dag_id, None
        return decorator(func)
    return decorator
