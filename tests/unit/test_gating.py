"""Do-not-disturb gating: each gate by example, and the promises as hypothesis properties."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from ruamel.yaml import YAML

from moments.models import Channel
from rules.gating import (
    FrequencyCap,
    GateDecision,
    GateInput,
    GatingPolicy,
    SubscriberView,
    SuspendedPolicy,
    describe,
    gate,
    local_zone,
    open_after_quiet,
    quiet_hours_carried,
    quiet_hours_kept,
    quiet_windows,
    zone_label,
    zone_of_label,
)
from rules.quiet_hours import covers_whole_day, next_open_instant, parse_window

UTC = dt.UTC
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
POLICY = GatingPolicy()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "gating.md"


def task(
    now: dt.datetime,
    *,
    channel: str = "sms",
    purpose: str = "service",
    ttl: dt.timedelta = dt.timedelta(hours=24),
) -> GateInput:
    return GateInput(
        channel=channel,
        priority=3,
        purpose=purpose,  # type: ignore[arg-type]  # tests pass both purposes as str
        triggered_at=now,
        expires_at=now + ttl,
        now=now,
    )


def at(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    *,
    tz: dt.tzinfo = SHANGHAI,
    fold: int = 0,
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold)


class TestPolicy:
    """`GatingPolicy` is the `gating:` section; it refuses what cannot work and says why."""

    def test_a_reserve_must_leave_room_for_the_other_priorities(self) -> None:
        with pytest.raises(ValidationError, match="reserved 3 leaves priorities 3-5 no contact"):
            GatingPolicy.model_validate({"frequency_cap": {"max_contacts": 3, "reserved": 3}})
        policy = GatingPolicy.model_validate({"frequency_cap": {"max_contacts": 3, "reserved": 2}})
        assert policy.frequency_cap is not None
        assert policy.frequency_cap.reserved == 2

    def test_defaults(self) -> None:
        assert POLICY.quiet_hours == ("21:00-08:00",)
        assert POLICY.frequency_cap is not None
        assert POLICY.frequency_cap.max_contacts == 3
        assert POLICY.frequency_cap.span == dt.timedelta(days=7)
        assert set(POLICY.frequency_cap.channels) == {"outbound_call", "manager", "sms"}
        assert POLICY.open_complaint_blocks == ("sales",)
        assert (POLICY.suspended.service, POLICY.suspended.sales) == ("wait", "suppress")
        assert set(POLICY.quiet_hours_channels) == set(Channel)

    @pytest.mark.parametrize(
        ("section", "where", "message"),
        [
            (
                {"quiet_hours": ["21:00-08:00", "25:00-08:00"]},
                ("quiet_hours", 1),
                "25:00-08:00: hour must be 00-23; write HH:MM-HH:MM such as 21:00-08:00",
            ),
            (
                {"quiet_hours": ["00:00-12:00", "12:00-00:00"]},
                ("quiet_hours",),
                "quiet_hours cover the whole day",
            ),
            ({"timezone": "Mars/Olympus"}, ("timezone",), "write one such as Asia/Shanghai"),
            ({"timezone": "America"}, ("timezone",), "'America' is not an IANA time zone"),
            (
                {"frequency_cap": {"period": "week"}},
                ("frequency_cap", "period"),
                "write a number and a unit",
            ),
            (
                {"frequency_cap": {"period": "0d"}},
                ("frequency_cap", "period"),
                "must be longer than zero",
            ),
            (
                {"frequency_cap": {"max_contacts": 0}},
                ("frequency_cap", "max_contacts"),
                "greater than or equal to 1",
            ),
            ({"quiet_hours_channels": ["fax"]}, ("quiet_hours_channels", 0), "sms"),
            ({"suspended": {"sales": "later"}}, ("suspended", "sales"), "'wait' or 'suppress'"),
            ({"open_complaint_blocks": ["sales", "sales"]}, (), "lists a value twice"),
            (
                {"quiet_hours": ["22:00-08:00", "22:00-8:00"]},
                ("quiet_hours",),
                "quiet_hours[1] '22:00-08:00' repeats quiet_hours[0]; write each window once",
            ),
            ({"quite_hours": ["21:00-08:00"]}, ("quite_hours",), "Extra inputs"),
            (
                {"roaming_lapses_after": "fortnight"},
                ("roaming_lapses_after",),
                "'fortnight' is not a duration; write a number and a unit",
            ),
            (
                {"roaming_lapses_after": "0d"},
                ("roaming_lapses_after",),
                "roaming_lapses_after '0d' must be longer than zero, e.g. 14d; null for never",
            ),
            (
                {"open_complaint_lapses_after": "-1d"},
                ("open_complaint_lapses_after",),
                "'-1d' is not a duration",
            ),
            (
                {"open_complaint_lapses_after": "0h"},
                ("open_complaint_lapses_after",),
                "open_complaint_lapses_after '0h' must be longer than zero",
            ),
        ],
    )
    def test_a_bad_section_names_the_field_and_the_fix(
        self, section: dict[str, Any], where: tuple[str | int, ...], message: str
    ) -> None:
        with pytest.raises(ValidationError) as raised:
            GatingPolicy.model_validate(section)
        [error] = raised.value.errors()
        assert error["loc"] == where
        assert message in error["msg"]

    def test_windows_are_normalised(self) -> None:
        policy = GatingPolicy.model_validate({"quiet_hours": [" 7:00-9:30"]})
        assert policy.quiet_hours == ("07:00-09:30",)

    def test_a_trip_lapses_after_14_days_unless_told_otherwise(self) -> None:
        assert (POLICY.roaming_lapses_after, POLICY.roaming_lapse) == ("14d", 14 * 86400)
        policy = GatingPolicy.model_validate({"roaming_lapses_after": "6w"})
        assert policy.roaming_lapse == 42 * 86400
        never = GatingPolicy.model_validate({"roaming_lapses_after": None})
        assert never.roaming_lapse is None

    def test_an_open_complaint_lapses_after_30_days_unless_told_otherwise(self) -> None:
        assert POLICY.open_complaint_lapses_after == "30d"
        assert POLICY.open_complaint_lapse == 30 * 86400
        never = GatingPolicy.model_validate({"open_complaint_lapses_after": None})
        assert never.open_complaint_lapse is None

    def test_the_cap_can_be_switched_off(self) -> None:
        policy = GatingPolicy.model_validate({"frequency_cap": None})
        assert policy.frequency_cap is None

    def test_docs_examples_are_valid_sections(self) -> None:
        """Every ```yaml block of docs/gating.md with a gating: key loads as a policy."""
        blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
        sections = [YAML(typ="safe").load(block) for block in blocks]
        policies = [
            GatingPolicy.model_validate(doc["gating"]) for doc in sections if "gating" in doc
        ]
        assert len(policies) >= 2
        assert GatingPolicy.model_validate(sections[0]["gating"]) == POLICY

    def test_the_defaults_written_out_name_every_key(self) -> None:
        """The page's first block is "the defaults, written out": every key of the section
        and of its `frequency_cap:` and `suspended:` maps is there (`reserved` was not)."""
        first = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)[0]
        section = YAML(typ="safe").load(first)["gating"]
        assert set(section) == set(GatingPolicy.model_fields)
        assert set(section["frequency_cap"]) == set(FrequencyCap.model_fields)
        assert set(section["suspended"]) == set(SuspendedPolicy.model_fields)


class TestDescribe:
    """`describe` says the policy in plain words for `moments rules explain`."""

    def test_the_default_policy(self) -> None:
        text = "\n".join(describe(POLICY))
        assert "Quiet hours 21:00-08:00 in the customer's local time" in text
        assert "At most 3 contacts per 7d across all rules on outbound_call, manager, sms" in text
        assert "An open complaint drops sales tasks; service tasks still go out." in text
        assert "On a suspended line, service tasks wait for reactivation" in text
        assert "On a suspended line, sales tasks are dropped." in text
        assert "A trip abroad is over 14d after its latest roaming record" in text
        assert "A complaint with no record (opened, updated) for 30d no longer counts" in text

    def test_one_contact_is_singular(self) -> None:
        cap = POLICY.frequency_cap
        assert cap is not None
        one = POLICY.model_copy(
            update={"frequency_cap": cap.model_copy(update={"max_contacts": 1})}
        )
        text = "\n".join(describe(one))
        assert "At most 1 contact per 7d across all rules" in text

    def test_a_policy_without_cap_quiet_hours_or_complaint_blocks(self) -> None:
        policy = GatingPolicy(
            quiet_hours=(),
            frequency_cap=None,
            open_complaint_blocks=(),
            quiet_hours_channels=(),
            roaming_lapses_after=None,
            open_complaint_lapses_after=None,
        )
        text = "\n".join(describe(policy))
        assert "No default quiet hours" in text
        assert "No frequency cap." in text
        assert "An open complaint blocks no task." in text
        assert "A trip abroad lasts until a roaming record says the customer is home." in text
        assert "A complaint counts as open until it is resolved." in text


class TestQuietHours:
    """A task is never delivered inside quiet hours: it waits for them to end."""

    def test_outside_quiet_hours_it_is_sent_now(self) -> None:
        now = at(2026, 11, 23, 10, 0)
        assert gate(task(now), SubscriberView(), POLICY) == GateDecision("send", now)

    def test_at_night_it_waits_for_eight_in_the_morning(self) -> None:
        now = at(2026, 11, 23, 22, 15)
        decision = gate(task(now), SubscriberView(timezone="Asia/Shanghai"), POLICY)
        morning = at(2026, 11, 24, 8, 0)
        assert decision == GateDecision("defer", morning, "quiet_hours", morning)

    def test_the_customers_own_window_adds_to_the_default(self) -> None:
        now = at(2026, 11, 23, 12, 30)
        subscriber = SubscriberView(quiet_hours=("12:00-14:00",))
        decision = gate(task(now), subscriber, POLICY)
        assert (decision.action, decision.deliver_after) == ("defer", at(2026, 11, 23, 14, 0))

    def test_windows_that_touch_chain_into_one(self) -> None:
        now = at(2026, 11, 23, 20, 0)
        subscriber = SubscriberView(quiet_hours=("19:00-21:00", "07:30-09:00"))
        decision = gate(task(now), subscriber, POLICY)
        assert decision.deliver_after == at(2026, 11, 24, 9, 0)

    def test_a_bad_customer_window_is_skipped_not_fatal(self) -> None:
        now = at(2026, 11, 23, 12, 30)
        subscriber = SubscriberView(quiet_hours=("12:00-12:00", "nonsense"))
        assert gate(task(now), subscriber, POLICY).action == "send"

    def test_the_profile_zone_sets_the_local_time(self) -> None:
        now = at(2026, 11, 23, 14, 0)  # 07:00 in Berlin
        decision = gate(task(now), SubscriberView(timezone="Europe/Berlin"), POLICY)
        assert decision.deliver_after == at(2026, 11, 23, 8, 0, tz=BERLIN)

    def test_roaming_abroad_the_visited_zone_wins(self) -> None:
        now = at(2026, 11, 23, 12, 0)  # noon at home, 05:00 in Berlin (04:00 UTC)
        subscriber = SubscriberView(timezone="Asia/Shanghai", roaming_timezone="Europe/Berlin")
        decision = gate(task(now), subscriber, POLICY)
        assert decision.deliver_after == at(2026, 11, 23, 8, 0, tz=BERLIN)
        assert decision.reason == "quiet_hours"

    def test_roaming_with_only_an_offset_known(self) -> None:
        now = at(2026, 11, 23, 12, 0)  # 04:00 UTC, 23:00 the day before at UTC-5
        subscriber = SubscriberView(timezone="Asia/Shanghai", roaming_utc_offset_minutes=-300)
        decision = gate(task(now), subscriber, POLICY)
        assert decision.deliver_after == dt.datetime(2026, 11, 23, 13, 0, tzinfo=UTC)

    def test_roaming_with_only_the_country_known_uses_its_one_zone(self) -> None:
        """A roaming record from the visited network names the country, rarely a zone: a
        welcome SMS at 08:30 in Shanghai (01:30 in Paris) waited for Shanghai's morning only
        and woke the customer."""
        now = at(2026, 12, 1, 8, 30)
        subscriber = SubscriberView(timezone="Asia/Shanghai", roaming_country="FR")
        decision = gate(task(now), subscriber, POLICY)
        assert decision.action == "defer"
        assert decision.deliver_after == at(2026, 12, 1, 8, 0, tz=zoneinfo.ZoneInfo("Europe/Paris"))
        assert quiet_hours_kept("sms", subscriber, POLICY)[0] == "Europe/Paris"

    @pytest.mark.parametrize("country", ["US", "RU", "AU", "ES", "ZZ"])
    def test_a_country_of_several_clocks_or_unknown_keeps_the_profile_zone(
        self, country: str
    ) -> None:
        """No one zone can stand for them: the producer must send the zone or the offset."""
        subscriber = SubscriberView(timezone="Europe/Berlin", roaming_country=country)
        assert local_zone(subscriber, POLICY) == BERLIN

    @pytest.mark.parametrize(
        ("country", "zone"),
        [("XK", "Europe/Belgrade"), ("UK", "Europe/London"), ("EL", "Europe/Athens")],
    )
    def test_codes_outside_zone_tab_that_roaming_feeds_send(self, country: str, zone: str) -> None:
        """Kosovo's `XK` (its networks' code, not in ISO 3166 nor zone.tab) and the EU's
        `UK` and `EL` for the United Kingdom and Greece: each one clock, and they fell
        to the home clock, 7 hours off Pristina's, London's or Athens's."""
        subscriber = SubscriberView(timezone="Asia/Shanghai", roaming_country=country)
        assert local_zone(subscriber, POLICY) == zoneinfo.ZoneInfo(zone)

    def test_the_zone_or_offset_of_the_record_wins_over_the_country(self) -> None:
        subscriber = SubscriberView(roaming_country="FR", roaming_utc_offset_minutes=-300)
        assert local_zone(subscriber, POLICY).utcoffset(None) == dt.timedelta(hours=-5)
        zoned = SubscriberView(roaming_country="FR", roaming_timezone="Europe/Berlin")
        assert local_zone(zoned, POLICY) == BERLIN

    def test_an_unknown_zone_falls_back_to_the_policy_zone(self) -> None:
        subscriber = SubscriberView(timezone="Nowhere/Land", roaming_timezone="Also/Nowhere")
        assert local_zone(subscriber, POLICY) == SHANGHAI
        berlin_policy = GatingPolicy(timezone="Europe/Berlin")
        assert local_zone(SubscriberView(), berlin_policy) == BERLIN

    def test_spring_forward_night_in_berlin(self) -> None:
        """2026-03-29: 08:00 CEST is 06:00 UTC, an hour sooner than the night before."""
        now = at(2026, 3, 28, 23, 0, tz=BERLIN)
        decision = gate(task(now), SubscriberView(timezone="Europe/Berlin"), POLICY)
        assert decision.deliver_after == dt.datetime(2026, 3, 29, 6, 0, tzinfo=UTC)

    def test_fall_back_night_in_berlin(self) -> None:
        """2026-10-25: a task at 02:30 in the repeated hour waits until 08:00 CET."""
        now = at(2026, 10, 25, 2, 30, tz=BERLIN, fold=1)
        decision = gate(task(now), SubscriberView(timezone="Europe/Berlin"), POLICY)
        assert decision.deliver_after == dt.datetime(2026, 10, 25, 7, 0, tzinfo=UTC)

    def test_quiet_hours_that_outlast_the_task_suppress_it_as_expired(self) -> None:
        now = at(2026, 11, 23, 22, 0)
        decision = gate(task(now, ttl=dt.timedelta(hours=2)), SubscriberView(), POLICY)
        assert decision == GateDecision("suppress", now, "expired", at(2026, 11, 24, 8, 0))

    def test_a_channel_left_out_of_quiet_hours_channels_is_sent_at_night(self) -> None:
        policy = GatingPolicy(quiet_hours_channels=(Channel.SMS,))
        now = at(2026, 11, 23, 23, 0)
        assert gate(task(now, channel="app_push"), SubscriberView(), policy).action == "send"
        assert gate(task(now, channel="sms"), SubscriberView(), policy).action == "defer"


class TestSuppressingGates:
    """Expired, closed, opted out and complaint-blocked tasks are dropped for good."""

    def test_a_task_already_past_its_expiry(self) -> None:
        now = at(2026, 11, 23, 10, 0)
        late = GateInput("sms", 3, "service", now, expires_at=now, now=now)
        assert gate(late, SubscriberView(), POLICY) == GateDecision("suppress", now, "expired")

    def test_a_closed_line(self) -> None:
        now = at(2026, 11, 23, 10, 0)
        assert gate(task(now), SubscriberView(status="closed"), POLICY).reason == "closed"

    def test_an_opted_out_channel_but_not_another(self) -> None:
        now = at(2026, 11, 23, 10, 0)
        subscriber = SubscriberView(opt_out=frozenset({"sms"}))
        assert gate(task(now), subscriber, POLICY) == GateDecision("suppress", now, "opt_out")
        assert gate(task(now, channel="manager"), subscriber, POLICY).action == "send"

    def test_an_open_complaint_blocks_sales_not_service(self) -> None:
        now = at(2026, 11, 23, 10, 0)
        subscriber = SubscriberView(open_complaints=1)
        sales = gate(task(now, purpose="sales"), subscriber, POLICY)
        assert sales == GateDecision("suppress", now, "complaint_open")
        assert gate(task(now, purpose="service"), subscriber, POLICY).action == "send"
        assert gate(task(now, purpose="sales"), SubscriberView(), POLICY).action == "send"

    def test_naive_times_are_refused_with_the_fix(self) -> None:
        start, end, naive = at(2026, 1, 1, 0, 0), at(2026, 1, 2, 0, 0), dt.datetime(2026, 1, 1)
        with pytest.raises(ValueError, match=r"^now must be time-zone aware; pass e\.g\."):
            GateInput("sms", 3, "service", start, end, naive)


class TestSuspended:
    """Never to a suspended line: service waits for reactivation, sales is dropped."""

    def test_service_waits_for_reactivation(self) -> None:
        now = at(2026, 11, 23, 10, 0)
        decision = gate(task(now), SubscriberView(status="suspended"), POLICY)
        assert decision == GateDecision("defer", now, "suspended", None)

    def test_waiting_still_respects_quiet_hours(self) -> None:
        now = at(2026, 11, 23, 23, 0)
        decision = gate(task(now), SubscriberView(status="suspended"), POLICY)
        assert decision == GateDecision("defer", at(2026, 11, 24, 8, 0), "suspended", None)

    def test_sales_is_dropped(self) -> None:
        now = at(2026, 11, 23, 10, 0)
        decision = gate(task(now, purpose="sales"), SubscriberView(status="suspended"), POLICY)
        assert decision == GateDecision("suppress", now, "suspended")

    def test_the_policy_can_drop_service_too(self) -> None:
        policy = GatingPolicy.model_validate({"suspended": {"service": "suppress"}})
        now = at(2026, 11, 23, 10, 0)
        decision = gate(task(now), SubscriberView(status="suspended"), policy)
        assert decision.action == "suppress"

    def test_regated_after_reactivation_it_is_sent(self) -> None:
        """Gated again at the reactivation's time, the same task would be sent."""
        triggered = at(2026, 11, 23, 10, 0)
        held = gate(task(triggered), SubscriberView(status="suspended"), POLICY)
        assert held.action == "defer"
        reactivated = triggered + dt.timedelta(hours=3)
        expires = triggered + dt.timedelta(hours=24)
        again = GateInput("sms", 3, "service", triggered, expires, reactivated)
        assert gate(again, SubscriberView(status="active"), POLICY) == GateDecision(
            "send", reactivated
        )


class TestQuietHoursKeptForReactivation:
    """A task waiting for a suspended line carries its quiet hours: dispatch, which knows
    neither the policy nor the customer, judges them again when the line is active."""

    def test_the_zone_and_windows_gating_would_use(self) -> None:
        view = SubscriberView(
            timezone="Asia/Shanghai", quiet_hours=("12:30-13:30",), status="suspended"
        )
        zone, windows = quiet_hours_kept("sms", view, POLICY)
        assert zone == "Asia/Shanghai"
        assert windows == [str(w) for w in POLICY.windows] + ["12:30-13:30"]
        roaming = replace(view, roaming_utc_offset_minutes=-330)
        assert quiet_hours_kept("sms", roaming, POLICY)[0] == "-05:30"

    def test_a_window_repeated_by_the_profile_is_carried_once(self) -> None:
        """Dispatch reads the carried windows: each once, in first-seen order, even when the
        profile repeats the policy's window (as written, or in another spelling of it)."""
        policy = GatingPolicy.model_validate({"quiet_hours": ["22:00-08:00"]})
        view = SubscriberView(quiet_hours=("12:00-13:30", "22:00-8:00", "12:00-13:30"))
        expected = ["22:00-08:00", "12:00-13:30"]
        assert quiet_hours_kept("sms", view, policy)[1] == expected
        assert quiet_hours_carried(view, policy)[1] == expected
        assert [str(w) for w in quiet_windows(view, policy)] == expected

    def test_a_channel_without_quiet_hours_keeps_none(self) -> None:
        policy = GatingPolicy.model_validate({"quiet_hours_channels": ["sms"]})
        assert quiet_hours_kept("manager", SubscriberView(), policy) == (None, [])

    @pytest.mark.parametrize("minutes", [0, 330, -330, 14 * 60, -12 * 60, 45])
    def test_offset_labels_read_back(self, minutes: int) -> None:
        tz = dt.timezone(dt.timedelta(minutes=minutes))
        back = zone_of_label(zone_label(tz))
        assert back is not None
        assert back.utcoffset(None) == tz.utcoffset(None)
        assert zone_of_label(zone_label(BERLIN)) == BERLIN
        assert zone_of_label("Not/AZone") is None

    @given(
        st.datetimes(
            min_value=dt.datetime(2026, 1, 1),
            max_value=dt.datetime(2027, 12, 31),
            timezones=st.just(UTC),
        ),
        st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York", None]),
        st.sampled_from([(), ("12:30-13:30",), ("22:00-07:00", "06:00-09:00")]),
        st.sampled_from([None, 330, -600]),
    )
    def test_reading_them_back_gives_gating_s_answer(
        self,
        instant: dt.datetime,
        timezone: str | None,
        own: tuple[str, ...],
        offset: int | None,
    ) -> None:
        view = SubscriberView(timezone=timezone, quiet_hours=own, roaming_utc_offset_minutes=offset)
        zone, windows = quiet_hours_kept("sms", view, POLICY)
        expected = next_open_instant(instant, quiet_windows(view, POLICY), local_zone(view, POLICY))
        assert open_after_quiet(instant, zone, windows) == expected

    def test_nothing_kept_means_open_now(self) -> None:
        now = at(2026, 11, 23, 23, 0)
        assert open_after_quiet(now, None, []) == now


# ---- properties ------------------------------------------------------------------------

ZONES = ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
NEAR_DST = [
    dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
    dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
]
minute_of_day = st.integers(0, 24 * 60 - 1)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


windows = st.tuples(minute_of_day, minute_of_day).filter(lambda w: w[0] != w[1])
instants = st.one_of(
    st.builds(
        lambda base, shift: base + dt.timedelta(seconds=shift),
        st.sampled_from(NEAR_DST),
        st.integers(-2 * 86400, 2 * 86400),
    ),
    st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2027, 12, 31), timezones=st.just(UTC)),
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[GateInput, SubscriberView, GatingPolicy]:
    now = draw(instants)
    ttl = dt.timedelta(minutes=draw(st.integers(-60, 30 * 24 * 60)))
    gate_input = GateInput(
        channel=draw(st.sampled_from(list(Channel))),
        priority=draw(st.integers(1, 5)),
        purpose=draw(st.sampled_from(["service", "sales"])),
        triggered_at=now,
        expires_at=now + ttl,
        now=now,
    )
    subscriber = SubscriberView(
        timezone=draw(st.none() | st.sampled_from(ZONES)),
        roaming_timezone=draw(st.none() | st.sampled_from(ZONES)),
        roaming_utc_offset_minutes=draw(st.none() | st.integers(-12 * 60, 14 * 60)),
        quiet_hours=tuple(f"{hhmm(s)}-{hhmm(e)}" for s, e in draw(st.lists(windows, max_size=2))),
        # Weighted towards lines we may contact, so the quiet hours and the cap are reached.
        status=draw(st.sampled_from([None, "active", "active", "active", "suspended", "closed"])),
        opt_out=frozenset(draw(st.sets(st.sampled_from(list(Channel)), max_size=1))),
        open_complaints=draw(st.sampled_from([0, 0, 0, 1, 2])),
    )
    default_windows = draw(st.lists(windows, max_size=2, unique=True))  # a repeat is refused
    assume(not covers_whole_day(parse_window(f"{hhmm(s)}-{hhmm(e)}") for s, e in default_windows))
    policy = GatingPolicy.model_validate(
        {
            "quiet_hours": [f"{hhmm(s)}-{hhmm(e)}" for s, e in default_windows],
            "timezone": draw(st.sampled_from(ZONES)),
            "frequency_cap": draw(
                st.none()
                | st.builds(
                    lambda n, days: {"max_contacts": n, "period": f"{days}d"},
                    st.integers(1, 4),
                    st.integers(1, 7),
                )
            ),
        }
    )
    return gate_input, subscriber, policy


def zone_by_hand(subscriber: SubscriberView, policy: GatingPolicy) -> dt.tzinfo:
    """The test's own reading: roaming zone, roaming offset, profile zone, policy zone."""
    if subscriber.roaming_timezone:
        return zoneinfo.ZoneInfo(subscriber.roaming_timezone)
    if subscriber.roaming_utc_offset_minutes is not None:
        return dt.timezone(dt.timedelta(minutes=subscriber.roaming_utc_offset_minutes))
    return zoneinfo.ZoneInfo(subscriber.timezone or policy.timezone)


def quiet_by_hand(instant: dt.datetime, texts: list[str], tz: dt.tzinfo) -> bool:
    local = instant.astimezone(tz)
    minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 6e7
    for text in texts:
        start, end = (int(part[:2]) * 60 + int(part[3:]) for part in text.split("-"))
        if (start <= minute < end) if start < end else (minute >= start or minute < end):
            return True
    return False


class TestProperties:
    """What gating promises, for any task, subscriber and policy."""

    @settings(deadline=None, max_examples=400)
    @given(case=cases())
    def test_a_delivered_task_is_never_in_quiet_hours_early_or_expired(
        self, case: tuple[GateInput, SubscriberView, GatingPolicy]
    ) -> None:
        gate_input, subscriber, policy = case
        decision = gate(gate_input, subscriber, policy)
        if decision.action == "suppress":
            assert decision.reason is not None
            return
        assert gate_input.now <= decision.deliver_after < gate_input.expires_at
        texts = [*policy.quiet_hours, *subscriber.quiet_hours]
        tz = zone_by_hand(subscriber, policy)
        assert not quiet_by_hand(decision.deliver_after, texts, tz)
        if decision.action == "send":
            assert decision.deliver_after == gate_input.now
            assert decision.reason is None

    @settings(deadline=None, max_examples=300)
    @given(case=cases())
    def test_each_gate_holds(self, case: tuple[GateInput, SubscriberView, GatingPolicy]) -> None:
        gate_input, subscriber, policy = case
        decision = gate(gate_input, subscriber, policy)
        if gate_input.channel in subscriber.opt_out:
            assert decision.action == "suppress"
        if subscriber.status in ("closed", "suspended"):
            assert decision.action != "send"
        if decision.action == "defer" and subscriber.status == "suspended":
            assert (decision.reason, decision.until) == ("suspended", None)
        if subscriber.open_complaints and gate_input.purpose in policy.open_complaint_blocks:
            assert decision.action == "suppress"
        if gate_input.now >= gate_input.expires_at:
            assert (decision.action, decision.reason) == ("suppress", "expired")
        if decision.action == "defer" and decision.until is not None:
            assert decision.until == decision.deliver_after
