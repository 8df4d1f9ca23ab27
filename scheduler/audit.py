"""The audit log: one function that records who did what in the ``log`` table (the API's event logs).

Events are named ``<origin>.<action>``: origin ``api``, ``ui`` or ``cli`` (``runner`` and
``scheduler`` rows are written by those processes themselves), action such as
``dag_run.trigger``, ``dag.pause``, ``variable.set``, ``connection.delete``,
``user.create``, ``login`` or ``login.failed``. ``owner`` is the user name (the OS user
for the CLI). ``extra`` is JSON; secrets never go in it (a value under a sensitive name is
replaced by ``***`` before it is written).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from scheduler.clock import utcnow
from scheduler.db.models import Log

#: Longest event name the ``log`` table holds.
MAX_EVENT_LENGTH = 60
#: Longest ``extra`` text kept (longer ones are cut: a pasted conf is not worth megabytes of audit log).
MAX_EXTRA_LENGTH = 4000


def record_event(
    session: Session, event: str, *, owner: str | None, dag_id: str | None = None, run_id: str | None = None,
    task_id: str | None = None, map_index: int | None = None, try_number: int | None = None, extra: Any = None,
) -> Log:
    """Add one audit row in ``session`` (committed with the change it describes)."""
    from scheduler.secrets_masker import redact_value

    text = None
    if extra is not None:
        text = extra if isinstance(extra, str) else json.dumps(redact_value(extra), default=str, sort_keys=True)
        if len(text) > MAX_EXTRA_LENGTH:
            text = text[:MAX_EXTRA_LENGTH] + "…"
    row = Log(
        dttm=utcnow(), event=event[:MAX_EVENT_LENGTH], owner=None if owner is None else owner[:500],
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, try_number=try_number, extra=text,
    )
    session.add(row)
    return row


def cli_owner() -> str:
    """Who runs a CLI command: the OS user's name, or ``cli`` when it cannot be told."""
    import getpass

    try:
        return getpass.getuser() or "cli"
    except Exception:  # no user name in the environment or the password database
        return "cli"
