"""Task groups: ``with TaskGroup("extract") as tg:`` and ``@task_group``, as in Airflow.

A group prefixes the ids of the tasks created inside it (``extract.download``) unless
``prefix_group_id=False``; groups nest (``outer.inner.task``). ``group >> task`` wires
the group's leaves (its tasks with no downstream task inside the group) to the task,
and ``task >> group`` wires the task to the group's roots. ``default_args`` of a group
apply to its tasks over the DAG's (and outer groups') default_args.

Each DAG has a root group (``dag.task_group``, id None) and ``dag.task_group_dict``
(every group by its full id); the serializer stores the tree for the web UI.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from scheduler.authoring.baseoperator import _flatten_tasks, validate_id
from scheduler.authoring.dependencies import DependencyMixin
from scheduler.exceptions import DagDefinitionError

if TYPE_CHECKING:
    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.authoring.dag import DAG


class TaskGroup(DependencyMixin):
    """A named set of tasks (and groups) of one DAG; see the module documentation."""

    def __init__(
        self,
        group_id: str | None,
        prefix_group_id: bool = True,
        parent_group: TaskGroup | None = None,
        dag: DAG | None = None,
        default_args: dict[str, Any] | None = None,
        tooltip: str = "",
        ui_color: str = "CornflowerBlue",
        ui_fgcolor: str = "#000",
        add_suffix_on_collision: bool = False,
        group_display_name: str | None = None,
    ) -> None:
        from scheduler.authoring.dag import current_dag, current_group

        self.prefix_group_id = bool(prefix_group_id)
        self.tooltip = tooltip
        self.ui_color = ui_color
        self.ui_fgcolor = ui_fgcolor
        self.group_display_name = group_display_name
        self.children: dict[str, BaseOperator | TaskGroup] = {}
        self.upstream_group_ids: set[str] = set()
        self.downstream_group_ids: set[str] = set()
        if group_id is None:  # the root group of a DAG
            if dag is None:
                raise DagDefinitionError("the root task group needs its DAG")
            self._group_id: str | None = None
            self.parent_group: TaskGroup | None = None
            self.dag = dag
            self.default_args: dict[str, Any] = {}
            return
        validate_id("group_id", group_id, " (task group)")
        parent = parent_group if parent_group is not None else current_group()
        target = dag or (parent.dag if parent is not None else None) or current_dag()
        if target is None:
            raise DagDefinitionError(
                f"task group '{group_id}' was created outside a DAG; create it inside 'with DAG(...)' or pass dag="
            )
        if parent is None:
            parent = target.task_group
        if parent.dag is not target:
            raise DagDefinitionError(f"task group '{group_id}' and its parent group belong to different DAGs")
        self.dag = target
        self.parent_group = parent
        full = parent.child_id(group_id)
        if full in target.task_group_dict or full in target.task_dict:
            if not add_suffix_on_collision:
                raise DagDefinitionError(f"group_id '{full}' has already been added to the DAG '{target.dag_id}'")
            n = 1
            while f"{full}__{n}" in target.task_group_dict or f"{full}__{n}" in target.task_dict:
                n += 1
            full = f"{full}__{n}"
        self._group_id = full
        merged = dict(parent.default_args)
        merged.update(default_args or {})
        self.default_args = merged
        target.task_group_dict[full] = self
        parent.children[full] = self

    # --- identity -------------------------------------------------------------------------------

    @property
    def group_id(self) -> str | None:
        return self._group_id

    @property
    def is_root(self) -> bool:
        return self._group_id is None

    @property
    def label(self) -> str | None:
        """The group's own name (its id without the parent's prefix)."""
        if self._group_id is None or self.parent_group is None:
            return self._group_id
        prefix = self.parent_group.child_prefix()
        return self._group_id[len(prefix):] if prefix and self._group_id.startswith(prefix) else self._group_id

    def child_prefix(self) -> str:
        """What the ids of tasks and groups created directly inside this group begin with."""
        if self.prefix_group_id and self._group_id:
            return self._group_id + "."
        return ""

    def child_id(self, label: str) -> str:
        return self.child_prefix() + label

    # --- membership -----------------------------------------------------------------------------

    def add(self, task: BaseOperator) -> None:
        if task.task_id in self.children and self.children[task.task_id] is not task:
            raise DagDefinitionError(f"task '{task.task_id}' is already in task group '{self._group_id}'")
        self.children[task.task_id] = task

    def iter_tasks(self) -> Iterator[BaseOperator]:
        """Every task in this group and the groups inside it."""
        for child in self.children.values():
            if isinstance(child, TaskGroup):
                yield from child.iter_tasks()
            else:
                yield child

    def _task_ids(self) -> set[str]:
        return {t.task_id for t in self.iter_tasks()}

    @property
    def roots(self) -> list[BaseOperator]:
        """The group's tasks with no upstream task inside the group."""
        ids = self._task_ids()
        return [t for t in self.iter_tasks() if not (t.upstream_task_ids & ids)]

    @property
    def leaves(self) -> list[BaseOperator]:
        """The group's tasks with no downstream task inside the group."""
        ids = self._task_ids()
        return [t for t in self.iter_tasks() if not (t.downstream_task_ids & ids)]

    def get_roots(self) -> list[BaseOperator]:
        return self.roots

    def get_leaves(self) -> list[BaseOperator]:
        return self.leaves

    # --- wiring ---------------------------------------------------------------------------------

    def _check_not_empty(self, action: str) -> None:
        if not self.children:
            raise DagDefinitionError(
                f"task group '{self._group_id}' is empty: create its tasks before using it in {action}"
            )

    def set_downstream(self, other: Any, edge_modifier: Any = None) -> None:
        self._check_not_empty("a dependency")
        for leaf in self.leaves:
            leaf.set_downstream(other, edge_modifier=edge_modifier)
        for item in _flatten_tasks(other):
            if isinstance(item, TaskGroup) and item.group_id:
                self.downstream_group_ids.add(item.group_id)
                if self._group_id:
                    item.upstream_group_ids.add(self._group_id)

    def set_upstream(self, other: Any, edge_modifier: Any = None) -> None:
        self._check_not_empty("a dependency")
        for root in self.roots:
            root.set_upstream(other, edge_modifier=edge_modifier)
        for item in _flatten_tasks(other):
            if isinstance(item, TaskGroup) and item.group_id:
                self.upstream_group_ids.add(item.group_id)
                if self._group_id:
                    item.downstream_group_ids.add(self._group_id)

    # --- context manager ------------------------------------------------------------------------

    def __enter__(self) -> TaskGroup:
        from scheduler.authoring import dag as dag_module

        if self.is_root:
            raise DagDefinitionError("the root task group cannot be entered")
        dag_module._dag_stack.append(self.dag)
        dag_module._group_stack.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from scheduler.authoring import dag as dag_module

        dag_module._group_stack.pop()
        dag_module._dag_stack.pop()

    # --- serialization --------------------------------------------------------------------------

    def serialize(self) -> dict[str, Any]:
        """The group tree: ids, labels, display settings, children in creation order."""
        children: list[dict[str, Any]] = []
        for child_id, child in self.children.items():
            if isinstance(child, TaskGroup):
                children.append(child.serialize())
            else:
                children.append({"type": "task", "id": child_id})
        return {
            "type": "group",
            "id": self._group_id,
            "label": self.label,
            "prefix_group_id": self.prefix_group_id,
            "tooltip": self.tooltip,
            "ui_color": self.ui_color,
            "ui_fgcolor": self.ui_fgcolor,
            "upstream_group_ids": sorted(self.upstream_group_ids),
            "downstream_group_ids": sorted(self.downstream_group_ids),
            "children": children,
        }

    def __repr__(self) -> str:
        return f"<TaskGroup: {self._group_id}>"


class TaskGroupDecorator:
    """What ``@task_group`` returns: calling it inside a DAG builds a new group around the function's tasks.

    The call returns what the function returns (so ``t3(my_group())`` passes the group's
    output on), or the group itself when the function returns nothing.
    """

    def __init__(self, function: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.function = function
        self.kwargs = kwargs
        functools.update_wrapper(self, function)  # type: ignore[arg-type]

    def override(self, **kwargs: Any) -> TaskGroupDecorator:
        return TaskGroupDecorator(self.function, {**self.kwargs, **kwargs})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kw = dict(self.kwargs)
        group_id = kw.pop("group_id", None) or self.function.__name__
        kw.setdefault("add_suffix_on_collision", True)
        try:
            inspect.signature(self.function).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"@task_group '{group_id}': {exc}") from None
        with TaskGroup(group_id, **kw) as group:
            if not group.tooltip and self.function.__doc__:
                group.tooltip = self.function.__doc__.strip()
            result = self.function(*args, **kwargs)
        return result if result is not None else group

    def expand(self, **kwargs: Any) -> Any:
        raise DagDefinitionError(
            f"@task_group '{self.function.__name__}': mapping a whole task group (expand) is not supported; "
            "map the tasks inside it instead"
        )

    def partial(self, **kwargs: Any) -> Any:
        return self.expand()


def task_group(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """``@task_group`` or ``@task_group(group_id=..., default_args=..., prefix_group_id=...)``."""
    if python_callable is not None and callable(python_callable):
        return TaskGroupDecorator(python_callable, kwargs)

    def wrap(func: Callable[..., Any]) -> TaskGroupDecorator:
        return TaskGroupDecorator(func, kwargs)

    return wrap
