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
