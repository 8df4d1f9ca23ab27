"""``/variables``: list, get, create (or replace), update and delete Variables (Airflow's endpoints).

As in Airflow 2, ``POST /variables`` sets the value whether or not the key exists.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from sqlalchemy import func, select

from scheduler import variables as store_variables
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


def variable_record(var: Variable) -> dict[str, Any]:
    """The API's Variable: the value decrypted, and ``***`` when the key looks sensitive."""
    return store_variables.record(var, current_app.config["UPDRAFT_SETTINGS"])


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
        var = store_variables.set_variable(
            session, body["key"], body["value"], body.get("description"),
            settings=current_app.config["UPDRAFT_SETTINGS"], keep_description="description" not in body,
        )
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
            store_variables.set_variable(session, variable_key, body["value"],
                                         settings=current_app.config["UPDRAFT_SETTINGS"], keep_description=True)
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
        if not store_variables.delete_variable(session, variable_key):
            raise variable_not_found(variable_key)
        audit(session, "variable.delete", extra={"key": variable_key})
    return no_content()
