"""Checks of free-form identifiers that end up in file paths: a run_id names a folder of the task logs.

A run_id given by a user (API, UI, CLI) may hold letters, digits and ``_ . ~ : + -`` only
(Airflow's default ``allowed_run_id_pattern``), so it can never climb out of the log folder
with ``/`` or ``..`` nor carry markup. The run ids updraft makes itself
(``manual__2026-01-01T00:00:00+00:00``, ``scheduled__...``, ``backfill__...``) all match.
"""

from __future__ import annotations

import re

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_.~:+-]+")
MAX_RUN_ID_LENGTH = 250


def run_id_problem(run_id: str) -> str | None:
    """Why ``run_id`` cannot be used, or None when it is fine."""
    if not run_id.strip():
        return "the run id must not be empty"
    if len(run_id) > MAX_RUN_ID_LENGTH:
        return f"the run id is longer than {MAX_RUN_ID_LENGTH} characters"
    if not RUN_ID_PATTERN.fullmatch(run_id) or run_id in (".", ".."):
        shown = run_id if len(run_id) <= 60 else run_id[:57] + "..."
        return f"the run id {shown!r} is invalid: use only letters, digits and _ . ~ : + -"
    return None
