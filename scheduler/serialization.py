"""DAG <-> JSON: the form stored in the database and read by the scheduler and the webserver.

``serialize_dag`` runs where the DAG file was imported (the parser's child process).
``SerializedDAG`` is what everybody else uses: plain data, no user code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from scheduler.clock import get_timezone, make_aware, parse_datetime, timezone_name

if TYPE_CHECKING:
    from scheduler.authoring.baseoperator import BaseOperator
    from scheduler.authoring.dag import DAG
    from scheduler.timetables.base import Timetable

FORMAT_VERSION = 1


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _has_callback(value: Callable[..., Any] | list[Any] | None) -> bool:
    return bool(value)


def to_jsonable(value: Any) -> Any:
    """A JSON-storable copy of a value: containers walked (sets sorted), dates as ISO text,
    timedeltas as seconds, other objects as ``str()``. Used for template fields and executor_config."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def _task_date(task: BaseOperator, value: datetime | None) -> str | None:
    """A task's start/end date as aware UTC ISO text; a naive one is read in its DAG's time zone."""
    if value is None:
        return None
    tz = task.dag.timezone if task.has_dag else UTC
    return make_aware(value, tz).astimezone(UTC).isoformat()


def serialize_task(task: BaseOperator) -> dict[str, Any]:
    cls = getattr(task, "operator_class", type(task)) if task.is_mapped else type(task)
    data = {
        "task_id": task.task_id,
        "operator": getattr(cls, "custom_operator_name", None) or cls.__name__,
        "operator_class": cls.__name__,
        "operator_module": cls.__module__,
        "upstream": sorted(task.upstream_task_ids),
        "downstream": sorted(task.downstream_task_ids),
        "trigger_rule": task.trigger_rule.value,
        "owner": task.owner,
        "retries": task.retries,
        "retry_delay": _seconds(task.retry_delay),
        "retry_exponential_backoff": task.retry_exponential_backoff,
        "max_retry_delay": _seconds(task.max_retry_delay),
        "execution_timeout": _seconds(task.execution_timeout),
        "depends_on_past": task.depends_on_past,
        "wait_for_downstream": task.wait_for_downstream,
        "pool": task.pool,
        "pool_slots": task.pool_slots,
        "priority_weight": task.priority_weight,
        "weight_rule": task.weight_rule,
        "queue": task.queue,
        "max_active_tis_per_dag": task.max_active_tis_per_dag,
        "max_active_tis_per_dagrun": task.max_active_tis_per_dagrun,
        "start_date": _task_date(task, task.start_date),
        "end_date": _task_date(task, task.end_date),
        "is_empty": task.inherits_from_empty_operator,
        "is_branch": task.is_branch,
        "skips_downstream": task.skips_downstream,
        "template_fields": list(task.template_fields),
        "template_fields_renderers": dict(task.template_fields_renderers),
        "templates": {f: to_jsonable(getattr(task, f, None)) for f in task.template_fields},
        "ui_color": task.ui_color,
        "ui_fgcolor": task.ui_fgcolor,
        "doc_md": task.doc_md or task.doc,
        "task_display_name": task.task_display_name,
        "has_on_failure_callback": _has_callback(task.on_failure_callback),
        "has_on_success_callback": _has_callback(task.on_success_callback),
        "has_on_retry_callback": _has_callback(task.on_retry_callback),
        "executor_config": to_jsonable(task.executor_config),
        "task_group": getattr(task.task_group, "group_id", None) if task.task_group is not None else None,
        "is_mapped": task.is_mapped,
        "outlet_assets": [o.uri for o in task.outlets if type(o).__name__ == "Asset" and hasattr(o, "uri")],
    }
    if task.is_mapped:
        data["operator"] = getattr(task, "custom_operator_name", None) or cls.__name__
        data["expand_input"] = task.expand_input.serialize()  # type: ignore[attr-defined]
    return data


def ordered_params(data: dict[str, Any]) -> dict[str, Any]:
    """A serialized DAG's ``params`` in the DAG's order (JSONB on PostgreSQL reorders an object's keys)."""
    params = data.get("params") or {}
    order = [name for name in data.get("param_order") or [] if name in params]
    listed = set(order)
    return {name: params[name] for name in [*order, *(n for n in params if n not in listed)]}


def serialize_dag(dag: DAG, *, fileloc: str | None = None) -> dict[str, Any]:
    """The whole DAG as a JSON-serialisable dict (what the scheduler and webserver need)."""
    order = dag.topological_order()
    tt = dag.timetable
    params = dag.params.dump()
    data: dict[str, Any] = {
        "__version": FORMAT_VERSION,
        "dag_id": dag.dag_id,
        "fileloc": fileloc or dag.fileloc,
        "description": dag.description,
        "doc_md": dag.doc_md,
        "owners": dag.owners,
        "tags": list(dag.tags),
        "timezone": timezone_name(dag.timezone),
        "start_date": dag.start_date.isoformat() if dag.start_date else None,
        "end_date": dag.end_date.isoformat() if dag.end_date else None,
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "dagrun_timeout": _seconds(dag.dagrun_timeout),
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        "has_on_success_callback": _has_callback(dag.on_success_callback),
        "has_on_failure_callback": _has_callback(dag.on_failure_callback),
        "timetable": tt.serialize(),
        "schedule": tt.api_schedule(),
        "timetable_summary": tt.summary,
        "timetable_description": tt.description,
        "params": params,
        # PostgreSQL's JSONB does not keep the keys' order: the params' own order (the trigger form's)
        "param_order": list(params),
        "render_template_as_native_obj": dag.render_template_as_native_obj,
        "owner_links": dag.owner_links,
        "dag_display_name": dag.dag_display_name,
        "deprecations": list(dag.deprecations),
        "task_order": order,
        "tasks": [serialize_task(dag.task_dict[t]) for t in order],
        # data-aware scheduling: the assets condition that creates runs, and what each task updates
        "asset_condition": dag.asset_condition.serialize() if dag.asset_condition is not None else None,
        # for the graph view: the group tree (collapsible groups) and labelled edges
        "task_group": dag.task_group.serialize(),
        "edge_info": [
            {"upstream": up, "downstream": down, **info} for (up, down), info in sorted(dag.edge_info.items())
        ],
    }
    json.dumps(data)  # fail here, in the parser, if anything is not JSON
    return data


def dag_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SerializedTask:
    """What the scheduler and webserver know of a task."""

    task_id: str
    operator: str
    upstream: frozenset[str]
    downstream: frozenset[str]
    trigger_rule: str
    retries: int
    pool: str
    pool_slots: int
    priority_weight: int
    weight_rule: str
    is_empty: bool
    data: dict[str, Any] = field(repr=False, compare=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


@dataclass
class SerializedDAG:
    """A DAG as stored: plain data, no user code. ``from_dict(serialize_dag(dag))``."""

    dag_id: str
    fileloc: str
    timezone: tzinfo
    start_date: datetime | None
    end_date: datetime | None
    catchup: bool
    max_active_runs: int | None
    max_active_tasks: int | None
    dagrun_timeout: timedelta | None
    tasks: dict[str, SerializedTask]
    task_order: list[str]
    data: dict[str, Any] = field(repr=False)
    _timetable: Timetable | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SerializedDAG:
        tz = get_timezone(data["timezone"])
        tasks = {
            t["task_id"]: SerializedTask(
                task_id=t["task_id"],
                operator=t["operator"],
                upstream=frozenset(t["upstream"]),
                downstream=frozenset(t["downstream"]),
                trigger_rule=t["trigger_rule"],
                retries=int(t["retries"]),
                pool=t["pool"],
                pool_slots=int(t["pool_slots"]),
                priority_weight=int(t["priority_weight"]),
                weight_rule=t["weight_rule"],
                is_empty=bool(t.get("is_empty")),
                data=t,
            )
            for t in data["tasks"]
        }
        timeout = data.get("dagrun_timeout")
        return cls(
            dag_id=data["dag_id"],
            fileloc=data["fileloc"],
            timezone=tz,
            start_date=parse_datetime(data["start_date"]) if data.get("start_date") else None,
            end_date=parse_datetime(data["end_date"]) if data.get("end_date") else None,
            catchup=bool(data["catchup"]),
            max_active_runs=data.get("max_active_runs"),
            max_active_tasks=data.get("max_active_tasks"),
            dagrun_timeout=timedelta(seconds=timeout) if timeout is not None else None,
            tasks=tasks,
            task_order=list(data.get("task_order") or tasks),
            data=data,
        )

    @property
    def timetable(self) -> Timetable:
        if self._timetable is None:
            from scheduler.timetables import deserialize_timetable

            self._timetable = deserialize_timetable(self.data["timetable"])
        return self._timetable

    @property
    def params(self) -> Any:
        from scheduler.authoring.params import ParamsDict

        return ParamsDict.load(ordered_params(self.data))

    @property
    def leaves(self) -> list[str]:
        return [t for t in self.task_order if not self.tasks[t].downstream]

    @property
    def roots(self) -> list[str]:
        return [t for t in self.task_order if not self.tasks[t].upstream]
