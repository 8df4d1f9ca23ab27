"""updraft: an Airflow-style DAG scheduler.

The authoring API is re-exported here (DAG, dag, task, operators, sensors, TriggerRule, chain, Param)
and loaded on first use, so ``import scheduler`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "DAG": "scheduler.authoring.dag",
    "dag": "scheduler.authoring.dag",
    "BaseOperator": "scheduler.authoring.baseoperator",
    "chain": "scheduler.authoring.baseoperator",
    "cross_downstream": "scheduler.authoring.baseoperator",
    "EmptyOperator": "scheduler.authoring.operators",
    "BashOperator": "scheduler.authoring.operators",
    "PythonOperator": "scheduler.authoring.operators",
    "BranchPythonOperator": "scheduler.authoring.operators",
    "ShortCircuitOperator": "scheduler.authoring.operators",
    "BaseSensorOperator": "scheduler.authoring.sensors",
    "PokeReturnValue": "scheduler.authoring.sensors",
    "PythonSensor": "scheduler.authoring.sensors",
    "FileSensor": "scheduler.authoring.sensors",
    "DateTimeSensor": "scheduler.authoring.sensors",
    "TimeDeltaSensor": "scheduler.authoring.sensors",
    "SensorTimeout": "scheduler.authoring.sensors",
    "AirflowSensorTimeout": "scheduler.authoring.sensors",
    "TaskGroup": "scheduler.authoring.taskgroup",
    "task_group": "scheduler.authoring.taskgroup",
    "Label": "scheduler.authoring.edges",
    "TriggerDagRunOperator": "scheduler.authoring.cross_dag",
    "ExternalTaskSensor": "scheduler.authoring.cross_dag",
    "ExternalTaskMarker": "scheduler.authoring.cross_dag",
    "LatestOnlyOperator": "scheduler.authoring.cross_dag",
    "get_current_context": "scheduler.authoring.compat",
    "task": "scheduler.authoring.taskflow",
    "XComArg": "scheduler.authoring.taskflow",
    "Param": "scheduler.authoring.params",
    "TriggerRule": "scheduler.trigger_rules",
    "TaskSkipped": "scheduler.exceptions",
    "TaskFailedNoRetry": "scheduler.exceptions",
    "AirflowSkipException": "scheduler.exceptions",
    "AirflowFailException": "scheduler.exceptions",
    "mask_secret": "scheduler.secrets_masker",
    "get_connection": "scheduler.connections",
    "Connection": "scheduler.connections",
    "get_variable": "scheduler.variables",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from scheduler.authoring.baseoperator import BaseOperator, chain, cross_downstream
    from scheduler.authoring.compat import get_current_context
    from scheduler.authoring.cross_dag import (
        ExternalTaskMarker,
        ExternalTaskSensor,
        LatestOnlyOperator,
        TriggerDagRunOperator,
    )
    from scheduler.authoring.dag import DAG, dag
    from scheduler.authoring.edges import Label
    from scheduler.authoring.operators import (
        BashOperator,
        BranchPythonOperator,
        EmptyOperator,
        PythonOperator,
        ShortCircuitOperator,
    )
    from scheduler.authoring.params import Param
    from scheduler.authoring.sensors import (
        AirflowSensorTimeout,
        BaseSensorOperator,
        DateTimeSensor,
        FileSensor,
        PokeReturnValue,
        PythonSensor,
        SensorTimeout,
        TimeDeltaSensor,
    )
    from scheduler.authoring.taskflow import XComArg, task
    from scheduler.authoring.taskgroup import TaskGroup, task_group
    from scheduler.connections import Connection, get_connection
    from scheduler.exceptions import (
        AirflowFailException,
        AirflowSkipException,
        TaskFailedNoRetry,
        TaskSkipped,
    )
    from scheduler.secrets_masker import mask_secret
    from scheduler.trigger_rules import TriggerRule
    from scheduler.variables import get_variable


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
