"""The web server: a Flask application for the UI and the REST API v1 (``create_app``)."""

from __future__ import annotations

from webserver.app import create_app

__all__ = ["create_app"]
