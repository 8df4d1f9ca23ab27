"""InlineExecutor: each workload runs at once in a forked child that the caller waits for.

For tests that drive ``Scheduler.run_once(now)`` step by step: when ``queue`` returns,
the try is over and its event is waiting, so a scenario is a deterministic sequence of
iterations. The child still runs the real task runner in its own process (task code
never runs in the caller). Not for production: one try at a time, in the caller's time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scheduler.executors.base import BaseExecutor, ExecutorEvent
from scheduler.workloads import Workload

if TYPE_CHECKING:
    from scheduler.config import Settings


class InlineExecutor(BaseExecutor):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.parallelism = int(settings.get("core", "parallelism"))
        self._events: list[ExecutorEvent] = []
        #: Every workload queued, in order (tests read it).
        self.history: list[Workload] = []

    def start(self, on_event: Callable[[], None]) -> None:
        pass

    def queue(self, workload: Workload) -> None:
        from scheduler.executors.fork_server import _run_child

        self.history.append(workload)
        pid = os.fork()
        if pid == 0:
            _run_child(workload, self.settings, [], report_fd=False)
        _, status = os.waitpid(pid, 0)
        self._events.append(
            ExecutorEvent(key=workload.key, kind=workload.kind, returncode=os.waitstatus_to_exitcode(status), pid=pid)
        )

    @property
    def running(self) -> dict[tuple[Any, ...], Workload]:
        return {}

    def drain_events(self) -> list[ExecutorEvent]:
        events, self._events = self._events, []
        return events

    def end(self, *, timeout: float) -> None:
        pass
