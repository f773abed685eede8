"""A profile update is state, not a measurement: it holds however late it comes (an
opt-out must), unless a newer update was applied already (an old snapshot sent again
must not undo it); one dated in the future is not applied. Found by an upstream
producer's review: an old CRM snapshot closed a line and a future one suspended it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import ValidationError

from moments.decoding import decode
from moments.engine import Detector
from moments.models import EventType, ProfileEvent
from moments.pipeline import run_pipeline, to_records
from moments.records import DeadLetter, RawRecord
from moments.runtime import UnknownChannels
from moments.store import DictStateStore
from moments.tracking import profile_update, subscriber_view
from rules.gating import GatingPolicy

from .rules.helpers import SUB, WELCOME, at, ev, rules_from, run

RULES = rules_from("rules:" + WELCOME)
PROFILE, ROAMING = EventType.PROFILE, EventType.ROAMING


def arrival(day: str, country: str, time: str = "12:00") -> tuple[EventType, dict[str, str]]:
    return ev(ROAMING, at(day, time), country=country, roaming_type="international")


def test_an_old_snapshot_sent_again_undoes_nothing() -> None:
    events = [
        ev(PROFILE, at("2026-11-02", "09:00"), status="active", opt_out=[]),
        ev(PROFILE, at("2025-06-01"), status="closed", opt_out=["sms"]),  # replayed snapshot
        arrival("2026-11-02", "JP"),
    ]
    result = run(RULES, events)
    assert [t.moment.params["country"] for t in result.tasks] == ["JP"]
    state = result.store.load(str(events[0][1]["subscriber_id"]))
    assert state is not None
    assert (state.profile["status"], state.profile["opt_out"]) == ("active", [])
    assert result.late == 1


def test_an_opt_out_sent_late_still_holds() -> None:
    """The CRM feed hours behind the network's: older than the lateness allows for other
    events, yet newer than any profile update applied."""
    events = [
        arrival("2026-11-02", "JP", "15:00"),
        ev(PROFILE, at("2026-11-02", "10:00"), opt_out=["sms"]),  # 5 h behind
        arrival("2026-11-02", "TH", "15:30"),
    ]
    result = run(RULES, events)
    assert [t.moment.params["country"] for t in result.tasks] == ["JP"]  # TH: opted out
    assert result.late == 0


def test_a_partial_update_dated_before_one_applied_is_applied_field_by_field() -> None:
    """Two CRM services each send partial updates: an opt-out dated 30 minutes before a
    tier change read before it was refused (`late`), as updates were applied in
    occurred_at order as wholes, and the SMS still went: a do-not-disturb breach. Each
    field is now the latest update's that carried it (tests/unit/test_profile_fields.py)."""
    events = [
        ev(PROFILE, at("2026-11-02", "10:30"), tier="gold"),
        ev(PROFILE, at("2026-11-02", "10:00"), opt_out=["sms"]),  # read after, dated before
        arrival("2026-11-02", "JP", "11:00"),
    ]
    result = run(RULES, events)
    assert result.tasks == []  # opted out of SMS: no welcome
    assert (result.late, result.dead_letters) == (0, [])
    state = result.store.load(str(events[0][1]["subscriber_id"]))
    assert state is not None
    assert (state.profile["tier"], state.profile["opt_out"]) == ("gold", ["sms"])


def test_an_old_snapshot_says_to_send_a_change_still_to_make_again() -> None:
    events = [
        ev(PROFILE, at("2026-11-02", "10:30"), tier="gold", opt_out=[]),
        ev(PROFILE, at("2026-11-02", "10:00"), tier="silver", opt_out=["sms"]),
    ]
    (refused,) = run(RULES, events).dead_letters
    assert refused.reason.value == "late"
    assert refused.message.endswith(
        "nothing to apply: each profile field is the latest update's that carried it, by "
        "occurred_at. An old snapshot sent again undoes nothing; a change still to make (an "
        "opt-out, a suspension) must be sent again, dated now"
    )


def test_a_profile_dated_in_the_future_is_not_applied() -> None:
    now = dt.datetime(2026, 11, 2, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
    events = [
        ev(PROFILE, "2027-01-01T00:00:00+08:00", status="suspended"),
        arrival("2026-11-02", "JP", "11:59"),
    ]
    result = run_pipeline(events, RULES, now=now)
    assert [(t.moment.params["country"], t.deferred) for t in result.tasks] == [("JP", None)]
    assert result.future == 1


def test_a_first_profile_dated_before_1970_utc_is_applied_not_a_crash() -> None:
    events = [ev(PROFILE, "1970-01-01T05:00:00+08:00", tier="gold")]  # a negative time
    result = run(RULES, events)
    state = result.store.load(str(events[0][1]["subscriber_id"]))
    assert state is not None
    assert state.profile["tier"] == "gold"


class TestNullIsNotCarried:
    """A null field leaves the profile as it was; clearing is explicit. Found by upstream
    producers: `opt_out: null` lifted an SMS opt-out, `status: null` a suspension, and a
    serializer writing every unset field as null wiped all three on a tier change."""

    ALL_NULL = dict.fromkeys(set(ProfileEvent.model_fields) - {"event_id", "subscriber_id"})
    del ALL_NULL["occurred_at"]

    def profile_after(self, *updates: Mapping[str, Any]) -> dict[str, object]:
        events = [ev(PROFILE, at("2026-11-02", f"09:0{n}"), **u) for n, u in enumerate(updates)]
        state = run(RULES, events).store.load(str(events[0][1]["subscriber_id"]))
        assert state is not None
        return state.profile

    def test_a_serializer_writing_every_unset_field_as_null_clears_nothing(self) -> None:
        kept = {
            "opt_out": ["sms"],
            "status": "suspended",
            "quiet_hours": ["12:00-14:00"],
            "manager_id": "mgr-7",
            "timezone": "Europe/London",
            "contract_end": "2027-01-31",
        }
        profile = self.profile_after(kept, self.ALL_NULL | {"tier": "gold"})
        assert profile == kept | {"tier": "gold"}

    def test_a_null_opt_out_or_status_lifts_neither(self) -> None:
        events = [
            ev(PROFILE, at("2026-11-02", "09:00"), opt_out=["sms"], status="suspended"),
            ev(PROFILE, at("2026-11-02", "09:30"), opt_out=None, status=None),
            arrival("2026-11-02", "JP"),
        ]
        assert run(RULES, events).tasks == []  # the welcome SMS: opted out

    def test_clearing_is_explicit(self) -> None:
        profile = self.profile_after(
            {
                "opt_out": ["sms"],
                "quiet_hours": ["12:00-14:00"],
                "manager_id": "m",
                "status": "closed",
            },
            {"opt_out": [], "quiet_hours": [], "manager_id": "", "status": "active"},
        )
        assert profile == {"opt_out": [], "quiet_hours": [], "status": "active"}


class TestBlankValues:
    """CRM exports pad text columns (CHAR(n)) and write an unset one as spaces: a blank
    value is "none", as "" is, never a value of spaces. `tier: "  "` was stored and every
    task carried it; `manager_id: " "` routed manager tasks to a manager named " "."""

    SET: ClassVar[dict[str, str]] = {"tier": "gold", "manager_id": "mgr-7"}

    def profile_after(self, *updates: Mapping[str, Any]) -> dict[str, object]:
        return TestNullIsNotCarried().profile_after(*updates)

    @pytest.mark.parametrize("blank", ["", " ", "   ", "\u3000"])
    def test_a_blank_tier_or_manager_clears_it(self, blank: str) -> None:
        profile = self.profile_after(self.SET, {"tier": blank, "manager_id": blank})
        assert profile == {}

    def test_padding_around_a_value_is_not_part_of_it(self) -> None:
        profile = self.profile_after({"tier": "gold  ", "manager_id": " mgr-7 "})
        assert profile == self.SET

    def test_no_task_carries_a_blank_manager(self) -> None:
        events = [
            ev(PROFILE, at("2026-11-02", "09:00"), **self.SET),
            ev(PROFILE, at("2026-11-02", "09:30"), tier=" ", manager_id="   "),
            arrival("2026-11-02", "JP"),
        ]
        (task,) = run(RULES, events).tasks
        assert (task.tier, task.manager_id) == (None, None)


class TestClearingDatesAndZone:
    """A CRM that removes a wrong birthday, join date, contract end or zone says so with
    "" (or spaces), as for manager_id; null or absent still leaves the field as it was.
    They could not be cleared at all: a wrong birthday greeted the customer every year."""

    SET: ClassVar[dict[str, str]] = {
        "birthday": "05-17",
        "joined_on": "2020-03-01",
        "contract_end": "2027-01-31",
        "timezone": "Europe/London",
    }

    def profile_after(self, *updates: Mapping[str, Any]) -> dict[str, object]:
        return TestNullIsNotCarried().profile_after(*updates)

    @pytest.mark.parametrize("blank", ["", "  "])
    def test_a_blank_value_clears_each(self, blank: str) -> None:
        for name in self.SET:
            profile = self.profile_after(self.SET, {name: blank})
            assert profile == {k: v for k, v in self.SET.items() if k != name}, name

    def test_null_still_leaves_them(self) -> None:
        assert self.profile_after(self.SET, dict.fromkeys(self.SET)) == self.SET

    def test_a_cleared_birthday_makes_no_birthday_task(self) -> None:
        rules = rules_from(
            """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: birthday
    description: A birthday greeting
    on: [profile]
    evaluate: special_day
    condition: {occasion: birthday}
    task: {family: special_day, type: birthday, channel: sms, priority: 4,
           action: greet, ttl: 12h, description: "Happy birthday"}
"""
        )
        events = [
            ev(PROFILE, at("2026-05-10", "09:00"), birthday="05-17"),
            ev(PROFILE, at("2026-05-11", "09:00"), birthday=""),
        ]
        result = run_pipeline(events, rules, until=dt.datetime(2026, 5, 18, tzinfo=dt.UTC))
        assert result.tasks == []

    @pytest.mark.parametrize(
        ("name", "value"),
        [("joined_on", "2020-02-30"), ("timezone", "Mars/Olympus"), ("birthday", "5/17")],
    )
    def test_a_wrong_value_is_still_refused(self, name: str, value: str) -> None:
        record = to_records([ev(PROFILE, at("2026-11-02"), **{name: value})])[0]
        refused = decode(record, PROFILE)
        assert isinstance(refused, DeadLetter)
        assert refused.message.startswith(name), refused.message
        if name != "timezone":  # a day names how to write one, not its 300-character pattern
            assert refused.message.endswith('or "" to clear it'), refused.message


class TestUnknownOptOutChannels:
    """A channel moments does not send on cannot concern this version: counted and said
    once, kept for a newer version; the profile applies. Found by an upstream producer:
    `["sms", "email"]` was a dead letter, and the SMS opt-out beside `email` was lost."""

    def test_the_known_channels_hold_and_the_unknown_are_counted(self) -> None:
        detector = Detector(RULES, {t.value: t for t in EventType})
        events = [
            ev(PROFILE, at("2026-11-02", "09:00"), opt_out=["sms", "email", "wechat", "email"]),
            arrival("2026-11-02", "JP"),
        ]
        batch = detector.process(to_records(events), DictStateStore().load, None)
        assert batch.dead_letters == []
        assert batch.tasks == []  # the welcome SMS: opted out
        state = batch.changes[SUB].state
        assert state is not None
        assert batch.unknown_opt_outs == {"email": 2, "wechat": 1}

    def test_a_newer_versions_gates_find_an_opt_out_kept_in_another_case(self) -> None:
        """The state keeps a channel this version does not send on as written (`WeChat`):
        the gates a version sending on `wechat` runs compare its tasks' channel with the
        profile's opt-outs by `channel_key`, so a record this version wrote holds it off
        that channel; compared as written, it made tasks on it until the next update."""
        detector = Detector(RULES, {t.value: t for t in EventType})
        events = [ev(PROFILE, at("2026-11-02", "09:00"), opt_out=["WeChat", "sms"])]
        batch = detector.process(to_records(events), DictStateStore().load, None)
        state = batch.changes[SUB].state
        assert state is not None
        assert state.profile["opt_out"] == ["WeChat", "sms"]  # as written, for any reader
        view = subscriber_view(state, 0, GatingPolicy())
        assert view.opt_out == frozenset({"wechat", "sms"})

    def test_the_unknown_are_kept_in_the_profile_for_a_newer_version(self) -> None:
        """Each once, as written: a newer version sending on `wechat` reads the state this
        worker wrote (a rolling upgrade), and its gates must find the opt-out there. Left
        out, it made tasks on the channel the customer had refused until their next
        update carrying `opt_out`. An update opting in again (`[]`) clears them too."""
        detector = Detector(RULES, {t.value: t for t in EventType})
        events = [
            ev(PROFILE, at("2026-11-02", "09:00"), opt_out=["sms", "email", "wechat", "email"]),
        ]
        batch = detector.process(to_records(events), DictStateStore().load, None)
        state = batch.changes[SUB].state
        assert state is not None
        assert state.profile["opt_out"] == ["sms", "email", "wechat"]
        lifted = ProfileEvent.model_validate(
            {"event_id": "p2", "subscriber_id": SUB, "occurred_at": at("2026-11-02", "10:00")}
            | {"opt_out": []}
        )
        assert profile_update(state, lifted, int(lifted.occurred_at.timestamp())) is not None
        assert state.profile["opt_out"] == []

    def test_a_known_channel_written_otherwise_is_refused_naming_it(self) -> None:
        with pytest.raises(ValidationError, match="write 'sms' exactly"):
            ProfileEvent.model_validate(
                {"event_id": "p", "subscriber_id": SUB, "occurred_at": at("2026-11-02")}
                | {"opt_out": ["email", "SMS "]}
            )

    @pytest.mark.parametrize("written", ["call", "phone", "push", "text", "in-app", "Voice"])
    def test_a_channel_in_other_words_is_a_dead_letter_saying_how_to_write_it(
        self, written: str
    ) -> None:
        """`["call"]` was ignored as a channel moments does not send on, and the customer
        who opted out of calls still got them (re-check review); the refusal read as two
        errors in pydantic's words."""
        value = {"event_id": "p", "subscriber_id": SUB, "occurred_at": at("2026-11-02")}
        record = RawRecord(
            "telecom.profile", 0, 1, SUB.encode(), orjson.dumps(value | {"opt_out": [written]})
        )
        dead = decode(record, EventType.PROFILE)
        assert isinstance(dead, DeadLetter)
        assert dead.message == (
            "opt_out.0: reads as one of moments' channels: write it as the contract spells "
            "them, sms, outbound_call, manager or app_push (other channels, such as email, "
            "are counted and kept for a version that sends on them)"
        )

    def test_other_channels_are_not_taken_for_ours(self) -> None:
        for other in ("email", "wechat", "whatsapp", "post", "letter"):
            event = ProfileEvent.model_validate(
                {"event_id": "p", "subscriber_id": SUB, "occurred_at": at("2026-11-02")}
                | {"opt_out": [other]}
            )
            assert event.opt_out == [other]

    def test_each_unknown_name_is_logged_once(self, caplog: pytest.LogCaptureFixture) -> None:
        said = UnknownChannels()
        with caplog.at_level(logging.WARNING, logger="moments.runtime"):
            said.warn({"email": 3})
            said.warn({"email": 1, "wechat": 1})
            said.warn({"wechat": 5})
        assert [r.getMessage().split(";")[0] for r in caplog.records] == [
            "profile updates opt out of channels this version does not send on: 'email'",
            "profile updates opt out of channels this version does not send on: 'wechat'",
        ]
