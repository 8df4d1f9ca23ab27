"""The ``env`` fixture of the task runner tests: a migrated database, folders for DAGs, logs and markers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from .harness import Env, make_settings


@pytest.fixture
def env(tmp_path: Path, db_url: str, db_engine: Engine) -> Env:
    for name in ("dags", "logs", "markers"):
        (tmp_path / name).mkdir()
    return Env(tmp_path, db_url, db_engine, make_settings(tmp_path, db_url), tmp_path / "dags",
               tmp_path / "logs", tmp_path / "markers")
