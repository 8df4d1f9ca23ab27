"""When a failed try runs again: a task's retry settings and the delay they give (Airflow's formula)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.authoring.baseoperator import BaseOperator

#: Longest retry delay, whatever the backoff computes (Airflow's default max_task_retry_delay: 24 h).
MAX_RETRY_DELAY_S = 24 * 3600
#: Default retry_delay when neither the task nor its serialized form can tell (BaseOperator's default).
DEFAULT_RETRY_DELAY_S = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    """A task's retry_delay, retry_exponential_backoff and max_retry_delay."""

    retry_delay: timedelta = timedelta(seconds=DEFAULT_RETRY_DELAY_S)
    exponential: bool = False
    max_retry_delay: timedelta | None = None

    @classmethod
    def of_task(cls, task: BaseOperator) -> RetryPolicy:
        return cls(task.retry_delay or timedelta(0), bool(task.retry_exponential_backoff), task.max_retry_delay)

    @classmethod
    def of_serialized(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        """From a task's entry of the serialized DAG (seconds); defaults when unknown."""
        if not data:
            return cls()
        delay = data.get("retry_delay")
        cap = data.get("max_retry_delay")
        return cls(
            timedelta(seconds=float(DEFAULT_RETRY_DELAY_S if delay is None else delay)),
            bool(data.get("retry_exponential_backoff")),
            None if cap is None else timedelta(seconds=float(cap)),
        )


def retry_delay(policy: RetryPolicy, *, dag_id: str, task_id: str, logical_date: datetime | None, run_id: str,
                try_number: int) -> timedelta:
    """How long after a failed try ``try_number`` the next one may start (Airflow's rule).

    Without backoff: ``retry_delay``. With ``retry_exponential_backoff``: let
    ``base = max(1, ceil(retry_delay_seconds * 2 ** (try_number - 1)))``; the delay is
    ``base + h % base`` seconds, where ``h`` is the SHA-1 (as an integer) of
    ``"{dag_id}#{task_id}#{str(logical date), or the run id}#{try_number}"`` — a jitter in
    ``[base, 2 * base)`` that is the same for the same try. The result is capped at 24 h and
    at ``max_retry_delay`` when that is set.
    """
    if not policy.exponential:
        return policy.retry_delay
    base = max(1, math.ceil(policy.retry_delay.total_seconds() * (2 ** (try_number - 1))))
    when = str(logical_date) if logical_date is not None else run_id  # str(), as Airflow's f-string: a space, no 'T'
    digest = hashlib.sha1(f"{dag_id}#{task_id}#{when}#{try_number}".encode(), usedforsecurity=False).hexdigest()
    seconds = min(base + int(digest, 16) % base, MAX_RETRY_DELAY_S)
    delay = timedelta(seconds=seconds)
    if policy.max_retry_delay:
        delay = min(delay, policy.max_retry_delay)
    return delay


