"""``/connections``: list, get, create, update and delete Connections (Airflow's endpoints and shapes).

The password is write-only: it is stored encrypted and never returned; extra fields whose
name looks sensitive are returned as ``***``. Connections are for Op and Admin (``edit``),
as in Airflow, where Viewers do not see them.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from sqlalchemy import func, select

from scheduler import connections as store
from scheduler.crypto import DecryptionError
from scheduler.db.models import Connection as ConnectionRow
from scheduler.variables import VariableError
from webserver.api import api
from webserver.api.shapes import (
    PAGINATION,
    ApiProblem,
    Field,
    audit,
    bad_request,
    check_body,
    conflict,
    json_body,
    json_response,
    no_content,
    not_found,
    order_by,
    page,
    query,
)
from webserver.auth import requires
from webserver.db import read_session, write_session
from webserver.problems import problem

ORDER_COLUMNS = {"connection_id": ConnectionRow.conn_id, "conn_type": ConnectionRow.conn_type,
                 "id": ConnectionRow.id, "host": ConnectionRow.host}
_FIELDS = {
    "connection_id": Field("string"),
    "conn_type": Field("string"),
    "description": Field("string", nullable=True),
    "host": Field("string", nullable=True),
    "login": Field("string", nullable=True),
    "schema": Field("string", nullable=True),
    "port": Field("integer", nullable=True),
    "password": Field("string", nullable=True),
    "extra": Field("string", nullable=True),
}
#: API field -> Connection attribute.
_ATTRS = {"conn_type": "conn_type", "description": "description", "host": "host", "login": "login",
          "schema": "schema", "port": "port", "password": "password", "extra": "extra"}


@api.errorhandler(store.ConnectionError_)
@api.errorhandler(VariableError)
def _on_invalid(exc: Exception) -> Response:
    return problem(400, "Bad Request", str(exc))


@api.errorhandler(DecryptionError)
def _on_undecryptable(exc: DecryptionError) -> Response:
    return problem(500, "Internal Server Error", str(exc))


def _settings() -> Any:
    return current_app.config["UPDRAFT_SETTINGS"]


def connection_not_found(conn_id: str) -> ApiProblem:
    return not_found("Connection not found", f"The Connection with connection_id: `{conn_id}` was not found")


def _collection_item(conn: store.Connection) -> dict[str, Any]:
    record = conn.masked_record()
    record.pop("extra")
    return record


@api.get("/connections")
@requires("edit")
def list_connections() -> Response:
    params = query(PAGINATION)
    limit, offset = page(params)
    statement = select(ConnectionRow).order_by(*order_by(params, ORDER_COLUMNS, "id"))
    with read_session() as session:
        total = session.scalar(select(func.count()).select_from(ConnectionRow)) or 0
        rows = session.scalars(statement.limit(limit).offset(offset))
        records = [_collection_item(store.from_row(row, _settings())) for row in rows]
    return json_response({"connections": records, "total_entries": total})


@api.get("/connections/<connection_id>")
@requires("edit")
def get_connection(connection_id: str) -> Response:
    query({})
    with read_session() as session:
        conn = store.find(session, connection_id, _settings())
    if conn is None:
        raise connection_not_found(connection_id)
    return json_response(conn.masked_record())


@api.post("/connections")
@requires("edit")
def post_connection() -> Response:
    query({})
    body = check_body(json_body(), _FIELDS, required=("connection_id", "conn_type"))
    conn = store.Connection(conn_id=body["connection_id"], conn_type=body["conn_type"],
                            **{_ATTRS[k]: v for k, v in body.items() if k in _ATTRS and k != "conn_type"})
    store.validate(conn)
    with write_session() as session:
        if store.get_row(session, conn.conn_id) is not None:
            raise conflict(f"Connection already exist. ID: {conn.conn_id}")
        store.add(session, conn, _settings())
        audit(session, "connection.create", extra={"connection_id": conn.conn_id, "conn_type": conn.conn_type})
    return json_response(conn.masked_record())


@api.patch("/connections/<connection_id>")
@requires("edit")
def patch_connection(connection_id: str) -> Response:
    params = query({"update_mask": "list"})
    body = check_body(json_body(), _FIELDS, required=("connection_id", "conn_type"))
    if body["connection_id"] != connection_id:
        raise bad_request("The connection_id cannot be updated.")
    mask = [m.strip() for m in params.get("update_mask") or [k for k in body if k in _ATTRS]]
    unknown = sorted(m for m in mask if m not in _ATTRS)
    if unknown:
        raise bad_request(f"'{', '.join(unknown)}' is unknown or cannot be updated.")
    changes = {_ATTRS[m]: body.get(m) for m in mask}
    if changes.get("conn_type") is None and "conn_type" in changes:
        raise bad_request("'conn_type' must not be null")
    with write_session() as session:
        try:
            conn = store.update(session, connection_id, changes, _settings())
        except store.ConnectionNotFound:
            raise connection_not_found(connection_id) from None
        audit(session, "connection.update", extra={"connection_id": connection_id, "fields": sorted(changes)})
    return json_response(conn.masked_record())


@api.delete("/connections/<connection_id>")
@requires("edit")
def delete_connection(connection_id: str) -> Response:
    query({})
    with write_session() as session:
        if not store.remove(session, connection_id):
            raise connection_not_found(connection_id)
        audit(session, "connection.delete", extra={"connection_id": connection_id})
    return no_content()
