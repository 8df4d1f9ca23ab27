"""Airflow-style log lines, shared by ``dags test`` and the task runner.

``[2026-11-25T22:00:00.123+0000] {name} LEVEL - message`` (UTC), with the traceback
of ``exc_info`` on the following lines. Stdlib only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TextIO


class AirflowFormatter(logging.Formatter):
    """``[2026-11-25T22:00:00.123+0000] {name} LEVEL - message``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        line = f"[{stamp}.{int(record.msecs):03d}+0000] {{{record.name}}} {record.levelname} - {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def standalone_logger(name: str, out: TextIO, level: int = logging.INFO) -> logging.Logger:
    """A logger outside the logging tree (no global state, no propagation) writing to ``out``."""
    log = logging.Logger(name, level)
    handler = logging.StreamHandler(out)
    handler.setFormatter(AirflowFormatter())
    log.addHandler(handler)
    return log
