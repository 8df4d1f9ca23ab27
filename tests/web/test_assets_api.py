"""Assets (Airflow's datasets) and their update events: ``/api/v1/datasets[/events]`` and the ``/assets`` page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from scheduler.db.engine import session_scope
from scheduler.db.models import Asset, AssetEvent, DagScheduleAssetReference
from tests.web.test_api_resources import VIEWER, auth, ok, problem_of
from tests.web.test_ui_dags import add_dags, build_dag, log_in, text

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EVIL_URI = "s3://bucket/<script>alert(1)</script>"


@pytest.fixture
def assets(app: Flask, make_user: Any) -> dict[str, int]:
    """Two assets, the DAG scheduled on the first, and three update events."""
    make_user("viewer", "Viewer", VIEWER[1])
    add_dags(app, build_dag("consumer"), build_dag("producer"))
    with session_scope(app.extensions["updraft_engine"]) as session:
        raw = Asset(uri="s3://bucket/raw.csv", extra={"owner": "etl"}, created_at=T0, updated_at=T0)
        evil = Asset(uri=EVIL_URI, created_at=T0, updated_at=T0)
        session.add_all([raw, evil])
        session.flush()
        session.add(DagScheduleAssetReference(asset_id=raw.id, dag_id="consumer", created_at=T0))
        for minutes, asset, task in ((1, raw, "load"), (2, evil, "evil"), (3, raw, "load")):
            session.add(AssetEvent(asset_id=asset.id, source_dag_id="producer", source_task_id=task,
                                   source_run_id=f"r{minutes}", timestamp=T0 + timedelta(minutes=minutes)))
        return {"raw": raw.id, "evil": evil.id}


def test_datasets_list_with_the_dags_they_schedule(client: FlaskClient, assets: dict[str, int]) -> None:
    body = ok(client.get("/api/v1/datasets?order_by=uri", headers=auth(VIEWER)))
    assert body["total_entries"] == 2
    raw = next(d for d in body["datasets"] if d["id"] == assets["raw"])
    assert raw["uri"] == "s3://bucket/raw.csv" and raw["extra"] == {"owner": "etl"}
    assert [c["dag_id"] for c in raw["consuming_dags"]] == ["consumer"]
    only = ok(client.get("/api/v1/datasets?uri_pattern=raw", headers=auth(VIEWER)))
    assert [d["uri"] for d in only["datasets"]] == ["s3://bucket/raw.csv"]


def test_dataset_events_newest_last_filtered_and_paged(client: FlaskClient, assets: dict[str, int]) -> None:
    body = ok(client.get("/api/v1/datasets/events", headers=auth(VIEWER)))
    assert body["total_entries"] == 3
    assert [e["source_run_id"] for e in body["dataset_events"]] == ["r1", "r2", "r3"]
    first = body["dataset_events"][0]
    assert first["dataset_uri"] == "s3://bucket/raw.csv" and first["source_task_id"] == "load"
    assert first["timestamp"].startswith("2026-01-01T00:01:00")
    raw = ok(client.get(f"/api/v1/datasets/events?dataset_id={assets['raw']}&order_by=-timestamp",
                        headers=auth(VIEWER)))
    assert [e["source_run_id"] for e in raw["dataset_events"]] == ["r3", "r1"]
    paged = ok(client.get("/api/v1/datasets/events?limit=1&offset=1", headers=auth(VIEWER)))
    assert paged["total_entries"] == 3 and [e["source_run_id"] for e in paged["dataset_events"]] == ["r2"]


def test_dataset_events_refuse_bad_filters_and_anonymous_callers(client: FlaskClient,
                                                                 assets: dict[str, int]) -> None:
    problem = problem_of(client.get("/api/v1/datasets/events?dataset_id=x", headers=auth(VIEWER)), 400)
    assert "dataset_id" in problem["detail"]
    assert "colour" in problem_of(client.get("/api/v1/datasets?colour=red", headers=auth(VIEWER)), 400)["detail"]
    assert client.get("/api/v1/datasets", headers={"Accept": "application/json"}).status_code == 401


def test_assets_page_lists_assets_and_updates_with_ids_escaped(app: Flask, client: FlaskClient,
                                                               assets: dict[str, int], make_user: Any) -> None:
    log_in(client, make_user, "Op")
    html = text(client.get("/assets"))
    assert "s3://bucket/raw.csv" in html and 'href="/dags/consumer"' in html
    assert "<script>alert(1)</script>" not in html
    assert "s3://bucket/&lt;script&gt;alert(1)&lt;/script&gt;" in html
    updates = html[html.index('id="asset-events"'):]
    assert updates.index("r3") < updates.index("r2") < updates.index("r1")  # newest first
