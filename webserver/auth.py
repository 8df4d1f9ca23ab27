"""Who is asking, and may they: users, roles and the ``requires`` decorator.

Roles and what they may do (Airflow's built-in roles, reduced to three permissions):

=========  ======  ======  =======
role       read    edit    admin
=========  ======  ======  =======
Viewer     yes     no      no
Op         yes     yes     no
Admin      yes     yes     yes
=========  ======  ======  =======

``edit`` covers trigger, clear, mark, pause and patch; ``admin`` covers users.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

ROLES: dict[str, frozenset[str]] = {
    "Viewer": frozenset({"read"}),
    "Op": frozenset({"read", "edit"}),
    "Admin": frozenset({"read", "edit", "admin"}),
}
PERMISSIONS = ("read", "edit", "admin")

F = TypeVar("F", bound=Callable[..., Any])


def requires(permission: str) -> Callable[[F], F]:
    """Decorate a view: 401 (problem+json for /api/) without valid credentials, 403 without ``permission``."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}; expected one of {PERMISSIONS}")

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            from webserver.login import authorize

            refusal = authorize(permission)
            if refusal is not None:
                return refusal
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate
