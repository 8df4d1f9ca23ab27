"""The web server: a Flask application for the UI and the REST API v1 (``create_app``).

Importing this package imports neither Flask nor gunicorn (the scheduler process of
``updraft standalone`` imports :mod:`webserver.common` only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from scheduler.config import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask application (see :func:`webserver.app.create_app`)."""
    from webserver.app import create_app as build

    return build(settings)


def __getattr__(name: str) -> Any:
    raise AttributeError(f"module 'webserver' has no attribute {name!r}")
