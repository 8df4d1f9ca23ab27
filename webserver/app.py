"""The Flask application factory: settings, the database engine, blueprints, errors, security headers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from webserver.problems import problem

if TYPE_CHECKING:
    from scheduler.config import Settings

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application for ``settings`` (loaded from the environment when None)."""
    from scheduler.config import load_settings
    from scheduler.db.engine import make_engine

    settings = settings if settings is not None else load_settings()
    app = Flask("webserver")
    app.config["UPDRAFT_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["updraft_engine"] = make_engine(
        settings.sql_alchemy_conn,
        pool_size=int(settings.get("database", "sql_alchemy_pool_size")),
        max_overflow=int(settings.get("database", "sql_alchemy_max_overflow")),
    )

    from webserver.api import api

    app.register_blueprint(api)
    app.after_request(_security_headers)
    _register_errors(app)
    return app


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    )
    return response


def _register_errors(app: Flask) -> None:
    from werkzeug.exceptions import HTTPException

    def on_http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return problem(exc.code or 500, exc.name, exc.description or exc.name)
        return exc

    def on_error(exc: Exception) -> Any:
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return problem(500, "Internal Server Error", "an unexpected error happened; it was logged")
        return Response("Internal Server Error", status=500, mimetype="text/plain")

    app.register_error_handler(HTTPException, on_http_error)
    app.register_error_handler(Exception, on_error)
