"""The clear and mark actions of the task instance and run pages.

They need ``edit``: a GET shows what will change, the POST (with the session's CSRF token, checked in
``webserver.app``) does it, through the same functions as the CLI (``scheduler.db.ti_ops``), and leaves
an audit row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from flask import flash, redirect, request, url_for

from scheduler.db.models import TaskInstance
from webserver.auth import requires
from webserver.db import read_session, write_session
from webserver.ui_runs import (
    FINISHED,
    _audit,
    _load_dag,
    _load_run,
    _load_ti,
    _map_args,
    _map_index_arg,
    _not_found,
    _render,
    _state,
    _tis_of,
)
from webserver.views import ui

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

