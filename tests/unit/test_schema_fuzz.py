"""The published schemas and the code agree on values no one wrote by hand.

- input events: each type's example with one field replaced by an awkward JSON value
  (another type, a boundary number, text with control, zero-width, bidi or unicode
  space characters, a lone surrogate, very long text, nesting), dropped, or beside an
  unknown field: the schema's verdict is the worker's (`decode`); the same for task
  outcomes (`decode_outcome`). Left out, as docs/producing-events.md says the schemas
  cannot say them: zone names tzdata does not know, the 64 KiB limit, and a lone
  surrogate in an event's unknown field (a test of its own below);
- tasks: random valid event sequences through the detector with the packaged catalog;
  every task, as the sink publishes it, is valid against `service-task.schema.json`.

Hypothesis runs derandomized: the same examples each run. The cases these found are
plain tests in test_schemas.py (`AGREE`, the outcome's lone surrogates).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from moments.decoding import decode
from moments.models import EVENT_MODELS, EventType, TaskOutcome
from moments.outcomes import decode_outcome
from moments.pipeline import run_pipeline
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.schemas import SCHEMA_FILES, example
from moments.zones import ZONE_PATTERN, known_zone
from rules.catalog import load_rules
from sinks.hours import published
from sinks.payloads import task_bytes

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
FILE_OF_MODEL = {model.__name__: name for name, (model, _) in SCHEMA_FILES.items()}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


_ZONE_PATTERN = re.compile(ZONE_PATTERN)


def _unknown_zone(name: object) -> bool:
    """Whether a time zone name matches the schema's pattern and is no zone tzdata knows."""
    return (
        isinstance(name, str)
        and len(name) <= 64
        and _ZONE_PATTERN.fullmatch(name) is not None
        and known_zone(name) is None
    )


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8")))


# --- events: the schema's verdict is the worker's -----------------------------------------

LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d"]  # "\ud83d": half an emoji
ODD_CHARS = [
    *"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2007\u200a\u2028\u2029\u202f\u205f\u3000",
    *"\x1c\x1d\x1e\x1f\x00\x01\x1b\x7f\x80\x9f",  # controls (C0, C1), separators
    *"\u00ad\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2060\u2066\u2069",
    *"\ufeff\ufff9\ufffc\ufffd\ue000",  # BOM, annotations, replacement, private use
    *"é中\U0001f600\U00010000\U0010ffff",  # accents, CJK, astral
    *LONE_SURROGATES,
]
NEAR = [  # text close to what the fields take
    "",
    " ",
    "0",
    "1",
    "1.0",
    "1e3",
    "-0",
    "NaN",
    "Infinity",
    "true",
    "null",
    "13800138000",
    "07-14",
    "02-29",
    "1990-07-14",
    "2026-11-22T09:30:00+08:00",
    "2026-11-22t01:30:00z",
    "Asia/Shanghai",
    "UTC",
    "Etc/GMT+8",
    "+08:00",
    "JP",
    "sms",
    "SMS",
    "email",
    "voice",
    "international",
    "opened",
    "22:00-07:00",
    "356938035643809",
    "49.90",
]


def _texts() -> st.SearchStrategy[str]:
    odd = st.one_of(st.characters(), st.sampled_from(ODD_CHARS))
    return st.one_of(
        st.text(odd, max_size=10),
        st.sampled_from(NEAR),
        st.builds(
            lambda head, char, tail: head + char + tail,
            st.sampled_from(NEAR),
            st.sampled_from(ODD_CHARS),
            st.sampled_from(["", "x", "1", "JP"]),
        ),
        st.sampled_from(["x" * 16, "x" * 17, "x" * 32, "x" * 33, "x" * 64, "x" * 65, "x" * 129]),
        st.builds(lambda n: "y" * n, st.integers(128, 4_000)),  # 10 of them: < 64 KiB
    )


NUMBERS = [
    *(0, -0.0, 0.0, 1, -1, 1.0, 1.5, 2, 3, 4, 5, 7, 8, 7.0, 3.0000000000000004),
    *(1e-5, 1e-4, 0.0001, 0.00005, 0.00015, 0.1 + 0.2, 5e-324, -5e-324),
    *(999999999.9999, 999999999.99995, 999999999.99994, 1e9, -1e9, -999999999.9999),
    *(2**31, 2**53, 2**53 + 1, 2**63, 2**64, 10**20, 10**30, -(10**30), 1e15, 1e16, 1e300),
    *(123456789.123456789, 3.141592653589793, 1764900000, 1764900000000),
    *(480, 480.0, 840, 841, 855, -720, -735, 15, 15.0, 14.999999999999998, 1.0000000000000002),
]


def _awkward() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),  # `True == 1` in Python: a bool is no number to JSON Schema
        st.sampled_from(NUMBERS),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        _texts(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=9), st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    )


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    return False


def _verdicts(event_type: EventType, value: dict[str, Any]) -> tuple[bool, object]:
    """(the schema's verdict, what the worker made of it) for a JSON object."""
    name = FILE_OF_MODEL[EVENT_MODELS[event_type].__name__]
    schema_ok = _validator(name).is_valid(value)
    subscriber = value.get("subscriber_id")
    key = subscriber if isinstance(subscriber, str) else example("TopUpEvent")["subscriber_id"]
    # json.dumps writes a lone surrogate as a `\ud83d` escape, as JavaScript does.
    record = RawRecord("t", 0, 0, key.encode("utf-8", "surrogatepass"), json.dumps(value).encode())
    return schema_ok, decode(record, event_type)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[EventType, dict[str, Any], str]:
    event_type = draw(st.sampled_from(list(EventType)))
    value: dict[str, Any] = example(EVENT_MODELS[event_type].__name__)
    fields = sorted(EVENT_MODELS[event_type].model_fields)
    how = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
    if how == "drop":
        field = draw(st.sampled_from(fields))
        value.pop(field, None)
    elif how == "replace":
        field = draw(st.sampled_from(fields))
        value[field] = draw(_awkward())
    else:  # an unknown field: any name and value but a lone surrogate (see below)
        field = draw(st.text(max_size=8).filter(lambda f: f not in value))
        value[field] = draw(_awkward().filter(lambda v: not _has_lone_surrogate(v)))
    return event_type, value, f"{how} {field!r}"


@FUZZ
@given(_mutated())
def test_a_mutated_event_has_one_verdict(mutated: tuple[EventType, dict[str, Any], str]) -> None:
    event_type, value, how = mutated
    # A name tzdata does not know (`Asia/Beijing`) matches the schema's pattern: which
    # names are zones is the tzdata the worker runs with, not a pattern.
    assume(not _unknown_zone(value.get("timezone")))
    schema_ok, decoded = _verdicts(event_type, value)
    worker_ok = not isinstance(decoded, DeadLetter)
    assert schema_ok == worker_ok, (how, value, decoded)


@st.composite
def _mutated_outcome(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    value: dict[str, Any] = example("TaskOutcome")
    how = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
    field = draw(st.sampled_from(sorted(TaskOutcome.model_fields)))
    if how == "drop":
        value.pop(field, None)
    else:
        field = field if how == "replace" else draw(st.text(max_size=8))
        value[field] = draw(_awkward())
    return value, f"{how} {field!r}"


@settings(FUZZ, max_examples=40)
@given(_mutated_outcome())
def test_a_mutated_outcome_has_one_verdict(mutated: tuple[dict[str, Any], str]) -> None:
    value, how = mutated
    schema_ok = _validator("task-outcome.schema.json").is_valid(value)
    subscriber = value.get("subscriber_id")
    key = subscriber if isinstance(subscriber, str) else example("TaskOutcome")["subscriber_id"]
    record = RawRecord("t", 0, 0, key.encode("utf-8", "surrogatepass"), json.dumps(value).encode())
    decoded = decode_outcome(record)
    assert schema_ok == (not isinstance(decoded, DeadLetter)), (how, value, decoded)


def test_an_unknown_field_with_a_lone_surrogate_is_refused_naming_it() -> None:
    """A disagreement left: the schemas take any unknown field, the worker refuses
    JSON text holding a lone surrogate escape anywhere (its parser does; the text could
    not be stored or published either). The dead letter says so."""
    value = {**example("TopUpEvent"), "x_note": "cut in an emoji \ud83d"}
    schema_ok, decoded = _verdicts(EventType.TOPUP, value)
    assert schema_ok
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason is RejectReason.INVALID_JSON
    assert "surrogate" in decoded.message


# --- tasks: every task the detector makes is valid against the schema --------------------

BASE = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
SUBSCRIBERS = ["13800138001", "13800138002", "8613912345678"]
ZONES = ["Asia/Shanghai", "Asia/Tokyo", "America/Argentina/ComodRivadavia", "Etc/GMT-14"]
WORDS = st.text(
    st.characters(
        blacklist_categories=["Cc", "Cf", "Cs", "Zl", "Zp"], blacklist_characters="\x85\u180e"
    ),
    min_size=1,
    max_size=32,
)
FILLED = WORDS.filter(str.strip)
"""Words for a required text, which an event may not leave blank (spaces only)."""


def _money() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(["0.0001", "999999999.9999", "49.90", 30, 200, 0.5]),
        st.decimals(min_value=1, max_value=2000, places=2).map(str),
    )


def _topup() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"amount": _money(), "channel": st.one_of(st.sampled_from(["app", "bank"]), FILLED)},
        optional={"balance_after": st.one_of(_money(), st.just("-5.00"))},
    )


def _usage() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "kind": st.sampled_from(
                ["voice", "sms", "data", "bill_query", "service_order", "service_failure"]
            )
        },
        optional={
            "quantity": st.one_of(st.integers(0, 10**6), st.floats(0, 1e15)),
            "charge": _money(),
            "balance_after": _money(),
            "counterparty": st.one_of(st.sampled_from(["10010", "10086"]), WORDS),
            "direction": st.sampled_from(["in", "out"]),
            "service_code": st.one_of(st.sampled_from(["5G-PLUS"]), WORDS),
            "imei": st.sampled_from(["356938035643809", "35693803564381", "3569380356438090"]),
        },
    )


def _roaming() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "country": st.sampled_from(["JP", "TH", "US", "FR", "NZ"]),
            "roaming_type": st.sampled_from(["international", "domestic"]),
        },
        optional={
            "timezone": st.sampled_from(ZONES),
            "utc_offset_minutes": st.sampled_from([-720, -570, 0, 345, 480, 840]),
            "operator": WORDS,
        },
    )


def _complaint() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "complaint_id": st.sampled_from(["C-1", "C-2"]),
            "category": st.sampled_from(["network", "billing", "other"]),
            "severity": st.integers(1, 3),
            "status": st.sampled_from(["opened", "opened", "resolved"]),
        }
    )


def _profile() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "birthday": st.sampled_from(["11-02", "11-03", "02-29", "1990-11-04", ""]),
            "joined_on": st.sampled_from(["2015-11-03", "2024-02-29"]),
            "contract_end": st.sampled_from(["2026-11-20", "2026-12-01"]),
            "tier": st.one_of(st.sampled_from(["gold", "diamond"]), WORDS.map(lambda w: w[:16])),
            "star_level": st.integers(1, 7),
            "timezone": st.sampled_from([*ZONES, ""]),
            "quiet_hours": st.lists(
                st.sampled_from(["22:00-07:00", "12:00-13:30", "00:00-23:59"]), max_size=8
            ),
            "status": st.sampled_from(["active", "suspended"]),
            "opt_out": st.lists(st.sampled_from(["sms", "manager", "email"]), max_size=3),
            "region": st.sampled_from(["NJ", "SZ", ""]),
            "manager_id": st.one_of(st.just("mgr-1"), WORDS),
        },
    )


KINDS = {
    EventType.TOPUP: _topup(),
    EventType.USAGE: _usage(),
    EventType.ROAMING: _roaming(),
    EventType.COMPLAINT: _complaint(),
    EventType.PROFILE: _profile(),
}


@st.composite
def _events(draw: st.DrawFn) -> list[tuple[EventType, dict[str, Any]]]:
    events = []
    at = BASE
    for n in range(draw(st.integers(1, 14))):
        event_type = draw(st.sampled_from(list(KINDS)))
        at += dt.timedelta(minutes=draw(st.sampled_from([1, 7, 90, 60 * 20, 60 * 24 * 9])))
        subscriber = draw(st.sampled_from(SUBSCRIBERS))
        fields = draw(KINDS[event_type])
        event = {"event_id": f"e-{n}", "subscriber_id": subscriber, "occurred_at": at.isoformat()}
        events.append((event_type, {**event, **fields}))
    return events


@cache
def _rules() -> Any:
    return load_rules()


@settings(FUZZ, max_examples=60)  # ~20 ms an example: the detector runs each sequence
@given(_events())
def test_every_task_the_detector_makes_is_valid(
    events: list[tuple[EventType, dict[str, Any]]],
) -> None:
    last = dt.datetime.fromisoformat(events[-1][1]["occurred_at"])
    result = run_pipeline(events, _rules(), until=last + dt.timedelta(days=3))
    assert not result.dead_letters, result.dead_letters  # the events are valid
    validator = _validator("service-task.schema.json")
    for task in result.tasks:
        sent = orjson.loads(task_bytes(published(task)))
        errors = list(validator.iter_errors(sent))
        assert not errors, (best_match(errors), sent)
