"""Dynamic task mapping: ``Op.partial(...).expand(...)``, ``.expand_kwargs(...)`` and ``@task`` ``.expand``.

A mapped task is one :class:`MappedOperator` in the DAG; when a run reaches it and
the values it maps over are known (literals at once, an upstream task's XCom once
that task finished), the scheduler creates one task instance per element
(``map_index`` 0, 1, ...). Each instance builds the real operator for its element
(:meth:`MappedOperator.unmap`) and runs it; retries apply per instance. A task
downstream that takes the mapped task's output receives the list of results in
map-index order.

``expand(a=[1, 2], b=[10, 20])`` maps over the cartesian product (the last argument
varies fastest); ``expand_kwargs([{...}, {...}])`` gives each instance its own
keyword arguments. A value mapped over a dict yields ``[key, value]`` pairs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scheduler.authoring.baseoperator import BaseOperator, _accepted_init_args
from scheduler.exceptions import DagDefinitionError, UpdraftError

if TYPE_CHECKING:
    from scheduler.authoring.taskflow import XComArg

#: Default of ``[core] max_map_length``.
DEFAULT_MAX_MAP_LENGTH = 1024


class MappingError(UpdraftError):
    """A mapped task cannot be expanded: what it maps over is not a list or dict, or is too long."""


def _is_xcom_arg(value: Any) -> bool:
    from scheduler.authoring.taskflow import XComArg

    return isinstance(value, XComArg)


def _check_mappable_literal(value: Any, where: str) -> None:
    if _is_xcom_arg(value):
        return
    if isinstance(value, list | tuple | dict):
        return
    raise DagDefinitionError(
        f"{where}: can only map over a list, a tuple, a dict or the output of a task, got {type(value).__name__}"
    )


def as_sequence(value: Any, where: str) -> list[Any]:
    """What one mapped argument resolved to, as the list of its elements."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, dict):
        return [[k, v] for k, v in value.items()]
    raise MappingError(
        f"{where}: a mapped task needs a list or a dict to map over, got {type(value).__name__} ({value!r:.80})"
    )


def check_length(length: int, max_length: int, where: str) -> None:
    if length > max_length:
        raise MappingError(
            f"{where}: {length} elements to map over is more than the allowed {max_length} "
            "(set [core] max_map_length to raise the limit)"
        )


@dataclass
class ExpandInput:
    """What a mapped task maps over: ``kind`` "dict" (expand: name -> values) or "list" (expand_kwargs)."""

    kind: str
    #: "kwargs": the operator's own arguments; "op_kwargs": a @task function's arguments
    target: str
    args: dict[str, Any] = field(default_factory=dict)
    value: Any = None

    def xcom_args(self) -> list[XComArg]:
        from scheduler.authoring.taskflow import iter_xcom_args

        return list(iter_xcom_args(self.args if self.kind == "dict" else self.value))

    def resolve_sequences(self, resolve: Callable[[XComArg], Any], where: str) -> dict[str, list[Any]] | list[Any]:
        """The elements of each mapped argument ("dict"), or the list of kwargs dicts ("list")."""
        if self.kind == "dict":
            return {
                name: as_sequence(resolve(v) if _is_xcom_arg(v) else v, f"{where}, argument '{name}'")
                for name, v in self.args.items()
            }
        return as_sequence(resolve(self.value) if _is_xcom_arg(self.value) else self.value, where)

    def length(self, resolve: Callable[[XComArg], Any], where: str) -> int:
        sequences = self.resolve_sequences(resolve, where)
        if isinstance(sequences, list):
            return len(sequences)
        total = 1
        for values in sequences.values():
            total *= len(values)
        return total

    def element(self, index: int, resolve: Callable[[XComArg], Any], where: str) -> dict[str, Any]:
        """The keyword arguments of map index ``index``."""
        sequences = self.resolve_sequences(resolve, where)
        if isinstance(sequences, list):
            if not 0 <= index < len(sequences):
                raise MappingError(f"{where}: map index {index} is out of range (length {len(sequences)})")
            item = sequences[index]
            if not isinstance(item, Mapping) or not all(isinstance(k, str) for k in item):
                raise MappingError(
                    f"{where}: expand_kwargs needs a list of dicts with string keys; element {index} is {item!r:.80}"
                )
            return dict(item)
        total = 1
        for values in sequences.values():
            total *= len(values)
        if not 0 <= index < total:
            raise MappingError(f"{where}: map index {index} is out of range (length {total})")
        chosen: dict[str, Any] = {}
        rest = index
        for name, values in reversed(list(sequences.items())):
            chosen[name] = values[rest % len(values)]
            rest //= len(values)
        return {name: chosen[name] for name in sequences}

    def serialize(self) -> dict[str, Any]:
        from scheduler.serialization import to_jsonable

        def one(value: Any) -> dict[str, Any]:
            if _is_xcom_arg(value):
                op = value.operator
                return {"xcom": {"task_id": op.task_id, "key": value.key, "mapped": bool(getattr(op, "is_mapped", False))}}
            return {"literal": to_jsonable(value)}

        if self.kind == "dict":
            return {"kind": "dict", "target": self.target, "args": {k: one(v) for k, v in self.args.items()}}
        return {"kind": "list", "target": self.target, "value": one(self.value)}


class MappedOperator(BaseOperator):
    """A task that becomes one task instance per element of what it maps over (see the module documentation)."""

    is_mapped = True

    def __init__(
        self,
        *,
        operator_class: type[BaseOperator],
        partial_kwargs: dict[str, Any],
        expand_input: ExpandInput,
        mapped_defaults: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        self.operator_class = operator_class
        self.partial_kwargs = partial_kwargs
        self.expand_input = expand_input
        self.mapped_defaults = mapped_defaults
        self.template_fields = tuple(operator_class.template_fields)
        self.template_fields_renderers = dict(operator_class.template_fields_renderers)
        self.ui_color = operator_class.ui_color
        self.ui_fgcolor = operator_class.ui_fgcolor
        self.is_branch = operator_class.is_branch
        self.skips_downstream = operator_class.skips_downstream
        self.custom_operator_name = getattr(operator_class, "custom_operator_name", None) or operator_class.__name__
        super().__init__(**kwargs)

    def _finish_init(self) -> None:
        from scheduler.authoring.taskflow import iter_xcom_args

        for arg in [*iter_xcom_args(self.partial_kwargs), *self.expand_input.xcom_args()]:
            arg.operator.set_downstream(self)
        if self.task_group is not None:
            self.task_group.add(self)

    def __getattr__(self, name: str) -> Any:
        # template fields the serializer asks for: the partial value (mapped ones are unknown until run time)
        if name.startswith("_") or name in ("partial_kwargs", "expand_input", "operator_class"):
            raise AttributeError(name)
        partial = self.__dict__.get("partial_kwargs") or {}
        if name in partial:
            return partial[name]
        raise AttributeError(f"{type(self).__name__!s} {self.__dict__.get('task_id')!r} has no attribute {name!r}")

    @property
    def where(self) -> str:
        return f"mapped task '{self.task_id}'"

    def map_length(self, resolve: Callable[[XComArg], Any], max_length: int = DEFAULT_MAX_MAP_LENGTH) -> int:
        length = self.expand_input.length(resolve, self.where)
        check_length(length, max_length, self.where)
        return length

    def unmap(self, map_index: int, resolve: Callable[[XComArg], Any]) -> BaseOperator:
        """The real operator of map index ``map_index``, attached to this task's DAG (not added to it)."""
        from scheduler.authoring import baseoperator

        element = self.expand_input.element(map_index, resolve, self.where)
        kwargs = dict(self.partial_kwargs)
        if self.expand_input.target == "op_kwargs":
            op_kwargs = dict(kwargs.get("op_kwargs") or {})
            op_kwargs.update(element)
            kwargs["op_kwargs"] = op_kwargs
        else:
            kwargs.update(element)
        base = {k: getattr(self, k) for k in _BASE_COPIED if k not in kwargs}
        baseoperator._UNMAPPING.append(True)
        try:
            op = self.operator_class(task_id=self.task_id, default_args=dict(self.mapped_defaults), **base, **kwargs)
        finally:
            baseoperator._UNMAPPING.pop()
        op._dag = self._dag
        op.task_group = self.task_group
        op.upstream_task_ids = set(self.upstream_task_ids)
        op.downstream_task_ids = set(self.downstream_task_ids)
        op.map_index = map_index  # type: ignore[attr-defined]
        return op

    def __deepcopy__(self, memo: dict[int, Any]) -> MappedOperator:  # pragma: no cover - copy.copy suffices
        return copy.copy(self)


#: BaseOperator settings of the mapped task handed on to each unmapped operator.
_BASE_COPIED = ("retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay", "execution_timeout",
                "trigger_rule", "pool", "pool_slots", "priority_weight", "weight_rule", "queue", "owner",
                "on_execute_callback", "on_failure_callback", "on_success_callback", "on_retry_callback",
                "do_xcom_push", "multiple_outputs")


def _snapshot_defaults(dag: Any, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    from scheduler.authoring.dag import current_dag, current_group

    defaults: dict[str, Any] = {}
    target = dag or current_dag()
    if target is not None:
        defaults.update(target.default_args)
    group = current_group()
    if group is not None:
        defaults.update(getattr(group, "default_args", {}) or {})
    defaults.update(extra or {})
    return defaults


def create_mapped(
    operator_class: type[BaseOperator],
    partial_kwargs: dict[str, Any],
    expand_input: ExpandInput,
    *,
    allowed_names: Sequence[str] | None = None,
) -> MappedOperator:
    """Build the MappedOperator for ``operator_class.partial(**partial_kwargs).expand...``."""
    task_id = partial_kwargs.get("task_id")
    if not isinstance(task_id, str):
        raise DagDefinitionError(f"{operator_class.__name__}.partial() needs a task_id")
    where = f"mapped task '{task_id}'"
    if expand_input.kind == "dict":
        if not expand_input.args:
            raise DagDefinitionError(f"{where}: expand() needs at least one argument to map over")
        names = set(allowed_names) if allowed_names is not None else set(_accepted_init_args(operator_class))
        unknown = sorted(n for n in expand_input.args if n not in names)
        if unknown:
            raise DagDefinitionError(f"{where}: {operator_class.__name__} has no argument {', '.join(unknown)} to map over")
        both = sorted(set(expand_input.args) & set(partial_kwargs if expand_input.target == "kwargs"
                                                  else partial_kwargs.get("op_kwargs") or {}))
        if both:
            raise DagDefinitionError(f"{where}: {', '.join(both)} given to both partial() and expand()")
        for name, value in expand_input.args.items():
            _check_mappable_literal(value, f"{where}, argument '{name}'")
        if expand_input.target == "kwargs" and "task_id" in expand_input.args:
            raise DagDefinitionError(f"{where}: task_id cannot be mapped")
    else:
        value = expand_input.value
        if not _is_xcom_arg(value) and not isinstance(value, list | tuple):
            raise DagDefinitionError(
                f"{where}: expand_kwargs() needs a list of dicts or the output of a task, got {type(value).__name__}"
            )
    kwargs = dict(partial_kwargs)
    dag = kwargs.pop("dag", None)
    defaults = _snapshot_defaults(dag, kwargs.pop("default_args", None))
    base_names = _accepted_init_args(BaseOperator)
    base = {k: v for k, v in kwargs.items() if k in base_names and k not in ("params",)}
    rest = {k: v for k, v in kwargs.items() if k not in base or k == "task_id"}
    rest.pop("task_id", None)
    if "params" in kwargs:
        base["params"] = kwargs["params"]
        rest.pop("params", None)
    if dag is not None:
        base["dag"] = dag
    return MappedOperator(
        operator_class=operator_class, partial_kwargs=rest, expand_input=expand_input, mapped_defaults=defaults,
        **base,
    )


class OperatorPartial:
    """``Op.partial(task_id=..., ...)``: the fixed arguments; ``.expand(...)`` / ``.expand_kwargs(...)`` map."""

    def __init__(self, operator_class: type[BaseOperator], kwargs: dict[str, Any]) -> None:
        self.operator_class = operator_class
        self.kwargs = kwargs

    def expand(self, **mapped: Any) -> MappedOperator:
        return create_mapped(self.operator_class, self.kwargs, ExpandInput("dict", "kwargs", args=mapped))

    def expand_kwargs(self, value: Any) -> MappedOperator:
        return create_mapped(self.operator_class, self.kwargs, ExpandInput("list", "kwargs", value=value))


def operator_partial(cls: type[BaseOperator], **kwargs: Any) -> OperatorPartial:
    return OperatorPartial(cls, kwargs)
