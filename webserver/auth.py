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

Also here: the CSRF token of a browser session, and the throttle on failed logins.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
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


# --- CSRF: a token bound to the browser session -------------------------------------------------

#: Methods that change state; requests with them that ride on the session cookie need a CSRF token.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRFToken"


def _session_nonce() -> str:
    """The random id of this browser session (created on first use; renewed at login and logout)."""
    from flask import session

    nonce = session.get("sid")
    if not isinstance(nonce, str) or not nonce:
        nonce = session["sid"] = secrets.token_hex(16)
    return nonce


def csrf_token() -> str:
    """The CSRF token for this session: HMAC-SHA256 of the session id with the secret key."""
    from flask import current_app

    key = str(current_app.secret_key).encode()
    return hmac.new(key, b"csrf:" + _session_nonce().encode(), hashlib.sha256).hexdigest()


def csrf_valid(token: str | None) -> bool:
    """Whether ``token`` is this session's CSRF token (False when the session has no id yet)."""
    from flask import session

    if not token or not isinstance(session.get("sid"), str):
        return False
    return hmac.compare_digest(token.encode(), csrf_token().encode())


def submitted_csrf_token() -> str | None:
    """The token a request carries: the ``X-CSRFToken`` header, else the ``csrf_token`` form field."""
    from flask import request

    return request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FORM_FIELD)


# --- throttling failed logins ---------------------------------------------------------------------


class LoginThrottle:
    """Counts failed logins per user name and per client address in a sliding window (this process only).

    When a key has ``limit`` failures within ``window_s`` seconds, further attempts for it are
    refused, without checking the password, until the oldest of those failures is older than the
    window. A successful login clears the user name's failures, not the address's (one valid
    account must not buy an address more guesses at other accounts). At most ``max_keys`` keys are
    remembered; the stalest are forgotten first.
    """

    def __init__(
        self, *, per_user: int = 5, per_address: int = 20, window_s: float = 300.0,
        max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user, self.per_address, self.window_s = per_user, per_address, window_s
        self.max_keys, self.clock = max_keys, clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, username: str, address: str) -> float | None:
        """Seconds until an attempt for this user name from this address is allowed again; None when it is."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key, limit in ((("user", username), self.per_user), (("addr", address), self.per_address)):
                times = self._recent(key, now)
                if times is not None and len(times) >= limit:
                    wait = max(wait, times[-limit] + self.window_s - now)
        return wait if wait > 0 else None

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in (("user", username), ("addr", address)):
                times = self._recent(key, now) or deque()
                times.append(now)
                self._failures[key] = times
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(("user", username), None)
