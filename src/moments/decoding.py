"""Raw bytes -> validated event, or a dead letter that says why."""

from __future__ import annotations

import base64
import json
import math
import re
import unicodedata
from collections.abc import Collection
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, from_json

from moments.errortext import error_text
from moments.models import (
    BLANK_SPACE,
    EVENT_MODELS,
    FILLED_PATTERN,
    INVISIBLE,
    MONEY_DIGITS,
    MONEY_MAX,
    MONEY_PLACES,
    SUBSCRIBER_PATTERN,
    TEXT_PATTERN,
    TIME_EXAMPLE,
    TIME_FIELDS,
    TIME_PATTERN,
    EventType,
    InputEvent,
    time_fix,
)
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.zones import country_fix, zone_refusal

MAX_MESSAGE_BYTES = 64 * 1024
"""Larger values are refused: no event in the contract comes near it."""
SUBSCRIBER_KEY = re.compile(SUBSCRIBER_PATTERN.encode())
"""A record key that is a subscriber id (UTF-8 bytes)."""
UTF8_BOM = b"\xef\xbb\xbf"
"""How a file saved as "UTF-8 with BOM" (an editor's, an export's) begins: the file's, not
its first line's; the readers of event files drop it there, as the CSV reader does
(utf-8-sig). A record on a topic has no file: the stream refuses one starting with it."""

IDENTITY_FIELDS: dict[EventType, tuple[str, ...]] = {
    event_type: ("subscriber_id", "occurred_at", "event_id")
    + (("complaint_id",) if event_type is EventType.COMPLAINT else ())
    for event_type in EventType
}
"""The fields that say who, when and which event (a complaint: which ticket): a value that
names one of them twice is refused (`duplicate_key`), not read as its last one."""
ENVELOPE_MARKS = ("subscriber_id", "occurred_at")
"""Fields every event has, by which an event wrapped in an envelope is told (`enveloped`)."""
_QUOTED = {t: tuple(f'"{name}"'.encode() for name in names) for t, names in IDENTITY_FIELDS.items()}

_KINDS = {event_type: event_type.value for event_type in EventType}
"""Each type's dead-letter kind, looked up: `.value` is a property, two calls a record."""

TOMBSTONE = "tombstone"
"""A deletion as Kafka means it: a null value, which compaction removes with its key."""
DELETION_FORMS = (TOMBSTONE, "json_null", "empty")


def deletion_form(value: bytes | None) -> str | None:
    """How a profile record asks to forget its subscriber, if it does: a null value
    (`tombstone`), the 4 bytes `null` (`json_null`: kafka-python's JSON value_serializer
    given None writes them) or no bytes at all (`empty`). A profile update is an object, so
    the other two can mean nothing but a deletion; an erasure request is applied, not
    dead-lettered (compaction keeps such a record, and its key, as the latest value)."""
    if value is None:
        return TOMBSTONE
    if len(value) > 8:
        return None
    stripped = value.strip()
    if not stripped:
        return "empty"
    return "json_null" if stripped == b"null" else None


def stream_json(value: bytes) -> Any:
    """What the stream's parser reads in a value orjson refused, or ValueError. `decode`
    validates with pydantic's JSON parser, which also reads NaN, Infinity and -Infinity
    (Python's `json.dumps` and some JavaScript writers produce them): orjson refuses them,
    and a file reader that stopped there gave a line the worker takes another verdict.
    Nothing else orjson refuses is read (a cut line, a trailing comma, a lone surrogate)."""
    return from_json(value)


def decode(record: RawRecord, event_type: EventType) -> InputEvent | DeadLetter | None:
    """Validate one record. None means a profile deletion (forget the subscriber): a
    tombstone, JSON null or an empty value (`deletion_form`)."""
    value = record.value
    # `deletion_form` only for a value it could take (none, or 8 bytes at most): an event
    # is longer, and this runs for every record.
    size = -1 if value is None else len(value)
    if value is None or (size <= 8 and deletion_form(value) is not None):
        if event_type is EventType.PROFILE:
            if not record.key:
                return _reject(
                    record,
                    event_type,
                    RejectReason.MISSING_KEY,
                    "MissingKey",
                    "a profile tombstone needs the subscriber id as its key",
                )
            if not SUBSCRIBER_KEY.fullmatch(record.key):
                return _reject(
                    record,
                    event_type,
                    RejectReason.KEY_MISMATCH,
                    "KeyMismatch",
                    f"a profile tombstone keyed {record.key[:40]!r} forgets nobody: key it by "
                    "the subscriber id (5-20 digits, UTF-8)" + _key_form(record.key, None),
                )
            return None
        return _reject(
            record,
            event_type,
            RejectReason.EMPTY_VALUE,
            "EmptyValue",
            ("null value" if value is None else f"an empty value ({value[:8]!r})")
            + "; only telecom.profile accepts deletions (tombstones): send the event, or nothing",
        )
    if size > MAX_MESSAGE_BYTES:
        return _reject(
            record,
            event_type,
            RejectReason.TOO_LARGE,
            "TooLarge",
            too_large_said(value, "event"),
        )
    if value.startswith(UTF8_BOM):
        return _reject(record, event_type, RejectReason.INVALID_JSON, "JSONDecodeError", BOM_SAID)
    # `duplicated_field`'s work, without its call (every record passes here).
    twice = duplicated_name(value, IDENTITY_FIELDS[event_type], _QUOTED[event_type])
    if twice is not None:
        return _reject(
            record,
            event_type,
            RejectReason.DUPLICATE_KEY,
            "DuplicateKey",
            duplicate_message(twice, "event"),
        )
    try:
        # The model's validator straight from the bytes (what model_validate_json calls),
        # read as the published schemas read it: a number is no time and text no number
        # (models.Instant, Money, _integer, Strict).
        event = EVENT_MODELS[event_type].__pydantic_validator__.validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            return _reject(
                record,
                event_type,
                RejectReason.INVALID_JSON,
                "JSONDecodeError",
                not_json_said(value, errors[0]["msg"]),
            )
        said = _said(errors, OPTIONAL_FIELDS[event_type])
        detail = with_names_note("; ".join(f"{where}: {message}" for where, message in said[:5]))
        if "wrong topic" not in detail and (other := _reads_as(value, event_type)) is not None:
            detail += f" (it reads as a {other} event: sent to the wrong topic?)"
        elif (wrapped := enveloped(value, ENVELOPE_MARKS, "event")) is not None:
            detail += f" ({wrapped})"
        elif missing := [where for where, message in said[:5] if message == REQUIRED]:
            detail += f" ({required_fix(event_type, missing)})"
        return _reject(record, event_type, RejectReason.INVALID_EVENT, "ValidationError", detail)
    refused = key_problem(record, event.subscriber_id, _KINDS[event_type])
    return event if refused is None else refused


def too_large_said(value: bytes, kind: str) -> str:
    """A `too_large` dead letter's words: the size, the limit, and what such a value
    usually is, with the fix (it said the size and the limit only)."""
    head = value[:MAX_MESSAGE_BYTES]
    if head.lstrip()[:1] == b"[":
        why = f"a JSON array of {kind}s? Send each {kind} as a record of its own"
    elif re.search(rb"}\s*\n\s*{", head):
        why = f"several {kind}s joined by newlines? Send each {kind} as a record of its own"
    else:
        why = (
            f"no {kind} of the contract comes near it: leave large fields of your own out "
            "(an attachment, a base64 blob, a whole API response)"
        )
    return f"{len(value)} bytes; {kind}s are limited to {MAX_MESSAGE_BYTES}: {why}"


def duplicated_field(value: bytes, event_type: EventType) -> str | None:
    """The identity field (`IDENTITY_FIELDS`) that the value's top-level object names
    twice, if any. The parsers keep the last of equal keys, so `{"subscriber_id": "A", ...,
    "subscriber_id": "B"}` was B's event, silently."""
    return duplicated_name(value, IDENTITY_FIELDS[event_type], _QUOTED[event_type])


def duplicated_name(value: bytes, names: tuple[str, ...], quoted: tuple[bytes, ...]) -> str | None:
    """Which of `names` (`quoted`: each as `b'"name"'`) the value's top-level object names
    twice, if any. Cheap on the hot path: the raw bytes are counted for each quoted name
    (~0.15 us each); only a value where one shows twice is parsed again to be sure: a
    name as a string value or as a key of a nested object is no duplicate, and neither is
    an unknown extra field (kept out of the way). A key spelled with escapes
    (`"subscr\\u0069ber_id"`) is not looked for: no template writes one by mistake, and a
    producer means its own records."""
    for key in quoted:
        if value.count(key) > 1:
            break
    else:
        return None
    try:
        top = json.loads(value, object_pairs_hook=_Members)
    except (ValueError, RecursionError):
        return None  # not JSON: the validator says what is wrong with it
    if not isinstance(top, _Members):
        return None
    seen: set[str] = set()
    for name, _ in top:
        if name in names:
            if name in seen:
                return name
            seen.add(name)
    return None


def duplicate_message(name: str, what: str) -> str:
    """A `duplicate_key` dead letter's words: the field and the fix, never the values."""
    return (
        f'"{name}" appears twice in the {what}: which one is meant is unknown (a JSON '
        f"parser keeps the last), so the {what} is not taken; fix the producer's template "
        f"or framing (two {what}s run together?) and send it with each field once"
    )


class _Members(list[tuple[str, object]]):
    """A JSON object's members in order, equal keys included (a JSON array stays a list)."""


def key_problem(record: RawRecord, subscriber_id: str, kind: str) -> DeadLetter | None:
    """The dead letter of a record not keyed by the subscriber id its value names (a
    subscriber's records must share a partition, in order), or None. `kind`: the dead
    letter's event type (an input event's, or `task_outcome`)."""
    key = record.key
    if not key:  # None, or empty: a key the producer did not set (as for a tombstone)
        return DeadLetter(
            record,
            kind,
            RejectReason.MISSING_KEY,
            "MissingKey",
            "produce with the subscriber id as the record key",
        )
    text = key.decode("utf-8", "replace")
    if text != subscriber_id:
        return DeadLetter(
            record,
            kind,
            RejectReason.KEY_MISMATCH,
            "KeyMismatch",
            f"record key {text[:40]!r} differs from subscriber_id {subscriber_id!r}; key "
            "by subscriber_id, exactly (UTF-8, no prefix, no spaces)"
            + _key_form(key, subscriber_id),
        )
    return None


def _key_form(key: bytes, subscriber_id: str | None) -> str:
    """What a key that is a subscriber id written otherwise was made by, where its bytes
    say so (a key serializer's usual mistakes: its message only showed the bytes, a binary
    number as '\x00\x00\x00\x036\x8de\x10'); `subscriber_id`: the id it must be, or
    None for any (a tombstone's). Only on the refusal path."""
    forms: list[tuple[str, str]] = []
    if len(key) > 2 and key[:1] == key[-1:] == b'"':
        forms.append(
            (
                key[1:-1].decode("utf-8", "replace"),
                "as a JSON string, in quotes (a JSON key serializer): serialize the key as "
                "plain text (StringSerializer, str.encode)",
            )
        )
    if len(key) in (4, 8):
        forms.append(
            (
                str(int.from_bytes(key, "big", signed=True)),
                f"as a {len(key) * 8}-bit binary number (Java's "
                f"{'Long' if len(key) == 8 else 'Integer'}Serializer?): send its digits as "
                "UTF-8 text (StringSerializer)",
            )
        )
    for encoding in ("utf-16-le", "utf-16-be", "utf-16"):
        try:
            forms.append((key.decode(encoding), "in UTF-16: encode the key as UTF-8"))
        except UnicodeDecodeError:
            continue
    for text, how in forms:
        if text == subscriber_id or (
            subscriber_id is None and SUBSCRIBER_KEY.fullmatch(text.encode())
        ):
            return f": it is {text!r} {how}"
    return ""


def _said(
    errors: list[ErrorDetails], optional: Collection[str] | None = None
) -> list[tuple[str, str]]:
    """(field, message) per error, a union's branches told once: pydantic names each branch
    in the location (`opt_out.0.str-enum[Channel]`, `...function-after[...]`), and an
    opt-out refused read as two errors in its internals' words. The branch that says why
    (a `ValueError` of ours) is kept, the others dropped; so is a text branch's over an
    enum's (an opt-out holding a tab was told the four channels moments sends on, where
    any other channel is taken)."""
    said: dict[str, str] = {}
    enum: set[str] = set()  # the places told an enum branch's error
    for error in errors:
        where = ".".join(str(p) for p in error["loc"] if not _branch(str(p))) or "value"
        if where not in said or error["type"] == "value_error" or where in enum:
            said[where] = problem(error, optional)
            if error["type"] == "enum":
                enum.add(where)
            else:
                enum.discard(where)
    return list(said.items())


def _branch(part: str) -> bool:
    """Whether a location part names a union's branch, not a field."""
    return "[" in part or part == "constrained-str"


def problem(error: ErrorDetails, optional: Collection[str] | None = None) -> str:
    """A validation error's message, naming the fix for a time that does not match the
    pattern (the message was the 337-character pattern). The input is looked at, never
    quoted: a dead letter's reason names fields, not their values. `optional`: the names
    of the record's optional fields, for a blank value's fix (None: not a record's)."""
    pattern = (error.get("ctx") or {}).get("pattern")
    value = error.get("input")
    if error["type"] == "model_type" and not error["loc"]:
        named = (error.get("ctx") or {}).get("class_name")
        return _not_an_object(value, "outcome" if named == "TaskOutcome" else "event")
    if null_required(error):
        return NULL_REQUIRED
    if error["type"] == "missing" and len(error["loc"]) == 1 and isinstance(value, dict):
        spelled = _spelled_otherwise(str(error["loc"][0]), value)
        if spelled is not None:
            return f"{error_text(error)}; {SPELLED} `{spelled[:40]}`: write `{error['loc'][0]}`"
    if optional is not None and _blank_value(error):
        return BLANK_OPTIONAL if str(error["loc"][0]) in optional else BLANK_REQUIRED
    if error["type"] == "string_pattern_mismatch" and pattern == TIME_PATTERN:
        return time_fix(value) if isinstance(value, str) else error["msg"]
    if error["type"] == "string_pattern_mismatch" and pattern == TEXT_PATTERN:
        return _text_fix(value) if isinstance(value, str) else error["msg"]
    if error["type"] == "string_pattern_mismatch" and pattern == FILLED_PATTERN:
        if not isinstance(value, str):
            return error["msg"]
        if _INVISIBLE.search(value):
            return _text_fix(value)
        return _BLANK_ID if str(error["loc"][-1]).endswith("_id") else _BLANK_TEXT
    field = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "string_pattern_mismatch" and field == "country":
        return country_fix(value)
    if error["type"] == "string_pattern_mismatch" and field in _SHORT_FIXES:
        return _SHORT_FIXES[field]
    if error["type"] == "string_pattern_mismatch" and pattern == SUBSCRIBER_PATTERN:
        return (
            "write the subscriber number as 5 to 20 digits only, as in the record's key: no "
            "'+', spaces or dashes (e.g. 13800138001)"
        )
    if error["type"] == "string_pattern_mismatch" and error["loc"][:1] == ("quiet_hours",):
        return _QUIET_FIX
    if (
        error["type"] == "string_pattern_mismatch"
        and error["loc"][:1] == ("timezone",)
        and isinstance(value, str)
    ):
        # `+08:00`, `UTC+8`, `CST`, `asia/shanghai`: the zone name's pattern refused them
        # with itself (hundreds of characters); `check_zone`'s words name the fix
        return zone_refusal(value)
    if error["type"] == "string_pattern_mismatch" and error["loc"]:
        day_fix = _DAYS.get(str(error["loc"][0]))
        if day_fix is not None:
            return day_fix
    if error["type"] == "money_type" and isinstance(value, float) and not math.isfinite(value):
        return (
            "NaN and Infinity are no amounts: write a finite JSON number or a decimal string "
            'like "49.90", or leave an optional amount out when it is unknown'
        )
    if error["type"] == "money_type" and isinstance(value, str):
        fix = _money_fix(value)
        if fix is not None:
            return fix
    if error["type"] == "string_type" and error["loc"][-1:] == ("subscriber_id",):
        said = 'write the subscriber number as a JSON string ("13800138001")'
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return said + ", not a number" if number else said

    if error["type"] == "string_type" and error["loc"][-1:] in _TIMES and _epoch(value):
        return (
            "a time is text, not an epoch number (seconds or milliseconds): write it in "
            f"RFC 3339 with a UTC offset, e.g. {TIME_EXAMPLE}"
        )
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if error["type"] == "string_type" and number and error["loc"][-1:] not in _TIMES:
        return _DAYS.get(field) or "write it as a JSON string (in quotes), not a number"
    if error["type"] == "string_type" and isinstance(value, list | dict | bool):
        # pydantic's "Input should be a valid string" named no fix (a nested export)
        what = "true or false" if isinstance(value, bool) else _SHAPES[type(value) is dict]
        if error["loc"][-1:] in _TIMES:
            return (
                "a time is text: write it in RFC 3339 with a UTC offset, e.g. "
                f"{TIME_EXAMPLE}, not {what}"
            )
        return f"write it as a JSON string (in quotes), not {what}"
    if error["type"] == "list_type" and field in _LISTS and len(error["loc"]) == 1:
        what = {str: "text", dict: "an object", bool: "true or false"}.get(type(value), "a number")
        return f"write a JSON list, e.g. {_LISTS[field]}, not {what}"
    if error["type"] == "float_type" and isinstance(value, str):
        return 'write a JSON number, not text (e.g. 1000, not "1000")'
    return error_text(error)


_SHAPES = ("a list", "an object")
"""A JSON array or object where text belongs, as a refusal names it (by `is dict`)."""

NULL_REQUIRED = (
    "null is no value, and the field is required: write it (an optional field may be null "
    "or left out, a required one neither)"
)
"""What a required field written `null` is told (a serializer writing unset fields as
null): the message for a wrong type named another fix, "not a number" for a null
`subscriber_id`, 'e.g. 1, not "1"' for a null `severity`, "Input should be a valid
string" for a null `event_id`."""


def null_required(error: ErrorDetails) -> bool:
    """Whether the error is a top-level field's refusal of a JSON null: a required field's
    (every optional field of an event or an outcome takes null as left out)."""
    if error["type"] == "missing" or error.get("input", ...) is not None:
        return False
    return len([p for p in error["loc"] if not _branch(str(p))]) == 1


REQUIRED = "Field required"
"""pydantic's words for a required field left out (`required_fix` names the fix)."""


def required_fix(event_type: EventType, fields: list[str]) -> str:
    """The fix for required fields left out, said once after the fields' messages (at each,
    five would pass the message's cut): "amount: Field required" named none."""
    them = "it" if len(fields) == 1 else "them"
    return (
        f"a {event_type.value} event must have {', '.join(fields)}: write {them}; each type's "
        f"fields are in docs/producing-events.md and schemas/{event_type.value}-event.schema.json"
    )


BLANK_OPTIONAL = '"" (or spaces only) is no value: leave the field out (or null) when there is none'
BLANK_REQUIRED = '"" (or spaces only) is no value, and the field is required: write it'
"""What a field that is no text written blank is told (an export's empty cell): an IMEI
of `""` was told to be 14 to 16 digits, a direction `'in' or 'out'`, a quantity "not
text", none of which said that an optional field may be left out."""
OPTIONAL_FIELDS: dict[EventType, frozenset[str]] = {
    event_type: frozenset(
        name for name, info in model.model_fields.items() if not info.is_required()
    )
    for event_type, model in EVENT_MODELS.items()
}
"""Each event type's optional fields."""


_BLANK = re.compile(f"{BLANK_SPACE}*")


SPELLED = "the value names"
"""How a field's message names the member spelled otherwise (`_spelled_otherwise`)."""
NAMES_NOTE = " (field names are lowercase with underscores, as in schemas/)"
"""Said once after the fields' messages when one names a field spelled otherwise: said at
each, four of a camelCase outcome were cut at 500 characters in the middle."""


def with_names_note(detail: str) -> str:
    """`detail` (the fields' messages), with `NAMES_NOTE` when one names a spelling."""
    return detail + NAMES_NOTE if f"; {SPELLED} `" in detail else detail


def _spelled_otherwise(field: str, value: dict[str, Any]) -> str | None:
    """The member of `value` that is `field` in another case or with other separators
    (`eventId`, `SubscriberId`, `occurred-at`: a serializer's naming), if any. Only on
    the refusal path."""
    wanted = _bare_name(field)
    return next((name for name in value if name != field and _bare_name(name) == wanted), None)


def _bare_name(name: object) -> str:
    return str(name).replace("_", "").replace("-", "").casefold()


def _blank_value(error: ErrorDetails) -> bool:
    """Whether the error refuses a top-level field's blank text where text is no value
    (an id's blank has words of its own, `_BLANK_ID`)."""
    value = error.get("input")
    if not isinstance(value, str) or _BLANK.fullmatch(value) is None:
        return False
    if (error.get("ctx") or {}).get("pattern") == FILLED_PATTERN or error["type"] == "list_type":
        return False  # a list's none is [] (its fix, `_LISTS`), not the field left out
    return len([p for p in error["loc"] if not _branch(str(p))]) == 1


_INVISIBLE = re.compile(f"[{INVISIBLE}]")
_BLANK_ID = (
    "spaces only, no id: write the record's own id (an id of spaces is one id for every "
    "record: each after the first would be skipped as sent again)"
)
_BLANK_TEXT = "spaces only: write its value (it is required; a blank one is none)"


def _text_fix(text: str) -> str:
    """What to change in text that holds a control or invisible format character: which
    one and where, by its code point (it was the 120-character pattern; the text itself
    is never quoted)."""
    found = _INVISIBLE.search(text)
    if found is None:
        return "remove the control and invisible format characters"
    char = found.group()
    name = unicodedata.name(char, "") or "a control character"
    return (
        f"U+{ord(char):04X} ({name}) at character {found.start() + 1}: text takes no "
        "control or invisible format characters (newlines, tabs, zero-width spaces, "
        "direction marks), which would reach an SMS, a log line or a terminal: remove it"
    )


_SHORT_FIXES = {
    "imei": "write the IMEI as 14 to 16 digits, no spaces or dashes (e.g. 356938035643809)",
}
"""The patterns' fixes that the pattern alone does not say to whoever produced it."""


_PLAIN_DECIMAL = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")
_DECIMAL_COMMA = re.compile(r"-?[0-9]{1,9},(?:[0-9]{1,2}|[0-9]{4})")
"""Money written with a decimal comma (`49,90`): 1, 2 or 4 places, as money has; 3
(`1,000`) may be a thousands separator, which the general message names."""


def _money_fix(text: str) -> str | None:
    """What to write instead of a decimal string that is money but for its size: more
    places or digits than money has (a DECIMAL(18,6) column as text, "49.900000", was told
    to be "a decimal string like 49.90"), or that writes its decimal point as a comma."""
    if _DECIMAL_COMMA.fullmatch(text):
        return (  # not quoting the value: a dead-letter summary counts one line for all
            'write the decimal separator as a point ("49.90", not "49,90": a locale\'s '
            "decimal comma)"
        )
    found = _PLAIN_DECIMAL.fullmatch(text)
    if found is None:
        return None
    if abs(Decimal(text)) > MONEY_MAX:
        return f"money is below a billion yuan either way (at most {MONEY_MAX})"
    if len(found[1]) > MONEY_DIGITS:
        return f"write at most {MONEY_DIGITS} digits before the point (no leading zeros)"
    return (
        f"a decimal string has at most {MONEY_PLACES} decimal places (49.90, not "
        f"49.900000): round it, or send a JSON number (rounded to {MONEY_PLACES} places)"
    )


_DAY_FIX = 'write a real day as YYYY-MM-DD (e.g. 2027-01-31), or "" to clear it'
_DAYS = {
    "joined_on": _DAY_FIX,
    "contract_end": _DAY_FIX,
    "birthday": "write a real day as MM-DD or YYYY-MM-DD (e.g. 05-17; 02-29 only in a "
    'leap year), or "" to clear it',
}
"""A profile's days: what to write instead of the pattern (hundreds of characters)."""
_QUIET_FIX = (
    "write each window as HH:MM-HH:MM on a 24-hour clock, local time, 00:00 to 23:59 "
    "(e.g. 22:00-08:00 across midnight; midnight is 00:00, not 24:00), and send the whole "
    "list again"
)
"""What to write instead of a quiet-hours window's pattern (a regex told the CRM team
nothing about `22:00-24:00` or `10pm-8am`)."""
_LISTS = {
    "opt_out": '["sms", "outbound_call"] (one channel: ["sms"]; none: []; in a CSV cell '
    "too, the JSON list as it is)",
    "quiet_hours": '["22:00-08:00"] (one window too; none: []; in a CSV cell too, the JSON '
    "list as it is)",
}
"""The list fields' examples, for one written as text (a CRM's comma-separated column:
it was told "Input should be a valid array")."""
_TIMES = {(name,) for name in TIME_FIELDS}
"""The fields an epoch number is taken for a time in: another text field sent as a number
in the same range (an event_id 1764904200) is no time."""


def _epoch(value: object) -> bool:
    """Whether a number reads as Unix time in seconds or milliseconds (2001 to 2286)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (1e9 <= value < 1e10 or 1e12 <= value < 1e13)
    )


BOM_SAID = "the value starts with a UTF-8 byte-order mark (EF BB BF): send the JSON without one"
"""What a value starting with a byte-order mark is told."""


def not_json_said(value: bytes, parsed: str) -> str:
    """What a value the JSON parser refused is told: what it is instead where that names
    the fix (a byte-order mark, a Confluent frame, another encoding than UTF-8, a lone
    surrogate), else `parsed`, the parser's own message."""
    if value.startswith(UTF8_BOM):
        return BOM_SAID
    return _not_json(value) or _run_together(value) or parsed + _parser_hint(parsed)


_PARSER_HINTS = {
    "EOF while parsing": ": the value ends before its JSON does (cut short by a size "
    "limit or a partial write?); send it whole",
    "key must be a string": ": names take double quotes (single quotes, or a Python dict "
    "written with str()?); send it as JSON (json.dumps)",
}
"""What the parser's own words do not say to whoever sent the value."""


def _parser_hint(parsed: str) -> str:
    """The fix for the parser's message, where its words name none ("EOF while parsing a
    string at line 1 column 16" is a record cut short)."""
    return next((hint for words, hint in _PARSER_HINTS.items() if words in parsed), "")


def _run_together(value: bytes) -> str | None:
    """What a value holding a whole JSON object or array followed by another is told:
    records batched into one (joined by newlines, or run together), which the parser
    called "trailing characters at line 2 column 1". Only on the refusal path."""
    try:
        text = value.decode("utf-8")
        _, end = json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip()))
    except (ValueError, RecursionError):
        return None
    if not text[end:].lstrip().startswith(("{", "[")):
        return None
    return (
        "more than one JSON value in the record (several joined by newlines, or run "
        "together): send each as a record of its own"
    )


_JSON_KINDS = {list: "a JSON array", str: "a JSON string", bool: "true or false"}


def _not_an_object(value: object, kind: str) -> str:
    """What a value that is JSON but no object is told (it was "Input should be an
    object", which an array of events or an event encoded twice seems to be)."""
    if isinstance(value, list):
        return (
            f"a JSON array, not one {kind}: send each {kind} as a JSON object, a record of its own"
        )
    if isinstance(value, str):
        try:
            inner = json.loads(value)
        except (ValueError, RecursionError):
            inner = None
        if isinstance(inner, dict | list):
            return (
                "a JSON string holding JSON, not an object: the JSON was encoded twice (a "
                f"JSON serializer given text that was JSON already); send the {kind} object "
                "itself"
            )
    what = _JSON_KINDS.get(type(value)) or ("null" if value is None else "a JSON number")
    return f"{what}, not an object: send the {kind} as a JSON object"


def utf16_form(head: bytes) -> tuple[str, str] | None:
    """How bytes show they are UTF-16 text, from their first four, and iconv's name for
    that form (None: they do not): a byte-order mark (FF FE, FE FF), or ASCII with every
    other byte zero (no mark). The one test for a record value here and for a history
    file (`moments.eventcheck.utf16_said`)."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return f"a byte-order mark, {head[0]:02X} {head[1]:02X}", "UTF-16"
    if len(head) >= 4 and head[1] == head[3] == 0 and head[0] and head[2]:
        return "no byte-order mark, little-endian", "UTF-16LE"
    if len(head) >= 4 and head[0] == head[2] == 0 and head[1] and head[3]:
        return "no byte-order mark, big-endian", "UTF-16BE"
    return None


def _not_json(value: bytes) -> str | None:
    """What a value that is no JSON is instead, where it says what to send: a Confluent
    wire-format frame, or text in another encoding than UTF-8 (the parser's own message,
    "expected value" or "invalid unicode code point", named no fix)."""
    compressed = next((name for magic, name in _COMPRESSED if value.startswith(magic)), None)
    if compressed is not None:
        return (
            f"the value is {compressed}-compressed: send the JSON text itself, and let the "
            f"producer compress (compression.type={compressed}; the worker reads gzip, "
            "snappy, lz4 and zstd batches)"
        )
    if _zlib(value):
        return (
            "the value is zlib-compressed (deflate): send the JSON text itself, and let the "
            "producer compress (compression.type gzip, snappy, lz4 or zstd, which the worker "
            "reads)"
        )
    if (utf16 := utf16_form(value[:4])) is not None:  # without a mark it is valid UTF-8
        return f"the value is UTF-16 text ({utf16[0]}): encode the JSON text as UTF-8"
    if (binary := _binary_said(value)) is not None:
        return binary
    if _base64_json(value):
        return "the value is base64 of JSON text: send the JSON text itself (UTF-8), not encoded"
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"the value is not UTF-8 (byte {exc.start}: {value[exc.start : exc.start + 1]!r}; "
            "GBK, Latin-1 or UTF-16?): encode the JSON text as UTF-8"
        )
    if _lone_surrogate(value):
        return (
            "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its "
            "pair: text cut in the middle of an emoji?): cut text at whole characters"
        )
    return None


_JSON_SPACE = b" \t\r\n"


def _binary_said(value: bytes) -> str | None:
    """What a value a binary serializer wrote is told: a Schema Registry frame (magic
    byte 0 and a big-endian 4-byte schema id, then Avro, Protobuf or JSON), or bytes
    whose first one that is no JSON whitespace is a control character, which no JSON text
    starts with (Avro's zigzag lengths, Protobuf's field tags). Both were told "not
    UTF-8 ... GBK, Latin-1 or UTF-16?" or the parser's "expected value", a text encoding
    to look at; only a frame around JSON was named. After `utf16_form`: UTF-16BE text
    without a mark starts with a zero byte too."""
    if len(value) > 5 and value[0] == 0:
        return (
            "the value starts with a Confluent Schema Registry header (magic byte 0 and the "
            f"4-byte schema id {int.from_bytes(value[1:5], 'big')}: a registry serializer's, "
            "Avro, Protobuf or JSON Schema): send plain UTF-8 JSON (a StringSerializer or a "
            "JSON serializer without the registry)"
        )
    if value.lstrip(_JSON_SPACE)[:1] in (b"{", b"[", b'"'):
        return None  # JSON text, a control character in a string or after it at most
    if not any(byte < 0x20 and byte not in _JSON_SPACE for byte in value):
        return None
    return (  # no byte named: a summary (`show`) counts one line for them all
        "the value is binary, not JSON text (it holds control characters: an Avro, "
        "Protobuf or other binary serializer's?): send it as UTF-8 JSON text (a "
        "StringSerializer, json.dumps(...).encode())"
    )


_COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\xff\x06\x00\x00sNaPpY", "snappy"),
)
"""How a value compressed by the application begins (gzip, a zstd, lz4 or snappy frame),
and the codec's name as Kafka producers spell it: it was told "not UTF-8 ... GBK, Latin-1
or UTF-16?", which sent a producer looking at its text encoding."""


def _zlib(value: bytes) -> bool:
    """A zlib stream (RFC 1950), as Java's DeflaterOutputStream, Node's zlib.deflate or
    Python's zlib.compress write it: deflate with a 32 KiB window (0x78), a header whose
    two bytes are a multiple of 31. No JSON text starts with `x`. Kafka has no zlib codec,
    so it is not in `_COMPRESSED`; it was told "not UTF-8 ... GBK, Latin-1 or UTF-16?"."""
    return len(value) > 2 and value[0] == 0x78 and (value[0] << 8 | value[1]) % 31 == 0


_BASE64 = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


def _base64_json(value: bytes) -> bool:
    """Base64 (either alphabet) of text that starts as a JSON object or array: a value
    encoded by the application (a binary field of a REST bridge or an SDK sent as text).
    It was told the parser's "expected value at line 1 column 1"."""
    text = value.strip()
    if len(text) < 8 or not _BASE64.fullmatch(text):
        return False
    try:
        head = base64.b64decode(text[:64].translate(_URLSAFE) + b"=" * (-min(len(text), 64) % 4))
    except ValueError:
        return False
    return head.lstrip()[:1] in (b"{", b"[")


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def enveloped(value: bytes, marks: tuple[str, ...], kind: str) -> str | None:
    """The hint for a value whose object lacks one of `marks` (the fields that say what
    it is) and one of whose members is an object that has them all: an event or an
    outcome (`kind`) wrapped in an envelope (`{"payload": {...}}`, CloudEvents' `data`, a
    CDC record's `after`), or None. Only on the refusal path."""
    try:
        top = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(top, dict) or all(name in top for name in marks):
        return None
    for name, inner in top.items():
        if isinstance(inner, dict) and all(field in inner for field in marks):
            return (
                f'the {kind} is wrapped in an envelope, under "{name[:40]}": send the '
                f"{kind} object itself, its fields at the top level"
            )
    return None


_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
"""A JSON escape, a `\\uXXXX` one with its code unit: read one after another, so that an
escaped backslash before `u` (`"\\\\ud83d"`, text) is no surrogate escape."""


def _lone_surrogate(value: bytes) -> bool:
    """Whether a `\\uD83D` escape stands without its low half right after it, or a low
    half without its high one (the parser's message, "unexpected end of hex escape",
    named no fix). Only on the refusal path."""
    if b"\\u" not in value:
        return False
    pending = -1  # where the escape after a high half must start to be its low half
    for escape in _ESCAPE.finditer(value):
        unit = escape[1]
        code = int(unit, 16) if unit is not None else -1
        low = 0xDC00 <= code <= 0xDFFF
        if pending >= 0:
            if not (low and escape.start() == pending):
                return True
            pending = -1
        elif 0xD800 <= code <= 0xDBFF:
            pending = escape.end()
        elif low:
            return True
    return pending >= 0


def whole_characters(value: bytes) -> bytes | None:
    """The JSON value with each lone surrogate escape (`_lone_surrogate`) in its strings
    and names read as U+FFFD, the replacement character; None when it has none, is no
    JSON even so, or nests too deep to walk (the parser refuses that too). For free text
    that a lone surrogate should not cost its message (a task outcome's note: outcomes
    are not replayed); the parser refuses them."""
    if not _lone_surrogate(value):
        return None
    try:  # RecursionError: an unknown field nested deeper than `_replaced` walks
        return json.dumps(_replaced(json.loads(value)), ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _replaced(value: object) -> object:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replaced(item) for item in value]
    if isinstance(value, dict):
        return {_replaced(k): _replaced(v) for k, v in value.items()}
    return value


def _reads_as(value: bytes, refused_as: EventType) -> str | None:
    """The one other event type this value is valid as, if any (the profile left out: all
    its fields are optional, so nearly anything is one). Only on the refusal path."""
    fits = []
    for event_type, model in EVENT_MODELS.items():
        if event_type in (refused_as, EventType.PROFILE):
            continue
        try:
            model.__pydantic_validator__.validate_json(value)
        except ValidationError:
            continue
        fits.append(event_type.value)
    return fits[0] if len(fits) == 1 else None


def _reject(
    record: RawRecord, event_type: EventType, reason: RejectReason, error: str, message: str
) -> DeadLetter:
    return DeadLetter(record, event_type.value, reason, error, message)
