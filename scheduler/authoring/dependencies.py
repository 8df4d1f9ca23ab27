"""``>>`` and ``<<`` for everything that can stand in a dependency: operators, XComArgs, task groups, labels."""

from __future__ import annotations

from typing import Any, Self


class DependencyMixin:
    """``a >> b`` is ``a.set_downstream(b)`` and gives ``b``; ``[a, b] >> c`` reaches ``c.__rrshift__``."""

    def set_upstream(self, other: Any, edge_modifier: Any = None) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def set_downstream(self, other: Any, edge_modifier: Any = None) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> Self:
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> Self:
        self.set_downstream(other)
        return self
