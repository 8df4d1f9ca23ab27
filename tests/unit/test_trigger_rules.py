"""Trigger rules: every rule against every combination of 1-3 upstream states, plus Airflow's own cases.

Two encodings are compared: ``evaluate`` and the oracle below, which states each rule
the way Airflow's TriggerRuleDep decides it (when the task runs; when it is marked
skipped or upstream_failed early). A hand-written table pins the notable cases.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from scheduler.trigger_rules import Decision, TriggerRule, UpstreamCounts, evaluate

R = TriggerRule
RUN, WAIT, SKIP, UF = Decision.RUN, Decision.WAIT, Decision.SKIP, Decision.UPSTREAM_FAILED
OUTCOMES = ("success", "failed", "skipped", "upstream_failed")
STATES = (*OUTCOMES, "running")  # "running" stands for any unfinished state (none, scheduled, queued, ...)
COMBOS = [c for n in (1, 2, 3) for c in itertools.combinations_with_replacement(STATES, n)]


def counts(states: tuple[str, ...] | list[str]) -> UpstreamCounts:
    return UpstreamCounts.from_states(states)


def oracle(rule: TriggerRule, states: tuple[str, ...]) -> Decision:
    """Airflow's decision, stated per rule as (run when, skip when, upstream_failed when)."""
    n = Counter(states)
    ok, ko, sk, uf, pending = n["success"], n["failed"], n["skipped"], n["upstream_failed"], n["running"]
    total = len(states)
    finished = pending == 0
    rules = {
        # rule: (run?, skip now?, upstream_failed now?)
        R.ALL_SUCCESS: (ok == total, sk > 0 and not (ko or uf), bool(ko or uf)),
        R.ALL_FAILED: (ko + uf == total, bool(ok or sk), False),
        R.ALL_DONE: (finished, False, False),
        R.ALL_DONE_MIN_ONE_SUCCESS: (finished and ok > 0 and sk == 0, sk > 0, finished and sk == 0 and ok == 0),
        R.ALL_SKIPPED: (sk == total, bool(ok or ko or uf), False),
        R.ONE_SUCCESS: (ok > 0, finished and sk == total, finished and ok == 0 and sk < total),
        R.ONE_FAILED: (ko + uf > 0, finished and ko + uf == 0, False),
        R.ONE_DONE: (ok + ko > 0, finished and ok + ko == 0, False),
        R.NONE_FAILED: (finished and ko + uf == 0, False, ko + uf > 0),
        R.NONE_FAILED_MIN_ONE_SUCCESS: (finished and ko + uf == 0 and ok > 0, ko + uf == 0 and sk == total, ko + uf > 0),
        R.NONE_SKIPPED: (finished and sk == 0, sk > 0, False),
        R.ALWAYS: (True, False, False),
    }
    run, skip, upstream_failed = rules[rule]
    assert [run, skip, upstream_failed].count(True) <= 1, (rule, states)
    if run:
        return RUN
    if skip:
        return SKIP
    if upstream_failed:
        return UF
    return WAIT


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_every_rule_matches_the_oracle_for_every_fan_in_up_to_three(rule: TriggerRule) -> None:
    mismatches = {c: (evaluate(rule, counts(c)), oracle(rule, c)) for c in COMBOS}
    mismatches = {c: v for c, v in mismatches.items() if v[0] != v[1]}
    assert mismatches == {}
    assert len(COMBOS) == 5 + 15 + 35


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_no_upstream_always_runs(rule: TriggerRule) -> None:
    assert evaluate(rule, UpstreamCounts(total=0)) is RUN
    assert evaluate(rule.value, counts([])) is RUN


@pytest.mark.parametrize("rule", list(TriggerRule))
@pytest.mark.parametrize("combo", [c for c in COMBOS if "running" not in c])
def test_every_rule_decides_once_all_upstreams_are_finished(rule: TriggerRule, combo: tuple[str, ...]) -> None:
    assert evaluate(rule, counts(combo)) is not WAIT


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_an_early_decision_is_never_contradicted_when_the_rest_finish(rule: TriggerRule) -> None:
    """Deciding with upstreams still running is safe: whatever they end as, run stays run and
    not-run (skip or upstream_failed) stays not-run."""
    early_decisions = 0
    for combo in (c for c in COMBOS if "running" in c):
        early = evaluate(rule, counts(combo))
        if early is WAIT:
            continue
        early_decisions += 1
        finished = [s for s in combo if s != "running"]
        for ends in itertools.product(OUTCOMES, repeat=combo.count("running")):
            later = evaluate(rule, counts(finished + list(ends)))
            assert (later is RUN) == (early is RUN), (rule, combo, ends, early, later)
    assert (early_decisions == 0) == (rule is R.ALL_DONE)  # only all_done always waits for every upstream


# Hand-written cases, from Airflow's trigger rule documentation and TriggerRuleDep.
CASES = [
    (R.ALL_SUCCESS, ["success", "success"], RUN),
    (R.ALL_SUCCESS, ["success", "running"], WAIT),
    (R.ALL_SUCCESS, ["success", "skipped"], SKIP),
    (R.ALL_SUCCESS, ["skipped", "running"], SKIP),
    (R.ALL_SUCCESS, ["skipped", "failed"], UF),
    (R.ALL_SUCCESS, ["upstream_failed", "running"], UF),
    (R.ALL_FAILED, ["failed", "upstream_failed"], RUN),
    (R.ALL_FAILED, ["failed", "running"], WAIT),
    (R.ALL_FAILED, ["failed", "success"], SKIP),
    (R.ALL_FAILED, ["skipped", "running"], SKIP),
    (R.ALL_DONE, ["success", "failed", "skipped"], RUN),
    (R.ALL_DONE, ["upstream_failed"], RUN),
    (R.ALL_DONE, ["failed", "running"], WAIT),
    (R.ALL_DONE_MIN_ONE_SUCCESS, ["success", "failed", "upstream_failed"], RUN),
    (R.ALL_DONE_MIN_ONE_SUCCESS, ["success", "running"], WAIT),
    (R.ALL_DONE_MIN_ONE_SUCCESS, ["failed", "failed"], UF),
    (R.ALL_DONE_MIN_ONE_SUCCESS, ["success", "skipped"], SKIP),  # Airflow's code: any skip skips
    (R.ALL_DONE_MIN_ONE_SUCCESS, ["skipped", "running"], SKIP),
    (R.ALL_SKIPPED, ["skipped", "skipped"], RUN),
    (R.ALL_SKIPPED, ["skipped", "running"], WAIT),
    (R.ALL_SKIPPED, ["skipped", "success"], SKIP),
    (R.ALL_SKIPPED, ["upstream_failed", "running"], SKIP),
    (R.ONE_SUCCESS, ["success", "running", "running"], RUN),
    (R.ONE_SUCCESS, ["failed", "running"], WAIT),
    (R.ONE_SUCCESS, ["skipped", "skipped"], SKIP),
    (R.ONE_SUCCESS, ["skipped", "failed"], UF),
    (R.ONE_SUCCESS, ["upstream_failed"], UF),
    (R.ONE_FAILED, ["failed", "running"], RUN),
    (R.ONE_FAILED, ["upstream_failed", "success"], RUN),
    (R.ONE_FAILED, ["success", "running"], WAIT),
    (R.ONE_FAILED, ["success", "skipped"], SKIP),
    (R.ONE_DONE, ["failed", "running"], RUN),
    (R.ONE_DONE, ["success", "running"], RUN),
    (R.ONE_DONE, ["upstream_failed", "running"], WAIT),  # upstream_failed is not "done" for one_done
    (R.ONE_DONE, ["upstream_failed", "skipped"], SKIP),
    (R.NONE_FAILED, ["success", "skipped"], RUN),
    (R.NONE_FAILED, ["skipped", "skipped"], RUN),
    (R.NONE_FAILED, ["success", "running"], WAIT),
    (R.NONE_FAILED, ["upstream_failed", "running"], UF),
    (R.NONE_FAILED_MIN_ONE_SUCCESS, ["success", "skipped"], RUN),
    (R.NONE_FAILED_MIN_ONE_SUCCESS, ["skipped", "skipped"], SKIP),
    (R.NONE_FAILED_MIN_ONE_SUCCESS, ["skipped", "running"], WAIT),
    (R.NONE_FAILED_MIN_ONE_SUCCESS, ["skipped", "failed"], UF),
    (R.NONE_SKIPPED, ["success", "failed", "upstream_failed"], RUN),
    (R.NONE_SKIPPED, ["success", "running"], WAIT),
    (R.NONE_SKIPPED, ["skipped", "running"], SKIP),
    (R.ALWAYS, ["running", "failed"], RUN),
]


@pytest.mark.parametrize(("rule", "states", "expected"), CASES, ids=[f"{r.value}-{'-'.join(s)}" for r, s, _ in CASES])
def test_documented_cases(rule: TriggerRule, states: list[str], expected: Decision) -> None:
    assert evaluate(rule, counts(states)) is expected


def test_every_rule_has_hand_written_cases() -> None:
    assert {rule for rule, _, _ in CASES} == set(TriggerRule)


def test_removed_upstreams_are_left_out() -> None:
    assert evaluate(R.ALL_SUCCESS, counts(["success", "removed"])) is RUN
    assert evaluate(R.ONE_SUCCESS, counts(["skipped", "removed"])) is SKIP
    assert evaluate(R.ALL_SKIPPED, counts(["removed", "removed"])) is RUN
    assert evaluate(R.NONE_FAILED_MIN_ONE_SUCCESS, counts(["skipped", "removed", "running"])) is WAIT


def test_rule_names_parse_and_unknown_names_are_named() -> None:
    assert TriggerRule.parse("none_failed_min_one_success") is R.NONE_FAILED_MIN_ONE_SUCCESS
    with pytest.raises(ValueError, match="'all_sucess'"):
        TriggerRule.parse("all_sucess")
    with pytest.raises(ValueError):
        evaluate("nope", counts(["success"]))
