"""Rules in `mode: shadow`: evaluated on the same path as live ones up to the gates, counted,
and never a task nor a contact; `with_shadows_live` turns them into the live rule."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path

import orjson
import pytest

from moments.backtest import Backtest
from moments.backtest_input import EventFile
from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import PipelineResult, to_records
from moments.rulecheck import summary
from moments.runtime import Runtime
from moments.settings import load_settings
from moments.store import DictStateStore
from rules.catalog import RuleSet
from rules.exceptions import RulesError
from rules.explain import explain_rule
from sinks.metrics import Metrics

from .helpers import BIRTHDAY, CALL_TRIAL, NO_GATES, SUB, WELCOME, at, ev, rules_from, run, types

OTHER = "13900139002"
ROAMING = {"roaming_type": "international"}

GATES = """
gating:
  quiet_hours: ["21:00-08:00"]
  quiet_hours_channels: [sms, outbound_call, manager]
  frequency_cap: {max_contacts: 1, period: 7d, channels: [outbound_call]}
"""
COMPLAINT_CALL = """
  - id: complaint_call
    description: A call on every complaint
    on: [complaint]
    task: {family: anomaly, type: complaint_call, channel: outbound_call, priority: 2,
           action: call, ttl: 24h, description: "Complaint"}
"""
RULES = GATES + "rules:" + WELCOME + CALL_TRIAL + COMPLAINT_CALL


def _roam(day: str, time: str, country: str, sub: str = SUB) -> tuple[EventType, dict[str, object]]:
    return ev(EventType.ROAMING, at(day, time), sub, country=country, **ROAMING)


def test_a_shadow_rule_makes_no_task_and_counts_what_the_gates_decided() -> None:
    events = [
        _roam("2026-12-01", "10:00", "JP"),  # would make a task now
        _roam("2026-12-02", "10:00", "KR"),  # within its 30-day cooldown
        _roam("2026-12-01", "23:30", "JP", OTHER),  # inside the quiet hours
    ]
    result = run(rules_from(RULES), events)
    assert types(result.tasks) == ["roaming_welcome"] * 3
    assert result.shadow == Counter(
        {
            ("call_trial", "task", ""): 1,
            ("call_trial", "suppressed", "cooldown"): 1,
            ("call_trial", "deferred", "quiet_hours"): 1,
        }
    )


def test_its_moments_are_not_in_the_detected_count() -> None:
    detector = Detector(rules_from(RULES), {t.value: t for t in EventType})
    store = DictStateStore()
    batch = detector.process(to_records([_roam("2026-12-01", "10:00", "JP")]), store.load, None)
    assert batch.detected == Counter({("first_time", "roaming_welcome"): 1})
    assert sum(batch.shadow.values()) == 1


def test_a_shadow_rule_takes_no_contact_from_the_frequency_cap(tmp_path: Path) -> None:
    """Through dispatch, which applies the cap to the contacts it makes."""
    events = [
        _roam("2026-12-01", "10:00", "JP"),
        ev(
            EventType.COMPLAINT,
            at("2026-12-01", "11:00"),
            complaint_id="c1",
            category="network",
            severity=2,
            status="opened",
        ),
    ]
    history = tmp_path / "h.jsonl"
    history.write_bytes(b"".join(orjson.dumps({"type": t.value, **v}) + b"\n" for t, v in events))
    until = dt.datetime.fromisoformat(at("2026-12-02", "12:00")).timestamp()

    def sent(rules: RuleSet) -> list[str]:
        result = asyncio.run(Backtest(rules).run(EventFile(history), until=until))
        return [orjson.loads(p.payload)["moment"]["type"] for p in result.published]

    rules = rules_from(RULES)
    # In shadow the call on arrival took no contact: the complaint call goes out.
    assert sent(rules) == ["roaming_welcome", "complaint_call"]
    # Live, the same rule's call takes the one contact of the week, and the cap drops the
    # complaint call (it cannot wait 7 days with a 24-hour ttl): the case above is the
    # shadow mode's doing.
    assert sent(rules.with_shadows_live()) == ["roaming_welcome", "roaming_call"]


def test_going_live_keeps_what_the_shadow_rule_learnt() -> None:
    rules = rules_from(RULES)
    trial = run(rules, [_roam("2026-12-01", "10:00", "JP")])
    # The same rule live, on the state the trial left: Japan is not first any more.
    later = run(rules.with_shadows_live(), [_roam("2027-02-01", "10:00", "JP")], result=trial)
    assert "roaming_call" not in types(later.tasks)
    fresh = run(rules.with_shadows_live(), [_roam("2027-02-01", "10:00", "JP")])
    assert "roaming_call" in types(fresh.tasks)


def test_the_trials_cooldown_holds_the_trial_not_the_rule_gone_live() -> None:
    """The trial's judgement of Japan set the rule's 30-day mark: its own next moment,
    Korea, counted as held by the cooldown, as the live rule would have been. Gone live a
    week later, France is called about: the trial called nobody, and the mark held the
    first live moments of a whole cooldown back."""
    rules = rules_from(RULES)
    trial = run(rules, [_roam("2026-12-01", "10:00", "JP"), _roam("2026-12-02", "10:00", "KR")])
    assert trial.shadow[("call_trial", "suppressed", "cooldown")] == 1
    later = run(
        rules.with_shadows_live(),
        [_roam("2026-12-08", "10:00", "FR"), _roam("2026-12-09", "10:00", "DE")],
        result=trial,
    )
    calls = [t.moment.params["country"] for t in later.tasks if t.moment.type == "roaming_call"]
    assert calls == ["FR"]  # Germany, a day later, is held by France's live cooldown
    assert later.suppressed[("roaming_call", "cooldown")] == 1


def test_shadow_rules_are_left_out_of_the_fired_tags_by_moment_type() -> None:
    rules = rules_from(RULES)
    assert "roaming_call" not in rules.tags_by_moment_type
    assert "roaming_call" in rules.with_shadows_live().tags_by_moment_type


def test_the_mode_is_checked_and_explained() -> None:
    with pytest.raises(RulesError, match="mode"):
        rules_from(RULES.replace("mode: shadow", "mode: dry"))
    rules = rules_from(RULES)
    assert [r.id for r in rules.shadows] == ["call_trial"]
    (trial,) = rules.shadows
    assert "shadow mode" in explain_rule(trial)
    assert "shadow" not in explain_rule(rules.rules[0])


def test_rules_test_summarises_each_shadow_rule() -> None:
    rules = rules_from(RULES)
    lines = summary(run(rules, [_roam("2026-12-01", "23:30", "JP")]), rules)
    assert "  call_trial: 1 moment(s): 0 would make a task now, 1 deferred (quiet_hours 1)" in lines
    quiet = summary(run(rules, []), rules)
    assert "  call_trial: no moment" in quiet


def test_the_wall_clock_expiry_of_a_shadow_moment_is_counted() -> None:
    rules = rules_from(RULES)
    old = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    now = old + dt.timedelta(days=3)  # the 24-hour tasks are worthless by now
    detector = Detector(rules, {t.value: t for t in EventType})
    records = to_records([_roam("2026-12-01", "10:00", "JP")])
    batch = detector.process(records, DictStateStore().load, now)
    assert batch.shadow == Counter({("call_trial", "suppressed", "expired"): 1})
    assert batch.suppressed == Counter({("roaming_welcome", "expired"): 1})


def test_an_expectation_of_a_shadow_rule_says_it_makes_no_task() -> None:
    from moments.rulecheck import check_expectations

    rules = rules_from(RULES)
    result = run(rules, [_roam("2026-12-01", "10:00", "JP")])
    (wrong,) = check_expectations(result, rules, {"call_trial": 1})
    assert wrong == (
        "call_trial: expected 1 task(s), got 0 (it is in mode: shadow, which makes no task; "
        "add --shadow-as-live)"
    )
    assert check_expectations(result, rules, {"call_trial": 0, "welcome": 1}) == []


def _declared_at_0(rules: RuleSet) -> set[tuple[str, str, str]]:
    """The `moments_shadow_moments_total` series a worker serves at 0 once `rules` load."""
    metrics = Metrics()
    runtime = Runtime(load_settings(), metrics, Detector(rules, {}))
    runtime.install_rules(rules)
    return {
        (s.labels["rule_id"], s.labels["outcome"], s.labels["reason"])
        for family in metrics.registry.collect()
        if family.name == "moments_shadow_moments"
        for s in family.samples
        if s.name.endswith("_total") and s.value == 0
    }


def test_a_shadow_rules_deferred_and_suppressed_series_start_at_0() -> None:
    """Each reason the gates (and the cooldown and expiry before them) can give a shadow
    judgement is served at 0 from the start: a series born at its first increment was
    invisible to `rate()` and `increase()` (the dashboard's shadow panel missed a trial's
    first quiet-hours deferral). Dispatch's reasons never reach a shadow rule."""
    suppressed = ("cooldown", "expired", "closed", "opt_out", "complaint_open", "suspended")
    expected = {
        ("call_trial", "task", ""),
        *(("call_trial", "suppressed", reason) for reason in suppressed),
        ("call_trial", "deferred", "quiet_hours"),
        ("call_trial", "deferred", "suspended"),
    }
    assert _declared_at_0(rules_from(RULES)) == expected  # only the shadow rule's


def test_what_a_shadow_rule_is_counted_under_was_declared() -> None:
    """The declared set holds what the engine counts: judgements suppressed by the
    cooldown, the subscriber's opt-out and a closed line, and deferred by quiet hours and
    a suspended line."""
    profile = "2026-11-30"
    events = [
        _roam("2026-12-01", "10:00", "JP"),  # task
        _roam("2026-12-02", "10:00", "KR"),  # cooldown
        _roam("2026-12-01", "23:30", "JP", OTHER),  # quiet hours
        ev(EventType.PROFILE, at(profile, "09:00"), "13900139003", opt_out=["outbound_call"]),
        _roam("2026-12-01", "10:00", "JP", "13900139003"),  # opt-out
        ev(EventType.PROFILE, at(profile, "09:00"), "13900139004", status="closed"),
        _roam("2026-12-01", "10:00", "JP", "13900139004"),  # closed
        ev(EventType.PROFILE, at(profile, "09:00"), "13900139005", status="suspended"),
        _roam("2026-12-01", "10:00", "JP", "13900139005"),  # suspended: waits
    ]
    counted = set(run(rules_from(RULES), events).shadow)
    assert {(outcome, reason) for _, outcome, reason in counted} == {
        ("task", ""),
        ("suppressed", "cooldown"),
        ("deferred", "quiet_hours"),
        ("suppressed", "opt_out"),
        ("suppressed", "closed"),
        ("deferred", "suspended"),
    }
    assert counted <= _declared_at_0(rules_from(RULES))


SILENCE_TRIAL = """
  - id: silent
    mode: shadow
    description: No usage for 3 days, on trial
    on: [usage]
    evaluate: daily
    condition: {absence: 3d}
    task: {family: anomaly, type: silent, channel: sms, priority: 3, action: nudge,
           ttl: 3d, description: "Silent"}
"""
RENEWAL_TRIAL = """
  - id: renewal
    mode: shadow
    description: The contract ends within 30 days, on trial
    on: [profile]
    evaluate: special_day
    condition: {occasion: contract_expiry}
    task: {family: special_day, type: renewal, channel: sms, priority: 2,
           action: renewal_offer, ttl: 7d, description: "Renewal"}
"""


def test_a_silence_judged_in_shadow_is_detected_at_its_first_live_judgement() -> None:
    """A silence is judged again each day it lasts, one moment counted at its first
    judgement. A trial that judged it and then went live (the `mode` line deleted, the
    workers reloaded) had its first live judgement taken for the same moment judged
    again: its task was made, and `moments_detected_total` never counted it."""
    rules = rules_from(NO_GATES + "rules:" + SILENCE_TRIAL)
    used = ev(EventType.USAGE, at("2026-12-01", "10:00"), kind="data", quantity=1000)
    trial = run(rules, [used], until=at("2026-12-06", "12:00"))
    assert trial.shadow == Counter({("silent", "task", ""): 1})  # judged on the 5th and 6th
    live = run(rules.with_shadows_live(), [], until=at("2026-12-09", "12:00"), result=trial)
    (task,) = live.tasks  # the first live close, the 7th; the 8th and 9th judge it again
    assert task.triggered_at.date() == dt.date(2026, 12, 7)
    assert live.detected == Counter({("anomaly", "silent"): 1})


def test_a_contract_end_judged_in_shadow_is_detected_at_its_first_live_judgement() -> None:
    rules = rules_from(NO_GATES + "rules:" + RENEWAL_TRIAL)
    profile = ev(EventType.PROFILE, at("2026-12-01", "10:00"), contract_end="2026-12-20")
    trial = run(rules, [profile], until=at("2026-12-03", "12:00"))
    assert trial.shadow == Counter({("renewal", "task", ""): 1})
    live = run(rules.with_shadows_live(), [], until=at("2026-12-06", "12:00"), result=trial)
    (task,) = live.tasks
    assert task.triggered_at.date() == dt.date(2026, 12, 4)
    assert live.detected == Counter({("special_day", "renewal"): 1})


def test_a_birthday_judged_in_shadow_that_morning_is_detected_live_that_day() -> None:
    """Gone live after the day's look, a profile update that day looks again: the
    greeting the trial judged at 09:00 is no moment the live rule judged."""
    trial_rules = BIRTHDAY.replace("    description:", "    mode: shadow\n    description:", 1)
    rules = rules_from(NO_GATES + "rules:" + trial_rules)
    profile = ev(EventType.PROFILE, at("2026-12-01", "10:00"), birthday="1990-12-05")
    trial = run(rules, [profile], until=at("2026-12-05", "12:00"))
    assert trial.shadow == Counter({("birthday_greeting", "task", ""): 1})
    update = ev(EventType.PROFILE, at("2026-12-05", "15:00"), birthday="1990-12-05", tier="gold")
    live = run(rules.with_shadows_live(), [update], result=trial)
    assert types(live.tasks) == ["birthday"]
    assert live.detected == Counter({("special_day", "birthday"): 1})


def test_a_silence_judged_live_then_in_shadow_is_one_shadow_moment() -> None:
    """A live rule switched to `mode: shadow` while one of its silences lasts: the shadow
    figures count the silence once, at its first judgement in shadow. Its first shadow
    judgement was taken for the same moment judged again (the live judgement the day
    before counted it, in the live figures), so the shadow figures counted nothing for it
    (the switch from shadow to live counts it at the first live judgement)."""
    live_rules = rules_from(NO_GATES + "rules:" + SILENCE_TRIAL.replace("    mode: shadow\n", ""))
    used = ev(EventType.USAGE, at("2026-12-01", "10:00"), kind="data", quantity=1000)
    live = run(live_rules, [used], until=at("2026-12-06", "12:00"))
    assert live.detected == Counter({("anomaly", "silent"): 1})
    assert not live.shadow
    trial = run(
        rules_from(NO_GATES + "rules:" + SILENCE_TRIAL),
        [],
        until=at("2026-12-09", "12:00"),
        result=live,
    )
    assert trial.shadow == Counter({("silent", "task", ""): 1})  # the 7th; not the 8th, 9th
    assert trial.detected == Counter({("anomaly", "silent"): 1})


def test_a_contract_end_judged_live_then_in_shadow_is_one_shadow_moment() -> None:
    rules = rules_from(NO_GATES + "rules:" + RENEWAL_TRIAL.replace("    mode: shadow\n", ""))
    profile = ev(EventType.PROFILE, at("2026-12-01", "10:00"), contract_end="2026-12-20")
    live = run(rules, [profile], until=at("2026-12-03", "12:00"))
    assert live.detected == Counter({("special_day", "renewal"): 1})
    trial = run(
        rules_from(NO_GATES + "rules:" + RENEWAL_TRIAL),
        [],
        until=at("2026-12-06", "12:00"),
        result=live,
    )
    assert trial.shadow == Counter({("renewal", "task", ""): 1})


def test_a_birthday_judged_live_that_morning_is_one_shadow_moment_that_day() -> None:
    """Put in shadow after the day's look, a profile update that day looks again: the
    greeting the live rule judged at 09:00 is no moment the shadow rule judged."""
    rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
    profile = ev(EventType.PROFILE, at("2026-12-01", "10:00"), birthday="1990-12-05")
    live = run(rules, [profile], until=at("2026-12-05", "12:00"))
    assert types(live.tasks) == ["birthday"]
    trial_rules = BIRTHDAY.replace("    description:", "    mode: shadow\n    description:", 1)
    update = ev(EventType.PROFILE, at("2026-12-05", "15:00"), birthday="1990-12-05", tier="gold")
    trial = run(rules_from(NO_GATES + "rules:" + trial_rules), [update], result=live)
    assert trial.shadow == Counter({("birthday_greeting", "task", ""): 1})


GREETING_TRIAL = """
  - id: care
    mode: shadow
    description: A renewal offer in the contract's lead, a birthday or New Year's greeting
    on: [profile]
    evaluate: special_day
    condition: {occasion: [birthday, contract_expiry, holiday], holidays: [new_year]}
    task: {family: special_day, type: care, channel: sms, priority: 3,
           action: care_sms, ttl: 48h, description: "Care"}
"""


def test_a_contract_end_judged_in_shadow_beside_a_later_occasion_is_detected_live() -> None:
    """A rule of several occasions judged in shadow a contract's end and, the same day,
    New Year (judged after it). The record kept only the last occasion the trial fired
    on, so gone live the next day, the contract's end was taken for one the live rule had
    judged: its task was made, never counted in `moments_detected_total`."""
    rules = rules_from(NO_GATES + "rules:" + GREETING_TRIAL)
    profile = ev(EventType.PROFILE, at("2026-12-20", "10:00"), contract_end="2027-01-15")
    trial = run(rules, [profile], until=at("2027-01-01", "12:00"))
    assert trial.shadow == Counter({("care", "task", ""): 2})  # the contract; New Year
    live = run(rules.with_shadows_live(), [], until=at("2027-01-03", "12:00"), result=trial)
    (task,) = live.tasks  # the 2nd; the 3rd judges it again
    assert task.triggered_at.date() == dt.date(2027, 1, 2)
    assert live.detected == Counter({("special_day", "care"): 1})


def test_a_live_greeting_judged_first_keeps_the_trials_contract_end_apart() -> None:
    """Gone live, the birthday (judged before the contract's end) removed what the trial
    had judged of the rule: the contract's end its trial fired on the day before was then
    taken for one the live rule had judged, and not counted."""
    rules = rules_from(NO_GATES + "rules:" + GREETING_TRIAL)
    profile = ev(
        EventType.PROFILE, at("2026-12-01", "10:00"), contract_end="2026-12-20", birthday="12-04"
    )
    trial = run(rules, [profile], until=at("2026-12-03", "12:00"))
    assert trial.shadow == Counter({("care", "task", ""): 1})
    live = run(rules.with_shadows_live(), [], until=at("2026-12-04", "12:00"), result=trial)
    assert sorted(t.moment.params.get("birthday", "contract") for t in live.tasks) == [
        "12-04",
        "contract",
    ]
    assert live.detected == Counter({("special_day", "care"): 2})


class TestSeveralOccasionsLookedAtAgain:
    """A birthday on New Year's Day makes two moments of a rule of several occasions (one
    task each). A profile update later that day looks at the day again (moments.sweep's
    `_looked_at`): each occasion the day's look judged is the same moment judged again,
    and one the look judged in the other mode is judged first now. The record keeps what
    a trial judged per kind of occasion; kept per rule, it held the last occasion alone,
    and the other was counted again in the shadow figures, or never in the live ones."""

    def look(
        self, mode_at_look: str, mode_after: str
    ) -> tuple[Counter[tuple[str, str, str]], PipelineResult]:
        """The day's look in one mode, an update at 15:00 in the other (or the same):
        the shadow figures and the run after the update."""
        trial = rules_from(NO_GATES + "rules:" + GREETING_TRIAL)
        modes = {"shadow": trial, "live": trial.with_shadows_live()}
        profile = ev(EventType.PROFILE, at("2026-12-30", "10:00"), birthday="01-01")
        first = run(modes[mode_at_look], [profile], until=at("2027-01-01", "12:00"))
        judged = Counter(first.shadow)
        update = ev(EventType.PROFILE, at("2027-01-01", "15:00"), tier="gold", birthday="01-01")
        return judged, run(modes[mode_after], [update], result=first)

    def test_a_trial_counts_each_occasion_once(self) -> None:
        judged, after = self.look("shadow", "shadow")
        assert judged == Counter({("care", "task", ""): 2})
        assert after.shadow == judged
        assert not after.detected

    def test_a_trial_gone_live_counts_each_at_its_first_live_judgement(self) -> None:
        judged, after = self.look("shadow", "live")
        assert judged == Counter({("care", "task", ""): 2})
        assert len({t.task_id for t in after.tasks}) == 2
        assert after.detected == Counter({("special_day", "care"): 2})
        assert after.shadow == judged

    def test_a_live_rule_put_in_shadow_counts_each_once_in_the_shadow_figures(self) -> None:
        judged, after = self.look("live", "shadow")
        assert not judged
        assert after.detected == Counter({("special_day", "care"): 2})
        assert after.shadow == Counter({("care", "task", ""): 2})

    def test_a_live_rule_counts_each_once(self) -> None:
        _, after = self.look("live", "live")
        assert after.detected == Counter({("special_day", "care"): 2})
        assert not after.shadow
