"""The churn-risk score: parts add up, each capped, and the priority rule."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moments.engine import Detector
from moments.models import Channel, Family, Moment, ServiceTask
from moments.risk import RiskSignals, apply_risk, raise_by, risk_score, scored
from moments.state import SubscriberState

from .rules.helpers import rules_from

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


def make_task(priority: int) -> ServiceTask:
    return ServiceTask(
        task_id="t",
        subscriber_id="13800138001",
        moment=Moment(
            family=Family.ANOMALY,
            type="competitor_hotline_call",
            rule_id="competitor_hotline_call",
            rule_version=1,
            description="d",
        ),
        priority=priority,
        channel=Channel.MANAGER,
        action="retention_call",
        triggered_at=NOW,
        created_at=NOW,
        deliver_after=NOW,
        expires_at=NOW + dt.timedelta(days=1),
        evidence=["e"],
    )


class TestRiskScore:
    """The score is the sum of its parts, each part capped; unknown signals add nothing."""

    def test_no_signal_no_risk(self) -> None:
        risk = risk_score(RiskSignals())
        assert (risk.score, risk.parts, risk.priority_raised_by) == (0, [], 0)

    def test_each_part_is_shown_with_its_value_and_points(self) -> None:
        risk = risk_score(
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
        risk = risk_score(
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
        risk = risk_score(RiskSignals(spend_drop=0.05, contract_days_left=200, tenure_days=4000))
        assert risk.parts == []


class TestPriorityRule:
    """30 points raise priority one level, 60 two; never above 1."""

    @pytest.mark.parametrize(("score", "levels"), [(0, 0), (29.9, 0), (30, 1), (59, 1), (60, 2)])
    def test_thresholds(self, score: float, levels: int) -> None:
        assert raise_by(score) == levels

    def test_apply_raises_priority_and_shows_the_score(self) -> None:
        task = apply_risk(make_task(4), RiskSignals(competitor_hotline_calls=2, spend_drop=0.6))
        assert task.priority == 3
        assert task.risk is not None
        assert (task.risk.score, task.risk.priority_raised_by) == (55, 1)
        signals = RiskSignals(competitor_hotline_calls=2, complaints=2, contract_days_left=10)
        high = apply_risk(make_task(4), signals)
        assert high.priority == 2
        assert high.risk is not None
        assert (high.risk.score, high.risk.priority_raised_by) == (65, 2)

    def test_priority_one_stays_one_and_records_what_was_really_raised(self) -> None:
        task = apply_risk(
            make_task(2), RiskSignals(competitor_hotline_calls=2, complaints=2, spend_drop=0.5)
        )
        assert task.priority == 1
        assert task.risk is not None
        assert (task.risk.score, task.risk.priority_raised_by) == (75, 1)


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
