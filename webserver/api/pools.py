"""``/pools``: list, get, create, update and delete pools (Airflow's endpoints).

``default_pool`` always exists: it cannot be deleted or renamed (400, as in Airflow).
Slot counts are the pool slots held by task instances in each state.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from sqlalchemy import func, select

from scheduler.api_shapes import pool_record
from scheduler.db.models import DEFAULT_POOL, Pool, TaskInstance
from webserver.api import api
from webserver.api.shapes import (
    PAGINATION,
    ApiProblem,
    Field,
    audit,
    bad_request,
    check_body,
    check_name,
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

POOL_ORDER_COLUMNS = {"id": Pool.id, "name": Pool.pool, "pool": Pool.pool, "slots": Pool.slots}
_FIELDS = {
    "name": Field("string"),
    "slots": Field("integer", minimum=-1),
    "description": Field("string", nullable=True),
    "include_deferred": Field("boolean"),
}
_READ_ONLY = ("occupied_slots", "running_slots", "queued_slots", "scheduled_slots", "deferred_slots", "open_slots")
_COUNTED_STATES = ("running", "queued", "scheduled", "deferred")
MAX_NAME_LENGTH = 256


def pool_not_found(name: str) -> ApiProblem:
    return not_found("Pool not found", f"Pool with name: '{name}' not found")


def _slot_counts(session: Any, names: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {name: {} for name in names}
    if not names:
        return counts
    rows = session.execute(
        select(TaskInstance.pool, TaskInstance.state, func.sum(TaskInstance.pool_slots))
        .where(TaskInstance.pool.in_(names), TaskInstance.state.in_([s for s in _COUNTED_STATES if s != "deferred"]))
        .group_by(TaskInstance.pool, TaskInstance.state)
    )
    for pool, state, slots in rows:
        counts[pool][str(state)] = int(slots or 0)
    return counts


def _record(session: Any, pool: Pool) -> dict[str, Any]:
    return pool_record(pool, _slot_counts(session, [pool.pool])[pool.pool])


def _get_or_404(session: Any, name: str) -> Pool:
    pool = session.scalar(select(Pool).where(Pool.pool == name))
    if pool is None:
        raise pool_not_found(name)
    return pool  # type: ignore[no-any-return]


@api.get("/pools")
@requires("read")
def list_pools() -> Response:
    params = query(PAGINATION)
    limit, offset = page(params)
    statement = select(Pool).order_by(*order_by(params, POOL_ORDER_COLUMNS, "id"))
    with read_session() as session:
        total = session.scalar(select(func.count()).select_from(Pool)) or 0
        pools = list(session.scalars(statement.limit(limit).offset(offset)))
        counts = _slot_counts(session, [p.pool for p in pools])
        records = [pool_record(p, counts[p.pool]) for p in pools]
    return json_response({"pools": records, "total_entries": total})


@api.get("/pools/<pool_name>")
@requires("read")
def get_pool(pool_name: str) -> Response:
    query({})
    with read_session() as session:
        return json_response(_record(session, _get_or_404(session, pool_name)))


@api.post("/pools")
@requires("edit")
def post_pool() -> Response:
    query({})
    body = check_body(json_body(), _FIELDS, required=("name", "slots"), ignored=_READ_ONLY)
    check_name("name", body["name"], MAX_NAME_LENGTH)
    with write_session() as session:
        if session.scalar(select(Pool.id).where(Pool.pool == body["name"])) is not None:
            raise conflict(f"Pool: {body['name']} already exists")
        pool = Pool(pool=body["name"], slots=body["slots"], description=body.get("description"),
                    include_deferred=body.get("include_deferred", False))
        session.add(pool)
        audit(session, "pool.create", extra={"name": body["name"], "slots": body["slots"]})
        session.flush()
        record = _record(session, pool)
    return json_response(record)


@api.patch("/pools/<pool_name>")
@requires("edit")
def patch_pool(pool_name: str) -> Response:
    params = query({"update_mask": "list"})
    body = check_body(json_body(), _FIELDS, ignored=_READ_ONLY)
    mask = [m.strip() for m in params.get("update_mask") or []]
    unknown = [m for m in mask if m not in _FIELDS]
    if unknown:
        raise bad_request(f"Invalid field(s) in update_mask: {unknown!r}")
    if not mask:
        missing = [f for f in ("name", "slots") if f not in body]
        if missing:
            raise bad_request(f"'{missing[0]}' is a required property")
        mask = [f for f in _FIELDS if f in body]
    absent = [m for m in mask if m not in body]
    if absent:
        raise bad_request(f"'{absent[0]}' is named in update_mask but missing from the body")
    if "name" in mask:
        check_name("name", body["name"], MAX_NAME_LENGTH)
    with write_session() as session:
        pool = _get_or_404(session, pool_name)
        if pool.pool == DEFAULT_POOL and "name" in mask and body["name"] != DEFAULT_POOL:
            raise bad_request("Default Pool's name can't be modified")
        if "name" in mask and body["name"] != pool.pool:
            if session.scalar(select(Pool.id).where(Pool.pool == body["name"])) is not None:
                raise conflict(f"Pool: {body['name']} already exists")
            pool.pool = body["name"]
        if "slots" in mask:
            pool.slots = body["slots"]
        if "description" in mask:
            pool.description = body["description"]
        if "include_deferred" in mask:
            pool.include_deferred = body["include_deferred"]
        audit(session, "pool.update", extra={"name": pool_name, "fields": mask})
        session.flush()
        record = _record(session, pool)
    return json_response(record)


@api.delete("/pools/<pool_name>")
@requires("edit")
def delete_pool(pool_name: str) -> Response:
    query({})
    if pool_name == DEFAULT_POOL:
        raise bad_request("Default Pool can't be deleted")
    with write_session() as session:
        pool = _get_or_404(session, pool_name)
        session.delete(pool)
        audit(session, "pool.delete", extra={"name": pool_name})
    return no_content()
