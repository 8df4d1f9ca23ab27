"""Where a task try's log and a run's callbacks log live, and opening them.

``{base_log_folder}/dag_id=D/run_id=R/task_id=T/[map_index=I/]attempt=N.log`` for a try (opened in
append mode: every poke of a rescheduled sensor appends to its try's file) and
``{base_log_folder}/dag_id=D/run_id=R/callbacks.log`` for callbacks run outside a try.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO


def log_path(base: str | os.PathLike[str], dag_id: str, run_id: str, task_id: str, map_index: int,
             try_number: int) -> Path:
    """The log file of one try: ``{base}/dag_id=D/run_id=R/task_id=T/[map_index=I/]attempt=N.log``.

    An id that could leave its folder (a ``/``, a NUL; ids are checked where users give them,
    this is a second defence) is percent-encoded.
    """
    return Path(log_folder_of(base, dag_id, run_id, task_id, map_index), f"attempt={try_number}.log")


def log_folder_of(base: str | os.PathLike[str], dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The folder of a task instance's try logs (see :func:`log_path`)."""
    folder = os.path.join(base, f"dag_id={_path_safe(dag_id)}", f"run_id={_path_safe(run_id)}",
                          f"task_id={_path_safe(task_id)}")
    return folder if map_index < 0 else os.path.join(folder, f"map_index={map_index}")


def callbacks_log_path(base: str | os.PathLike[str], dag_id: str, run_id: str) -> Path:
    """Where callbacks run outside the task's own try log: ``{base}/dag_id=D/run_id=R/callbacks.log``."""
    return Path(base) / f"dag_id={_path_safe(dag_id)}" / f"run_id={_path_safe(run_id)}" / "callbacks.log"


def _path_safe(component: str) -> str:
    if "/" in component or "\0" in component or "\\" in component:
        from urllib.parse import quote

        return quote(component, safe="")
    return component


def open_log(path: Path) -> TextIO:
    """The try's log, opened for appending; its folder is made when missing (a zygote usually made it already)."""
    try:
        return open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115


