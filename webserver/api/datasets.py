"""``/datasets`` and ``/datasets/events``: assets and their update events, Airflow's v1 shapes; any role may read.

Airflow 2's stable API calls assets datasets; the tables are ``asset`` and ``asset_event``.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from sqlalchemy import func, select

from scheduler.api_shapes import isoformat
from scheduler.db.models import Asset, AssetEvent, DagScheduleAssetReference
from webserver.api import api
from webserver.api.shapes import PAGINATION, json_response, order_by, page, query
from webserver.auth import requires
from webserver.db import read_session

ASSET_ORDER = {"id": Asset.id, "uri": Asset.uri, "created_at": Asset.created_at, "updated_at": Asset.updated_at}
EVENT_ORDER = {"id": AssetEvent.id, "timestamp": AssetEvent.timestamp, "dataset_id": AssetEvent.asset_id,
               "source_dag_id": AssetEvent.source_dag_id, "source_task_id": AssetEvent.source_task_id,
               "source_run_id": AssetEvent.source_run_id}
EVENT_FILTERS = {"dataset_id": "int", "source_dag_id": "str", "source_task_id": "str", "source_run_id": "str",
                 "source_map_index": "int"}
_EVENT_COLUMNS = {"dataset_id": AssetEvent.asset_id, "source_dag_id": AssetEvent.source_dag_id,
                  "source_task_id": AssetEvent.source_task_id, "source_run_id": AssetEvent.source_run_id,
                  "source_map_index": AssetEvent.source_map_index}


def asset_record(asset: Asset, consumers: list[DagScheduleAssetReference]) -> dict[str, Any]:
    return {
        "id": asset.id, "uri": asset.uri, "extra": asset.extra or {},
        "created_at": isoformat(asset.created_at), "updated_at": isoformat(asset.updated_at),
        "consuming_dags": [{"dag_id": ref.dag_id, "created_at": isoformat(ref.created_at),
                            "updated_at": isoformat(ref.created_at)} for ref in consumers],
        "producing_tasks": [],
    }


def event_record(event: AssetEvent, uri: str) -> dict[str, Any]:
    return {
        "id": event.id, "dataset_id": event.asset_id, "dataset_uri": uri, "extra": event.extra or {},
        "source_dag_id": event.source_dag_id, "source_task_id": event.source_task_id,
        "source_run_id": event.source_run_id, "source_map_index": event.source_map_index,
        "created_dagruns": [], "timestamp": isoformat(event.timestamp),
    }


def events_filtered(statement: Any, params: dict[str, Any]) -> Any:
    """``statement`` narrowed by the event filters in ``params`` (API and UI share them)."""
    for name, column in _EVENT_COLUMNS.items():
        if params.get(name) is not None and params.get(name) != "":
            statement = statement.where(column == params[name])
    return statement


@api.get("/datasets")
@requires("read")
def list_datasets() -> Response:
    params = query({**PAGINATION, "uri_pattern": "str"})
    limit, offset = page(params)
    with read_session() as session:
        statement = select(Asset)
        if params.get("uri_pattern"):
            statement = statement.where(Asset.uri.contains(params["uri_pattern"], autoescape=True))
        total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        assets = list(session.scalars(
            statement.order_by(*order_by(params, ASSET_ORDER, "id")).limit(limit).offset(offset)))
        consumers: dict[int, list[DagScheduleAssetReference]] = {}
        if assets:
            for ref in session.scalars(select(DagScheduleAssetReference).where(
                    DagScheduleAssetReference.asset_id.in_([a.id for a in assets]))
                    .order_by(DagScheduleAssetReference.dag_id)):
                consumers.setdefault(ref.asset_id, []).append(ref)
        records = [asset_record(a, consumers.get(a.id, [])) for a in assets]
    return json_response({"datasets": records, "total_entries": total})


@api.get("/datasets/events")
@requires("read")
def list_dataset_events() -> Response:
    params = query({**PAGINATION, **EVENT_FILTERS})
    limit, offset = page(params)
    with read_session() as session:
        total = session.scalar(events_filtered(select(func.count()).select_from(AssetEvent), params)) or 0
        statement = events_filtered(select(AssetEvent, Asset.uri).join(Asset, Asset.id == AssetEvent.asset_id),
                                    params).order_by(*order_by(params, EVENT_ORDER, "timestamp"))
        records = [event_record(event, uri) for event, uri in session.execute(statement.limit(limit).offset(offset))]
    return json_response({"dataset_events": records, "total_entries": total})
