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
    ALL_DONE_MIN_ONE_SUCCESS = "all_done_min_one_success"  #: all finished, none skipped, at least one success
    ALL_SKIPPED = "all_skipped"  #: every upstream was skipped
    ONE_SUCCESS = "one_success"  #: at least one upstream succeeded (does not wait for the rest)
    ONE_FAILED = "one_failed"  #: at least one upstream failed (does not wait for the rest)
    ONE_DONE = "one_done"  #: at least one upstream succeeded or failed (upstream_failed does not count)
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
            if state in counts:  # a state or its value: a StrEnum member hashes and compares as its value
                counts[state] += 1
            elif state not in _STATE_VALUES:
                raise ValueError(f"{state!r} is not a task instance state")
        return cls(total=total, **counts)


_STATE_VALUES = frozenset(s.value for s in S)
_RULES = {r.value: r for r in TriggerRule}


def evaluate(rule: TriggerRule | str, up: UpstreamCounts) -> Decision:
    """Decide a task's fate from its direct upstream outcomes (Airflow's TriggerRuleDep).

    A task with no upstream runs at once (whatever its rule), and so does one with
    ``always``. "removed" upstreams are left out, as if the edge were gone (in Airflow
    a removed task is no longer an upstream of anything). A decision to skip or to
    mark upstream_failed is taken as soon as it is certain, without waiting for the
    other upstreams, exactly where Airflow takes it early.
    """
    rule = _RULES.get(rule) or TriggerRule(rule)
    total = up.total - up.removed
    if total <= 0 or rule is TriggerRule.ALWAYS:
        return Decision.RUN
    success, skipped, failed = up.success, up.skipped, up.failed
    failures = failed + up.upstream_failed
    all_done = success + skipped + failures >= total
    if rule is TriggerRule.ALL_SUCCESS:
        if failures:
            return Decision.UPSTREAM_FAILED
        if skipped:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_FAILED:
        if success or skipped:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_DONE:
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ALL_DONE_MIN_ONE_SUCCESS:
        # Airflow's implementation (3.1) skips as soon as one upstream is skipped, although its
        # docs speak of "all non-skipped upstream tasks"; we follow what Airflow does.
        if skipped:
            return Decision.SKIP
        if not all_done:
            return Decision.WAIT
        return Decision.RUN if success else Decision.UPSTREAM_FAILED
    if rule is TriggerRule.ALL_SKIPPED:
        if success or failures:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.ONE_SUCCESS:
        if success:
            return Decision.RUN
        if not all_done:
            return Decision.WAIT
        return Decision.SKIP if skipped == total else Decision.UPSTREAM_FAILED
    if rule is TriggerRule.ONE_FAILED:
        if failures:
            return Decision.RUN
        return Decision.SKIP if all_done else Decision.WAIT
    if rule is TriggerRule.ONE_DONE:
        # "done" here is success or failed: an upstream_failed upstream did not run, so it does not count.
        if success or failed:
            return Decision.RUN
        return Decision.SKIP if all_done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED:
        if failures:
            return Decision.UPSTREAM_FAILED
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS:
        if failures:
            return Decision.UPSTREAM_FAILED
        if skipped == total:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    if rule is TriggerRule.NONE_SKIPPED:
        if skipped:
            return Decision.SKIP
        return Decision.RUN if all_done else Decision.WAIT
    raise AssertionError(f"unhandled trigger rule {rule}")  # pragma: no cover
