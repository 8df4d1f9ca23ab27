"""The Flask application factory: settings, the database engine, blueprints, errors, security headers.

Sessions are Flask's signed cookies (key: ``[webserver] secret_key``, or a key generated once into
``$UPDRAFT_HOME/webserver_secret_key``), HttpOnly and SameSite=Lax. Every state-changing request
that rides on the session cookie must carry the session's CSRF token (checked here, before any
view); basic-auth requests carry their credentials explicitly and need none, but are refused when
a browser says they come from another site.

Every view runs as a whole again when the database reports a transient error (SQLite "database is
locked", a PostgreSQL deadlock or serialization failure, a dropped connection): its transaction was
rolled back, so nothing it did is kept. Views therefore do their writes in one ``write_session`` and
keep in-memory effects for after the commit; a view whose write committed before the error is not run
again (it answers 500). When the last attempt fails too, the answer is 503 with
``Retry-After``, saying that nothing was changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, render_template, request, session

from webserver.common import SECRET_KEY_FILE, load_secret_key  # noqa: F401 - re-exported
from webserver.problems import problem

if TYPE_CHECKING:
    from scheduler.config import Settings

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY_BYTES = 1024 * 1024
#: The generated key's file, in $UPDRAFT_HOME, when [webserver] secret_key is not set.
#: A signed session cookie is refused after this long, whatever the browser keeps.
SESSION_LIFETIME = timedelta(hours=12)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application for ``settings`` (loaded from the environment when None)."""
    from scheduler.config import load_settings
    from scheduler.db.engine import make_engine
    from webserver.auth import LoginThrottle, csrf_token

    settings = settings if settings is not None else load_settings()
    app = Flask("webserver")
    app.config["UPDRAFT_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config.update(
        SECRET_KEY=load_secret_key(settings),
        SESSION_COOKIE_NAME="updraft_session",  # cookies are per host, not per port: avoid other apps' "session"
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.extensions["updraft_engine"] = make_engine(
        settings.sql_alchemy_conn,
        pool_size=int(settings.get("database", "sql_alchemy_pool_size")),
        max_overflow=int(settings.get("database", "sql_alchemy_max_overflow")),
    )
    from scheduler.crypto import fernet

    fernet(settings)  # an invalid [core] fernet_key stops the start here, with a message naming it
    app.extensions["updraft_login_throttle"] = LoginThrottle()
    app.jinja_env.globals["csrf_token"] = csrf_token

    from webserver.api import api
    from webserver.views import ui

    app.register_blueprint(api)
    app.register_blueprint(ui)
    for endpoint, view in list(app.view_functions.items()):
        if endpoint != "static":
            app.view_functions[endpoint] = retrying(view)
    app.before_request(_csrf_protect)
    app.after_request(_security_headers)
    _register_errors(app)
    return app


#: Seconds a client is asked to wait (``Retry-After``) when the database stayed busy for every attempt.
BUSY_RETRY_AFTER_S = 1


class ChangedThenFailed(Exception):
    """A database error after the request's write committed: not run again (it would write twice), a 500."""


def retrying(view: Callable[..., Any]) -> Callable[..., Any]:
    """``view`` run again on a transient database error (see :func:`scheduler.db.engine.retry_transient`),
    unless one of its write sessions had committed already."""
    from sqlalchemy.exc import DBAPIError

    from scheduler.db.engine import retry_transient
    from webserver.db import COMMITTED

    @functools.wraps(view)
    def run(**kwargs: Any) -> Any:
        def attempt() -> Any:
            try:
                return view(**kwargs)
            except DBAPIError as exc:
                if g.get(COMMITTED):
                    raise ChangedThenFailed(f"{request.method} {request.path}: a database error after a commit") from exc
                raise

        return retry_transient(attempt, what=f"{request.method} {request.path}")

    return run


def _csrf_protect() -> Any:
    """Refuse state-changing requests that ride on the session cookie without the session's CSRF token."""
    from webserver.auth import UNSAFE_METHODS, csrf_valid, submitted_csrf_token
    from webserver.login import SESSION_USER_KEY, uses_basic_auth

    if request.method not in UNSAFE_METHODS:
        return None
    if uses_basic_auth():
        # Explicit credentials, but a browser may replay cached basic-auth credentials on a cross-site form.
        if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            return csrf_refusal("a request from another site may not use credentials cached by the browser")
        return None
    if session.get(SESSION_USER_KEY) is None:
        return None  # not logged in: the view answers 401 (the login form checks its own token)
    if not csrf_valid(submitted_csrf_token()):
        return csrf_refusal("the CSRF token is missing or invalid (form field csrf_token or header X-CSRFToken)")
    return None


def csrf_refusal(detail: str) -> Any:
    if request.path.startswith("/api/"):
        return problem(400, "Bad Request", detail)
    return render_template("error.html", title="Bad Request", detail=detail), 400


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'",
    )
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _register_errors(app: Flask) -> None:
    from werkzeug.exceptions import HTTPException

    def on_http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return problem(exc.code or 500, exc.name, exc.description or exc.name)
        return exc

    def on_error(exc: Exception) -> Any:
        from scheduler.db.engine import is_transient

        if is_transient(exc):
            app.logger.warning("%s %s: the database stayed busy for every attempt: %s",
                               request.method, request.path, str(getattr(exc, "orig", exc)).strip().splitlines()[0])
            detail = "the database is busy (a lock or a lost connection); nothing was changed, try again"
            if request.path.startswith("/api/"):
                response = problem(503, "Service Unavailable", detail)
            else:
                response = Response(render_template("error.html", title="Service Unavailable", detail=detail),
                                    status=503, mimetype="text/html")
            response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
            return response
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return problem(500, "Internal Server Error", "an unexpected error happened; it was logged")
        return Response("Internal Server Error", status=500, mimetype="text/plain")

    app.register_error_handler(HTTPException, on_http_error)
    app.register_error_handler(Exception, on_error)
