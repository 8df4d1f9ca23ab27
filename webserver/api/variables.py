"""``/variables``: list, get, create (or replace), update and delete Variables (Airflow's endpoints).

As in Airflow 2, ``POST /variables`` sets the value whether or not the key exists.
"""

from __future__ import annotations

from flask import Response
from sqlalchemy import delete, func, select

from scheduler.api_shapes import variable_record
from scheduler.db.models import Variable
from webserver.api import api
from webserver.api.shapes import (
    PAGINATION,
    ApiProblem,
    Field,
    audit,
    bad_request,
    check_body,
    check_name,
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

VARIABLE_ORDER_COLUMNS = {"key": Variable.key, "id": Variable.id}
_FIELDS = {"key": Field("string"), "value": Field("string"), "description": Field("string", nullable=True)}
#: The longest key the ``variable`` table holds.
MAX_KEY_LENGTH = 250


def variable_not_found(key: str) -> ApiProblem:
    return not_found("Variable not found", f"Variable with key: '{key}' not found")


@api.get("/variables")
@requires("read")
def list_variables() -> Response:
    params = query(PAGINATION)
    limit, offset = page(params)
    statement = select(Variable).order_by(*order_by(params, VARIABLE_ORDER_COLUMNS, "id"))
    with read_session() as session:
        total = session.scalar(select(func.count()).select_from(Variable)) or 0
        records = [variable_record(v) for v in session.scalars(statement.limit(limit).offset(offset))]
    return json_response({"variables": records, "total_entries": total})


@api.get("/variables/<variable_key>")
@requires("read")
def get_variable(variable_key: str) -> Response:
    query({})
    with read_session() as session:
        var = session.scalar(select(Variable).where(Variable.key == variable_key))
        if var is None:
            raise variable_not_found(variable_key)
        return json_response(variable_record(var))


@api.post("/variables")
@requires("edit")
def post_variable() -> Response:
    query({})
    body = check_body(json_body(), _FIELDS, required=("key", "value"))
    check_name("key", body["key"], MAX_KEY_LENGTH)
    with write_session() as session:
        var = session.scalar(select(Variable).where(Variable.key == body["key"]))
        if var is None:
            var = Variable(key=body["key"], val=body["value"], description=body.get("description"))
            session.add(var)
        else:
            var.val = body["value"]
            if "description" in body:
                var.description = body["description"]
        audit(session, "variable.set", extra={"key": body["key"]})
        session.flush()
        record = variable_record(var)
    return json_response(record)


@api.patch("/variables/<variable_key>")
@requires("edit")
def patch_variable(variable_key: str) -> Response:
    params = query({"update_mask": "list"})
    body = check_body(json_body(), _FIELDS, required=("key", "value"))
    if body["key"] != variable_key:
        raise bad_request("Invalid post body: key from request body doesn't match uri parameter")
    mask = [m.strip() for m in params.get("update_mask") or ["value", "description"]]
    unknown = [m for m in mask if m not in ("value", "description")]
    if unknown:
        raise bad_request(f"Only value and description can be updated; got update_mask {unknown!r}")
    with write_session() as session:
        var = session.scalar(select(Variable).where(Variable.key == variable_key))
        if var is None:
            raise variable_not_found(variable_key)
        if "value" in mask:
            var.val = body["value"]
        if "description" in mask and "description" in body:
            var.description = body["description"]
        audit(session, "variable.update", extra={"key": variable_key})
        session.flush()
        record = variable_record(var)
    return json_response(record)


@api.delete("/variables/<variable_key>")
@requires("edit")
def delete_variable(variable_key: str) -> Response:
    query({})
    with write_session() as session:
        result = session.execute(delete(Variable).where(Variable.key == variable_key))
        if not getattr(result, "rowcount", 0):
            raise variable_not_found(variable_key)
        audit(session, "variable.delete", extra={"key": variable_key})
    return no_content()
