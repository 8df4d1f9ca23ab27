"""The grid of a DAG (its latest runs by its tasks), served as compact data and drawn in the browser.

A grid of 100 runs x 50 tasks is 5,000 cells. Rendered cell by cell in Jinja (a link, a title and a
``url_for`` each) it cost ~230 ms of CPU and 1.7 MB of HTML per request; here the page carries the
cells as one JSON document (state codes, tries and durations: ~60 kB) read with a single Core query
of six columns, and ``static/grid.js`` draws the table with DOM calls (text is never parsed as
HTML). The same document, from ``grid_data.json``, refreshes the grid in place: changed cells take
their new state, and a run created after the page was served appears as a new column.

Document shape (:func:`grid_data`)::

    {"dag_id": str, "num_runs": int, "states": [state names; a cell's code is an index here],
     "tasks": [{"id": str, "group": str | null, "gone": bool}],          # rows, in the DAG's order
     "runs": [{"id": str, "state": str, "when": str, "duration": str}],   # columns, oldest first
     "cells": [[null | [code, try_number, duration s | null, mapped count], ... one per task] ... one per run],
     "active": bool}                                                      # anything still moving
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flask import Response, request, url_for
from sqlalchemy import String, select, type_coerce

from scheduler.db.models import Dag, DagRun, TaskInstance
from scheduler.states import TaskInstanceState
from webserver.auth import requires
from webserver.db import read_session
from webserver.ui_runs import (
    ACTIVE_RUN_STATES,
    DEFAULT_RUNS,
    LIVE_TI_STATES,
    MAX_RUNS,
    STATE_PRIORITY,
    DagInfo,
    _int_arg,
    _json,
    _load_dag,
    _render,
    _run_duration,
    format_datetime,
    format_duration,
    summarise,
)
from webserver.views import ui

#: Cell state codes: an index into this list (sent with the data, so the browser needs no copy).
STATES: tuple[str, ...] = STATE_PRIORITY + tuple(
    s.value for s in TaskInstanceState if s.value not in STATE_PRIORITY)
_CODE = {state: code for code, state in enumerate(STATES)}
#: Task instances fetched per query (SQLite allows 999 bound parameters; PostgreSQL is fine either way).
_RUNS_PER_QUERY = 400


def _latest_runs(session: Any, dag_id: str, limit: int) -> list[Any]:
    """The latest ``limit`` runs as rows of the few columns the grid shows, oldest first."""
    rows = session.execute(
        select(DagRun.run_id, type_coerce(DagRun.state, String).label("state"), DagRun.logical_date,
               DagRun.run_after, DagRun.start_date, DagRun.end_date)
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.run_after.desc(), DagRun.id.desc()).limit(limit)
    ).all()
    rows.reverse()
    return rows


def _ti_rows(session: Any, dag_id: str, run_ids: Sequence[str]) -> list[Any]:
    """(run_id, task_id, map_index, state, try_number, duration) of every task instance of these runs:
    plain Core rows (no ORM objects), the state as its stored string."""
    found: list[Any] = []
    table = TaskInstance.__table__
    columns = (table.c.run_id, table.c.task_id, table.c.map_index, type_coerce(table.c.state, String),
               table.c.try_number, table.c.duration)
    connection = session.connection()
    for start in range(0, len(run_ids), _RUNS_PER_QUERY):
        found.extend(connection.execute(select(*columns).where(  # .all(): one fetchall, not a fetchone per row
            table.c.dag_id == dag_id, table.c.run_id.in_(run_ids[start:start + _RUNS_PER_QUERY]))).all())
    return found


def grid_data(info: DagInfo, runs: Sequence[Any], tis: Sequence[Any], num_runs: int, now: datetime) -> dict[str, Any]:
    """The grid document (see the module docstring) for ``runs`` (oldest first) and their task instances."""
    known = set(info.order)
    task_ids = info.order + sorted({row[1] for row in tis} - known)
    row_of = {task_id: index for index, task_id in enumerate(task_ids)}
    column_of = {run.run_id: index for index, run in enumerate(runs)}
    matrix: list[list[Any]] = [[None] * len(task_ids) for _ in runs]
    code_of, none_code, live = _CODE.get, _CODE["none"], LIVE_TI_STATES
    active = False
    # A mapped task has several instances in a run: gathered here, summarised into one cell below.
    mapped: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for run_id, task_id, map_index, state, try_number, duration in tis:
        column, row = column_of[run_id], row_of[task_id]
        seen = matrix[column][row]
        if map_index < 0 and seen is None and (column, row) not in mapped:
            if state in live:
                active = True
            matrix[column][row] = [code_of(state or "none", none_code), try_number,
                                   None if duration is None else round(duration, 2)]
            continue
        group = mapped[(column, row)]
        if seen is not None and not group:  # an unmapped instance came first: it joins the group
            group.append((STATES[seen[0]], seen[1], seen[2]))
        group.append((state, try_number, duration))
    for (column, row), group in mapped.items():
        state = summarise(s or "none" for s, _, _ in group)
        active = active or state in live
        durations = [d for _, _, d in group if d is not None]
        matrix[column][row] = [code_of(state, none_code), max(t for _, t, _ in group),
                               round(max(durations), 2) if durations else None, len(group)]

    run_records = []
    for run in runs:
        state = run.state or "queued"
        active = active or state in ACTIVE_RUN_STATES
        run_records.append({"id": run.run_id, "state": state, "when": format_datetime(run.logical_date or run.run_after),
                            "duration": format_duration(_run_duration(run, now))})
    return {
        "dag_id": info.dag.dag_id,
        "num_runs": num_runs,
        "states": list(STATES),
        "tasks": [{"id": t, "group": info.group_of(t), "gone": t not in known} for t in task_ids],
        "runs": run_records,
        "cells": matrix,
        "active": active,
    }


def _load_grid(session: Any, dag_id: str, num_runs: int) -> tuple[DagInfo, dict[str, Any]]:
    """The DAG and its grid document; an HTML 404 for an unknown DAG."""
    from scheduler.clock import utcnow

    info = _load_dag(session, dag_id)
    runs = _latest_runs(session, dag_id, num_runs)
    tis = _ti_rows(session, dag_id, [r.run_id for r in runs])
    return info, grid_data(info, runs, tis, num_runs, utcnow())


@ui.get("/dags/<dag_id>")
@requires("read")
def dag_grid(dag_id: str) -> Any:
    num_runs = _int_arg("num_runs", DEFAULT_RUNS, 1, MAX_RUNS)
    with read_session() as session:
        info, grid = _load_grid(session, dag_id, num_runs)
    return _render("dag_grid.html", info=info, tab="grid", grid=grid, num_runs=num_runs,
                   grid_poll_url=url_for("ui.dag_grid_data", dag_id=dag_id, num_runs=num_runs))


@ui.get("/dags/<dag_id>/grid_data.json")
@requires("read")
def dag_grid_data(dag_id: str) -> Response:
    """The grid document for the latest ``num_runs`` runs (default 25, at most 200); 404 for an unknown DAG."""
    raw = request.args.get("num_runs") or str(DEFAULT_RUNS)
    try:
        num_runs = min(max(int(raw), 1), MAX_RUNS)
    except ValueError:
        return _json({"error": f"num_runs must be a whole number, not {raw!r}"}, 400)
    with read_session() as session:
        if session.scalar(select(Dag.dag_id).where(Dag.dag_id == dag_id)) is None:
            return _json({"error": f"DAG {dag_id!r} does not exist"}, 404)
        _, grid = _load_grid(session, dag_id, num_runs)
    return _json(grid)
