"""`schemas/` is generated from the models, is up to date, and is valid.

- the repository's `schemas/` equals `render_schemas()` (else: run `moments schemas export`);
- each JSON Schema accepts a realistic value and rejects broken ones;
- `asyncapi.yaml` validates against the official AsyncAPI 3.0.0 JSON Schema from the npm
  package `@asyncapi/specs` (installed under `.cache/asyncapi-specs`, see ASYNCAPI_SPECS_CMD).
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator
from jsonschema.exceptions import best_match
from pydantic import BaseModel, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from ruamel.yaml import YAML

from moments.cli import main
from moments.decoding import decode
from moments.models import EVENT_MODELS, EventType, ServiceTask
from moments.outcomes import decode_outcome
from moments.records import REASONS_EXPLAINED, DeadLetter, RawRecord, RejectReason
from moments.schemas import (
    ASYNCAPI_FILE,
    DLQ_HEADER_PREFIX,
    EXAMPLES,
    JSON_SCHEMA_DIALECT,
    SCHEMA_FILES,
    asyncapi_document,
    check_schemas,
    example,
    example_task,
    export_schemas,
    json_schemas,
    render_schemas,
)
from moments.settings import Topics

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = ROOT / "schemas"
ASYNCAPI_SPECS_CMD = "npm install --prefix .cache/asyncapi-specs @asyncapi/specs@6"
ASYNCAPI_SPEC = ROOT / ".cache/asyncapi-specs/node_modules/@asyncapi/specs/schemas/3.0.0.json"

MODEL_OF_FILE: dict[str, type[BaseModel]] = {name: m for name, (m, _) in SCHEMA_FILES.items()}
FILE_OF_MODEL: dict[str, str] = {m.__name__: name for name, m in MODEL_OF_FILE.items()}


def _without(value: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k not in keys}


def _with(value: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**value, **changes}


@cache
def _made(model: str) -> dict[str, Any]:
    value: dict[str, Any] = example(model)
    return value


def _example(model: str) -> dict[str, Any]:
    """A copy of the model's example. ServiceTask's runs the packaged catalog over two
    events (~1 CPU-s): made once per process, and not at import, which each of `make
    test`'s workers pays for every file it collects."""
    return copy.deepcopy(_made(model))


# Realistic values written here, independently of the module's own examples.
GOOD: list[tuple[str, dict[str, Any]]] = [
    (
        "topup-event.schema.json",
        {
            "event_id": "ocs-7781-20261122",
            "subscriber_id": "13912345678",
            "occurred_at": "2026-11-22T21:47:13.250+08:00",
            "amount": 100,
            "channel": "bank",
            "x_upstream_batch": "b-991",  # unknown extra fields are kept, not rejected
        },
    ),
    (
        "roaming-event.schema.json",
        {
            "event_id": "hlr-22-991",
            "subscriber_id": "8613912345678",
            "occurred_at": "2026-11-23T01:02:03Z",
            "region": "SZ",
            "country": "TH",
            "roaming_type": "international",
            "utc_offset_minutes": 420,
        },
    ),
    (
        "complaint-event.schema.json",
        {
            "event_id": "crm-9-3",
            "subscriber_id": "13912345678",
            "occurred_at": "2026-11-22T09:00:00+08:00",
            "complaint_id": "C-2026-118",
            "category": "billing",
            "severity": 3,
            "status": "resolved",
        },
    ),
    (
        "usage-event.schema.json",
        {
            "event_id": "cdr-v-1",
            "subscriber_id": "13912345678",
            "occurred_at": "2026-11-22T09:00:00+08:00",
            "kind": "voice",
            "quantity": 185,
            "charge": 0.45,
            "counterparty": "02584561234",
        },
    ),
    (
        "usage-event.schema.json",
        {
            "event_id": "crm-bq-1",
            "subscriber_id": "13912345678",
            "occurred_at": "2026-11-22T09:00:00+08:00",
            "kind": "bill_query",
        },
    ),
    (
        "profile-event.schema.json",
        {
            "event_id": "crm-p-1",
            "subscriber_id": "13912345678",
            "occurred_at": "2026-11-22T09:00:00+08:00",
            "birthday": "1990-02-28",
            "star_level": 7,
        },
    ),
    (
        "service-task.schema.json",
        {
            "task_id": "6f1c0e2a9b7d4c35a1e0b2c3d4e5f607",
            "subscriber_id": "13912345678",
            "moment": {
                "family": "anomaly",
                "type": "spend_spike",
                "rule_id": "spend_spike",
                "rule_version": 3,
                "description": "Spend 5x the 30-day baseline",
                "params": {"baseline": "12.40", "current": "61.00"},
            },
            "priority": 1,
            "channel": "outbound_call",
            "action": "call_check_bill",
            "triggered_at": "2026-11-22T09:00:00+08:00",
            "created_at": "2026-11-22T09:00:02+08:00",
            "deliver_after": "2026-11-22T09:00:02+08:00",
            "expires_at": "2026-11-22T21:00:00+08:00",
            "evidence": ["cdr-v-1", "cdr-v-2"],
            "deferred": None,
        },
    ),
    (
        "task-outcome.schema.json",
        {
            "task_id": "6f1c0e2a9b7d4c35a1e0b2c3d4e5f607",
            "subscriber_id": "13912345678",
            "status": "unreachable",
            "occurred_at": "2026-11-22T10:00:00+08:00",
        },
    ),
]

BAD: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
    (
        "topup-event.schema.json",
        "subscriber_id with letters",
        lambda: _with(_example("TopUpEvent"), subscriber_id="1380013800O"),
    ),
    (
        "topup-event.schema.json",
        "missing occurred_at",
        lambda: _without(_example("TopUpEvent"), "occurred_at"),
    ),
    ("topup-event.schema.json", "amount not > 0", lambda: _with(_example("TopUpEvent"), amount=0)),
    (
        "roaming-event.schema.json",
        "country not alpha-2",
        lambda: _with(_example("RoamingEvent"), country="JPN"),
    ),
    (
        "roaming-event.schema.json",
        "unknown roaming_type",
        lambda: _with(_example("RoamingEvent"), roaming_type="satellite"),
    ),
    (
        "complaint-event.schema.json",
        "severity out of range",
        lambda: _with(_example("ComplaintEvent"), severity=4),
    ),
    (
        "usage-event.schema.json",
        "unknown kind",
        lambda: _with(_example("UsageEvent"), kind="mms"),
    ),
    (
        "usage-event.schema.json",
        "subscriber_id too short",
        lambda: _with(_example("UsageEvent"), subscriber_id="1234"),
    ),
    (
        "profile-event.schema.json",
        "star_level out of range",
        lambda: _with(_example("ProfileEvent"), star_level=8),
    ),
    (
        "profile-event.schema.json",
        "missing event_id",
        lambda: _without(_example("ProfileEvent"), "event_id"),
    ),
    (
        "service-task.schema.json",
        "unknown channel",
        lambda: _with(_example("ServiceTask"), channel="email"),
    ),
    (
        "service-task.schema.json",
        "priority out of range",
        lambda: _with(_example("ServiceTask"), priority=0),
    ),
    (
        "service-task.schema.json",
        "unknown moment family",
        lambda: _with(
            _example("ServiceTask"), moment={**_example("ServiceTask")["moment"], "family": "x"}
        ),
    ),
    (
        "service-task.schema.json",
        "deferred without until",
        lambda: _with(_example("ServiceTask"), deferred={"reason": "quiet_hours"}),
    ),
    (
        "task-outcome.schema.json",
        "unknown status",
        lambda: _with(_example("TaskOutcome"), status="done"),
    ),
    (
        "task-outcome.schema.json",
        "subscriber_id is a number",
        lambda: _with(_example("TaskOutcome"), subscriber_id=13800138000),
    ),
    (
        "task-outcome.schema.json",
        "a line break in task_id",
        lambda: _with(_example("TaskOutcome"), task_id="abc\n[x] [CRITICAL] forged"),
    ),
    (
        "task-outcome.schema.json",
        "a line break after task_id",
        lambda: _with(_example("TaskOutcome"), task_id=EXAMPLES["TaskOutcome"]["task_id"] + "\n"),
    ),
    (
        "task-outcome.schema.json",
        "task_id not 32 lowercase hex",
        lambda: _with(_example("TaskOutcome"), task_id=EXAMPLES["TaskOutcome"]["task_id"].upper()),
    ),
]


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


# --- drift -----------------------------------------------------------------------------


def test_schemas_dir_is_up_to_date() -> None:
    stale = check_schemas(SCHEMAS_DIR)
    assert not stale, (
        f"schemas/ is out of date ({', '.join(stale)}): it is generated from "
        "src/moments/models.py; run `moments schemas export` and commit the result"
    )


def test_rendering_is_deterministic_and_complete() -> None:
    first, second = render_schemas(), render_schemas()
    assert first == second
    assert set(first) == {*SCHEMA_FILES, ASYNCAPI_FILE}
    for name, text in first.items():
        assert text.endswith("\n"), name
        assert not text.endswith("\n\n"), name
        if name.endswith(".json"):
            assert json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n" == text


def test_export_and_check_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    assert sorted(check_schemas(out)) == sorted(render_schemas())  # nothing there yet
    (tmp_path / "schemas").mkdir()
    (out / "old-event.schema.json").write_text("{}\n", encoding="utf-8")
    (out / "README.md").write_text("kept\n", encoding="utf-8")

    written = export_schemas(out)

    assert sorted(p.name for p in written) == sorted(render_schemas())
    assert not (out / "old-event.schema.json").exists()
    assert (out / "README.md").exists()
    assert check_schemas(out) == []

    (out / "task-outcome.schema.json").write_text("{}\n", encoding="utf-8")
    (out / "usage-event.schema.json").unlink()
    (out / "gone.schema.json").write_text("{}\n", encoding="utf-8")
    assert check_schemas(out) == [
        "gone.schema.json",
        "task-outcome.schema.json",
        "usage-event.schema.json",
    ]
    export_schemas(out)
    assert check_schemas(out) == []


# --- JSON Schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_json_schema_is_self_contained_2020_12(name: str) -> None:
    schema = json_schemas()[name]
    assert schema["$schema"] == JSON_SCHEMA_DIALECT
    assert schema["$id"].endswith("/" + name)
    assert schema["title"] == MODEL_OF_FILE[name].__name__
    assert schema["description"]
    Draft202012Validator.check_schema(schema)
    refs = [part.split('"')[0] for part in json.dumps(schema).split('"$ref": "')[1:]]
    assert all(ref.startswith("#/$defs/") for ref in refs), refs  # no outside references
    for ref in refs:
        assert ref.removeprefix("#/$defs/") in schema["$defs"]


@pytest.mark.parametrize(("name", "value"), GOOD)
def test_json_schema_accepts_valid_value(name: str, value: dict[str, Any]) -> None:
    MODEL_OF_FILE[name].model_validate_json(json.dumps(value))
    errors = list(_validator(name).iter_errors(value))
    assert not errors, best_match(errors)


@pytest.mark.parametrize(("model", "name"), list(FILE_OF_MODEL.items()))
def test_json_schema_accepts_the_example(model: str, name: str) -> None:
    value = _example(model)
    MODEL_OF_FILE[name].model_validate_json(json.dumps(value))  # the example really is valid
    errors = list(_validator(name).iter_errors(value))
    assert not errors, best_match(errors)


@pytest.mark.parametrize(("name", "why", "make"), BAD, ids=[f"{n}-{w}" for n, w, _ in BAD])
def test_json_schema_rejects_invalid_value(
    name: str, why: str, make: Callable[[], dict[str, Any]]
) -> None:
    value = make()
    with pytest.raises(ValidationError):
        MODEL_OF_FILE[name].model_validate_json(json.dumps(value))
    assert list(_validator(name).iter_errors(value)), f"{name} accepted a value with {why}"


@pytest.mark.parametrize("field", ["task_id", "retry_of"])
def test_the_task_schema_describes_task_ids_as_the_detector_makes_them(field: str) -> None:
    """32 lowercase hex (a blake2b digest): a consumer's validator may rely on it. The
    model does not check it, as the detector makes every task it serialises."""
    validator = _validator("service-task.schema.json")
    made = "90bd947c9fdac044a8b53075800c7701"
    assert not list(validator.iter_errors(_with(_example("ServiceTask"), **{field: made})))
    for other in ("t-0001", made.upper(), made + "0"):
        assert list(validator.iter_errors(_with(_example("ServiceTask"), **{field: other})))


def test_the_task_schema_describes_related_task_ids_as_the_detector_makes_them() -> None:
    """A merged moment's `task_id` in `related` is a task id as `task_id` and `moment_id`
    are (docs/consuming-tasks.md: a consumer de-duplicating per moment uses them side by
    side), yet its schema took any string."""
    validator = _validator("service-task.schema.json")
    task = _example("ServiceTask")
    made = "90bd947c9fdac044a8b53075800c7702"
    related = {
        key: task[key] for key in ("moment", "priority", "channel", "action", "triggered_at")
    }
    related["evidence"] = ["ev-1"]
    assert not list(validator.iter_errors({**task, "related": [{**related, "task_id": made}]}))
    for other in ("t-0001", made.upper(), made + "0"):
        merged = {**task, "related": [{**related, "task_id": other}]}
        assert list(validator.iter_errors(merged)), other


# What producers sent in a review, where the schemas and the worker disagreed (the worker
# read numbers as times and text as numbers; the schemas took any text for money).
AGREE: list[tuple[EventType, dict[str, Any], bool]] = [
    (EventType.TOPUP, {}, True),
    (EventType.TOPUP, {"occurred_at": 1764900000}, False),
    (EventType.TOPUP, {"occurred_at": "2026-11-22T21:47:13"}, False),
    (EventType.TOPUP, {"amount": "49.90"}, True),
    *((EventType.TOPUP, {"amount": bad}, False) for bad in ("fifty", "-5", "0", "NaN", "1,000")),
    (EventType.TOPUP, {"balance_after": "-3.50"}, True),
    (EventType.COMPLAINT, {"severity": "1"}, False),
    (EventType.PROFILE, {"star_level": "5"}, False),
    (EventType.PROFILE, {"joined_on": "2020-01-01T00:00:00"}, False),
    (EventType.PROFILE, {"joined_on": "2020-01-01", "timezone": "Europe/London"}, True),
    (EventType.USAGE, {"quantity": "1000"}, False),
    (EventType.ROAMING, {"utc_offset_minutes": "540"}, False),
    (EventType.ROAMING, {"timezone": "+09:00"}, False),
    # Forms the worker read and the schemas refused, or the other way round (left over
    # from that review): every one now has one verdict.
    (EventType.TOPUP, {"occurred_at": "2026-11-22T21:47:13+0800"}, False),
    (EventType.TOPUP, {"occurred_at": "2026-11-22 21:47:13+08:00"}, False),
    (EventType.TOPUP, {"occurred_at": "1764900000"}, False),
    (EventType.TOPUP, {"occurred_at": "2026-11-22t21:47:13.250z"}, True),
    (EventType.TOPUP, {"amount": "1e3"}, False),
    (EventType.TOPUP, {"amount": 1e3}, True),
    (EventType.TOPUP, {"balance_after": "-1E2"}, False),
    (EventType.COMPLAINT, {"severity": 1.0}, True),
    (EventType.COMPLAINT, {"severity": 1.5}, False),
    (EventType.PROFILE, {"star_level": 5.0}, True),
    (EventType.PROFILE, {"birthday": "02-29"}, True),
    *((EventType.PROFILE, {"birthday": bad}, False) for bad in ("02-30", "04-31", "13-01")),
    (EventType.PROFILE, {"birthday": "1990-07-14"}, True),
    (EventType.PROFILE, {"birthday": "2000-02-29"}, True),
    *((EventType.PROFILE, {"birthday": bad}, False) for bad in ("1990-02-30", "2023-02-29")),
    (EventType.PROFILE, {"joined_on": "2023-02-29"}, False),
    # A producer review: times the schema let through and the worker refused, or that
    # crashed it (year 1 and 9999); money and lists beyond what the state can hold.
    *(
        (EventType.TOPUP, {"occurred_at": bad}, False)
        for bad in (
            "2026-13-45T10:00:00+08:00",
            "2026-11-22T24:00:00+08:00",
            "2026-11-22T23:59:60+08:00",
            "2026-11-22T10:00:00+99:99",
            "2026-02-29T10:00:00+08:00",
            "0001-01-01T00:00:00+08:00",
            "9999-12-31T23:59:59-14:00",
            "1969-12-31T23:59:59Z",
        )
    ),
    (EventType.TOPUP, {"occurred_at": "2028-02-29T10:00:00+08:00"}, True),
    (EventType.TOPUP, {"occurred_at": "1970-01-01T05:00:00+08:00"}, True),
    (EventType.TOPUP, {"occurred_at": "2099-12-31T23:59:59-14:00"}, True),
    (EventType.TOPUP, {"occurred_at": "2150-01-05T10:00:00+08:00"}, True),
    (EventType.TOPUP, {"occurred_at": "9898-12-31T23:59:59-23:59"}, True),
    (EventType.TOPUP, {"occurred_at": "9899-01-01T00:00:00+14:00"}, False),
    # Forms of other standards and libraries a producer walk-through sent; -00:00 (UTC,
    # local offset unknown) is the UTC instant.
    *(
        (EventType.TOPUP, {"occurred_at": bad}, False)
        for bad in (
            "2026-11-22T10:00:00,123+08:00",
            "2026-11-22T10:00:00 +08:00",
            "Sun, 22 Nov 2026 10:00:00 +0800",
            "2026-W47-7T10:00:00+08:00",
            "2026-326T10:00:00+08:00",
        )
    ),
    (EventType.TOPUP, {"occurred_at": "2026-11-22T02:00:00-00:00"}, True),
    (EventType.TOPUP, {"amount": "999999999.99"}, True),
    *((EventType.TOPUP, {"amount": bad}, False) for bad in ("1000000000", 1e9, "9" * 400)),
    (EventType.TOPUP, {"balance_after": "-999999999"}, True),
    (EventType.TOPUP, {"balance_after": "4.8125"}, True),
    (EventType.TOPUP, {"balance_after": "4.81255"}, False),
    (EventType.TOPUP, {"balance_after": -1e9}, False),
    (EventType.TOPUP, {"channel": "app\r\nWIN: http://x.io"}, False),
    (EventType.TOPUP, {"channel": "\u202eppa.evil"}, False),
    (EventType.TOPUP, {"channel": "zero\u200bwidth"}, False),
    (EventType.TOPUP, {"channel": "支付宝 app"}, True),
    (EventType.USAGE, {"quantity": 1e15}, True),
    (EventType.USAGE, {"quantity": 1e300}, False),
    (EventType.PROFILE, {"quiet_hours": ["22:00-07:00"] * 8}, True),
    (EventType.PROFILE, {"quiet_hours": ["22:00-07:00"] * 9}, False),
    # A producer's: hours written as minutes put quiet hours abroad hours off.
    *((EventType.ROAMING, {"utc_offset_minutes": ok}, True) for ok in (480, -570, 345, 840)),
    *((EventType.ROAMING, {"utc_offset_minutes": bad}, False) for bad in (8, -5, 100, -840)),
    # Found by generating values from the schemas (hypothesis-jsonschema, a one-off run):
    # JSON numbers the schema took and rounding carried past the bounds; Python's `\s`
    # and `$` (the jsonschema package's) read otherwise.
    *((EventType.TOPUP, {"amount": bad}, False) for bad in (5e-324, 0.00004, 999999999.99999)),
    (EventType.TOPUP, {"amount": 0.0001}, True),
    (EventType.TOPUP, {"balance_after": -999999999.99999}, False),
    (EventType.TOPUP, {"balance_after": -999999999.9999}, True),
    *((EventType.PROFILE, {day: "\u001f"}, False) for day in ("contract_end", "birthday")),
    *((EventType.PROFILE, {day: " \u3000\n"}, True) for day in ("joined_on", "birthday")),
    (EventType.TOPUP, {"occurred_at": "2026-11-22T21:47:13+08:00\n"}, False),
    (EventType.TOPUP, {"subscriber_id": "13800138000\n"}, False),
    (EventType.TOPUP, {"channel": "app\n"}, False),
    (EventType.PROFILE, {"birthday": "07-14\n"}, False),
    (EventType.USAGE, {"imei": "356938035643809\n"}, False),
    # Found by mutating the examples (test_schema_fuzz.py): a lone UTF-16 surrogate escape,
    # half an emoji as JavaScript writes a string cut in one, passed the text patterns.
    *((EventType.TOPUP, {"channel": "app \ud83d" + c}, False) for c in ("", "x")),
    (EventType.COMPLAINT, {"region": "NJ\udc00"}, False),
    (EventType.PROFILE, {"opt_out": ["email\udfff"]}, False),
    (EventType.TOPUP, {"channel": "app \U0001f600"}, True),
    # Found walking as a CRM producer: an opt-out the worker refuses as one of its
    # channels written otherwise (an opt-out that would be lost) passed the schema.
    *(
        (EventType.PROFILE, {"opt_out": ["email", bad]}, False)
        for bad in ("SMS", " sms", "Outbound-Call", "call", "in-app push", "Text message")
    ),
    *(
        (EventType.PROFILE, {"opt_out": ok}, True)
        for ok in (["sms", "app_push"], ["email", "wechat"], ["telephone"], ["smsc-2"], [])
    ),
    # Letters whose casefold is ASCII (a long s, a sharp s, a ligature, a Kelvin sign):
    # the worker read them as channel words and refused the profile, the schema took it.
    *(
        (EventType.PROFILE, {"opt_out": ["email", odd]}, True)
        for odd in ("\u017fms", "me\u00dfage", "noti\ufb01cation", "telemar\u212aeting")
    ),
]


@pytest.mark.parametrize(("event_type", "change", "valid"), AGREE)
def test_the_schema_and_the_worker_agree(
    event_type: EventType, change: dict[str, Any], valid: bool
) -> None:
    model = EVENT_MODELS[event_type]
    name = FILE_OF_MODEL[model.__name__]
    value = {**_example(model.__name__), **change}
    schema_ok = not list(_validator(name).iter_errors(value))
    record = RawRecord("t", 0, 0, value["subscriber_id"].encode(), json.dumps(value).encode())
    decoded = decode(record, event_type)
    worker_ok = not isinstance(decoded, DeadLetter)
    assert (schema_ok, worker_ok) == (valid, valid), decoded


@pytest.mark.parametrize(
    ("occurred_at", "valid"),
    [
        ("2026-11-22T21:47:13+08:00", True),
        ("2026-11-22T13:47:13.5Z", True),
        ("2026-11-22T21:47:13+0800", False),
        ("2026-11-22 21:47:13+08:00", False),
        ("1764900000", False),
        (1764900000, False),
    ],
)
def test_the_outcome_schema_and_the_worker_agree_on_times(
    occurred_at: str | int, valid: bool
) -> None:
    value = {**_example("TaskOutcome"), "occurred_at": occurred_at}
    schema_ok = not list(_validator("task-outcome.schema.json").iter_errors(value))
    key = value["subscriber_id"].encode()
    record = RawRecord("t", 0, 0, key, json.dumps(value).encode())
    worker_ok = not isinstance(decode_outcome(record), DeadLetter)
    assert (schema_ok, worker_ok) == (valid, valid)


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({"note": "Called back \U0001f600"}, True),
        ({"note": "Customer said \ud83d"}, True),  # a note cut in the middle of an emoji
        ({"agent_id": "agent-\udc00"}, True),
        ({"x_ui": {"draft": ["\ud800"]}}, True),
        ({"task_id": "90bd947c9fdac044a8b53075800c770\ud800"}, False),
    ],
)
def test_the_outcome_schema_and_the_worker_agree_on_lone_surrogates(
    change: dict[str, Any], valid: bool
) -> None:
    """Where the schema takes any text, a lone surrogate escape (as JavaScript writes a
    string cut in an emoji) does not cost the outcome: it reads as U+FFFD. The worker's
    parser refused the whole outcome, and outcomes are not replayed."""
    value = {**_example("TaskOutcome"), **change}
    schema_ok = not list(_validator("task-outcome.schema.json").iter_errors(value))
    key = value["subscriber_id"].encode()
    decoded = decode_outcome(RawRecord("t", 0, 0, key, json.dumps(value).encode()))
    assert (schema_ok, not isinstance(decoded, DeadLetter)) == (valid, valid), decoded
    if valid:
        assert not isinstance(decoded, DeadLetter)
        text = json.dumps(decoded.model_dump(mode="json"), ensure_ascii=False)
        assert all(not "\ud800" <= c <= "\udfff" for c in text)


# --- AsyncAPI --------------------------------------------------------------------------


def _load_yaml(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(io.StringIO(text))


@cache
def _asyncapi_validator() -> Draft7Validator:
    if not ASYNCAPI_SPEC.is_file():
        pytest.fail(
            f"the official AsyncAPI 3.0.0 JSON Schema is missing ({ASYNCAPI_SPEC}); "
            f"install it from the repository root with: {ASYNCAPI_SPECS_CMD}"
        )
    spec = json.loads(ASYNCAPI_SPEC.read_text(encoding="utf-8"))
    # The bundle keeps every sub-schema under `definitions`, keyed by its own `$id`, and
    # refers to them by that absolute URI. Register each as a resource; nothing is fetched
    # (an unknown reference raises instead of silently passing).
    resources = [(spec["$id"], DRAFT7.create_resource(spec))]
    for uri, sub in spec["definitions"].items():
        resources.append((uri, Resource.from_contents(sub, default_specification=DRAFT7)))
    registry: Registry[Any] = Registry().with_resources(resources)
    Draft7Validator.check_schema(spec)
    return Draft7Validator(spec, registry=registry)


def _asyncapi_errors(document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _asyncapi_validator().iter_errors(document)
    ]


def test_the_task_example_is_a_task_the_code_made() -> None:
    """The AsyncAPI ServiceTask example was written by hand: other times than real tasks
    have, and no `attempt`, `quiet_hours`, `related`, `retry_of` or `risk` (dispatch
    consumer review). It is the task the packaged catalog makes of the example events,
    with every field a task has, valid against the schema."""
    task = example_task()
    # but `counted`: dispatch's own while a task waits, never published
    assert set(task) == set(ServiceTask.model_fields) - {"counted"}
    assert not list(_validator("service-task.schema.json").iter_errors(task))
    assert ServiceTask.model_validate(task).model_dump(mode="json") == task
    assert task["deferred"]["reason"] == "quiet_hours"  # 07:05 in Tokyo: quiet hours
    assert task["quiet_hours"] is not None
    assert task["risk"] is not None
    document = _load_yaml((SCHEMAS_DIR / ASYNCAPI_FILE).read_text(encoding="utf-8"))
    [shown] = document["components"]["messages"]["ServiceTask"]["examples"]
    assert shown["payload"] == task


def test_the_withdrawal_and_outcome_examples_are_of_the_task_example() -> None:
    """A dispatch consumer reads the AsyncAPI examples side by side: the TaskWithdrawal
    example named the ServiceTask example's `task_id` with another channel
    (`outbound_call`: an opt-out of calls withdraws no SMS task) and another `expires_at`.
    The withdrawal is that task's, by an SMS opt-out after the task went out (and after
    the outcome: a withdrawal may come after the consumer acted), its times on the
    change's clock; the outcome is that task's too."""
    messages = asyncapi_document()["components"]["messages"]
    [task] = (e["payload"] for e in messages["ServiceTask"]["examples"])
    [notice] = (e["payload"] for e in messages["TaskWithdrawal"]["examples"])
    [outcome] = (e["payload"] for e in messages["TaskOutcome"]["examples"])
    assert (
        notice["task_id"],
        notice["subscriber_id"],
        notice["channel"],
        notice["moment_type"],
        notice["expires_at"],
    ) == (
        task["task_id"],
        task["subscriber_id"],
        task["channel"],
        task["moment"]["type"],
        task["expires_at"],
    )
    assert notice["reason"] == "opt_out"
    assert (outcome["task_id"], outcome["subscriber_id"]) == (
        task["task_id"],
        task["subscriber_id"],
    )
    at = {k: dt.datetime.fromisoformat(v) for k, v in notice.items() if k.endswith("_at")}
    published = dt.datetime.fromisoformat(task["deliver_after"])
    acted = dt.datetime.fromisoformat(outcome["occurred_at"])
    assert published < acted < at["occurred_at"] < at["withdrawn_at"] < at["expires_at"]
    assert at["occurred_at"].utcoffset() == at["withdrawn_at"].utcoffset()


@pytest.mark.parametrize("name", ["ServiceTask", "TaskWithdrawal"])
def test_the_detectors_records_require_their_content_type_header(name: str) -> None:
    """Every task and withdrawal record carries `content-type: application/json` (both
    sinks write it on each); the AsyncAPI listed the header without requiring it, so a
    consumer validating a record's headers took one without it."""
    headers = asyncapi_document()["components"]["messages"][name]["headers"]
    validator = Draft202012Validator(headers)
    assert validator.is_valid({"content-type": "application/json"})
    assert not validator.is_valid({})
    assert not validator.is_valid({"content-type": "text/plain"})


@pytest.mark.parametrize("field", ["tasks", "task_withdrawals", "task_outcomes"])
def test_a_dispatch_consumers_topics_say_repeats_order_and_answers(field: str) -> None:
    """The AsyncAPI named the dispatch topics and nothing more: a consumer working from it
    learnt nothing of repeats (a task may come twice under one id), of the order between a
    task and its withdrawal, or of how an outcome is keyed. Each says what to do by task id
    and points to the page."""
    description = asyncapi_document()["channels"][field]["description"]
    assert "task_id" in description
    assert "(docs/consuming-tasks.md" in description


def test_asyncapi_file_matches_document() -> None:
    loaded = _load_yaml((SCHEMAS_DIR / ASYNCAPI_FILE).read_text(encoding="utf-8"))
    assert loaded == asyncapi_document()  # YAML round-trips (dates stay strings, ...)


def test_asyncapi_is_valid_against_official_schema() -> None:
    loaded = _load_yaml((SCHEMAS_DIR / ASYNCAPI_FILE).read_text(encoding="utf-8"))
    assert loaded["asyncapi"] == "3.0.0"
    assert _asyncapi_errors(loaded) == []


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split("/")
    node = doc
    for part in parents:
        node = node[part]
    node[last] = value
    return doc


BROKEN: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("wrong version", lambda d: _set(d, "asyncapi", "2.6.0")),
    ("no info", lambda d: d.pop("info")),
    ("action 'publish'", lambda d: _set(d, "operations/send_tasks/action", "publish")),
    ("operation without channel", lambda d: d["operations"]["send_tasks"].pop("channel")),
    ("unknown channel field", lambda d: _set(d, "channels/tasks/topic", "moments.tasks")),
    ("address not a string", lambda d: _set(d, "channels/tasks/address", 42)),
    (
        "cleanup.policy not a list",
        lambda d: _set(
            d, "channels/profile/bindings/kafka/topicConfiguration/cleanup.policy", "compact"
        ),
    ),
    (
        "bad kafka binding version",
        lambda d: _set(d, "components/messages/TopUpEvent/bindings/kafka/bindingVersion", "9"),
    ),
    (
        "payload schema 'type' invalid",
        lambda d: _set(d, "components/schemas/TopUpEvent/type", "record"),
    ),
]


@pytest.mark.parametrize(("why", "breaks"), BROKEN, ids=[w for w, _ in BROKEN])
def test_asyncapi_validation_really_runs(why: str, breaks: Callable[[dict[str, Any]], Any]) -> None:
    document = copy.deepcopy(asyncapi_document())
    breaks(document)
    assert _asyncapi_errors(document), f"a document with {why} passed validation"


def test_asyncapi_topics_operations_and_bindings() -> None:
    doc = asyncapi_document()
    topics = Topics()
    addresses = {ch["address"] for ch in doc["channels"].values()}
    assert addresses == set(topics.model_dump().values())
    actions = {
        doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]["address"]: op["action"]
        for op in doc["operations"].values()
    }
    assert actions == {
        topics.topup: "receive",
        topics.roaming: "receive",
        topics.complaint: "receive",
        topics.usage: "receive",
        topics.profile: "receive",
        topics.task_outcomes: "receive",
        topics.tasks: "send",
        topics.task_withdrawals: "send",
        topics.deadletter: "send",
    }
    # Every operation message lives on its channel; every $ref resolves in the document.
    for op in doc["operations"].values():
        channel_id = op["channel"]["$ref"].rsplit("/", 1)[1]
        for ref in op["messages"]:
            assert ref["$ref"].startswith(f"#/channels/{channel_id}/messages/")
    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/')[1:]}:
        node: Any = doc
        for part in ref.split("/"):
            node = node[part]

    profile = doc["channels"]["profile"]
    kafka = profile["bindings"]["kafka"]["topicConfiguration"]
    assert kafka["cleanup.policy"] == ["compact"]
    tombstone = doc["components"]["messages"]["ProfileTombstone"]
    assert tombstone["payload"] == {"type": "null"}
    for name, message in doc["components"]["messages"].items():
        key = message["bindings"]["kafka"]["key"]
        if name != "DeadLetter":
            assert key["type"] == "string"
            assert key["pattern"] == "^[0-9]{5,20}$"


def test_asyncapi_dead_letter_headers() -> None:
    message = asyncapi_document()["components"]["messages"]["DeadLetter"]
    headers = message["headers"]
    expected = {
        f"{DLQ_HEADER_PREFIX}{suffix}"
        for suffix in (
            "topic",
            "partition",
            "offset",
            "exception.class.name",
            "exception.message",
            "reason",
            "timestamp",
        )
    }
    optional = {f"{DLQ_HEADER_PREFIX}original.{name}" for name in ("timestamp", "size")}
    assert set(headers["properties"]) == expected | optional
    assert set(headers["required"]) == expected
    assert message["contentType"] == "application/octet-stream"
    example = message["examples"][0]
    assert not list(Draft7Validator(headers).iter_errors(example["headers"]))
    assert list(Draft7Validator(headers).iter_errors({**example["headers"], expected.pop(): 1}))


def test_asyncapi_dead_letter_example_is_what_a_worker_writes_for_its_payload() -> None:
    """The example's message was pydantic's "String should match pattern '^[0-9]{5,20}$'",
    words no dead letter holds: a producer matching on the example, or learning from it
    what a refusal says, read another than the worker's (producer re-check)."""
    example = asyncapi_document()["components"]["messages"]["DeadLetter"]["examples"][0]
    headers = example["headers"]
    origin = f"{DLQ_HEADER_PREFIX}"
    record = RawRecord(
        headers[f"{origin}topic"],
        int(headers[f"{origin}partition"]),
        int(headers[f"{origin}offset"]),
        json.loads(example["payload"])["subscriber_id"].encode(),
        example["payload"].encode(),
    )
    refused = decode(record, EventType.TOPUP)
    assert isinstance(refused, DeadLetter)
    assert headers[f"{origin}exception.message"] == refused.message
    assert headers[f"{origin}exception.class.name"] == refused.error_class
    assert headers[f"{origin}reason"] == refused.reason.value


def test_asyncapi_payloads_are_the_json_schemas() -> None:
    """Message examples validate both against the embedded component schema (refs into
    `#/components/schemas/` resolve) and against the standalone file."""
    doc = asyncapi_document()
    registry: Registry[Any] = Registry().with_resource(
        "urn:moments:asyncapi", DRAFT7.create_resource(doc)
    )
    files = json_schemas()
    for name, message in doc["components"]["messages"].items():
        if name not in FILE_OF_MODEL:
            continue
        file_schema = files[FILE_OF_MODEL[name]]
        component = doc["components"]["schemas"][name]
        assert message["payload"] == {"$ref": f"#/components/schemas/{name}"}
        assert component["title"] == file_schema["title"]
        assert component["properties"].keys() == file_schema["properties"].keys()
        assert component["required"] == file_schema["required"]
        payload = message["examples"][0]["payload"]
        embedded = Draft7Validator(
            {"$ref": f"urn:moments:asyncapi#/components/schemas/{name}"}, registry=registry
        )
        assert not list(embedded.iter_errors(payload)), name
        assert not list(Draft202012Validator(file_schema).iter_errors(payload)), name
        broken = _with(payload, subscriber_id="not-digits")
        assert list(embedded.iter_errors(broken)), name


def test_asyncapi_dead_letters_list_every_reason_the_worker_writes() -> None:
    """The header's known values and the message's list are the enum's: a reason added to
    `RejectReason` needs one line in `REASONS_EXPLAINED` (this test says which)."""
    message = asyncapi_document()["components"]["messages"]["DeadLetter"]
    header = message["headers"]["properties"][f"{DLQ_HEADER_PREFIX}reason"]
    assert _known_values(header) == [r.value for r in RejectReason]
    missing = [r.value for r in RejectReason if r not in REASONS_EXPLAINED]
    assert not missing, f"add a line for {missing} to moments.records.REASONS_EXPLAINED"
    for reason, text in REASONS_EXPLAINED.items():
        assert f"- `{reason.value}`: {text}" in message["description"]


def test_asyncapi_dead_letter_class_names_are_the_ones_written() -> None:
    """It said "fully qualified" with pydantic's module path; the worker writes short
    names (producer-team review)."""
    header = asyncapi_document()["components"]["messages"]["DeadLetter"]["headers"]
    described = header["properties"][f"{DLQ_HEADER_PREFIX}exception.class.name"]["description"]
    source = "".join(
        (Path(__file__).parents[2] / "src" / "moments" / name).read_text()
        for name in ("decoding.py", "refusals.py", "outcomes.py")
    )
    # The error class is the argument after the reason: `RejectReason.X, "Name"`.
    written = set(re.findall(r'RejectReason\.[A-Z_]+,\s+"([A-Za-z]+)"', source))
    written |= {"ValidationError"}  # outcomes: type(exc).__name__
    assert {"KeyMismatch", "OutOfTime", "TooLarge"} <= written
    for name in written:
        assert name in described, name
    assert "pydantic_core" not in json.dumps(header)


def _known_values(schema: dict[str, Any]) -> list[str]:
    """The values an open code's schema lists as known (`models.open_enum`)."""
    (known,) = [branch["enum"] for branch in schema["anyOf"] if "enum" in branch]
    return list(known)


def _reasons(node: Any, where: str = "") -> list[tuple[str, Any]]:
    """Every schema of a property named `reason` (or `__dlq.errors.reason`), with where."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                found += [
                    (f"{where}.{name}", schema)
                    for name, schema in value.items()
                    if name.rsplit(".", 1)[-1] == "reason"
                ]
            found += _reasons(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _reasons(item, f"{where}[{i}]")
    return found


class TestOpenReasons:
    """The contract lets new reasons be added (a withdrawal's, a deferral's, a dead
    letter's: docs/consuming-tasks.md, "Withdrawn tasks", its `reason`); the withdrawal's
    and the dead letter's schemas closed them with an `enum`, so a consumer validating with
    `schemas/` would refuse a task withdrawn, or a dead letter written, for a reason added
    later. Each lists its known values and takes any other string."""

    def test_no_reason_anywhere_is_a_closed_enum(self) -> None:
        documents = {**json_schemas(), ASYNCAPI_FILE: asyncapi_document()}
        found = [
            (f"{name}{where}", schema)
            for name, doc in documents.items()
            for where, schema in _reasons(doc)
        ]
        assert len(found) >= 5  # deferral, withdrawal (file and AsyncAPI each), dead letter
        for where, schema in found:
            assert "$ref" not in schema, where
            assert "enum" not in schema, where
            assert schema["type"] == "string", where
            assert any(b.get("enum") for b in schema["anyOf"]), where  # known ones listed

    def test_the_known_values_are_those_the_code_writes(self) -> None:
        from moments.models import DEFERRAL_REASONS, WithdrawReason

        task = json_schemas()["service-task.schema.json"]
        deferral = task["$defs"]["Deferral"]["properties"]["reason"]
        assert _known_values(deferral) == list(DEFERRAL_REASONS)
        withdrawal = json_schemas()["task-withdrawal.schema.json"]["properties"]["reason"]
        assert _known_values(withdrawal) == [r.value for r in WithdrawReason]
        components = asyncapi_document()["components"]["schemas"]
        assert "WithdrawReason" not in components  # no closed enum left for a consumer

    def test_a_consumer_validating_with_the_schemas_takes_a_new_reason(self) -> None:
        task = _example("ServiceTask")
        task["deferred"] = {"reason": "holiday_freeze", "until": "2026-11-22T08:00:00+08:00"}
        assert not list(_validator("service-task.schema.json").iter_errors(task))
        withdrawal = _with(_example("TaskWithdrawal"), reason="contract_ended")
        assert not list(_validator("task-withdrawal.schema.json").iter_errors(withdrawal))
        message = asyncapi_document()["components"]["messages"]["DeadLetter"]
        headers = {**message["examples"][0]["headers"], f"{DLQ_HEADER_PREFIX}reason": "quota"}
        assert not list(Draft7Validator(message["headers"]).iter_errors(headers))

    def test_the_models_read_what_the_schemas_take(self) -> None:
        """`TaskWithdrawal` (a consumer's in Python, `moments.models`) refused a reason its
        schema takes and the contract lets be added (a closed `WithdrawReason`), where
        `Deferral.reason` takes any string: a consumer reading the topic with the model
        stopped on a withdrawal it must act on ("do not act on it")."""
        from moments.models import Deferral, TaskWithdrawal, WithdrawReason

        new = _with(_example("TaskWithdrawal"), reason="contract_ended")
        assert not list(_validator("task-withdrawal.schema.json").iter_errors(new))
        read = TaskWithdrawal.model_validate_json(json.dumps(new))
        assert read.reason == "contract_ended"
        assert json.loads(read.model_dump_json())["reason"] == "contract_ended"
        known = TaskWithdrawal.model_validate(_with(new, reason="opt_out"))
        assert known.reason is WithdrawReason.OPT_OUT  # a known one is still the enum's
        until = "2026-11-22T08:00:00+08:00"
        assert Deferral.model_validate({"reason": "holiday_freeze", "until": until}).reason
        with pytest.raises(ValidationError):
            TaskWithdrawal.model_validate(_with(new, reason=3))

    def test_a_reason_is_still_a_string(self) -> None:
        withdrawal = _with(_example("TaskWithdrawal"), reason=3)
        assert list(_validator("task-withdrawal.schema.json").iter_errors(withdrawal))
        message = asyncapi_document()["components"]["messages"]["DeadLetter"]
        headers = {**message["examples"][0]["headers"], f"{DLQ_HEADER_PREFIX}reason": None}
        assert list(Draft7Validator(message["headers"]).iter_errors(headers))


def test_check_says_missing_and_how_to_write_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moments schemas export --check` called every file "stale" when there was none (run
    outside the repository's root): it says "missing" and names the fix."""
    out = tmp_path / "schemas"
    assert main(["schemas", "export", "--check", "--out", str(out)]) == 1
    said = capsys.readouterr().out
    assert "stale" not in said
    assert f"{out}: missing (no such folder)" in said
    assert f"moments schemas export --out {out}" in said
    assert "--out DIR" in said

    export_schemas(out)
    (out / "usage-event.schema.json").unlink()
    (out / "task-outcome.schema.json").write_text("{}\n", encoding="utf-8")
    assert main(["schemas", "export", "--check", "--out", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    fix = f"run `moments schemas export --out {out}`"
    assert lines == [
        f"{out / 'task-outcome.schema.json'}: out of date; {fix}",
        f"{out / 'usage-event.schema.json'}: missing; {fix}",
    ]
