"""``/eventLogs``: the audit log (table ``log``), Airflow's shape; any role may read it."""

from __future__ import annotations

from typing import Any

from flask import Response
from sqlalchemy import Select, func, select

from scheduler.api_shapes import isoformat
from scheduler.db.models import Log
from webserver.api import api
from webserver.api.shapes import PAGINATION, bad_request, json_response, not_found, order_by, page, query
from webserver.auth import requires
from webserver.db import read_session

ORDER_COLUMNS = {"event_log_id": Log.id, "id": Log.id, "when": Log.dttm, "dttm": Log.dttm, "event": Log.event,
                 "owner": Log.owner, "dag_id": Log.dag_id, "task_id": Log.task_id, "run_id": Log.run_id}
FILTERS: dict[str, str] = {
    "dag_id": "str", "task_id": "str", "run_id": "str", "map_index": "int", "try_number": "int",
    "event": "str", "owner": "str", "before": "date-time", "after": "date-time",
    "included_events": "list", "excluded_events": "list",
}
_COLUMNS = {"dag_id": Log.dag_id, "task_id": Log.task_id, "run_id": Log.run_id, "map_index": Log.map_index,
            "try_number": Log.try_number, "event": Log.event, "owner": Log.owner}


def event_log_record(row: Log) -> dict[str, Any]:
    return {
        "event_log_id": row.id, "when": isoformat(row.dttm), "dag_id": row.dag_id, "task_id": row.task_id,
        "run_id": row.run_id, "map_index": row.map_index, "try_number": row.try_number, "event": row.event,
        "execution_date": None, "owner": row.owner, "extra": row.extra,
    }


def filtered(statement: Select[Any], params: dict[str, Any]) -> Select[Any]:
    """``statement`` narrowed by the event log filters in ``params`` (API and UI share them)."""
    for name, column in _COLUMNS.items():
        if params.get(name) not in (None, ""):
            statement = statement.where(column == params[name])
    if params.get("before") is not None:
        statement = statement.where(Log.dttm < params["before"])
    if params.get("after") is not None:
        statement = statement.where(Log.dttm > params["after"])
    if params.get("included_events"):
        statement = statement.where(Log.event.in_(params["included_events"]))
    if params.get("excluded_events"):
        statement = statement.where(Log.event.not_in(params["excluded_events"]))
    return statement


@api.get("/eventLogs")
@requires("read")
def list_event_logs() -> Response:
    params = query({**PAGINATION, **FILTERS})
    limit, offset = page(params)
    with read_session() as session:
        total = session.scalar(filtered(select(func.count()).select_from(Log), params)) or 0
        statement = filtered(select(Log), params).order_by(*order_by(params, ORDER_COLUMNS, "event_log_id"))
        records = [event_log_record(row) for row in session.scalars(statement.limit(limit).offset(offset))]
    return json_response({"event_logs": records, "total_entries": total})


@api.get("/eventLogs/<event_log_id>")
@requires("read")
def get_event_log(event_log_id: str) -> Response:
    query({})
    try:
        number = int(event_log_id)
    except ValueError:
        raise bad_request(f"{event_log_id!r} is not of type 'integer' - 'event_log_id'") from None
    with read_session() as session:
        row = session.get(Log, number) if -(2**31) <= number < 2**31 else None
        if row is None:
            raise not_found("Event Log not found", f"Event Log with id: '{event_log_id}' not found")
        return json_response(event_log_record(row))
