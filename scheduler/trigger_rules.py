"""Trigger rules: from the states of a task's upstream task instances to a decision.

Pure: no database, no processes. ``evaluate`` is the whole contract, used by the
in-process runner (`dags test`) and the scheduler loop alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from scheduler.states import TaskInstanceState as S


class TriggerRule(StrEnum):
    """When a task may run, given its direct upstream tasks (Airflow's rules and names)."""

    ALL_SUCCESS = "all_success"  #: every upstream succeeded (the default)
    ALL_FAILED = "all_failed"  #: every upstream failed or upstream_failed
    ALL_DONE = "all_done"  #: every upstream finished, whatever the outcome
    ALL_DONE_MIN_ONE_SUCCESS = "all_done_min_one_success"  #: all finished (skips allowed), at least one success
    ALL_SKIPPED = "all_skipped"  #: every upstream was skipped
    ONE_SUCCESS = "one_success"  #: at least one upstream succeeded (does not wait for the rest)
    ONE_FAILED = "one_failed"  #: at least one upstream failed (does not wait for the rest)
    ONE_DONE = "one_done"  #: at least one upstream succeeded or failed
    NONE_FAILED = "none_failed"  #: no upstream failed or upstream_failed (skips allowed)
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"  #: none failed and at least one succeeded
    NONE_SKIPPED = "none_skipped"  #: no upstream skipped; all finished
    ALWAYS = "always"  #: no dependency at all

    @classmethod
    def parse(cls, value: str | TriggerRule) -> TriggerRule:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown trigger rule {value!r}; expected one of: " + ", ".join(r.value for r in cls)
            ) from None


class Decision(StrEnum):
    """What to do with a task instance whose state is still ``none``."""

    WAIT = "wait"  #: not decided yet: some upstream still running or pending
    RUN = "run"  #: the rule is met: schedule it
    SKIP = "skip"  #: the rule can never be met because of skips: mark skipped
    UPSTREAM_FAILED = "upstream_failed"  #: the rule can never be met because of failures


@dataclass(frozen=True)
class UpstreamCounts:
    """How many direct upstream task instances are in each outcome."""

    total: int
    success: int = 0
    skipped: int = 0
    failed: int = 0
    upstream_failed: int = 0
    removed: int = 0

    @property
    def done(self) -> int:
        return self.success + self.skipped + self.failed + self.upstream_failed + self.removed

    @classmethod
    def from_states(cls, states: Iterable[S | str]) -> UpstreamCounts:
        counts = {"success": 0, "skipped": 0, "failed": 0, "upstream_failed": 0, "removed": 0}
        total = 0
        for state in states:
            total += 1
            value = S(state).value
            if value in counts:
                counts[value] += 1
        return cls(total=total, **counts)


def evaluate(rule: TriggerRule | str, up: UpstreamCounts) -> Decision:
    """Decide a task's fate from its direct upstream outcomes (Airflow's documented semantics).

    A task with no upstream runs at once (whatever its rule). "removed" upstreams are
    treated as done and neither success nor failure.
    """
    rule = TriggerRule(rule)
    if up.total == 0 or rule is TriggerRule.ALWAYS:
        return Decision.RUN
    failures = up.failed + up.upstream_failed
    all_done = up.done == up.total
    if rule is TriggerRule.ALL_SUCCESS:
        if failures:
            return Decision.UPSTREAM_FAILED
        if up.skipped:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_FAILED:
        if up.success or up.skipped:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_DONE:
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_DONE_MIN_ONE_SUCCESS:
        if not all_done:
            return Decision.WAIT
        return Decision.RUN if up.success else (Decision.UPSTREAM_FAILED if failures else Decision.SKIP)
    if rule is TriggerRule.ALL_SKIPPED:
        if up.success or failures:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ONE_SUCCESS:
        if up.success:
            return Decision.RUN
        if not all_done:
            return Decision.WAIT
        return Decision.UPSTREAM_FAILED if failures else Decision.SKIP
    if rule is TriggerRule.ONE_FAILED:
        if failures:
            return Decision.RUN
        return Decision.SKIP if all_done else Decision.WAIT
    if rule is TriggerRule.ONE_DONE:
        if up.success or failures:
            return Decision.RUN
        return Decision.SKIP if all_done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED:
        if failures:
            return Decision.UPSTREAM_FAILED
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS:
        if failures:
            return Decision.UPSTREAM_FAILED
        if not all_done:
            return Decision.WAIT
        return Decision.RUN if up.success else Decision.SKIP
    if rule is TriggerRule.NONE_SKIPPED:
        if up.skipped:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    raise AssertionError(f"unhandled trigger rule {rule}")  # pragma: no cover
