"""``/importErrors``: DAG files that could not be loaded (Airflow's ImportError endpoints)."""

from __future__ import annotations

from flask import Response
from sqlalchemy import func, select

from scheduler.api_shapes import import_error_record
from scheduler.db.models import ParseImportError
from webserver.api import api
from webserver.api.shapes import PAGINATION, json_response, not_found, order_by, page, query
from webserver.auth import requires
from webserver.db import read_session

IMPORT_ERROR_ORDER_COLUMNS = {
    "import_error_id": ParseImportError.id,
    "id": ParseImportError.id,
    "filename": ParseImportError.filename,
    "timestamp": ParseImportError.timestamp,
}


@api.get("/importErrors")
@requires("read")
def list_import_errors() -> Response:
    params = query(PAGINATION)
    limit, offset = page(params)
    statement = select(ParseImportError).order_by(*order_by(params, IMPORT_ERROR_ORDER_COLUMNS, "import_error_id"))
    with read_session() as session:
        total = session.scalar(select(func.count()).select_from(ParseImportError)) or 0
        errors = [import_error_record(e) for e in session.scalars(statement.limit(limit).offset(offset))]
    return json_response({"import_errors": errors, "total_entries": total})


@api.get("/importErrors/<int:import_error_id>")
@requires("read")
def get_import_error(import_error_id: int) -> Response:
    query({})
    with read_session() as session:
        # an id beyond the column's range names no row (and the database could not compare with it)
        error = session.get(ParseImportError, import_error_id) if import_error_id < 2**31 else None
        if error is None:
            raise not_found("Import error not found", f"The ImportError with import_error_id: `{import_error_id}` "
                            "was not found")
        return json_response(import_error_record(error))
