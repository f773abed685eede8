"""A moment judged again each day (a silence while it lasts, a contract's end over its
lead) is one moment in every count, not only in `moments_detected_total`.

Its task is made again at each judgement (the ledger sends it once, and still sends it
when an opt-out or a cooldown kept the first judgement from making it), but each day
counted again: a shadow rule's `task` in `moments_shadow_moments_total` (28 for one
35-day silence, whose live rule sends one task), the ledger's hold in
`moments_tasks_suppressed_total{reason="dedup"}` (27), and the gates' suppressions of a
moment already counted."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from moments.backtest import BacktestResult, run_backtest
from moments.backtest_input import FileEvent
from moments.engine import Detector
from moments.models import EventType
from moments.pipeline import run_pipeline
from moments.sweep import sweep
from sinks.policy import DispatchPolicy

from .rules.helpers import (
    BIRTHDAY,
    CONTRACT_LEAD,
    NO_ACTIVITY,
    NO_GATES,
    SUB,
    at,
    backtest_of,
    ev,
    rules_from,
    run,
)

SILENCE = NO_ACTIVITY.replace(", cooldown: 14d", "")
CONTRACT = CONTRACT_LEAD
SHADOW = "    mode: shadow\n"


def shadowed(rule: str) -> str:
    head, rest = rule.split("\n    description:", 1)
    return head + "\n" + SHADOW + "    description:" + rest


def use(day: str) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.USAGE, at(day, "10:00"), kind="data", quantity=1000)


def suspend(day: str) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.PROFILE, at(day, "11:00"), status="suspended")


def contract(day: str = "2026-11-01", **more: Any) -> tuple[EventType, dict[str, Any]]:
    return ev(EventType.PROFILE, at(day, "08:00"), contract_end="2026-11-20", **more)


backtest = backtest_of


def counts(result: BacktestResult, name: str) -> dict[tuple[str, ...], int]:
    return {
        tuple(v for k, v in sorted(labels.items())): int(n) for labels, n in result.counter(name)
    }


class TestShadowRules:
    def test_a_silence_is_one_shadow_moment(self) -> None:
        out = run(
            rules_from(NO_GATES + "rules:" + shadowed(SILENCE)),
            [use("2026-11-01")],
            until=at("2026-12-06"),
        )
        assert out.shadow == {("no_activity", "task", ""): 1}

    def test_a_silence_past_its_cooldown_is_still_one(self) -> None:
        """The live rule's task after the cooldown has the first one's id: not sent."""
        out = run(
            rules_from(NO_GATES + "rules:" + shadowed(NO_ACTIVITY)),
            [use("2026-11-01")],
            until=at("2026-12-06"),
        )
        assert out.shadow == {("no_activity", "task", ""): 1}

    def test_a_contracts_lead_is_one_shadow_moment(self) -> None:
        out = run(
            rules_from(NO_GATES + "rules:" + shadowed(CONTRACT)),
            [contract()],
            until=at("2026-11-21", "00:00"),
        )
        assert out.shadow == {("contract_expiry_near", "task", ""): 1}

    def test_a_silence_in_the_warm_up_is_one_shadow_moment_and_one_live(self) -> None:
        """Before `MOMENTS_LIVE_FROM` every rule is in shadow: the warm-up counted the
        silence at each day's close (22 times); live from 12-01 it is detected once more."""
        out = run_pipeline(
            [use("2026-11-01")],
            rules_from(NO_GATES + "rules:" + SILENCE),
            until=dt.datetime.fromisoformat(at("2026-12-06")),
            live_from=dt.datetime.fromisoformat(at("2026-12-01", "00:00")),
        )
        assert out.shadow == {("no_activity", "task", ""): 1}
        assert out.detected == {("anomaly", "no_activity"): 1}
        assert [t.triggered_at.date() for t in out.tasks] == [dt.date(2026, 12, 1)]


class TestLiveRules:
    def test_a_silence_sent_once_is_no_daily_dedup(self) -> None:
        out = backtest(NO_GATES + "rules:" + SILENCE, [use("2026-11-01")], at("2026-12-06"))
        assert counts(out, "moments_tasks_published") == {("sms", "no_activity"): 1}
        assert counts(out, "moments_tasks_suppressed") == {}

    def test_a_contracts_lead_sent_once_is_no_daily_dedup(self) -> None:
        out = backtest(NO_GATES + "rules:" + CONTRACT, [contract()], at("2026-11-21", "00:00"))
        assert counts(out, "moments_tasks_published") == {("sms", "contract_expiry_near"): 1}
        assert counts(out, "moments_tasks_suppressed") == {}

    def test_an_opt_out_holds_a_contracts_lead_once_and_its_end_lets_it_go(self) -> None:
        """Opted out of SMS over the first days of the lead: one suppression (it was one
        each day); the opt-out withdrawn on 11-10, the offer goes out the next look."""
        events = [contract(opt_out=["sms"]), contract("2026-11-10", opt_out=[])]
        out = backtest(NO_GATES + "rules:" + CONTRACT, events, at("2026-11-21", "00:00"))
        assert counts(out, "moments_tasks_suppressed") == {("contract_expiry_near", "opt_out"): 1}
        assert counts(out, "moments_tasks_published") == {("sms", "contract_expiry_near"): 1}

    def test_a_profile_update_before_a_days_look_is_no_second_detection(self) -> None:
        """A tier update at 07:00 on 11-05, before that day's look: the look could not
        judge the day before with the profile it read (gone), and counted the contract's
        end detected a second time; the state remembers what the day's look fired on."""
        events = [contract(), ev(EventType.PROFILE, at("2026-11-05", "07:00"), tier="gold")]
        out = run(rules_from(NO_GATES + "rules:" + CONTRACT), events, until=at("2026-11-21"))
        assert out.detected == {("special_day", "contract_expiry_near"): 1}
        assert len(out.tasks) == 1

    def test_an_update_that_makes_the_rule_fire_counts_it_then(self) -> None:
        """Gold only: the rule first fires at the look after the tier update (11-05);
        detected once, then, and not again on the days after."""
        rule = CONTRACT.replace(
            "condition: {occasion: contract_expiry}",
            "condition: {all: [{occasion: contract_expiry}, {profile: tier, in: [gold]}]}",
        )
        events = [contract(), ev(EventType.PROFILE, at("2026-11-05", "07:00"), tier="gold")]
        out = run(rules_from(NO_GATES + "rules:" + rule), events, until=at("2026-11-21"))
        assert out.detected == {("special_day", "contract_expiry_near"): 1}
        assert [t.triggered_at.date() for t in out.tasks] == [dt.date(2026, 11, 5)]

    def test_an_update_read_after_the_days_look_dated_before_it_counts_the_rule_then(
        self,
    ) -> None:
        """The tier update is dated 11-04 23:00 but read after the 11-05 look (a CRM feed
        behind; profile updates hold however late): that look did not fire (no tier), and
        the next day's look re-judged 11-05 with the gold profile, took the moment for
        judged then and counted it nowhere. The profile changed after the look, whatever
        the update's date: what the look fired on (`leads`) decides."""
        rule = CONTRACT.replace(
            "condition: {occasion: contract_expiry}",
            "condition: {all: [{occasion: contract_expiry}, {profile: tier, in: [gold]}]}",
        )
        events = [
            contract(),
            use("2026-11-05"),  # the 11-05 09:00 look has run before the update is read
            ev(EventType.PROFILE, at("2026-11-04", "23:00"), tier="gold"),
        ]
        out = run(rules_from(NO_GATES + "rules:" + rule), events, until=at("2026-11-21"))
        assert out.detected == {("special_day", "contract_expiry_near"): 1}
        assert [t.triggered_at.date() for t in out.tasks] == [dt.date(2026, 11, 6)]

    def test_a_shadow_rules_lead_with_an_update_is_one_shadow_moment(self) -> None:
        events = [contract(), ev(EventType.PROFILE, at("2026-11-05", "07:00"), tier="gold")]
        out = run(
            rules_from(NO_GATES + "rules:" + shadowed(CONTRACT)), events, until=at("2026-11-21")
        )
        assert out.shadow == {("contract_expiry_near", "task", ""): 1}

    def test_a_lead_over_a_long_suspension_is_deferred_and_dropped_once(self) -> None:
        """Suspended over the whole 20-day lead (a 48h task): deferred once and dropped
        once; each time the dropped task's entry lapsed (a day past its expiry) the next
        look made the task again, counted deferred (7 in all) and dropped (6) again."""
        out = backtest(
            NO_GATES + "rules:" + CONTRACT, [contract(status="suspended")], at("2026-11-21")
        )
        assert counts(out, "moments_detected") == {("special_day", "contract_expiry_near"): 1}
        assert counts(out, "moments_tasks_deferred") == {("suspended",): 1}
        assert counts(out, "moments_tasks_suppressed") == {("contract_expiry_near", "suspended"): 1}
        assert counts(out, "moments_tasks_published") == {}

    def test_the_reactivation_after_a_long_suspension_sends_the_offer_at_once(self) -> None:
        """The line active again on 11-12 at 12:00: the update's look makes the task, sent
        then; the suspension counted once."""
        events = [
            contract(status="suspended"),
            ev(EventType.PROFILE, at("2026-11-12", "12:00"), status="active"),
        ]
        out = backtest(NO_GATES + "rules:" + CONTRACT, events, at("2026-11-21"))
        assert counts(out, "moments_detected") == {("special_day", "contract_expiry_near"): 1}
        assert counts(out, "moments_tasks_deferred") == {("suspended",): 1}
        assert counts(out, "moments_tasks_suppressed") == {("contract_expiry_near", "suspended"): 1}
        assert [p.at for p in out.published] == [
            dt.datetime.fromisoformat(at("2026-11-12", "12:00")).timestamp()
        ]

    def test_a_silence_over_a_long_suspension_is_deferred_and_dropped_once(self) -> None:
        """Suspended from the silence's start (11-09) to the end: its 3-day task waits for
        the line and expires unsent; each time the dropped task's entry lapsed (a day past
        its expiry) the next close made the task again, new to the ledger, counted deferred
        and dropped again (7 of each in 28 days). The task made again takes the dropped
        entry over (`TAKEN_OVER`) and carries that its moment was counted (`counted`)."""
        events = [use("2026-11-01"), suspend("2026-11-01")]
        out = backtest(NO_GATES + "rules:" + SILENCE, events, at("2026-12-06"))
        assert counts(out, "moments_detected") == {("anomaly", "no_activity"): 1}
        assert counts(out, "moments_tasks_deferred") == {("suspended",): 1}
        assert counts(out, "moments_tasks_suppressed") == {("no_activity", "suspended"): 1}
        assert counts(out, "moments_tasks_published") == {}

    def test_a_silence_reactivated_after_a_long_suspension_goes_out_at_once(self) -> None:
        """The line active again on 11-25 at 12:00, the silence still going on: the task
        the last close made again waits for the line and goes out then; the suspension
        counted once (its first task's deferral and drop)."""
        events = [
            use("2026-11-01"),
            suspend("2026-11-01"),
            ev(EventType.PROFILE, at("2026-11-25", "12:00"), status="active"),
        ]
        out = backtest(NO_GATES + "rules:" + SILENCE, events, at("2026-12-06"))
        assert counts(out, "moments_tasks_deferred") == {("suspended",): 1}
        assert counts(out, "moments_tasks_suppressed") == {("no_activity", "suspended"): 1}
        assert counts(out, "moments_tasks_published") == {("sms", "no_activity"): 1}
        assert [p.at for p in out.published] == [
            dt.datetime.fromisoformat(at("2026-11-25", "12:00")).timestamp()
        ]
        (task,) = [orjson.loads(p.payload) for p in out.published]
        assert "counted" not in task  # dispatch's own, not published

    def test_a_lead_whose_task_capacity_drops_each_day_is_dropped_once(self) -> None:
        """No SMS capacity over the 20-day lead (a 48h task, overflow `drop`): the offer is
        dropped once. Each day after a dropped task expired, the look made it again,
        taking the dropped entry over, and capacity dropped it again, counted again (10
        `capacity` suppressions and 10 overflow drops for one moment)."""
        policy = DispatchPolicy.model_validate(
            {
                "capacity": {"*": {"sms": 0}},
                "reserved_share": 0,
                "overflow": {"*": {"policy": "drop"}},
            }
        )
        lines = [
            FileEvent(
                dt.datetime.fromisoformat(str(value["occurred_at"])).timestamp(),
                kind,
                str(value["subscriber_id"]).encode(),
                orjson.dumps(value),
            )
            for kind, value in [contract()]
        ]
        out = run_backtest(
            rules_from(NO_GATES + "rules:" + CONTRACT),
            lines,
            policy,
            until=dt.datetime.fromisoformat(at("2026-11-21")),
        )
        assert counts(out, "moments_tasks_suppressed") == {("contract_expiry_near", "capacity"): 1}
        assert counts(out, "moments_tasks_overflow") == {("contract_expiry_near", "drop"): 1}
        assert counts(out, "moments_tasks_published") == {}

    def test_a_silence_first_made_at_a_later_close_counts_its_deferral(self) -> None:
        """The silence is due at the 11-09 midnight close, opted out of SMS; the opt-out
        withdrawn, the 11-11 close makes its first task, in the night's quiet hours:
        deferred, counted once (by dispatch, as the task is new to the ledger), and the
        closes after it count nothing."""
        events = [
            use("2026-11-01"),
            ev(EventType.PROFILE, at("2026-11-01", "11:00"), opt_out=["sms"]),
            ev(EventType.PROFILE, at("2026-11-10", "12:00"), opt_out=[]),
        ]
        out = backtest("rules:" + SILENCE, events, at("2026-11-20"))
        assert counts(out, "moments_tasks_suppressed") == {("no_activity", "opt_out"): 1}
        assert counts(out, "moments_tasks_deferred") == {("quiet_hours",): 1}
        assert counts(out, "moments_tasks_published") == {("sms", "no_activity"): 1}


class TestJudgedAgainInOneBatch:
    """A moment judged again in the batch that made its first task (a profile update read
    in the slice of the day's look; the closes of a catch-up, a partition's event time
    moving on by days at once) is one task: made twice, dispatch took the last for a
    re-judgement new to the ledger and counted its deferral a second time, and the
    stream sent it as of the later judgement."""

    def test_a_look_and_an_update_read_together_count_one_deferral(self) -> None:
        """The birthday first known at 09:10, in the customer's quiet hours to 12:00, and a
        tier update 30 s later, in the same slice: deferred once (it was twice)."""
        events = [
            ev(
                EventType.PROFILE,
                at("2026-12-01", "09:10"),
                birthday="12-01",
                quiet_hours=["08:00-12:00"],
            ),
            ev(EventType.PROFILE, "2026-12-01T09:10:30+08:00", tier="gold"),
        ]
        out = backtest(NO_GATES + "rules:" + BIRTHDAY, events, at("2026-12-02", "00:00"))
        assert counts(out, "moments_detected") == {("special_day", "birthday"): 1}
        assert counts(out, "moments_tasks_deferred") == {("quiet_hours",): 1}
        assert counts(out, "moments_tasks_published") == {("sms", "birthday"): 1}

    def test_a_catch_up_of_closes_makes_the_silence_once(self) -> None:
        """The sweep of a partition whose event time jumped to 11-11 closes the windows of
        11-08, 11-09 and 11-10 at once: the silence fires at the first close and is judged
        again at the other two, one task, dated the first close, deferred once."""
        rules = rules_from("rules:" + SILENCE)
        before = run_pipeline(
            [use("2026-11-01")], rules, until=dt.datetime.fromisoformat(at("2026-11-08"))
        )
        assert not before.tasks
        state = before.store.load(SUB)
        assert state is not None
        detector = Detector(rules, {t.value: t for t in EventType})
        mark = int(dt.datetime.fromisoformat(at("2026-11-11", "01:00")).timestamp())
        result = sweep(detector, [(SUB, state, 0)], lambda _p: mark, None)
        assert [t.triggered_at.isoformat() for t in result.tasks] == ["2026-11-09T00:00:00+08:00"]
        assert not result.rejudged
        assert result.detected == {("anomaly", "no_activity"): 1}
        assert result.deferred == {"quiet_hours": 1}
