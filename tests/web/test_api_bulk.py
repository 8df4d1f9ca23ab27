"""Airflow's two bulk endpoints: ``PATCH /api/v1/dags`` (pause/unpause by pattern) and
``POST /api/v1/dags/~/dagRuns/list`` (runs of several DAGs, filters in the body)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from scheduler.config import Settings
from tests.web.test_api_resources import PASSWORD, VIEWER, auth, build_world, ok, problem_of

OP = ("op", PASSWORD)
DAY = datetime(2024, 6, 1, 6, tzinfo=UTC)


@pytest.fixture
def world(web_settings: Settings, make_user: Any, app: Any) -> Settings:
    """etl (tags etl, daily) and manual, plus three more DAGs and runs of etl and manual in several states."""
    from scheduler.db import store
    from scheduler.db.engine import session_scope
    from scheduler.db.models import Dag
    from scheduler.states import DagRunState, DagRunType
    from scheduler.timetables.base import DataInterval

    make_user("admin", "Admin", PASSWORD)
    make_user("viewer", "Viewer", PASSWORD)
    make_user("op", "Op", PASSWORD)
    build_world(web_settings, extra_dags=3)  # etl's run1 (running), manual, extra_000..extra_002
    with session_scope(app.extensions["updraft_engine"]) as session:
        session.execute(update(Dag).where(Dag.dag_id == "extra_002").values(is_active=False))
        for dag_id, run_id, day, state in (
            ("etl", "etl_ok", 2, DagRunState.SUCCESS), ("etl", "etl_bad", 3, DagRunState.FAILED),
            ("manual", "m_ok", 4, DagRunState.SUCCESS), ("manual", "m_queued", 5, DagRunState.QUEUED),
        ):
            when = DAY + timedelta(days=day)
            run = store.create_dag_run(
                session, dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL, logical_date=when,
                data_interval=DataInterval(when, when), conf={}, state=state, run_after=when, now=when,
                external_trigger=True,
            )
            if state != DagRunState.QUEUED:
                run.start_date, run.end_date = when, when + timedelta(minutes=day)
    return web_settings


def paused(client: Any) -> dict[str, bool]:
    body = ok(client.get("/api/v1/dags?only_active=false", headers=auth()))
    return {d["dag_id"]: d["is_paused"] for d in body["dags"]}


# --- PATCH /dags --------------------------------------------------------------------------------------


def test_patch_dags_unpauses_every_active_dag_with_the_pattern_tilde(world: Settings, client: Any) -> None:
    assert set(paused(client).values()) == {True}  # DAGs are paused at creation
    body = ok(client.patch("/api/v1/dags?dag_id_pattern=~&update_mask=is_paused", json={"is_paused": False},
                           headers=auth(OP)))
    assert [d["dag_id"] for d in body["dags"]] == ["etl", "extra_000", "extra_001", "manual"]
    assert body["total_entries"] == 4 and {d["is_paused"] for d in body["dags"]} == {False}
    assert body["dags"][0] == ok(client.get("/api/v1/dags/etl", headers=auth()))  # the DAG object, as GET answers it
    assert paused(client) == {"etl": False, "extra_000": False, "extra_001": False, "extra_002": True,
                              "manual": False}
    # only_active=false reaches the inactive DAG too.
    body = ok(client.patch("/api/v1/dags?dag_id_pattern=extra_002&only_active=false", json={"is_paused": False},
                           headers=auth(OP)))
    assert [d["dag_id"] for d in body["dags"]] == ["extra_002"]
    assert paused(client)["extra_002"] is False


def test_patch_dags_filters_by_pattern_tags_and_page(world: Settings, client: Any, app: Any) -> None:
    from scheduler.db.engine import session_scope
    from scheduler.db.models import Log

    ok(client.patch("/api/v1/dags?dag_id_pattern=~", json={"is_paused": False}, headers=auth()))
    # The pattern is a case-insensitive part of the id; it is matched literally (no wildcards).
    body = ok(client.patch("/api/v1/dags?dag_id_pattern=XTRA", json={"is_paused": True}, headers=auth(OP)))
    assert [d["dag_id"] for d in body["dags"]] == ["extra_000", "extra_001"]
    assert ok(client.patch("/api/v1/dags?dag_id_pattern=_%25", json={"is_paused": True},
                           headers=auth(OP)))["total_entries"] == 0
    # Tags: DAGs carrying any of them.
    body = ok(client.patch("/api/v1/dags?dag_id_pattern=~&tags=daily&tags=nothing", json={"is_paused": True},
                           headers=auth(OP)))
    assert [d["dag_id"] for d in body["dags"]] == ["etl"]
    assert paused(client) == {"etl": True, "extra_000": True, "extra_001": True, "extra_002": True, "manual": False}
    # One page of the matching DAGs, in dag_id order; total_entries counts that page, as in Airflow.
    body = ok(client.patch("/api/v1/dags?dag_id_pattern=~&limit=2&offset=1", json={"is_paused": False},
                           headers=auth(OP)))
    assert [d["dag_id"] for d in body["dags"]] == ["extra_000", "extra_001"] and body["total_entries"] == 2
    assert paused(client)["etl"] is True
    # Each DAG whose state changed has its audit row, with the user.
    with session_scope(app.extensions["updraft_engine"], readonly=True) as session:
        rows = [(r.event, r.owner, r.dag_id) for r in session.scalars(select(Log).where(Log.event.like("api.dag.%")))]
    assert ("api.dag.pause", "op", "etl") in rows and ("api.dag.unpause", "op", "extra_001") in rows
    assert ("api.dag.pause", "op", "manual") not in rows


PATCH_DAGS_BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("/api/v1/dags", {"is_paused": True}, "Missing query parameter 'dag_id_pattern'"),
    ("/api/v1/dags?dag_id_pattern=~&update_mask=tags", {"is_paused": True},
     "Only `is_paused` field can be updated through the REST API"),
    ("/api/v1/dags?dag_id_pattern=~", {}, "'is_paused' is a required property"),
    ("/api/v1/dags?dag_id_pattern=~", {"is_paused": "yes"}, "'yes' is not of type 'boolean' - 'is_paused'"),
    ("/api/v1/dags?dag_id_pattern=~", {"is_paused": True, "colour": "red"}, "{'colour': ['Unknown field.']}"),
    ("/api/v1/dags?dag_id_pattern=~", ["is_paused"], "['is_paused'] is not of type 'object'"),
    ("/api/v1/dags?dag_id_pattern=~&limit=0", {"is_paused": True}, "0 is less than the minimum of 1 - 'limit'"),
    ("/api/v1/dags?dag_id_pattern=~&offset=x", {"is_paused": True}, "'x' is not of type 'integer' - 'offset'"),
    ("/api/v1/dags?dag_id_pattern=~&only_active=maybe", {"is_paused": True},
     "'maybe' is not of type 'boolean' - 'only_active'"),
    ("/api/v1/dags?dag_id_pattern=~&paused=true", {"is_paused": True}, "Extra query parameter(s) paused not in spec"),
]


def test_patch_dags_bad_requests_are_problems_naming_the_field(world: Settings, client: Any) -> None:
    for url, body, detail in PATCH_DAGS_BAD_REQUESTS:
        assert detail in problem_of(client.patch(url, json=body, headers=auth(OP)), 400)["detail"], (url, body)
    assert set(paused(client).values()) == {True}  # nothing changed


def test_patch_dags_body_that_is_not_json(world: Settings, client: Any) -> None:
    response = client.patch("/api/v1/dags?dag_id_pattern=~", data="{not json", headers={
        **auth(OP), "Content-Type": "application/json"})
    assert problem_of(response, 400)["detail"] == "Request body is not valid JSON"


def test_patch_dags_needs_edit(world: Settings, client: Any) -> None:
    problem_of(client.patch("/api/v1/dags?dag_id_pattern=~", json={"is_paused": False}), 401)
    refused = problem_of(client.patch("/api/v1/dags?dag_id_pattern=~", json={"is_paused": False},
                                      headers=auth(VIEWER)), 403)
    assert refused["detail"] == "role Viewer may not edit"
    assert set(paused(client).values()) == {True}


# --- POST /dags/~/dagRuns/list ----------------------------------------------------------------------


def batch(client: Any, body: Any, user: tuple[str, str] = VIEWER) -> Any:
    return client.post("/api/v1/dags/~/dagRuns/list", json=body, headers=auth(user))


def run_ids(body: dict[str, Any]) -> list[str]:
    return [r["dag_run_id"] for r in body["dag_runs"]]


def test_batch_lists_runs_of_several_dags_with_filters(world: Settings, client: Any) -> None:
    everything = ok(batch(client, {}))
    assert everything["total_entries"] == 5 and run_ids(everything) == ["run1", "etl_ok", "etl_bad", "m_ok", "m_queued"]
    assert set(everything["dag_runs"][0]) >= {"dag_id", "dag_run_id", "state", "run_type", "conf", "logical_date"}
    assert ok(batch(client, {"dag_ids": []}))["total_entries"] == 5  # an empty list filters nothing
    assert run_ids(ok(batch(client, {"dag_ids": ["manual", "nope"]}))) == ["m_ok", "m_queued"]
    assert run_ids(ok(batch(client, {"states": ["success", "queued"]}))) == ["etl_ok", "m_ok", "m_queued"]
    assert run_ids(ok(batch(client, {"dag_ids": ["etl"], "states": ["failed"]}))) == ["etl_bad"]
    # Date bounds are inclusive; a date without an offset is UTC.
    third = (DAY + timedelta(days=3)).isoformat()
    assert run_ids(ok(batch(client, {"execution_date_gte": third}))) == ["etl_bad", "m_ok", "m_queued"]
    assert run_ids(ok(batch(client, {"execution_date_lte": "2024-06-04T06:00:00"}))) == ["run1", "etl_ok", "etl_bad"]
    assert run_ids(ok(batch(client, {"start_date_gte": third, "start_date_lte": third}))) == ["etl_bad"]
    assert run_ids(ok(batch(client, {"end_date_gte": (DAY + timedelta(days=4, minutes=4)).isoformat()}))) == ["m_ok"]
    # Order and page: total_entries counts every match, the page holds page_limit of them.
    page = ok(batch(client, {"order_by": "-execution_date", "page_limit": 2, "page_offset": 1}))
    assert page["total_entries"] == 5 and run_ids(page) == ["m_ok", "etl_bad"]
    assert run_ids(ok(batch(client, {"order_by": "dag_run_id", "page_limit": 1000})))[:2] == ["etl_bad", "etl_ok"]


BATCH_BAD_BODIES: list[tuple[Any, str]] = [
    ({"states": ["done"]}, "'done' is not one of ['queued', 'running', 'success', 'failed'] - 'states'"),
    ({"dag_ids": "etl"}, "'etl' is not of type 'array' - 'dag_ids'"),
    ({"dag_ids": ["etl", 7]}, "7 is not of type 'string' - 'dag_ids'"),
    ({"dag_ids": [f"d{i}" for i in range(1001)]}, "at most 1000 different dag_ids per request, got 1001"),
    ({"page_limit": 0}, "0 is less than the minimum of 1 - 'page_limit'"),
    ({"page_offset": -1}, "-1 is less than the minimum of 0 - 'page_offset'"),
    ({"page_limit": "10"}, "'10' is not of type 'integer' - 'page_limit'"),
    ({"order_by": "colour"}, "Ordering with 'colour' is disallowed"),
    ({"start_date_gte": "yesterday"}, "'yesterday' is not a 'date-time' - 'start_date_gte'"),
    ({"logical_date_gte": DAY.isoformat()}, "{'logical_date_gte': ['Unknown field.']}"),
    ("etl", "'etl' is not of type 'object'"),
]


def test_batch_bad_bodies_are_problems_naming_the_field(world: Settings, client: Any) -> None:
    for body, detail in BATCH_BAD_BODIES:
        assert detail in problem_of(batch(client, body), 400)["detail"], body


def test_batch_needs_credentials_and_a_json_body(world: Settings, client: Any) -> None:
    problem_of(client.post("/api/v1/dags/~/dagRuns/list", json={}), 401)
    response = client.post("/api/v1/dags/~/dagRuns/list", data="[1,", headers={
        **auth(), "Content-Type": "application/json"})
    assert problem_of(response, 400)["detail"] == "Request body is not valid JSON"
    problem_of(client.post("/api/v1/dags/~/dagRuns/list?limit=5", json={}, headers=auth()), 400)
    # It reads: every role may list; it is not the run of a DAG named "~".
    assert ok(batch(client, {}, VIEWER))["total_entries"] == ok(batch(client, {}, OP))["total_entries"] == 5
