"""UI pages for DAGs as a whole: the DAG list (``/``), pause and unpause, the trigger form, the list's status feed.

The list filters, counts and pages in SQL (``PAGE_SIZE`` DAGs a page) and reads the recent runs of the
page's DAGs in one query, so it costs the same with ten DAGs or ten thousand. ``static/dags.js`` polls
``/ui/dags/status`` to refresh the run dots in place; without JavaScript the page is complete as served.

The trigger form is built from the DAG's Params: one typed input per param (checkbox, number, select,
text, lines or JSON), plus a raw JSON conf whose keys are added to (and override) the fields. Values are
checked with the same ``Param.resolve`` the CLI and the REST API use.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from flask import Response, flash, jsonify, redirect, render_template, request
from sqlalchemy import ColumnElement, String, bindparam, exists, func, literal, or_, select, union_all

from scheduler.db.models import Dag, DagRun, ParseImportError
from scheduler.serialization import ordered_params
from webserver.auth import ROLES, requires
from webserver.db import read_session, write_session
from webserver.views import _safe_next, ui

#: DAGs on one page of the list.
PAGE_SIZE = 50
#: Runs shown as dots per DAG, newest last.
RECENT_RUNS = 10
#: Import errors shown in the banner (the rest are counted).
BANNER_ERRORS = 50
#: The most DAG ids one status request may ask for.
MAX_STATUS_IDS = 100
#: Filter values of ``status``.
STATUSES = ("all", "active", "paused")


# --- small helpers -----------------------------------------------------------------------------


def dag_url(dag_id: str) -> str:
    return "/dags/" + quote(dag_id, safe="")


def run_url(dag_id: str, run_id: str) -> str:
    return f"{dag_url(dag_id)}/runs/{quote(run_id, safe='')}"


def shown_time(value: datetime | None) -> str:
    """A UTC datetime as the UI shows it: ``2024-01-31 06:00 UTC`` (empty for None)."""
    if value is None:
        return ""
    from datetime import UTC

    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def can_edit() -> bool:
    from webserver.login import current_user

    user = current_user()
    return user is not None and "edit" in ROLES.get(user.role, frozenset())


def _audit(session: Any, event: str, *, dag_id: str, run_id: str | None = None, extra: Any = None) -> None:
    """Record a change made in the UI in the ``log`` table (event ``ui.<event>``)."""
    from scheduler.audit import record_event
    from webserver.login import current_user

    record_event(session, f"ui.{event}", owner=getattr(current_user(), "username", None), dag_id=dag_id,
                 run_id=run_id, extra=extra)


def _not_found(what: str) -> Any:
    return render_template("error.html", title="Not Found", detail=what), 404


@ui.app_context_processor
def _template_user() -> dict[str, Any]:
    """``user`` for base.html on every page (a view's own ``user=`` wins)."""
    from webserver.login import current_user

    return {"user": current_user()}


# --- the list's query ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilter:
    """What the list shows: a search text, tags (any of them), active/paused, a page (from 1)."""

    search: str = ""
    tags: tuple[str, ...] = ()
    status: str = "all"
    page: int = 1

    @classmethod
    def from_args(cls, args: Any) -> ListFilter:
        status = args.get("status", "all")
        try:
            page = min(max(1, int(args.get("page", "1"))), 1_000_000)  # an offset the database can take
        except ValueError:
            page = 1
        tags = tuple(dict.fromkeys(t.strip() for t in args.getlist("tags") if t.strip()))
        return cls(search=args.get("search", "").strip()[:250], tags=tags,
                   status=status if status in STATUSES else "all", page=page)

    def url(self, **changes: Any) -> str:
        """The list's URL for this filter with ``changes`` (a changed filter goes back to page 1)."""
        values = {"search": self.search, "tags": self.tags, "status": self.status, "page": 1, **changes}
        return _list_url(values["search"], tuple(values["tags"]), values["status"], values["page"])


@functools.lru_cache(maxsize=4096)
def _list_url(search: str, tags: tuple[str, ...], status: str, page: int) -> str:
    """(Each row's tag links ask for the same few URLs on every page: built once each.)"""
    pairs: list[tuple[str, Any]] = []
    if search:
        pairs.append(("search", search))
    pairs.extend(("tags", t) for t in tags)
    if status != "all":
        pairs.append(("status", status))
    if page != 1:
        pairs.append(("page", page))
    return "/?" + urlencode(pairs) if pairs else "/"


def _has_tag(param: str, dialect: str) -> ColumnElement[bool]:
    """``dag.tags`` (a JSON list) contains the tag bound as ``param``: JSONB containment on PostgreSQL
    (the value bound: a JSON list of the tag, see :func:`_list_params`), json_each on SQLite."""
    if dialect == "postgresql":
        from sqlalchemy import cast
        from sqlalchemy.dialects.postgresql import JSONB

        return Dag.tags.op("@>")(cast(bindparam(param, type_=String), JSONB))  # type: ignore[no-any-return]
    each = func.json_each(Dag.tags).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == bindparam(param, type_=String)))


#: What a row of the list shows of a DAG (plain rows: loading 50 ORM objects cost more than the query).
_LIST_COLUMNS = (Dag.dag_id, Dag.is_paused, Dag.owners, Dag.description, Dag.tags, Dag.has_import_errors,
                 Dag.schedule_error, Dag.timetable_summary, Dag.timetable_description, Dag.next_dagrun)
#: The other queries of the list page (built once: building and compiling statements cost more than running them).
_ALL_TAGS = select(Dag.tags).where(Dag.is_active.is_(True)).distinct()  # few distinct lists
_ERRORS = select(ParseImportError).order_by(ParseImportError.filename).limit(BANNER_ERRORS)
_ERROR_COUNT = select(func.count()).select_from(ParseImportError)


@functools.lru_cache(maxsize=64)
def _list_statements(dialect: str, search: bool, tag_count: int, status: str) -> tuple[Any, Any]:
    """(active DAGs matching the filters counted by is_paused, one page of them) for filters of this shape,
    built once; the values are bound by name (:func:`_list_params`)."""
    base: Any = select(*_LIST_COLUMNS).where(Dag.is_active.is_(True))
    if search:
        pattern = bindparam("pattern", type_=String)
        base = base.where(or_(func.lower(Dag.dag_id).like(pattern, escape="/"),
                              func.lower(Dag.owners).like(pattern, escape="/")))
    if tag_count:
        base = base.where(or_(*(_has_tag(f"tag_{index}", dialect) for index in range(tag_count))))
    matching = base.subquery()
    counts = select(matching.c.is_paused, func.count()).group_by(matching.c.is_paused)
    page = base if status == "all" else base.where(Dag.is_paused.is_(status == "paused"))
    return counts, page.order_by(Dag.dag_id).limit(bindparam("limit")).offset(bindparam("offset"))


def _list_params(filters: ListFilter, dialect: str) -> dict[str, Any]:
    """The values :func:`_list_statements` binds: the search as a LIKE pattern (``/`` escapes), the tags."""
    params: dict[str, Any] = {}
    if filters.search:
        needle = filters.search.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
        params["pattern"] = f"%{needle}%"
    for index, tag in enumerate(filters.tags):
        params[f"tag_{index}"] = json.dumps([tag]) if dialect == "postgresql" else tag
    return params


@dataclass(frozen=True)
class RunDot:
    """One recent run, as a dot in the list and in the status feed."""

    run_id: str
    state: str
    run_type: str
    logical_date: datetime | None
    url: str

    @property
    def when(self) -> str:
        return shown_time(self.logical_date)

    def record(self) -> dict[str, Any]:
        from scheduler.clock import isoformat

        return {"run_id": self.run_id, "state": self.state, "run_type": self.run_type,
                "logical_date": isoformat(self.logical_date), "when": self.when, "url": self.url}


@functools.lru_cache(maxsize=16)
def _recent_runs_statement(count: int, per_dag: int) -> Any:
    """The UNION ALL of ``count`` per-DAG parts, DAG ids bound as ``dag_0``..: built once per page size
    (building 50 subqueries cost more than running them)."""
    columns = (DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.run_type, DagRun.logical_date,
               DagRun.run_after, DagRun.id)
    parts = [
        select(part) for part in (
            select(*columns).where(DagRun.dag_id == bindparam(f"dag_{index}"))
            .order_by(DagRun.run_after.desc(), DagRun.id.desc()).limit(per_dag).subquery()
            for index in range(count)
        )
    ]
    return parts[0] if count == 1 else union_all(*parts)


def recent_runs(session: Any, dag_ids: list[str], *, per_dag: int = RECENT_RUNS) -> dict[str, list[RunDot]]:
    """The newest ``per_dag`` runs of each DAG (by run_after), oldest first: one query for all the DAGs.

    Each DAG's runs come from its own ``ORDER BY run_after DESC LIMIT n`` (the (dag_id, run_after) index),
    glued with UNION ALL, so a DAG with a long history costs no more than one with a short one.
    """
    if not dag_ids:
        return {}
    statement = _recent_runs_statement(len(dag_ids), per_dag)
    out: dict[str, list[RunDot]] = {dag_id: [] for dag_id in dag_ids}
    params = {f"dag_{index}": dag_id for index, dag_id in enumerate(dag_ids)}
    rows = sorted(session.execute(statement, params), key=lambda r: (r.dag_id, r.run_after, r.id))
    for row in rows:
        out[row.dag_id].append(RunDot(
            run_id=row.run_id, state=str(getattr(row.state, "value", row.state)),
            run_type=str(getattr(row.run_type, "value", row.run_type)), logical_date=row.logical_date,
            url=run_url(row.dag_id, row.run_id),
        ))
    return out


@dataclass
class DagRow:
    """One line of the list (``dag``: a row of the columns it shows)."""

    dag: Any
    runs: list[RunDot]
    url: str = ""
    owners: list[str] = field(default_factory=list)
    next_run: str = ""

    @property
    def last_run(self) -> RunDot | None:
        return self.runs[-1] if self.runs else None


@dataclass
class DagListPage:
    filters: ListFilter
    rows: list[DagRow]
    total: int
    counts: dict[str, int]
    pages: int
    all_tags: list[str]
    import_errors: list[ParseImportError]
    import_error_count: int

    @property
    def first(self) -> int:
        return 0 if not self.rows else (self.filters.page - 1) * PAGE_SIZE + 1

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0


def load_dag_list(session: Any, filters: ListFilter) -> DagListPage:
    """Everything the list page shows, in a fixed number of queries whatever the number of DAGs."""
    dialect = session.get_bind().dialect.name
    count_statement, page_statement = _list_statements(dialect, bool(filters.search), len(filters.tags),
                                                       filters.status)
    params = _list_params(filters, dialect)
    by_paused = {bool(paused): n for paused, n in session.execute(count_statement, params).all()}
    counts = {"active": by_paused.get(False, 0), "paused": by_paused.get(True, 0)}
    counts["all"] = counts["active"] + counts["paused"]
    total = counts[filters.status]
    pages = max(1, math.ceil(total / PAGE_SIZE))
    if filters.page > pages:
        filters = ListFilter(filters.search, filters.tags, filters.status, pages)
    dags = session.execute(page_statement, {**params, "limit": PAGE_SIZE,
                                            "offset": (filters.page - 1) * PAGE_SIZE}).all()
    runs = recent_runs(session, [d.dag_id for d in dags])
    rows = [DagRow(dag=d, runs=runs.get(d.dag_id, []), url=dag_url(d.dag_id),
                   owners=[name.strip() for name in (d.owners or "").split(",") if name.strip()],
                   next_run=shown_time(d.next_dagrun)) for d in dags]
    all_tags: set[str] = set()
    for tags in session.scalars(_ALL_TAGS):
        all_tags.update(str(t) for t in tags or ())
    errors = list(session.scalars(_ERRORS))
    # Fewer than a banner's worth: that is all of them (no need to count).
    error_count = len(errors) if len(errors) < BANNER_ERRORS else session.scalar(_ERROR_COUNT) or 0
    return DagListPage(filters=filters, rows=rows, total=total, counts=counts, pages=pages,
                       all_tags=sorted(all_tags), import_errors=errors, import_error_count=error_count)


def dag_list() -> Any:
    """GET / (the home page): the DAG list. Registered in webserver.views, which guards it with read."""
    filters = ListFilter.from_args(request.args)
    with read_session() as session:
        page = load_dag_list(session, filters)
    return render_template("dags.html", page=page, can_edit=can_edit(), here=request.full_path.rstrip("?"))


# --- the status feed ----------------------------------------------------------------------------


@ui.get("/ui/dags/status")
@requires("read")
def dags_status() -> Any:
    """``?ids=a,b,c``: for each known DAG, is_paused, next run, last run and recent runs (JSON)."""
    from scheduler.clock import isoformat

    ids = list(dict.fromkeys(i.strip() for i in request.args.get("ids", "").split(",") if i.strip()))
    if len(ids) > MAX_STATUS_IDS:
        return jsonify({"detail": f"at most {MAX_STATUS_IDS} DAG ids per request, got {len(ids)}"}), 400
    with read_session() as session:
        dags = list(session.scalars(select(Dag).where(Dag.dag_id.in_(ids)))) if ids else []
        runs = recent_runs(session, [d.dag_id for d in dags])
        body = {
            d.dag_id: {
                "is_paused": bool(d.is_paused),
                "next_dagrun": isoformat(d.next_dagrun),
                "next_run": shown_time(d.next_dagrun),
                "last_run": runs[d.dag_id][-1].record() if runs[d.dag_id] else None,
                "recent_runs": [r.record() for r in runs[d.dag_id]],
            }
            for d in dags
        }
    response: Response = jsonify({"dags": body})
    response.headers["Cache-Control"] = "no-store"
    return response


# --- pause and unpause --------------------------------------------------------------------------


def _set_paused(dag_id: str, paused: bool) -> Any:
    with write_session() as session:
        dag = session.get(Dag, dag_id)
        if dag is None:
            return _not_found(f"There is no DAG {dag_id}.")
        if dag.is_paused != paused:
            dag.is_paused = paused
            _audit(session, "dag.pause" if paused else "dag.unpause", dag_id=dag_id)
    return redirect(_safe_next(request.form.get("next")))


@ui.post("/dags/<dag_id>/pause")
@requires("edit")
def pause_dag(dag_id: str) -> Any:
    return _set_paused(dag_id, True)


@ui.post("/dags/<dag_id>/unpause")
@requires("edit")
def unpause_dag(dag_id: str) -> Any:
    return _set_paused(dag_id, False)


# --- the trigger form ---------------------------------------------------------------------------


@dataclass
class ParamField:
    """One input of the trigger form, made from a Param's default and JSON schema."""

    name: str
    kind: str  #: boolean, integer, number, string, date, enum, lines or json
    default: Any
    schema: dict[str, Any]
    description: str | None
    nullable: bool
    index: int
    value: str = ""  #: the input's text (as submitted, on a re-rendered form)
    checked: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)  #: (JSON value, label) for enum
    error: str | None = None

    @property
    def input_name(self) -> str:
        return f"param:{self.name}"

    @property
    def input_id(self) -> str:
        return f"param-{self.index}"

    @property
    def title(self) -> str:
        return str(self.schema.get("title") or self.name)

    def show(self, value: Any) -> None:
        """Fill the input with a Python value (the default)."""
        if value is None:
            self.value, self.checked = "", False
        elif self.kind == "boolean":
            self.checked = bool(value)
        elif self.kind == "enum":
            self.value = json.dumps(value)
        elif self.kind == "lines":
            self.value = "\n".join(str(v) for v in value) if isinstance(value, list) else json.dumps(value)
        elif self.kind == "json" or not isinstance(value, (str, int, float)):
            self.value = json.dumps(value, indent=2)
        else:
            self.value = str(value)

    def take(self, form: Any) -> Any:
        """The submitted value, converted to the param's type; ValueError with a message for the user."""
        raw = form.getlist(self.input_name)
        if self.kind == "boolean":
            self.checked = bool(raw) and raw[-1] in ("true", "on")
            return self.checked
        text = raw[-1] if raw else ""
        self.value = text
        if not text.strip() and self.kind != "string":
            if self.nullable:
                return None
            if self.kind == "lines":
                return []
            raise ValueError("Enter a value.")
        if not text and self.nullable:
            return None
        if self.kind == "integer":
            try:
                return int(text.strip())
            except ValueError:
                raise ValueError(f"{text.strip()!r} is not a whole number.") from None
        if self.kind == "number":
            try:
                number = float(text.strip())
            except ValueError:
                raise ValueError(f"{text.strip()!r} is not a number.") from None
            if not math.isfinite(number):
                raise ValueError("Enter a finite number.")
            return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
        if self.kind == "enum":
            try:
                choice = json.loads(text)
            except ValueError:
                raise ValueError("Choose one of the listed values.") from None
            if choice not in self.schema.get("enum", []):
                raise ValueError("Choose one of the listed values.")
            return choice
        if self.kind == "lines":
            return [line.strip() for line in text.splitlines() if line.strip()]
        if self.kind == "json":
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"Not valid JSON: {exc}.") from None
        return text


_JSON_KINDS = {"boolean": "boolean", "integer": "integer", "number": "number", "string": "string",
               "array": "lines", "object": "json"}


def _kind_of(default: Any, schema: dict[str, Any]) -> tuple[str, bool]:
    """(input kind, accepts null) for a param."""
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else list(declared or [])
    nullable = "null" in types or (not types and default is None and "enum" not in schema)
    types = [t for t in types if t != "null"]
    if "enum" in schema:
        return "enum", None in schema["enum"]
    if not types:  # untyped: keep the default's type
        for python_type, kind in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
            if isinstance(default, python_type):
                return kind, nullable
        return ("json" if default is not None else "string"), nullable
    if len(types) > 1:
        return "json", nullable
    kind = _JSON_KINDS.get(types[0], "json")
    if kind == "string" and schema.get("format") == "date":
        kind = "date"
    if kind == "lines":
        items = schema.get("items") or {}
        strings = items.get("type") == "string" or (
            not items and all(isinstance(v, str) for v in (default if isinstance(default, list) else []))
        )
        kind = "lines" if strings else "json"
    return kind, nullable


def param_fields(params_data: dict[str, Any]) -> list[ParamField]:
    """The trigger form's inputs for a serialized DAG's ``params`` (``ParamsDict.dump()``), filled with defaults."""
    fields = []
    for index, (name, data) in enumerate(params_data.items()):
        schema = dict(data.get("schema") or {})
        default = data.get("default") if data.get("has_default", True) else None
        kind, nullable = _kind_of(default, schema)
        item = ParamField(name=name, kind=kind, default=default, schema=schema, index=index,
                          description=data.get("description") or schema.get("description"), nullable=nullable)
        if kind == "enum":
            item.options = [(json.dumps(v), "" if v is None else str(v)) for v in schema["enum"]]
        item.show(default)
        fields.append(item)
    return fields


@dataclass
class TriggerForm:
    dag: Dag
    fields: list[ParamField]
    conf: str = ""
    run_id: str = ""
    logical_date: str = ""
    errors: dict[str, str] = field(default_factory=dict)  #: conf, run_id, logical_date, form


def _trigger_context(dag_id: str) -> tuple[Dag, dict[str, Any]] | None:
    """The active DAG's row (detached) and serialized data; None when it is unknown, inactive or never parsed."""
    from scheduler.db import store

    with read_session() as session:
        dag = store.get_dag(session, dag_id)
        data = store.get_serialized_dag(session, dag_id) if dag is not None and dag.is_active else None
        if dag is None or data is None:
            return None
        session.expunge(dag)
    return dag, data


@ui.route("/dags/<dag_id>/trigger", methods=["GET", "POST"])
@requires("edit")
def trigger_dag(dag_id: str) -> Any:
    found = _trigger_context(dag_id)
    if found is None:
        return _not_found(f"There is no active DAG {dag_id}.")
    dag, data = found
    form = TriggerForm(dag=dag, fields=param_fields(ordered_params(data)))
    if request.method == "POST":
        created = _submit_trigger(form, data)
        if created is not None:
            note = " It is paused: the run starts once the DAG is unpaused." if dag.is_paused else ""
            flash(f"Triggered DAG {dag.dag_id}: run {created} is queued.{note}", "success")
            return redirect(dag_url(dag.dag_id))
        return render_template("trigger.html", form=form), 400
    return render_template("trigger.html", form=form)


def _submit_trigger(form: TriggerForm, data: dict[str, Any]) -> str | None:
    """Validate the posted form into ``form`` and create the run; its run_id, or None with ``form.errors`` set."""
    from scheduler.authoring.params import NOTSET
    from scheduler.clock import parse_datetime, utcnow
    from scheduler.db import store
    from scheduler.exceptions import ParamValidationError
    from scheduler.serialization import SerializedDAG
    from scheduler.states import DagRunState, DagRunType

    posted = request.form
    conf: dict[str, Any] = {}
    for item in form.fields:
        try:
            conf[item.name] = item.take(posted)
        except ValueError as exc:
            item.error = str(exc)
    form.conf = posted.get("conf", "")
    extra: dict[str, Any] = {}
    if form.conf.strip():
        try:
            extra = json.loads(form.conf)
        except ValueError as exc:
            form.errors["conf"] = f"The conf is not valid JSON: {exc}."
        else:
            if not isinstance(extra, dict):
                form.errors["conf"] = f"The conf must be a JSON object, not {type(extra).__name__}."
                extra = {}
    conf.update(extra)
    form.run_id = posted.get("run_id", "")
    run_id = form.run_id.strip()
    if len(run_id) > 250:
        form.errors["run_id"] = "A run id is at most 250 characters long."
    else:
        from scheduler.identifiers import run_id_problem

        if run_id and (reason := run_id_problem(run_id)) is not None:
            form.errors["run_id"] = reason[0].upper() + reason[1:] + "."
    form.logical_date = posted.get("logical_date", "")
    now = utcnow()
    logical_date = now
    if form.logical_date.strip():
        try:
            logical_date = parse_datetime(form.logical_date)
        except ValueError as exc:
            form.errors["logical_date"] = str(exc)
    sdag = SerializedDAG.from_dict(data)
    params = sdag.params
    by_name = {item.name: item for item in form.fields}
    for name, param in params.params().items():
        typed = by_name.get(name)
        if name in extra or (typed is not None and typed.error is None):
            try:
                param.resolve(conf.get(name, NOTSET), name=name)
            except ParamValidationError as exc:
                if name in extra or typed is None:
                    form.errors.setdefault("conf", str(exc))
                else:
                    typed.error = str(exc)
    if form.errors or any(item.error for item in form.fields):
        return None
    try:
        params.resolve(conf, dag_id=sdag.dag_id)
    except ParamValidationError as exc:
        form.errors["form"] = str(exc)
        return None
    run_id = run_id or f"manual__{logical_date.isoformat()}"
    with write_session() as session:
        try:
            store.create_dag_run(
                session, dag_id=sdag.dag_id, run_id=run_id, run_type=DagRunType.MANUAL, logical_date=logical_date,
                data_interval=sdag.timetable.infer_manual_data_interval(run_after=logical_date), conf=conf,
                state=DagRunState.QUEUED, run_after=now, now=now, external_trigger=True,
            )
        except store.DagRunAlreadyExists as exc:
            form.errors["run_id"] = str(exc)
            return None
        _audit(session, "dag_run.trigger", dag_id=sdag.dag_id, run_id=run_id, extra={"conf": conf})
    return run_id
