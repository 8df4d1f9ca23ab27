"""Assets in the database: what DAGs reference, events from tasks' outlets, and asset-triggered runs.

* :func:`sync_references` (when a file's DAGs are stored): every asset a DAG names
  (its schedule, its tasks' outlets) has an ``asset`` row; ``dag_schedule_asset_reference``
  holds the assets each DAG's schedule waits for.
* :func:`outlet_events_missing` / :func:`record_outlet_events` (the scheduler's task
  side, for a running run): each successful instance of a task with asset outlets
  records one ``asset_event`` per asset (unique per asset and task instance, so a second
  look or a second scheduler adds nothing) and queues the asset for every DAG whose
  schedule names it (``asset_dag_run_queue``, one row per asset and DAG).
* :func:`create_asset_triggered_runs` (the run side, each iteration): a DAG whose queued
  assets satisfy its condition gets a queued ``dataset_triggered`` run, and its queue
  rows are deleted in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import Session

from scheduler.authoring.assets import condition_uris, evaluate_condition
from scheduler.db.models import (
    Asset,
    AssetDagRunQueue,
    AssetEvent,
    Dag,
    DagScheduleAssetReference,
    SerializedDag,
)
from scheduler.states import DagRunState, DagRunType

logger = logging.getLogger(__name__)


def _asset_ids(session: Session, uris: Iterable[str], now: datetime) -> dict[str, int]:
    """The ids of these assets, inserting the missing ones."""
    wanted = sorted(set(uris))
    if not wanted:
        return {}
    found = dict(session.execute(select(Asset.uri, Asset.id).where(Asset.uri.in_(wanted))).all())
    for uri in wanted:
        if uri not in found:
            with session.begin_nested():
                session.execute(insert(Asset).values(uri=uri, extra=None, created_at=now, updated_at=now))
            found[uri] = session.scalar(select(Asset.id).where(Asset.uri == uri)) or 0
    return found


def sync_references(session: Session, accepted: Mapping[str, Mapping[str, Any]], now: datetime) -> None:
    """Assets named by these serialized DAGs exist; each DAG's schedule references are what it names now."""
    if not accepted:
        return
    referencing = set(session.scalars(
        select(DagScheduleAssetReference.dag_id).distinct()
        .where(DagScheduleAssetReference.dag_id.in_(sorted(accepted)))
    ))
    for dag_id, data in accepted.items():
        condition = data.get("asset_condition")
        scheduled = condition_uris(condition) if condition else []
        outlets = [u for t in data.get("tasks") or [] for u in t.get("outlet_assets") or []]
        if not scheduled and not outlets and dag_id not in referencing:
            continue
        ids = _asset_ids(session, [*scheduled, *outlets], now)
        wanted = {ids[u] for u in scheduled}
        current = set(session.scalars(
            select(DagScheduleAssetReference.asset_id).where(DagScheduleAssetReference.dag_id == dag_id)
        ))
        if current - wanted:
            session.execute(delete(DagScheduleAssetReference).where(
                DagScheduleAssetReference.dag_id == dag_id, DagScheduleAssetReference.asset_id.in_(current - wanted)
            ))
            session.execute(delete(AssetDagRunQueue).where(
                AssetDagRunQueue.target_dag_id == dag_id, AssetDagRunQueue.asset_id.in_(current - wanted)
            ))
        for asset_id in sorted(wanted - current):
            session.execute(insert(DagScheduleAssetReference).values(asset_id=asset_id, dag_id=dag_id, created_at=now))


def outlet_tasks(sdag_data: Mapping[str, Any]) -> dict[str, list[str]]:
    """task_id -> the asset URIs it updates (only tasks with asset outlets)."""
    return {t["task_id"]: list(t["outlet_assets"]) for t in sdag_data.get("tasks") or [] if t.get("outlet_assets")}


def outlet_events_missing(session: Session, dag_id: str, run_id: str, succeeded: Iterable[tuple[str, int]],
                          outlets: Mapping[str, list[str]]) -> list[tuple[str, int, str]]:
    """(task_id, map_index, uri) of successful outlet instances whose event is not recorded yet."""
    wanted = [(t, i, u) for t, i in succeeded for u in outlets.get(t, [])]
    if not wanted:
        return []
    have = {tuple(row) for row in session.execute(
        select(AssetEvent.source_task_id, AssetEvent.source_map_index, Asset.uri)
        .join(Asset, Asset.id == AssetEvent.asset_id)
        .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
    )}
    return [w for w in wanted if w not in have]


def record_outlet_events(session: Session, dag_id: str, run_id: str, events: Iterable[tuple[str, int, str]],
                         now: datetime) -> int:
    """Record the asset events and queue the assets for the DAGs scheduled on them; how many were new."""
    events = list(events)
    ids = _asset_ids(session, [u for _, _, u in events], now)
    added = 0
    for task_id, map_index, uri in events:
        asset_id = ids[uri]
        exists = session.scalar(select(AssetEvent.id).where(
            AssetEvent.asset_id == asset_id, AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id,
            AssetEvent.source_task_id == task_id, AssetEvent.source_map_index == map_index,
        ))
        if exists is not None:
            continue
        session.execute(insert(AssetEvent).values(
            asset_id=asset_id, extra=None, source_dag_id=dag_id, source_task_id=task_id, source_run_id=run_id,
            source_map_index=map_index, timestamp=now,
        ))
        added += 1
        targets = session.scalars(
            select(DagScheduleAssetReference.dag_id).where(DagScheduleAssetReference.asset_id == asset_id)
        ).all()
        queued = set(session.scalars(select(AssetDagRunQueue.target_dag_id).where(
            AssetDagRunQueue.asset_id == asset_id, AssetDagRunQueue.target_dag_id.in_(targets)
        )))
        for target in targets:
            if target not in queued:
                session.execute(insert(AssetDagRunQueue).values(asset_id=asset_id, target_dag_id=target,
                                                                created_at=now))
        logger.info("asset %s updated by %s.%s%s (%s); queued for %s", uri, dag_id, task_id,
                    "" if map_index < 0 else f"[{map_index}]", run_id, ", ".join(targets) or "no DAG")
    return added


def create_asset_triggered_runs(engine: Engine, now: datetime) -> int:
    """Create a queued run for every active, unpaused DAG whose queued assets satisfy its condition."""
    from scheduler.db import store
    from scheduler.db.engine import retry_transient, session_scope
    from scheduler.timetables.base import DataInterval

    def pending() -> list[str]:
        with session_scope(engine, readonly=True) as session:
            return list(session.scalars(select(AssetDagRunQueue.target_dag_id).distinct()))

    created = 0
    for dag_id in retry_transient(pending, what="reading queued asset updates"):
        def unit(dag_id: str = dag_id) -> bool:
            with session_scope(engine) as session:
                dag = session.get(Dag, dag_id)
                if dag is None or not dag.is_active or dag.is_paused:
                    return False
                data = session.scalar(select(SerializedDag.data).where(SerializedDag.dag_id == dag_id))
                condition = (data or {}).get("asset_condition")
                rows = session.execute(
                    select(AssetDagRunQueue.asset_id, Asset.uri).join(Asset, Asset.id == AssetDagRunQueue.asset_id)
                    .where(AssetDagRunQueue.target_dag_id == dag_id).with_for_update(skip_locked=True)
                ).all()
                if not condition or not rows or not evaluate_condition(condition, {uri for _, uri in rows}):
                    return False
                result = session.execute(delete(AssetDagRunQueue).where(
                    AssetDagRunQueue.target_dag_id == dag_id, AssetDagRunQueue.asset_id.in_([a for a, _ in rows])
                ))
                if (result.rowcount or 0) != len(rows):  # type: ignore[attr-defined]
                    raise _Raced(dag_id)
                run_id = f"{DagRunType.ASSET_TRIGGERED.value}__{now.isoformat()}"
                store.create_dag_run(
                    session, dag_id=dag_id, run_id=run_id, run_type=DagRunType.ASSET_TRIGGERED, logical_date=now,
                    data_interval=DataInterval.exact(now), conf={}, state=DagRunState.QUEUED, run_after=now, now=now,
                    external_trigger=False,
                )
                logger.info("DAG %s: run %s created by updates of %s", dag_id, run_id,
                            ", ".join(sorted(uri for _, uri in rows)))
                return True

        try:
            created += bool(retry_transient(unit, what=f"DAG {dag_id}: creating an asset-triggered run"))
        except _Raced:
            continue  # another scheduler took these updates
        except store.DagRunAlreadyExists:
            continue  # a run at this very instant exists: the next iteration tries again
    return created


def create_asset_triggered_runs_logged(engine: Engine, now: datetime) -> None:
    """:func:`create_asset_triggered_runs` for the scheduler loop: an error is logged, never raised."""
    try:
        create_asset_triggered_runs(engine, now)
    except Exception:
        logger.exception("cannot create asset-triggered runs; trying again next iteration")


class _Raced(Exception):
    """Another scheduler consumed the queued updates first."""
