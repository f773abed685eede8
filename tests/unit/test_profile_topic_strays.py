"""Another event type's record on the profile topic is a dead letter naming the wrong
topic, not a profile update that carries nothing.

Found walking as an upstream producer: every other input topic refuses a record of
another type (its required fields are missing) and says "sent to the wrong topic?", but a
profile's fields are all optional and unknown fields are kept out of the way, so a
top-up, a roaming or a usage record produced to `telecom.profile` (a copied producer
config, a topic variable mixed up) was taken as a profile update with no field. Nothing
was dead-lettered, the producer was never told, and the stray record moved the
subscriber's latest profile time: the CRM's real update dated before it was then refused
as `late`, and a usage record's `region` became the profile's region. The schema said the
same (it took any of them), so a producer's CI could not catch it either.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from moments.decoding import decode
from moments.models import EventType, ProfileEvent
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import example

from .rules.helpers import SUB, WELCOME, at, ev, rules_from, run

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "profile-event.schema.json"
PROFILE = EventType.PROFILE
_COMMON = {"event_id": "x-1", "subscriber_id": SUB, "occurred_at": "2026-11-22T10:00:00+08:00"}


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))


def _on_profile_topic(value: dict[str, Any]) -> ProfileEvent | DeadLetter | None:
    record = RawRecord("telecom.profile", 0, 0, SUB.encode(), json.dumps(value).encode())
    decoded = decode(record, PROFILE)
    assert decoded is None or isinstance(decoded, ProfileEvent | DeadLetter)
    return decoded


def _as(model: str) -> dict[str, Any]:
    """The contract's example of another type, keyed to the test subscriber."""
    return {**example(model), "subscriber_id": SUB}


STRAYS = [
    ("topup", _as("TopUpEvent")),
    ("roaming", _as("RoamingEvent")),
    ("usage", _as("UsageEvent")),
    ("usage", {**_COMMON, "kind": "voice", "quantity": 60, "region": "NJ"}),
    ("topup", {**_COMMON, "amount": "50.00", "channel": "app", "balance_after": "62.50"}),
    # what the stray names matters, not whether it would pass as its own type
    ("topup", {**_COMMON, "amount": "1,000", "channel": "app", "balance_after": 0}),
    (
        "roaming",
        {
            **_COMMON,
            "country": "JP",
            "roaming_type": "international",
            "timezone": "Asia/Tokyo",
            "operator": "NTT DOCOMO",
        },
    ),
    (
        "roaming",
        {**_COMMON, "country": "TH", "roaming_type": "domestic", "utc_offset_minutes": 420},
    ),
    ("usage", {**_COMMON, "kind": "bill_query", "counterparty": "10086"}),
    ("usage", {**_COMMON, "kind": "data", "imei": "356938035643809", "region": "NJ"}),
    # a blank beside a value is still a stray's
    (
        "roaming",
        {
            **_COMMON,
            "country": "JP",
            "roaming_type": "international",
            "operator": "",
            "utc_offset_minutes": 540,
        },
    ),
    ("usage", {**_COMMON, "kind": "sms", "counterparty": "", "service_code": "GPRS"}),
]


@pytest.mark.parametrize(("kind", "value"), STRAYS)
def test_another_types_record_on_the_profile_topic_is_a_dead_letter(
    kind: str, value: dict[str, Any]
) -> None:
    decoded = _on_profile_topic(value)
    assert isinstance(decoded, DeadLetter), decoded
    assert decoded.reason is RejectReason.INVALID_EVENT
    assert f"{kind} event" in decoded.message
    assert "wrong topic" in decoded.message
    assert "(no profile update carries it)" in decoded.message
    assert list(_validator().iter_errors(value)), "the schema took it"


LEGITIMATE = {
    # A CRM's own fields named as another type's required ones, with no field of one
    # occurrence of that type: these were refused as strays (and their region or zone lost).
    "home country and roaming plan": {
        **_COMMON,
        "country": "CN",
        "roaming_type": "international",
    },
    "moved abroad: zone, country, plan": {
        **_COMMON,
        "country": "GB",
        "roaming_type": "international",
        "timezone": "Europe/London",
    },
    "kind of line": {**_COMMON, "kind": "data"},
    "kind of line and region": {**_COMMON, "kind": "voice", "region": "NJ"},
    "plan amount and sales channel": {**_COMMON, "amount": 58, "channel": "app"},
    "and a region": {**_COMMON, "amount": "58.00", "channel": "store", "region": "SH"},
    "a serializer's null of an occurrence field": {
        **_COMMON,
        "amount": 58,
        "channel": "app",
        "balance_after": None,
    },
    # A blank text is none to the type's own decoder (`blank_is_none`), as a null is:
    # these were refused as a roaming, a usage record with "no profile update carries it".
    "home country, roaming plan and a blank operator": {
        **_COMMON,
        "country": "CN",
        "roaming_type": "international",
        "operator": "",
    },
    "and an operator of spaces only": {
        **_COMMON,
        "country": "CN",
        "roaming_type": "domestic",
        "operator": " \u3000",
    },
    "kind of line and a blank counterparty and service code": {
        **_COMMON,
        "kind": "voice",
        "counterparty": "  ",
        "service_code": "",
    },
}
"""Profile updates a CRM sends, taken (and the schema takes them)."""

PROFILES = [
    {**_COMMON, "tier": "gold"},
    {**_COMMON, "region": "NJ"},  # only the region: a profile may carry just that
    {**_COMMON, "status": "suspended", "amount": 50, "channel": "app"},  # names a field
    {**_COMMON, "tier": None, "amount": 50, "channel": "app"},  # a serializer's nulls
    {**_COMMON, "kind": "update", "opt_out": ["sms"]},  # a CRM's own `kind` field
    {**_COMMON, "kind": "crm_update", "region": "SH"},  # not a usage kind
    {**_COMMON, "amount": 50},  # one of a top-up's two fields is no top-up
    {**_COMMON, "country": "JP"},
    # a field only a profile has makes it one (a roaming record's timezone does not)
    {**_COMMON, "country": "JP", "roaming_type": "international", "tier": "gold"},
    example("ProfileEvent"),
    *[pytest.param(v, id=name) for name, v in LEGITIMATE.items()],
]


@pytest.mark.parametrize("value", PROFILES)
def test_a_profile_update_is_still_taken(value: dict[str, Any]) -> None:
    """Only a record that names none of a profile's own fields, and names what another
    type requires and a field of one occurrence of it, is refused; the schema agrees on
    each."""
    decoded = _on_profile_topic({**value, "subscriber_id": SUB})
    assert isinstance(decoded, ProfileEvent), decoded
    assert not list(_validator().iter_errors({**value, "subscriber_id": SUB}))


def test_a_stray_record_does_not_make_the_crms_update_late() -> None:
    """A top-up produced to the profile topic, dated after the CRM's update that follows
    it, left that update refused as `late`: the SMS opt-out was lost."""
    rules = rules_from("rules:" + WELCOME)
    events = [
        ev(PROFILE, at("2026-11-02", "12:00"), amount=50, channel="app", balance_after=62.5),
        ev(PROFILE, at("2026-11-02", "11:55"), opt_out=["sms"]),
        ev(
            EventType.ROAMING, at("2026-11-02", "12:30"), country="JP", roaming_type="international"
        ),
    ]
    result = run(rules, events)
    assert [d.reason for d in result.dead_letters] == [RejectReason.INVALID_EVENT]
    assert result.late == 0
    state = result.store.load(SUB)
    assert state is not None
    assert state.profile.get("opt_out") == ["sms"]


def test_an_update_carrying_no_profile_field_leaves_the_profile_time() -> None:
    """A record naming only a top-up's `amount` and `channel` is taken (a CRM's plan amount
    and sales channel), but it carries no profile field: the profile's latest time stays
    the CRM update's that set one. It moved to the stray's time, which the special days'
    "did the profile change since the look" check and a later update's lateness read."""
    rules = rules_from("rules:" + WELCOME)
    crm = at("2026-11-02", "11:00")
    events = [
        ev(PROFILE, crm, tier="gold"),
        ev(PROFILE, at("2026-11-02", "12:00"), amount=50, channel="app"),
    ]
    result = run(rules, events)
    assert result.dead_letters == []
    assert result.late == 0
    state = result.store.load(SUB)
    assert state is not None
    assert state.profile.get("tier") == "gold"
    assert state.seen["p"] == int(dt.datetime.fromisoformat(crm).timestamp())
    assert state.profile_at["tier"] == state.seen["p"]
