"""BaseOperator: one task of a DAG, with Airflow's common parameters and ``>>`` wiring.

``default_args`` of the DAG apply to every parameter an operator's ``__init__`` chain
accepts and that the author did not pass explicitly (Airflow's rule).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from scheduler.authoring.dependencies import DependencyMixin
from scheduler.authoring.params import ParamsDict
from scheduler.exceptions import DagDefinitionError
from scheduler.trigger_rules import TriggerRule

if TYPE_CHECKING:
    from scheduler.authoring.dag import DAG
    from scheduler.authoring.taskflow import XComArg

ID_PATTERN = re.compile(r"^[\w.-]+$")
#: Non-empty while a mapped task builds the real operator of one map index: no wiring, no group membership.
_UNMAPPING: list[bool] = []
MAX_ID_LENGTH = 250
WEIGHT_RULES = ("downstream", "upstream", "absolute")


def validate_id(kind: str, value: Any, where: str = "") -> str:
    if not isinstance(value, str) or not value:
        raise DagDefinitionError(f"{kind} must be a non-empty string{where}, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise DagDefinitionError(f"{kind} {value[:40]!r}... is longer than {MAX_ID_LENGTH} characters{where}")
    if not ID_PATTERN.match(value):
        raise DagDefinitionError(
            f"{kind} {value!r}{where} is invalid: use only letters, digits, '_', '-' and '.'"
        )
    return value


def _accepted_init_args(cls: type) -> frozenset[str]:
    cached = cls.__dict__.get("_updraft_init_args")
    if cached is not None:
        return cached
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name != "self":
                names.add(param.name)
    result = frozenset(names)
    cls._updraft_init_args = result  # type: ignore[attr-defined]
    return result


class _OperatorMeta(type):
    """Applies the DAG's default_args to the operator's keyword arguments before __init__."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        from scheduler.authoring.dag import current_dag, current_group

        dag = kwargs.get("dag") or current_dag()
        group = current_group()
        defaults: dict[str, Any] = {}
        if dag is not None:
            defaults.update(dag.default_args)
        if group is not None:
            defaults.update(getattr(group, "default_args", {}) or {})
        kwargs.setdefault("default_args", {})
        defaults.update(kwargs["default_args"] or {})
        if defaults:
            accepted = _accepted_init_args(cls)
            for key, value in defaults.items():
                if key == "params":
                    continue
                if key in accepted and key not in kwargs:
                    kwargs[key] = value
            if "params" in defaults:
                merged = ParamsDict(defaults["params"]).merged(kwargs.get("params"))
                kwargs["params"] = merged
        kwargs.pop("default_args", None)
        instance = super().__call__(*args, **kwargs)
        instance._finish_init()
        return instance


class BaseOperator(DependencyMixin, metaclass=_OperatorMeta):
    """A unit of work. Subclasses implement ``execute(context)``; its return value goes to XCom."""

    template_fields: Sequence[str] = ()
    template_ext: Sequence[str] = ()
    template_fields_renderers: dict[str, str] = {}
    ui_color: str = "#fff"
    ui_fgcolor: str = "#000"
    #: operators whose instances run no user code (EmptyOperator) set this; the scheduler skips the executor
    inherits_from_empty_operator: bool = False
    #: set by branching operators; the serializer records it
    is_branch: bool = False
    #: Its successful try may skip tasks downstream (branches, short-circuits): see dagrun_logic.plan_run.
    skips_downstream: bool = False
    #: True for a MappedOperator (``.partial(...).expand(...)``)
    is_mapped: bool = False

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """``Op.partial(task_id=..., **fixed).expand(arg=[...])``: one task instance per element (dynamic mapping)."""
        from scheduler.authoring.mapping import OperatorPartial

        return OperatorPartial(cls, kwargs)

    def __init__(
        self,
        *,
        task_id: str,
        owner: str = "updraft",
        email: str | Iterable[str] | None = None,
        email_on_retry: bool = True,
        email_on_failure: bool = True,
        retries: int | None = 0,
        retry_delay: timedelta | float = timedelta(seconds=300),
        retry_exponential_backoff: bool = False,
        max_retry_delay: timedelta | float | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        depends_on_past: bool = False,
        wait_for_downstream: bool = False,
        dag: DAG | None = None,
        params: dict[str, Any] | None = None,
        priority_weight: int = 1,
        weight_rule: str = "downstream",
        queue: str = "default",
        pool: str | None = None,
        pool_slots: int = 1,
        execution_timeout: timedelta | float | None = None,
        on_execute_callback: Callable[..., Any] | None = None,
        on_failure_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        on_success_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        on_retry_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        trigger_rule: str = TriggerRule.ALL_SUCCESS,
        max_active_tis_per_dag: int | None = None,
        max_active_tis_per_dagrun: int | None = None,
        executor_config: dict[str, Any] | None = None,
        do_xcom_push: bool = True,
        multiple_outputs: bool = False,
        doc: str | None = None,
        doc_md: str | None = None,
        task_display_name: str | None = None,
        outlets: Iterable[Any] | None = None,
        inlets: Iterable[Any] | None = None,
        sla: Any = None,
        run_as_user: str | None = None,
        resources: Any = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise DagDefinitionError(
                f"Invalid arguments were passed to {type(self).__name__} (task_id: {task_id}): "
                + ", ".join(sorted(kwargs))
            )
        from scheduler.authoring.dag import current_dag, current_group

        group = current_group() if not _UNMAPPING else None
        prefix = group.child_prefix() if group is not None else ""
        self._base_task_id = task_id
        where = f" (operator {type(self).__name__})"
        validate_id("task_id", task_id, where)
        self.task_id = validate_id("task_id", prefix + task_id, where)
        self.task_group = group
        self.owner = owner
        self.email = email
        self.email_on_retry = email_on_retry
        self.email_on_failure = email_on_failure
        if retries is None:
            retries = 0
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise DagDefinitionError(f"task '{task_id}': retries must be an integer >= 0, got {retries!r}")
        self.retries = retries
        self.retry_delay = _as_timedelta(retry_delay, task_id, "retry_delay")
        self.retry_exponential_backoff = bool(retry_exponential_backoff)
        self.max_retry_delay = _as_timedelta(max_retry_delay, task_id, "max_retry_delay")
        self.start_date = start_date
        self.end_date = end_date
        self.depends_on_past = bool(depends_on_past)
        self.wait_for_downstream = bool(wait_for_downstream)
        if wait_for_downstream:
            self.depends_on_past = True
        self.params = ParamsDict(params) if not isinstance(params, ParamsDict) else params
        if isinstance(priority_weight, bool) or not isinstance(priority_weight, int):
            raise DagDefinitionError(f"task '{task_id}': priority_weight must be an integer, got {priority_weight!r}")
        self.priority_weight = priority_weight
        if weight_rule not in WEIGHT_RULES:
            raise DagDefinitionError(
                f"task '{task_id}': unknown weight_rule {weight_rule!r}; expected one of {', '.join(WEIGHT_RULES)}"
            )
        self.weight_rule = str(weight_rule)
        self.queue = queue
        self.pool = pool or "default_pool"
        if isinstance(pool_slots, bool) or not isinstance(pool_slots, int) or pool_slots < 1:
            raise DagDefinitionError(f"task '{task_id}': pool_slots must be an integer >= 1, got {pool_slots!r}")
        self.pool_slots = pool_slots
        self.execution_timeout = _as_timedelta(execution_timeout, task_id, "execution_timeout")
        self.on_execute_callback = on_execute_callback
        self.on_failure_callback = on_failure_callback
        self.on_success_callback = on_success_callback
        self.on_retry_callback = on_retry_callback
        try:
            self.trigger_rule = TriggerRule.parse(trigger_rule)
        except ValueError as exc:
            raise DagDefinitionError(f"task '{task_id}': {exc}") from None
        for name, value in (("max_active_tis_per_dag", max_active_tis_per_dag),
                            ("max_active_tis_per_dagrun", max_active_tis_per_dagrun)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DagDefinitionError(f"task '{task_id}': {name} must be an integer >= 1 or None, got {value!r}")
        self.max_active_tis_per_dag = max_active_tis_per_dag
        self.max_active_tis_per_dagrun = max_active_tis_per_dagrun
        self.executor_config = executor_config or {}
        self.do_xcom_push = do_xcom_push
        self.multiple_outputs = multiple_outputs
        self.doc = doc
        self.doc_md = doc_md
        self.task_display_name = task_display_name
        self.outlets = list(outlets or [])
        self.inlets = list(inlets or [])
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        self._dag: DAG | None = None
        target = dag or current_dag()
        if target is not None and not _UNMAPPING:
            target.add_task(self)

    def _finish_init(self) -> None:
        """Called once every __init__ in the chain has run: wire XComArg inputs to upstream edges."""
        from scheduler.authoring.taskflow import iter_xcom_args

        if _UNMAPPING:
            return
        for field in self.template_fields:
            for arg in iter_xcom_args(getattr(self, field, None)):
                arg.operator.set_downstream(self)
        if self.task_group is not None:
            self.task_group.add(self)

    # --- the DAG this task belongs to ------------------------------------------------------

    @property
    def dag(self) -> DAG:
        if self._dag is None:
            raise DagDefinitionError(f"task '{self.task_id}' is not assigned to a DAG")
        return self._dag

    @dag.setter
    def dag(self, dag: DAG) -> None:
        dag.add_task(self)

    @property
    def has_dag(self) -> bool:
        return self._dag is not None

    @property
    def dag_id(self) -> str:
        return self._dag.dag_id if self._dag is not None else f"adhoc_{self.owner}"

    # --- wiring -------------------------------------------------------------------------------

    @property
    def roots(self) -> list[BaseOperator]:
        return [self]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [self]

    def _relate(self, others: Any, upstream: bool) -> None:
        from scheduler.authoring.edges import EdgeModifier

        for other in _flatten_tasks(others):
            if isinstance(other, EdgeModifier):  # self >> Label(...) / self << Label(...)
                if upstream:
                    other.set_downstream(self)
                else:
                    other.set_upstream(self)
                continue
            for mine in self.leaves if not upstream else self.roots:
                if upstream:
                    for theirs in other.leaves:
                        theirs._add_edge(mine)
                else:
                    for theirs in other.roots:
                        mine._add_edge(theirs)

    def _add_edge(self, downstream: BaseOperator) -> None:
        if downstream is self:
            raise DagDefinitionError(f"task '{self.task_id}' cannot depend on itself")
        dag = self._dag or downstream._dag
        if dag is None:
            raise DagDefinitionError(
                f"tasks '{self.task_id}' and '{downstream.task_id}' belong to no DAG; create them inside a DAG"
            )
        if self._dag is None:
            dag.add_task(self)
        if downstream._dag is None:
            dag.add_task(downstream)
        if self._dag is not downstream._dag:
            raise DagDefinitionError(
                f"tasks '{self.task_id}' (DAG '{self.dag_id}') and '{downstream.task_id}' "
                f"(DAG '{downstream.dag_id}') are in different DAGs"
            )
        self.downstream_task_ids.add(downstream.task_id)
        downstream.upstream_task_ids.add(self.task_id)

    def set_downstream(self, other: Any, edge_modifier: Any = None) -> None:
        if edge_modifier is not None:
            edge_modifier.set_upstream(self)
            edge_modifier.set_downstream(other)
            return
        self._relate(other, upstream=False)

    def set_upstream(self, other: Any, edge_modifier: Any = None) -> None:
        if edge_modifier is not None:
            edge_modifier.set_downstream(self)
            edge_modifier.set_upstream(other)
            return
        self._relate(other, upstream=True)

    @property
    def upstream_list(self) -> list[BaseOperator]:
        return [self.dag.task_dict[t] for t in sorted(self.upstream_task_ids)]

    @property
    def downstream_list(self) -> list[BaseOperator]:
        return [self.dag.task_dict[t] for t in sorted(self.downstream_task_ids)]

    def get_flat_relative_ids(self, *, upstream: bool = False) -> set[str]:
        """Every task id reachable downstream (or upstream) of this task."""
        dag = self.dag
        seen: set[str] = set()
        stack = list(self.upstream_task_ids if upstream else self.downstream_task_ids)
        while stack:
            tid = stack.pop()
            if tid in seen:
                continue
            seen.add(tid)
            task = dag.task_dict[tid]
            stack.extend(task.upstream_task_ids if upstream else task.downstream_task_ids)
        return seen

    # --- running --------------------------------------------------------------------------

    @property
    def output(self) -> XComArg:
        from scheduler.authoring.taskflow import XComArg

        return XComArg(self)

    def execute(self, context: dict[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement execute(context)")

    def pre_execute(self, context: dict[str, Any]) -> None:
        """Hook run just before execute."""

    def post_execute(self, context: dict[str, Any], result: Any = None) -> None:
        """Hook run just after a successful execute."""

    def on_kill(self) -> None:
        """Hook run when the task is killed (timeout)."""

    def prepare_template(self) -> None:
        """Hook run after template files are loaded and before rendering."""

    def __repr__(self) -> str:
        return f"<Task({type(self).__name__}): {self.task_id}>"


def _as_timedelta(value: timedelta | float | None, task_id: str, name: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    raise DagDefinitionError(f"task '{task_id}': {name} must be a timedelta or seconds, got {value!r}")


def _flatten_tasks(value: Any) -> list[Any]:
    """Operators, XComArgs, task groups and (nested) lists of them, as relatable objects."""
    from scheduler.authoring.taskflow import XComArg

    if isinstance(value, XComArg):
        return [value.operator]
    if isinstance(value, list | tuple | set | frozenset):
        out: list[Any] = []
        for item in value:
            out.extend(_flatten_tasks(item))
        return out
    if hasattr(value, "roots") and hasattr(value, "leaves"):
        return [value]
    raise DagDefinitionError(f"cannot set a dependency on {value!r}: expected a task, a task group or a list of them")


def _as_single(value: Any) -> Any:
    from scheduler.authoring.taskflow import XComArg

    return value.operator if isinstance(value, XComArg) else value


def chain(*elements: Any) -> None:
    """``chain(a, [b, c], d)`` = a >> [b, c] >> d; two adjacent lists of equal length pair up."""
    for up, down in zip(elements, elements[1:], strict=False):
        up_is_list = isinstance(up, list | tuple)
        down_is_list = isinstance(down, list | tuple)
        if up_is_list and down_is_list:
            if len(up) != len(down):
                raise DagDefinitionError(
                    f"chain: adjacent lists must have the same length, got {len(up)} and {len(down)}"
                )
            for a, b in zip(up, down, strict=True):
                _as_single(a).set_downstream(_as_single(b))
        elif up_is_list:
            for a in up:
                _as_single(a).set_downstream(_as_single(down))
        else:
            _as_single(up).set_downstream(down if not down_is_list else [_as_single(d) for d in down])


def cross_downstream(from_tasks: Sequence[Any], to_tasks: Any) -> None:
    """Every task in ``from_tasks`` becomes upstream of every task in ``to_tasks``."""
    for task in from_tasks:
        _as_single(task).set_downstream(to_tasks)
