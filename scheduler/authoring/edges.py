"""Edge labels: ``branch >> Label("when empty") >> notify``, as Airflow's ``Label``.

A label wires its upstream tasks to its downstream tasks exactly as ``>>`` would, and
records the label on each edge it made (``dag.edge_info``), which the serializer stores
for the graph view. ``a.set_downstream(b, edge_modifier=Label("x"))`` does the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scheduler.authoring.dependencies import DependencyMixin
from scheduler.exceptions import DagDefinitionError

if TYPE_CHECKING:
    from scheduler.authoring.baseoperator import BaseOperator


class EdgeModifier(DependencyMixin):
    """Sits between tasks in a ``>>`` chain and labels the edges it passes on."""

    def __init__(self, label: str | None = None) -> None:
        if label is not None and not isinstance(label, str):
            raise DagDefinitionError(f"an edge label must be a string, got {label!r}")
        self.label = label
        self._upstream: list[BaseOperator] = []
        self._downstream: list[Any] = []

    # _flatten_tasks accepts anything with roots and leaves
    @property
    def roots(self) -> list[Any]:
        return list(self._downstream)

    @property
    def leaves(self) -> list[BaseOperator]:
        return list(self._upstream)

    def set_upstream(self, other: Any, edge_modifier: Any = None) -> None:
        from scheduler.authoring.baseoperator import _flatten_tasks

        for item in _flatten_tasks(other):
            if isinstance(item, EdgeModifier):
                raise DagDefinitionError("two edge labels cannot follow each other")
            for leaf in item.leaves:
                if leaf not in self._upstream:
                    self._upstream.append(leaf)
                    for down in self._downstream:
                        self._wire(leaf, down)

    def set_downstream(self, other: Any, edge_modifier: Any = None) -> None:
        from scheduler.authoring.baseoperator import _flatten_tasks

        for item in _flatten_tasks(other):
            if isinstance(item, EdgeModifier):
                raise DagDefinitionError("two edge labels cannot follow each other")
            self._downstream.append(item)
            for up in self._upstream:
                self._wire(up, item)

    def _wire(self, up: BaseOperator, down: Any) -> None:
        up.set_downstream(down)
        if self.label is None:
            return
        for root in down.roots:
            up.dag.set_edge_info(up.task_id, root.task_id, {"label": self.label})

    def __repr__(self) -> str:
        return f"Label({self.label!r})"


def Label(label: str) -> EdgeModifier:  # noqa: N802 - Airflow's name
    """An edge label: ``a >> Label("yes") >> b``."""
    return EdgeModifier(label)
