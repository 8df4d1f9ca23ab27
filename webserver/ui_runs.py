"""The DAG pages of the UI (graph, Gantt, code, run history, durations; the grid is in
``webserver.ui_grid``), the run and task instance pages, their JSON refresh and log-tail endpoints,
and the clear / mark actions.

Every page is a server-rendered, autoescaped template; nothing here marks text as safe. Running
states on the run and task instance pages are refreshed in place by ``static/dag.js`` from
``grid.json``; a try's log is tailed from ``log.json`` with a byte offset. Actions need ``edit``: a GET shows what will change, the POST
(with the session's CSRF token, checked in ``webserver.app``) does it.

The graph is laid out here, server-side: longest-path layers from the sources, long edges broken
by dummy points, the order within each layer refined by barycenter sweeps (fewer crossings), and
drawn as SVG by the template. Task groups (a task's serialized ``task_group``) are collapsed into
one node unless expanded with ``?expand=GROUP``.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import (
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import func, select

from scheduler.db.models import (
    Dag,
    DagCode,
    DagRun,
    SerializedDag,
    TaskInstance,
    TaskInstanceHistory,
    XCom,
)
from scheduler.states import FINISHED_TI_STATES, DagRunState
from webserver.auth import ROLES, requires
from webserver.cache import serialized_dag
from webserver.db import read_session, write_session
from webserver.views import ui

#: Runs shown by the grid and the durations page unless ?num_runs= says otherwise (and at most).
DEFAULT_RUNS = 25
MAX_RUNS = 200
#: Rows per page of the run history.
RUNS_PER_PAGE = 25
#: Runs offered by the run pickers of the graph and Gantt pages.
PICKER_RUNS = 50
#: The TI page shows at most the last this many bytes of a log; a log.json answer carries at most this much.
LOG_PAGE_BYTES = 2 * 1024 * 1024
LOG_CHUNK_BYTES = 512 * 1024
#: An XCom value or rendered field longer than this is cut in the page.
VALUE_CHARS = 20_000

#: The "worst first" order used to summarise several task instances (a task group, a mapped task) by one state.
STATE_PRIORITY = (
    "failed", "upstream_failed", "up_for_retry", "up_for_reschedule", "running", "queued", "scheduled",
    "none", "skipped", "success", "removed",
)
FINISHED = frozenset(s.value for s in FINISHED_TI_STATES)
ACTIVE_RUN_STATES = frozenset({DagRunState.QUEUED.value, DagRunState.RUNNING.value})
LIVE_TI_STATES = frozenset({"queued", "running", "scheduled", "up_for_retry", "up_for_reschedule"})


# --- small helpers ---------------------------------------------------------------------------------


def _user() -> Any:
    from webserver.login import current_user

    return current_user()


def _can_edit() -> bool:
    user = _user()
    return user is not None and "edit" in ROLES.get(user.role, frozenset())


def _render(template: str, **context: Any) -> str:
    return render_template(template, user=_user(), can_edit=_can_edit(), **context)


def _not_found(detail: str) -> NoReturn:
    page = render_template("error.html", title="Not Found", detail=detail, user=_user())
    abort(make_response(page, 404))


def _json(body: Any, status: int = 200) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(make_response(render_template("error.html", title="Bad Request", user=_user(),
                                            detail=f"{name} must be a whole number, not {raw!r}"), 400))
    return min(max(value, low), high)


def _state(value: Any) -> str:
    return str(getattr(value, "value", value) or "none")


def summarise(states: Iterable[str]) -> str:
    """One state for several task instances: the first of :data:`STATE_PRIORITY` present."""
    present = set(states)
    if not present:
        return "none"
    if present <= {"success", "skipped", "removed"} and "success" in present:
        return "success"
    for state in STATE_PRIORITY:
        if state in present:
            return state
    return sorted(present)[0]


@ui.app_template_filter("ur_dt")
def format_datetime(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@ui.app_template_filter("ur_dur")
def format_duration(seconds: float | None) -> str:
    """``0.25s``, ``42.0s``, ``3m 05s``, ``2h 03m 04s``, ``1d 02h 03m``; empty for None."""
    if seconds is None:
        return ""
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _run_duration(run: DagRun, now: datetime) -> float | None:
    if run.start_date is None:
        return None
    end = run.end_date or (now if _state(run.state) in ACTIVE_RUN_STATES else None)
    return None if end is None else max((end - run.start_date).total_seconds(), 0.0)


def _show_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, default=str)
    if len(text) > VALUE_CHARS:
        text = text[:VALUE_CHARS] + f"\n… ({len(text) - VALUE_CHARS} more characters)"
    return text


def _audit(session: Any, event: str, *, dag_id: str, run_id: str | None = None, task_id: str | None = None,
           extra: Any = None) -> None:
    from scheduler.audit import record_event

    record_event(session, f"ui.{event}", owner=getattr(_user(), "username", None), dag_id=dag_id,
                 run_id=run_id, task_id=task_id, extra=extra)


# --- loading ---------------------------------------------------------------------------------------


@dataclass
class DagInfo:
    """What the DAG pages need of a DAG: its row and its serialized tasks (in topological order)."""

    dag: Dag
    data: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    order: list[str]

    def group_of(self, task_id: str) -> str | None:
        group = self.tasks.get(task_id, {}).get("task_group")
        return group if isinstance(group, str) and group else None


def _load_dag(session: Any, dag_id: str) -> DagInfo:
    found = session.execute(  # the DAG and the hash of its serialized data in one query
        select(Dag, SerializedDag.dag_hash).outerjoin(SerializedDag, SerializedDag.dag_id == Dag.dag_id)
        .where(Dag.dag_id == dag_id)
    ).first()
    if found is None:
        _not_found(f"DAG {dag_id!r} does not exist.")
    dag, digest = found
    # Shared, cached under its hash: read only. (A DAG without serialized data: its tasks are empty.)
    data = (serialized_dag(session, dag_id, digest) if digest is not None else None) or {}
    tasks = {t["task_id"]: t for t in data.get("tasks") or [] if isinstance(t, dict) and "task_id" in t}
    order = [t for t in data.get("task_order") or [] if t in tasks]
    order += [t for t in tasks if t not in set(order)]
    session.expunge(dag)
    return DagInfo(dag, data, tasks, order)


def _load_run(session: Any, dag_id: str, run_id: str) -> DagRun:
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        _not_found(f"DAG {dag_id!r} has no run {run_id!r}.")
    return run  # type: ignore[no-any-return]


def _recent_runs(session: Any, dag_id: str, limit: int) -> list[DagRun]:
    """The latest ``limit`` runs, oldest first."""
    runs = session.scalars(
        select(DagRun).where(DagRun.dag_id == dag_id)
        .order_by(DagRun.run_after.desc(), DagRun.id.desc()).limit(limit)
    ).all()
    return list(reversed(runs))


def _tis_of(session: Any, dag_id: str, run_ids: Sequence[str]) -> list[TaskInstance]:
    if not run_ids:
        return []
    found: list[TaskInstance] = []
    ids = list(run_ids)
    for start in range(0, len(ids), 400):
        found.extend(session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(ids[start:start + 400]))))
    return found


def _picker_runs(session: Any, dag_id: str) -> list[Any]:
    """The latest :data:`PICKER_RUNS` runs, newest first, as rows of their run_id and state (no ORM objects)."""
    return session.execute(
        select(DagRun.run_id, DagRun.state).where(DagRun.dag_id == dag_id)
        .order_by(DagRun.run_after.desc(), DagRun.id.desc()).limit(PICKER_RUNS)
    ).all()  # type: ignore[no-any-return]


def _cell_rows(session: Any, dag_id: str, run_id: str) -> list[Any]:
    """A run's task instances as rows of what :func:`_cells` reads (no ORM objects)."""
    return session.execute(
        select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state,
               TaskInstance.try_number, TaskInstance.duration)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    ).all()  # type: ignore[no-any-return]


@dataclass
class Cell:
    """A task in a run: its (summarised) state, and what the cell's tooltip tells."""

    state: str
    try_number: int = 0
    duration: float | None = None
    mapped: int = 0


def _cells(tis: Iterable[Any]) -> dict[tuple[str, str], Cell]:
    """(run_id, task_id) -> Cell; a mapped task's instances are summarised into one cell."""
    grouped: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for ti in tis:
        grouped[(ti.run_id, ti.task_id)].append(ti)
    cells = {}
    for key, group in grouped.items():
        if len(group) == 1 and group[0].map_index < 0:
            ti = group[0]
            cells[key] = Cell(_state(ti.state), ti.try_number, ti.duration)
        else:
            durations = [t.duration for t in group if t.duration is not None]
            cells[key] = Cell(summarise(_state(t.state) for t in group), max(t.try_number for t in group),
                              max(durations) if durations else None, mapped=len(group))
    return cells


def _task_ids(info: DagInfo, tis: Iterable[TaskInstance]) -> list[str]:
    """The DAG's tasks in order, then tasks that only old task instances still name."""
    known = set(info.order)
    extra = sorted({ti.task_id for ti in tis if ti.task_id not in known})
    return info.order + extra


# --- the DAG's tabs --------------------------------------------------------------------------------


@ui.get("/dags/<dag_id>/grid.json")
@requires("read")
def dag_grid_json(dag_id: str) -> Response:
    """States for in-place refresh: ``{"runs": {run_id: state}, "tis": {run_id: {task_id: {...}}},
    "latest": [run ids], "active": bool}`` for the runs named by ``run_id`` (repeatable), or the
    latest ``num_runs``."""
    from scheduler.clock import utcnow

    wanted = request.args.getlist("run_id")
    try:
        num_runs = min(max(int(request.args.get("num_runs") or DEFAULT_RUNS), 1), MAX_RUNS)
    except ValueError:
        return _json({"error": "num_runs must be a whole number"}, 400)
    now = utcnow()
    with read_session() as session:
        if session.get(Dag, dag_id) is None:
            return _json({"error": f"DAG {dag_id!r} does not exist"}, 404)
        latest = _recent_runs(session, dag_id, num_runs)
        if wanted:
            runs = list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id,
                                                             DagRun.run_id.in_(wanted[:MAX_RUNS]))))
        else:
            runs = latest
        tis = _tis_of(session, dag_id, [r.run_id for r in runs])
    per_run: dict[str, dict[str, Any]] = {r.run_id: {} for r in runs}
    active = any(_state(r.state) in ACTIVE_RUN_STATES for r in runs)
    for (run_id, task_id), cell in _cells(tis).items():
        per_run.setdefault(run_id, {})[task_id] = {
            "state": cell.state, "try_number": cell.try_number, "duration": format_duration(cell.duration),
        }
        active = active or cell.state in LIVE_TI_STATES
    return _json({
        "runs": {r.run_id: {"state": _state(r.state), "duration": format_duration(_run_duration(r, now))}
                 for r in runs},
        "tis": per_run,
        "latest": [r.run_id for r in latest],
        "active": active,
    })


@ui.get("/dags/<dag_id>/runs")
@requires("read")
def dag_runs(dag_id: str) -> Any:
    from scheduler.clock import utcnow

    page = _int_arg("page", 1, 1, 1_000_000)
    state = request.args.get("state") or ""
    if state and state not in {s.value for s in DagRunState}:
        state = ""
    with read_session() as session:
        info = _load_dag(session, dag_id)
        query = select(DagRun).where(DagRun.dag_id == dag_id)
        if state:
            query = query.where(DagRun.state == state)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        runs = session.scalars(query.order_by(DagRun.run_after.desc(), DagRun.id.desc())
                               .limit(RUNS_PER_PAGE).offset((page - 1) * RUNS_PER_PAGE)).all()
    pages = max(1, -(-total // RUNS_PER_PAGE))
    now = utcnow()
    rows = [{"run": r, "duration": _run_duration(r, now),
             "conf": json.dumps(r.conf, sort_keys=True, default=str) if r.conf else ""} for r in runs]
    return _render("dag_runs.html", info=info, tab="runs", rows=rows, page=page, pages=pages, total=total,
                   state=state, run_states=[s.value for s in DagRunState])


@ui.get("/dags/<dag_id>/code")
@requires("read")
def dag_code(dag_id: str) -> Any:
    with read_session() as session:
        info = _load_dag(session, dag_id)
        fileloc = info.dag.fileloc or info.data.get("fileloc")
        code = session.get(DagCode, fileloc) if fileloc else None
        source = code.source if code is not None else None
        updated = code.last_updated if code is not None else None
    lines = source.splitlines() if source is not None else []
    return _render("dag_code.html", info=info, tab="code", fileloc=fileloc, lines=lines, updated=updated,
                   has_source=source is not None)


# --- graph -----------------------------------------------------------------------------------------

NODE_W, NODE_H = 200, 40
GAP_X, GAP_Y = 64, 14
DUMMY_PITCH = 10
PAD = 12
#: Long edges get dummy points (better ordering) only while there are at most this many of them.
MAX_DUMMIES = 6000
SWEEPS = 6


@dataclass
class Placed:
    key: str
    x: float
    y: float


@dataclass
class Layout:
    width: float
    height: float
    nodes: dict[str, Placed]
    #: (from key, to key, SVG path data)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    layers: int = 0


def layered_layout(order: Sequence[str], edges: Iterable[tuple[str, str]]) -> Layout:
    """Place ``order``'s nodes left to right in layers, with ``edges`` (u -> v) drawn between them.

    ``order`` should be topological; an edge against it is laid out as if reversed (drawn as given).
    Layers: the longest path from a source, sources then pulled next to their nearest successor.
    Within a layer: barycenter of the neighbours in the adjacent layer, sweeping both ways.
    """
    pos = {n: i for i, n in enumerate(order)}
    pairs = sorted({(u, v) for u, v in edges if u in pos and v in pos and u != v}, key=lambda e: (pos[e[0]], pos[e[1]]))
    forward = [(u, v) if pos[u] < pos[v] else (v, u) for u, v in pairs]
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for u, v in set(forward):
        preds[v].append(u)
        succs[u].append(v)
    layer: dict[str, int] = {}
    for n in order:
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
    for n in order:
        if not preds[n] and succs[n]:
            layer[n] = min(layer[s] for s in succs[n]) - 1

    # Dummy points along edges that span several layers.
    chains: dict[tuple[str, str], list[str]] = {}
    span_total = sum(max(layer[v] - layer[u] - 1, 0) for u, v in set(forward))
    use_dummies = span_total <= MAX_DUMMIES
    up: dict[str, list[str]] = defaultdict(list)
    down: dict[str, list[str]] = defaultdict(list)
    rank = dict(layer)
    origin: dict[str, int] = {n: pos[n] for n in order}
    for u, v in sorted(set(forward), key=lambda e: (pos[e[0]], pos[e[1]])):
        chain = [u]
        if use_dummies:
            for step in range(layer[u] + 1, layer[v]):
                dummy = f"\0{u}\0{v}\0{step}"
                rank[dummy] = step
                origin[dummy] = pos[u]
                chain.append(dummy)
        chain.append(v)
        chains[(u, v)] = chain
        for a, b in zip(chain, chain[1:], strict=False):
            down[a].append(b)
            up[b].append(a)

    depth = max(rank.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(depth)]
    for n in sorted(rank, key=lambda k: (origin[k], k)):
        layers[rank[n]].append(n)
    index = {n: i for lay in layers for i, n in enumerate(lay)}

    def sweep(levels: Iterable[int], neighbours: dict[str, list[str]]) -> None:
        for lv in levels:
            current = layers[lv]

            def key(n: str, current: list[str] = current) -> float:
                near = neighbours.get(n)
                if not near:
                    return float(index[n])
                return sum(index[m] for m in near) / len(near)

            current.sort(key=key)
            for i, n in enumerate(current):
                index[n] = i

    for _ in range(SWEEPS):
        sweep(range(1, depth), up)
        sweep(range(depth - 2, -1, -1), down)

    heights = [sum(DUMMY_PITCH if n.startswith("\0") else NODE_H + GAP_Y for n in lay) for lay in layers]
    tallest = max(heights, default=0)
    coords: dict[str, tuple[float, float]] = {}
    for lv, lay in enumerate(layers):
        y = PAD + (tallest - heights[lv]) / 2
        x = float(PAD + lv * (NODE_W + GAP_X))
        for n in lay:
            if n.startswith("\0"):
                coords[n] = (x, y + DUMMY_PITCH / 2 - NODE_H / 2)
                y += DUMMY_PITCH
            else:
                coords[n] = (x, y)
                y += NODE_H + GAP_Y

    placed = {n: Placed(n, *coords[n]) for n in order}
    drawn: list[tuple[str, str, str]] = []
    for u, v in pairs:
        chain = chains[(u, v)] if (u, v) in chains else list(reversed(chains[(v, u)]))
        points: list[tuple[float, float]] = []
        for i, n in enumerate(chain):
            x, y = coords[n]
            mid = y + NODE_H / 2
            if i > 0:
                points.append((x, mid))
            if i < len(chain) - 1:
                points.append((x + NODE_W, mid))
        drawn.append((u, v, _curve(points)))
    width = float(PAD * 2 + max(depth, 1) * (NODE_W + GAP_X) - GAP_X)
    return Layout(width=width, height=PAD * 2 + tallest, nodes=placed, edges=drawn, layers=depth)


@functools.lru_cache(maxsize=32)
def _cached_layout(order: tuple[str, ...], edges: tuple[tuple[str, str], ...]) -> Layout:
    """:func:`layered_layout`, remembered per process for the last few graphs (a DAG's graph is laid out
    the same until its tasks change; laying out 50 tasks cost more than the rest of the view). Shared: read only."""
    return layered_layout(order, edges)


def _curve(points: Sequence[tuple[float, float]]) -> str:
    """SVG path data through ``points``: horizontal runs as lines, layer gaps as S-curves."""
    (x0, y0) = points[0]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for (ax, ay), (bx, by) in zip(points, points[1:], strict=False):
        if abs(ay - by) < 0.5 and bx >= ax:
            parts.append(f"L{bx:.1f},{by:.1f}")
        else:
            bend = max(abs(bx - ax) / 2, 24.0)
            parts.append(f"C{ax + bend:.1f},{ay:.1f} {bx - bend:.1f},{by:.1f} {bx:.1f},{by:.1f}")
    return " ".join(parts)


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


# --- run page --------------------------------------------------------------------------------------


@ui.get("/dags/<dag_id>/runs/<run_id>")
@requires("read")
def run_page(dag_id: str, run_id: str) -> Any:
    from scheduler.clock import utcnow

    with read_session() as session:
        info = _load_dag(session, dag_id)
        run = _load_run(session, dag_id, run_id)
        tis = _tis_of(session, dag_id, [run_id])
    position = {t: i for i, t in enumerate(info.order)}
    tis.sort(key=lambda ti: (position.get(ti.task_id, 1 << 30), ti.task_id, ti.map_index))
    counts: dict[str, int] = defaultdict(int)
    for ti in tis:
        counts[_state(ti.state)] += 1
    conf = json.dumps(run.conf, indent=2, sort_keys=True, default=str) if run.conf else ""
    return _render("run.html", info=info, tab=None, run=run, tis=tis, counts=dict(sorted(counts.items())), conf=conf,
                   duration=_run_duration(run, utcnow()),
                   poll_url=url_for("ui.dag_grid_json", dag_id=dag_id, run_id=run_id))


# --- task instance page and log --------------------------------------------------------------------


def _map_index_arg() -> int | None:
    raw = request.args.get("map_index", request.form.get("map_index"))
    if raw is None or raw == "":
        return None
    try:
        return min(max(int(raw), -1), 2**31 - 1)  # beyond the column's range names no instance anyway
    except ValueError:
        _not_found(f"map index {raw!r} is not a number")


def _map_args(map_index: int) -> dict[str, Any]:
    """URL arguments naming a map index (none for an unmapped task instance)."""
    return {"map_index": map_index} if map_index >= 0 else {}


def _load_ti(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> TaskInstance:
    """The task instance; for a mapped task without ``map_index``, its first mapped instance."""
    query = select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
                                       TaskInstance.task_id == task_id)
    if map_index is not None:
        ti = session.scalar(query.where(TaskInstance.map_index == map_index))
    else:
        ti = session.scalar(query.order_by(TaskInstance.map_index).limit(1))
    if ti is None:
        where = "" if map_index in (None, -1) else f" (map index {map_index})"
        _not_found(f"Task {task_id!r}{where} has no task instance in run {run_id!r} of DAG {dag_id!r}.")
    return ti  # type: ignore[no-any-return]


def _read_log(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int, start: int,
              limit: int) -> tuple[str, int, bool] | None:
    """(text, offset after it, whether earlier bytes were skipped) of a try's log from byte ``start``;
    None when the try has no log. At most ``limit`` bytes: with ``start`` < 0, the last ``limit``."""
    from scheduler.task_runner import log_path

    settings = current_app.config["UPDRAFT_SETTINGS"]
    path = log_path(settings.log_folder, dag_id, run_id, task_id, map_index, try_number)
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            skipped = False
            if start < 0:
                start = max(size - limit, 0)
                skipped = start > 0
            start = min(start, size)
            handle.seek(start)
            raw = handle.read(limit)
    except OSError:  # missing, or unreadable (a file where a folder should be, permissions, I/O): no log to show
        return None
    if skipped:  # begin at a line
        cut = raw.find(b"\n")
        if 0 <= cut < len(raw) - 1:
            raw, start = raw[cut + 1:], start + cut + 1
    # Never split a UTF-8 character: stop before an incomplete one at the end (it comes next time).
    end = len(raw)
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 == 0x80:
            continue
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if back < need:
                end = len(raw) - back
        break
    raw = raw[:end]
    return raw.decode("utf-8", errors="replace"), start + len(raw), skipped


@ui.get("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>")
@requires("read")
def ti_page(dag_id: str, run_id: str, task_id: str) -> Any:
    map_index = _map_index_arg()
    with read_session() as session:
        info = _load_dag(session, dag_id)
        run = _load_run(session, dag_id, run_id)
        ti = _load_ti(session, dag_id, run_id, task_id, map_index)
        siblings = [] if ti.map_index < 0 else list(session.execute(
            select(TaskInstance.map_index, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id)
            .order_by(TaskInstance.map_index)))
        history = list(session.scalars(select(TaskInstanceHistory).where(
            TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == run_id,
            TaskInstanceHistory.task_id == task_id, TaskInstanceHistory.map_index == ti.map_index,
        ).order_by(TaskInstanceHistory.try_number)))
        xcoms = list(session.scalars(select(XCom).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id == task_id, XCom.map_index == ti.map_index,
        ).order_by(XCom.key)))
    tries: dict[int, dict[str, Any]] = {}
    for h in history:
        tries[h.try_number] = {"try_number": h.try_number, "state": _state(h.state), "start": h.start_date,
                               "end": h.end_date, "duration": h.duration, "hostname": h.hostname, "current": False}
    if ti.try_number > 0:
        tries[ti.try_number] = {"try_number": ti.try_number, "state": _state(ti.state), "start": ti.start_date,
                                "end": ti.end_date, "duration": ti.duration, "hostname": ti.hostname,
                                "current": True}
    for t in tries.values():
        t["href"] = url_for("ui.ti_page", dag_id=dag_id, run_id=run_id, task_id=task_id,
                            **_map_args(ti.map_index), **{"try": t["try_number"]})
    chosen = _int_arg("try", ti.try_number or max(tries, default=0), 0, 1_000_000)
    log = None
    live = False
    offset = 0
    skipped = False
    if chosen > 0:
        read = _read_log(dag_id, run_id, task_id, ti.map_index, chosen, -1, LOG_PAGE_BYTES)
        live = chosen == ti.try_number and _state(ti.state) in LIVE_TI_STATES
        if read is not None:
            log, offset, skipped = read
    task = info.tasks.get(task_id)
    rendered: list[tuple[str, str]] = []
    rendered_note = ""
    if ti.rendered_fields:
        rendered = [(k, _show_value(v)) for k, v in sorted(ti.rendered_fields.items())]
    elif task and task.get("templates"):
        rendered = [(k, _show_value(v)) for k, v in task["templates"].items()]
        rendered_note = "Not rendered yet: these are the templates as written in the DAG file."
    log_args: dict[str, Any] = {"map_index": ti.map_index, "try": chosen}
    log_url = url_for("ui.ti_log_json", dag_id=dag_id, run_id=run_id, task_id=task_id, **log_args) if chosen else None
    return _render(
        "ti.html", info=info, tab=None, run=run, ti=ti, task=task, tries=sorted(tries.values(), key=lambda t: t["try_number"]),
        chosen=chosen, log=log, log_offset=offset, log_live=live, log_skipped=skipped, log_url=log_url,
        rendered=rendered, rendered_note=rendered_note,
        xcoms=[(x.key, _show_value(x.value), x.timestamp) for x in xcoms], siblings=siblings,
        map_args=_map_args(ti.map_index),
        poll_url=url_for("ui.dag_grid_json", dag_id=dag_id, run_id=run_id),
    )


@ui.get("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/log.json")
@requires("read")
def ti_log_json(dag_id: str, run_id: str, task_id: str) -> Response:
    """``{"text", "offset", "live", "state"}``: the try's log from byte ``offset`` (what was written since);
    ``live`` while the try may still write."""
    try:
        map_index = int(request.args.get("map_index") or -1)
        try_number = int(request.args["try"])
        offset = int(request.args.get("offset") or 0)
    except (KeyError, ValueError):
        return _json({"error": "try (a number) is required; map_index and offset must be numbers"}, 400)
    if offset < 0 or try_number < 1:
        return _json({"error": "offset must be >= 0 and try >= 1"}, 400)
    if max(abs(map_index), try_number, offset) >= 2**62:
        return _json({"error": "map_index, try and offset must be smaller numbers"}, 400)
    with read_session() as session:
        ti = session.scalar(select(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id,
            TaskInstance.map_index == map_index))
    if ti is None:
        return _json({"error": f"task {task_id!r} has no task instance in run {run_id!r} of DAG {dag_id!r}"}, 404)
    live = try_number == ti.try_number and _state(ti.state) in LIVE_TI_STATES
    read = _read_log(dag_id, run_id, task_id, map_index, try_number, offset, LOG_CHUNK_BYTES)
    text, new_offset = ("", offset) if read is None else read[:2]
    return _json({"text": text, "offset": new_offset, "live": live, "state": _state(ti.state)})


# --- actions ---------------------------------------------------------------------------------------

TI_MARK_STATES = ("success", "failed")
RUN_MARK_STATES = ("success", "failed", "queued")


def _flag(name: str) -> bool:
    return (request.values.get(name) or "") in ("1", "on", "true", "yes")


def _exact(task_id: str) -> str:
    return "^(?:" + re.escape(task_id) + ")$"


@ui.route("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/clear", methods=["GET", "POST"])
@requires("edit")
def ti_clear(dag_id: str, run_id: str, task_id: str) -> Any:
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops
    from scheduler.serialization import SerializedDAG

    options: dict[str, Any] = {"include_upstream": _flag("upstream"), "include_downstream": _flag("downstream"),
               "only_failed": _flag("only_failed")}
    post = request.method == "POST"
    with (write_session() if post else read_session()) as session:
        info = _load_dag(session, dag_id)
        run = _load_run(session, dag_id, run_id)
        if task_id not in info.tasks:
            _not_found(f"Task {task_id!r} is not in DAG {dag_id!r}.")
        structure = ti_ops.structure_from_serialized(SerializedDAG.from_dict(info.data))
        tis = ti_ops.clear_task_instances(session, dag_id, dag_structure=structure, now=utcnow(), run_ids=[run_id],
                                          task_regex=_exact(task_id), dry_run=not post, **options)
        if post:
            _audit(session, "task_instances.clear", dag_id=dag_id, run_id=run_id, task_id=task_id,
                   extra={**options, "cleared": len(tis)})
        preview = [(ti.task_id, ti.map_index, _state(ti.state)) for ti in tis]
    if post:
        flash(f"Cleared {len(preview)} task instance{'' if len(preview) == 1 else 's'}.", "success")
        return redirect(url_for("ui.run_page", dag_id=dag_id, run_id=run_id))
    hidden = {"upstream": "1" if options["include_upstream"] else "",
              "downstream": "1" if options["include_downstream"] else "",
              "only_failed": "1" if options["only_failed"] else ""}
    return _render("dag_confirm.html", info=info, tab=None, run=run, action=f"Clear {task_id}",
                   explanation="These task instances go back to no state and run again; a finished run is queued again.",
                   changes=[(t, m, s, "none") for t, m, s in preview], hidden=hidden,
                   back=url_for("ui.ti_page", dag_id=dag_id, run_id=run_id, task_id=task_id))


@ui.route("/dags/<dag_id>/runs/<run_id>/tasks/<task_id>/mark/<state>", methods=["GET", "POST"])
@requires("edit")
def ti_mark(dag_id: str, run_id: str, task_id: str, state: str) -> Any:
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops

    if state not in TI_MARK_STATES:
        _not_found(f"A task instance can be marked {' or '.join(TI_MARK_STATES)}, not {state!r}.")
    map_index = _map_index_arg()
    post = request.method == "POST"
    with (write_session() if post else read_session()) as session:
        info = _load_dag(session, dag_id)
        run = _load_run(session, dag_id, run_id)
        ti = _load_ti(session, dag_id, run_id, task_id, -1 if map_index is None else map_index)
        before = _state(ti.state)
        if post:
            ti_ops.mark_task_instance(session, ti.id, state, now=utcnow())
            _audit(session, "task_instance.mark", dag_id=dag_id, run_id=run_id, task_id=task_id,
                   extra={"state": state, "map_index": ti.map_index})
        index = ti.map_index
    back = url_for("ui.ti_page", dag_id=dag_id, run_id=run_id, task_id=task_id,
                   **_map_args(index))
    if post:
        flash(f"Marked {task_id} {state}.", "success")
        return redirect(back)
    changes = [] if before == state else [(task_id, index, before, state)]
    return _render("dag_confirm.html", info=info, tab=None, run=run, action=f"Mark {task_id} {state}",
                   explanation="Only this task instance changes; the scheduler then decides its downstream tasks.",
                   changes=changes, hidden={"map_index": str(index)}, back=back)


def _run_mark_preview(tis: Sequence[TaskInstance], state: str) -> list[tuple[str, int, str, str]]:
    """What ``ti_ops.mark_dag_run`` will change (its documented rules), without changing anything."""
    changes = []
    for ti in tis:
        now_state = _state(ti.state)
        if state == "queued":
            new = "none"
        elif now_state in FINISHED:
            continue
        elif state == "success":
            new = "success"
        else:
            new = "failed" if now_state == "running" else "skipped"
        changes.append((ti.task_id, ti.map_index, now_state, new))
    return changes


@ui.route("/dags/<dag_id>/runs/<run_id>/mark/<state>", methods=["GET", "POST"])
@requires("edit")
def run_mark(dag_id: str, run_id: str, state: str) -> Any:
    from scheduler.clock import utcnow
    from scheduler.db import ti_ops
    from scheduler.serialization import SerializedDAG

    if state not in RUN_MARK_STATES:
        _not_found(f"A run can be marked {', '.join(RUN_MARK_STATES)}, not {state!r}.")
    post = request.method == "POST"
    with (write_session() if post else read_session()) as session:
        info = _load_dag(session, dag_id)
        run = _load_run(session, dag_id, run_id)
        before = _state(run.state)
        if post:
            structure = ti_ops.structure_from_serialized(SerializedDAG.from_dict(info.data)) if info.data else None
            ti_ops.mark_dag_run(session, dag_id, run_id, state, now=utcnow(), dag_structure=structure)
            _audit(session, "dag_run.mark", dag_id=dag_id, run_id=run_id, extra={"state": state})
            changes = []
        else:
            tis = _tis_of(session, dag_id, [run_id])
            tis.sort(key=lambda ti: (ti.task_id, ti.map_index))
            changes = _run_mark_preview(tis, state)
        session.expunge(run)
    if post:
        flash(f"Marked run {run_id} {state}.", "success")
        return redirect(url_for("ui.run_page", dag_id=dag_id, run_id=run_id))
    explanation = {
        "success": "The run becomes success; its unfinished task instances become success (finished ones keep their state).",
        "failed": "The run becomes failed; running task instances become failed and other unfinished ones skipped.",
        "queued": "Every task instance is cleared and the run is queued to run again from the start.",
    }[state]
    return _render("dag_confirm.html", info=info, tab=None, run=run, action=f"Mark run {run_id} {state}",
                   explanation=f"Run state: {before} → {state}. {explanation}", changes=changes, hidden={},
                   back=url_for("ui.run_page", dag_id=dag_id, run_id=run_id))

