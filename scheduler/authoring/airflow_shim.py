"""Run Airflow DAG files unchanged: ``import airflow...`` resolves to updraft's own implementations.

:func:`install` puts a finder on ``sys.meta_path`` that serves the ``airflow`` package
and the modules of it that DAG files use for the core operators, decorators, sensors,
exceptions and params (the table :data:`MODULES`). It is called where DAG files are
imported (the parser's children, the task runner, ``dags test``), never in the
scheduler or the webserver, and only when no real ``airflow`` package can be found:
an installed Airflow always wins. Nothing is written to disk, so no top-level
``airflow`` package can shadow a real one.

An ``airflow`` module not in the table (a provider's hook or operator, say) fails to
import with an error naming the module and saying that updraft does not provide it; a
missing name in a supported module fails the same way.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any

ROOT = "airflow"
#: The Airflow API level the names follow (Airflow 2 and the Airflow 3 ``airflow.sdk``).
VERSION = "2.10.5"
DOC = "docs/migrating-from-airflow.md"

_A = "scheduler.authoring"
_DAG = {"DAG": f"{_A}.dag:DAG", "dag": f"{_A}.dag:dag"}
_OPS = f"{_A}.operators"
_SENS = f"{_A}.sensors"
_CROSS = f"{_A}.cross_dag"
_TF = f"{_A}.taskflow"
_EXC = "scheduler.exceptions"
_PYTHON_OPS = {
    "PythonOperator": f"{_OPS}:PythonOperator",
    "BranchPythonOperator": f"{_OPS}:BranchPythonOperator",
    "ShortCircuitOperator": f"{_OPS}:ShortCircuitOperator",
    "get_current_context": f"{_A}.compat:get_current_context",
}
_EXTERNAL = {
    "ExternalTaskSensor": f"{_CROSS}:ExternalTaskSensor",
    "ExternalTaskMarker": f"{_CROSS}:ExternalTaskMarker",
}
_ASSETS = {
    "Asset": f"{_A}.assets:Asset",
    "Dataset": f"{_A}.assets:Asset",
    "AssetAll": f"{_A}.assets:AssetAll",
    "AssetAny": f"{_A}.assets:AssetAny",
    "DatasetAll": f"{_A}.assets:AssetAll",
    "DatasetAny": f"{_A}.assets:AssetAny",
}
_EXCEPTIONS = {
    "AirflowException": f"{_EXC}:AirflowException",
    "AirflowSkipException": f"{_EXC}:AirflowSkipException",
    "AirflowFailException": f"{_EXC}:AirflowFailException",
    "AirflowSensorTimeout": f"{_SENS}:AirflowSensorTimeout",
    "AirflowRescheduleException": f"{_EXC}:TaskRescheduled",
    "DagNotFound": f"{_EXC}:DagNotFound",
    "TaskNotFound": f"{_EXC}:TaskNotFound",
    "ParamValidationError": f"{_EXC}:ParamValidationError",
}
_SDK = {
    **_DAG,
    "task": f"{_TF}:task",
    "task_group": f"{_A}.taskgroup:task_group",
    "TaskGroup": f"{_A}.taskgroup:TaskGroup",
    "BaseOperator": f"{_A}.baseoperator:BaseOperator",
    "BaseSensorOperator": f"{_SENS}:BaseSensorOperator",
    "PokeReturnValue": f"{_SENS}:PokeReturnValue",
    "chain": f"{_A}.baseoperator:chain",
    "cross_downstream": f"{_A}.baseoperator:cross_downstream",
    "Label": f"{_A}.edges:Label",
    "EdgeModifier": f"{_A}.edges:EdgeModifier",
    "Param": f"{_A}.params:Param",
    "ParamsDict": f"{_A}.params:ParamsDict",
    "XComArg": f"{_TF}:XComArg",
    "TriggerRule": "scheduler.trigger_rules:TriggerRule",
    "Variable": f"{_A}.compat:Variable",
    "get_current_context": f"{_A}.compat:get_current_context",
    **_ASSETS,
}

#: module name -> {attribute: "module:attribute"}; a value None marks a package with no names of its own.
MODULES: dict[str, dict[str, str] | None] = {
    "airflow": {**_DAG, "XComArg": f"{_TF}:XComArg", "Dataset": f"{_A}.assets:Asset",
                "Asset": f"{_A}.assets:Asset", "AirflowException": f"{_EXC}:AirflowException"},
    "airflow.models": {
        **_DAG,
        "BaseOperator": f"{_A}.baseoperator:BaseOperator",
        "Param": f"{_A}.params:Param",
        "Variable": f"{_A}.compat:Variable",
        "XComArg": f"{_TF}:XComArg",
    },
    "airflow.models.dag": _DAG,
    "airflow.models.baseoperator": {
        "BaseOperator": f"{_A}.baseoperator:BaseOperator",
        "chain": f"{_A}.baseoperator:chain",
        "cross_downstream": f"{_A}.baseoperator:cross_downstream",
    },
    "airflow.models.param": {"Param": f"{_A}.params:Param", "ParamsDict": f"{_A}.params:ParamsDict"},
    "airflow.models.variable": {"Variable": f"{_A}.compat:Variable"},
    "airflow.models.xcom_arg": {"XComArg": f"{_TF}:XComArg"},
    "airflow.decorators": {
        "dag": f"{_A}.dag:dag",
        "task": f"{_TF}:task",
        "task_group": f"{_A}.taskgroup:task_group",
    },
    "airflow.operators": None,
    "airflow.operators.bash": {"BashOperator": f"{_OPS}:BashOperator"},
    "airflow.operators.bash_operator": {"BashOperator": f"{_OPS}:BashOperator"},
    "airflow.operators.python": _PYTHON_OPS,
    "airflow.operators.python_operator": _PYTHON_OPS,
    "airflow.operators.empty": {"EmptyOperator": f"{_OPS}:EmptyOperator"},
    "airflow.operators.dummy": {"DummyOperator": f"{_A}.compat:DummyOperator"},
    "airflow.operators.dummy_operator": {"DummyOperator": f"{_A}.compat:DummyOperator"},
    "airflow.operators.trigger_dagrun": {"TriggerDagRunOperator": f"{_CROSS}:TriggerDagRunOperator"},
    "airflow.operators.latest_only": {"LatestOnlyOperator": f"{_CROSS}:LatestOnlyOperator"},
    "airflow.sensors": None,
    "airflow.sensors.base": {
        "BaseSensorOperator": f"{_SENS}:BaseSensorOperator",
        "PokeReturnValue": f"{_SENS}:PokeReturnValue",
    },
    "airflow.sensors.python": {"PythonSensor": f"{_SENS}:PythonSensor"},
    "airflow.sensors.filesystem": {"FileSensor": f"{_SENS}:FileSensor"},
    "airflow.sensors.date_time": {"DateTimeSensor": f"{_SENS}:DateTimeSensor"},
    "airflow.sensors.time_delta": {"TimeDeltaSensor": f"{_SENS}:TimeDeltaSensor"},
    "airflow.sensors.external_task": _EXTERNAL,
    "airflow.exceptions": _EXCEPTIONS,
    "airflow.utils": None,
    "airflow.utils.trigger_rule": {"TriggerRule": "scheduler.trigger_rules:TriggerRule"},
    "airflow.utils.task_group": {"TaskGroup": f"{_A}.taskgroup:TaskGroup"},
    "airflow.utils.edgemodifier": {"Label": f"{_A}.edges:Label", "EdgeModifier": f"{_A}.edges:EdgeModifier"},
    "airflow.utils.helpers": {
        "chain": f"{_A}.baseoperator:chain",
        "cross_downstream": f"{_A}.baseoperator:cross_downstream",
    },
    "airflow.utils.dates": {"days_ago": f"{_A}.compat:days_ago"},
    "airflow.timetables": None,
    "airflow.timetables.trigger": {"CronTriggerTimetable": "scheduler.timetables.cron:CronTriggerTimetable"},
    "airflow.timetables.interval": {
        "CronDataIntervalTimetable": "scheduler.timetables.cron:CronDataIntervalTimetable",
    },
    "airflow.timetables.datasets": {"DatasetOrTimeSchedule": f"{_A}.assets:AssetOrTimeSchedule"},
    "airflow.timetables.assets": {"AssetOrTimeSchedule": f"{_A}.assets:AssetOrTimeSchedule"},
    "airflow.datasets": _ASSETS,
    "airflow.assets": _ASSETS,
    "airflow.sdk": _SDK,
    "airflow.sdk.definitions": None,
    "airflow.sdk.definitions.asset": _ASSETS,
    "airflow.providers": None,
    "airflow.providers.standard": None,
    "airflow.providers.standard.operators": None,
    "airflow.providers.standard.operators.bash": {"BashOperator": f"{_OPS}:BashOperator"},
    "airflow.providers.standard.operators.python": _PYTHON_OPS,
    "airflow.providers.standard.operators.empty": {"EmptyOperator": f"{_OPS}:EmptyOperator"},
    "airflow.providers.standard.operators.trigger_dagrun": {
        "TriggerDagRunOperator": f"{_CROSS}:TriggerDagRunOperator"
    },
    "airflow.providers.standard.operators.latest_only": {"LatestOnlyOperator": f"{_CROSS}:LatestOnlyOperator"},
    "airflow.providers.standard.sensors": None,
    "airflow.providers.standard.sensors.python": {"PythonSensor": f"{_SENS}:PythonSensor"},
    "airflow.providers.standard.sensors.filesystem": {"FileSensor": f"{_SENS}:FileSensor"},
    "airflow.providers.standard.sensors.date_time": {"DateTimeSensor": f"{_SENS}:DateTimeSensor"},
    "airflow.providers.standard.sensors.time_delta": {"TimeDeltaSensor": f"{_SENS}:TimeDeltaSensor"},
    "airflow.providers.standard.sensors.external_task": _EXTERNAL,
}

#: names whose use is logged as an Airflow 2 deprecation
DEPRECATED_MODULES = {
    "airflow.operators.dummy": "airflow.operators.dummy is deprecated; use airflow.operators.empty",
    "airflow.operators.dummy_operator": "airflow.operators.dummy_operator is deprecated; use airflow.operators.empty",
    "airflow.operators.bash_operator": "airflow.operators.bash_operator is deprecated; use airflow.operators.bash",
    "airflow.operators.python_operator":
        "airflow.operators.python_operator is deprecated; use airflow.operators.python",
}


class UnsupportedAirflowImport(ModuleNotFoundError):
    """An Airflow module or name that updraft does not provide."""


def _missing_module_message(fullname: str) -> str:
    return (
        f"No module named '{fullname}': this DAG file needs Apache Airflow's '{fullname}', which updraft "
        f"does not provide (Airflow itself is not installed; updraft serves only the core operators, "
        f"decorators, sensors and exceptions of the 'airflow' package, see {DOC})"
    )


class _ShimModule(types.ModuleType):
    """One served ``airflow`` module: its names are loaded from updraft on first use."""

    _updraft_names: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = self._updraft_names.get(name)
        if target is None:
            supported = ", ".join(sorted(self._updraft_names)) or "none"
            raise ImportError(
                f"cannot import name '{name}' from '{self.__name__}': updraft does not provide it "
                f"(names served from this module: {supported}; see {DOC})",
                name=self.__name__,
            )
        module_name, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module_name), attr)
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._updraft_names))


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _ShimModule(spec.name)
        module._updraft_names = dict(MODULES.get(spec.name) or {})
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__file__ = None
        if module.__name__ == ROOT:
            module.__version__ = VERSION  # type: ignore[attr-defined]
        note = DEPRECATED_MODULES.get(module.__name__)
        if note is not None:
            from scheduler.authoring.compat import note_deprecation

            note_deprecation(note)


class AirflowShimFinder(importlib.abc.MetaPathFinder):
    """Serves ``airflow`` and the modules in :data:`MODULES`; refuses every other ``airflow.*`` module."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ROOT and not fullname.startswith(ROOT + "."):
            return None
        if fullname not in MODULES:
            raise UnsupportedAirflowImport(_missing_module_message(fullname), name=fullname)
        is_package = any(other.startswith(fullname + ".") for other in MODULES)
        spec = importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=is_package)
        if is_package:
            spec.submodule_search_locations = []
        return spec


_installed: AirflowShimFinder | None = None
_real_airflow: bool | None = None


def real_airflow_installed() -> bool:
    """Whether a real ``airflow`` package is importable (looked up once, before the finder is installed)."""
    global _real_airflow
    if _real_airflow is None:
        if _installed is not None and _installed in sys.meta_path:
            return False
        _real_airflow = importlib.util.find_spec(ROOT) is not None
    return _real_airflow


def install() -> bool:
    """Serve ``airflow`` imports from updraft in this process, unless a real Airflow is installed.

    Idempotent; returns whether the finder is in place.
    """
    global _installed
    if _installed is not None and _installed in sys.meta_path:
        return True
    if ROOT in sys.modules or real_airflow_installed():
        return False
    _installed = AirflowShimFinder()
    sys.meta_path.append(_installed)
    return True


def uninstall() -> None:
    """Remove the finder and every served module (tests)."""
    global _installed
    if _installed is not None and _installed in sys.meta_path:
        sys.meta_path.remove(_installed)
    _installed = None
    for name in [n for n in sys.modules if n == ROOT or n.startswith(ROOT + ".")]:
        if isinstance(sys.modules[name], _ShimModule):
            del sys.modules[name]
