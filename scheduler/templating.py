"""The Jinja context of a task try and the rendering of its templated fields.

Pure: no database, no processes; the only I/O is reading template files (``script.sh``)
from the DAG's folder and ``template_searchpath``. Jinja2 is imported inside functions
so that ``import scheduler`` stays light.

Context keys follow Airflow's, with one deliberate difference: ``conf`` is the run's
conf dict (in Airflow it is the configuration object); the same dict is also
``dag_run.conf``. ``prev_*`` / ``next_*`` keys are not provided.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from scheduler.exceptions import TemplateError, UpdraftError
from scheduler.runtime import RuntimeDagRun, RuntimeTaskInstance
from scheduler.serialization import to_jsonable

if TYPE_CHECKING:
    import jinja2

    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.authoring.dag import DAG

logger = logging.getLogger(__name__)

_MISSING: Any = object()


class VariableNotFound(UpdraftError, LookupError):
    """``var.value.KEY`` / ``var.json.KEY`` named a variable that does not exist (and gave no default)."""

    def __init__(self, key: str, reason: str = "does not exist") -> None:
        self.key = key
        super().__init__(f"Variable '{key}' {reason}")


# --- date helpers (also the ds/ts filters and macros) ----------------------------------------


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} where an aware one is required")
    return value.astimezone(UTC)


def ds(value: datetime) -> str:
    """``YYYY-MM-DD`` of the instant in UTC."""
    return _utc(value).strftime("%Y-%m-%d")


def ds_nodash(value: datetime) -> str:
    return _utc(value).strftime("%Y%m%d")


def ts(value: datetime) -> str:
    """ISO 8601 in UTC with offset: ``2024-01-31T06:00:00+00:00``."""
    return _utc(value).isoformat()


def ts_nodash(value: datetime) -> str:
    return _utc(value).strftime("%Y%m%dT%H%M%S")


def ts_nodash_with_tz(value: datetime) -> str:
    return ts(value).replace("-", "").replace(":", "")


def ds_add(ds: str, days: int) -> str:
    """``ds_add("2015-01-01", 5)`` -> ``"2015-01-06"``; days may be negative."""
    if not days:
        return ds
    return (datetime.strptime(ds, "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    """``ds_format("2015-01-01", "%Y-%m-%d", "%m-%d-%y")`` -> ``"01-01-15"``."""
    return datetime.strptime(str(ds), input_format).strftime(output_format)


FILTERS: dict[str, Callable[[datetime], str]] = {
    "ds": ds,
    "ds_nodash": ds_nodash,
    "ts": ts,
    "ts_nodash": ts_nodash,
    "ts_nodash_with_tz": ts_nodash_with_tz,
}

#: ``{{ macros.* }}``: the same names as Airflow's macros module, without dateutil.
MACROS = SimpleNamespace(
    datetime=datetime,
    timedelta=timedelta,
    time=time,
    uuid=uuid,
    random=random.random,
    json=json,
    ds_add=ds_add,
    ds_format=ds_format,
)


# --- variables ---------------------------------------------------------------------------------


class _VariableAccessor:
    """``var.value.KEY`` (text) or ``var.json.KEY`` (parsed JSON); ``.get(KEY, default)`` for a default."""

    def __init__(self, getter: Callable[[str], str | None] | None, as_json: bool) -> None:
        self._getter = getter
        self._as_json = as_json

    def get(self, key: str, default: Any = _MISSING) -> Any:
        raw = self._getter(key) if self._getter is not None else None
        if raw is None:
            if default is _MISSING:
                raise VariableNotFound(key)
            return default
        if not self._as_json:
            return raw
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise VariableNotFound(key, f"is not valid JSON: {exc}") from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return self.get(key)

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __repr__(self) -> str:
        return "var.json" if self._as_json else "var.value"


def _variables(getter: Callable[[str], str | None] | None) -> SimpleNamespace:
    return SimpleNamespace(value=_VariableAccessor(getter, False), json=_VariableAccessor(getter, True))


class _ConnectionAccessor:
    """``conn.ID`` / ``conn.get(ID)``: a Connection (``{{ conn.my_db.host }}``), read when first used.

    Without a getter it is :func:`scheduler.connections.get_connection` (the task's own process
    reads the database; its password and sensitive extras are masked in the log from then on).
    """

    def __init__(self, getter: Callable[[str], Any] | None) -> None:
        self._getter = getter

    def get(self, conn_id: str, default: Any = _MISSING) -> Any:
        getter = self._getter
        if getter is None:
            from scheduler.connections import get_connection

            getter = get_connection
        try:
            return getter(conn_id)
        except LookupError:
            if default is _MISSING:
                raise
            return default

    def __getattr__(self, conn_id: str) -> Any:
        if conn_id.startswith("__"):
            raise AttributeError(conn_id)
        return self.get(conn_id)

    def __getitem__(self, conn_id: str) -> Any:
        return self.get(conn_id)

    def __repr__(self) -> str:
        return "conn"


# --- the context ---------------------------------------------------------------------------------


class Context(dict[str, Any]):
    """The context dict; reading the deprecated ``execution_date`` logs a note."""

    def __getitem__(self, key: str) -> Any:
        if key == "execution_date":
            _note_execution_date()
        return super().__getitem__(key)


def _note_execution_date() -> None:
    logger.info("context key 'execution_date' is deprecated; use 'logical_date'")


def build_context(
    *,
    dag: DAG,
    task: BaseOperator,
    ti: RuntimeTaskInstance,
    run_id: str,
    logical_date: datetime,
    data_interval_start: datetime,
    data_interval_end: datetime,
    conf: Mapping[str, Any] | None,
    params: Mapping[str, Any],
    run_type: str = "manual",
    variables: Callable[[str], str | None] | None = None,
    dag_run: RuntimeDagRun | None = None,
    connections: Callable[[str], Any] | None = None,
) -> Context:
    """The Jinja / ``**context`` dict for one task try (Airflow's keys; dates in UTC).

    ``params`` are the already resolved values; ``variables`` looks up a Variable's text
    (None when it does not exist). When ``ti`` has no DAG run yet it gets ``dag_run``.
    """
    logical_date = _utc(logical_date)
    data_interval_start = _utc(data_interval_start)
    data_interval_end = _utc(data_interval_end)
    run_conf = dict(conf or {})
    if dag_run is None:
        dag_run = RuntimeDagRun(
            dag_id=dag.dag_id,
            run_id=run_id,
            logical_date=logical_date,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
            run_type=str(run_type),
            conf=run_conf,
        )
    if ti.dag_run is None:
        ti.dag_run = dag_run
    date_ds = ds(logical_date)
    return Context(
        dag=dag,
        task=task,
        ti=ti,
        task_instance=ti,
        run_id=run_id,
        dag_run=dag_run,
        conf=run_conf,
        params=dict(params),
        macros=MACROS,
        var=_variables(variables),
        conn=_ConnectionAccessor(connections),
        logical_date=logical_date,
        execution_date=logical_date,
        data_interval_start=data_interval_start,
        data_interval_end=data_interval_end,
        ds=date_ds,
        ds_nodash=ds_nodash(logical_date),
        ts=ts(logical_date),
        ts_nodash=ts_nodash(logical_date),
        ts_nodash_with_tz=ts_nodash_with_tz(logical_date),
        task_instance_key_str=f"{dag.dag_id}__{task.task_id}__{ds_nodash(logical_date)}",
        inlets=list(getattr(task, "inlets", []) or []),
        outlets=list(getattr(task, "outlets", []) or []),
        templates_dict=getattr(task, "templates_dict", None),
        expanded_ti_count=None,
        map_index_template=None,
        test_mode=False,
    )


def resolve_task_params(task: BaseOperator, conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``params`` a task sees: DAG params, overridden by the task's, overridden by the run's conf."""
    dag = task.dag
    merged = dag.params.merged(task.params) if len(task.params) else dag.params
    return merged.resolve(conf, dag_id=dag.dag_id)


# --- the Jinja environment ---------------------------------------------------------------------


#: The template environments made for each DAG object (native, plain), reused by its later renders
#: (a process renders with one DAG's environment many times: a try, ``dags test``, a spare runner that
#: made it ahead). Weak: a DAG that is dropped takes its environments with it.
_ENVIRONMENTS: weakref.WeakKeyDictionary[DAG, dict[bool, jinja2.Environment]] = weakref.WeakKeyDictionary()


def environment_for(dag: DAG) -> jinja2.Environment:
    """The environment ``render_template_fields`` uses for the tasks of ``dag`` (made once per DAG object)."""
    return _environment(dag, native=bool(dag.render_template_as_native_obj))


def _environment(dag: DAG | None, native: bool) -> jinja2.Environment:
    if dag is None:
        return _new_environment(None, native)
    made = _ENVIRONMENTS.setdefault(dag, {})
    env = made.get(native)
    if env is None:
        env = made[native] = _new_environment(dag, native)
    return env


def _new_environment(dag: DAG | None, native: bool) -> jinja2.Environment:
    import jinja2
    import jinja2.nativetypes

    searchpath: list[str] = []
    if dag is not None:
        folder = os.path.dirname(dag.fileloc) if dag.fileloc else ""
        searchpath = [folder or os.getcwd(), *dag.template_searchpath]
    options: dict[str, Any] = {
        "loader": jinja2.FileSystemLoader(searchpath),
        "undefined": jinja2.StrictUndefined,
        "extensions": ["jinja2.ext.do"],
    }
    if dag is not None:
        options.update(dag.jinja_environment_kwargs)
    env_class = jinja2.nativetypes.NativeEnvironment if native else jinja2.Environment
    env = env_class(**options)
    env.filters.update(FILTERS)
    if dag is not None:
        env.globals.update(dag.user_defined_macros)
        env.filters.update(dag.user_defined_filters)
    return env


def _is_template_file(task: BaseOperator, text: str) -> bool:
    return bool(task.template_ext) and text.endswith(tuple(task.template_ext))


def _where(task: BaseOperator, field: str | None) -> str:
    return f"task '{task.task_id}'" + (f", field '{field}'" if field else "")


def _render_text(
    env: jinja2.Environment, task: BaseOperator, text: str, context: Mapping[str, Any], field: str | None
) -> Any:
    import jinja2

    where = _where(task, field)
    from_file = _is_template_file(task, text)
    source = f" (template file '{text}')" if from_file else ""
    try:
        if from_file and os.path.isabs(text):
            loader = jinja2.FileSystemLoader(os.path.dirname(text))
            template = env.overlay(loader=loader).get_template(os.path.basename(text))
        elif from_file:
            template = env.get_template(text)
        else:
            if "execution_date" in text:
                _note_execution_date()
            template = env.from_string(text)
        return template.render(dict(context))
    except jinja2.TemplateNotFound as exc:
        paths = getattr(env.loader, "searchpath", [])
        raise TemplateError(f"{where}: template file '{exc.name}' not found in {paths}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: template syntax error{source} at line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{where}: {exc.message}{source}") from exc
    except TemplateError:
        raise
    except Exception as exc:
        raise TemplateError(f"{where}: rendering failed{source}: {type(exc).__name__}: {exc}") from exc


def _render_value(
    env: jinja2.Environment, task: BaseOperator, value: Any, context: Mapping[str, Any], field: str
) -> Any:
    """XComArg / DagParam -> their value (not rendered further); strings rendered; containers walked."""
    from scheduler.authoring.dag import DagParam
    from scheduler.authoring.taskflow import XComArg

    if isinstance(value, XComArg | DagParam):
        try:
            return value.resolve(dict(context))
        except Exception as exc:
            raise TemplateError(f"{_where(task, field)}: cannot resolve {value!r}: {exc}") from exc
    if isinstance(value, str):
        return _render_text(env, task, value, context, field)
    if isinstance(value, list):
        return [_render_value(env, task, v, context, field) for v in value]
    if isinstance(value, tuple):
        return tuple(_render_value(env, task, v, context, field) for v in value)
    if isinstance(value, dict):
        return {k: _render_value(env, task, v, context, field) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return type(value)(_render_value(env, task, v, context, field) for v in value)
    return value


def render_template_fields(task: BaseOperator, context: Mapping[str, Any]) -> dict[str, Any]:
    """Render every field in ``task.template_fields``, set the results on the task, return a JSON-friendly copy.

    Raises TemplateError naming the task and the field (undefined variable, syntax error
    with its line, missing template file, a failing filter or XCom value).
    """
    dag = task.dag if task.has_dag else None
    env = _environment(dag, native=bool(dag is not None and dag.render_template_as_native_obj))
    task.prepare_template()
    rendered: dict[str, Any] = {}
    for field in task.template_fields:
        if not hasattr(task, field):
            raise TemplateError(f"{_where(task, field)}: {type(task).__name__} has no attribute '{field}'")
        value = _render_value(env, task, getattr(task, field), context, field)
        setattr(task, field, value)
        rendered[field] = to_jsonable(value)
    return rendered


def render_string(task: BaseOperator, text: str, context: Mapping[str, Any], *, field: str | None = None) -> str:
    """Render one template string (or template file, by ``task.template_ext``) to text."""
    dag = task.dag if task.has_dag else None
    return str(_render_text(_environment(dag, native=False), task, text, context, field))
