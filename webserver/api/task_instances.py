"""Task instances: list and get in a run, mark one, read a try's log, clear many (Airflow's endpoints)."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, current_app, request
from sqlalchemy import func, select

from scheduler.api_shapes import task_instance_record, task_instance_reference
from scheduler.db.models import DagRun, SerializedDag, TaskInstance
from scheduler.states import TaskInstanceState
from webserver.api import api
from webserver.api.dag_runs import get_run_or_404, run_not_found
from webserver.api.dags import dag_not_found, get_dag_or_404
from webserver.api.shapes import (
    ApiProblem,
    Field,
    audit,
    bad_request,
    check_body,
    json_body,
    json_response,
    not_found,
    page,
    query,
)
from webserver.auth import requires
from webserver.cache import serialized_dag
from webserver.db import read_session, write_session

#: Airflow's task states as the API names them (``none`` is also accepted for "no state yet").
API_TI_STATES = tuple(s.value for s in TaskInstanceState)


def ti_not_found(detail: str) -> ApiProblem:
    return not_found("Task instance not found", detail)


def _tasks_by_id(session: Any, dag_id: str) -> dict[str, dict[str, Any]]:
    data = serialized_dag(session, dag_id) or {}
    return {t["task_id"]: t for t in data.get("tasks") or []}


@api.get("/dags/<dag_id>/dagRuns/<dag_run_id>/taskInstances")
@requires("read")
def list_task_instances(dag_id: str, dag_run_id: str) -> Response:
    params = query({"limit": "int", "offset": "int", "state": "list", "pool": "list", "queue": "list"})
    limit, offset = page(params)
    # Plain rows (the record reads their columns, no ORM objects needed) and the run's logical date.
    statement = select(*TaskInstance.__table__.c, DagRun.logical_date).join(
        DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id)
    )
    if dag_id != "~":
        statement = statement.where(TaskInstance.dag_id == dag_id)
    if dag_run_id != "~":
        statement = statement.where(TaskInstance.run_id == dag_run_id)
    states = params.get("state")
    if states:
        bad = [s for s in states if s not in API_TI_STATES]
        if bad:
            raise bad_request(f"{bad[0]!r} is not one of {list(API_TI_STATES)!r} - 'state'")
        statement = statement.where(TaskInstance.state.in_(states))
    if params.get("pool"):
        statement = statement.where(TaskInstance.pool.in_(params["pool"]))
    if params.get("queue"):
        statement = statement.where(TaskInstance.queue.in_(params["queue"]))
    with read_session() as session:
        if dag_id != "~":
            if dag_run_id != "~":
                get_run_or_404(session, dag_id, dag_run_id)  # (names the DAG when it is the DAG that is missing)
            else:
                get_dag_or_404(session, dag_id)
        ordered = statement.order_by(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id,
                                     TaskInstance.map_index)
        rows = session.execute(ordered.limit(limit).offset(offset)).all()
        if offset == 0 and len(rows) < limit:
            total = len(rows)  # the whole list is on this page: no need to count it
        else:
            total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        tasks: dict[str, dict[str, dict[str, Any]]] = {}
        records = []
        for ti in rows:
            if ti.dag_id not in tasks:
                tasks[ti.dag_id] = _tasks_by_id(session, ti.dag_id)
            records.append(task_instance_record(ti, ti.logical_date, task=tasks[ti.dag_id].get(ti.task_id)))
    return json_response({"task_instances": records, "total_entries": total})


def _get_ti_or_404(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> tuple[Any, Any]:
    run = get_run_or_404(session, dag_id, run_id)
    ti = session.scalar(select(TaskInstance).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id,
        TaskInstance.map_index == map_index,
    ))
    if ti is None:
        where = "" if map_index == -1 else f" and map index {map_index}"
        raise ti_not_found(f"Task instance of task '{task_id}'{where} not found in DAG run '{run_id}' of DAG '{dag_id}'")
    return ti, run


@api.get("/dags/<dag_id>/dagRuns/<dag_run_id>/taskInstances/<task_id>")
@requires("read")
def get_task_instance(dag_id: str, dag_run_id: str, task_id: str) -> Response:
    query({})
    with read_session() as session:
        ti, run = _get_ti_or_404(session, dag_id, dag_run_id, task_id)
        record = task_instance_record(ti, run.logical_date, task=_tasks_by_id(session, dag_id).get(task_id))
    return json_response(record)


@api.patch("/dags/<dag_id>/dagRuns/<dag_run_id>/taskInstances/<task_id>")
@requires("edit")
def patch_task_instance(dag_id: str, dag_run_id: str, task_id: str) -> Response:
    """Mark one task instance success, failed or skipped; a dry run (Airflow's default) changes nothing."""
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops

    query({})
    body = check_body(json_body(), {
        "dry_run": Field("boolean"),
        "new_state": Field("string", enum=("success", "failed", "skipped")),
    }, required=("new_state",))
    with write_session() as session:
        ti, run = _get_ti_or_404(session, dag_id, dag_run_id, task_id)
        if not body.get("dry_run", True):
            ti = ti_ops.mark_task_instance(session, ti.id, body["new_state"], now=utcnow())
            audit(session, "task_instance.mark", dag_id=dag_id, run_id=dag_run_id, task_id=task_id,
                  extra={"state": body["new_state"]})
        record = task_instance_reference(ti, run.logical_date)
    return json_response(record)


@api.get("/dags/<dag_id>/dagRuns/<dag_run_id>/taskInstances/<task_id>/logs/<int:task_try_number>")
@requires("read")
def get_log(dag_id: str, dag_run_id: str, task_id: str, task_try_number: int) -> Response:
    """The log of one try, as JSON ``{"content", "continuation_token"}`` (text/plain when asked for).

    ``content`` is the whole file, or with ``token`` (a previous answer's continuation_token,
    without full_content) what was written since; the token is a byte offset, opaque to clients.
    """
    from scheduler.task_runner import log_path

    params = query({"full_content": "bool", "map_index": "int", "token": "str"})
    map_index = params.get("map_index", -1)
    with read_session() as session:
        _get_ti_or_404(session, dag_id, dag_run_id, task_id, map_index)
    settings = current_app.config["UPDRAFT_SETTINGS"]
    path = log_path(settings.log_folder, dag_id, dag_run_id, task_id, map_index, task_try_number)
    start = 0
    if params.get("token") and not params.get("full_content", False):
        try:
            start = int(params["token"])
        except ValueError:
            raise bad_request(f"{params['token']!r} is not a continuation token - 'token'") from None
        if not 0 <= start < 2**62:  # a file offset (seek refuses larger ones)
            raise bad_request(f"{params['token']!r} is not a continuation token - 'token'")
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            raw = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        raise not_found("Log not found", f"Try {task_try_number} of task '{task_id}' in DAG run '{dag_run_id}' "
                        f"of DAG '{dag_id}' has no log") from None
    except OSError as exc:  # unreadable: permissions, a folder in the file's place, an I/O error
        raise not_found("Log not found", f"The log of try {task_try_number} of task '{task_id}' in DAG run "
                        f"'{dag_run_id}' of DAG '{dag_id}' cannot be read: {exc.strerror or exc}") from None
    content = raw.decode("utf-8", errors="replace")
    # The token is the byte offset read up to: pass it back to get only what was written since.
    token = str(start + len(raw))
    best = request.accept_mimetypes.best_match(["application/json", "text/plain"], default="application/json")
    if best == "text/plain" and request.accept_mimetypes["application/json"] < request.accept_mimetypes["text/plain"]:
        return Response(content, mimetype="text/plain")
    return json_response({"content": content, "continuation_token": token})


_CLEAR_FIELDS = {
    "dry_run": Field("boolean"),
    "task_ids": Field("array", items="string"),
    "dag_run_id": Field("string", nullable=True),
    "start_date": Field("string", date_time=True),
    "end_date": Field("string", date_time=True),
    "only_failed": Field("boolean"),
    "only_running": Field("boolean"),
    "include_upstream": Field("boolean"),
    "include_downstream": Field("boolean"),
    "include_future": Field("boolean"),
    "include_past": Field("boolean"),
    "include_subdags": Field("boolean"),
    "include_parentdag": Field("boolean"),
    "reset_dag_runs": Field("boolean"),
}


@api.post("/dags/<dag_id>/clearTaskInstances")
@requires("edit")
def clear_task_instances(dag_id: str) -> Response:
    """Clear the DAG's matching task instances; Airflow's defaults: dry_run and only_failed are true.

    A cleared instance of a finished run puts the run back in the queue (``reset_dag_runs``
    is accepted; runs are always re-queued, see scheduler.db.ti_ops).
    """
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops
    from scheduler.exceptions import DagRunNotFound
    from scheduler.serialization import SerializedDAG

    query({})
    body = check_body(json_body(), _CLEAR_FIELDS)
    dry_run = body.get("dry_run", True)
    start, end = body.get("start_date"), body.get("end_date")
    if start is not None and end is not None and start > end:
        raise bad_request("start_date is after end_date")
    with write_session() as session:
        get_dag_or_404(session, dag_id)
        data = session.scalar(select(SerializedDag.data).where(SerializedDag.dag_id == dag_id))
        if data is None:
            raise dag_not_found(dag_id)
        sdag = SerializedDAG.from_dict(data)
        task_regex = None
        if body.get("task_ids") is not None:
            unknown = [t for t in body["task_ids"] if t not in sdag.tasks]
            if unknown:
                raise not_found("Task not found", f"Task(s) {unknown!r} not found in DAG '{dag_id}'")
            task_regex = "^(?:" + "|".join(re.escape(t) for t in body["task_ids"]) + ")$" if body["task_ids"] else "(?!)"
        run_ids = None
        run_id = body.get("dag_run_id")
        if run_id is not None:
            run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
            if run is None:
                raise run_not_found(dag_id, run_id)
            past, future = body.get("include_past", False), body.get("include_future", False)
            if (past or future) and run.logical_date is not None:
                start = None if past else run.logical_date
                end = None if future else run.logical_date
            else:
                run_ids = [run_id]
        try:
            tis = ti_ops.clear_task_instances(
                session, dag_id, dag_structure=ti_ops.structure_from_serialized(sdag), now=utcnow(),
                run_ids=run_ids, task_regex=task_regex,
                include_upstream=body.get("include_upstream", False),
                include_downstream=body.get("include_downstream", False),
                only_failed=body.get("only_failed", True), only_running=body.get("only_running", False),
                start_date=start, end_date=end, dry_run=dry_run,
            )
        except DagRunNotFound as exc:
            raise not_found("DAGRun not found", str(exc)) from None
        dates = dict(session.execute(
            select(DagRun.run_id, DagRun.logical_date).where(DagRun.dag_id == dag_id,
                                                             DagRun.run_id.in_({ti.run_id for ti in tis}))
        ).all()) if tis else {}
        references = [task_instance_reference(ti, dates.get(ti.run_id)) for ti in tis]
        if not dry_run:
            audit(session, "task_instances.clear", dag_id=dag_id, run_id=run_id,
                  extra={"cleared": len(tis), "task_ids": body.get("task_ids")})
    return json_response({"task_instances": references})
