"""``/dags/{dag_id}/dagRuns``: list, get, trigger, mark, delete and clear runs (Airflow's DAGRun endpoints)."""

from __future__ import annotations

from typing import Any

from flask import Response
from sqlalchemy import delete, func, select

from scheduler.api_shapes import dag_run_api_record, task_instance_reference
from scheduler.db.models import DagRun
from webserver.api import api
from webserver.api.dags import dag_not_found, get_dag_or_404, serialized_or_404
from webserver.api.shapes import (
    DEFAULT_PAGE_LIMIT,
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

RUN_STATES = ("queued", "running", "success", "failed")

RUN_ORDER_COLUMNS = {
    "id": DagRun.id,
    "state": DagRun.state,
    "dag_id": DagRun.dag_id,
    "execution_date": DagRun.logical_date,
    "logical_date": DagRun.logical_date,
    "dag_run_id": DagRun.run_id,
    "run_id": DagRun.run_id,
    "start_date": DagRun.start_date,
    "end_date": DagRun.end_date,
    "updated_at": DagRun.updated_at,
    "external_trigger": DagRun.external_trigger,
}

#: Query parameters filtering runs by date: name -> (column, is lower bound).
_RUN_DATE_FILTERS = {
    "execution_date_gte": (DagRun.logical_date, True),
    "execution_date_lte": (DagRun.logical_date, False),
    "logical_date_gte": (DagRun.logical_date, True),
    "logical_date_lte": (DagRun.logical_date, False),
    "start_date_gte": (DagRun.start_date, True),
    "start_date_lte": (DagRun.start_date, False),
    "end_date_gte": (DagRun.end_date, True),
    "end_date_lte": (DagRun.end_date, False),
    "updated_at_gte": (DagRun.updated_at, True),
    "updated_at_lte": (DagRun.updated_at, False),
}


def run_not_found(dag_id: str, run_id: str) -> ApiProblem:
    return not_found("DAGRun not found", f"DAGRun with DAG ID: '{dag_id}' and DagRun ID: '{run_id}' not found")


def get_run_or_404(session: Any, dag_id: str, run_id: str) -> DagRun:
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        get_dag_or_404(session, dag_id)
        raise run_not_found(dag_id, run_id)
    return run  # type: ignore[no-any-return]


@api.get("/dags/<dag_id>/dagRuns")
@requires("read")
def list_dag_runs(dag_id: str) -> Response:
    params = query({**PAGINATION, "state": "list", **{name: "date-time" for name in _RUN_DATE_FILTERS}})
    limit, offset = page(params)
    statement = select(*DagRun.__table__.c)  # plain rows: the record reads their columns, no ORM objects needed
    if dag_id != "~":
        statement = statement.where(DagRun.dag_id == dag_id)
    states = params.get("state")
    if states:
        bad = [s for s in states if s not in RUN_STATES]
        if bad:
            raise bad_request(f"{bad[0]!r} is not one of {list(RUN_STATES)!r} - 'state'")
        statement = statement.where(DagRun.state.in_(states))
    for name, (column, lower) in _RUN_DATE_FILTERS.items():
        if name in params:
            statement = statement.where(column >= params[name] if lower else column <= params[name])
    with read_session() as session:
        if dag_id != "~":
            get_dag_or_404(session, dag_id)
        ordered = statement.order_by(*order_by(params, RUN_ORDER_COLUMNS, "id"))
        rows = session.execute(ordered.limit(limit).offset(offset)).all()
        if offset == 0 and len(rows) < limit:
            total = len(rows)  # the whole list is on this page: no need to count it
        else:
            total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        runs = [dag_run_api_record(r) for r in rows]
    return json_response({"dag_runs": runs, "total_entries": total})


#: The most DAG ids one batch request may name (each is a bound parameter of one query).
MAX_BATCH_DAG_IDS = 1000
_BATCH_FIELDS = {
    "order_by": Field("string"),
    "page_offset": Field("integer", minimum=0),
    "page_limit": Field("integer", minimum=1),
    "dag_ids": Field("array", items="string"),
    "states": Field("array", items="string"),
    **{name: Field("string", date_time=True) for name in (
        "execution_date_gte", "execution_date_lte", "start_date_gte", "start_date_lte", "end_date_gte",
        "end_date_lte")},
}


@api.post("/dags/~/dagRuns/list")
@requires("read")
def list_dag_runs_batch() -> Response:
    """Airflow's batch list: the filters of ``GET /dags/~/dagRuns`` in a JSON body (``dag_ids`` and ``states``
    are OR-ed lists; unknown DAG ids simply match nothing); ``page_limit`` is lowered to the API's maximum."""
    query({})
    body = check_body(json_body(), _BATCH_FIELDS)
    states = body.get("states") or []
    bad = [s for s in states if s not in RUN_STATES]
    if bad:
        raise bad_request(f"{bad[0]!r} is not one of {list(RUN_STATES)!r} - 'states'")
    limit, offset = page({"limit": body.get("page_limit", DEFAULT_PAGE_LIMIT), "offset": body.get("page_offset", 0)})
    dag_ids = list(dict.fromkeys(body.get("dag_ids") or []))  # an empty list filters nothing, as in Airflow
    if len(dag_ids) > MAX_BATCH_DAG_IDS:
        raise bad_request(f"at most {MAX_BATCH_DAG_IDS} different dag_ids per request, got {len(dag_ids)} - 'dag_ids'")
    statement = select(DagRun)
    if dag_ids:
        statement = statement.where(DagRun.dag_id.in_(dag_ids))
    if states:
        statement = statement.where(DagRun.state.in_(states))
    for name, (column, lower) in _RUN_DATE_FILTERS.items():
        if name in body:
            statement = statement.where(column >= body[name] if lower else column <= body[name])
    ordering = order_by({"order_by": body["order_by"]} if "order_by" in body else {}, RUN_ORDER_COLUMNS, "id")
    with read_session() as session:
        total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        runs = [dag_run_api_record(r) for r in session.scalars(statement.order_by(*ordering).limit(limit).offset(offset))]
    return json_response({"dag_runs": runs, "total_entries": total})


@api.get("/dags/<dag_id>/dagRuns/<dag_run_id>")
@requires("read")
def get_dag_run(dag_id: str, dag_run_id: str) -> Response:
    query({"fields": "list"})
    with read_session() as session:
        return json_response(dag_run_api_record(get_run_or_404(session, dag_id, dag_run_id)))


_TRIGGER_FIELDS = {
    "dag_run_id": Field("string", nullable=True),
    "logical_date": Field("string", nullable=True, date_time=True),
    "execution_date": Field("string", nullable=True, date_time=True),
    "data_interval_start": Field("string", nullable=True, date_time=True),
    "data_interval_end": Field("string", nullable=True, date_time=True),
    "conf": Field("object", nullable=True),
    "note": Field("string", nullable=True),
}
#: Read-only DAGRun fields a client may echo back; ignored.
_RUN_READ_ONLY = ("dag_id", "state", "run_type", "start_date", "end_date", "external_trigger",
                  "last_scheduling_decision")


@api.post("/dags/<dag_id>/dagRuns")
@requires("edit")
def trigger_dag_run(dag_id: str) -> Response:
    """Trigger a run: conf checked against the DAG's params, 409 for a run_id that exists."""
    from scheduler.clock import utcnow
    from scheduler.db import store
    from scheduler.exceptions import ParamValidationError
    from scheduler.serialization import SerializedDAG
    from scheduler.states import DagRunState, DagRunType
    from scheduler.timetables.base import DataInterval

    query({})
    body = check_body(json_body(), _TRIGGER_FIELDS, ignored=_RUN_READ_ONLY)
    if body.get("note"):
        raise bad_request("DAG run notes are not stored by this server; leave out 'note'")
    logical_date = body.get("logical_date") or body.get("execution_date")
    if body.get("logical_date") and body.get("execution_date") and body["logical_date"] != body["execution_date"]:
        raise bad_request("logical_date conflicts with execution_date")
    start, end = body.get("data_interval_start"), body.get("data_interval_end")
    if (start is None) != (end is None):
        raise bad_request("data_interval_start and data_interval_end must be given together")
    if start is not None and end is not None and start > end:
        raise bad_request("data_interval_start is after data_interval_end")
    now = utcnow()
    logical_date = logical_date or now
    run_id = body.get("dag_run_id")
    if run_id is None:
        run_id = f"manual__{logical_date.isoformat()}"
    if not run_id.strip():
        raise bad_request("'dag_run_id' must not be empty")
    from scheduler.identifiers import run_id_problem

    if (reason := run_id_problem(run_id)) is not None:
        raise bad_request(f"{reason} - 'dag_run_id'")
    conf = body.get("conf") or {}
    with write_session() as session:
        data = serialized_or_404(session, dag_id, active=True)
        sdag = SerializedDAG.from_dict(data)
        try:
            sdag.params.resolve(conf, dag_id=sdag.dag_id)
        except ParamValidationError as exc:
            raise bad_request(str(exc)) from None
        interval = (DataInterval(start, end) if start is not None and end is not None
                    else sdag.timetable.infer_manual_data_interval(run_after=logical_date))
        try:
            run = store.create_dag_run(
                session, dag_id=sdag.dag_id, run_id=run_id, run_type=DagRunType.MANUAL, logical_date=logical_date,
                data_interval=interval, conf=conf, state=DagRunState.QUEUED, run_after=now, now=now,
                external_trigger=True,
            )
        except store.DagRunAlreadyExists as exc:
            raise conflict(str(exc)) from None
        audit(session, "dag_run.trigger", dag_id=dag_id, run_id=run_id, extra={"conf": conf})
        record = dag_run_api_record(run)
    return json_response(record)


@api.patch("/dags/<dag_id>/dagRuns/<dag_run_id>")
@requires("edit")
def set_dag_run_state(dag_id: str, dag_run_id: str) -> Response:
    """Mark a run success, failed or queued (queued clears all its task instances)."""
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops
    from scheduler.serialization import SerializedDAG

    query({})
    body = check_body(json_body(), {"state": Field("string", enum=("success", "failed", "queued"))},
                      required=("state",))
    with write_session() as session:
        get_run_or_404(session, dag_id, dag_run_id)
        data = session.scalar(_serialized_data(dag_id))
        structure = ti_ops.structure_from_serialized(SerializedDAG.from_dict(data)) if data is not None else None
        ti_ops.mark_dag_run(session, dag_id, dag_run_id, body["state"], now=utcnow(), dag_structure=structure)
        audit(session, "dag_run.mark", dag_id=dag_id, run_id=dag_run_id, extra={"state": body["state"]})
        run = get_run_or_404(session, dag_id, dag_run_id)
        session.refresh(run)
        record = dag_run_api_record(run)
    return json_response(record)


def _serialized_data(dag_id: str) -> Any:
    from scheduler.db.models import SerializedDag

    return select(SerializedDag.data).where(SerializedDag.dag_id == dag_id)


@api.delete("/dags/<dag_id>/dagRuns/<dag_run_id>")
@requires("edit")
def delete_dag_run(dag_id: str, dag_run_id: str) -> Response:
    """Delete the run; its task instances, XComs and history go with it (ON DELETE CASCADE)."""
    query({})
    with write_session() as session:
        run = get_run_or_404(session, dag_id, dag_run_id)
        session.execute(delete(DagRun).where(DagRun.id == run.id))
        audit(session, "dag_run.delete", dag_id=dag_id, run_id=dag_run_id)
    return no_content()


@api.post("/dags/<dag_id>/dagRuns/<dag_run_id>/clear")
@requires("edit")
def clear_dag_run(dag_id: str, dag_run_id: str) -> Response:
    """Clear every task instance of the run; a dry run (the default, as in Airflow) lists them unchanged."""
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops
    from scheduler.serialization import SerializedDAG

    query({})
    body = check_body(json_body(), {"dry_run": Field("boolean")})
    dry_run = body.get("dry_run", True)
    with write_session() as session:
        run = get_run_or_404(session, dag_id, dag_run_id)
        data = session.scalar(_serialized_data(dag_id))
        if data is None:
            raise dag_not_found(dag_id)
        sdag = SerializedDAG.from_dict(data)
        tis = ti_ops.clear_task_instances(
            session, dag_id, dag_structure=ti_ops.structure_from_serialized(sdag), now=utcnow(),
            run_ids=[dag_run_id], dry_run=dry_run,
        )
        if dry_run:
            return json_response({"task_instances": [task_instance_reference(ti, run.logical_date) for ti in tis]})
        audit(session, "dag_run.clear", dag_id=dag_id, run_id=dag_run_id, extra={"cleared": len(tis)})
        session.refresh(run)
        record = dag_run_api_record(run)
    return json_response(record)
