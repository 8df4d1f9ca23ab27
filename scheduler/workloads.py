"""What the scheduler hands an executor: one task try, or one callback to run outside the scheduler.

Workloads are plain data that cross a process boundary as JSON (the LocalExecutor's
fork server reads them from a pipe; a Celery worker will read them from a broker
message). Whoever runs one builds everything else (the DAG, the context, a database
engine) from these fields and the configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TaskWorkload:
    """Run try ``try_number`` of one task instance.

    The scheduler set the instance ``queued`` with this try_number; the runner moves it
    to ``running`` only by compare-and-set on (id, state='queued', try_number), so a
    workload delivered twice, or one the user cleared meanwhile, runs at most once.
    """

    ti_id: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    #: The DAG file, as the dag table records it (absolute path).
    fileloc: str
    #: The task's ``queue`` (task_instance.queue): the Celery queue the try is sent to.
    queue: str = "default"
    kind: str = field(default="task", init=False)

    @property
    def key(self) -> tuple[int, int]:
        """What identifies the try to the executor and in its events."""
        return (self.ti_id, self.try_number)

    def label(self) -> str:
        index = "" if self.map_index < 0 else f"[{self.map_index}]"
        return f"{self.dag_id}.{self.task_id}{index} {self.run_id} try {self.try_number}"


@dataclass(frozen=True)
class CallbackWorkload:
    """Call a DAG's or a task's callback in a process of its own (the scheduler never imports DAG files).

    ``kind`` is one of ``dag_success``, ``dag_failure`` (the DAG's on_success_callback /
    on_failure_callback for run ``run_id``), ``task_failure``, ``task_retry`` (a task's
    on_failure_callback / on_retry_callback when its try ended without the runner
    calling them: the process died or was lost). ``reason`` becomes the context's
    ``reason`` (DAG callbacks) or ``exception`` (task callbacks).
    """

    callback: str
    dag_id: str
    run_id: str
    fileloc: str
    task_id: str | None = None
    map_index: int = -1
    try_number: int = 0
    ti_id: int | None = None
    reason: str = ""
    kind: str = field(default="callback", init=False)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.callback, self.dag_id, self.run_id, self.task_id or "")

    def label(self) -> str:
        target = self.dag_id if self.task_id is None else f"{self.dag_id}.{self.task_id}"
        return f"{self.callback} callback of {target} {self.run_id}"


Workload = TaskWorkload | CallbackWorkload

CALLBACK_KINDS = ("dag_success", "dag_failure", "task_failure", "task_retry")


def to_dict(workload: Workload) -> dict[str, Any]:
    """The workload's fields, ``kind`` included (all plain JSON values)."""
    return {f.name: getattr(workload, f.name) for f in fields(workload)}


def to_json(workload: Workload) -> str:
    return json.dumps(to_dict(workload), sort_keys=True)


def from_json(text: str | bytes) -> Workload:
    """The workload encoded by :func:`to_json`; ValueError naming the problem for anything else."""
    return from_dict(json.loads(text))


def from_dict(data: Any) -> Workload:
    """The workload of :func:`to_dict` (or decoded JSON); ValueError naming the problem for anything else."""
    if not isinstance(data, dict):
        raise ValueError(f"workload must be a JSON object, got {type(data).__name__}")
    data = dict(data)
    kind = data.pop("kind", None)
    try:
        if kind == "task":
            return TaskWorkload(**data)
        if kind == "callback":
            if data.get("callback") not in CALLBACK_KINDS:
                raise ValueError(f"unknown callback kind {data.get('callback')!r}; expected one of {CALLBACK_KINDS}")
            return CallbackWorkload(**data)
    except TypeError as exc:
        raise ValueError(f"malformed {kind} workload: {exc}") from None
    raise ValueError(f"unknown workload kind {kind!r}; expected 'task' or 'callback'")
