"""Request shapes of /api/v1: JSON bodies and query parameters checked the way Airflow's spec checks them.

Every refusal is an :class:`ApiProblem`, turned into an RFC 7807 response by the
blueprint's error handler, so a bad request is always a 4xx with a reason, never a 500.
Messages follow Airflow's (jsonschema's) wording: ``'a string' is not of type 'object' - 'conf'``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Response, request

from webserver.api import api
from webserver.problems import problem

#: Airflow's ``[api] maximum_page_limit``: a larger ``limit`` is lowered to it.
MAX_PAGE_LIMIT = 100
#: Airflow's ``[api] fallback_page_limit``: the page size without ``limit``.
DEFAULT_PAGE_LIMIT = 100
#: Integers a query parameter may hold (the databases' BIGINT) and a body field (INTEGER columns).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class ApiProblem(Exception):
    """Stop handling the request and answer with this problem."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


@api.errorhandler(ApiProblem)
def _on_problem(exc: ApiProblem) -> Response:
    return problem(exc.status, exc.title, exc.detail)


def bad_request(detail: str) -> ApiProblem:
    return ApiProblem(400, "Bad Request", detail)


def not_found(title: str, detail: str) -> ApiProblem:
    return ApiProblem(404, title, detail)


def conflict(detail: str) -> ApiProblem:
    return ApiProblem(409, "Conflict", detail)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def no_content() -> Response:
    return Response(status=204)


# --- bodies ---------------------------------------------------------------------------------------

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


@dataclass(frozen=True)
class Field:
    """One body field: its JSON type, whether null is allowed, allowed values, the type of array items."""

    type: str
    nullable: bool = False
    enum: tuple[Any, ...] | None = None
    items: str | None = None
    minimum: int | None = None
    date_time: bool = False


def json_body() -> dict[str, Any]:
    """The request's JSON object; 400 when the body is not JSON or not an object."""
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Request body is not valid JSON") from None
    if body is None:
        raise bad_request("Request body is not valid JSON")
    if not isinstance(body, dict):
        raise bad_request(f"{body!r} is not of type 'object'")
    return body


def check_body(
    body: Mapping[str, Any], fields: Mapping[str, Field], *, required: Sequence[str] = (),
    ignored: Sequence[str] = (),
) -> dict[str, Any]:
    """The known fields of ``body``, type-checked; 400 naming the field for a wrong type, a missing
    required field or an unknown field (``ignored`` fields are dropped silently: read-only ones)."""
    unknown = sorted(k for k in body if k not in fields and k not in ignored)
    if unknown:
        raise bad_request(str({name: ["Unknown field."] for name in unknown}))
    for name in required:
        if name not in body:
            raise bad_request(f"'{name}' is a required property")
    checked: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in body:
            continue
        value = body[name]
        if value is None:
            if not field.nullable:
                raise bad_request(f"None is not of type '{field.type}' - '{name}'")
            checked[name] = None
            continue
        if not _JSON_TYPES[field.type](value):
            raise bad_request(f"{value!r} is not of type '{field.type}' - '{name}'")
        if field.enum is not None and value not in field.enum:
            raise bad_request(f"{value!r} is not one of {list(field.enum)!r} - '{name}'")
        if field.items is not None:
            for item in value:
                if not _JSON_TYPES[field.items](item):
                    raise bad_request(f"{item!r} is not of type '{field.items}' - '{name}'")
        if field.type == "integer" and not INT32_MIN <= value <= INT32_MAX:  # stored in INTEGER columns
            raise bad_request(f"{value!r} is out of range for an integer - '{name}'")
        if field.minimum is not None and value < field.minimum:
            raise bad_request(f"{value!r} is less than the minimum of {field.minimum} - '{name}'")
        if field.date_time:
            value = parse_date_time(value, name)
        checked[name] = value
    return checked


def parse_date_time(value: str, name: str) -> datetime:
    """An ISO 8601 datetime (UTC when it has no offset); 400 naming the field otherwise."""
    from scheduler.clock import parse_datetime, to_utc

    try:
        return to_utc(parse_datetime(value))
    except (ValueError, TypeError, OverflowError):
        raise bad_request(f"{value!r} is not a 'date-time' - '{name}'") from None


# --- query parameters -----------------------------------------------------------------------------

#: Kinds of query parameters: int, bool, str, date-time, list (repeated or comma-separated strings).
QueryKinds = Mapping[str, str]

PAGINATION: dict[str, str] = {"limit": "int", "offset": "int", "order_by": "str"}


def query(kinds: QueryKinds) -> dict[str, Any]:
    """The request's query parameters parsed by kind; 400 for an unknown one or a malformed value."""
    extra = sorted(k for k in request.args if k not in kinds)
    if extra:
        raise bad_request(f"Extra query parameter(s) {', '.join(extra)} not in spec")
    parsed: dict[str, Any] = {}
    for name, kind in kinds.items():
        values = request.args.getlist(name)
        if not values:
            continue
        if kind == "list":
            parsed[name] = [part for value in values for part in value.split(",") if part != ""]
            continue
        raw = values[-1]
        if kind == "int":
            try:
                parsed[name] = int(raw)
            except ValueError:
                raise bad_request(f"{raw!r} is not of type 'integer' - '{name}'") from None
            if not INT64_MIN <= parsed[name] <= INT64_MAX:  # the database could not compare with it
                raise bad_request(f"{raw!r} is out of range for an integer - '{name}'")
        elif kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("true", "1"):
                parsed[name] = True
            elif lowered in ("false", "0"):
                parsed[name] = False
            else:
                raise bad_request(f"{raw!r} is not of type 'boolean' - '{name}'")
        elif kind == "date-time":
            parsed[name] = parse_date_time(raw, name)
        else:
            parsed[name] = raw
    return parsed


def page(params: Mapping[str, Any]) -> tuple[int, int]:
    """``(limit, offset)`` from parsed query parameters: limit 1..MAX_PAGE_LIMIT (lowered to it), offset >= 0."""
    limit = params.get("limit", DEFAULT_PAGE_LIMIT)
    offset = params.get("offset", 0)
    if limit < 1:
        raise bad_request(f"{limit} is less than the minimum of 1 - 'limit'")
    if offset < 0:
        raise bad_request(f"{offset} is less than the minimum of 0 - 'offset'")
    return min(limit, MAX_PAGE_LIMIT), offset


def order_by(params: Mapping[str, Any], columns: Mapping[str, Any], default: str) -> list[Any]:
    """SQL ORDER BY terms for ``order_by`` (``name`` or ``-name``), then the default column as a tie-breaker."""
    raw = params.get("order_by", default)
    descending = raw.startswith("-")
    name = raw[1:] if descending else raw
    if name not in columns:
        raise bad_request(
            f"Ordering with '{name}' is disallowed or the attribute does not exist on the model; "
            f"expected one of {', '.join(sorted(columns))} (with '-' in front for descending)"
        )
    column = columns[name]
    terms = [column.desc() if descending else column.asc()]
    if name != default:
        terms.append(columns[default].asc())
    return terms


# --- audit log ------------------------------------------------------------------------------------


def audit(session: Any, event: str, *, dag_id: str | None = None, run_id: str | None = None,
          task_id: str | None = None, extra: Any = None) -> None:
    """Record a change made through the API in the ``log`` table (Airflow's event log)."""
    from scheduler.audit import record_event
    from webserver.login import current_user

    record_event(session, f"api.{event}", owner=getattr(current_user(), "username", None), dag_id=dag_id,
                 run_id=run_id, task_id=task_id, extra=extra)


def check_name(field: str, value: str, max_length: int) -> None:
    """400 unless ``value`` (the body's ``field``) is a non-blank name of at most ``max_length`` characters."""
    if not value.strip():
        raise bad_request(f"'{field}' must not be empty")
    if len(value) > max_length:
        raise bad_request(f"'{field}' is longer than {max_length} characters")
