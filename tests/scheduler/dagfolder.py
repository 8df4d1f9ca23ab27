"""What the scheduler tests share: a DAG folder, settings pointing at it, and small DAG files."""

from __future__ import annotations

import os
from pathlib import Path

from scheduler.config import Settings, load_settings
from tests.backend import database_environ


def dag_source(
    dag_id: str, *, schedule: str = "@daily", catchup: bool = True, max_active_runs: int = 50,
    start: tuple[int, int, int] = (2024, 5, 1),
) -> str:
    """A one-task (EmptyOperator) DAG file."""
    return (
        "from datetime import datetime\n"
        "from scheduler import DAG, EmptyOperator\n"
        f"with DAG({dag_id!r}, schedule={schedule!r}, start_date=datetime{start!r}, catchup={catchup},\n"
        f"         max_active_runs={max_active_runs}):\n"
        "    EmptyOperator(task_id='noop')\n"
    )


def make_folder(tmp_path: Path) -> Path:
    path = tmp_path / "dags"
    path.mkdir()
    return path


def folder_settings(tmp_path: Path, folder: Path, *, import_timeout: str = "20", processes: str = "1",
                    **extra: str) -> Settings:
    """Settings for a home under ``tmp_path`` reading ``folder``; ``extra`` adds UPDRAFT__ variables."""
    env = {
        "UPDRAFT_HOME": str(tmp_path / "home"),
        "UPDRAFT__CORE__DAGS_FOLDER": str(folder),
        "UPDRAFT__CORE__DAGBAG_IMPORT_TIMEOUT": import_timeout,
        "UPDRAFT__CORE__PARSING_PROCESSES": processes,
        **database_environ(),
        **extra,
    }
    return load_settings(env, cwd=tmp_path)


def write(folder: Path, name: str, text: str) -> None:
    """Write a DAG file; its mtime moves one second past the old one, so the change is always seen."""
    path = folder / name
    old = path.stat().st_mtime if path.exists() else 1_700_000_000.0
    path.write_text(text)
    os.utime(path, (old + 1, old + 1))
