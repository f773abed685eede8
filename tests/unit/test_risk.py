"""The churn-risk score: parts add up, each capped, and the priority rule, through
`scored`, the one path the engine takes."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moments.engine import Detector
from moments.models import EventType, RiskScore
from moments.risk import RiskSignals, raise_by, scored
from moments.state import SubscriberState

from .rules.helpers import NO_GATES, at, ev, rules_from, run, usage

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


def score_of(signals: RiskSignals) -> RiskScore:
    """The score the engine puts on a task (of priority 5, so any raise shows)."""
    return scored(signals, 5)[1]


class TestRiskScore:
    """The score is the sum of its parts, each part capped; unknown signals add nothing."""

    def test_no_signal_no_risk(self) -> None:
        assert scored(RiskSignals(), 4) == (4, RiskScore(score=0, parts=[], priority_raised_by=0))

    def test_each_part_is_shown_with_its_value_and_points(self) -> None:
        risk = score_of(
            RiskSignals(
                competitor_hotline_calls=1,
                spend_drop=0.3,
                complaints=1,
                contract_days_left=60,
                tenure_days=500,
            )
        )
        points = {p.signal: (p.value, p.points) for p in risk.parts}
        assert points == {
            "competitor_hotline_calls": (1, 15),
            "spend_drop": (0.3, 15),
            "complaints": (1, 10),
            "contract_expiry": (60, 8),
            "tenure": (500, 5),
        }
        assert risk.score == 53

    def test_caps_keep_the_score_within_100(self) -> None:
        risk = score_of(
            RiskSignals(
                competitor_hotline_calls=9,
                spend_drop=1.0,
                complaints=7,
                contract_days_left=3,
                tenure_days=30,
            )
        )
        assert risk.score == 100
        assert max(p.points for p in risk.parts) == 30

    def test_small_spend_drop_and_far_contract_end_are_not_signals(self) -> None:
        risk = score_of(RiskSignals(spend_drop=0.05, contract_days_left=200, tenure_days=4000))
        assert risk.parts == []


class TestPriorityRule:
    """30 points raise priority one level, 60 two; never above 1."""

    @pytest.mark.parametrize(("score", "levels"), [(0, 0), (29.9, 0), (30, 1), (59, 1), (60, 2)])
    def test_thresholds(self, score: float, levels: int) -> None:
        assert raise_by(score) == levels

    def test_the_score_raises_priority_and_says_by_how_much(self) -> None:
        priority, risk = scored(RiskSignals(competitor_hotline_calls=2, spend_drop=0.6), 4)
        assert (priority, risk.score, risk.priority_raised_by) == (3, 55, 1)
        signals = RiskSignals(competitor_hotline_calls=2, complaints=2, contract_days_left=10)
        priority, risk = scored(signals, 4)
        assert (priority, risk.score, risk.priority_raised_by) == (2, 65, 2)

    def test_priority_one_stays_one_and_records_what_was_really_raised(self) -> None:
        signals = RiskSignals(competitor_hotline_calls=2, complaints=2, spend_drop=0.5)
        priority, risk = scored(signals, 2)
        assert (priority, risk.score, risk.priority_raised_by) == (1, 75, 1)


SPEND_MONTH = """
series:
  spend_month: {on: [usage], field: charge, period: month, keep: 5}
"""
"""The series the spend signal reads (the catalog's, kept for its baseline rules)."""
OWN_HOTLINE = (
    NO_GATES
    + SPEND_MONTH
    + """
rules:
  - id: own_hotline
    description: A call to our own hotline
    on: [usage]
    when: {kind: voice}
    condition: {field: counterparty, in: [10086]}
    task: {family: anomaly, type: own_hotline_call, channel: sms, priority: 4,
           action: callback, ttl: 72h, description: "Called us"}
"""
)


def test_the_detector_puts_the_score_on_the_task_and_raises_its_priority() -> None:
    """The engine's path: signals from the record, `scored`, the task built with both."""
    events = [
        ev(EventType.PROFILE, at("2026-11-01"), contract_end="2026-11-20", joined_on="2026-06-01"),
        ev(
            EventType.COMPLAINT,
            at("2026-11-02"),
            complaint_id="c1",
            category="network",
            severity=2,
            status="opened",
        ),
        usage(at("2026-11-05"), kind="voice", counterparty="10086", quantity=60.0),
    ]
    (task,) = run(rules_from(OWN_HOTLINE), events).tasks
    assert task.risk is not None
    points = {p.signal: (p.value, p.points) for p in task.risk.parts}
    assert points == {"complaints": (1, 10), "contract_expiry": (15, 15), "tenure": (157, 10)}
    assert (task.risk.score, task.risk.priority_raised_by, task.priority) == (35, 1, 3)


def _spend(*monthly: tuple[str, str]) -> list[tuple[EventType, dict[str, object]]]:
    return [usage(at(day), kind="data", charge=charge) for day, charge in monthly]


def _call(day: str) -> tuple[EventType, dict[str, object]]:
    return usage(at(day, "18:00"), kind="voice", counterparty="10086", quantity=60.0)


class TestSpendDrop:
    """The last closed month against the 3 before it: a month just begun is no drop."""

    def test_a_steady_customer_early_in_the_month_is_no_risk(self) -> None:
        """100 a month, then 1.0 on the 1st: the current month against whole ones read
        as a 0.99 drop, 25 points on every steady customer's tasks in the month's first
        days."""
        events = _spend(
            ("2026-07-10", "100"), ("2026-08-10", "100"), ("2026-09-10", "100"),
            ("2026-10-10", "100"), ("2026-11-01", "1.0"),
        )  # fmt: skip
        (task,) = run(rules_from(OWN_HOTLINE), [*events, _call("2026-11-01")]).tasks
        assert task.risk is not None
        assert (task.risk.parts, task.priority) == ([], 4)

    def test_a_closed_month_below_the_three_before_is_a_drop(self) -> None:
        events = _spend(
            ("2026-07-10", "100"), ("2026-08-10", "100"), ("2026-09-10", "100"),
            ("2026-10-10", "70"),
        )  # fmt: skip
        (task,) = run(rules_from(OWN_HOTLINE), [*events, _call("2026-11-02")]).tasks
        assert task.risk is not None
        assert [(p.signal, p.value, p.points) for p in task.risk.parts] == [("spend_drop", 0.3, 15)]

    def test_a_month_without_spend_is_a_full_drop(self) -> None:
        events = _spend(("2026-06-10", "90"), ("2026-07-10", "90"), ("2026-08-10", "90"))
        (task,) = run(rules_from(OWN_HOTLINE), [*events, _call("2026-10-03")]).tasks
        assert task.risk is not None
        assert [(p.signal, p.value, p.points) for p in task.risk.parts] == [("spend_drop", 1.0, 25)]

    def test_without_three_months_before_the_closed_one_there_is_no_signal(self) -> None:
        events = _spend(("2026-08-10", "100"), ("2026-09-10", "100"), ("2026-10-10", "10"))
        (task,) = run(rules_from(OWN_HOTLINE), [*events, _call("2026-11-02")]).tasks
        assert task.risk is not None
        assert task.risk.parts == []


class TestDetectorSignals:
    """The detector counts the competitor-hotline moments fired in the last 30 days,
    whichever rules make them."""

    def test_hotline_calls_count_every_rule_of_that_moment_type(self) -> None:
        rules = rules_from(HOTLINE_RULES)
        by_id = {rule.id: rule for rule in rules.rules}
        assert rules.tags_by_moment_type["competitor_hotline_call"] == (
            by_id["hotline_a"].tag,
            by_id["hotline_b"].tag,
        )
        detector = Detector(rules, {})
        at = int(NOW.timestamp())
        state = SubscriberState()
        state.fired = {
            by_id["hotline_a"].tag: at - 86400,
            by_id["hotline_b"].tag: at - 30 * 86400,  # just inside the 30 days
            by_id["other"].tag: at,  # another moment type: not a hotline call
        }
        assert detector.risk_signals(state, at).competitor_hotline_calls == 2
        state.fired[by_id["hotline_b"].tag] -= 1
        assert detector.risk_signals(state, at).competitor_hotline_calls == 1


HOTLINE_RULES = """
rules:
  - id: hotline_a
    description: A competitor's hotline
    on: [usage]
    when: {kind: voice}
    condition: {field: counterparty, in: [10010]}
    task: &hotline
      family: anomaly
      type: competitor_hotline_call
      channel: manager
      priority: 1
      action: retention_call
      ttl: 72h
      cooldown: 14d
      description: "Called a competitor"
  - id: hotline_b
    description: Another competitor's hotline
    on: [usage]
    when: {kind: voice}
    condition: {field: counterparty, in: [10000]}
    task: *hotline
  - id: other
    description: Our own hotline
    on: [usage]
    when: {kind: voice}
    condition: {field: counterparty, in: [10086]}
    task:
      family: anomaly
      type: own_hotline_call
      channel: manager
      priority: 1
      action: retention_call
      ttl: 72h
      cooldown: 14d
      description: "Called us"
"""


signals = st.builds(
    RiskSignals,
    competitor_hotline_calls=st.integers(0, 4),
    spend_drop=st.none() | st.sampled_from([0.0, -0.0, 0.1, 0.35, 1.0]),
    complaints=st.integers(0, 3),
    contract_days_left=st.none() | st.integers(-5, 100),
    tenure_days=st.none() | st.integers(0, 800),
)


class TestScoredCache:
    """`scored` answers from its cache exactly what it computes afresh."""

    @settings(max_examples=300)
    @given(asked=st.lists(st.tuples(signals, st.integers(1, 5)), min_size=1, max_size=20))
    def test_cached_answers_are_the_computed_ones(
        self, asked: list[tuple[RiskSignals, int]]
    ) -> None:
        for risk_signals, priority in asked + asked:
            fresh = scored.__wrapped__(risk_signals, priority)
            assert scored(risk_signals, priority) == fresh
            assert scored(risk_signals, priority)[1].model_dump_json() == fresh[1].model_dump_json()
