"""The executor interface the scheduler loop drives.

The loop hands over workloads (:mod:`scheduler.workloads`) with :meth:`BaseExecutor.queue`
and later collects :class:`ExecutorEvent` s with :meth:`BaseExecutor.drain_events`. The
task runner records a try's state in the database itself; an event only tells the
loop that a process ended, so it can fail a try that ended without recording anything
(a killed or crashed runner), and that a slot is free. ``on_event`` (given to
:meth:`BaseExecutor.start`) is called from a background thread whenever events
arrive, so a sleeping loop wakes at once instead of at its next tick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler.workloads import Workload


@dataclass(frozen=True)
class ExecutorEvent:
    """A workload's process ended. ``returncode`` as subprocess gives it (negative: killed by that signal)."""

    key: tuple[Any, ...]
    kind: str
    returncode: int
    pid: int | None = None


class BaseExecutor:
    """Runs workloads somewhere and reports when their processes end."""

    #: How many task workloads may run at once (core.parallelism).
    parallelism: int = 32

    def start(self, on_event: Callable[[], None]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def keep_warm(self, wanted: bool) -> None:
        """Called every loop iteration: ``wanted`` when runs are running. An executor that holds
        resources for running tries (a fork server) may start them ahead, or free them when idle."""

    def queue(self, workload: Workload) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def drain_events(self) -> list[ExecutorEvent]:  # pragma: no cover - interface
        raise NotImplementedError

    def drain_recorded(self) -> list[tuple[Any, ...]]:
        """Keys of the tries whose runners announced a recorded state since the last call (executors
        whose runners announce; the others have none)."""
        return []

    @property
    def running(self) -> dict[tuple[Any, ...], Workload]:  # pragma: no cover - interface
        raise NotImplementedError

    def open_slots(self) -> int:
        tasks = sum(1 for w in self.running.values() if w.kind == "task")
        return max(0, self.parallelism - tasks)

    def end(self, *, timeout: float) -> None:  # pragma: no cover - interface
        """Stop taking work; wait up to ``timeout`` s for running workloads, then terminate what is left."""
        raise NotImplementedError
