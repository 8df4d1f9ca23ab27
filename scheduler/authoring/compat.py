"""Airflow names kept for DAG files written for Airflow 2: DummyOperator, Variable, days_ago, get_current_context.

Using a deprecated name logs a note (and records it on the DAG being defined, whose
``deprecations`` the serializer stores); the behaviour is the modern one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.authoring.operators import EmptyOperator

logger = logging.getLogger(__name__)
_MISSING: Any = object()


def note_deprecation(message: str) -> None:
    """Log an Airflow 2 name's deprecation; remember it on the DAG being defined, if any."""
    from scheduler.authoring.dag import current_dag

    dag = current_dag()
    if dag is not None:
        dag.note_deprecation(message)
    else:
        logger.warning("%s", message)


class DummyOperator(EmptyOperator):
    """Airflow 2's old name of EmptyOperator (deprecated)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        message = "DummyOperator is deprecated; use EmptyOperator"
        if self.has_dag:
            self.dag.note_deprecation(message)
        else:
            note_deprecation(message)


def get_current_context() -> dict[str, Any]:
    """The context of the task running in this process (inside ``@task`` code that takes no ``**context``)."""
    from scheduler.execution import current_context

    return current_context()


def days_ago(n: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0) -> datetime:
    """Midnight UTC ``n`` days ago (deprecated in Airflow 2; prefer a fixed start_date)."""
    note_deprecation("days_ago is deprecated; use a fixed datetime for start_date")
    today = datetime.now(UTC).replace(hour=hour, minute=minute, second=second, microsecond=microsecond)
    return today - timedelta(days=n)


class Variable:
    """``Variable.get(key, default_var=..., deserialize_json=...)`` inside a running task.

    The value comes from the running task's Variables (the metadata database). Outside a
    task (at the top of a DAG file) there is no database access: ``default_var`` is
    returned when given, else a clear error is raised.
    """

    @staticmethod
    def get(key: str, default_var: Any = _MISSING, deserialize_json: bool = False) -> Any:
        from scheduler.execution import current_context

        try:
            context = current_context()
        except RuntimeError:
            if default_var is not _MISSING:
                logger.warning("Variable.get(%r) outside a running task: the default is used", key)
                return default_var
            raise KeyError(
                f"Variable '{key}': Variables are read only while a task runs in updraft (not when the DAG "
                "file is parsed); read it inside the task, or pass default_var"
            ) from None
        accessor = context["var"].json if deserialize_json else context["var"].value
        if default_var is _MISSING:
            return accessor.get(key)
        return accessor.get(key, default_var)

    @staticmethod
    def set(key: str, value: Any, serialize_json: bool = False) -> None:
        raise NotImplementedError(
            f"Variable.set('{key}') is not supported inside DAG files by updraft; use `updraft variables set` "
            f"or the REST API ({json.dumps(value)[:40] if serialize_json else ''})"
        )
