"""Queries on the metadata database: DAGs, their files, serialized forms and import errors.

Every function takes the session as its first argument and never commits; the
caller's :func:`scheduler.db.engine.session_scope` does. Datetimes passed in must
be timezone-aware (``now`` is always passed in, never read here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scheduler.db.models import (
    SLOTTED_RUN_TYPES,
    Dag,
    DagCode,
    DagFile,
    DagRun,
    ParseImportError,
    SerializedDag,
    Variable,
)
from scheduler.exceptions import DagNotFound, UpdraftError
from scheduler.serialization import dag_hash
from scheduler.states import DagRunState, DagRunType

if TYPE_CHECKING:
    from scheduler.timetables.base import DagRunInfo, DataInterval

#: Rows per IN (...) list, well under SQLite's bound-parameter limit.
_CHUNK = 500


@dataclass(frozen=True)
class FileState:
    """What the database remembers of a DAG file from its last parse."""

    fileloc: str
    mtime: float
    size: int
    content_hash: str
    dag_ids: tuple[str, ...]


def duplicate_dag_message(dag_id: str, other_fileloc: str) -> str:
    return f"DAG id '{dag_id}' already defined in file {other_fileloc}"


def get_file_states(session: Session) -> dict[str, FileState]:
    """The parse state of every known DAG file, by fileloc."""
    rows = session.execute(
        select(DagFile.fileloc, DagFile.mtime, DagFile.size, DagFile.content_hash, DagFile.dag_ids)
    )
    return {
        row.fileloc: FileState(row.fileloc, row.mtime, row.size, row.content_hash, tuple(row.dag_ids or ()))
        for row in rows
    }


def touch_file(session: Session, fileloc: str, *, mtime: float) -> bool:
    """Record a new mtime for a file whose content did not change (no parse needed).

    Returns False when the file is not known (it was forgotten meanwhile).
    """
    result = session.execute(update(DagFile).where(DagFile.fileloc == fileloc).values(mtime=mtime))
    return isinstance(result, CursorResult) and result.rowcount == 1


def record_parse_result(
    session: Session,
    *,
    fileloc: str,
    mtime: float,
    size: int,
    content_hash: str,
    dags: list[dict[str, Any]],
    error: str | None,
    source: str | None,
    duration: float,
    now: datetime,
    paused_at_creation: bool,
) -> None:
    """Store the outcome of parsing one file.

    ``dags`` are serialized DAG dicts (keys: dag_id, fileloc, owners, description,
    tags, schedule, timetable_summary, timetable_description, timezone,
    max_active_runs, max_active_tasks, is_paused_upon_creation). ``error`` is the
    file's import error text, if any; a file may have both DAGs and an error (one
    of its DAGs failed).

    * Each DAG is upserted; a new one is paused per its ``is_paused_upon_creation``
      (None: ``paused_at_creation``), an existing one keeps its is_paused. Its
      serialized form is rewritten only when its hash changed.
    * A DAG id already active in another file stays with that file; this file
      gets an import error "DAG id X already defined in file Y".
    * DAGs this file defined before but not now: without an error they become
      inactive; with an error they stay as they were (the last good version is
      kept: they may be the ones that failed) and are flagged has_import_errors.
    * dag_code holds the source of the last parse that yielded a DAG (kept when the
      whole file fails, deleted when the file cleanly defines no DAG); dag_file
      records mtime, size and content hash, so an unchanged file can be skipped.
    * The file's import_error row is written when there is an error, deleted otherwise.
    """
    error = error or None
    previous = {
        dag.dag_id: dag
        for dag in session.scalars(select(Dag).where(Dag.fileloc == fileloc, Dag.is_active.is_(True)))
    }
    incoming_ids = sorted({str(data["dag_id"]) for data in dags})
    elsewhere = {
        dag.dag_id: dag
        for dag in _in_chunks(
            incoming_ids, lambda ids: session.scalars(select(Dag).where(Dag.dag_id.in_(ids), Dag.fileloc != fileloc))
        )
    }

    messages = [error] if error else []
    accepted: dict[str, dict[str, Any]] = {}
    for data in dags:
        dag_id = str(data["dag_id"])
        other = elsewhere.get(dag_id)
        if dag_id in accepted:
            messages.append(duplicate_dag_message(dag_id, fileloc))
        elif other is not None and other.is_active:
            messages.append(duplicate_dag_message(dag_id, other.fileloc))
        else:
            accepted[dag_id] = data
    stack_trace = "\n".join(messages) if messages else None
    has_errors = stack_trace is not None

    for dag_id, data in accepted.items():
        row = previous.get(dag_id) or elsewhere.get(dag_id) or session.get(Dag, dag_id)
        _upsert_dag(session, row, data, fileloc=fileloc, has_errors=has_errors, now=now, paused_at_creation=paused_at_creation)
    _upsert_serialized(session, accepted, fileloc=fileloc, now=now)
    from scheduler.db.assets import sync_references

    sync_references(session, accepted, now)  # assets the DAGs schedule on or update

    owned = set(accepted)
    for dag_id, row in previous.items():
        if dag_id in accepted:
            continue
        if error is not None:
            row.has_import_errors = True
            owned.add(dag_id)
        else:
            row.is_active = False
            row.has_import_errors = False

    if accepted:
        if source is not None:
            _upsert_code(session, fileloc, source, now)
    elif error is None:
        session.execute(delete(DagCode).where(DagCode.fileloc == fileloc))

    _upsert_file(
        session,
        fileloc=fileloc,
        mtime=mtime,
        size=size,
        content_hash=content_hash,
        now=now,
        duration=duration,
        dag_ids=sorted(owned),
    )
    _set_import_error(session, fileloc, stack_trace, now)


def _upsert_dag(
    session: Session,
    row: Dag | None,
    data: dict[str, Any],
    *,
    fileloc: str,
    has_errors: bool,
    now: datetime,
    paused_at_creation: bool,
) -> None:
    if row is None:
        paused = data.get("is_paused_upon_creation")
        row = Dag(dag_id=str(data["dag_id"]), is_paused=paused_at_creation if paused is None else bool(paused))
        session.add(row)
    row.is_active = True
    row.fileloc = fileloc
    row.owners = ", ".join(data.get("owners") or ())
    row.description = data.get("description")
    row.tags = list(data.get("tags") or ())
    row.schedule = data.get("schedule")
    row.timetable_summary = data.get("timetable_summary")
    row.timetable_description = data.get("timetable_description")
    row.timezone = data.get("timezone") or "UTC"
    row.max_active_runs = data.get("max_active_runs")
    row.max_active_tasks = data.get("max_active_tasks")
    row.has_import_errors = has_errors
    row.last_parsed_time = now


def _upsert_serialized(session: Session, accepted: dict[str, dict[str, Any]], *, fileloc: str, now: datetime) -> None:
    if not accepted:
        return
    stored = {
        row.dag_id: (row.dag_hash, row.fileloc)
        for row in _in_chunks(
            sorted(accepted),
            lambda ids: session.execute(
                select(SerializedDag.dag_id, SerializedDag.dag_hash, SerializedDag.fileloc).where(
                    SerializedDag.dag_id.in_(ids)
                )
            ),
        )
    }
    for dag_id, data in accepted.items():
        digest = dag_hash(data)
        if dag_id not in stored:
            session.add(SerializedDag(dag_id=dag_id, data=data, dag_hash=digest, fileloc=fileloc, last_updated=now))
        elif stored[dag_id] != (digest, fileloc):
            session.execute(
                update(SerializedDag)
                .where(SerializedDag.dag_id == dag_id)
                .values(data=data, dag_hash=digest, fileloc=fileloc, last_updated=now)
            )


def _upsert_code(session: Session, fileloc: str, source: str, now: datetime) -> None:
    row = session.get(DagCode, fileloc)
    if row is None:
        session.add(DagCode(fileloc=fileloc, source=source, last_updated=now))
    elif row.source != source:
        row.source = source
        row.last_updated = now


def _upsert_file(
    session: Session,
    *,
    fileloc: str,
    mtime: float,
    size: int,
    content_hash: str,
    now: datetime,
    duration: float,
    dag_ids: list[str],
) -> None:
    row = session.get(DagFile, fileloc)
    if row is None:
        row = DagFile(fileloc=fileloc)
        session.add(row)
    row.mtime = mtime
    row.size = size
    row.content_hash = content_hash
    row.last_parsed = now
    row.last_duration = duration
    row.dag_ids = dag_ids


def _set_import_error(session: Session, fileloc: str, stack_trace: str | None, now: datetime) -> None:
    row = session.scalar(select(ParseImportError).where(ParseImportError.filename == fileloc))
    if stack_trace is None:
        if row is not None:
            session.delete(row)
        return
    if row is None:
        session.add(ParseImportError(filename=fileloc, stack_trace=stack_trace, timestamp=now))
    else:
        row.stack_trace = stack_trace
        row.timestamp = now


def deactivate_missing_files(session: Session, present: set[str]) -> list[str]:
    """Forget the files no longer in the DAG folder; return their filelocs, sorted.

    For each known file not in ``present``: its DAGs become inactive, and its
    dag_file, dag_code and import_error rows are deleted. (Serialized DAGs and run
    history stay.)
    """
    known = session.scalars(select(DagFile.fileloc)).all()
    removed = sorted(set(known) - set(present))
    for chunk in _chunked(removed):
        session.execute(
            update(Dag).where(Dag.fileloc.in_(chunk)).values(is_active=False, has_import_errors=False)
        )
        session.execute(delete(DagCode).where(DagCode.fileloc.in_(chunk)))
        session.execute(delete(ParseImportError).where(ParseImportError.filename.in_(chunk)))
        session.execute(delete(DagFile).where(DagFile.fileloc.in_(chunk)))
    return removed


def list_dags(session: Session, *, only_active: bool = True) -> list[Dag]:
    """DAGs by dag_id; only the active ones (defined by a file that exists) unless ``only_active=False``."""
    query = select(Dag).order_by(Dag.dag_id)
    if only_active:
        query = query.where(Dag.is_active.is_(True))
    return list(session.scalars(query))


def get_dag(session: Session, dag_id: str) -> Dag | None:
    return session.get(Dag, dag_id)


def get_serialized_dag(session: Session, dag_id: str) -> dict[str, Any] | None:
    """The last good serialized form of the DAG, or None if it was never parsed successfully."""
    return session.scalar(select(SerializedDag.data).where(SerializedDag.dag_id == dag_id))


def list_import_errors(session: Session) -> list[ParseImportError]:
    return list(session.scalars(select(ParseImportError).order_by(ParseImportError.filename)))


def set_paused(session: Session, dag_id: str, paused: bool) -> None:
    """Pause or unpause a DAG; DagNotFound if there is no such DAG."""
    result = session.execute(update(Dag).where(Dag.dag_id == dag_id).values(is_paused=paused))
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        raise DagNotFound(dag_id)


def list_dag_runs(session: Session, dag_id: str, *, state: str | None = None) -> list[DagRun]:
    """The DAG's runs, newest first (by run_after, then id); only those in ``state`` when given.

    An unknown state raises ValueError naming it.
    """
    query = select(DagRun).where(DagRun.dag_id == dag_id)
    if state is not None:
        query = query.where(DagRun.state == DagRunState(state))
    return list(session.scalars(query.order_by(DagRun.run_after.desc(), DagRun.id.desc())))


class DagRunAlreadyExists(UpdraftError):
    """A run with this run_id (or, for a scheduled/backfill run, this logical date) already exists."""

    def __init__(self, dag_id: str, run_id: str, *, logical_date: datetime | None = None) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.logical_date = logical_date
        if logical_date is None:
            message = f"DAGRun with DAG ID: '{dag_id}' and DAGRun ID: '{run_id}' already exists"
        else:
            message = (
                f"DAGRun with DAG ID: '{dag_id}' and logical date: '{logical_date.isoformat()}' already exists"
            )
        super().__init__(message)


def latest_slotted_dag_run(session: Session, dag_id: str) -> DagRun | None:
    """The DAG's scheduled or backfill run with the latest logical_date, or None."""
    query = (
        select(DagRun)
        .where(DagRun.dag_id == dag_id, DagRun.run_type.in_(SLOTTED_RUN_TYPES), DagRun.logical_date.is_not(None))
        .order_by(DagRun.logical_date.desc(), DagRun.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def create_dag_run(
    session: Session,
    *,
    dag_id: str,
    run_id: str,
    run_type: DagRunType | str,
    logical_date: datetime | None,
    data_interval: DataInterval | None,
    conf: dict[str, Any] | None,
    state: DagRunState | str,
    run_after: datetime,
    now: datetime,
    external_trigger: bool,
) -> DagRun:
    """Insert one DagRun (queued_at = ``now``) and return it, flushed.

    The insert runs in a SAVEPOINT: a duplicate (dag_id, run_id), or a second
    scheduled/backfill run at the same logical_date, raises DagRunAlreadyExists and
    leaves the caller's transaction usable. A manual run never claims a slot.
    """
    run = DagRun(
        dag_id=dag_id,
        run_id=run_id,
        run_type=DagRunType(run_type),
        state=DagRunState(state),
        logical_date=logical_date,
        data_interval_start=None if data_interval is None else data_interval.start,
        data_interval_end=None if data_interval is None else data_interval.end,
        queued_at=now,
        run_after=run_after,
        conf=dict(conf or {}),
        external_trigger=external_trigger,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        if session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)) is not None:
            raise DagRunAlreadyExists(dag_id, run_id) from None
        if logical_date is not None and run.run_type.value in SLOTTED_RUN_TYPES:
            slot = select(DagRun.id).where(
                DagRun.dag_id == dag_id,
                DagRun.logical_date == logical_date,
                DagRun.run_type.in_(SLOTTED_RUN_TYPES),
            )
            if session.scalar(slot) is not None:
                raise DagRunAlreadyExists(dag_id, run_id, logical_date=logical_date) from None
        raise
    return run


# --- what the scheduler loop asks ------------------------------------------------------------

#: The run states that count against max_active_runs.
ACTIVE_RUN_STATES = (DagRunState.QUEUED.value, DagRunState.RUNNING.value)


@dataclass(frozen=True)
class DagHead:
    """What the scheduler checks each iteration to decide whether a DAG needs looking at."""

    dag_id: str
    dag_hash: str
    max_active_runs: int | None
    schedule_error: str | None


def schedulable_dag_heads(session: Session) -> list[DagHead]:
    """Every active, unpaused DAG that has a serialized form (those never parsed successfully are left out), by dag_id."""
    query = (
        select(Dag.dag_id, SerializedDag.dag_hash, Dag.max_active_runs, Dag.schedule_error)
        .join(SerializedDag, SerializedDag.dag_id == Dag.dag_id)
        .where(Dag.is_active.is_(True), Dag.is_paused.is_(False))
        .order_by(Dag.dag_id)
    )
    return [DagHead(*row) for row in session.execute(query)]


def active_run_counts(session: Session) -> dict[str, int]:
    """dag_id -> how many of its runs are queued or running (DAGs without any are absent)."""
    query = (
        select(DagRun.dag_id, func.count())
        .where(DagRun.state.in_(ACTIVE_RUN_STATES))
        .group_by(DagRun.dag_id)
    )
    return {dag_id: int(count) for dag_id, count in session.execute(query)}


def set_schedule_error(session: Session, dag_id: str, error: str | None) -> None:
    """Record (or clear, with None) why the DAG's schedule cannot be evaluated."""
    session.execute(update(Dag).where(Dag.dag_id == dag_id).values(schedule_error=error))


def count_dag_runs(session: Session, dag_id: str, states: Sequence[str]) -> int:
    """How many of the DAG's runs are in one of ``states``."""
    query = select(func.count()).select_from(DagRun).where(DagRun.dag_id == dag_id, DagRun.state.in_(states))
    return int(session.scalar(query) or 0)


def next_dagrun_values(info: DagRunInfo | None) -> dict[str, Any]:
    """The dag table's next-run columns for ``info`` (all None when there is no next run)."""
    return {
        "next_dagrun": None if info is None else info.logical_date,
        "next_dagrun_data_interval_start": None if info is None else info.data_interval.start,
        "next_dagrun_data_interval_end": None if info is None else info.data_interval.end,
        "next_dagrun_create_after": None if info is None else info.run_after,
    }


def set_next_dagrun(session: Session, dag_id: str, info: DagRunInfo | None) -> None:
    """Record the DAG's next scheduled run (all None when there is none); DagNotFound if the DAG is gone."""
    values = next_dagrun_values(info)
    result = session.execute(update(Dag).where(Dag.dag_id == dag_id).values(**values))
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        raise DagNotFound(dag_id)


def dags_with_queued_runs(session: Session) -> list[tuple[str, int | None]]:
    """(dag_id, max_active_runs) of every active, unpaused DAG that has queued runs, by dag_id."""
    has_queued = select(DagRun.id).where(DagRun.dag_id == Dag.dag_id, DagRun.state == DagRunState.QUEUED).exists()
    query = (
        select(Dag.dag_id, Dag.max_active_runs)
        .where(Dag.is_active.is_(True), Dag.is_paused.is_(False), has_queued)
        .order_by(Dag.dag_id)
    )
    return [(row.dag_id, row.max_active_runs) for row in session.execute(query)]


def oldest_queued_dag_runs(session: Session, dag_id: str, *, limit: int) -> list[DagRun]:
    """Up to ``limit`` of the DAG's queued runs, oldest logical_date first (then queued_at, then id)."""
    query = (
        select(DagRun)
        .where(DagRun.dag_id == dag_id, DagRun.state == DagRunState.QUEUED)
        .order_by(DagRun.logical_date, DagRun.queued_at, DagRun.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def start_dag_run(session: Session, run_pk: int, *, now: datetime) -> bool:
    """queued -> running for the run with primary key ``run_pk`` (compare-and-set), start_date = ``now``.

    Returns False when the run was not queued any more (another scheduler started it,
    or a user changed it); the caller decides whether that matters.
    """
    result = session.execute(
        update(DagRun)
        .where(DagRun.id == run_pk, DagRun.state == DagRunState.QUEUED)
        .values(state=DagRunState.RUNNING, start_date=now, updated_at=now)
    )
    return isinstance(result, CursorResult) and result.rowcount == 1


def get_variable(session: Session, key: str) -> str | None:
    """A Variable's value (decrypted), or None when no Variable has that key.

    The value of a Variable whose key looks sensitive is masked in this process's log output from then on.
    """
    from scheduler.secrets_masker import is_sensitive, mask_secret
    from scheduler.variables import value_of

    var = session.scalar(select(Variable).where(Variable.key == key))
    if var is None:
        return None
    value = value_of(var)
    if value is not None and is_sensitive(key):
        mask_secret(value, key)
    return value


def _chunked(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _in_chunks(items: Sequence[str], query: Callable[[Sequence[str]], Iterable[Any]]) -> Iterator[Any]:
    for chunk in _chunked(items):
        yield from query(chunk)


# --- backfill ---------------------------------------------------------------------------------


def slotted_dag_runs_between(session: Session, dag_id: str, start: datetime, end: datetime) -> list[DagRun]:
    """The DAG's scheduled and backfill runs (the slot holders) with start <= logical_date <= end, oldest first."""
    query = (
        select(DagRun)
        .where(
            DagRun.dag_id == dag_id,
            DagRun.run_type.in_(SLOTTED_RUN_TYPES),
            DagRun.logical_date >= start,
            DagRun.logical_date <= end,
        )
        .order_by(DagRun.logical_date, DagRun.id)
    )
    return list(session.scalars(query))


def requeue_dag_run(session: Session, run_pk: int, *, expected_state: DagRunState | str, now: datetime) -> bool:
    """``expected_state`` -> queued for the run with primary key ``run_pk`` (compare-and-set), to run again.

    start_date and end_date are cleared, queued_at = ``now``, and every task instance of
    the run goes back to state 'none' (one UPDATE; nothing is deleted). Returns False,
    changing nothing, when the run is gone or not in ``expected_state`` any more.
    """
    from scheduler.db.models import TaskInstance
    from scheduler.states import TaskInstanceState

    key = session.execute(select(DagRun.dag_id, DagRun.run_id).where(DagRun.id == run_pk)).one_or_none()
    if key is None:
        return False
    result = session.execute(
        update(DagRun)
        .where(DagRun.id == run_pk, DagRun.state == DagRunState(expected_state))
        .values(state=DagRunState.QUEUED, start_date=None, end_date=None, queued_at=now, updated_at=now)
    )
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        return False
    session.execute(
        update(TaskInstance)
        .where(TaskInstance.dag_id == key.dag_id, TaskInstance.run_id == key.run_id)
        .values(state=TaskInstanceState.NONE, updated_at=now)
    )
    return True
