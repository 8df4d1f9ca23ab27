"""The metadata database: engine and unit of work (engine), schema (models), queries (store), migrations (migrate).

Import the submodules for the rest; this package only re-exports what nearly every caller needs.
"""

from __future__ import annotations

from scheduler.db.engine import make_engine, session_scope

__all__ = ["make_engine", "session_scope"]
