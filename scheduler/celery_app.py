"""The Celery application shared by the CeleryExecutor (which sends) and ``updraft celery worker`` (which runs).

One Celery task, ``updraft.run_workload``, carries one workload as JSON
(:func:`scheduler.workloads.to_json`). The worker runs it with the same task runner as
the LocalExecutor (:func:`scheduler.task_runner.run_workload`, supervised mode: the
try's code runs in a child the runner forks and watches), and the runner records the
outcome in the metadata database itself, so there is no result backend.

Delivery settings, chosen so that a try never runs twice at once and is never lost:

* ``task_acks_late``: a message is acknowledged when the runner returns, not when a
  worker takes it. A worker that dies with messages taken but not started gives them
  back to the broker (at once on RabbitMQ, when its connection closes; on Redis
  ``celery.visibility_timeout`` after their delivery, found by a sweep every
  min(10 s, that timeout)) and another worker runs them.
* Redelivery is harmless: the runner claims a try by compare-and-set
  ``queued -> running`` on the try number, so a second delivery of a try that already
  started (a worker that died mid-try, or a Redis visibility timeout shorter than the
  try) finds it running or finished and returns without running anything.
* A try whose worker died mid-try stops heartbeating; the scheduler fails it after
  ``scheduler.task_instance_heartbeat_timeout`` and retries it per its ``retries``.
* ``worker_prefetch_multiplier = 1``: a worker reserves no more messages than it has
  free processes, so a busy worker does not sit on tries an idle one could run.
* Remote control, task events, gossip and mingle are off: nothing reads them, and each
  costs broker traffic (and, on RabbitMQ, extra queues and exchanges).

Queue names are ``celery.queue_prefix`` + the task's ``queue`` (default ``default``), so
several installations (or test runs) can share one broker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scheduler.exceptions import ConfigError

if TYPE_CHECKING:
    from celery import Celery

    from scheduler.config import Settings

logger = logging.getLogger(__name__)

TASK_NAME = "updraft.run_workload"
DEFAULT_QUEUE = "default"
#: Broker URL schemes kombu reaches with the libraries of updraft[celery].
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")
#: Exit code of the Celery task for a message that is not an updraft workload.
EXIT_BAD_MESSAGE = 2


def broker_url(settings: Settings) -> str:
    """``celery.broker_url``, checked: ConfigError naming the setting when it is not Redis or RabbitMQ."""
    url = str(settings.get("celery", "broker_url")).strip()
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigError(f"[celery] broker_url is malformed: {exc}") from None
    if scheme not in BROKER_SCHEMES:
        shown = scheme or "(none)"
        raise ConfigError(
            f"[celery] broker_url: unsupported scheme {shown!r}; expected redis://HOST:PORT/DB "
            "or amqp://USER:PASSWORD@HOST:PORT/VHOST"
        )
    return url


def queue_name(settings: Settings, queue: str | None) -> str:
    """The broker queue for a task's ``queue`` (``celery.queue_prefix`` + name)."""
    return f"{settings.get('celery', 'queue_prefix')}{queue or DEFAULT_QUEUE}"


def transport_options(settings: Settings, url: str) -> dict[str, Any]:
    """Broker transport options. On Redis, an unacknowledged message (its worker died) becomes visible again
    ``celery.visibility_timeout`` seconds after delivery, found by a sweep every min(10, timeout) seconds."""
    if not url.lower().startswith("redis"):
        return {}
    timeout = int(settings.get("celery", "visibility_timeout"))
    return {"visibility_timeout": timeout, "unacked_restore_interval": min(10, timeout),
            "unacked_restore_throttle": 1}


def make_app(settings: Settings) -> Celery:
    """The Celery app for these settings, with the workload task registered. Opens no connection."""
    try:
        from celery import Celery
    except ImportError:
        raise ConfigError(
            "[core] executor = CeleryExecutor needs Celery: install updraft[celery]"
        ) from None
    url = broker_url(settings)
    timeout = float(settings.get("celery", "operation_timeout"))
    app = Celery("updraft", broker=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue_name(settings, DEFAULT_QUEUE),
        task_create_missing_queues=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=timeout,
        broker_transport_options=transport_options(settings, url),
        broker_heartbeat=10,
    )

    def run_workload_task(payload: Any) -> int:
        return run_message(payload, settings)

    app.task(name=TASK_NAME, acks_late=True, ignore_result=True)(run_workload_task)
    return app


def run_message(payload: Any, settings: Settings) -> int:
    """Run the workload a message carries (in a Celery worker); returns the runner's exit code.

    A message that is not an updraft workload is logged and dropped (acknowledged), never raised:
    raising would only make Celery log a traceback, and redelivering it could not help.
    """
    from scheduler.task_runner import run_workload
    from scheduler.workloads import from_json

    if not isinstance(payload, str | bytes):
        logger.error("celery worker: dropped a message whose body is %s, not an updraft workload (JSON text)",
                     type(payload).__name__)
        return EXIT_BAD_MESSAGE
    try:
        workload = from_json(payload)
    except ValueError as exc:
        logger.error("celery worker: dropped a message that is not an updraft workload: %s", exc)
        return EXIT_BAD_MESSAGE
    code = run_workload(workload, settings)
    if code != 0:
        logger.warning("celery worker: %s: the task runner exited with code %d", workload.label(), code)
    return code
