"""Bring the database up to date with the DAG folder: parse what changed, forget what vanished.

:func:`sync_dag_folder` is what every DAG-reading command and the scheduler call. It
compares the folder with the parse state the database remembers (mtime, size,
content hash per file), parses only new and changed files in isolated processes
(:mod:`scheduler.parsing`) and records each result; the files that disappeared
(deleted, now ignored, or skipped by safe mode) have their DAGs deactivated.

Writes are short transactions (one per :data:`WRITE_BATCH` files), so a concurrent
reader or the scheduler is never held up for long. The nothing-changed path reads the
file states in one read-only transaction, stats the files and imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.parsing import ParseResult, ParserPool, list_candidate_files, might_contain_dag

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from scheduler.config import Settings
    from scheduler.db.store import FileState

logger = logging.getLogger(__name__)

#: Parse results written per transaction.
WRITE_BATCH = 50


@dataclass
class SyncReport:
    """What one sync did. ``discovered`` = ``unchanged`` + ``parsed``; ``errors`` counts parsed files that failed."""

    discovered: int = 0
    parsed: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: int = 0
    #: files skipped unimported by safe mode (their text never mentions 'dag').
    skipped: int = 0
    #: wall-clock seconds for the whole sync, and the sum of the files' import times.
    duration: float = 0.0
    parse_seconds: float = 0.0
    #: import time of each parsed file, by fileloc.
    durations: dict[str, float] = field(default_factory=dict, repr=False)
    error_files: list[str] = field(default_factory=list, repr=False)
    removed_files: list[str] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class _Changed:
    """A new or changed file, with what was read of it for the record."""

    path: Path
    mtime: float
    size: int
    content_hash: str
    source: str | None


def sync_dag_folder(
    engine: Engine, settings: Settings, *, now: datetime, pool: ParserPool | None = None
) -> SyncReport:
    """Parse the new and changed files of ``settings.dags_folder`` and record them; see the module docstring.

    ``pool`` lets a long-running caller (the scheduler) keep its parse workers between
    syncs; without it, workers are started for this sync (only if something changed).
    """
    from scheduler.db import store
    from scheduler.db.engine import session_scope

    started = time.perf_counter()
    report = SyncReport()
    folder = settings.dags_folder
    with session_scope(engine, readonly=True) as session:
        states = store.get_file_states(session)

    changed, present, same_content = _compare(folder, states, bool(settings.get("core", "safe_mode")), report)
    report.discovered = len(present)

    # Forget vanished files first, so a DAG that moved into a changed file is free to be claimed by it.
    if set(states) - present:
        with session_scope(engine) as session:
            report.removed_files = store.deactivate_missing_files(session, present)
        report.removed = len(report.removed_files)
    if same_content:
        _record_mtimes(engine, same_content)

    if changed:
        _parse_and_record(engine, settings, changed, states, now=now, pool=pool, report=report)

    report.duration = time.perf_counter() - started
    logger.info(
        "DAG folder %s: %d files, %d parsed (%d with errors), %d unchanged, %d removed in %.2fs",
        folder, report.discovered, report.parsed, report.errors, report.unchanged, report.removed, report.duration,
    )
    return report


def _compare(
    folder: Path, states: dict[str, FileState], safe_mode: bool, report: SyncReport
) -> tuple[list[_Changed], set[str], list[tuple[str, float]]]:
    """Split the folder's files into changed ones, and the set of all present; unchanged need no read.

    A file whose mtime moved but whose size and content hash did not is unchanged; its
    new mtime is returned for recording.
    """
    changed: list[_Changed] = []
    present: set[str] = set()
    same_content: list[tuple[str, float]] = []
    for path in list_candidate_files(folder):
        key = str(path)
        try:
            stat = os.stat(path)
        except OSError:
            continue  # vanished since the listing
        state = states.get(key)
        if state is not None and state.mtime == stat.st_mtime and state.size == stat.st_size:
            present.add(key)
            report.unchanged += 1
            continue
        try:
            data: bytes | None = path.read_bytes()
        except OSError:
            data = None  # the parser will report why it cannot be read
        if safe_mode and data is not None and not might_contain_dag(data):
            report.skipped += 1
            continue
        digest = hashlib.sha256(data).hexdigest() if data is not None else ""
        present.add(key)
        if state is not None and data is not None and state.size == stat.st_size and state.content_hash == digest:
            report.unchanged += 1
            same_content.append((key, stat.st_mtime))
            continue
        source = data.decode("utf-8", errors="replace") if data is not None else None
        changed.append(_Changed(path, stat.st_mtime, stat.st_size, digest, source))
    return changed, present, same_content


def _record_mtimes(engine: Engine, same_content: list[tuple[str, float]]) -> None:
    from scheduler.db import store
    from scheduler.db.engine import session_scope

    with session_scope(engine) as session:
        for fileloc, mtime in same_content:
            store.touch_file(session, fileloc, mtime=mtime)


class _Writer:
    """Records parse results in a thread of its own, so the parse workers never wait for the database.

    Each transaction takes what has arrived, up to :data:`WRITE_BATCH` results: short
    transactions, and no waiting to fill a batch.
    """

    _DONE: Any = object()

    def __init__(self, record: Callable[[Session, ParseResult], None], engine: Engine) -> None:
        self._record = record
        self._engine = engine
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="updraft-parse-writer", daemon=True)
        self._thread.start()

    def put(self, result: ParseResult) -> None:
        self._queue.put(result)

    def finish(self) -> None:
        """Write what is queued, then stop; re-raises the error a write met."""
        self._queue.put(self._DONE)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:

        done = False
        while not done:
            batch: list[ParseResult] = []
            item = self._queue.get()
            while True:
                if item is self._DONE:
                    done = True
                    break
                batch.append(item)
                if len(batch) >= WRITE_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch and self.error is None:
                try:
                    self._write(batch)
                except BaseException as exc:  # noqa: B036 - handed to the calling thread
                    self.error = exc

    def _write(self, batch: list[ParseResult]) -> None:
        """Record a batch in one transaction. Another scheduler parsing the same new file may insert
        its DAG row first (a unique violation here): the batch is then written again, and finds it."""
        from sqlalchemy.exc import IntegrityError

        from scheduler.db.engine import retry_transient, session_scope

        def unit() -> None:
            with session_scope(self._engine) as session:
                for result in batch:
                    self._record(session, result)

        try:
            retry_transient(unit, what="recording parsed DAG files")
        except IntegrityError as exc:
            logger.info("another scheduler recorded some of these DAG files first (%s); recording them again",
                        str(exc.orig).splitlines()[0] if exc.orig is not None else exc)
            retry_transient(unit, what="recording parsed DAG files")


def _parse_and_record(
    engine: Engine,
    settings: Settings,
    changed: list[_Changed],
    states: dict[str, FileState],
    *,
    now: datetime,
    pool: ParserPool | None,
    report: SyncReport,
) -> None:
    from scheduler.db import store
    from scheduler.db.engine import session_scope

    by_file = {str(item.path): item for item in changed}
    owner_before = {dag_id: fileloc for fileloc, state in states.items() for dag_id in state.dag_ids}
    # A DAG that moved between two files parsed in this sync may be recorded before its old file
    # gave it up (the store then reports a duplicate id); such results are recorded again at the end.
    again: list[ParseResult] = []
    own_pool = pool is None
    if pool is None:
        pool = ParserPool(
            processes=settings.parsing_processes,
            timeout=settings.dagbag_import_timeout,
            default_timezone=str(settings.get("core", "default_timezone")),
            dags_folder=settings.dags_folder,
        )
    paused = bool(settings.get("core", "dags_are_paused_at_creation"))

    def record(session: Session, result: ParseResult) -> None:
        item = by_file[result.fileloc]
        store.record_parse_result(
            session,
            fileloc=result.fileloc,
            mtime=item.mtime,
            size=item.size,
            content_hash=item.content_hash,
            dags=result.dags,
            error=result.error,
            source=item.source,
            duration=result.duration,
            now=now,
            paused_at_creation=paused,
        )

    writer = _Writer(record, engine)
    try:
        for result in pool.parse([item.path for item in changed]):
            writer.put(result)
            report.parsed += 1
            report.parse_seconds += result.duration
            report.durations[result.fileloc] = result.duration
            if result.error is not None:
                report.errors += 1
                report.error_files.append(result.fileloc)
            previous = (owner_before.get(str(d.get("dag_id"))) for d in result.dags)
            if any(p is not None and p != result.fileloc and p in by_file for p in previous):
                again.append(result)
            if writer.error is not None:
                break  # stops the parse; finish() raises the error
    finally:
        try:
            writer.finish()
        finally:
            if own_pool:
                pool.close()
    if again:
        with session_scope(engine) as session:
            for result in again:
                record(session, result)
