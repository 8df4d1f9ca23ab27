"""Authentication of a request: the UI's session cookie, or HTTP basic auth (API clients).

A request is authenticated by, in this order:

1. HTTP basic auth, when an ``Authorization: Basic`` header is present (checked on every request;
   failures count towards the login throttle and answer 401, or 429 while throttled);
2. the session cookie set by the login form: the user id in the signed Flask session. The user is
   loaded again on every request, so a deleted or deactivated user, or a changed password, ends
   the session at once.

Unauthenticated requests get 401 problem+json under ``/api/`` (with ``WWW-Authenticate``) and a
redirect to the login page elsewhere. CSRF checks happen before the view (see ``webserver.app``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from typing import Any
from urllib.parse import urlencode

from flask import current_app, g, redirect, render_template, request, session

from webserver.problems import problem

SESSION_USER_KEY = "user_id"
SESSION_PASSWORD_KEY = "pwh"


def current_user() -> Any:
    """The authenticated user of this request (a detached User row), or None."""
    return getattr(g, "updraft_user", None)


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def uses_basic_auth() -> bool:
    credentials = request.authorization
    return credentials is not None and credentials.type == "basic"


def client_address() -> str:
    """The peer address (proxies' X-Forwarded-For is not trusted: anyone could set it)."""
    return request.remote_addr or "unknown"


def throttle() -> Any:
    """This application's LoginThrottle."""
    return current_app.extensions["updraft_login_throttle"]


def authorize(permission: str) -> Any:
    """None when the current request may act with ``permission``; else the 401/403/429 response to return."""
    from webserver.auth import ROLES

    user = current_user()
    if user is None:
        if uses_basic_auth():
            user, refusal = _basic_auth_user()
            if refusal is not None:
                return refusal
        else:
            user = session_user()
        if user is None:
            return _unauthenticated()
        g.updraft_user = user
    if permission not in ROLES.get(user.role, frozenset()):
        detail = f"role {user.role} may not {permission}"
        if is_api_request():
            return problem(403, "Forbidden", detail)
        return render_template("error.html", title="Forbidden", detail=detail), 403
    return None


def session_user() -> Any:
    """The user the session cookie names, if still active with the same password; clears a stale session."""
    from webserver.db import read_session
    from webserver.users import get_user

    user_id = session.get(SESSION_USER_KEY)
    if not isinstance(user_id, int):
        return None
    with read_session() as db:
        user = get_user(db, user_id)
    if user is None or not user.active or session.get(SESSION_PASSWORD_KEY) != password_fingerprint(user.password_hash):
        session.clear()
        return None
    return user


def password_fingerprint(password_hash: str) -> str:
    """A short keyed digest of the stored hash: kept in the session so a password change ends other sessions."""
    key = str(current_app.secret_key).encode()
    return hmac.new(key, b"pw:" + password_hash.encode(), hashlib.sha256).hexdigest()[:32]


def check_credentials(username: str, password: str) -> tuple[Any, float | None]:
    """(user, None) for good credentials; (None, None) for bad ones; (None, seconds) while throttled.

    Failures are counted (throttle in memory, ``failed_login_count`` in the database); a success
    clears the user name's count.
    """
    from webserver.db import read_session, write_session
    from webserver.users import authenticate, record_login_failure, reset_failed_logins

    address = client_address()
    wait = throttle().retry_after(username, address)
    if wait is not None:
        return None, wait
    with read_session() as db:
        user = authenticate(db, username, password)
    if user is None:
        with write_session() as db:
            record_login_failure(db, username)
            _audit_login(db, "login.failed", username, address)
        throttle().failed(username, address)  # after the commit: a view run again on a busy database counts once
        return None, None
    throttle().succeeded(username)
    if user.failed_login_count:
        with write_session() as db:
            reset_failed_logins(db, user.id)
    return user, None


def log_in(user: Any) -> None:
    """Start a fresh session for ``user`` (a new session id, so a planted one is never promoted)."""
    from webserver.db import write_session
    from webserver.users import record_login_success

    with write_session() as db:
        record_login_success(db, user.id)
        _audit_login(db, "login", user.username, client_address())
    session.clear()
    session["sid"] = secrets.token_hex(16)
    session[SESSION_USER_KEY] = user.id
    session[SESSION_PASSWORD_KEY] = password_fingerprint(user.password_hash)
    g.updraft_user = user


def _audit_login(db: Any, event: str, username: str, address: str) -> None:
    """An audit row for a login (the form's: ``ui.login``) or a failed one (``ui.`` or ``api.login.failed``)."""
    from scheduler.audit import record_event

    origin = "api" if is_api_request() else "ui"
    record_event(db, f"{origin}.{event}", owner=username[:256], extra={"address": address})


def log_out() -> None:
    session.clear()
    g.pop("updraft_user", None)


def too_many_attempts(wait_s: float) -> Any:
    response = problem(429, "Too Many Requests", "too many failed logins; try again later")
    response.headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
    return response


def _basic_auth_user() -> tuple[Any, Any]:
    credentials = request.authorization
    assert credentials is not None
    if not credentials.username:
        return None, _unauthorized("no user name was given")
    user, wait = check_credentials(credentials.username, credentials.password or "")
    if wait is not None:
        return None, too_many_attempts(wait)
    if user is None:
        return None, _unauthorized("the user name or password is wrong")
    return user, None


def _unauthenticated() -> Any:
    if is_api_request():
        return _unauthorized("no valid credentials were given (HTTP basic auth or a login session)")
    target = request.full_path if request.query_string else request.path
    return redirect("/login?" + urlencode({"next": target}))


def _unauthorized(detail: str) -> Any:
    response = problem(401, "Unauthorized", detail)
    response.headers["WWW-Authenticate"] = 'Basic realm="updraft"'
    return response
