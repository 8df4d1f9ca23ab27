"""Authentication of a request: HTTP basic auth (API clients). The UI session comes with the login page."""

from __future__ import annotations

from typing import Any

from flask import g, request

from webserver.problems import problem


def current_user() -> Any:
    """The authenticated user of this request (a detached User row), or None."""
    return getattr(g, "updraft_user", None)


def authorize(permission: str) -> Any:
    """None when the current request may act with ``permission``; else the 401/403 response to return."""
    from webserver.auth import ROLES
    from webserver.db import read_session
    from webserver.users import authenticate

    user = current_user()
    if user is None:
        credentials = request.authorization
        if credentials is None or credentials.type != "basic" or not credentials.username:
            return _unauthorized("no credentials were given")
        with read_session() as session:
            user = authenticate(session, credentials.username, credentials.password or "")
        if user is None:
            return _unauthorized("the user name or password is wrong")
        g.updraft_user = user
    if permission not in ROLES.get(user.role, frozenset()):
        return problem(403, "Forbidden", f"role {user.role} may not {permission}")
    return None


def _unauthorized(detail: str) -> Any:
    response = problem(401, "Unauthorized", detail)
    response.headers["WWW-Authenticate"] = 'Basic realm="updraft"'
    return response
