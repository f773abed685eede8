"""Every rule of the default catalog, through the same engine the stream uses: it fires
when it should, with the values that made it fire, and stays quiet when it should not."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import Any

import pytest

from moments.engine import Detector
from moments.models import Channel, EventType, ServiceTask
from moments.pipeline import to_records
from moments.store import DictStateStore
from rules.catalog import DEFAULT_CATALOG, load_texts
from sinks.hours import published
from tests.unit.catalogs import default_rules

from .helpers import SHANGHAI, SUB, at, ev, run, types, usage

PROFILE = EventType.PROFILE


FIRST_OPERATOR = """\
  - id: first_operator
    description: A network not seen before
    on: [roaming]
    condition: {first_time: operator}
    task: {family: first_time, type: first_operator, channel: sms, priority: 3,
           action: a, ttl: 24h, description: "On {operator}"}
"""


def only(tasks: list[ServiceTask], moment_type: str) -> list[ServiceTask]:
    return [t for t in tasks if t.moment.type == moment_type]


class TestFirstTime:
    def test_first_roaming_per_country_once(self) -> None:
        events = [
            ev(EventType.ROAMING, at("2026-11-02"), country="JP", roaming_type="international"),
            ev(EventType.ROAMING, at("2026-11-03"), country="JP", roaming_type="international"),
            ev(EventType.ROAMING, at("2026-11-04"), country="TH", roaming_type="international"),
            ev(EventType.ROAMING, at("2026-11-05"), country="CN", roaming_type="domestic"),
        ]
        tasks = only(run(default_rules(), events).tasks, "first_international_roaming")
        assert [t.moment.params["country"] for t in tasks] == ["JP", "TH"]
        assert tasks[0].moment.description.startswith("Welcome to JP")

    def test_service_order_per_code(self) -> None:
        events = [
            usage(at("2026-11-02"), kind="service_order", service_code="5G-100"),
            usage(at("2026-11-03"), kind="service_order", service_code="5G-100"),
            usage(at("2026-11-04"), kind="service_order", service_code="VIDEO"),
        ]
        tasks = only(run(default_rules(), events).tasks, "first_service_order")
        assert [t.moment.params["service_code"] for t in tasks] == ["5G-100", "VIDEO"]

    def test_handset_change_not_on_the_first_imei(self) -> None:
        a, b = "356938035643809", "490154203237518"
        events = [
            usage(at("2026-11-02"), kind="data", imei=a),
            usage(at("2026-11-03"), kind="data", imei=a),
            usage(at("2026-11-04"), kind="data", imei=b),
        ]
        tasks = only(run(default_rules(), events).tasks, "handset_change")
        assert len(tasks) == 1
        assert tasks[0].moment.params == {"imei": b, "previous_imei": a}

    def test_the_same_handset_written_another_way_is_no_change(self) -> None:
        """One handset, reported by one system as its IMEI (15 digits), by another as its
        IMEISV (14 digits and a 2-digit software version, which an OS update changes), or
        without the check digit: a "new handset" SMS each time was a false moment."""
        imei, imeisv, bare = "356938035643809", "3569380356438012", "35693803564380"
        other = "490154203237518"
        events = [
            usage(at("2026-11-02"), kind="data", imei=imei),
            usage(at("2026-11-03"), kind="data", imei=imeisv),
            usage(at("2026-11-04"), kind="data", imei="3569380356438013"),  # OS update
            usage(at("2026-11-05"), kind="data", imei=bare),
            usage(at("2026-11-20"), kind="data", imei=other),
        ]
        tasks = only(run(default_rules(), events).tasks, "handset_change")
        assert [t.moment.params for t in tasks] == [{"imei": other, "previous_imei": bare}]

    def test_a_record_of_the_old_handset_read_late_is_no_change(self) -> None:
        """Two feeds out of order within the lateness: the old handset's voice record of
        09:55, read after the new one's data record of 10:05, is what the line had then.
        Taken as the latest, it made a "new handset" of the old one (was the new one), and
        the next record of the new one a third: two false moments, held by the cooldown
        here, two more SMS for a rule with none."""
        a, b = "356938035643809", "490154203237518"
        events = [
            usage(at("2026-11-02"), kind="data", imei=a),
            usage(at("2026-11-04", "10:05"), kind="data", imei=b),
            usage(at("2026-11-04", "09:55"), kind="voice", imei=a),  # read late
            usage(at("2026-11-04", "10:10"), kind="data", imei=b),
        ]
        result = run(default_rules(), events)
        tasks = only(result.tasks, "handset_change")
        assert [t.moment.params for t in tasks] == [{"imei": b, "previous_imei": a}]
        assert result.detected[("first_time", "handset_change")] == 1
        no_cooldown = load_texts(
            [
                (
                    "rules.yaml",
                    "rules:\n  - id: handset\n    description: new handset\n"
                    "    on: [usage]\n    condition: {changed: imei}\n"
                    "    task: {family: first_time, type: handset_change, channel: app_push,"
                    " priority: 4, action: setup, ttl: 72h, description: new handset}\n",
                )
            ]
        )
        assert len(run(no_cooldown, events).tasks) == 1

    def test_bill_query_first_in_60_days(self) -> None:
        events = [
            usage(at("2026-08-01"), kind="bill_query"),
            usage(at("2026-08-20"), kind="bill_query"),  # 19 days later: not first
            usage(at("2026-11-01"), kind="bill_query"),  # 73 days after the last: first again
        ]
        tasks = only(run(default_rules(), events).tasks, "first_bill_query")
        assert [t.triggered_at.date().isoformat() for t in tasks] == ["2026-08-01", "2026-11-01"]

    def test_first_topup_per_channel(self) -> None:
        events = [
            ev(EventType.TOPUP, at("2026-11-02"), amount=50, channel="app"),
            ev(EventType.TOPUP, at("2026-11-03"), amount=50, channel="app"),
            ev(EventType.TOPUP, at("2026-11-04"), amount=50, channel="bank"),
        ]
        tasks = only(run(default_rules(), events).tasks, "first_topup")
        assert [t.moment.params["channel"] for t in tasks] == ["app", "bank"]


class TestAnomaly:
    def test_complaint_and_repeated_complaints(self) -> None:
        def complaint(
            day: str, cid: str, status: str = "opened"
        ) -> tuple[EventType, dict[str, Any]]:
            return ev(
                EventType.COMPLAINT,
                at(day),
                complaint_id=cid,
                category="network",
                severity=2,
                status=status,
            )

        events = [
            complaint("2026-11-01", "c1"),
            complaint("2026-11-02", "c1", "resolved"),
            complaint("2026-11-05", "c2"),
            complaint("2026-11-20", "c3"),  # 15 days later: a single one in its 7 days
        ]
        tasks = run(default_rules(), events).tasks
        assert len(only(tasks, "complaint")) == 3
        repeated = only(tasks, "repeated_complaints")
        assert len(repeated) == 1
        assert repeated[0].moment.params["complaints_day"] == 2
        assert repeated[0].priority == 1

    def test_low_balance_threshold_per_tier_and_cooldown(self) -> None:
        events = [
            usage(at("2026-11-02", "10:00"), kind="data", balance_after=15),  # standard: 10
            usage(at("2026-11-02", "11:00"), kind="data", balance_after=8),
            usage(at("2026-11-02", "12:00"), kind="data", balance_after=5),  # cooldown 3d
            ev(PROFILE, at("2026-11-02", "13:00"), tier="gold"),
            usage(at("2026-11-06", "10:00"), kind="data", balance_after=25),  # gold: 30
        ]
        tasks = only(run(default_rules(), events).tasks, "low_balance")
        assert [t.moment.params["balance_after"] for t in tasks] == [8, 25]
        assert [t.moment.params["balance_after_lt"] for t in tasks] == [10, 30]

    def test_a_balance_of_negative_zero_reads_as_zero_in_the_task(self) -> None:
        """ "-0.00" from a billing system (a rounded -0.001) gave "Balance -0.00 yuan"."""
        events = [usage(at("2026-11-02"), kind="data", balance_after="-0.00")]
        (task,) = only(run(default_rules(), events).tasks, "low_balance")
        assert task.moment.description.startswith("Balance 0.00 yuan is below 10")
        assert published(task).model_dump(mode="json")["moment"]["params"] == {
            "balance_after": "0.00",
            "balance_after_lt": 10,
        }

    def test_low_balance_region_override(self) -> None:
        events = [usage(at("2026-11-02"), kind="data", balance_after=15, region="SH")]
        assert types(run(default_rules(), events).tasks) == ["low_balance"]

    def test_a_gold_customer_in_sh_keeps_the_gold_threshold(self) -> None:
        # The SH override came after the tier's, so gold customers in SH got 20, not 30
        # (analyst review).
        events = [
            ev(PROFILE, at("2026-11-02", "09:00"), tier="gold"),
            usage(at("2026-11-02"), kind="data", balance_after=25, region="SH"),
        ]
        (task,) = only(run(default_rules(), events).tasks, "low_balance")
        assert task.moment.params["balance_after_lt"] == 30

    def test_service_failure(self) -> None:
        events = [usage(at("2026-11-02"), kind="service_failure", service_code="VOLTE")]
        assert types(run(default_rules(), events).tasks) == ["service_failure"]

    def test_a_blank_text_of_an_event_is_none(self) -> None:
        """An SQL export writes "" for a field with no value: the service_failure rule
        (`{field: service_code}`, "it names one") fired on a blank service code, with the
        blank in its text, and a blank operator was a first-time value. A blank region
        (`""`) made the whole event a dead letter, where spaces only were none."""
        events = [
            usage(at("2026-11-02"), kind="service_failure", service_code=""),
            usage(at("2026-11-02", "12:01"), kind="service_failure", service_code="  "),
            usage(at("2026-11-02", "12:02"), kind="voice", quantity=60, counterparty=""),
        ]
        result = run(default_rules(), events)
        assert types(result.tasks) == []
        roaming = {"country": "GB", "roaming_type": "international", "operator": ""}
        first = load_texts([("r.yaml", "rules:\n" + FIRST_OPERATOR)])
        assert run(first, [ev(EventType.ROAMING, at("2026-11-02"), **roaming)]).tasks == []
        blank_region = [
            usage(at("2026-11-03"), kind="service_failure", service_code="VOLTE", region="")
        ]
        result = run(default_rules(), blank_region)
        assert result.dead_letters == []
        assert [t.region for t in result.tasks] == [None]

    def test_competitor_hotline_only_for_listed_numbers(self) -> None:
        events = [
            usage(at("2026-11-02"), kind="voice", quantity=60, counterparty="13912345678"),
            usage(at("2026-11-03"), kind="voice", quantity=60, counterparty="10010"),
        ]
        tasks = only(run(default_rules(), events).tasks, "competitor_hotline_call")
        assert [t.moment.params["counterparty"] for t in tasks] == ["10010"]
        assert tasks[0].channel.value == "manager"

    def test_every_competitor_network_hotline_counts(self) -> None:
        """China Unicom, China Telecom and China Broadnet (10099, a mobile network since
        2022): a call to any of their hotlines is the churn signal."""
        for number in ("10010", "10011", "10000", "10001", "10099"):
            events = [usage(at("2026-11-03"), kind="voice", quantity=60, counterparty=number)]
            assert types(run(default_rules(), events).tasks) == ["competitor_hotline_call"], number

    def test_bill_spike_at_the_monthly_close(self) -> None:
        events = [usage(at("2026-06-25"), kind="data", charge=5)]  # history began in June
        events += [
            usage(at(f"2026-{m:02d}-10"), kind="data", charge=c)
            for m, c in ((7, 50), (8, 60), (9, 40), (10, 160))
        ]
        events.append(usage(at("2026-11-01", "08:00"), kind="data", charge=1))  # closes October
        tasks = only(run(default_rules(), events).tasks, "bill_spike")
        assert len(tasks) == 1
        params = tasks[0].moment.params
        assert params["spend_month"] == 160
        assert params["spend_month_baseline"] == 50
        assert params["spend_month_ratio"] == 3.2

    def test_the_month_history_began_in_is_no_usual_month(self) -> None:
        """A customer who joined (or a detector that started) on 25 August: August's week
        of spend is no usual month. Counted as one, 100 a month looked like 74, and 150 in
        November "twice the usual": a false bill-spike SMS."""
        events = [
            usage(at(day), kind="data", charge=c)
            for day, c in (
                ("2026-08-25", 22),
                ("2026-09-10", 100),
                ("2026-10-10", 100),
                ("2026-11-10", 150),
                ("2026-12-01", 1),  # closes November
            )
        ]
        assert only(run(default_rules(), events).tasks, "bill_spike") == []
        events += [usage(at("2027-01-10"), kind="data", charge=300)]
        events += [usage(at("2027-02-01"), kind="data", charge=1)]  # closes January
        (task,) = only(run(default_rules(), events).tasks, "bill_spike")
        # October to December, full months: 100, 150 and the 1 that closed November.
        assert task.moment.params["spend_month_baseline"] == pytest.approx(251 / 3, abs=0.01)

    def test_no_spike_without_three_months_of_history(self) -> None:
        events = [
            usage(at("2026-09-10"), kind="data", charge=10),
            usage(at("2026-10-10"), kind="data", charge=500),
            usage(at("2026-11-01"), kind="data", charge=1),
        ]
        assert only(run(default_rules(), events).tasks, "bill_spike") == []

    def test_bill_drop_and_stacked_spend_and_call_drop(self) -> None:
        events = [  # the history began in June
            usage(at("2026-06-25"), kind="data", charge=20),
            usage(at("2026-06-25"), kind="voice", quantity=600),
        ]
        for month, charge, seconds in (
            (7, 100, 3600),
            (8, 110, 3000),
            (9, 90, 3300),
            (10, 30, 600),
        ):
            events.append(usage(at(f"2026-{month:02d}-10"), kind="data", charge=charge))
            events.append(usage(at(f"2026-{month:02d}-11"), kind="voice", quantity=seconds))
        events.append(usage(at("2026-11-02"), kind="data"))
        tasks = run(default_rules(), events).tasks
        assert len(only(tasks, "bill_drop")) == 1
        assert len(only(tasks, "spend_and_call_time_drop")) == 1

    def test_falling_call_volume_when_the_subscriber_goes_quiet(self) -> None:
        # Four weeks of ~1h of calls (Mondays 2026-10-05 .. 2026-10-26) after the week the
        # history began in, then one short call.
        events = [
            usage(at(day), kind="voice", quantity=q, direction="out")
            for day, q in (
                ("2026-10-03", 900),
                ("2026-10-05", 3600),
                ("2026-10-12", 3600),
                ("2026-10-19", 3600),
                ("2026-10-26", 3600),
            )
        ]
        events.append(usage(at("2026-11-02"), kind="voice", quantity=300, direction="out"))
        # No more events: the watermark reaching the next week closes the quiet one.
        result = run(default_rules(), events, until=at("2026-11-09", "01:00"))
        tasks = only(result.tasks, "falling_call_volume")
        assert len(tasks) == 1
        assert tasks[0].moment.params["call_seconds_week"] == 300
        assert tasks[0].moment.params["call_seconds_week_baseline"] == 3600

    def test_incoming_share_at_the_weekly_close(self) -> None:
        events = [
            usage(
                at("2026-11-02", f"1{i % 10}:00"),
                kind="voice",
                quantity=60,
                direction="in" if i < 9 else "out",
            )
            for i in range(10)
        ]
        result = run(default_rules(), events, until=at("2026-11-09", "01:00"))
        tasks = only(result.tasks, "incoming_calls_share_high")
        assert len(tasks) == 1
        assert tasks[0].moment.params["incoming_calls_week_share"] == 0.9

    def test_no_activity_after_seven_silent_days_once(self) -> None:
        events = [usage(at("2026-11-02", "10:00"), kind="data")]
        first = run(default_rules(), events, until=at("2026-11-08", "12:00"))
        assert only(first.tasks, "no_activity") == []
        later = run(default_rules(), [], until=at("2026-11-11", "12:00"), result=first)
        tasks = only(later.tasks, "no_activity")
        assert len(tasks) == 1
        assert tasks[0].moment.params["silent_days"] >= 7


def test_the_catalog_covers_every_family_of_its_rules() -> None:
    assert len(default_rules()) >= 21
    families = {r.task.family.value for r in default_rules().rules}
    assert families == {"first_time", "anomaly", "special_day"}
    assert all(r.description for r in default_rules().rules)


def test_subscriber_is_the_task_key() -> None:
    events = [ev(EventType.ROAMING, at("2026-11-02"), country="JP", roaming_type="international")]
    assert run(default_rules(), events).tasks[0].subscriber_id == SUB


class TestSpecialDays:
    def test_birthday_once_at_nine_local_time(self) -> None:
        events = [
            ev(PROFILE, at("2026-10-01"), birthday="1990-11-03", timezone="Asia/Shanghai"),
            usage(at("2026-11-02"), kind="data"),
        ]
        early = run(default_rules(), events, until=at("2026-11-03", "08:30"))
        assert only(early.tasks, "birthday") == []
        later = run(default_rules(), [], until=at("2026-11-04", "12:00"), result=early)
        (task,) = only(later.tasks, "birthday")
        assert task.triggered_at.astimezone(SHANGHAI).hour == 9
        assert task.moment.family.value == "special_day"
        # In the customer's offset, as an event's moment is (it was UTC, `Z`, beside
        # the +08:00 of every other task; analyst review)
        assert task.triggered_at.isoformat().endswith("+08:00")
        assert task.expires_at.isoformat().endswith("+08:00")

    def test_a_birthday_set_later_that_day_still_counts(self) -> None:
        events = [
            usage(at("2026-11-02"), kind="data"),
            ev(PROFILE, at("2026-11-03", "15:00"), birthday="11-03"),
        ]
        tasks = only(run(default_rules(), events).tasks, "birthday")
        assert len(tasks) == 1

    def test_a_greeting_is_over_with_its_day(self) -> None:
        """A birthday learned at 22:00 on the day is not greeted the next morning (quiet
        hours held it to 08:00, inside its 12 h); one learned at 15:00 ends at midnight,
        not at 03:00 the next day; a contract's end is not a greeting and keeps its ttl."""
        late, day = "13800138002", "13800138003"
        events = [
            usage(at("2026-11-02"), kind="data"),
            ev(PROFILE, at("2026-11-03", "15:00"), sub=day, birthday="11-03"),
            ev(PROFILE, at("2026-11-03", "22:00"), sub=late, birthday="11-03"),
            ev(PROFILE, at("2026-11-03", "22:00"), contract_end="2026-11-20"),
        ]
        result = run(default_rules(), events, until=at("2026-11-04", "12:00"))
        (task,) = only(result.tasks, "birthday")
        assert task.subscriber_id == day
        assert task.expires_at == dt.datetime(2026, 11, 4, tzinfo=SHANGHAI)
        assert result.suppressed[("birthday", "expired")] == 1
        (renewal,) = only(result.tasks, "contract_expiry_near")
        assert renewal.expires_at - renewal.triggered_at == dt.timedelta(days=7)

    def test_a_greeting_ends_where_the_clocks_skip_midnight(self) -> None:
        """Santiago skips 2026-09-06 00:00 (to 01:00): a birthday learned at 20:00 on the
        5th ends with its day at 04:00 UTC, written 01:00-03:00. It was the local 00:00
        that does not exist, which Python compares unequal to its own instant (PEP 495),
        while its hash is the instant's (re-check; no gates, so the task is made)."""
        rules = load_texts([("t.yaml", "gating: {quiet_hours: [], frequency_cap: null}\n"
                             "rules:\n" + _catalog_rule("birthday_greeting"))])  # fmt: skip
        learned = "2026-09-05T20:00:00-04:00"
        profile = ev(PROFILE, learned, timezone="America/Santiago", birthday="09-05")
        (task,) = run(rules, [profile], until="2026-09-07T00:00:00+00:00").tasks
        assert task.expires_at == dt.datetime(2026, 9, 6, 4, tzinfo=dt.UTC)

    def test_join_anniversary_counts_years(self) -> None:
        events = [ev(PROFILE, at("2026-11-01"), joined_on="2019-11-05")]
        (task,) = only(
            run(default_rules(), events, until=at("2026-11-06")).tasks, "join_anniversary"
        )
        assert task.moment.params["years"] == 7
        assert "7 years with us" in task.moment.description

    def test_contract_expiry_once_however_many_days_it_is_due(self) -> None:
        events = [ev(PROFILE, at("2026-11-01"), contract_end="2026-11-20")]
        result = run(default_rules(), events, until=at("2026-11-19"))
        (task,) = only(result.tasks, "contract_expiry_near")
        assert task.moment.params["contract_end"] == "2026-11-20"
        assert task.channel.value == "manager"

    def test_spring_festival_greeting(self) -> None:
        events = [ev(PROFILE, at("2027-02-01"), tier="gold")]
        (task,) = only(
            run(default_rules(), events, until=at("2027-02-06", "12:00")).tasks, "holiday_greeting"
        )
        assert task.moment.params["holiday"] == "spring_festival"
        assert task.triggered_at.date().isoformat() == "2027-02-06"


class TestDoNotDisturb:
    def test_a_task_at_night_waits_for_the_morning(self) -> None:
        events = [usage(at("2026-11-02", "23:10"), kind="service_failure", service_code="5G")]
        (task,) = run(default_rules(), events).tasks
        assert task.deferred is not None
        assert task.deferred.reason == "quiet_hours"
        assert task.deliver_after.astimezone(SHANGHAI).isoformat() == "2026-11-03T08:00:00+08:00"

    def test_quiet_hours_follow_the_visited_country(self) -> None:
        trip = {"country": "GB", "roaming_type": "international", "timezone": "Europe/London"}
        events = [
            ev(EventType.ROAMING, at("2026-11-02", "20:00"), **trip),
            # 22:30 in Shanghai is 14:30 in London: not quiet there.
            usage(at("2026-11-02", "22:30"), kind="service_failure", service_code="VOLTE"),
        ]
        tasks = only(run(default_rules(), events).tasks, "service_failure")
        assert [t.deferred for t in tasks] == [None]

    def test_quiet_hours_follow_a_visited_country_named_only(self) -> None:
        """The visited network names the country; the record carries no zone: a welcome at
        08:30 in Shanghai is 01:30 in Paris, and waits for 08:00 there."""
        events = [
            ev(
                EventType.ROAMING,
                at("2026-12-01", "08:30"),
                country="FR",
                roaming_type="international",
            )
        ]
        (task,) = only(run(default_rules(), events).tasks, "first_international_roaming")
        assert task.deferred is not None
        assert task.deferred.reason == "quiet_hours"
        assert task.deliver_after == dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.UTC)

    def test_a_trip_with_no_roaming_record_for_two_weeks_is_over(self) -> None:
        """A week in New York, no record of the return (domain review): five months on, a
        call at 22:30 in Shanghai went out at once, judged on New York's clock (09:30
        there). The trip lapses 14 days after its latest roaming record: the call waits for
        08:00 in Shanghai and carries Shanghai's clock for dispatch."""
        trip = {"country": "US", "roaming_type": "international", "timezone": "America/New_York"}
        events = [
            ev(EventType.ROAMING, at("2026-06-01", "09:00"), **trip),
            usage(at("2026-11-02", "22:30"), kind="service_failure", service_code="VOLTE"),
        ]
        (task,) = only(run(default_rules(), events).tasks, "service_failure")
        assert task.deferred is not None
        assert task.deferred.reason == "quiet_hours"
        assert task.deliver_after.astimezone(SHANGHAI).isoformat() == "2026-11-03T08:00:00+08:00"
        assert task.quiet_hours is not None
        assert task.quiet_hours.zone == "Asia/Shanghai"

    def test_a_trip_lasts_while_roaming_records_come(self) -> None:
        """Each roaming record abroad (a new network or country, the phone switched on
        again) starts the 14 days again: a month in New York with a record every 10 days
        is still New York's clock, where 22:30 in Shanghai is 09:30; 14 days after the last
        record it is Shanghai's again."""
        trip = {"country": "US", "roaming_type": "international", "timezone": "America/New_York"}
        records = [
            ev(EventType.ROAMING, at(day, "09:00"), **trip)
            for day in ("2026-10-01", "2026-10-11", "2026-10-21")
        ]
        within = usage(at("2026-11-03", "22:30"), kind="service_failure", service_code="VOLTE")
        after = usage(at("2026-11-05", "22:30"), kind="service_failure", service_code="5G")
        tasks = only(run(default_rules(), [*records, within, after]).tasks, "service_failure")
        assert [t.deferred.reason if t.deferred else None for t in tasks] == [None, "quiet_hours"]
        assert [t.quiet_hours.zone if t.quiet_hours else None for t in tasks] == [
            "America/New_York",
            "Asia/Shanghai",
        ]

    def test_a_roaming_record_read_after_a_newer_one_does_not_move_the_customer(self) -> None:
        """Roaming records of two feeds (registrations, usage abroad) come out of order
        within the lateness: the record of the return home at 20:00, then one dated 19:30
        of the trip before. The newer one says where the customer is: at 22:30 quiet hours
        are Shanghai's (a call went out, judged on New York's clock, for 14 more days)."""
        trip = {"country": "US", "roaming_type": "international", "timezone": "America/New_York"}
        events = [
            ev(EventType.ROAMING, at("2026-10-25", "09:00"), **trip),
            ev(EventType.ROAMING, at("2026-11-02", "20:00"), country="CN", roaming_type="domestic"),
            ev(EventType.ROAMING, at("2026-11-02", "19:30"), **trip),
            usage(at("2026-11-02", "22:30"), kind="service_failure", service_code="VOLTE"),
        ]
        (task,) = only(run(default_rules(), events).tasks, "service_failure")
        assert task.deferred is not None
        assert task.deliver_after.astimezone(SHANGHAI).isoformat() == "2026-11-03T08:00:00+08:00"

    def test_every_task_carries_the_quiet_hours_it_was_judged_by(self) -> None:
        """So that dispatch can judge them again when it sends the task later than now
        (merge window, contact cap, capacity, a retry): the visited place's zone while
        roaming, the catalog's windows and the customer's own."""
        trip = {"country": "GB", "roaming_type": "international", "timezone": "Europe/London"}
        events = [
            ev(PROFILE, at("2026-11-01"), quiet_hours=["12:00-13:00"]),
            ev(EventType.ROAMING, at("2026-11-02", "20:00"), **trip),
            usage(at("2026-11-02", "22:30"), kind="service_failure", service_code="VOLTE"),
        ]
        (task,) = only(run(default_rules(), events).tasks, "service_failure")
        assert task.quiet_hours is not None
        assert task.quiet_hours.zone == "Europe/London"
        assert task.quiet_hours.windows == [
            *(str(w) for w in default_rules().gating.windows),
            "12:00-13:00",
        ]

    def test_a_channel_quiet_hours_do_not_hold_is_published_without_them(self) -> None:
        """The task carries them, naming the channels they hold, for dispatch (it may fall
        back to SMS); published on its own channel, it carries none."""
        text = (resources.files("rules") / "catalog" / DEFAULT_CATALOG).read_text()
        held = "quiet_hours_channels: [sms, outbound_call, manager, app_push]"
        assert held in text
        rules = load_texts([("c.yaml", text.replace(held, "quiet_hours_channels: [sms]"))])
        events = [usage(at("2026-11-02", "10:00"), kind="service_failure", service_code="5G")]
        (task,) = run(rules, events).tasks
        assert task.channel != "sms"
        assert task.quiet_hours is not None
        assert task.quiet_hours.channels == ["sms"]
        assert published(task).quiet_hours is None
        as_sms = published(task.model_copy(update={"channel": Channel.SMS})).quiet_hours
        assert as_sms is not None
        assert (as_sms.windows, as_sms.channels) == (task.quiet_hours.windows, None)

    def test_opt_out_of_the_channel_suppresses(self) -> None:
        events = [
            ev(PROFILE, at("2026-11-01"), opt_out=["sms"]),
            ev(EventType.ROAMING, at("2026-11-02"), country="JP", roaming_type="international"),
        ]
        assert run(default_rules(), events).tasks == []

    def test_an_open_complaint_blocks_sales_not_service(self) -> None:
        events = [
            ev(
                EventType.COMPLAINT,
                at("2026-11-02", "10:00"),
                complaint_id="c1",
                category="billing",
                severity=2,
                status="opened",
            ),
            usage(at("2026-11-02", "11:00"), kind="voice", counterparty="10010"),
        ]
        assert types(run(default_rules(), events).tasks) == ["complaint"]
        resolved = [
            *events[:1],
            ev(
                EventType.COMPLAINT,
                at("2026-11-02", "10:30"),
                complaint_id="c1",
                category="billing",
                severity=2,
                status="resolved",
            ),
            events[1],
        ]
        assert "competitor_hotline_call" in types(run(default_rules(), resolved).tasks)

    def test_a_complaint_with_no_news_for_30_days_no_longer_blocks(self) -> None:
        """Customer service lost the resolution of a complaint opened ten months ago, and
        it still held back a retention call (domain review). An open complaint counts 30
        days after its latest record (opened or updated); one updated since still does."""
        complaint: dict[str, Any] = {"complaint_id": "c1", "category": "network", "severity": 3}
        opened = ev(EventType.COMPLAINT, at("2026-01-10", "10:00"), status="opened", **complaint)
        call = usage(at("2026-11-02", "11:00"), kind="voice", counterparty="10010")
        result = run(default_rules(), [opened, call])
        (task,) = only(result.tasks, "competitor_hotline_call")
        assert task.risk is not None
        assert "complaints" not in {p.signal for p in task.risk.parts}
        updated = ev(EventType.COMPLAINT, at("2026-10-20", "10:00"), status="updated", **complaint)
        result = run(default_rules(), [opened, updated, call])
        assert only(result.tasks, "competitor_hotline_call") == []
        assert result.suppressed["competitor_hotline_call", "complaint_open"] == 1

    def test_a_call_the_open_complaint_held_back_starts_no_cooldown(self) -> None:
        # The hotline call during the complaint made no task; the calls after it was
        # resolved must not wait out a 14-day cooldown for it (analyst review).
        complaint: dict[str, Any] = {"complaint_id": "c1", "category": "network", "severity": 3}
        events = [
            ev(EventType.COMPLAINT, at("2026-11-02", "10:00"), status="opened", **complaint),
            usage(at("2026-11-02", "10:30"), kind="voice", counterparty="10010"),
            ev(EventType.COMPLAINT, at("2026-11-02", "11:00"), status="resolved", **complaint),
            usage(at("2026-11-03", "10:00"), kind="voice", counterparty="10010"),
            usage(at("2026-11-06", "10:00"), kind="voice", counterparty="10000"),
        ]
        result = run(default_rules(), events)
        calls = only(result.tasks, "competitor_hotline_call")
        assert [t.triggered_at.date().isoformat() for t in calls] == ["2026-11-03"]
        assert result.suppressed["competitor_hotline_call", "complaint_open"] == 1
        assert result.suppressed["competitor_hotline_call", "cooldown"] == 1  # the 11-06 one

    def test_suspended_line_service_waits_sales_dropped(self) -> None:
        events = [
            ev(PROFILE, at("2026-11-01"), status="suspended"),
            usage(at("2026-11-02", "10:00"), kind="service_failure", service_code="X"),
            usage(at("2026-11-02", "11:00"), kind="voice", counterparty="10000"),
        ]
        tasks = run(default_rules(), events).tasks
        assert types(tasks) == ["service_failure"]
        assert tasks[0].deferred is not None
        assert tasks[0].deferred.reason == "suspended"
        # What dispatch judges again once the line is active: the zone and quiet hours
        # gating used (the catalog's own for this customer, who set none).
        catalog_windows = [str(w) for w in default_rules().gating.windows]
        assert tasks[0].channel in default_rules().gating.quiet_hours_channels
        assert tasks[0].quiet_hours is not None
        assert (tasks[0].quiet_hours.zone, tasks[0].quiet_hours.windows) == (
            default_rules().gating.zone.key,
            catalog_windows,
        )


def test_no_activity_is_not_reported_once_the_subscriber_is_back() -> None:
    """The closes an event makes for days gone by do not judge a silence it just ended:
    the return is read before any sweep saw the silence (one batch, as after an outage;
    `run_pipeline` sweeps the hours between two events first, and reports it then)."""
    events = [usage(at("2026-11-02"), kind="data"), usage(at("2026-11-12"), kind="data")]
    detector = Detector(default_rules(), {t.value: t for t in EventType})
    batch = detector.process(to_records(events), DictStateStore().load, None)
    assert only(batch.tasks, "no_activity") == []
    swept = only(run(default_rules(), events).tasks, "no_activity")
    assert [t.triggered_at for t in swept] == [dt.datetime(2026, 11, 10, tzinfo=SHANGHAI)]


def test_churn_risk_raises_priority_and_shows_its_parts() -> None:
    events = [
        ev(PROFILE, at("2026-10-01"), contract_end="2026-11-22", joined_on="2026-05-01"),
        ev(
            EventType.COMPLAINT,
            at("2026-11-01"),
            complaint_id="c9",
            category="billing",
            severity=3,
            status="opened",
        ),
        usage(at("2026-11-02"), kind="data", balance_after=3),
    ]
    (task,) = only(run(default_rules(), events).tasks, "low_balance")
    assert task.risk is not None
    parts = {p.signal: p.points for p in task.risk.parts}
    assert parts == {"complaints": 10.0, "contract_expiry": 15.0, "tenure": 10.0}
    assert task.risk.score == 35.0
    assert task.priority == 1  # the rule says 2; 30 points or more raise it one level


def _catalog_rule(rule_id: str) -> str:
    """One rule of the default catalog, as the YAML text of a rules list entry."""
    text = (resources.files("rules") / "catalog" / DEFAULT_CATALOG).read_text()
    start = text.index(f"  - id: {rule_id}\n")
    end = text.find("\n  - id: ", start + 1)
    return text[start : end + 1 if end != -1 else len(text)]
