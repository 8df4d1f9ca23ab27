"""Records shaped like Airflow's REST API v1 objects, shared by the CLI's JSON output and /api/v1.

Field names and value shapes follow the API so a script can move between the two unchanged.
"""

from __future__ import annotations

from typing import Any

from scheduler.clock import isoformat


def dag_record(dag: Any) -> dict[str, Any]:
    """A `dag` row as the API's DAG object."""
    owners = [o.strip() for o in (dag.owners or "").split(",") if o.strip()] if isinstance(dag.owners, str) else list(dag.owners or [])
    return {
        "dag_id": dag.dag_id,
        "dag_display_name": dag.dag_id,
        "is_paused": bool(dag.is_paused),
        "is_active": bool(dag.is_active),
        "fileloc": dag.fileloc,
        "owners": owners,
        "description": dag.description,
        "schedule_interval": dag.schedule,
        "timetable_description": dag.timetable_description,
        "tags": [{"name": t} for t in (dag.tags or [])],
        "has_import_errors": bool(dag.has_import_errors),
        "last_parsed_time": isoformat(dag.last_parsed_time),
        "next_dagrun": isoformat(dag.next_dagrun),
        "next_dagrun_data_interval_start": isoformat(dag.next_dagrun_data_interval_start),
        "next_dagrun_data_interval_end": isoformat(dag.next_dagrun_data_interval_end),
        "next_dagrun_create_after": isoformat(dag.next_dagrun_create_after),
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "timezone": dag.timezone,
    }


def import_error_record(err: Any) -> dict[str, Any]:
    return {
        "import_error_id": err.id,
        "filename": err.filename,
        "stack_trace": err.stack_trace,
        "timestamp": isoformat(err.timestamp),
    }


def dag_run_record(run: Any) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "dag_run_id": run.run_id,
        "run_id": run.run_id,
        "state": str(run.state),
        "run_type": str(run.run_type),
        "logical_date": isoformat(run.logical_date),
        "execution_date": isoformat(run.logical_date),
        "data_interval_start": isoformat(run.data_interval_start),
        "data_interval_end": isoformat(run.data_interval_end),
        "start_date": isoformat(run.start_date),
        "end_date": isoformat(run.end_date),
        "external_trigger": bool(run.external_trigger),
        "conf": run.conf or {},
    }


# --- the REST API's fuller objects (webserver/api) ---------------------------------------------


def timedelta_object(seconds: float | None) -> dict[str, Any] | None:
    """A duration in seconds as the API's ``TimeDelta`` object, or None."""
    if seconds is None:
        return None
    from datetime import timedelta

    delta = timedelta(seconds=float(seconds))
    return {"__type": "TimeDelta", "days": delta.days, "seconds": delta.seconds, "microseconds": delta.microseconds}


def dag_api_record(dag: Any) -> dict[str, Any]:
    """The API's DAG object: :func:`dag_record` plus the fields Airflow 2 always sends (constant here)."""
    record = dag_record(dag)
    record.update({
        "root_dag_id": None,
        "is_subdag": False,
        "default_view": "grid",
        "last_pickled": None,
        "last_expired": None,
        "scheduler_lock": None,
        "pickle_id": None,
    })
    return record


def dag_detail_record(dag: Any, data: dict[str, Any] | None) -> dict[str, Any]:
    """The API's DAGDetail object: the DAG plus what only its serialized form knows."""
    record = dag_api_record(dag)
    data = data or {}
    tasks = data.get("tasks") or []
    record.update({
        "catchup": data.get("catchup"),
        "concurrency": dag.max_active_tasks,
        "dag_run_timeout": timedelta_object(data.get("dagrun_timeout")),
        "doc_md": data.get("doc_md"),
        "start_date": data.get("start_date"),
        "end_date": data.get("end_date"),
        "is_paused_upon_creation": data.get("is_paused_upon_creation"),
        "last_parsed": isoformat(dag.last_parsed_time),
        "params": data.get("params") or {},
        "render_template_as_native_obj": data.get("render_template_as_native_obj"),
        "template_search_path": None,
        "orientation": "LR",
        "has_task_concurrency_limits": any(
            t.get("max_active_tis_per_dag") is not None or t.get("max_active_tis_per_dagrun") is not None for t in tasks),
    })
    return record


def task_record(task: dict[str, Any]) -> dict[str, Any]:
    """One serialized task (``serialization.serialize_task``) as the API's Task object."""
    record: dict[str, Any] = {
        "class_ref": {"module_path": task.get("operator_module"), "class_name": task.get("operator_class")},
        "task_id": task["task_id"],
        "task_display_name": task.get("task_display_name") or task["task_id"],
        "owner": task.get("owner") or "",
        "start_date": task.get("start_date"),
        "end_date": task.get("end_date"),
        "trigger_rule": task.get("trigger_rule"),
        "extra_links": [],
        "depends_on_past": bool(task.get("depends_on_past")),
        "wait_for_downstream": bool(task.get("wait_for_downstream")),
        "is_mapped": bool(task.get("is_mapped")),
        "retries": task.get("retries", 0),
        "queue": task.get("queue"),
        "executor": None,
        "pool": task.get("pool"),
        "pool_slots": task.get("pool_slots", 1),
        "retry_delay": timedelta_object(task.get("retry_delay")),
        "retry_exponential_backoff": bool(task.get("retry_exponential_backoff")),
        "priority_weight": task.get("priority_weight", 1),
        "weight_rule": task.get("weight_rule"),
        "ui_color": task.get("ui_color"),
        "ui_fgcolor": task.get("ui_fgcolor"),
        "template_fields": list(task.get("template_fields") or []),
        "downstream_task_ids": list(task.get("downstream") or []),
        "doc_md": task.get("doc_md"),
    }
    timeout = timedelta_object(task.get("execution_timeout"))
    if timeout is not None:
        record["execution_timeout"] = timeout
    return record


def dag_run_api_record(run: Any) -> dict[str, Any]:
    """The API's DAGRun object: :func:`dag_run_record` plus the scheduling fields."""
    record = dag_run_record(run)
    record.update({
        "last_scheduling_decision": isoformat(run.last_scheduling_decision),
        "queued_at": isoformat(run.queued_at),
        "note": None,
    })
    return record


def task_instance_record(ti: Any, logical_date: Any, *, task: dict[str, Any] | None = None) -> dict[str, Any]:
    """The API's TaskInstance object; ``state`` is null before one is decided (Airflow's no-state)."""
    state = str(ti.state)
    return {
        "task_id": ti.task_id,
        "task_display_name": (task or {}).get("task_display_name") or ti.task_id,
        "dag_id": ti.dag_id,
        "dag_run_id": ti.run_id,
        "run_id": ti.run_id,
        "execution_date": isoformat(logical_date),
        "logical_date": isoformat(logical_date),
        "start_date": isoformat(ti.start_date),
        "end_date": isoformat(ti.end_date),
        "duration": ti.duration,
        "state": None if state == "none" else state,
        "try_number": int(ti.try_number),
        "map_index": int(ti.map_index),
        "rendered_map_index": None,
        "max_tries": int(ti.max_tries),
        "hostname": ti.hostname or "",
        "pool": ti.pool,
        "pool_slots": int(ti.pool_slots),
        "queue": ti.queue,
        "priority_weight": ti.priority_weight,
        "operator": ti.operator,
        "queued_when": isoformat(ti.queued_dttm),
        "pid": ti.pid,
        "executor": None,
        "executor_config": ti.executor_config if isinstance(ti.executor_config, str) else "{}",
        "rendered_fields": ti.rendered_fields or {},
        "note": None,
    }


def task_instance_reference(ti: Any, logical_date: Any) -> dict[str, Any]:
    """The API's TaskInstanceReference (what clear and mark answer with)."""
    return {
        "task_id": ti.task_id,
        "dag_id": ti.dag_id,
        "dag_run_id": ti.run_id,
        "execution_date": isoformat(logical_date) or "",
    }


def variable_record(var: Any) -> dict[str, Any]:
    """The API's Variable: the value decrypted, ``***`` when the key looks sensitive (scheduler.variables)."""
    from scheduler.variables import record

    return record(var)


def pool_record(pool: Any, counts: dict[str, int]) -> dict[str, Any]:
    """The API's Pool object; ``counts`` maps task instance states to the pool slots they hold."""
    running = counts.get("running", 0)
    queued = counts.get("queued", 0)
    scheduled = counts.get("scheduled", 0)
    deferred = counts.get("deferred", 0)
    occupied = running + queued + (deferred if pool.include_deferred else 0)
    return {
        "name": pool.pool,
        "slots": pool.slots,
        "occupied_slots": occupied,
        "running_slots": running,
        "queued_slots": queued,
        "scheduled_slots": scheduled,
        "deferred_slots": deferred,
        "open_slots": -1 if pool.slots == -1 else pool.slots - occupied,
        "description": pool.description,
        "include_deferred": bool(pool.include_deferred),
    }
