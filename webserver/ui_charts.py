"""The DAG's graph, Gantt and durations pages (the layout itself is ``webserver.graph_layout``).

Task groups (a task's serialized ``task_group``) are collapsed into one node of the graph unless
expanded with ``?expand=GROUP``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import request, url_for
from sqlalchemy import select

from scheduler.db.models import DagRun, TaskInstanceHistory
from webserver.auth import requires
from webserver.db import read_session
from webserver.graph_layout import NODE_H, NODE_W, _cached_layout
from webserver.ui_runs import (
    DEFAULT_RUNS,
    MAX_RUNS,
    PICKER_RUNS,
    _cell_rows,
    _cells,
    _int_arg,
    _load_dag,
    _load_run,
    _map_args,
    _picker_runs,
    _recent_runs,
    _render,
    _run_duration,
    _state,
    _task_ids,
    _tis_of,
    format_datetime,
    format_duration,
    summarise,
)
from webserver.views import ui


def _group_chain(group: str) -> list[str]:
    """'a.b.c' -> ['a', 'a.b', 'a.b.c'] (outermost first)."""
    bits = group.split(".")
    return [".".join(bits[: i + 1]) for i in range(len(bits))]


@dataclass
class GraphNode:
    key: str
    label: str
    kind: str  # "task" or "group"
    state: str
    task_id: str | None = None
    group: str | None = None
    members: list[str] = field(default_factory=list)
    operator: str = ""
    href: str | None = None
    x: float = 0.0
    y: float = 0.0
    short: str = ""


def _short(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@ui.get("/dags/<dag_id>/graph")
@requires("read")
def dag_graph(dag_id: str) -> Any:
    expanded = {g for g in request.args.getlist("expand") if g}
    with read_session() as session:
        info = _load_dag(session, dag_id)
        picker = _picker_runs(session, dag_id)
        run_id = request.args.get("run_id")
        run = _load_run(session, dag_id, run_id) if run_id else (picker[0] if picker else None)
        tis = _cell_rows(session, dag_id, run.run_id) if run is not None else []
    cells = {task_id: cell for (_, task_id), cell in _cells(tis).items()}
    all_groups = sorted({g for t in info.order if (grp := info.group_of(t)) for g in _group_chain(grp)})

    def node_key(task_id: str) -> str:
        group = info.group_of(task_id)
        if group:
            for g in _group_chain(group):
                if g not in expanded:
                    return "g:" + g
        return "t:" + task_id

    nodes: dict[str, GraphNode] = {}
    key_order: list[str] = []
    for task_id in info.order:
        key = node_key(task_id)
        node = nodes.get(key)
        if node is None:
            if key.startswith("g:"):
                group = key[2:]
                node = GraphNode(key, group, "group", "none", group=group)
            else:
                task = info.tasks[task_id]
                node = GraphNode(key, task_id, "task", "none", task_id=task_id,
                                 group=info.group_of(task_id), operator=str(task.get("operator") or ""))
            nodes[key] = node
            key_order.append(key)
        node.members.append(task_id)
    edges = []
    for task_id in info.order:
        for down in info.tasks[task_id].get("downstream") or []:
            if down in info.tasks:
                edges.append((node_key(task_id), node_key(down)))
    layout = _cached_layout(tuple(key_order), tuple(edges))

    base_args: dict[str, Any] = {"run_id": run.run_id} if run is not None else {}
    for node in nodes.values():
        placed = layout.nodes[node.key]
        node.x, node.y = placed.x, placed.y
        states = [cells[m].state for m in node.members if m in cells]
        if node.kind == "task":
            node.state = states[0] if states else "none"
            if run is not None and node.task_id in cells:
                node.href = url_for("ui.ti_page", dag_id=dag_id, run_id=run.run_id, task_id=node.task_id)
        else:
            node.state = summarise(states) if states else "none"
            node.operator = f"group · {len(node.members)} tasks"
            node.href = url_for("ui.dag_graph", dag_id=dag_id, **base_args, expand=sorted(expanded | {node.group or ""}))
        node.short = _short(node.label)
    collapse_links = [
        (g, url_for("ui.dag_graph", dag_id=dag_id, **base_args,
                    expand=sorted(e for e in expanded if e != g and not e.startswith(g + "."))))
        for g in sorted(expanded) if g in all_groups
    ]
    edge_list = [{"d": d, "from": u, "to": v} for u, v, d in layout.edges]
    return _render(
        "dag_graph.html", info=info, tab="graph", run=run, picker=picker, nodes=list(nodes.values()),
        edges=edge_list, layout=layout, node_w=NODE_W, node_h=NODE_H, groups=all_groups,
        expanded=sorted(expanded), collapse_links=collapse_links,
        expand_all=url_for("ui.dag_graph", dag_id=dag_id, **base_args, expand=all_groups),
        collapse_all=url_for("ui.dag_graph", dag_id=dag_id, **base_args),
        poll_url=url_for("ui.dag_grid_json", dag_id=dag_id, run_id=run.run_id) if run is not None else None,
    )


# --- Gantt and durations ---------------------------------------------------------------------------

GANTT_LABEL_W = 240
GANTT_W = 820
GANTT_ROW = 22


def _ticks(span: float, count: int = 6) -> list[float]:
    """Round tick offsets (seconds) covering [0, span]."""
    if span <= 0:
        return [0.0]
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    step = next((s for s in steps if span / s <= count), 86400 * max(1, int(span / 86400 / count) + 1))
    return [float(i * step) for i in range(int(span // step) + 1)]


@ui.get("/dags/<dag_id>/gantt")
@requires("read")
def dag_gantt(dag_id: str) -> Any:
    from scheduler.clock import utcnow

    now = utcnow()
    with read_session() as session:
        info = _load_dag(session, dag_id)
        picker = list(reversed(_recent_runs(session, dag_id, PICKER_RUNS)))
        run_id = request.args.get("run_id")
        run = _load_run(session, dag_id, run_id) if run_id else (picker[0] if picker else None)
        tis = _tis_of(session, dag_id, [run.run_id]) if run is not None else []
        history = list(session.scalars(select(TaskInstanceHistory).where(
            TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == run.run_id))) if run else []
    position = {t: i for i, t in enumerate(info.order)}
    started = sorted((ti for ti in tis if ti.start_date is not None),
                     key=lambda ti: (ti.start_date, position.get(ti.task_id, 1 << 30), ti.map_index))
    bars: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    chart: dict[str, Any] = {"ticks": [], "width": GANTT_LABEL_W + GANTT_W + 20, "height": 40}
    if started and run is not None:
        starts = [ti.start_date for ti in started if ti.start_date] + [h.start_date for h in history if h.start_date]
        t0 = min(starts)
        ends = [ti.end_date or now for ti in started] + [h.end_date for h in history if h.end_date]
        span = max((max(ends) - t0).total_seconds(), 1.0)
        scale = GANTT_W / span
        row_of: dict[tuple[str, int], int] = {}
        for ti in started:
            row_of[(ti.task_id, ti.map_index)] = len(rows)
            label = ti.task_id if ti.map_index < 0 else f"{ti.task_id} [{ti.map_index}]"
            rows.append({"label": label, "short": _short(label, 32), "y": 30 + len(rows) * GANTT_ROW,
                         "href": url_for("ui.ti_page", dag_id=dag_id, run_id=run.run_id, task_id=ti.task_id,
                                         **_map_args(ti.map_index))})

        def bar(task_id: str, map_index: int, try_number: int, state: str, start: datetime,
                end: datetime | None, previous: bool) -> None:
            row = row_of.get((task_id, map_index))
            if row is None:
                return
            stop = end or now
            x = GANTT_LABEL_W + (start - t0).total_seconds() * scale
            bars.append({
                "x": round(x, 1), "y": rows[row]["y"] + (7 if previous else 3),
                "w": round(max((stop - start).total_seconds() * scale, 2.0), 1), "h": 8 if previous else 16,
                "state": state, "previous": previous, "task_id": task_id,
                "title": f"{task_id} try {try_number}: {state}, {format_datetime(start)} → "
                         f"{format_datetime(end) if end else 'now'} ({format_duration((stop - start).total_seconds())})",
            })

        for h in history:
            if h.start_date is not None and h.try_number != next(
                    (t.try_number for t in started if t.task_id == h.task_id and t.map_index == h.map_index), None):
                bar(h.task_id, h.map_index, h.try_number, _state(h.state), h.start_date, h.end_date, True)
        for ti in started:
            assert ti.start_date is not None
            bar(ti.task_id, ti.map_index, ti.try_number, _state(ti.state), ti.start_date, ti.end_date, False)
        chart["ticks"] = [{"x": round(GANTT_LABEL_W + t * scale, 1), "label": "+" + format_duration(t)}
                          for t in _ticks(span)]
        chart["height"] = 30 + len(rows) * GANTT_ROW + 10
        chart["t0"] = t0
    not_started = [ti for ti in tis if ti.start_date is None]
    return _render("dag_gantt.html", info=info, tab="gantt", run=run, picker=picker, rows=rows, bars=bars,
                   chart=chart, label_w=GANTT_LABEL_W, row_h=GANTT_ROW, not_started=len(not_started),
                   poll_url=url_for("ui.dag_grid_json", dag_id=dag_id, run_id=run.run_id) if run is not None else None)


@ui.get("/dags/<dag_id>/durations")
@requires("read")
def dag_durations(dag_id: str) -> Any:
    from scheduler.clock import utcnow

    num_runs = _int_arg("num_runs", DEFAULT_RUNS, 1, MAX_RUNS)
    now = utcnow()
    with read_session() as session:
        info = _load_dag(session, dag_id)
        runs = _recent_runs(session, dag_id, num_runs)
        tis = _tis_of(session, dag_id, [r.run_id for r in runs])
    cells = _cells(tis)
    bar_w, chart_h = 10, 36
    rows = []

    def series(label: str, values: list[tuple[DagRun, float | None, str]], href: str | None) -> dict[str, Any]:
        known = [v for _, v, _ in values if v is not None]
        top = max(known, default=0.0) or 1.0
        bars = []
        for i, (run, value, state) in enumerate(values):
            if value is None:
                continue
            h = max(value / top * chart_h, 1.0)
            bars.append({"x": i * (bar_w + 2), "y": round(chart_h - h, 1), "h": round(h, 1), "state": state,
                         "title": f"{run.run_id}: {format_duration(value)} ({state})"})
        return {"label": label, "href": href, "bars": bars, "width": max(len(values), 1) * (bar_w + 2),
                "mean": sum(known) / len(known) if known else None, "max": max(known) if known else None,
                "last": values[-1][1] if values else None}

    rows.append(series("(whole run)", [(r, _run_duration(r, now), _state(r.state)) for r in runs], None))
    for task_id in _task_ids(info, tis):
        values = []
        for r in runs:
            cell = cells.get((r.run_id, task_id))
            values.append((r, cell.duration if cell else None, cell.state if cell else "none"))
        rows.append(series(task_id, values, None))
    return _render("dag_durations.html", info=info, tab="durations", runs=runs, rows=rows, num_runs=num_runs,
                   bar_w=bar_w, chart_h=chart_h)


