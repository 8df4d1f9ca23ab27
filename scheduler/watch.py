"""What wakes the sleeping scheduler: a changed DAG folder, and a write to the database by someone else.

The scheduler loop sleeps until its next fire time. Two things can make work due
sooner, and each has a watcher here:

* :class:`FolderWatcher`: file-system notifications (inotify on Linux, FSEvents on
  macOS, through the ``watchdog`` library) on the DAG folder. An event only says
  "look again": the loop then compares the folder with the parse state it keeps
  (mtime, size, content hash), so missed or duplicated events cost nothing but a
  scan. Where notifications are unavailable :meth:`FolderWatcher.start` returns
  False and the loop scans the folder about once a second instead.
* :class:`DatabaseWatcher`: notices commits by other processes (a CLI ``dags
  trigger``, ``unpause``, a backfill, later the web server). On SQLite it reads
  ``PRAGMA data_version``, which changes exactly when another connection committed,
  at the cost of a read of shared memory. On PostgreSQL it compares a fingerprint
  of the run and DAG tables (three index-only aggregates).

:class:`Wakeup` is the event the watchers set and the loop waits on.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)

#: Folder changes that never matter: bytecode caches and editor droppings.
_IGNORED_PARTS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".idea", ".vscode"})
_IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".swx", "~", ".tmp")


class Wakeup:
    """An event with reasons: watchers call :meth:`set`, the loop :meth:`wait` s and learns why it woke."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reasons: set[str] = set()

    def set(self, reason: str) -> None:
        with self._lock:
            self._reasons.add(reason)
        self._event.set()

    def wait(self, timeout: float) -> builtins.set[str]:
        """Block until set or ``timeout`` seconds passed; return (and forget) the reasons given since the last wait."""
        self._event.wait(max(0.0, timeout))
        with self._lock:
            self._event.clear()
            reasons, self._reasons = self._reasons, set()
        return reasons


def _relevant(path: str) -> bool:
    parts = Path(path).parts
    if any(part in _IGNORED_PARTS for part in parts):
        return False
    return not path.endswith(_IGNORED_SUFFIXES)


class FolderWatcher:
    """Calls ``on_change()`` (from a background thread) when anything that matters changes under ``folder``."""

    def __init__(self, folder: Path, on_change: Callable[[], None]) -> None:
        self.folder = folder
        self._on_change = on_change
        self._observer: Any = None

    def start(self) -> bool:
        """Start watching; False (logged) when notifications cannot be had here, so the caller polls instead."""
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError as exc:  # pragma: no cover - watchdog is a dependency
            logger.warning("file-system notifications unavailable (%s); scanning the DAG folder instead", exc)
            return False

        on_change = self._on_change

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
                if any(p and _relevant(p) for p in paths):
                    on_change()

        if not self.folder.is_dir():
            logger.warning("DAG folder %s does not exist; scanning for it instead of watching", self.folder)
            return False
        observer = Observer()
        try:
            observer.schedule(Handler(), str(self.folder), recursive=True)
            observer.daemon = True
            observer.start()
        except OSError as exc:
            # e.g. the inotify watch or instance limit is reached (ENOSPC / EMFILE).
            logger.warning(
                "cannot watch DAG folder %s for changes (%s); scanning it about once a second instead",
                self.folder, exc,
            )
            try:
                observer.stop()
            except Exception:  # noqa: BLE001 - best effort on a failed start
                pass
            return False
        self._observer = observer
        logger.info("watching DAG folder %s for changes", self.folder)
        return True

    def alive(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)


#: What a scheduler must notice that it did not do itself or hear from its executor: a run
#: created, set to queued/running or ended by a user (a trigger, a backfill, a clear, a
#: mark; a user's change to a running run's instances touches the run's updated_at), a DAG
#: paused or unpaused, a pool's slots changed. Task runners never write these.
_FOREIGN_CHANGES = (
    "SELECT (SELECT max(id) FROM dag_run),"
    " (SELECT max(updated_at) FROM dag_run WHERE state IN ('queued', 'running')),"
    " (SELECT count(*) FROM dag_run WHERE state IN ('queued', 'running')),"
    " (SELECT count(*) FROM dag WHERE is_paused),"
    " (SELECT count(*) FROM slot_pool), (SELECT sum(slots) FROM slot_pool)"
)


class DatabaseWatcher:
    """Tells whether another process committed to the database since :meth:`mark`.

    ``runner_writes_announced``: the executor tells the loop when a task runner recorded a
    state (the LocalExecutor does), so commits by task runners (claims, records, XComs;
    two per try) need not wake it: only changes in :data:`_FOREIGN_CHANGES` count. On
    SQLite ``PRAGMA data_version`` (free) says whether anything at all was committed, and
    only then is that query run. Without it (Celery workers report nothing to the
    scheduler) every SQLite commit counts.
    """

    def __init__(self, engine: Engine, *, runner_writes_announced: bool = False) -> None:
        self.engine = engine
        self.foreign_only = runner_writes_announced
        self._sqlite: sqlite3.Connection | None = None
        self._baseline: object = None
        self._version: object = None
        self._foreign: object = None

    def _sqlite_connection(self) -> sqlite3.Connection | None:
        if self._sqlite is None and self.engine.dialect.name == "sqlite":
            database = self.engine.url.database
            if not database or database == ":memory:":
                return None
            # A connection of our own, outside SQLAlchemy's pool: data_version is per connection.
            self._sqlite = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        return self._sqlite

    def _fingerprint(self) -> object:
        connection = self._sqlite_connection()
        if connection is not None:
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            if not self.foreign_only:
                return version
            if version != self._version or self._foreign is None:
                self._version = version
                self._foreign = tuple(connection.execute(_FOREIGN_CHANGES).fetchone())
            return self._foreign
        from sqlalchemy import text

        with self.engine.connect() as conn:
            row = conn.execute(text(_FOREIGN_CHANGES)).one()
            conn.rollback()
        return tuple(row)

    def mark(self) -> None:
        """Remember the database as it is now (call after the loop's own writes)."""
        try:
            self._baseline = self._fingerprint()
        except Exception as exc:  # noqa: BLE001 - the loop copes with a database that is away
            logger.debug("database watcher cannot read the database: %s", exc)
            self._baseline = None

    def changed(self) -> bool:
        """True when something was committed since :meth:`mark` (or the database could not be read)."""
        try:
            return self._fingerprint() != self._baseline
        except Exception as exc:  # noqa: BLE001
            logger.debug("database watcher cannot read the database: %s", exc)
            return True

    def close(self) -> None:
        connection, self._sqlite = self._sqlite, None
        if connection is not None:
            connection.close()
