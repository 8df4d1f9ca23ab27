"""The audit log page (``/events``): who did what, newest first, with filters; any role may read it."""

from __future__ import annotations

from typing import Any

from flask import render_template, request
from sqlalchemy import func, select

from scheduler.db.models import Log
from webserver.auth import requires
from webserver.db import read_session
from webserver.views import ui

PAGE_SIZE = 50
#: The filters the page offers (query parameter -> column); values are matched exactly, at most this long.
FILTERS = {"event": Log.event, "owner": Log.owner, "dag_id": Log.dag_id, "run_id": Log.run_id}
MAX_FILTER_LENGTH = 250


@ui.get("/events")
@requires("read")
def audit_log() -> Any:
    filters = {name: request.args.get(name, "").strip()[:MAX_FILTER_LENGTH] for name in FILTERS}
    try:
        page = max(1, min(int(request.args.get("page", "1")), 1_000_000))
    except ValueError:
        page = 1
    statement = select(Log)
    counting = select(func.count()).select_from(Log)
    for name, column in FILTERS.items():
        if filters[name]:
            statement = statement.where(column == filters[name])
            counting = counting.where(column == filters[name])
    with read_session() as session:
        total = session.scalar(counting) or 0
        rows = list(session.scalars(statement.order_by(Log.id.desc()).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)))
        events = list(session.scalars(select(Log.event).distinct().order_by(Log.event).limit(200)))
    pages = max(1, -(-total // PAGE_SIZE))
    active = {k: v for k, v in filters.items() if v}
    return render_template("events.html", rows=rows, total=total, page=page, pages=pages, filters=filters,
                           active=active, events=events)


@ui.get("/assets")
@requires("read")
def assets_page() -> Any:
    """Every asset (dataset) with the DAGs it schedules, and its latest update events."""
    from scheduler.db.models import Asset, AssetEvent, DagScheduleAssetReference

    with read_session() as session:
        assets = list(session.scalars(select(Asset).order_by(Asset.uri).limit(PAGE_SIZE * 4)))
        consumers: dict[int, list[str]] = {}
        for asset_id, dag_id in session.execute(
                select(DagScheduleAssetReference.asset_id, DagScheduleAssetReference.dag_id)
                .order_by(DagScheduleAssetReference.dag_id)):
            consumers.setdefault(asset_id, []).append(dag_id)
        events = list(session.execute(
            select(AssetEvent, Asset.uri).join(Asset, Asset.id == AssetEvent.asset_id)
            .order_by(AssetEvent.timestamp.desc(), AssetEvent.id.desc()).limit(PAGE_SIZE)))
    return render_template("assets.html", assets=assets, consumers=consumers, events=events)
