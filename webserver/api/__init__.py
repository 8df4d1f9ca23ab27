"""The REST API v1 blueprint (Airflow's stable REST API paths and shapes); each module adds its routes."""

from __future__ import annotations

from flask import Blueprint

api = Blueprint("api_v1", __name__, url_prefix="/api/v1")

from webserver.api import (  # noqa: E402,F401
    connections,
    dag_runs,
    dags,
    datasets,
    event_logs,
    import_errors,
    monitor,  # noqa: E402,F401  (registers the routes on ``api``)
    openapi,
    pools,
    task_instances,
    variables,
)
