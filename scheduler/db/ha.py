"""Several schedulers on one database: who is alive, adopting a dead one's work, serialising the queueing step.

Every scheduler records itself in ``scheduler_job`` (model :class:`~scheduler.db.models.Job`)
and refreshes ``latest_heartbeat`` every ``scheduler.scheduler_heartbeat_sec``. Here:

* **Liveness.** A scheduler job is alive while its state is ``running``, its heartbeat is
  younger than ``scheduler.scheduler_health_check_threshold`` (30 s) and, when it runs on
  this host, its pid still exists (a scheduler killed a second ago on this machine is
  known dead at once, so it can be restarted without waiting for the threshold).
* **Adoption** (:func:`adopt_dead_schedulers`, from every scheduler's dead-task check):
  the first scheduler to see a dead job marks its row ``failed`` (compare-and-set on
  ``running``, so exactly one scheduler adopts it) and, in the same transaction, sends
  the job's ``queued`` task instances back to ``scheduled`` with the try not consumed.
  Its ``running`` instances are left alone: they may still be running on workers, and
  their own heartbeat (``scheduler.task_instance_heartbeat_timeout``) tells when they
  are not. A message of the dead scheduler still waiting in a broker is harmless: the
  runner claims a try by compare-and-set on ``queued`` and the try number, so at most one
  of two deliveries of the same try runs it.
* **Queueing across schedulers** (:func:`lock_pools`): on PostgreSQL the queueing
  transaction starts by locking every ``slot_pool`` row (``SELECT ... FOR UPDATE``, in id
  order), so the queueing steps of several schedulers run one after another and each
  counts the slots the others took (READ COMMITTED: every statement after the lock sees
  what they committed). Pools and ``max_active_tasks`` hold across schedulers. On SQLite
  the write transaction's ``BEGIN IMMEDIATE`` already serialises it.
* **SQLite allows one scheduler** (:func:`refuse_second_sqlite_scheduler`): a scheduler
  starting while another live one is recorded stops with a message naming its host and
  pid. The check and the new job's insert share one write transaction, so two
  schedulers starting together cannot both pass it.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import CursorResult, select, update

from scheduler.db.models import Job, Pool, TaskInstance
from scheduler.exceptions import UpdraftError
from scheduler.states import TaskInstanceState

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from scheduler.config import Settings

logger = logging.getLogger(__name__)

SCHEDULER_JOB = "SchedulerJob"
RUNNING = "running"
#: The state a dead scheduler's job row gets when another scheduler adopts its work.
FAILED = "failed"


class SchedulerAlreadyRunning(UpdraftError):
    """A second scheduler on a SQLite database."""


@dataclass(frozen=True)
class JobInfo:
    id: int
    hostname: str
    pid: int
    latest_heartbeat: datetime


def health_threshold(settings: Settings) -> timedelta:
    """``scheduler.scheduler_health_check_threshold`` as a timedelta."""
    return timedelta(seconds=float(settings.get("scheduler", "scheduler_health_check_threshold")))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a zombie counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_alive(job: JobInfo, *, now: datetime, threshold: timedelta, hostname: str | None = None) -> bool:
    """Whether a running scheduler job counts as alive (module docstring)."""
    if now - job.latest_heartbeat > threshold:
        return False
    here = hostname if hostname is not None else socket.gethostname()
    return job.hostname != here or pid_alive(job.pid)


def running_jobs(session: Session) -> list[JobInfo]:
    """The scheduler jobs whose row says running (alive or not)."""
    rows = session.execute(
        select(Job.id, Job.hostname, Job.pid, Job.latest_heartbeat)
        .where(Job.job_type == SCHEDULER_JOB, Job.state == RUNNING)
        .order_by(Job.id)
    )
    return [JobInfo(*row) for row in rows]


def live_scheduler_ids(session: Session, *, now: datetime, threshold: timedelta) -> set[int]:
    """Ids of the scheduler jobs alive now."""
    return {job.id for job in running_jobs(session) if is_alive(job, now=now, threshold=threshold)}


def refuse_second_sqlite_scheduler(session: Session, *, now: datetime, threshold: timedelta) -> None:
    """On SQLite, raise :class:`SchedulerAlreadyRunning` when another live scheduler is recorded.

    Call it in the write transaction that inserts the new job row. Nothing happens on PostgreSQL.
    """
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for job in running_jobs(session):
        if job.pid == os.getpid() and job.hostname == socket.gethostname():
            continue  # this very process (a scheduler started again in the same process)
        if is_alive(job, now=now, threshold=threshold):
            age = max(0, int((now - job.latest_heartbeat).total_seconds()))
            raise SchedulerAlreadyRunning(
                f"another scheduler is already running on this SQLite database (pid {job.pid} on host "
                f"{job.hostname}, last heartbeat {age} s ago); SQLite supports one scheduler at a time. "
                "Stop that one first, or move to PostgreSQL to run several (see docs/deployment.md)"
            )


def adopt_dead_schedulers(engine: Engine, *, now: datetime, threshold: timedelta, own_job_id: int | None) -> int:
    """Mark dead scheduler jobs failed and send their queued task instances back to scheduled.

    Returns how many task instances went back. Each dead job is its own transaction; the
    compare-and-set on its row makes exactly one scheduler adopt it.
    """
    from scheduler.db.engine import retry_transient, session_scope

    def find() -> list[JobInfo]:
        with session_scope(engine, readonly=True) as session:
            return [
                job for job in running_jobs(session)
                if job.id != own_job_id and not is_alive(job, now=now, threshold=threshold)
            ]

    requeued = 0
    for job in retry_transient(find, what="looking for dead schedulers"):
        requeued += retry_transient(functools.partial(_adopt, engine, job, now), what=f"adopting scheduler job {job.id}")
    return requeued


def _adopt(engine: Engine, job: JobInfo, now: datetime) -> int:
    from scheduler.db.engine import session_scope

    with session_scope(engine) as session:
        marked = session.execute(
            update(Job).where(Job.id == job.id, Job.state == RUNNING).values(state=FAILED, end_date=now)
        )
        if not isinstance(marked, CursorResult) or marked.rowcount != 1:
            return 0  # another scheduler adopted it first
        result = session.execute(
            update(TaskInstance)
            .where(TaskInstance.queued_by_job_id == job.id, TaskInstance.state == TaskInstanceState.QUEUED)
            .values(
                state=TaskInstanceState.SCHEDULED, try_number=TaskInstance.try_number - 1, queued_dttm=None,
                updated_at=now,
            )
        )
        count = result.rowcount if isinstance(result, CursorResult) else 0
    age = int((now - job.latest_heartbeat).total_seconds())
    logger.warning(
        "scheduler job %d (pid %d on %s) is dead (last heartbeat %d s ago): marked failed; "
        "%d of its queued task instances scheduled again, its running ones are left to their heartbeat",
        job.id, job.pid, job.hostname, age, count,
    )
    return count


def heartbeat(session: Session, job_id: int, *, now: datetime) -> None:
    """Refresh a scheduler's heartbeat. A row another scheduler marked failed (this one was too slow to
    heartbeat, not dead) is marked running again, so this scheduler's later work can still be adopted."""
    revived = session.execute(
        update(Job).where(Job.id == job_id, Job.state != RUNNING).values(
            state=RUNNING, end_date=None, latest_heartbeat=now)
    )
    if isinstance(revived, CursorResult) and revived.rowcount:
        logger.warning(
            "this scheduler (job %d) was taken for dead by another one after missing its heartbeats; its queued "
            "tries then were scheduled again (each still runs once). Running on; consider a larger "
            "[scheduler] scheduler_health_check_threshold", job_id,
        )
        return
    session.execute(update(Job).where(Job.id == job_id).values(latest_heartbeat=now))


def lock_pools(session: Session) -> None:
    """On PostgreSQL, lock every slot_pool row for the rest of the transaction (module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Pool.id).order_by(Pool.id).with_for_update()).all()
