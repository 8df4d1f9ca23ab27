"""``/dags``: list, get, pause/unpause, details and tasks (Airflow's DAG endpoints)."""

from __future__ import annotations

from typing import Any

from flask import Response
from sqlalchemy import func, select

from scheduler.api_shapes import dag_api_record, dag_detail_record, task_record
from scheduler.db.models import Dag, SerializedDag
from webserver.api import api
from webserver.api.shapes import (
    PAGINATION,
    Field,
    audit,
    bad_request,
    check_body,
    json_body,
    json_response,
    not_found,
    order_by,
    page,
    query,
)
from webserver.auth import requires
from webserver.db import read_session, write_session

DAG_ORDER_COLUMNS = {
    "dag_id": Dag.dag_id,
    "is_paused": Dag.is_paused,
    "is_active": Dag.is_active,
    "fileloc": Dag.fileloc,
    "last_parsed_time": Dag.last_parsed_time,
    "next_dagrun": Dag.next_dagrun,
    "owners": Dag.owners,
}

#: Fields of the DAG object a PATCH body may carry; only is_paused can change (as in Airflow).
_DAG_READ_ONLY = (
    "dag_id", "dag_display_name", "root_dag_id", "is_active", "is_subdag", "last_parsed_time", "last_pickled",
    "last_expired", "scheduler_lock", "pickle_id", "default_view", "fileloc", "file_token", "owners",
    "description", "schedule_interval", "timetable_description", "tags", "max_active_tasks", "max_active_runs",
    "has_task_concurrency_limits", "has_import_errors", "next_dagrun", "next_dagrun_data_interval_start",
    "next_dagrun_data_interval_end", "next_dagrun_create_after", "max_consecutive_failed_dag_runs", "timezone",
)


def dag_not_found(dag_id: str) -> Exception:
    return not_found("DAG not found", f"DAG with dag_id: '{dag_id}' not found")


def get_dag_or_404(session: Any, dag_id: str) -> Dag:
    dag = session.get(Dag, dag_id)
    if dag is None:
        raise dag_not_found(dag_id)
    return dag


def serialized_or_404(session: Any, dag_id: str, *, active: bool = False) -> dict[str, Any]:
    """The DAG's serialized data; 404 when the DAG is unknown, never parsed (or inactive with ``active``)."""
    dag = get_dag_or_404(session, dag_id)
    data = session.scalar(select(SerializedDag.data).where(SerializedDag.dag_id == dag_id))
    if data is None or (active and not dag.is_active):
        raise dag_not_found(dag_id)
    return data  # type: ignore[no-any-return]


@api.get("/dags")
@requires("read")
def list_dags() -> Response:
    params = query({**PAGINATION, "tags": "list", "only_active": "bool", "paused": "bool", "dag_id_pattern": "str"})
    limit, offset = page(params)
    statement = select(*Dag.__table__.c)  # plain rows: the record reads their columns, no ORM objects needed
    if params.get("only_active", True):
        statement = statement.where(Dag.is_active.is_(True))
    if "paused" in params:
        statement = statement.where(Dag.is_paused.is_(params["paused"]))
    if params.get("dag_id_pattern"):
        statement = statement.where(
            func.lower(Dag.dag_id).contains(params["dag_id_pattern"].lower(), autoescape=True)
        )
    statement = statement.order_by(*order_by(params, DAG_ORDER_COLUMNS, "dag_id"))
    with read_session() as session:
        if params.get("tags"):
            wanted = set(params["tags"])
            dags = [d for d in session.execute(statement).all() if wanted & set(d.tags or [])]
            total = len(dags)
            dags = dags[offset : offset + limit]
        else:
            dags = list(session.execute(statement.limit(limit).offset(offset)).all())
            if offset == 0 and len(dags) < limit:
                total = len(dags)  # the whole list is on this page: no need to count it
            else:
                total = session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
        records = [dag_api_record(d) for d in dags]
    return json_response({"dags": records, "total_entries": total})


@api.get("/dags/<dag_id>")
@requires("read")
def get_dag(dag_id: str) -> Response:
    query({"fields": "list"})
    with read_session() as session:
        return json_response(dag_api_record(get_dag_or_404(session, dag_id)))


@api.patch("/dags/<dag_id>")
@requires("edit")
def patch_dag(dag_id: str) -> Response:
    params = query({"update_mask": "list"})
    mask = params.get("update_mask")
    if mask is not None and [m.strip() for m in mask] != ["is_paused"]:
        raise bad_request("Only `is_paused` field can be updated through the REST API")
    body = check_body(json_body(), {"is_paused": Field("boolean")}, required=("is_paused",),
                      ignored=_DAG_READ_ONLY)
    with write_session() as session:
        dag = get_dag_or_404(session, dag_id)
        dag.is_paused = body["is_paused"]
        audit(session, "dag.pause" if body["is_paused"] else "dag.unpause", dag_id=dag_id)
        session.flush()
        record = dag_api_record(dag)
    return json_response(record)


@api.patch("/dags")
@requires("edit")
def patch_dags() -> Response:
    """Pause or unpause every DAG matching ``dag_id_pattern`` (``~``: all), ``tags`` and ``only_active``, one page
    of them (ordered by dag_id, ``limit``/``offset``); answers with those DAGs and ``total_entries`` = their count,
    as Airflow does. The pattern is a case-insensitive substring, like the list's filter."""
    params = query({"limit": "int", "offset": "int", "tags": "list", "update_mask": "list", "only_active": "bool",
                    "dag_id_pattern": "str"})
    if "dag_id_pattern" not in params:
        raise bad_request("Missing query parameter 'dag_id_pattern' (use ~ for every DAG)")
    limit, offset = page(params)
    mask = params.get("update_mask")
    if mask is not None and [m.strip() for m in mask] != ["is_paused"]:
        raise bad_request("Only `is_paused` field can be updated through the REST API")
    body = check_body(json_body(), {"is_paused": Field("boolean")}, required=("is_paused",),
                      ignored=_DAG_READ_ONLY)
    statement = select(Dag).order_by(Dag.dag_id)
    if params.get("only_active", True):
        statement = statement.where(Dag.is_active.is_(True))
    pattern = params["dag_id_pattern"]
    if pattern and pattern != "~":
        statement = statement.where(func.lower(Dag.dag_id).contains(pattern.lower(), autoescape=True))
    with write_session() as session:
        if params.get("tags"):
            wanted = set(params["tags"])
            dags = [d for d in session.scalars(statement) if wanted & set(d.tags or [])][offset : offset + limit]
        else:
            dags = list(session.scalars(statement.limit(limit).offset(offset)))
        for dag in dags:
            if dag.is_paused != body["is_paused"]:
                dag.is_paused = body["is_paused"]
                audit(session, "dag.pause" if body["is_paused"] else "dag.unpause", dag_id=dag.dag_id)
        session.flush()
        records = [dag_api_record(d) for d in dags]
    return json_response({"dags": records, "total_entries": len(records)})


@api.get("/dags/<dag_id>/details")
@requires("read")
def get_dag_details(dag_id: str) -> Response:
    query({"fields": "list"})
    with read_session() as session:
        dag = get_dag_or_404(session, dag_id)
        data = session.scalar(select(SerializedDag.data).where(SerializedDag.dag_id == dag_id))
        return json_response(dag_detail_record(dag, data))


TASK_ORDER_KEYS = ("task_id", "task_display_name", "owner", "start_date", "end_date", "trigger_rule",
                   "retries", "queue", "pool", "pool_slots", "priority_weight", "weight_rule")


@api.get("/dags/<dag_id>/tasks")
@requires("read")
def list_tasks(dag_id: str) -> Response:
    params = query({"order_by": "str"})
    raw = params.get("order_by", "task_id")
    key = raw.lstrip("-")
    if key not in TASK_ORDER_KEYS:
        raise bad_request(f"'{key}' is not an attribute of Task; expected one of {', '.join(TASK_ORDER_KEYS)}")
    with read_session() as session:
        data = serialized_or_404(session, dag_id)
    tasks = [task_record(t) for t in data.get("tasks") or []]
    tasks.sort(key=lambda t: (t.get(key) is None, str(t.get(key) or "")), reverse=raw.startswith("-"))
    return json_response({"tasks": tasks, "total_entries": len(tasks)})


@api.get("/dags/<dag_id>/tasks/<task_id>")
@requires("read")
def get_task(dag_id: str, task_id: str) -> Response:
    query({})
    with read_session() as session:
        data = serialized_or_404(session, dag_id)
    for task in data.get("tasks") or []:
        if task["task_id"] == task_id:
            return json_response(task_record(task))
    raise not_found("Task not found", f"Task with id {task_id!r} not found in DAG {dag_id!r}")
