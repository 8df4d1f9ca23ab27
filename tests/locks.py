"""A SQLite write lock held by another connection, for tests of what meets "database is locked".

The code under test must give up on a lock at once (``busy_timeout`` 0) for SQLite to raise the error
instead of waiting. Its retries are seen through their log lines ("transient database error ...;
retrying", logged just before the back-off): after ``release_after`` of them the lock is dropped, so
the next attempt finds the database free. With ``release_after`` None the lock stays until ``stop()``.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

RETRY_LOGGER = "scheduler.db.engine"


class HeldWriteLock(logging.Handler):
    def __init__(self, database: str | Path, release_after: int | None = None) -> None:
        super().__init__(logging.WARNING)
        self.retries: list[str] = []
        self.release_after = release_after
        self.holder = sqlite3.connect(database, isolation_level=None)
        self.holder.execute("BEGIN IMMEDIATE")
        logging.getLogger(RETRY_LOGGER).addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "transient database error" not in message:
            return
        self.retries.append(message)
        if self.release_after is not None and len(self.retries) >= self.release_after:
            self.unlock()

    def unlock(self) -> None:
        if self.holder.in_transaction:
            self.holder.execute("ROLLBACK")

    def stop(self) -> None:
        logging.getLogger(RETRY_LOGGER).removeHandler(self)
        self.unlock()
        self.holder.close()
