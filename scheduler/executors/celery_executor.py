"""CeleryExecutor: task tries sent through a broker (Redis or RabbitMQ) to ``updraft celery worker`` s.

``queue`` publishes one message per workload (see :mod:`scheduler.celery_app` for the
delivery settings) to the queue the task names. There is no result backend: the runner
records every try's outcome in the metadata database, so this executor learns that a try
it sent is over by reading the database. A background thread reads the state of the
tries it holds every :data:`POLL_SECONDS` while it holds any; a try that is no longer
``queued`` or ``running`` with its try number frees its slot and wakes the loop.

A try lost on a worker (the machine died) stays ``running`` until the scheduler's
heartbeat check fails it (``scheduler.task_instance_heartbeat_timeout``), which frees
the slot here too. A message that cannot be published (the broker is away) sends its
instance back to ``scheduled`` with the try not consumed, and no more is queued for
:data:`PUBLISH_BACKOFF_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scheduler.executors.base import BaseExecutor, ExecutorEvent
from scheduler.workloads import TaskWorkload, Workload, to_json

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy import Engine

    from scheduler.config import Settings

logger = logging.getLogger(__name__)

#: How often the tries this executor holds are looked up in the database.
POLL_SECONDS = 0.05
#: After a failed publish, nothing more is queued for this long.
PUBLISH_BACKOFF_SECONDS = 5.0


class CeleryExecutor(BaseExecutor):
    """See the module docstring. ``parallelism`` = ``core.parallelism`` tries sent and not yet over."""

    #: The poll thread wakes the loop when a try it sent is recorded, so the database watcher need not
    #: treat the runners' own commits as news (see scheduler.watch.DatabaseWatcher).
    announces_records = True

    def __init__(self, settings: Settings) -> None:
        from scheduler.celery_app import broker_url

        self.settings = settings
        self.parallelism = int(settings.get("core", "parallelism"))
        broker_url(settings)  # a bad URL is reported now, at start, naming the setting
        self._app: Celery | None = None
        self._engine: Engine | None = None
        self._on_event: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._running: dict[tuple[Any, ...], Workload] = {}
        self._events: list[ExecutorEvent] = []
        self._paused_until = 0.0
        self._stop = threading.Event()
        self._has_work = threading.Event()
        self._poller: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, on_event: Callable[[], None]) -> None:
        from scheduler.celery_app import make_app
        from scheduler.db.engine import make_engine, mask_url

        self._on_event = on_event
        self._app = make_app(self.settings)
        self._engine = make_engine(self.settings.sql_alchemy_conn, pool_size=1, max_overflow=1)
        self._stop.clear()
        self._poller = threading.Thread(target=self._poll_loop, name="celery-executor-poll", daemon=True)
        self._poller.start()
        logger.info("CeleryExecutor: broker %s, parallelism %d",
                    mask_url(str(self.settings.get("celery", "broker_url"))), self.parallelism)

    def end(self, *, timeout: float) -> None:
        """Stop watching. Tries already sent keep running on the workers: they are theirs, not this process's."""
        self._stop.set()
        self._has_work.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
        held = len(self.running)
        if held:
            logger.info("CeleryExecutor: %d tries sent to workers are left to run there", held)
        if self._app is not None:
            self._app.close()
            self._app = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # --- work --------------------------------------------------------------------------------------

    def queue(self, workload: Workload) -> None:
        from scheduler.celery_app import TASK_NAME, queue_name

        if self._app is None:
            raise RuntimeError("CeleryExecutor.queue called before start()")
        queue = queue_name(self.settings, workload.queue if isinstance(workload, TaskWorkload) else None)
        if time.monotonic() < self._paused_until:
            # The rest of a batch after a failed send: give it back at once rather than wait on the broker again.
            logger.warning("CeleryExecutor: not sending %s: the broker failed a moment ago", workload.label())
            if isinstance(workload, TaskWorkload):
                self._give_back(workload)
            return
        if isinstance(workload, TaskWorkload):
            with self._lock:
                self._running[workload.key] = workload
        try:
            self._app.send_task(
                TASK_NAME, args=[to_json(workload)], queue=queue, ignore_result=True,
                retry=True, retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5},
            )
        except Exception as exc:  # noqa: BLE001 - any broker failure: give the try back, never crash the loop
            self._paused_until = time.monotonic() + PUBLISH_BACKOFF_SECONDS
            logger.error("CeleryExecutor: cannot send %s to queue %s: %s", workload.label(), queue, exc)
            if isinstance(workload, TaskWorkload):
                with self._lock:
                    self._running.pop(workload.key, None)
                self._give_back(workload)
            return
        self._has_work.set()

    def open_slots(self) -> int:
        if time.monotonic() < self._paused_until:
            return 0
        return super().open_slots()

    @property
    def running(self) -> dict[tuple[Any, ...], Workload]:
        with self._lock:
            return dict(self._running)

    def drain_events(self) -> list[ExecutorEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events

    # --- plumbing ----------------------------------------------------------------------------------

    def _give_back(self, workload: TaskWorkload) -> None:
        """queued -> scheduled with the try not consumed (compare-and-set), for a try never sent."""
        from sqlalchemy import update

        from scheduler.clock import utcnow
        from scheduler.db.engine import session_scope
        from scheduler.db.models import TaskInstance
        from scheduler.states import TaskInstanceState as S

        assert self._engine is not None
        try:
            with session_scope(self._engine) as session:
                session.execute(
                    update(TaskInstance)
                    .where(TaskInstance.id == workload.ti_id, TaskInstance.state == S.QUEUED,
                           TaskInstance.try_number == workload.try_number)
                    .values(state=S.SCHEDULED, try_number=workload.try_number - 1, queued_dttm=None,
                            updated_at=utcnow())
                )
        except Exception:  # noqa: BLE001 - the next scheduler start reconciles what is left queued
            logger.exception("CeleryExecutor: cannot give %s back to the scheduler", workload.label())

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            if not self.running:
                self._has_work.wait()
                self._has_work.clear()
                continue
            try:
                ended = self._ended()
            except Exception as exc:  # noqa: BLE001 - the database may be away for a moment
                logger.warning("CeleryExecutor: cannot read the state of the tries it sent: %s", exc)
                self._stop.wait(1.0)
                continue
            if ended:
                with self._lock:
                    for key in ended:
                        if self._running.pop(key, None) is not None:
                            self._events.append(ExecutorEvent(key=key, kind="task", returncode=0))
                self._on_event()
            self._stop.wait(POLL_SECONDS)

    def _ended(self) -> list[tuple[Any, ...]]:
        """Keys of the held tries whose instance is no longer queued or running with that try."""
        from sqlalchemy import select

        from scheduler.db.models import TaskInstance
        from scheduler.states import TaskInstanceState as S

        held = self.running
        if not held or self._engine is None:
            return []
        ids = sorted({int(key[0]) for key in held})
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(TaskInstance.id, TaskInstance.state, TaskInstance.try_number).where(TaskInstance.id.in_(ids))
            ).all()
            conn.rollback()
        current = {int(ti_id): (S(state), int(try_number)) for ti_id, state, try_number in rows}
        active = (S.QUEUED, S.RUNNING)
        ended = []
        for key in held:
            now = current.get(int(key[0]))
            if now is None or now[0] not in active or now[1] != int(key[1]):
                ended.append(key)
        return ended
