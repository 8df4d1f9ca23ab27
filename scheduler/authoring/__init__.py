"""The authoring API: DAG, operators, sensors, TaskFlow and params (all re-exported by :mod:`scheduler`).

Submodules: ``dag``, ``baseoperator``, ``operators``, ``sensors``, ``taskflow``, ``params``.
The sensors are also importable from here (``from scheduler.authoring import FileSensor``),
loaded on first use so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    name: "scheduler.authoring.sensors"
    for name in (
        "BaseSensorOperator",
        "PokeReturnValue",
        "PythonSensor",
        "FileSensor",
        "DateTimeSensor",
        "TimeDeltaSensor",
        "SensorTimeout",
        "AirflowSensorTimeout",
    )
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'scheduler.authoring' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
