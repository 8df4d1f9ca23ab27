"""The DAG pages of the UI (code, run history, the grid's JSON), the run and task instance pages,
their JSON refresh and log-tail endpoints, and the helpers the other DAG pages share: the grid is
``webserver.ui_grid``, the graph, Gantt and durations ``webserver.ui_charts``, the clear and mark
actions ``webserver.ui_actions``.

Every page is a server-rendered, autoescaped template; nothing here marks text as safe. Running
states on the run and task instance pages are refreshed in place by ``static/dag.js`` from
``grid.json``; a try's log is tailed from ``log.json`` with a byte offset.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import (
    Response,
    abort,
    current_app,
    make_response,
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
from webserver.db import read_session
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


