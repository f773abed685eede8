"""The contract models: what they accept, what they refuse, and how they serialise."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from moments.decoding import decode
from moments.models import (
    EVENT_MODELS,
    Channel,
    ComplaintEvent,
    EventType,
    OutcomeStatus,
    ProfileEvent,
    RoamingEvent,
    ServiceTask,
    TaskOutcome,
    TopUpEvent,
    UsageEvent,
)
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.state import SubscriberState
from moments.tracking import apply_profile

BASE = {
    "event_id": "e-1",
    "subscriber_id": "13800138001",
    "occurred_at": "2026-11-22T09:30:00+08:00",
}

VALID: dict[EventType, dict[str, Any]] = {
    EventType.TOPUP: {**BASE, "amount": "50.00", "balance_after": 62.5, "channel": "app"},
    EventType.ROAMING: {**BASE, "country": "JP", "roaming_type": "international"},
    EventType.COMPLAINT: {
        **BASE,
        "complaint_id": "c-9",
        "category": "network",
        "severity": 1,
        "status": "opened",
    },
    EventType.USAGE: {**BASE, "kind": "voice", "quantity": 300, "counterparty": "10010"},
    EventType.PROFILE: {
        **BASE,
        "birthday": "1990-07-14",
        "tier": "gold",
        "quiet_hours": ["22:00-08:00"],
    },
}


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_accepts_the_contract_example(event_type: EventType) -> None:
    event = EVENT_MODELS[event_type].model_validate(VALID[event_type])
    assert event.subscriber_id == "13800138001"
    assert event.occurred_at == dt.datetime(2026, 11, 22, 1, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize("event_type", list(EventType))
@pytest.mark.parametrize("missing", ["event_id", "subscriber_id", "occurred_at"])
def test_every_event_type_needs_the_common_fields(event_type: EventType, missing: str) -> None:
    value = {k: v for k, v in VALID[event_type].items() if k != missing}
    with pytest.raises(ValidationError, match=missing):
        EVENT_MODELS[event_type].model_validate(value)


@pytest.mark.parametrize(
    ("model", "field", "bad"),
    [
        (TopUpEvent, "amount", 0),
        (TopUpEvent, "amount", "fifty"),
        (RoamingEvent, "country", "Japan"),
        (RoamingEvent, "roaming_type", "abroad"),
        (ComplaintEvent, "severity", 4),
        (UsageEvent, "kind", "fax"),
        (UsageEvent, "imei", "12ab"),
        (UsageEvent, "imei", "3512345678901"),  # 13 digits: no handset's (re-check)
        (RoamingEvent, "country", "fr"),  # ISO 3166 alpha-2 is upper case (re-check)
        (ProfileEvent, "quiet_hours", ["22:00-24:00"]),
        (ProfileEvent, "opt_out", ["SMS"]),  # an opt-out lost if ignored
        (ProfileEvent, "star_level", 8),
    ],
)
def test_wrong_values_are_refused_with_the_field_named(
    model: type[Any], field: str, bad: object
) -> None:
    event_type = next(t for t, m in EVENT_MODELS.items() if m is model)
    with pytest.raises(ValidationError, match=field):
        model.model_validate({**VALID[event_type], field: bad})


@pytest.mark.parametrize(
    "bad", ["America/New_Yrok", "Tokyo", "CST", "UTC+8", "+08:00", "../x", "America", "Etc"]
)
@pytest.mark.parametrize("model", [ProfileEvent, RoamingEvent])
def test_a_time_zone_tzdata_does_not_know_is_refused(model: type[Any], bad: str) -> None:
    """It was kept, and quiet hours were judged in Asia/Shanghai's time instead. A folder
    of tzdata (America) raised IsADirectoryError out of the validation."""
    event_type = next(t for t, m in EVENT_MODELS.items() if m is model)
    with pytest.raises(ValidationError, match="timezone") as refused:
        model.model_validate({**VALID[event_type], "timezone": bad})
    said = str(refused.value)
    # The fix: the closest name (America/New_York for the typo), else two examples; for
    # a UTC offset, the place's name or the Etc zone (tests/unit/test_zone_names.py).
    fixes = ("write one such as Asia/Shanghai", "did you mean", "pattern", "write the place's")
    assert any(fix in said for fix in fixes)
    # `UTC+8`, `CST`, `+08:00` fail the pattern first (the schemas' pattern too): the dead
    # letter names the fix (tests/unit/test_zone_pattern.py)


@pytest.mark.parametrize("event_type", [EventType.PROFILE, EventType.ROAMING])
def test_a_tzdata_folder_as_a_zone_is_a_dead_letter_not_a_failed_batch(
    event_type: EventType,
) -> None:
    """`decode` let the IsADirectoryError out, so the detector's whole batch failed on
    one record."""
    value = orjson.dumps({**VALID[event_type], "timezone": "America"})
    letter = decode(
        RawRecord(f"telecom.{event_type.value}", 0, 7, b"13800138001", value), event_type
    )
    assert isinstance(letter, DeadLetter)
    assert letter.reason is RejectReason.INVALID_EVENT
    assert "'America' is not an IANA time zone" in letter.message


@pytest.mark.parametrize("good", ["America/New_York", "Europe/London", "UTC", "Etc/GMT-8"])
def test_iana_names_are_taken(good: str) -> None:
    event = ProfileEvent.model_validate({**VALID[EventType.PROFILE], "timezone": good})
    assert event.timezone == good


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        RoamingEvent.model_validate(
            {**VALID[EventType.ROAMING], "occurred_at": "2026-11-22T09:30:00"}
        )


@pytest.mark.parametrize("bad", ["1380013800a", "1234", "1" * 21])
def test_subscriber_id_is_5_to_20_digits(bad: str) -> None:
    with pytest.raises(ValidationError, match="subscriber_id"):
        RoamingEvent.model_validate({**VALID[EventType.ROAMING], "subscriber_id": bad})


def test_unknown_extra_fields_are_accepted_and_kept_aside() -> None:
    event = RoamingEvent.model_validate({**VALID[EventType.ROAMING], "cell_id": "x-17"})
    assert event.country == "JP"
    assert event.model_extra == {"cell_id": "x-17"}


def test_unknown_profile_fields_stay_out_of_the_subscriber_state() -> None:
    state = SubscriberState()
    apply_profile(
        state, ProfileEvent.model_validate({**BASE, "tier": "gold", "crm_flag": "x" * 500})
    )
    assert state.profile == {"tier": "gold"}


def test_money_is_exact_from_number_or_string() -> None:
    assert TopUpEvent.model_validate(VALID[EventType.TOPUP]).amount == Decimal("50.00")
    event = TopUpEvent.model_validate({**VALID[EventType.TOPUP], "amount": 0.1})
    assert event.amount == Decimal("0.1")


@pytest.mark.parametrize(
    ("given", "kept"),
    [("-0", "0"), ("-0.0", "0.0"), ("-0.00", "0.00"), ("-0.0000", "0.0000"), ("-0.5", "-0.5")],
)
def test_negative_zero_money_is_zero(given: str, kept: str) -> None:
    """A decimal string "-0.00" (a billing system's rounded -0.001) is money of 0 with its
    places: it showed as "Balance -0.00 yuan" in a customer's SMS. Read from JSON (as the
    worker does) or built in Python, in any money field."""
    value = {**VALID[EventType.USAGE], "charge": given, "balance_after": given}
    for event in (
        UsageEvent.model_validate_json(orjson.dumps(value)),
        UsageEvent.model_validate(value),
    ):
        assert (str(event.charge), str(event.balance_after)) == (kept, kept)
    assert orjson.loads(UsageEvent.model_validate(value).model_dump_json())["charge"] == kept


def _decimal_texts() -> list[str]:
    """Every text of "-", "0", "5" and "." up to 7 characters, and texts of 0 to 11 digits
    before the point and 0 to 6 after, all zeros or one 7 among them, either sign: about
    the bounds of the schema's pattern (9 digits, 4 places)."""
    short = ["".join(chars) for n in range(1, 8) for chars in itertools.product("-05.", repeat=n)]
    long = []
    for whole, places, sign in itertools.product(range(12), range(7), ("", "-")):
        for seven in range(-1, whole + places):
            digits = ["7" if i == seven else "0" for i in range(whole + places)]
            point = "." if places else ""
            long.append(sign + "".join(digits[:whole]) + point + "".join(digits[whole:]))
    return short + long


def test_money_text_is_read_as_the_schema_says_and_negative_zero_as_zero() -> None:
    """The worker takes the decimal strings the published pattern takes, no other, and
    reads each as its decimal; a negative zero (read by a branch of its own, so that only
    it calls Python) as 0 with its places."""
    charge = UsageEvent.model_json_schema()["properties"]["charge"]["anyOf"]
    schema = [b for branch in charge for b in branch.get("anyOf", [branch])]  # null: its own
    (pattern,) = [branch["pattern"] for branch in schema if branch["type"] == "string"]
    read = UsageEvent.__pydantic_validator__.validate_json
    for text in _decimal_texts():
        value = orjson.dumps({**VALID[EventType.USAGE], "charge": text})
        if re.fullmatch(pattern, text) is None:
            with pytest.raises(ValidationError, match="a decimal string like"):
                read(value)
            continue
        charge = read(value).charge
        expected = Decimal(text).copy_abs() if Decimal(text).is_zero() else Decimal(text)
        assert (str(charge), charge.is_signed()) == (str(expected), expected < 0), text


@pytest.mark.parametrize("zero", ["-0", "-0.00", "0.00"])
def test_a_top_up_of_negative_zero_is_still_refused(zero: str) -> None:
    value = {**VALID[EventType.TOPUP], "amount": zero}
    with pytest.raises(ValidationError, match="greater than 0"):
        TopUpEvent.model_validate_json(orjson.dumps(value))


@pytest.mark.parametrize(
    ("given", "kept"), [("07-14", "07-14"), ("1990-07-14", "07-14"), ("02-29", "02-29")]
)
def test_birthday_is_kept_as_month_and_day(given: str, kept: str) -> None:
    assert ProfileEvent.model_validate({**BASE, "birthday": given}).birthday == kept


@pytest.mark.parametrize("bad", ["1990-02-30", "02-30", "04-31", "13-01", "7-14", "July 14"])
def test_a_bad_birthday_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="birthday"):
        ProfileEvent.model_validate({**BASE, "birthday": bad})


def test_profile_update_carries_only_what_it_sets() -> None:
    event = ProfileEvent.model_validate({**BASE, "tier": "gold"})
    assert event.model_dump(exclude_unset=True).keys() == {*BASE, "tier"}


def test_channels_are_the_contract_s() -> None:
    assert {c.value for c in Channel} == {"sms", "outbound_call", "manager", "app_push"}


def task_value() -> dict[str, Any]:
    return {
        "task_id": "7035207ab92326f1cc821b81440cfc17",
        "subscriber_id": "13800138001",
        "region": "NJ",
        "moment": {
            "family": "first_time",
            "type": "first_international_roaming",
            "rule_id": "first_international_roaming",
            "rule_version": 1,
            "description": "Welcome to JP",
            "params": {"country": "JP"},
        },
        "priority": 3,
        "channel": "sms",
        "action": "roaming_welcome",
        "triggered_at": "2026-11-22T09:30:00+08:00",
        "created_at": "2026-11-22T01:30:01Z",
        "deliver_after": "2026-11-22T01:30:01Z",
        "expires_at": "2026-11-23T01:30:00Z",
        "evidence": ["e-1"],
    }


def test_service_task_round_trips_through_json() -> None:
    task = ServiceTask.model_validate(task_value())
    again = ServiceTask.model_validate_json(orjson.dumps(task.model_dump(mode="json")))
    assert again == task
    assert again.deferred is None


@pytest.mark.parametrize(("field", "bad"), [("priority", 0), ("priority", 6), ("channel", "fax")])
def test_service_task_refuses_out_of_contract_values(field: str, bad: object) -> None:
    with pytest.raises(ValidationError, match=field):
        ServiceTask.model_validate({**task_value(), field: bad})


def test_task_outcome_statuses() -> None:
    outcome = TaskOutcome.model_validate(
        {
            "task_id": "90bd947c9fdac044a8b53075800c7701",
            "subscriber_id": "13800138001",
            "status": "unreachable",
            "occurred_at": "2026-11-22T10:00:00+08:00",
        }
    )
    assert outcome.status is OutcomeStatus.UNREACHABLE
    with pytest.raises(ValidationError, match="status"):
        TaskOutcome.model_validate({**outcome.model_dump(mode="json"), "status": "maybe"})


def test_a_utc_offset_in_hours_is_refused_naming_the_minutes() -> None:
    with pytest.raises(ValidationError, match=r"minutes: 480 for UTC\+8"):
        RoamingEvent.model_validate({**VALID[EventType.ROAMING], "utc_offset_minutes": 8})


def _python_calls(schema: Any, branch: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Where a core schema calls a Python function when it reads JSON: the types of the
    schemas that lead there (a chain's first step stands for the chain, with its pattern
    if it has one). Python-mode schemas (a model built in code) are left out."""
    if isinstance(schema, list):
        return [found for item in schema for found in _python_calls(item, branch)]
    if not isinstance(schema, dict):
        return []
    kind = schema.get("type")
    here = branch
    if kind == "chain":
        first = schema["steps"][0]
        here = (*branch, " ".join([first.get("type", "?"), *filter(None, [first.get("pattern")])]))
    found = [here] if kind == "function-plain" else []
    for key, value in schema.items():
        if key not in {"function", "python_schema"}:
            found += _python_calls(value, here)
    return found


def _only_for_numbers_or_negative_zero(branch: tuple[str, ...]) -> bool:
    for step in branch:
        kind, _, pattern = step.partition(" ")
        if kind in ("float", "none"):
            return True
        if kind == "str" and pattern:
            matches = [bool(re.fullmatch(pattern, text)) for text in ("49.90", "0", "-1", "-0.00")]
            return matches == [False, False, False, True]
    return False


@pytest.mark.parametrize("model", [UsageEvent, TopUpEvent])
def test_money_calls_python_for_json_numbers_only(model: type[BaseModel]) -> None:
    """Decimal strings and integers are read and bounded in pydantic-core alone: a Python
    call after the bounds, for every amount, made decoding a usage event a fifth slower
    (rounding is for numbers only; a decimal string is held to 4 places). The one string
    that calls Python is a negative zero, made 0; so does a null charge, made 0."""
    calls = _python_calls(model.__pydantic_core_schema__)
    assert calls
    assert all(_only_for_numbers_or_negative_zero(branch) for branch in calls), calls
