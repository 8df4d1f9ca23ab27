"""TaskFlow: ``@task`` turns a function into a task; calling it returns an XComArg.

Passing an XComArg to another task adds the edge and hands the value over when
the downstream task runs.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from scheduler.authoring.baseoperator import BaseOperator
from scheduler.authoring.dependencies import DependencyMixin
from scheduler.authoring.operators import (
    BashOperator,
    BranchPythonOperator,
    PythonOperator,
    ShortCircuitOperator,
)
from scheduler.authoring.sensors import PythonSensor

RETURN_KEY = "return_value"


class XComArg(DependencyMixin):
    """The (future) XCom value of a task; ``arg["key"]`` selects a key of a multiple-outputs task."""

    def __init__(self, operator: BaseOperator, key: str = RETURN_KEY) -> None:
        self.operator = operator
        self.key = key

    def __getitem__(self, key: str) -> XComArg:
        return XComArg(self.operator, key)

    def resolve(self, context: Mapping[str, Any]) -> Any:
        if self.operator.is_mapped:  # every map index's value, in map-index order
            return context["ti"].xcom_pull_mapped(self.operator.task_id, key=self.key)
        return context["ti"].xcom_pull(task_ids=self.operator.task_id, key=self.key)

    def map(self, f: Any) -> Any:
        raise TypeError(f"XComArg of task '{self.operator.task_id}': .map() is not supported by updraft")

    # wiring delegates to the operator
    @property
    def roots(self) -> list[BaseOperator]:
        return [self.operator]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [self.operator]

    def set_downstream(self, other: Any, edge_modifier: Any = None) -> None:
        self.operator.set_downstream(other)

    def set_upstream(self, other: Any, edge_modifier: Any = None) -> None:
        self.operator.set_upstream(other)

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(f"XComArg of task '{self.operator.task_id}' is not iterable while the DAG is defined")

    def __repr__(self) -> str:
        return f"XComArg({self.operator.task_id!r}, key={self.key!r})"


def iter_xcom_args(value: Any) -> Iterator[XComArg]:
    """Every XComArg inside a value (nested lists, tuples, sets and dicts)."""
    if isinstance(value, XComArg):
        yield value
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from iter_xcom_args(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_xcom_args(item)


def _infers_multiple_outputs(func: Callable[..., Any]) -> bool:
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return False
    ret = hints.get("return")
    if ret is None:
        return False
    origin = typing.get_origin(ret) or ret
    return origin in (dict, typing.Dict, Mapping)  # noqa: UP006


class _DecoratedMixin:
    """Shared by the operators ``@task`` builds: the function's arguments arrive as op_args/op_kwargs."""

    custom_operator_name = "@task"


class DecoratedPythonOperator(_DecoratedMixin, PythonOperator):
    pass


class DecoratedBranchOperator(_DecoratedMixin, BranchPythonOperator):
    custom_operator_name = "@task.branch"


class DecoratedShortCircuitOperator(_DecoratedMixin, ShortCircuitOperator):
    custom_operator_name = "@task.short_circuit"


class DecoratedBashOperator(_DecoratedMixin, BashOperator):
    """``@task.bash``: the function returns the command to run."""

    custom_operator_name = "@task.bash"

    def __init__(self, *, python_callable: Callable[..., Any], op_args: Any = None, op_kwargs: Any = None, **kwargs: Any) -> None:
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        kwargs.pop("bash_command", None)  # a bash_command from default_args: the function supplies the command
        super().__init__(bash_command="", **kwargs)

    template_fields = ("bash_command", "env", "cwd", "op_args", "op_kwargs")

    def execute(self, context: dict[str, Any]) -> Any:
        from scheduler.authoring.operators import call_with_context
        from scheduler.templating import render_string

        command = call_with_context(self.python_callable, self.op_args, self.op_kwargs, context)
        if not isinstance(command, str) or not command.strip():
            raise TypeError(f"@task.bash '{self.task_id}' must return a non-empty command string, got {command!r}")
        self.bash_command = render_string(self, command, context)
        return super().execute(context)


class DecoratedSensorOperator(_DecoratedMixin, PythonSensor):
    """``@task.sensor``: the function is the poke; it returns a bool or a PokeReturnValue."""

    custom_operator_name = "@task.sensor"


class TaskDecorator:
    """What ``@task(...)`` returns: call it inside a DAG to add a task; ``.override(...)`` to change args."""

    def __init__(self, func: Callable[..., Any], operator_class: type[BaseOperator], kwargs: dict[str, Any]) -> None:
        self.function = func
        self.operator_class = operator_class
        self.kwargs = kwargs
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def override(self, **kwargs: Any) -> TaskDecorator:
        return TaskDecorator(self.function, self.operator_class, {**self.kwargs, **kwargs})

    # --- dynamic task mapping ----------------------------------------------------------------------

    def partial(self, **kwargs: Any) -> _TaskPartial:
        """Fix some of the function's arguments; ``.expand(...)`` maps over the others."""
        return _TaskPartial(self, kwargs)

    def expand(self, **mapped: Any) -> XComArg:
        return _TaskPartial(self, {}).expand(**mapped)

    def expand_kwargs(self, value: Any) -> XComArg:
        return _TaskPartial(self, {}).expand_kwargs(value)

    def _mapped(self, fixed: dict[str, Any], expand_input: Any) -> XComArg:
        from scheduler.authoring.mapping import create_mapped

        kw = dict(self.kwargs)
        task_id = self._unique_task_id(kw.pop("task_id", None) or self.function.__name__)
        if "multiple_outputs" not in kw:
            kw["multiple_outputs"] = _infers_multiple_outputs(self.function)
        names = list(inspect.signature(self.function).parameters)
        unknown = sorted(set(fixed) - set(names))
        if unknown:
            raise TypeError(f"@task '{task_id}': partial() got unexpected arguments {', '.join(unknown)}")
        partial = {"task_id": task_id, "python_callable": self.function, "op_args": [], "op_kwargs": dict(fixed), **kw}
        op = create_mapped(self.operator_class, partial, expand_input, allowed_names=names)
        if op.doc_md is None and self.function.__doc__:
            op.doc_md = self.function.__doc__
        return XComArg(op)

    def _unique_task_id(self, base: str) -> str:
        from scheduler.authoring.dag import current_dag, current_group

        dag = self.kwargs.get("dag") or current_dag()
        if dag is None:
            return base
        group = current_group()
        prefix = group.child_prefix() if group is not None else ""
        if prefix + base not in dag.task_dict:
            return base
        n = 1
        while f"{prefix}{base}__{n}" in dag.task_dict:
            n += 1
        return f"{base}__{n}"

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        kw = dict(self.kwargs)
        task_id = self._unique_task_id(kw.pop("task_id", None) or self.function.__name__)
        if "multiple_outputs" not in kw:
            kw["multiple_outputs"] = _infers_multiple_outputs(self.function)
        try:
            inspect.signature(self.function).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"@task '{task_id}': {exc}") from None
        op = self.operator_class(
            task_id=task_id, python_callable=self.function, op_args=list(args), op_kwargs=dict(kwargs), **kw
        )
        if op.doc_md is None and self.function.__doc__:
            op.doc_md = self.function.__doc__
        return XComArg(op)


class _TaskPartial:
    """``my_task.partial(x=1)``: ``.expand(y=[...])`` or ``.expand_kwargs([...])`` makes the mapped task."""

    def __init__(self, decorator: TaskDecorator, fixed: dict[str, Any]) -> None:
        self.decorator = decorator
        self.fixed = fixed

    def expand(self, **mapped: Any) -> XComArg:
        from scheduler.authoring.mapping import ExpandInput

        return self.decorator._mapped(self.fixed, ExpandInput("dict", "op_kwargs", args=mapped))

    def expand_kwargs(self, value: Any) -> XComArg:
        from scheduler.authoring.mapping import ExpandInput

        return self.decorator._mapped(self.fixed, ExpandInput("list", "op_kwargs", value=value))


def _make_decorator(operator_class: type[BaseOperator]) -> Callable[..., Any]:
    def decorator(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        if python_callable is not None and callable(python_callable):
            return TaskDecorator(python_callable, operator_class, kwargs)

        def wrap(func: Callable[..., Any]) -> TaskDecorator:
            return TaskDecorator(func, operator_class, kwargs)

        return wrap

    return decorator


class _TaskNamespace:
    """``task`` itself, plus ``task.python``, ``task.branch``, ``task.short_circuit``, ``task.bash``, ``task.sensor``."""

    def __init__(self) -> None:
        self.python = _make_decorator(DecoratedPythonOperator)
        self.branch = _make_decorator(DecoratedBranchOperator)
        self.short_circuit = _make_decorator(DecoratedShortCircuitOperator)
        self.bash = _make_decorator(DecoratedBashOperator)
        self.sensor = _make_decorator(DecoratedSensorOperator)

    def __call__(self, python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        return self.python(python_callable, **kwargs)


task = _TaskNamespace()
