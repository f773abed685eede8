"""The churn-risk score: parts add up, each capped, and the priority rule, through
`scored`, the one path the engine takes."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moments import risk
from moments.engine import Detector
from moments.models import EventType, RiskScore, ServiceTask
from moments.risk import RiskSignals, hotline_calls, note_hotline_call, raise_by, scored
from moments.state import SubscriberState
from moments.statezip import pack
from moments.taskmaking import risk_signals

from .catalogs import default_rules
from .rules.helpers import NO_GATES, SUB, at, ev, rules_from, run, usage

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
                open_complaints=1,
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
                open_complaints=7,
                contract_days_left=3,
                tenure_days=30,
            )
        )
        assert risk.score == 100
        assert max(p.points for p in risk.parts) == 30

    def test_small_spend_drop_and_far_contract_end_are_not_signals(self) -> None:
        risk = score_of(RiskSignals(spend_drop=0.05, contract_days_left=200, tenure_days=4000))
        assert risk.parts == []

    def test_the_modules_table_names_the_parts_the_score_shows_in_their_order(self) -> None:
        """The table is what people read of the score (the review found it said
        "complaints (last 90 days)" of what is the open ones)."""
        assert risk.__doc__ is not None
        rows = [line for line in risk.__doc__.splitlines() if line.startswith("| ")]
        named = [row.split("|")[1].strip() for row in rows[1:]]
        every = RiskSignals(
            competitor_hotline_calls=1,
            spend_drop=0.5,
            open_complaints=1,
            contract_days_left=10,
            tenure_days=10,
        )
        assert named == [p.signal for p in score_of(every).parts]


class TestPriorityRule:
    """30 points raise priority one level, 60 two; never above 1."""

    @pytest.mark.parametrize(("score", "levels"), [(0, 0), (29.9, 0), (30, 1), (59, 1), (60, 2)])
    def test_thresholds(self, score: float, levels: int) -> None:
        assert raise_by(score) == levels

    def test_the_score_raises_priority_and_says_by_how_much(self) -> None:
        priority, risk = scored(RiskSignals(competitor_hotline_calls=2, spend_drop=0.6), 4)
        assert (priority, risk.score, risk.priority_raised_by) == (3, 55, 1)
        signals = RiskSignals(competitor_hotline_calls=2, open_complaints=2, contract_days_left=10)
        priority, risk = scored(signals, 4)
        assert (priority, risk.score, risk.priority_raised_by) == (2, 65, 2)

    def test_priority_one_stays_one_and_records_what_was_really_raised(self) -> None:
        signals = RiskSignals(competitor_hotline_calls=2, open_complaints=2, spend_drop=0.5)
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


def _complaint(day: str, complaint_id: str, status: str) -> tuple[EventType, dict[str, object]]:
    return ev(
        EventType.COMPLAINT,
        at(day),
        complaint_id=complaint_id,
        category="billing",
        severity=2,
        status=status,
    )


def test_complaints_are_the_open_ones_with_a_record_in_30_days() -> None:
    """Opened five months ago and updated within the month: counted. Opened five months
    ago and heard of no more (a resolution customer service lost): not, unless the rules
    say `open_complaint_lapses_after: null`. Opened and resolved within the month: not
    (the record keeps no resolved complaint)."""
    events = [
        _complaint("2026-06-01", "old-open", "opened"),
        _complaint("2026-06-02", "old-updated", "opened"),
        _complaint("2026-10-20", "recent", "opened"),
        _complaint("2026-10-25", "recent", "resolved"),
        _complaint("2026-10-28", "old-updated", "updated"),
        _hotline("2026-11-05", "10086"),
    ]
    when = int(dt.datetime.fromisoformat(at("2026-11-05")).timestamp())
    found = {}
    for lapse in ("30d", "null"):
        rules = rules_from(
            OWN_HOTLINE.replace("gating: {", f"gating: {{open_complaint_lapses_after: {lapse}, ")
        )
        result = run(rules, events)
        state = result.store.load(SUB)
        assert state is not None
        (task,) = result.tasks
        assert task.risk is not None
        found[lapse] = (
            risk_signals(Detector(rules, {}), state, when).open_complaints,
            [(p.signal, p.value, p.points) for p in task.risk.parts],
            list(state.complaints),
        )
    assert found["30d"] == (1, [("complaints", 1, 10)], ["old-updated"])
    assert found["null"] == (2, [("complaints", 2, 20)], ["old-open", "old-updated"])


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
            ("2026-06-10", "100"), ("2026-07-10", "100"), ("2026-08-10", "100"),
            ("2026-09-10", "100"), ("2026-10-10", "70"),
        )  # fmt: skip
        (task,) = run(rules_from(OWN_HOTLINE), [*events, _call("2026-11-02")]).tasks
        assert task.risk is not None
        assert [(p.signal, p.value, p.points) for p in task.risk.parts] == [("spend_drop", 0.3, 15)]

    def test_a_month_without_spend_is_a_full_drop(self) -> None:
        events = _spend(
            ("2026-05-10", "90"), ("2026-06-10", "90"), ("2026-07-10", "90"), ("2026-08-10", "90")
        )
        (task,) = run(rules_from(OWN_HOTLINE), [*events, _call("2026-10-03")]).tasks
        assert task.risk is not None
        assert [(p.signal, p.value, p.points) for p in task.risk.parts] == [("spend_drop", 1.0, 25)]

    def test_the_partial_first_month_is_no_part_of_the_baseline(self) -> None:
        """History begun on 07-25 (20 spent that month, 100 a month after): July in the
        baseline made it 73.3 and October's 60 a 0.18 drop (9 points) instead of 0.4."""
        events = _spend(
            ("2026-07-25", "20"), ("2026-08-10", "100"), ("2026-09-10", "100"),
            ("2026-10-10", "60"),
        )  # fmt: skip
        (task,) = run(rules_from(OWN_HOTLINE), [*events, _call("2026-11-02")]).tasks
        assert task.risk is not None
        assert task.risk.parts == []  # not yet 3 whole months before October
        more = _spend(
            ("2026-07-25", "20"), ("2026-08-10", "100"), ("2026-09-10", "100"),
            ("2026-10-10", "100"), ("2026-11-10", "60"),
        )  # fmt: skip
        (task,) = run(rules_from(OWN_HOTLINE), [*more, _call("2026-12-02")]).tasks
        assert task.risk is not None
        assert [(p.signal, p.value, p.points) for p in task.risk.parts] == [("spend_drop", 0.4, 20)]

    def test_without_three_months_before_the_closed_one_there_is_no_signal(self) -> None:
        events = _spend(("2026-08-10", "100"), ("2026-09-10", "100"), ("2026-10-10", "10"))
        (task,) = run(rules_from(OWN_HOTLINE), [*events, _call("2026-11-02")]).tasks
        assert task.risk is not None
        assert task.risk.parts == []


def _hotline(day: str, number: str = "10010") -> tuple[EventType, dict[str, object]]:
    return usage(at(day, "11:00"), kind="voice", counterparty=number, quantity=60.0)


def _calls(task: ServiceTask) -> tuple[float, float] | None:
    """The hotline part of a task's score: (calls, points)."""
    assert task.risk is not None
    found = [(p.value, p.points) for p in task.risk.parts if p.signal == "competitor_hotline_calls"]
    return found[0] if found else None


class TestHotlineCalls:
    """Calls to a competitor's hotline in the last 30 local days, this one included: each
    event that fires a live rule of that moment type is one call, whether or not it made
    a task (a cooldown, the gates)."""

    def test_three_calls_in_20_days_are_three_calls(self) -> None:
        """The catalog's rule has a 14-day cooldown: counting the rules that fired in 30
        days gave 1 at the third call (and none at the first), so the 2-call cap of 30
        points was never reached."""
        calls = [_hotline(day) for day in ("2026-11-01", "2026-11-10", "2026-11-20")]
        result = run(default_rules(), calls)
        assert result.suppressed[("competitor_hotline_call", "cooldown")] == 1
        hotline = [t for t in result.tasks if t.moment.type == "competitor_hotline_call"]
        assert [(t.triggered_at.day, _calls(t)) for t in hotline] == [
            (1, (1, 15)),
            (20, (3, 30)),
        ]

    def test_a_call_firing_two_hotline_rules_is_one_call_and_other_moments_none(self) -> None:
        rules = rules_from(HOTLINE_RULES)
        by_id = {rule.id: rule for rule in rules.rules}
        assert rules.tags_by_moment_type["competitor_hotline_call"] == (
            by_id["hotline_a"].tag,
            by_id["hotline_b"].tag,
        )
        result = run(rules, [_hotline("2026-11-01"), _hotline("2026-11-02", "10086")])
        assert [(t.moment.rule_id, _calls(t)) for t in result.tasks] == [
            ("hotline_a", (1, 15)),
            ("hotline_b", (1, 15)),
            ("other", (1, 15)),  # its own call is to us, not a competitor
        ]

    def test_a_call_counts_for_30_local_days(self) -> None:
        rules = rules_from(HOTLINE_RULES)
        calls = [_hotline("2026-10-02"), _hotline("2026-10-22", "10000")]
        state = run(rules, calls).store.load(SUB)
        assert state is not None
        detector = Detector(rules, {})

        def counted(day: str) -> int:
            when = int(dt.datetime.fromisoformat(at(day, "23:59")).timestamp())
            return risk_signals(detector, state, when).competitor_hotline_calls

        days = ("2026-10-31", "2026-11-01", "2026-11-20", "2026-11-21")
        assert [counted(day) for day in days] == [2, 1, 1, 0]

    def test_the_count_is_a_ring_of_30_days_whatever_the_calls(self) -> None:
        series: dict[str, list[float]] = {}
        for day in (100, 101, 101, 129):
            note_hotline_call(series, day)
        assert [hotline_calls(series, d) for d in (129, 130, 131, 159)] == [4, 3, 1, 0]
        for day in range(200, 300):
            note_hotline_call(series, day)
        assert hotline_calls(series, 299) == 30
        assert len(series["hotline"]) == 2 + 30  # newest day, first day, one count a day

    def test_the_count_reads_back_from_the_record_and_an_older_record_still_loads(
        self,
    ) -> None:
        rules = default_rules()
        calls = [_hotline(day) for day in ("2026-11-01", "2026-11-10", "2026-11-20")]
        state = run(rules, calls).store.load(SUB)
        assert state is not None
        stored = SubscriberState.from_bytes(state.to_bytes())
        assert stored == state
        when = int(dt.datetime.fromisoformat(at("2026-11-20")).timestamp())
        assert risk_signals(Detector(rules, {}), stored, when).competitor_hotline_calls == 3
        # As written before calls were counted: the hotline rule's task mark, no ring.
        tag = rules.tags_by_moment_type["competitor_hotline_call"][0]
        older = pack(
            b'{"o":{"u0":2},"r":{"u":["0a1b2c3d4e"]},"x":{"%s":%d}}' % (tag.encode(), when)
        )
        loaded = SubscriberState.from_bytes(older)
        assert (loaded.fired, loaded.series) == ({tag: when}, {})
        assert risk_signals(Detector(rules, {}), loaded, when).competitor_hotline_calls == 0


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
    condition: {field: counterparty, in: [10000, 10010]}
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
    open_complaints=st.integers(0, 3),
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
        for signals_in, priority in asked + asked:
            fresh = scored.__wrapped__(signals_in, priority)
            assert scored(signals_in, priority) == fresh
            assert scored(signals_in, priority)[1].model_dump_json() == fresh[1].model_dump_json()


def _hotline_calls_day_by_day(series: dict[str, list[float]], day: int) -> int:
    """What `hotline_calls` counts, read one day at a time through the series' `window`."""
    ring = series.get(risk.HOTLINE_CALLS.tag)
    if not ring:
        return 0
    total = 0.0
    for window in range(day - risk.HOTLINE_DAYS + 1, day + 1):
        found = risk.HOTLINE_CALLS.window(ring, window)
        if found is not None:
            total += found[0]
    return int(total)


@settings(max_examples=300, deadline=None)
@given(
    newest=st.integers(1000, 1100),
    first_back=st.integers(0, 40),
    slots=st.lists(st.integers(0, 5).map(float), max_size=32),
    day=st.integers(950, 1150),
)
def test_hotline_calls_reads_the_ring_as_the_days_one_by_one(
    newest: int, first_back: int, slots: list[float], day: int
) -> None:
    """The slice `hotline_calls` sums is the days `window` would read one by one: days after
    the ring's newest, days it no longer keeps and trailing slots it does not store."""
    series = {risk.HOTLINE_CALLS.tag: [float(newest), float(newest - first_back), *slots]}
    assert hotline_calls(series, day) == _hotline_calls_day_by_day(series, day)
