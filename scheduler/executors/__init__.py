"""Executors: where task tries run. The LocalExecutor (a fork server on this machine) is the default;
the CeleryExecutor sends tries to ``updraft celery worker`` s through a broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.executors.base import BaseExecutor, ExecutorEvent

if TYPE_CHECKING:
    from scheduler.config import Settings

__all__ = ["BaseExecutor", "ExecutorEvent", "make_executor"]


def make_executor(settings: Settings) -> BaseExecutor:
    """The executor ``core.executor`` names (LocalExecutor unless configured)."""
    name = str(settings.get("core", "executor"))
    if name == "LocalExecutor":
        from scheduler.executors.local import LocalExecutor

        return LocalExecutor(settings)
    if name == "CeleryExecutor":
        from scheduler.executors.celery_executor import CeleryExecutor

        return CeleryExecutor(settings)
    if name == "InlineExecutor":
        from scheduler.executors.inline import InlineExecutor

        return InlineExecutor(settings)
    raise NotImplementedError(
        f"[core] executor = {name!r} is not available; use LocalExecutor or CeleryExecutor"
    )
