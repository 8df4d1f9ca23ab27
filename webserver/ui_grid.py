"""The grid of a DAG (its latest runs by its tasks), served as compact data and drawn in the browser.

A grid of 100 runs x 50 tasks is 5,000 cells. Rendered cell by cell in Jinja (a link, a title and a
``url_for`` each) it cost ~230 ms of CPU and 1.7 MB of HTML per request; here the page carries the
cells as one JSON document (state codes, tries and durations: ~60 kB) read with a single Core query
of six columns, and ``static/grid.js`` draws the table with DOM calls (text is never parsed as
HTML). The same document, from ``grid_data.json``, refreshes the grid in place: changed cells take
their new state, and a run created after the page was served appears as a new column.

Finished runs' cells are cached per process (``webserver.cache``), keyed by what any change to them
changes (see :func:`_cache_key`), with their JSON text: a 100 x 50 grid of finished runs then costs
one query for the runs, one for the few unfinished runs' task instances, and the page around them.

Document shape (:func:`grid_text`)::

    {"dag_id": str, "num_runs": int, "states": [state names; a cell's code is an index here],
     "tasks": [{"id": str, "group": str | null, "gone": bool}],          # rows, in the DAG's order
     "runs": [{"id": str, "state": str, "when": str, "duration": str}],   # columns, oldest first
     "cells": [[null | [code, try_number, duration s | null, mapped count], ... one per task] ... one per run],
     "active": bool}                                                      # anything still moving
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flask import Response, request, url_for
from markupsafe import Markup
from sqlalchemy import String, select, type_coerce

from scheduler.db.models import Dag, DagRun, TaskInstance
from scheduler.states import DagRunState, TaskInstanceState
from webserver.auth import requires
from webserver.cache import grid_columns
from webserver.db import read_session
from webserver.ui_runs import (
    ACTIVE_RUN_STATES,
    DEFAULT_RUNS,
    FINISHED,
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
_LIVE_CODES = frozenset(_CODE[state] for state in LIVE_TI_STATES)
_FINISHED_CODES = frozenset(_CODE[state] for state in FINISHED)
_FINISHED_RUN_STATES = frozenset({DagRunState.SUCCESS.value, DagRunState.FAILED.value})
#: Task instances fetched per query (SQLite allows 999 bound parameters; PostgreSQL is fine either way).
_RUNS_PER_QUERY = 400


def _latest_runs(session: Any, dag_id: str, limit: int) -> list[Any]:
    """The latest ``limit`` runs as rows of the few columns the grid shows (and its cache's key), oldest first."""
    rows = session.execute(
        select(DagRun.id, DagRun.run_id, type_coerce(DagRun.state, String).label("state"), DagRun.logical_date,
               DagRun.run_after, DagRun.start_date, DagRun.end_date, DagRun.updated_at)
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


#: A run's cells: task id -> [code, try_number, duration s | None] (a mapped task: [..., mapped count]).
Column = dict[str, list[Any]]


def columns_from_rows(tis: Sequence[Any]) -> dict[str, Column]:
    """The cells of each run (by run id) from task instance rows (see :func:`_ti_rows`); a mapped task's
    instances are summarised into one cell."""
    columns: dict[str, Column] = defaultdict(dict)
    code_of, none_code = _CODE.get, _CODE["none"]
    # A mapped task has several instances in a run: gathered here, summarised into one cell below.
    mapped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for run_id, task_id, map_index, state, try_number, duration in tis:
        column = columns[run_id]
        seen = column.get(task_id)
        if map_index < 0 and seen is None and (run_id, task_id) not in mapped:
            column[task_id] = [code_of(state or "none", none_code), try_number,
                               None if duration is None else round(duration, 2)]
            continue
        group = mapped[(run_id, task_id)]
        if seen is not None and not group:  # an unmapped instance came first: it joins the group
            group.append((STATES[seen[0]], seen[1], seen[2]))
        group.append((state, try_number, duration))
    for (run_id, task_id), group in mapped.items():
        state = summarise(s or "none" for s, _, _ in group)
        durations = [d for _, _, d in group if d is not None]
        columns[run_id][task_id] = [code_of(state, none_code), max(t for _, t, _ in group),
                                    round(max(durations), 2) if durations else None, len(group)]
    return columns


def _cache_key(dag_id: str, run: Any) -> tuple[Any, ...] | None:
    """Where a run's cells are cached: only a finished run's, under what a change to them changes.

    A finished run's task instances change only by a user's clear (the run goes back to queued)
    or mark (``ti_ops`` touches the run's ``updated_at``; marking the run sets it too), so the key
    holds the run's row id, state, end and ``updated_at``. Task runners, heartbeats and the
    scheduler write the instances of unfinished runs, which are read on every request.
    """
    if run.state not in _FINISHED_RUN_STATES:
        return None
    return (dag_id, run.id, run.run_id, run.state, run.end_date, run.updated_at)


class CachedColumn:
    """A finished run's cells as cached, with the JSON text of the last row order they were drawn in."""

    __slots__ = ("cells", "encoded")

    def __init__(self, cells: Column) -> None:
        self.cells = cells
        self.encoded: tuple[tuple[str, ...], str] | None = None  # (task ids, JSON list of cells in that order)

    def text(self, layout: tuple[str, ...]) -> str:
        encoded = self.encoded  # one read: another thread may replace it meanwhile, never half
        if encoded is not None and encoded[0] == layout:
            return encoded[1]
        text = _cells_json(self.cells, layout)
        self.encoded = (layout, text)
        return text


def _cells_json(cells: Column, layout: Sequence[str]) -> str:
    return json.dumps([cells.get(task_id) for task_id in layout], separators=(",", ":"))


def run_columns(session: Any, dag_id: str, runs: Sequence[Any]) -> tuple[list[Column | CachedColumn], bool]:
    """The cells of each of ``runs`` (rows of :func:`_latest_runs`): from this process's cache for finished
    runs seen before (a :class:`CachedColumn`), else read in one query; the finished cells of finished runs
    are cached for the next request. Also whether any cell is live (queued, running...; never a cached one)."""
    cache = grid_columns()
    keys = [_cache_key(dag_id, run) for run in runs]
    found: list[CachedColumn | None] = [None if key is None else cache.get(key) for key in keys]
    missing = [run.run_id for run, column in zip(runs, found, strict=True) if column is None]
    if not missing:
        return found, False  # type: ignore[return-value]
    fetched = columns_from_rows(_ti_rows(session, dag_id, missing))
    live = any(cell[0] in _LIVE_CODES for column in fetched.values() for cell in column.values())
    out: list[Column | CachedColumn] = []
    for run, key, cached in zip(runs, keys, found, strict=True):
        if cached is not None:
            out.append(cached)
            continue
        column = fetched.get(run.run_id, {})
        # Only final cells: anything else in a finished run (an oddity) is read again each time.
        if key is not None and column and all(cell[0] in _FINISHED_CODES for cell in column.values()):
            cached = CachedColumn(column)
            cache.put(key, cached, len(column))
            out.append(cached)
        else:
            out.append(column)
    return out, live


def _cells_of(column: Column | CachedColumn) -> Column:
    return column.cells if isinstance(column, CachedColumn) else column


def _task_ids(info: DagInfo, columns: Sequence[Column | CachedColumn]) -> list[str]:
    """The grid's rows: the DAG's tasks in order, then tasks only old task instances still name."""
    known = set(info.order)
    extra: set[str] = set()
    for column in columns:
        cells = _cells_of(column)
        if not known.issuperset(cells):
            extra.update(cells.keys() - known)
    return info.order + sorted(extra)


def _head(info: DagInfo, runs: Sequence[Any], task_ids: Sequence[str], live: bool, num_runs: int,
          now: datetime) -> dict[str, Any]:
    """The grid document without its cells."""
    known = set(info.order)
    active = live
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
        "active": active,
    }


def grid_text(info: DagInfo, runs: Sequence[Any], columns: Sequence[Column | CachedColumn], live: bool,
              num_runs: int, now: datetime) -> str:
    """The grid document (see the module docstring) as JSON text, for ``runs`` (oldest first) and their
    cells (as :func:`run_columns` gives them, shared with its cache: only read here; ``live``: whether a
    cell is queued, running...). A cached column's cells are encoded once per row order: encoding 5,000
    cells on every request cost more than all the rest the grid does once its cells are cached."""
    task_ids = _task_ids(info, columns)
    layout = tuple(task_ids)
    head = json.dumps(_head(info, runs, task_ids, live, num_runs, now))
    cells = ",".join(column.text(layout) if isinstance(column, CachedColumn) else _cells_json(column, layout)
                     for column in columns)
    return f'{head[:-1]}, "cells": [{cells}]}}'


def html_safe_json(text: str) -> Markup:
    """JSON text made safe inside an HTML ``<script>`` element, as Jinja's ``tojson`` does it: ``<``, ``>``,
    ``&`` and ``'`` as ``\\u`` escapes (the same string to a JSON parser; never markup to the browser)."""
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
                  .replace("'", "\\u0027"))


def _load_grid(session: Any, dag_id: str, num_runs: int) -> tuple[DagInfo, str, bool]:
    """The DAG, its grid document as JSON text and whether it has runs; an HTML 404 for an unknown DAG."""
    from scheduler.clock import utcnow

    info = _load_dag(session, dag_id)
    runs = _latest_runs(session, dag_id, num_runs)  # before the cells: a cached column is never older than its key
    columns, live = run_columns(session, dag_id, runs)
    return info, grid_text(info, runs, columns, live, num_runs, utcnow()), bool(runs)


@ui.get("/dags/<dag_id>")
@requires("read")
def dag_grid(dag_id: str) -> Any:
    num_runs = _int_arg("num_runs", DEFAULT_RUNS, 1, MAX_RUNS)
    with read_session() as session:
        info, text, has_runs = _load_grid(session, dag_id, num_runs)
    return _render("dag_grid.html", info=info, tab="grid", grid_json=html_safe_json(text), has_runs=has_runs,
                   num_runs=num_runs, grid_poll_url=url_for("ui.dag_grid_data", dag_id=dag_id, num_runs=num_runs))


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
        _, text, _ = _load_grid(session, dag_id, num_runs)
    response = Response(text, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
