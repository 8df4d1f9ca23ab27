"""``/api/v1/openapi.json``: the OpenAPI 3 description of every /api/v1 route (served without auth, as Airflow does).

Built here from one table of operations; ``tests/web/test_api_openapi.py`` checks that
the table and the Flask routes name the same (path, method) pairs.
"""

from __future__ import annotations

from typing import Any

from flask import Response

from webserver.api import api
from webserver.api.shapes import json_response


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


S = {"type": "string"}
NS = {"type": "string", "nullable": True}
I = {"type": "integer"}  # noqa: E741
B = {"type": "boolean"}
NB = {"type": "boolean", "nullable": True}
DT = {"type": "string", "format": "date-time", "nullable": True}
OBJ = {"type": "object"}
TIME_DELTA = _obj({"__type": S, "days": I, "seconds": I, "microseconds": I})

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"type": S, "title": S, "status": I, "detail": S}),
    "ScheduleInterval": {"type": "object", "nullable": True, "properties": {"__type": S, "value": S, "days": I,
                                                                            "seconds": I, "microseconds": I}},
    "Tag": _obj({"name": S}),
    "DAG": _obj({
        "dag_id": S, "dag_display_name": S, "root_dag_id": NS, "is_paused": B, "is_active": B, "is_subdag": B,
        "last_parsed_time": DT, "last_pickled": DT, "last_expired": DT, "scheduler_lock": NB, "pickle_id": NS,
        "default_view": S, "fileloc": S, "owners": {"type": "array", "items": S}, "description": NS,
        "schedule_interval": _ref("ScheduleInterval"), "timetable_description": NS,
        "tags": {"type": "array", "items": _ref("Tag")}, "has_import_errors": B,
        "next_dagrun": DT, "next_dagrun_data_interval_start": DT, "next_dagrun_data_interval_end": DT,
        "next_dagrun_create_after": DT, "max_active_runs": {"type": "integer", "nullable": True},
        "max_active_tasks": {"type": "integer", "nullable": True}, "timezone": S,
    }),
    "DAGDetail": {"allOf": [_ref("DAG"), _obj({
        "catchup": B, "concurrency": {"type": "number", "nullable": True},
        "dag_run_timeout": {**TIME_DELTA, "nullable": True},
        "doc_md": NS, "start_date": DT, "end_date": DT, "is_paused_upon_creation": NB, "last_parsed": DT,
        "params": OBJ, "render_template_as_native_obj": B, "orientation": S, "has_task_concurrency_limits": B,
    })]},
    "DAGCollection": _obj({"dags": {"type": "array", "items": _ref("DAG")}, "total_entries": I}),
    "DAGPatch": _obj({"is_paused": B}, ("is_paused",)),
    "Task": _obj({
        "class_ref": _obj({"module_path": S, "class_name": S}), "task_id": S, "task_display_name": S, "owner": S,
        "start_date": DT, "end_date": DT, "trigger_rule": S, "extra_links": {"type": "array", "items": OBJ},
        "depends_on_past": B, "wait_for_downstream": B, "is_mapped": B, "retries": {"type": "number"},
        "queue": NS, "pool": S, "pool_slots": {"type": "number"}, "execution_timeout": TIME_DELTA,
        "retry_delay": TIME_DELTA, "retry_exponential_backoff": B, "priority_weight": {"type": "number"},
        "weight_rule": S, "ui_color": S, "ui_fgcolor": S, "template_fields": {"type": "array", "items": S},
        "downstream_task_ids": {"type": "array", "items": S}, "doc_md": NS,
    }),
    "TaskCollection": _obj({"tasks": {"type": "array", "items": _ref("Task")}, "total_entries": I}),
    "DAGRun": _obj({
        "dag_id": S, "dag_run_id": S, "state": {"type": "string", "enum": ["queued", "running", "success", "failed"]},
        "run_type": {"type": "string", "enum": ["backfill", "manual", "scheduled", "dataset_triggered"]},
        "logical_date": DT, "execution_date": DT, "data_interval_start": DT, "data_interval_end": DT,
        "start_date": DT, "end_date": DT, "last_scheduling_decision": DT, "queued_at": DT, "external_trigger": B,
        "conf": OBJ, "note": NS,
    }),
    "DAGRunCollection": _obj({"dag_runs": {"type": "array", "items": _ref("DAGRun")}, "total_entries": I}),
    "DAGRunTrigger": _obj({"dag_run_id": NS, "logical_date": DT, "execution_date": DT, "data_interval_start": DT,
                           "data_interval_end": DT, "conf": OBJ, "note": NS}),
    "ListDagRunsForm": _obj({
        "order_by": S, "page_offset": {"type": "integer", "minimum": 0},
        "page_limit": {"type": "integer", "minimum": 1, "default": 100},
        "dag_ids": {"type": "array", "items": S, "maxItems": 1000},
        "states": {"type": "array", "items": {"type": "string", "enum": ["queued", "running", "success", "failed"]}},
        **{f"{field}_{bound}": {"type": "string", "format": "date-time"}
           for field in ("execution_date", "start_date", "end_date") for bound in ("gte", "lte")},
    }),
    "DAGRunState": _obj({"state": {"type": "string", "enum": ["success", "failed", "queued"]}}, ("state",)),
    "ClearDagRun": _obj({"dry_run": {"type": "boolean", "default": True}}),
    "TaskInstance": _obj({
        "task_id": S, "task_display_name": S, "dag_id": S, "dag_run_id": S, "execution_date": DT,
        "start_date": DT, "end_date": DT, "duration": {"type": "number", "nullable": True},
        "state": {"type": "string", "nullable": True}, "try_number": I, "map_index": I, "max_tries": I,
        "hostname": S, "pool": S, "pool_slots": I, "queue": NS, "priority_weight": {"type": "integer", "nullable": True},
        "operator": NS, "queued_when": DT, "pid": {"type": "integer", "nullable": True}, "executor": NS,
        "executor_config": S, "rendered_fields": OBJ, "note": NS,
    }),
    "TaskInstanceCollection": _obj({"task_instances": {"type": "array", "items": _ref("TaskInstance")},
                                    "total_entries": I}),
    "TaskInstanceReference": _obj({"task_id": S, "dag_id": S, "dag_run_id": S, "execution_date": S}),
    "TaskInstanceReferenceCollection": _obj({"task_instances": {"type": "array",
                                                                "items": _ref("TaskInstanceReference")}}),
    "UpdateTaskInstance": _obj({"dry_run": {"type": "boolean", "default": True},
                                "new_state": {"type": "string", "enum": ["success", "failed", "skipped"]}},
                               ("new_state",)),
    "ClearTaskInstances": _obj({
        "dry_run": {"type": "boolean", "default": True}, "task_ids": {"type": "array", "items": S},
        "dag_run_id": NS, "start_date": {"type": "string", "format": "date-time"},
        "end_date": {"type": "string", "format": "date-time"}, "only_failed": {"type": "boolean", "default": True},
        "only_running": B, "include_upstream": B, "include_downstream": B, "include_future": B, "include_past": B,
        "include_subdags": B, "include_parentdag": B, "reset_dag_runs": B,
    }),
    "TaskLog": _obj({"content": S, "continuation_token": S}),
    "ImportError": _obj({"import_error_id": I, "filename": S, "stack_trace": S, "timestamp": S}),
    "ImportErrorCollection": _obj({"import_errors": {"type": "array", "items": _ref("ImportError")},
                                   "total_entries": I}),
    "Variable": _obj({"key": S, "value": S, "description": NS}, ("key", "value")),
    "VariableCollection": _obj({"variables": {"type": "array", "items": _ref("Variable")}, "total_entries": I}),
    "Pool": _obj({"name": S, "slots": I, "occupied_slots": I, "running_slots": I, "queued_slots": I,
                  "scheduled_slots": I, "deferred_slots": I, "open_slots": I, "description": NS,
                  "include_deferred": B}),
    "PoolCollection": _obj({"pools": {"type": "array", "items": _ref("Pool")}, "total_entries": I}),
    "ConnectionCollectionItem": _obj({"connection_id": S, "conn_type": S, "description": NS, "host": NS,
                                      "login": NS, "schema": NS, "port": {"type": "integer", "nullable": True}}),
    "Connection": _obj({"connection_id": S, "conn_type": S, "description": NS, "host": NS, "login": NS,
                        "schema": NS, "port": {"type": "integer", "nullable": True, "minimum": 0, "maximum": 65535},
                        "password": {"type": "string", "nullable": True, "writeOnly": True}, "extra": NS},
                       ("connection_id", "conn_type")),
    "ConnectionCollection": _obj({"connections": {"type": "array", "items": _ref("ConnectionCollectionItem")},
                                  "total_entries": I}),
    "EventLog": _obj({"event_log_id": I, "when": S, "dag_id": NS, "task_id": NS, "run_id": NS,
                      "map_index": {"type": "integer", "nullable": True},
                      "try_number": {"type": "integer", "nullable": True}, "event": S, "execution_date": DT,
                      "owner": NS, "extra": NS}),
    "EventLogCollection": _obj({"event_logs": {"type": "array", "items": _ref("EventLog")}, "total_entries": I}),
    "Dataset": _obj({"id": I, "uri": S, "extra": OBJ, "created_at": DT, "updated_at": DT,
                     "consuming_dags": {"type": "array", "items": _obj({"dag_id": S, "created_at": DT,
                                                                         "updated_at": DT})},
                     "producing_tasks": {"type": "array", "items": OBJ}}),
    "DatasetCollection": _obj({"datasets": {"type": "array", "items": _ref("Dataset")}, "total_entries": I}),
    "DatasetEvent": _obj({"id": I, "dataset_id": I, "dataset_uri": S, "extra": OBJ, "source_dag_id": NS,
                          "source_task_id": NS, "source_run_id": NS, "source_map_index": I,
                          "created_dagruns": {"type": "array", "items": OBJ}, "timestamp": DT}),
    "DatasetEventCollection": _obj({"dataset_events": {"type": "array", "items": _ref("DatasetEvent")},
                                    "total_entries": I}),
    "HealthInfo": _obj({"metadatabase": OBJ, "scheduler": OBJ}),
    "VersionInfo": _obj({"version": S, "git_version": NS}),
}


def _param(name: str, where: str, schema: dict[str, Any], *, required: bool = False, many: bool = False) -> dict[str, Any]:
    if many:
        schema = {"type": "array", "items": schema}
    param: dict[str, Any] = {"name": name, "in": where, "schema": schema, "required": required or where == "path"}
    if many:
        param["style"], param["explode"] = "form", True
    return param


PAGE = [_param("limit", "query", {"type": "integer", "minimum": 1, "default": 100}),
        _param("offset", "query", {"type": "integer", "minimum": 0, "default": 0}),
        _param("order_by", "query", S)]
UPDATE_MASK = [_param("update_mask", "query", S, many=True)]
RUN_DATES = [_param(f"{field}_{bound}", "query", {"type": "string", "format": "date-time"})
             for field in ("execution_date", "logical_date", "start_date", "end_date", "updated_at")
             for bound in ("gte", "lte")]

#: (path, method) -> (operationId, summary, query parameters, request body schema, response status, schema, auth).
OPERATIONS: dict[tuple[str, str], tuple[str, str, list[Any], str | None, str, str | None, str | None]] = {
    ("/health", "get"): ("get_health", "Health of the metadata database and the scheduler", [], None, "200",
                         "HealthInfo", None),
    ("/version", "get"): ("get_version", "Version of the server", [], None, "200", "VersionInfo", None),
    ("/openapi.json", "get"): ("get_openapi", "This document", [], None, "200", None, None),
    ("/dags", "get"): ("get_dags", "List DAGs", PAGE + [
        _param("tags", "query", S, many=True), _param("only_active", "query", {"type": "boolean", "default": True}),
        _param("paused", "query", B), _param("dag_id_pattern", "query", S)], None, "200", "DAGCollection", "read"),
    ("/dags", "patch"): ("patch_dags", "Pause or unpause the DAGs matching dag_id_pattern (~ for all), one page",
                         [_param("limit", "query", {"type": "integer", "minimum": 1, "default": 100}),
                          _param("offset", "query", {"type": "integer", "minimum": 0, "default": 0}),
                          _param("tags", "query", S, many=True)] + UPDATE_MASK + [
                          _param("only_active", "query", {"type": "boolean", "default": True}),
                          _param("dag_id_pattern", "query", S, required=True)],
                         "DAGPatch", "200", "DAGCollection", "edit"),
    ("/dags/{dag_id}", "get"): ("get_dag", "Get a DAG", [_param("fields", "query", S, many=True)], None, "200",
                                "DAG", "read"),
    ("/dags/{dag_id}", "patch"): ("patch_dag", "Pause or unpause a DAG", UPDATE_MASK, "DAGPatch", "200", "DAG",
                                  "edit"),
    ("/dags/{dag_id}/details", "get"): ("get_dag_details", "Get a DAG with the details of its definition",
                                        [_param("fields", "query", S, many=True)], None, "200", "DAGDetail", "read"),
    ("/dags/{dag_id}/tasks", "get"): ("get_tasks", "List the DAG's tasks", [_param("order_by", "query", S)], None,
                                      "200", "TaskCollection", "read"),
    ("/dags/{dag_id}/tasks/{task_id}", "get"): ("get_task", "Get one task", [], None, "200", "Task", "read"),
    ("/dags/{dag_id}/dagRuns", "get"): ("get_dag_runs", "List DAG runs (dag_id ~ lists every DAG's)", PAGE + [
        _param("state", "query", S, many=True)] + RUN_DATES, None, "200", "DAGRunCollection", "read"),
    ("/dags/{dag_id}/dagRuns", "post"): ("post_dag_run", "Trigger a DAG run", [], "DAGRunTrigger", "200", "DAGRun",
                                         "edit"),
    ("/dags/~/dagRuns/list", "post"): ("get_dag_runs_batch", "List DAG runs of several DAGs, filters in the body",
                                       [], "ListDagRunsForm", "200", "DAGRunCollection", "read"),
    ("/dags/{dag_id}/dagRuns/{dag_run_id}", "get"): ("get_dag_run", "Get a DAG run",
                                                     [_param("fields", "query", S, many=True)], None, "200",
                                                     "DAGRun", "read"),
    ("/dags/{dag_id}/dagRuns/{dag_run_id}", "patch"): ("update_dag_run_state", "Mark a DAG run", [], "DAGRunState",
                                                       "200", "DAGRun", "edit"),
    ("/dags/{dag_id}/dagRuns/{dag_run_id}", "delete"): ("delete_dag_run", "Delete a DAG run", [], None, "204", None,
                                                        "edit"),
    ("/dags/{dag_id}/dagRuns/{dag_run_id}/clear", "post"): (
        "clear_dag_run", "Clear a DAG run's task instances (a dry run answers with them)", [], "ClearDagRun", "200",
        "DAGRun", "edit"),
    ("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances", "get"): (
        "get_task_instances", "List a run's task instances", [
            _param("limit", "query", {"type": "integer", "minimum": 1}),
            _param("offset", "query", {"type": "integer", "minimum": 0}), _param("state", "query", S, many=True),
            _param("pool", "query", S, many=True), _param("queue", "query", S, many=True)],
        None, "200", "TaskInstanceCollection", "read"),
    ("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}", "get"): (
        "get_task_instance", "Get a task instance", [], None, "200", "TaskInstance", "read"),
    ("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}", "patch"): (
        "patch_task_instance", "Mark a task instance", [], "UpdateTaskInstance", "200", "TaskInstanceReference",
        "edit"),
    ("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/{task_try_number}", "get"): (
        "get_log", "The log of one try", [_param("full_content", "query", B), _param("map_index", "query", I),
                                          _param("token", "query", S)], None, "200", "TaskLog", "read"),
    ("/dags/{dag_id}/clearTaskInstances", "post"): (
        "post_clear_task_instances", "Clear task instances", [], "ClearTaskInstances", "200",
        "TaskInstanceReferenceCollection", "edit"),
    ("/importErrors", "get"): ("get_import_errors", "List import errors", PAGE, None, "200",
                               "ImportErrorCollection", "read"),
    ("/importErrors/{import_error_id}", "get"): ("get_import_error", "Get an import error", [], None, "200",
                                                 "ImportError", "read"),
    ("/variables", "get"): ("get_variables", "List variables", PAGE, None, "200", "VariableCollection", "read"),
    ("/variables", "post"): ("post_variables", "Create or replace a variable", [], "Variable", "200", "Variable",
                             "edit"),
    ("/variables/{variable_key}", "get"): ("get_variable", "Get a variable", [], None, "200", "Variable", "read"),
    ("/variables/{variable_key}", "patch"): ("patch_variable", "Update a variable", UPDATE_MASK, "Variable", "200",
                                             "Variable", "edit"),
    ("/variables/{variable_key}", "delete"): ("delete_variable", "Delete a variable", [], None, "204", None, "edit"),
    ("/pools", "get"): ("get_pools", "List pools", PAGE, None, "200", "PoolCollection", "read"),
    ("/pools", "post"): ("post_pool", "Create a pool", [], "Pool", "200", "Pool", "edit"),
    ("/pools/{pool_name}", "get"): ("get_pool", "Get a pool", [], None, "200", "Pool", "read"),
    ("/pools/{pool_name}", "patch"): ("patch_pool", "Update a pool", UPDATE_MASK, "Pool", "200", "Pool", "edit"),
    ("/pools/{pool_name}", "delete"): ("delete_pool", "Delete a pool (not default_pool)", [], None, "204", None,
                                       "edit"),
    ("/connections", "get"): ("get_connections", "List connections (never their passwords)", PAGE, None, "200",
                              "ConnectionCollection", "edit"),
    ("/connections", "post"): ("post_connection", "Create a connection", [], "Connection", "200", "Connection",
                               "edit"),
    ("/connections/{connection_id}", "get"): ("get_connection", "Get a connection (never its password)", [], None,
                                              "200", "Connection", "edit"),
    ("/connections/{connection_id}", "patch"): ("patch_connection", "Update a connection", UPDATE_MASK,
                                                "Connection", "200", "Connection", "edit"),
    ("/connections/{connection_id}", "delete"): ("delete_connection", "Delete a connection", [], None, "204", None,
                                                 "edit"),
    ("/eventLogs", "get"): ("get_event_logs", "List audit log events", PAGE + [
        _param(name, "query", kind) for name, kind in (
            ("dag_id", S), ("task_id", S), ("run_id", S), ("map_index", I), ("try_number", I), ("event", S),
            ("owner", S), ("before", {"type": "string", "format": "date-time"}),
            ("after", {"type": "string", "format": "date-time"}))] + [
        _param("included_events", "query", S, many=True), _param("excluded_events", "query", S, many=True)],
        None, "200", "EventLogCollection", "read"),
    ("/eventLogs/{event_log_id}", "get"): ("get_event_log", "Get an audit log event", [], None, "200", "EventLog",
                                           "read"),
    ("/datasets", "get"): ("get_datasets", "List datasets (assets), with the DAGs they schedule",
                           PAGE + [_param("uri_pattern", "query", S)], None, "200", "DatasetCollection", "read"),
    ("/datasets/events", "get"): ("get_dataset_events", "List dataset (asset) events", PAGE + [
        _param(name, "query", kind) for name, kind in (
            ("dataset_id", I), ("source_dag_id", S), ("source_task_id", S), ("source_run_id", S),
            ("source_map_index", I))], None, "200", "DatasetEventCollection", "read"),
}

_PATH_PARAM_TYPES = {"import_error_id": I, "task_try_number": I, "event_log_id": I}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _ref("Error")}}}


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of /api/v1."""
    from scheduler import __version__

    paths: dict[str, dict[str, Any]] = {}
    for (path, method), (op_id, summary, params, body, status, schema, auth) in OPERATIONS.items():
        path_params = [_param(p, "path", _PATH_PARAM_TYPES.get(p, S))
                       for p in (part[1:-1] for part in path.split("/") if part.startswith("{"))]
        responses: dict[str, Any] = {
            status: {"description": "OK" if status == "200" else "No content"}
        }
        if schema is not None:
            responses[status]["content"] = {"application/json": {"schema": _ref(schema)}}
        elif status == "200":
            responses[status]["content"] = {"application/json": {"schema": OBJ}}
        if auth is not None:
            responses["400"] = _error("Bad request")
            responses["401"] = _error("No or wrong credentials")
            responses["403"] = _error("The user's role may not do this")
            if "{" in path:
                responses["404"] = _error("Not found")
            if (path, method) in (("/dags/{dag_id}/dagRuns", "post"), ("/pools", "post"), ("/pools/{pool_name}", "patch"),
                                  ("/connections", "post")):
                responses["409"] = _error("Already exists")
        operation: dict[str, Any] = {
            "operationId": op_id, "summary": summary, "parameters": path_params + params, "responses": responses,
        }
        if auth is None:
            operation["security"] = []
        else:
            operation["x-updraft-permission"] = auth
        if body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": _ref(body)}}}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "updraft REST API", "version": "1.0.0",
                 "description": f"Airflow's stable REST API v1, as served by updraft {__version__}."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"Basic": []}],
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"Basic": {"type": "http", "scheme": "basic"}}},
    }


@api.get("/openapi.json")
def get_openapi() -> Response:
    return json_response(build_document())
