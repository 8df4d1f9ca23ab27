"""With many tries running, a wake-up by an ended try waits a moment for others (scheduler.loop).

A wide fan-out ends a try every few milliseconds, and each iteration reads every running
run's task instances: iterating once per ended try made the scheduler the largest CPU
user after the tries themselves. The loop's ``_gather_ended_tries`` waits
``BUSY_GATHER_SECONDS`` before such an iteration, only when at least
``BUSY_GATHER_RUNNING`` tries run (a lone chain is never held back), ends at once on a
stop, and hands on any other reason to wake that came meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from scheduler import loop
from scheduler.config import Settings
from scheduler.executors.base import BaseExecutor
from scheduler.loop import Scheduler
from tests.scheduler.dagfolder import folder_settings, make_folder


class Busy(BaseExecutor):
    """An executor that only says how many tries it runs."""

    def __init__(self, count: int) -> None:
        self._running = {(i, 1): object() for i in range(count)}

    @property
    def running(self) -> dict[tuple[Any, ...], Any]:
        return dict(self._running)


class RecordingStop:
    """Stands in for the loop's stop event: records the waits asked of it."""

    def __init__(self, on_wait: Any = None) -> None:
        self.waits: list[float] = []
        self._on_wait = on_wait
        self._set = False

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        if self._on_wait is not None:
            self._on_wait()
        return self._set

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return folder_settings(tmp_path, make_folder(tmp_path))


@pytest.fixture
def scheduler(db_engine: Engine, settings: Settings) -> Iterator[Scheduler]:
    with Scheduler(db_engine, settings) as s:
        yield s


def test_a_few_running_tries_are_never_held_back(scheduler: Scheduler) -> None:
    scheduler.executor = Busy(loop.BUSY_GATHER_RUNNING - 1)
    stop = RecordingStop()
    scheduler._stop = stop  # type: ignore[assignment]
    assert scheduler._gather_ended_tries() == set()
    assert stop.waits == []


def test_many_running_tries_wait_for_others_and_pass_on_other_reasons(scheduler: Scheduler) -> None:
    scheduler.executor = Busy(loop.BUSY_GATHER_RUNNING)
    # Another reason to wake arrives while the loop gathers: the iteration must learn of it.
    stop = RecordingStop(on_wait=lambda: scheduler._wakeup.set("folder"))
    scheduler._stop = stop  # type: ignore[assignment]
    assert scheduler._gather_ended_tries() == {"folder"}
    assert stop.waits == [loop.BUSY_GATHER_SECONDS]
    assert scheduler._wakeup.wait(0) == set()  # handed on, not left for a second wake-up


def test_a_stop_ends_the_gathering_at_once(scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "BUSY_GATHER_SECONDS", 600.0)  # a gathering that would outlast the test
    scheduler.executor = Busy(loop.BUSY_GATHER_RUNNING * 4)
    waiting = threading.Thread(target=scheduler._gather_ended_tries, daemon=True)
    waiting.start()
    scheduler.stop("test")
    waiting.join(timeout=30)
    assert not waiting.is_alive()
