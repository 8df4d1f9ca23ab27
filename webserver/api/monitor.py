"""``/health`` and ``/version``: answered without credentials, as in Airflow."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from webserver.api import api

#: A scheduler whose latest heartbeat is older than this is reported unhealthy (Airflow's
#: [scheduler] scheduler_health_check_threshold default).
SCHEDULER_HEALTH_THRESHOLD_S = 30.0


@api.get("/health")
def health() -> Any:
    from sqlalchemy import text

    from webserver.db import read_session

    scheduler: dict[str, Any] = {"status": None, "latest_scheduler_heartbeat": None}
    try:
        with read_session() as session:
            session.execute(text("SELECT 1"))
            database = {"status": "healthy"}
            scheduler = scheduler_health(session)
    except Exception:  # noqa: BLE001 - reported, not raised
        database = {"status": "unhealthy"}
    return jsonify({"metadatabase": database, "scheduler": scheduler})


def scheduler_health(session: Any, now: Any = None) -> dict[str, Any]:
    """The most recent SchedulerJob: healthy when running with a heartbeat within the threshold; null when none ever ran."""
    from datetime import UTC

    from sqlalchemy import select

    from scheduler.clock import utcnow
    from scheduler.db.models import Job

    job = session.scalars(
        select(Job).where(Job.job_type == "SchedulerJob").order_by(Job.latest_heartbeat.desc()).limit(1)
    ).first()
    if job is None:
        return {"status": None, "latest_scheduler_heartbeat": None}
    beat = job.latest_heartbeat if job.latest_heartbeat.tzinfo else job.latest_heartbeat.replace(tzinfo=UTC)
    age = ((now or utcnow()) - beat).total_seconds()
    alive = job.state == "running" and age < SCHEDULER_HEALTH_THRESHOLD_S
    return {"status": "healthy" if alive else "unhealthy", "latest_scheduler_heartbeat": beat.isoformat()}


@api.get("/version")
def version() -> Any:
    from scheduler import __version__

    return jsonify({"version": __version__, "git_version": None})
