"""``/health`` and ``/version``: answered without credentials, as in Airflow."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from webserver.api import api


@api.get("/health")
def health() -> Any:
    from sqlalchemy import text

    from webserver.db import read_session

    try:
        with read_session() as session:
            session.execute(text("SELECT 1"))
        database = {"status": "healthy"}
    except Exception:  # noqa: BLE001 - reported, not raised
        database = {"status": "unhealthy"}
    return jsonify({"metadatabase": database, "scheduler": {"status": None, "latest_scheduler_heartbeat": None}})


@api.get("/version")
def version() -> Any:
    from scheduler import __version__

    return jsonify({"version": __version__, "git_version": None})
