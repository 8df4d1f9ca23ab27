"""Per-process caches of what pages read again and again and what cannot change under its key.

Each gunicorn worker keeps its own (nothing is shared between processes, so nothing needs
invalidating across them): every entry is found under a key that changes whenever the value
would, so an entry is never wrong, only unused, and the least recently used ones are dropped
once the cache holds more than its budget.

* :func:`serialized_dag`: a DAG's decoded serialized form, under its ``dag_hash`` (the sha256
  of that very data, rewritten with it). Decoding a 50-task DAG's JSON on every page cost
  ~0.5 ms; reading the 64-character hash costs a primary-key lookup.
* :func:`grid_columns` (used by ``webserver.ui_grid``): the grid cells of finished runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from flask import current_app
from sqlalchemy import select

from scheduler.db.models import SerializedDag

#: Serialized DAGs kept per process.
SERIALIZED_DAGS = 256
#: Grid cells (one per task and finished run) kept per process, with their JSON text: at most ~300 bytes
#: each (a 100 x 50 grid retained 1.6 MB in all), so ~15 MB per worker when full.
GRID_CELLS = 50_000


class LruCache:
    """A dict with a budget: each entry weighs ``weight`` (1 unless given); once the total passes
    ``budget`` the least recently used entries go. Thread-safe (one lock around each call)."""

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"a cache budget must be at least 1, got {budget}")
        self.budget = budget
        self.weight = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any, weight: int = 1) -> None:
        if weight > self.budget:
            return  # would evict everything else and still not fit
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            self._entries[key] = (value, weight)
            self.weight += weight
            while self.weight > self.budget:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.weight -= dropped

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.weight = 0


def _app_cache(name: str, budget: int) -> LruCache:
    """The application's cache called ``name`` (one per app, so tests' apps never share one)."""
    extensions = current_app.extensions
    found = extensions.get(name)
    if found is None:
        found = extensions.setdefault(name, LruCache(budget))
    return found  # type: ignore[no-any-return]


def grid_columns() -> LruCache:
    return _app_cache("updraft_grid_columns", GRID_CELLS)


def serialized_dag(session: Any, dag_id: str, digest: str | None = None) -> dict[str, Any] | None:
    """The DAG's serialized data (None when it has none). Shared between requests: read it, never change it.

    ``digest``: its ``dag_hash`` when the caller already read it (with the DAG's row), saving a query.
    """
    cache = _app_cache("updraft_serialized_dags", SERIALIZED_DAGS)
    if digest is None:
        digest = session.scalar(select(SerializedDag.dag_hash).where(SerializedDag.dag_id == dag_id))
    if digest is None:
        return None
    data = cache.get((dag_id, digest))
    if data is None:
        # Hash and data from one row of one statement: a DAG re-serialized meanwhile is stored under its new hash.
        row = session.execute(select(SerializedDag.dag_hash, SerializedDag.data)
                              .where(SerializedDag.dag_id == dag_id)).first()
        if row is None:
            return None
        digest, data = row
        data = data or {}
        cache.put((dag_id, digest), data)
    return data  # type: ignore[no-any-return]
