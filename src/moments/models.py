"""The external contract as pydantic models: input events, ServiceTask, TaskOutcome.

`../shared/spec/contract.md` is the source; `schemas/` is generated from these
classes by `moments schemas export` and a test fails when it drifts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    Strict,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict, JsonValue
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import CoreSchema
from pydantic_core import core_schema as cs

from moments.enums import Channel as Channel
from moments.enums import EventType as EventType
from moments.enums import Family as Family
from moments.enums import OutcomeStatus as OutcomeStatus
from moments.enums import WithdrawReason as WithdrawReason
from moments.eventspan import BIRTH_YEARS, EVENT_SPAN, EVENT_YEARS
from moments.zones import COUNTRY_PATTERN, ZONE_PATTERN, check_zone, countries

SUBSCRIBER_PATTERN = r"^[0-9]{5,20}$"
SubscriberId = Annotated[
    str, StringConstraints(pattern=SUBSCRIBER_PATTERN), Field(description="MSISDN, 5-20 digits")
]
INVISIBLE = (
    r"\x00-\x1f\x7f-\x9f"  # control characters
    r"\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
    r"\ufff9-\ufffb"  # format characters (bidi overrides, zero-width), line separators
)
"""What text from events must not hold, as a regex character range: it reaches task
descriptions (an SMS), logs and terminals (`moments tasks tail`), where a newline or an
escape sequence is an injection and a right-to-left override shows `ppa.evil` for
`live.app`."""
_TEXT = rf"^[^{INVISIBLE}]*$"
TEXT_PATTERN = _TEXT
"""What an event's text must match (`text`): no character of `INVISIBLE`."""


def text(max_length: int, min_length: int = 0) -> StringConstraints:
    """A string of an event: bounded, no control characters."""
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=_TEXT)


Region = Annotated[str, text(32, min_length=1), AfterValidator(str.strip)]
"""A city code, taken without the spaces around it (a padded CHAR column's `"SH  "` is SH,
which the rules' region overrides name); spaces only are none: "" (an event's is
ignored, a profile's clears the region)."""
# Calendar days as patterns, exact to the leap year, so that the schemas refuse the
# days the worker refuses (02-30, 2023-02-29) with any JSON Schema validator, format
# assertions on or off.
_MM_DD = (
    r"(0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
    r"|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    r"|02-(0[1-9]|1[0-9]|2[0-8])"
)
_LEAP_YEAR = r"[0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00"
_DATE = rf"([0-9]{{4}}-({_MM_DD})|({_LEAP_YEAR})-02-29)"
_BLANK_CHARS = r"\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
BLANK_SPACE = rf"[{_BLANK_CHARS}]"
"""What a blank is made of, spelled out: Unicode's White_Space, which pydantic's `\\s`
means. `\\s` itself differs by regex engine: Python's (the `jsonschema` package's) also
takes the separators U+001C-U+001F, so a "blank" day of them passed the schema and was a
dead letter."""
_BLANK_TEXT = re.compile(rf"{BLANK_SPACE}*")
FILLED_PATTERN = rf"^[^{INVISIBLE}]*[^{INVISIBLE}{_BLANK_CHARS}][^{INVISIBLE}]*$"
"""What a required text of an event must match (`filled`): text (`TEXT_PATTERN`) that is
not blank. The detector skips an event whose `event_id` it saw among the subscriber's last
few as sent again, and keys complaints by `complaint_id`: ids of spaces only (a padded
`CHAR` column) were all one id, and every event after the first was skipped without a
dead letter; a top-up's blank `channel` reached a customer's SMS ("First top-up by   :")."""


def filled(max_length: int) -> StringConstraints:
    """A required text of an event: bounded, not blank (`FILLED_PATTERN`)."""
    return StringConstraints(min_length=1, max_length=max_length, pattern=FILLED_PATTERN)


EventId = Annotated[str, filled(128)]


def blank_is_none(value: str | None) -> str | None:
    """An optional text of an event that is blank (`""`, or spaces only: an SQL export's
    empty string, a padded `CHAR` column) is none, as a blank profile value is: a
    `{field: counterparty}` test, `first_time: operator` or a description's
    `{service_code}` took `""` for a value (the catalog's service_failure fired with a
    blank service code), where the event said it had none."""
    if not value:
        return None
    if not value[0].isspace():  # the usual value: no regex (every blank char is a space)
        return value
    return None if _BLANK_TEXT.fullmatch(value) else value


_BLANK_NONE = '; "" (or spaces only) is none, as absent'
_BIRTHDAY = rf"^({_DATE}|{_MM_DD}|02-29)$"
"""A birthday as the model reads it: its year is held to `BIRTH_YEARS` by
`ProfileEvent._birthday`, which names the fix (a pattern's refusal told "write a real
day"); the schemas' `BIRTHDAY_PATTERN` holds it there too."""
_EVENT_DAY = (
    rf"(19[7-9][0-9]|[2-8][0-9]{{3}}|9([0-7][0-9]{{2}}|8([0-8][0-9]|9[0-8])))-({_MM_DD})"
    r"|(19(7[26]|8[048]|9[26])|([2-8][0-9]|9[0-8])(0[48]|[2468][048]|[13579][26])"
    r"|([2468][048]|[3579][26])00)-02-29"
)
"""An event time's day, in `EVENT_YEARS` (1970-9898), exact to the leap year."""
_WRITTEN_DAY = (
    rf"(19[7-9][0-9]|[2-8][0-9]{{3}}|9([0-8][0-9]{{2}}|9([0-8][0-9]|9[0-8])))-({_MM_DD})"
    r"|(19(7[26]|8[048]|9[26])|([2-8][0-9]|9[0-9])(0[48]|[2468][048]|[13579][26])"
    r"|([2468][048]|[3579][26])00)-02-29"
)
"""A written time's day (a task's, a withdrawal's), in `WRITTEN_YEARS` (1970-9998)."""
_BIRTH_DAY = (
    rf"(190[1-9]|19[1-9][0-9]|[2-8][0-9]{{3}}|9([0-7][0-9]{{2}}|8([0-8][0-9]|9[0-8])))-({_MM_DD})"
    r"|(19(0[48]|[2468][048]|[13579][26])|([2-8][0-9]|9[0-8])(0[48]|[2468][048]|[13579][26])"
    r"|([2468][048]|[3579][26])00)-02-29"
)
"""A birthday's day, when it has a year, in `eventspan.BIRTH_YEARS` (1901-9898)."""
EPOCH_DAY = "1970-01-01"
"""The day of Unix time 0: in a profile's days, a zero some upstream system wrote for
none, not a day of the customer (no line joined, no contract ended, then), refused as the
database's empty dates are (`EPOCH_DAY_REFUSED`)."""
_NOT_EPOCH = (
    r"1970-(01-(0[2-9]|[12][0-9]|3[01])|(0[3578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
    r"|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
)
"""The days of 1970 but its first, for the schemas' patterns (no look-ahead: not every
JSON Schema validator's regex engine has one)."""
_PROFILE_DAY = (
    rf"{_NOT_EPOCH}|(197[1-9]|19[89][0-9]|[2-8][0-9]{{3}}|9([0-7][0-9]{{2}}|8([0-8][0-9]|9[0-8])))"
    rf"-({_MM_DD})"
    r"|(19(7[26]|8[048]|9[26])|([2-8][0-9]|9[0-8])(0[48]|[2468][048]|[13579][26])"
    r"|([2468][048]|[3579][26])00)-02-29"
)
"""A profile's day: `_EVENT_DAY` but `EPOCH_DAY`."""
_BIRTH_DAY_NOT_EPOCH = (
    rf"{_NOT_EPOCH}|(190[1-9]|19[1-6][0-9]|197[1-9]|19[89][0-9]|[2-8][0-9]{{3}}"
    rf"|9([0-7][0-9]{{2}}|8([0-8][0-9]|9[0-8])))-({_MM_DD})"
    r"|(19(0[48]|[2468][048]|[13579][26])|([2-8][0-9]|9[0-8])(0[48]|[2468][048]|[13579][26])"
    r"|([2468][048]|[3579][26])00)-02-29"
)
"""A birthday's day with a year: `_BIRTH_DAY` but `EPOCH_DAY`."""
PROFILE_DAY_PATTERN = f"^({_PROFILE_DAY})$"
"""What the schemas hold a profile's `joined_on` and `contract_end` to: a real day of
`EVENT_YEARS` but `EPOCH_DAY` (`Day`)."""
BIRTHDAY_PATTERN = rf"^({_BIRTH_DAY_NOT_EPOCH}|{_MM_DD}|02-29)$"
"""What the schemas hold a profile's `birthday` to: a month and day, or a real day of
`BIRTH_YEARS` but `EPOCH_DAY`."""


def _rfc3339(day: str) -> str:
    return (
        rf"^({day})[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
        r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
    )


_RFC3339 = _rfc3339(_EVENT_DAY)
_WRITTEN_RFC3339 = _rfc3339(_WRITTEN_DAY)
TIME_PATTERN = _RFC3339
"""What an instant's text must match (`Instant`)."""
WRITTEN_TIME_PATTERN = _WRITTEN_RFC3339
"""What the schemas hold a written instant's text to (`WrittenInstant`)."""
TIME_EXAMPLE = "2026-12-05T13:10:00+08:00"
_DAY_AND_HOUR = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}"
_ZONE_SUFFIX = re.compile(r"\[[^\[\]]*\]$")
_EPOCH_TEXT = re.compile(r"^[0-9]{10}([0-9]{3})?(\.[0-9]+)?$")
_RFC2822 = re.compile(r"^([A-Za-z]{3}, *)?[0-9]{1,2} +[A-Za-z]{3} +[0-9]{2,4} +[0-9]{2}:")
_JS_DATE_STRING = re.compile(r"^[A-Za-z]{3} [A-Za-z]{3} [0-9]{2} [0-9]{4} [0-9:]{8} GMT[+-]")
_WEEK_OR_ORDINAL = re.compile(r"^[0-9]{4}-?(W[0-9]{2}|[0-9]{3}([Tt ]|$))")
_GO_STRING = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)? [+-][0-9]{4} "
    r"[A-Za-z0-9+-]+( m=[+-][0-9.]+)?$"
)
"""Go's `time.String()` (`fmt.Sprint(t)`, `%v`): `2026-12-07 13:04:05.123 +0800 CST`,
the zone's abbreviation (or `+08`) after the offset, the monotonic clock's reading
(`m=+0.000`) after that when the time came from `time.Now()`."""
_FORM_FIXES = (
    (
        _GO_STRING,
        "write RFC 3339, not Go's time.String() (a debugging form): format with "
        "t.Format(time.RFC3339Nano)",
    ),
    (
        _RFC2822,
        "write RFC 3339, not an RFC 2822 (email or HTTP) date: Python's isoformat(), "
        "Java's ISO_OFFSET_DATE_TIME",
    ),
    (
        _JS_DATE_STRING,
        "write an RFC 3339 time, not JavaScript's Date.toString(): write date.toISOString()",
    ),
    (
        _WEEK_OR_ORDINAL,
        "write the calendar day (year-month-day), not an ISO week date or a day of the year",
    ),
)
"""Forms of other standards and libraries, each with what to change: each was told the
general form, which named nothing to change (producer walk-through)."""
_REPAIRS = (
    (
        re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}) ([0-9]{2}:)"),
        r"\1T\2",
        "write a T between the date and the time",
    ),
    (
        re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:)60"),
        r"\g<1>59",
        "write no leap second (second 60): write the second before it, 59",
    ),
    (
        re.compile(r"([Tt][0-9]{2}:[0-9]{2}:[0-9]{2}),([0-9])"),
        r"\1.\2",
        "write a point before the fraction of a second (00.123, not 00,123)",
    ),
    (
        re.compile(r"(:[0-9]{2}(\.[0-9]+)?) +([Zz]|[+-][0-9]{2}:?[0-9]{2}|[+-][0-9]{2})$"),
        r"\1\3",
        "write no space before the UTC offset (00+08:00, not 00 +08:00)",
    ),
    (
        re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2})(([Zz]|[+-][0-9:]+)?)$"),
        r"\1:00\2",
        "write the seconds (13:10:00, not 13:10)",
    ),
    (
        re.compile(r"([0-9][+-][0-9]{2})([0-9]{2})$"),
        r"\1:\2",
        "write the UTC offset with a colon (+08:00, not +0800)",
    ),
    (
        re.compile(r"(:[0-9]{2}(\.[0-9]+)?[+-][0-9]{2})$"),
        r"\1:00",
        "write the UTC offset's minutes too (+08:00, not +08)",
    ),
    (
        re.compile(_DAY_AND_HOUR + r":[0-9]{2}(\.[0-9]+)?$"),
        r"\g<0>+08:00",
        "add a UTC offset",
    ),
)
"""Faults of a time otherwise RFC 3339, in the order they are found, each with how it is
mended (a `re.sub` replacement) and what to change: the time is mended fault by fault, so
that one with several is told every fix at once (it was told one, sent again, refused
again for the next)."""
_TIME = re.compile(_RFC3339)
_YEARS = "-".join(map(str, EVENT_YEARS))


def time_fix(text: str) -> str:
    """What to change in a time that is not `TIME_PATTERN`, for a dead letter's reason (the
    pattern itself, 337 characters, was the reason). Never quotes the text. Java's
    `ZonedDateTime.toString()` (a zone in brackets), an offset of hours only and Unix
    time as text were told the general form, which named nothing to change; so were the
    forms of `_FORM_FIXES`. A time of `_REPAIRS`' faults is told each it has, in one
    message, and what it still lacks once they are mended."""
    if _ZONE_SUFFIX.search(text):
        return (
            "write no zone name in brackets after the offset (Java's ZonedDateTime.toString() "
            "adds it, and leaves out zero seconds): format with "
            f"DateTimeFormatter.ISO_OFFSET_DATE_TIME, e.g. {TIME_EXAMPLE}"
        )
    if _EPOCH_TEXT.match(text):
        return (
            "a time is text in RFC 3339, not an epoch number (seconds or milliseconds) in "
            f"quotes: e.g. {TIME_EXAMPLE}"
        )
    for form, fix in _FORM_FIXES:
        if form.search(text):
            return f"{fix}, e.g. {TIME_EXAMPLE}"
    fixes = []
    for fault, mend, fix in _REPAIRS:
        text, found = fault.subn(mend, text, count=1)
        if found:
            fixes.append(fix)
    if not fixes:
        return (
            f"write an RFC 3339 time with a UTC offset, e.g. {TIME_EXAMPLE} (a real day in "
            f"{_YEARS}, hours 00-23)"
        )
    if not _TIME.match(text):  # mended, still none: a year out of range, an hour 24
        fixes.append(f"write a real day in {_YEARS} and time of day (hours 00-23)")
    return f"{'; '.join(fixes)}, e.g. {TIME_EXAMPLE}"


MONEY_DIGITS = 9
"""Money below a billion yuan either way: an amount of 400 digits made the spend series
infinite, stored as null, and the worker crashed on the subscriber's next event."""
MONEY_PLACES = 4
"""Decimal places of money: a decimal string with more is refused (20,000 places reached a
customer's SMS), a JSON number is rounded to them (0.1 + 0.2 is 0.30000000000000004)."""
_DECIMAL = rf"^-?[0-9]{{1,{MONEY_DIGITS}}}(\.[0-9]{{1,{MONEY_PLACES}}})?$"
_MONEY_LIMIT = 10**MONEY_DIGITS


# What pydantic's own parsers take in JSON is wider than the published schemas: `+0800`,
# a space for the T, a Unix time in a string, `1e3` as money; and narrower: 1.0 is an
# integer to JSON Schema. The types below read JSON exactly as the schemas do (the text
# must match the schema's pattern, then pydantic parses it), in pydantic-core, so the
# check costs next to nothing; built in code, they take what pydantic takes.


def _json_reads(json: CoreSchema, python: CoreSchema, json_schema: JsonDict) -> Any:
    return (
        GetPydanticSchema(lambda _tp, _handler: cs.json_or_python_schema(json, python)),
        WithJsonSchema(json_schema),
    )


def _text_then(pattern: str, parsed: CoreSchema) -> CoreSchema:
    return cs.chain_schema([cs.str_schema(pattern=pattern, strict=True), parsed])


_CENT = Decimal(1).scaleb(-MONEY_PLACES)
"""The least money above 0: 0.0001 yuan."""
MONEY_MAX = _MONEY_LIMIT - _CENT
"""The most money, 999999999.9999: a JSON number is held to it (and to -MONEY_MAX, or to
`_CENT` where money is positive) before it is rounded, so that rounding cannot carry one
the schema took past the bound (999999999.99999 rounded to a billion; 1e-300, a positive
amount, to 0: both were dead letters of values the schema accepts)."""


def _number(least: float) -> Callable[[float], Decimal]:
    """A JSON number as money: the decimal it reads as, -0 as 0, rounded to `MONEY_PLACES`
    places (1e-300 showed as "1E-300 yuan"; 0.1 + 0.2 is 0.30000000000000004) when it is
    within the bounds, from `least` to `MONEY_MAX`; one beyond them is left as it is, for
    the bounds after it to refuse. Comparing the float is comparing the decimal it reads
    as: the bounds are floats' shortest forms. Only numbers come here: a decimal string
    (held to the places) and an integer are checked in pydantic-core alone, the Python
    call cost every amount 0.7 µs (a fifth of decoding a usage event)."""
    top = float(MONEY_MAX)

    def read(amount: float) -> Decimal:
        exact = Decimal(repr(amount + 0.0))
        exponent = exact.as_tuple().exponent
        if least <= amount <= top and isinstance(exponent, int) and exponent < -MONEY_PLACES:
            return Decimal(repr(round(amount, MONEY_PLACES) + 0.0))
        return exact

    return read


def _some_nonzero(digits: int) -> str:
    """1 to `digits` digits, one of them not 0, as a pattern without look-ahead (which
    pydantic-core's Rust regex lacks): the zeros before the first other digit, then the
    rest."""
    return "|".join(f"0{{{zeros}}}[1-9][0-9]{{0,{digits - 1 - zeros}}}" for zeros in range(digits))


_PLACES = rf"(\.[0-9]{{1,{MONEY_PLACES}}})?"
_SIGNED_DECIMAL = (
    rf"^([0-9]{{1,{MONEY_DIGITS}}}{_PLACES}"
    rf"|-({_some_nonzero(MONEY_DIGITS)}){_PLACES}"
    rf"|-0{{1,{MONEY_DIGITS}}}\.({_some_nonzero(MONEY_PLACES)}))$"
)
"""What `_DECIMAL` matches but a negative zero, which `_NEGATIVE_ZERO` matches."""
_NEGATIVE_ZERO = rf"^-0{{1,{MONEY_DIGITS}}}(\.0{{1,{MONEY_PLACES}}})?$"


def _unsigned_zero(amount: Decimal) -> Decimal:
    """-0 money as 0, with its places: "-0.00" (a billing system's rounded -0.001) read
    "Balance -0.00 yuan" in a customer's SMS. A JSON number -0.0 is a float, made 0 by
    `_number`; only a decimal string (or a Python value) can carry the sign to here."""
    return amount.copy_abs() if amount.is_zero() else amount


def _money(**bounds: Any) -> CoreSchema:
    parsed = cs.decimal_schema(strict=False, allow_inf_nan=False)
    # Money above 0 has no lower bound but 0: -1e10 was told ">= -999999999.9999".
    bounds = {"le": MONEY_MAX} | ({} if "gt" in bounds else {"ge": -MONEY_MAX}) | bounds
    positive = bounds.get("gt") == 0
    amount = cs.union_schema(
        [
            _text_then(_SIGNED_DECIMAL, parsed),
            cs.chain_schema([cs.int_schema(strict=True), parsed]),
            cs.chain_schema(
                [
                    cs.float_schema(strict=True, allow_inf_nan=False),
                    cs.no_info_plain_validator_function(
                        _number(float(_CENT) if positive else -float(MONEY_MAX))
                    ),
                ]
            ),
            # Last, so that only a negative zero tries it (a failed branch costs an error
            # object: first, it made every amount 0.15 µs slower) and calls Python.
            _text_then(
                _NEGATIVE_ZERO,
                cs.chain_schema([parsed, cs.no_info_plain_validator_function(_unsigned_zero)]),
            ),
        ],
        mode="left_to_right",  # an integer is no float (12, not 12.0, in a description)
        custom_error_type="money_type",
        custom_error_message='Input should be a JSON number or a decimal string like "49.90" '
        "(no exponent, no thousands separator)",
    )
    # A positive amount of 0 is told "greater than 0", one of 0.00001 the least there is.
    least = [cs.decimal_schema(ge=_CENT)] if positive else []
    return cs.chain_schema([amount, cs.decimal_schema(**bounds), *least])


def _integer(ge: int, le: int, multiple_of: int | None = None, example: int | None = None) -> Any:
    """A JSON integer from `ge` to `le`; text is refused naming the fix (a severity of "1"
    read "Input should be a valid integer", which "1" seems to be)."""
    shown = ge if example is None else example
    number = cs.union_schema(
        [cs.int_schema(strict=True), cs.float_schema(strict=True, allow_inf_nan=False)],
        custom_error_type="integer_type",
        custom_error_message=(
            f'write a JSON integer from {ge} to {le} (e.g. {shown}, not "{shown}")'
        ),
    )
    bounded = cs.int_schema(strict=False, ge=ge, le=le)  # 1.0 -> 1; 1.5 refused
    # A number past the bounds is told them before it is made an integer: 1e300 (past
    # what an integer reads from a float) was told "Unable to parse input string as an
    # integer", as text would be. The bounds are small: a float holds them exactly.
    within = cs.float_schema(strict=False, ge=ge, le=le)
    json_schema: JsonDict = {"type": "integer", "minimum": ge, "maximum": le}
    if multiple_of is not None:  # checked by a validator of the type's own, naming the fix
        json_schema["multipleOf"] = multiple_of
    return _json_reads(cs.chain_schema([number, within, bounded]), bounded, json_schema)


def _utc_offset(minutes: int) -> int:
    """Real UTC offsets are whole quarter hours: 8 is hours written as minutes (UTC+8 read
    as 8 minutes put quiet hours abroad 8 hours off)."""
    if minutes % 15:
        hint = f"; minutes: {minutes * 60} for UTC{minutes:+d}" if -12 <= minutes <= 14 else ""
        raise ValueError(
            f"a UTC offset in minutes, a multiple of 15 from -720 to 840 (-12 h to +14 h){hint}"
        )
    return minutes


UtcOffsetMinutes = Annotated[
    int, *_integer(-12 * 60, 14 * 60, multiple_of=15, example=480), AfterValidator(_utc_offset)
]


_MONEY_SCHEMA: JsonDict = {
    "anyOf": [
        {"type": "number", "minimum": -float(MONEY_MAX), "maximum": float(MONEY_MAX)},
        {"type": "string", "pattern": _DECIMAL},
    ],
    "description": "Yuan (CNY) below a billion either way (at most 999999999.9999), "
    "JSON number (rounded to 4 decimal places) or decimal string (at most 4 places)",
}
Money = Annotated[
    Decimal,
    *_json_reads(
        _money(),
        cs.chain_schema(
            [
                cs.decimal_schema(strict=False, allow_inf_nan=False, ge=-MONEY_MAX, le=MONEY_MAX),
                cs.no_info_plain_validator_function(_unsigned_zero),
            ]
        ),
        _MONEY_SCHEMA,
    ),
]


def NullIs(default: Any, json_schema: JsonDict) -> Any:  # noqa: N802 (a type marker)
    """`null` read as `default`, the value of the field left out, for a type whose JSON
    Schema is `json_schema` (the schema then takes null too): every other optional field
    of an event takes null as absent, and a serializer writing unset fields as null
    (Jackson without NON_NULL, Go without omitempty) sent a usage `charge` of null, a dead
    letter. Tried after the type itself, so only a null costs a Python call."""

    def schema(source: Any, handler: Callable[[Any], CoreSchema]) -> CoreSchema:
        return cs.union_schema(
            [
                handler(source),
                cs.chain_schema(
                    [cs.none_schema(), cs.no_info_plain_validator_function(lambda _: default)]
                ),
            ],
            mode="left_to_right",
        )

    nullable: JsonDict = {"anyOf": [json_schema, {"type": "null"}]}
    return GetPydanticSchema(schema), WithJsonSchema(nullable)


Charge = Annotated[Money, *NullIs(Decimal(0), _MONEY_SCHEMA)]
"""A usage record's charge: money, null as left out (0)."""
_POSITIVE = rf"^(?=.*[1-9])[0-9]{{1,{MONEY_DIGITS}}}(\.[0-9]{{1,{MONEY_PLACES}}})?$"
PositiveMoney = Annotated[
    Decimal,
    *_json_reads(
        _money(gt=0),
        cs.decimal_schema(strict=False, allow_inf_nan=False, ge=_CENT, le=MONEY_MAX),
        {
            "anyOf": [
                {"type": "number", "minimum": float(_CENT), "maximum": float(MONEY_MAX)},
                {"type": "string", "pattern": _POSITIVE},
            ],
            "description": "Yuan (CNY) from 0.0001 to 999999999.9999, JSON number (rounded to "
            "4 decimal places) or decimal string (at most 4 places)",
        },
    ),
]
# Every instant a pattern of `_RFC3339` can name, any offset; code-built ones are held
# to the same span.
_AWARE = cs.datetime_schema(
    strict=False,
    tz_constraint="aware",
    ge=EVENT_SPAN[0],
    lt=EVENT_SPAN[1],
)
Instant = Annotated[
    dt.datetime,
    *_json_reads(
        _text_then(_RFC3339, _AWARE),
        _AWARE,
        {"type": "string", "format": "date-time", "pattern": _RFC3339},
    ),
]
"""An instant as the contract writes it: RFC 3339 with an offset (not a Unix time, not
`+0800`, not a space for the T). JSON is read as the schemas read it, field by field
(see `_Event`): no number is taken for a time, nor text for a number."""
WrittenInstant = Annotated[
    AwareDatetime,
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _WRITTEN_RFC3339}),
]
"""An instant the detector writes (a task's, a withdrawal's): published with a pattern
(`WRITTEN_TIME_PATTERN`), as `Instant`'s but of the years `eventspan.WRITTEN_YEARS` (an
expiry is a rule's `ttl` after the event), since `jsonschema` checks `format: date-time`
only with `rfc3339-validator` installed (a consumer validating tasks checked no time);
read as any aware datetime, as the tasks the worker stored before are."""
_EMPTY_DATES = "0001-01-01, 1900-01-01 or 9999-12-31"
"""A database's days for none (.NET's and Java's least; SQL Server's and Excel's day 0; the
last, "no end"), as the refusals of a profile's days name them (never the value sent)."""
OUTSIDE_EVENT_YEARS = (
    f"a day of {_YEARS}, the years of event times; one outside them ({_EMPTY_DATES}) is a "
    "database's empty or open-ended date, no day of the line: leave the field out (no "
    'contract_end for a contract with no end), or "" to clear it'
)
"""Why a profile's `joined_on` or `contract_end` outside `EVENT_YEARS` is refused."""
OUTSIDE_BIRTH_YEARS = (
    f"a birthday's year, when written, is of {'-'.join(map(str, BIRTH_YEARS))}; one outside "
    f"them ({_EMPTY_DATES}) is a database's empty date, which would be greeted every 1 "
    "January or 31 December: write MM-DD when only the month and day are known, leave the "
    'field out, or "" to clear it'
)
"""Why a `birthday` of a year outside `BIRTH_YEARS` is refused."""
EPOCH_DAY_REFUSED = (
    f"{EPOCH_DAY} is the day of Unix time 0, a zero an upstream system wrote for a date it "
    'did not have, no day of the line: leave the field out, or "" to clear it, and have '
    "the sender write none for an unknown date"
)
"""Why a profile's `joined_on` or `contract_end` of `EPOCH_DAY` is refused."""
EPOCH_BIRTHDAY_REFUSED = (
    f"{EPOCH_DAY} is the day of Unix time 0, a zero an upstream system wrote for a date it "
    'did not have, which would be greeted every 1 January: leave the field out, or "" to '
    "clear it; a customer truly born that day is written 01-01 (the rules read the month "
    "and day alone)"
)
"""Why a `birthday` of `EPOCH_DAY` is refused."""


def _of_event_years(value: Any) -> Any:
    """A profile's day as given, unless it names a year outside `EVENT_YEARS` (a year 0 too,
    which no `date` has: it was refused "year 0 is out of range", naming no fix)."""
    if isinstance(value, dt.date):
        year: int | None = value.year
    elif isinstance(value, str) and value[:4].isdigit() and value[4:5] == "-":
        year = int(value[:4])
    else:
        year = None  # not a day: the date schema says so
    if year is not None and not EVENT_YEARS[0] <= year <= EVENT_YEARS[1]:
        raise ValueError(OUTSIDE_EVENT_YEARS)
    if year == 1970 and str(value)[:10] == EPOCH_DAY:  # a date's str is YYYY-MM-DD too
        raise ValueError(EPOCH_DAY_REFUSED)
    return value


_DAY = cs.chain_schema(
    [cs.no_info_plain_validator_function(_of_event_years), cs.date_schema(strict=False)]
)
Day = Annotated[
    dt.date,
    *_json_reads(
        _text_then(f"^{_DATE}$", _DAY),
        _DAY,
        {"type": "string", "format": "date", "pattern": PROFILE_DAY_PATTERN},
    ),
]
"""A profile's day (`joined_on`, `contract_end`): a real day of `EVENT_YEARS`."""
SAME_START_AND_END = (
    "start and end are the same, so the window is empty or the whole day: write two times "
    "(e.g. 22:00-08:00), or opt the customer out of the channel to never contact them"
)
"""A quiet-hours window from a time to itself: the rules files refuse one (what it means is
unknown); a profile's was taken and dropped unsaid, so `00:00-00:00` meant to keep a
customer from every contact kept them from none."""


def _two_times(window: str) -> str:
    start, _, end = window.partition("-")
    if start == end:
        raise ValueError(SAME_START_AND_END)
    return window


QuietWindow = Annotated[
    str,
    StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"),
    AfterValidator(_two_times),
    # A back-reference (ECMA-262 and Python's `re` have them; pydantic-core's Rust regex
    # does not, hence the validator above): the schema refuses what the worker does.
    Field(json_schema_extra={"allOf": [{"not": {"pattern": r"^([0-9:]{5})-\1$"}}]}),
]


IanaZone = Annotated[
    str,
    StringConstraints(max_length=64, pattern=ZONE_PATTERN),
    AfterValidator(check_zone),
]
"""A time zone by its IANA name (a name tzdata does not know would put quiet hours and
local days in the default zone's time, unnoticed). The pattern, the schemas' too, is the
form of tzdata's names (`moments.zones.ZONE_PATTERN`: `UTC+8`, `CST`, `asia/shanghai`
refused there); `check_zone` then asks tzdata."""


class _Event(BaseModel):
    # Unknown extra fields are kept (model_extra) but never interpreted. Infinity and NaN
    # (JSON's 1e400) are refused: they cannot be stored and would poison the record.
    # Lax, so that code may build events from plain values ("sms" for a channel); what
    # JSON may hold is held to the schemas field by field (Instant, Money, _integer, and
    # `Strict()` where a number must not be text).
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    event_id: EventId
    subscriber_id: SubscriberId
    occurred_at: Instant = Field(description="Event time, RFC 3339 with an offset")
    region: Annotated[
        Annotated[str, text(32), AfterValidator(str.strip)] | None, AfterValidator(blank_is_none)
    ] = Field(default=None, description="City code such as NJ" + _BLANK_NONE)


def topup_channel(value: str) -> str:
    """A top-up's channel as rules compare it: without the spaces around it, in lowercase."""
    return value.strip().lower()


class TopUpEvent(_Event):
    """A prepaid top-up (billing)."""

    amount: PositiveMoney
    balance_after: Money | None = None
    # Without the spaces around it, as a region, and in lowercase: a padded CHAR column's
    # "app   " was a channel of its own (a second "first top-up" task, an SMS of "by app
    # :"), and so were one system's "APP" and another's "app".
    channel: Annotated[str, filled(32), AfterValidator(topup_channel)] = Field(
        description="app, bank, card, store, auto, ...; taken without the spaces around it, "
        "in lowercase (APP is app)"
    )


class RoamingEvent(_Event):
    """A roaming registration (network)."""

    country: Annotated[
        str,
        StringConstraints(pattern=COUNTRY_PATTERN),
        WithJsonSchema({"type": "string", "enum": list(countries())}),
    ] = Field(
        description="ISO 3166-1 alpha-2, in capitals (GB, not UK), as tzdata's iso3166.tab "
        "lists the codes; XK for Kosovo"
    )
    roaming_type: Literal["international", "domestic"]
    operator: Annotated[Annotated[str, text(64)] | None, AfterValidator(blank_is_none)] = Field(
        default=None, description="Visited network" + _BLANK_NONE
    )
    utc_offset_minutes: UtcOffsetMinutes | None = Field(
        default=None, description="The visited place's UTC offset in minutes: 480 for UTC+8"
    )
    timezone: IanaZone | None = Field(default=None, description="IANA zone of the visited place")


class ComplaintEvent(_Event):
    """A complaint ticket change (customer service)."""

    complaint_id: Annotated[str, filled(64)]
    category: Literal["network", "billing", "service", "product", "other"]
    severity: Annotated[int, *_integer(1, 3)] = Field(description="1 highest to 3")
    status: Literal["opened", "updated", "resolved"]


class UsageEvent(_Event):
    """A usage or service record (network, billing, CRM)."""

    kind: Literal["voice", "sms", "data", "bill_query", "service_order", "service_failure"]
    quantity: Annotated[float, Strict()] | None = Field(
        default=None, ge=0, le=1e15, description="voice seconds, sms count or data bytes"
    )
    charge: Charge = Field(
        default=Decimal(0), description=str(_MONEY_SCHEMA["description"]) + "; null or absent: 0"
    )
    balance_after: Money | None = None
    counterparty: Annotated[Annotated[str, text(32)] | None, AfterValidator(blank_is_none)] = Field(
        default=None, description="Called or messaged number" + _BLANK_NONE
    )
    direction: Literal["in", "out"] | None = Field(
        default=None, description="Voice and SMS: incoming or outgoing"
    )
    service_code: Annotated[Annotated[str, text(64)] | None, AfterValidator(blank_is_none)] = Field(
        default=None, description="Product ordered or failing" + _BLANK_NONE
    )
    imei: Annotated[str, StringConstraints(pattern=r"^[0-9]{14,16}$")] | None = None


_KEPT = "; null or absent: unchanged"
_CLEARS = '; "" (or spaces only) clears it'
_STRIPPED = "; spaces around it are not part of it"


Blank = Annotated[
    str,
    StringConstraints(max_length=64, pattern=rf"^{BLANK_SPACE}*$"),
    AfterValidator(lambda _: ""),
]
"""A profile field's "none": "" or spaces only, read as "" (`apply_profile` clears the
field). For the fields whose value is not free text (dates, a zone)."""


_CHANNEL_WORDS = frozenset(
    [
        "sms",
        "text",
        "texts",
        "message",
        "call",
        "calls",
        "phone",
        "voice",
        "dial",
        "dialer",
        "outbound",
        "telemarketing",
        "manager",
        "managers",
        "agent",
        "push",
        "app",
        "apps",
        "notification",
        "notifications",
    ]
)
"""Words that name one of moments' channels in other terms (`call`, `push`, `in-app`)."""


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
"""A-Z to a-z, and nothing else: what `CHANNEL_WORDS_PATTERN` can say. `str.casefold`
also made words of letters whose folding is ASCII (a long s for `sms`, a sharp s in
`message`, an fi ligature in `notification`, a Kelvin sign in `telemarketing`): the
worker refused a profile the schema took (re-check)."""


def _no_known_channel(value: str) -> str:
    """An opt-out channel moments does not know is kept (counted), but one that reads as a known
    one written otherwise (`SMS`, ` sms`) or in other words (`call`, `push`, `text`)
    would be an opt-out lost: refused, naming the contract's channels (re-check review:
    `["call"]` was ignored, and the customer still got calls)."""
    lowered = value.translate(_ASCII_LOWER)
    known = lowered.strip().replace("-", "_").replace(" ", "_")
    if known in Channel.__members__.values():
        raise ValueError(f"write {known!r} exactly (lowercase, as the contract spells it)")
    if _CHANNEL_WORDS & set(re.split(r"[^a-z]+", lowered)):
        raise ValueError(
            "reads as one of moments' channels: write it as the contract spells them, "
            "sms, outbound_call, manager or app_push (other channels, such as email, are "
            "counted and kept for a version that sends on them)"
        )
    return value


def _any_case(word: str) -> str:
    return "".join(f"[{c}{c.upper()}]" for c in word)


CHANNEL_WORDS_PATTERN = (
    "(^|[^A-Za-z])("
    + "|".join(_any_case(w) for w in sorted(_CHANNEL_WORDS, key=lambda w: (-len(w), w)))
    + ")([^A-Za-z]|$)"
)
"""`_no_known_channel`'s refusal for the schemas: a channel word as a whole word, in any
case (ECMA-262 patterns have no flags); `"SMS"` passed the schema and was a dead letter."""

OptOutChannel = Annotated[
    Channel
    | Annotated[
        str,
        text(32, min_length=1),
        AfterValidator(_no_known_channel),
        Field(json_schema_extra={"allOf": [{"not": {"pattern": CHANNEL_WORDS_PATTERN}}]}),
    ],
    Field(union_mode="left_to_right"),
]
"""A channel of `opt_out`: one moments sends on, or another (`email`), kept by the model,
counted when the profile is applied (`unknown_opt_outs`) and kept in the facts for a newer
version that sends on it (a rolling upgrade): refusing the profile for it lost the SMS
opt-out beside it."""


class ProfileEvent(_Event):
    """A change to the subscriber's profile (CRM): a field absent or null is left as it
    was (a serializer writing unset fields as null clears nothing); each field's
    description says how to clear it, where clearing means something."""

    model_config = ConfigDict(json_schema_extra=lambda schema, _: _stray_schema(schema))

    birthday: (
        Annotated[
            str,
            StringConstraints(pattern=_BIRTHDAY),
            WithJsonSchema({"type": "string", "pattern": BIRTHDAY_PATTERN}),
        ]
        | Blank
        | None
    ) = Field(
        default=None,
        description="MM-DD, or YYYY-MM-DD of 1901-9898 but 1970-01-01, Unix time 0 (02-29 "
        "in leap years only)" + _CLEARS + _KEPT,
    )
    joined_on: Day | Blank | None = Field(
        default=None,
        description="YYYY-MM-DD of 1970-9898 but 1970-01-01, Unix time 0" + _CLEARS + _KEPT,
    )
    contract_end: Day | Blank | None = Field(
        default=None,
        description="YYYY-MM-DD of 1970-9898 but 1970-01-01, Unix time 0 (none for a contract "
        "with no end)" + _CLEARS + _KEPT,
    )
    tier: Annotated[str, text(16), AfterValidator(str.strip)] | None = Field(
        default=None,
        description="diamond, gold, silver, standard, ..." + _STRIPPED + _CLEARS + _KEPT,
    )
    star_level: Annotated[int, *_integer(1, 7)] | None = Field(
        default=None, description="1 to 7" + _KEPT
    )
    timezone: IanaZone | Blank | None = Field(
        default=None,
        description="IANA zone; when never set or cleared, the rules' gating.timezone "
        "(Asia/Shanghai by default)" + _CLEARS + _KEPT,
    )
    quiet_hours: list[QuietWindow] | None = Field(
        default=None,
        max_length=8,
        description="HH:MM-HH:MM local windows, besides the rules' default ones; [] clears "
        "them" + _KEPT,
    )
    status: Literal["active", "suspended", "closed"] | None = Field(
        default=None,
        description="suspended holds or suppresses tasks (the rules' gating.suspended), "
        "closed suppresses them; active lifts either" + _KEPT,
    )
    opt_out: list[OptOutChannel] | None = Field(
        default=None,
        max_length=8,
        description="Channels not to use (sms, outbound_call, manager, app_push; others, "
        "such as email, are counted and kept for a version that sends on them), the whole "
        "list (it replaces the one before); [] clears it" + _KEPT,
    )
    region: Region | Blank | None = Field(
        default=None,
        description="City code such as NJ" + _STRIPPED + _CLEARS + " (the region the "
        "subscriber's events name applies)" + _KEPT,
    )
    manager_id: Annotated[str, text(64), AfterValidator(str.strip)] | None = Field(
        default=None,
        description='Assigned phone manager; "" (or spaces only) for none (unassigned)'
        + _STRIPPED
        + _KEPT,
    )

    @field_validator("birthday")
    @classmethod
    def _birthday(cls, value: str | None) -> str | None:
        # The pattern took only real days (or a blank: ""); the rules read the month and
        # day alone.
        if value is None:
            return None
        value = value.strip()
        if len(value) != 10:
            return value
        if not BIRTH_YEARS[0] <= int(value[:4]) <= BIRTH_YEARS[1]:
            raise ValueError(OUTSIDE_BIRTH_YEARS)
        if value == EPOCH_DAY:
            raise ValueError(EPOCH_BIRTHDAY_REFUSED)
        return value[5:]

    @model_validator(mode="after")
    def _not_a_stray(self) -> ProfileEvent:
        # Every field is optional and unknown ones are kept out of the way, so another
        # type's record on the profile topic read as an update carrying nothing, silently:
        # one dated later made the CRM's next update `late` (STRAY_SIGNS).
        extra = self.model_extra
        if not extra:
            return self
        named = self.model_fields_set & PROFILE_OWN_FIELDS
        for event_type, sign in STRAY_SIGNS.items():
            if named & sign.profile_only:
                continue
            occurrence = sign.names(extra)
            if occurrence is not None:
                kind = event_type.value
                said = " and ".join(f"`{name}`" for name in sign.fields)
                raise ValueError(
                    f"names {said} as a {kind} event does, `{occurrence}` of one {kind} "
                    f"(no profile update carries it) and no field only a profile has: a "
                    f"{kind} event sent to the wrong topic? Produce it to the {kind} topic "
                    f"(telecom.{kind}); a profile update names at least one of "
                    + ", ".join(sorted(sign.profile_only))
                )
        return self


PROFILE_OWN_FIELDS = frozenset(ProfileEvent.model_fields) - frozenset(_Event.model_fields)
"""The profile's own fields: not the identity ones nor `region`, which every event has."""


class StraySign(NamedTuple):
    """What marks a record of another type on the profile topic: it names what the type
    requires and a field of one occurrence of it, which no profile update carries, and
    none of the profile's own fields."""

    fields: dict[str, tuple[Any, ...] | None]
    """Every field the type requires beyond the common ones; a `Literal` one with one of
    its values (a usage `kind` of `voice`, not a CRM's own `kind: "update"`). Alone they
    are no sign: a CRM keeps a subscriber's `country` and `roaming_type` (their home
    country, their roaming plan), a `kind` of line, a plan's `amount` and the `channel`
    it was sold through, and an update carrying those (and a region, or a roaming
    record's `timezone`) was refused as a stray."""
    occurrence: frozenset[str]
    """The type's fields of one occurrence, with a value (not null): its other fields
    but the profile's and the common ones (a top-up's `balance_after`; a roaming
    `operator` or `utc_offset_minutes`; a usage `quantity`, `charge`, `counterparty`,
    `direction`, `service_code`, `imei` or `balance_after`). One of them is needed."""
    profile_only: frozenset[str]
    """The profile's fields the type lacks: naming one makes the record a profile update
    (a roaming record's `timezone` is both types')."""
    blank_none: frozenset[str] = frozenset()
    """The fields of `occurrence` a blank text ("", spaces only) leaves none to the type's
    own decoder (`blank_is_none`: a roaming `operator`, a usage `counterparty` or
    `service_code`): such a value is no more a sign than a null. A CRM's update with a
    blank `operator` beside `country` and `roaming_type` was refused as a roaming record."""

    def names(self, extra: dict[str, Any]) -> str | None:
        """The first field of one occurrence the unknown fields name, when they name all of
        `fields` with their values too; else None."""
        if not all(
            name in extra and (allowed is None or extra[name] in allowed)
            for name, allowed in self.fields.items()
        ):
            return None
        return next((n for n in sorted(self.occurrence) if self._held(n, extra.get(n))), None)

    def _held(self, name: str, value: Any) -> bool:
        """Whether the type's own decoder reads `value` of `name` as a value (not none)."""
        if isinstance(value, str) and name in self.blank_none:
            return blank_is_none(value) is not None
        return value is not None


def _blank_none(model: type[BaseModel]) -> frozenset[str]:
    """The model's fields whose blank text is none (`blank_is_none` among their validators)."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if any(getattr(m, "func", None) is blank_is_none for m in info.metadata)
    )


STRAY_SIGNS: dict[EventType, StraySign] = {
    event_type: StraySign(
        {
            name: get_args(info.annotation) if get_origin(info.annotation) is Literal else None
            for name, info in model.model_fields.items()
            if info.is_required() and name not in _Event.model_fields
        },
        frozenset(
            name
            for name, info in model.model_fields.items()
            if not info.is_required()
            and name not in _Event.model_fields
            and name not in PROFILE_OWN_FIELDS
        ),
        PROFILE_OWN_FIELDS - frozenset(model.model_fields),
        _blank_none(model) - PROFILE_OWN_FIELDS - frozenset(_Event.model_fields),
    )
    for event_type, model in (
        (EventType.TOPUP, TopUpEvent),
        (EventType.ROAMING, RoamingEvent),
        (EventType.USAGE, UsageEvent),
    )
}
"""Top-up, roaming and usage records produced to the profile topic. A complaint is left
out: its `status` is a profile field too, with values a profile refuses already."""


_NONE_SCHEMA: dict[bool, JsonDict] = {
    False: {"type": "null"},
    True: {"anyOf": [{"type": "null"}, {"type": "string", "pattern": rf"^{BLANK_SPACE}*$"}]},
}
"""What an occurrence field holds when it holds no value, by whether a blank text is none
to its type (`StraySign.blank_none`)."""


def _stray_schema(schema: JsonDict) -> None:
    """`ProfileEvent._not_a_stray` in the schema: not any type's `StraySign`."""
    signs: list[JsonValue] = []
    for sign in STRAY_SIGNS.values():
        said: JsonDict = {"required": list(sign.fields)}
        enums: JsonDict = {n: {"enum": list(a)} for n, a in sign.fields.items() if a is not None}
        if enums:
            said["properties"] = enums
        held: list[JsonValue] = [
            {
                "required": [name],
                "properties": {name: {"not": _NONE_SCHEMA[name in sign.blank_none]}},
            }
            for name in sorted(sign.occurrence)
        ]
        said["anyOf"] = held
        own: list[JsonValue] = [{"required": [name]} for name in sorted(sign.profile_only)]
        said["not"] = {"anyOf": own}
        signs.append(said)
    schema["not"] = {
        "description": "A top-up, roaming or usage record on the wrong topic: it names every "
        "field its type requires (a usage kind or a roaming type with one of its values), "
        "one of the fields of one such event that no profile carries (a balance after, a "
        "quantity, a charge, a visited network, ...; not null) and none of the profile's "
        "fields that type lacks",
        "anyOf": signs,
    }


def unknown_opt_outs(event: ProfileEvent) -> list[str]:
    """The entries of the event's `opt_out` that are no channel moments sends on."""
    return [c for c in event.opt_out or () if not isinstance(c, Channel)]


def channel_key(channel: str) -> str:
    """A channel's name as opt-outs are matched by it: A-Z lowered and nothing else (Lua's
    `string.lower`). One only a newer version sends on may be written `WeChat` in the
    profile and `wechat` in that version's tasks: the facts hash records its opt-out
    under this (`opt_out:wechat`), and a task's channel is looked up and withdrawn by it.
    Moments' own channels are lowercase already."""
    return channel.translate(_ASCII_LOWER)


InputEvent = TopUpEvent | RoamingEvent | ComplaintEvent | UsageEvent | ProfileEvent

EVENT_MODELS: dict[EventType, type[_Event]] = {
    EventType.TOPUP: TopUpEvent,
    EventType.ROAMING: RoamingEvent,
    EventType.COMPLAINT: ComplaintEvent,
    EventType.USAGE: UsageEvent,
    EventType.PROFILE: ProfileEvent,
}


class Moment(BaseModel):
    """What fired: the rule, its family and type, and the values that made it fire."""

    model_config = ConfigDict(frozen=True)

    family: Family
    type: str = Field(description="e.g. first_international_roaming")
    rule_id: str
    rule_version: int = Field(ge=1)
    description: str
    params: dict[str, Any] = Field(default_factory=dict)


def open_enum(known: list[str], unknown: str) -> JsonDict:
    """The JSON Schema of a code the contract may extend (a withdrawal's or a deferral's
    `reason`, a dead letter's): any string, the values known today listed as such
    (`anyOf`: an `enum`, or any other string). A closed `enum` made a consumer validating
    with the schemas refuse a reason added later, which the contract allows."""
    return {
        "type": "string",
        "anyOf": [
            {"enum": list(known), "description": "the values this version writes"},
            {"type": "string", "description": unknown},
        ],
    }


DEFERRAL_REASONS: dict[str, str] = {
    "quiet_hours": "the customer's quiet hours (their zone, or the visited place's while "
    "roaming) held it; published when they ended",
    "suspended": "the line was suspended; published once it is active again (`until`: "
    "at most the task's expiry)",
    "merge_window": "a call or manager task held for the merge window (30 minutes by "
    "default) so that the subscriber's other moments join it (`related`)",
    "frequency_cap": "the rule set's frequency cap (3 contacts a week on calls, manager "
    "tasks and SMS by default) was full; published when a contact freed up",
    "contact_cap": "the dispatch policy's contact cap was full; published when a contact freed up",
    "capacity": "its region's and channel's capacity for the day was used up and its "
    "rule's overflow is `defer`; published on the next local day",
    "channel_hours": "its channel was not worked then (`hours:` or `closed_days:` in the "
    "dispatch policy, on the operator's clock): a call made at 00:30 is published when the "
    "call centre opens, and one made on a day it is closed the first day it opens after",
    "unreachable_retry": "a retry (`attempt` >= 1, `retry_of`) after an `unreachable` "
    "outcome, waiting `outcomes.unreachable_retry_after` (2 hours by default)",
    "deliver_after": "its moment was dated ahead of the detector's clock (within the "
    "15 minutes an event may be): published at its `deliver_after`",
}
"""Every `Deferral.reason` the detector writes (engine gating, the dispatch sink, outcome
retries), and what it means to a consumer: the schema and docs/consuming-tasks.md list
them (a test holds both to the code)."""


class Deferral(BaseModel):
    """Why and until when a task was held back before it was published (quiet hours, a
    suspended line, the merge window, a cap, capacity, a retry's wait); a task that waited
    for several reasons in turn carries the last."""

    model_config = ConfigDict(frozen=True)

    reason: Annotated[
        str,
        WithJsonSchema(
            open_enum(
                list(DEFERRAL_REASONS),
                'a reason added later: read it as "it waited" (docs/consuming-tasks.md)',
            )
        ),
    ] = Field(
        description="Why it waited: "
        + "; ".join(f"`{name}`: {meaning}" for name, meaning in DEFERRAL_REASONS.items())
        + ". New reasons may be added"
    )
    until: WrittenInstant = Field(description="Until when it was to wait")


class QuietHours(BaseModel):
    """The customer's quiet hours that hold back a task: the windows, read on the wall
    clock of a zone (theirs, or the visited place's while roaming)."""

    model_config = ConfigDict(frozen=True)

    zone: str = Field(
        max_length=64, description="IANA name, or a UTC offset such as +08:00 (roaming)"
    )
    windows: list[str] = Field(
        min_length=1, max_length=16, description="HH:MM-HH:MM local windows, default and own"
    )
    channels: list[Channel] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # a published task's quiet hours: {zone, windows}
        max_length=4,
        description="The channels they hold back (the rules' gating.quiet_hours_channels), "
        "kept while a task waits so that one moved to another channel (a fallback) is judged "
        "by that channel's; absent: the task's own channel. Not published: a published task "
        "carries quiet_hours only when they hold back its channel",
    )


TASK_ID_PATTERN = r"^[0-9a-f]{32}$"
"""Every task id the detector makes: a 16-byte blake2b digest in lowercase hex."""


class RelatedMoment(BaseModel):
    """Another moment of the same subscriber merged into a task (merge window)."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(
        description="The id the moment's own task would have had",
        json_schema_extra={"pattern": TASK_ID_PATTERN},
    )
    moment: Moment
    priority: int = Field(ge=1, le=5)
    channel: Channel
    action: str
    triggered_at: WrittenInstant
    expires_at: WrittenInstant | None = Field(
        default=None,
        description="When this moment lapses (the task's `expires_at` is the latest of its "
        "moments'): a contact after it should leave this one out",
    )
    evidence: list[str]


class RiskPart(BaseModel):
    """One signal's contribution to the churn-risk score."""

    model_config = ConfigDict(frozen=True)

    signal: str = Field(description="e.g. competitor_hotline_calls, spend_drop")
    value: float = Field(description="The signal's value, in its own unit")
    points: float = Field(ge=0, description="Points it adds to the score")


class RiskScore(BaseModel):
    """An explainable churn-risk score: the sum of its parts, 0 to 100."""

    model_config = ConfigDict(frozen=True)

    score: float = Field(ge=0, le=100)
    parts: list[RiskPart]
    priority_raised_by: int = Field(default=0, ge=0, description="Levels the score added")


class ServiceTask(BaseModel):
    """A work order on `moments.tasks` for SMS, outbound call, manager or app push."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(
        description="Deterministic: same moment occurrence, same id",
        json_schema_extra={"pattern": TASK_ID_PATTERN},
    )
    subscriber_id: SubscriberId
    region: str | None = None
    tier: str | None = None
    manager_id: str | None = None
    moment: Moment
    priority: int = Field(ge=1, le=5, description="1 highest")
    channel: Channel
    action: str = Field(description="Template or recommended action id")
    triggered_at: WrittenInstant = Field(description="Event time of the moment")
    created_at: WrittenInstant
    deliver_after: WrittenInstant
    expires_at: WrittenInstant
    evidence: list[str] = Field(description="Event ids that led to the task")
    deferred: Deferral | None = None
    quiet_hours: QuietHours | None = Field(
        default=None,
        description="The customer's quiet hours, when they hold back the task's channel: "
        "the detector publishes no task inside them (judged again whenever a task was held "
        "back); a consumer that schedules the contact later should keep out of them too",
    )
    related: list[RelatedMoment] | None = Field(
        default=None,
        description="Other moments of the subscriber merged into this task, with their evidence",
    )
    risk: RiskScore | None = Field(default=None, description="Churn-risk score and its parts")
    attempt: int = Field(
        default=0, ge=0, description="0 for the first delivery; n for the n-th retry"
    )
    retry_of: str | None = Field(
        default=None,
        description="The `task_id` of the first task (attempt 0) this one retries after an "
        "`unreachable` outcome: the same on every retry of it, the second's too (not the "
        "id of the attempt before)",
        json_schema_extra={"pattern": TASK_ID_PATTERN},
    )
    moment_id: str | None = Field(
        default=None,
        description="The leading moment's own id: the task id it would have had alone. "
        "`task_id` for a task of one moment; for a merged task the leading moment's (while "
        "`task_id` is the group's, which may be that of a moment in `related`), so "
        "`moment_id` and the `related` task ids name each moment once; a retry keeps its "
        "original's. Set on every task the detector makes (read one without it as "
        "`task_id`)",
        json_schema_extra={"pattern": TASK_ID_PATTERN},
    )
    counted: SkipJsonSchema[bool] = Field(
        default=False,
        exclude=True,  # written only in the payload a task waits with (`task_bytes`)
        description="Dispatch's own, kept while the task waits and never published (not in "
        "the schema): the task of a moment judged again (a silence over a long suspension) "
        "that took over its first task's entry, dropped unsent (`TaskLedger.claim`'s "
        "`TAKEN_OVER`): that drop counted the moment, so this task's drop counts nothing",
    )

    @model_validator(mode="before")
    @classmethod
    def _own_moment(cls, data: Any) -> Any:
        """A task made of one moment is that moment's (also one stored before the field)."""
        if isinstance(data, dict) and data.get("moment_id") is None and "task_id" in data:
            return {**data, "moment_id": data["task_id"]}
        return data


class TaskWithdrawal(BaseModel):
    """A notice on `moments.task-withdrawals`: a task published earlier, not yet expired,
    must not be acted on any more (the customer opted out of its channel, the line was
    closed, or the subscriber was forgotten after it was published)."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(
        description="The withdrawn task's task_id, as published: one notice per task (a "
        "repeat after a crash carries the same task_id and reason)",
        json_schema_extra={"pattern": TASK_ID_PATTERN},
    )
    subscriber_id: SubscriberId
    channel: Channel = Field(description="The channel the task went out on (its `channel`)")
    moment_type: str = Field(description="The task's `moment.type`")
    reason: Annotated[
        WithdrawReason | str,
        WithJsonSchema(
            open_enum(
                [r.value for r in WithdrawReason],
                'a reason added later: read it as "do not act on it" (docs/consuming-tasks.md)',
            )
        ),
    ] = Field(
        # Open, as its schema and the contract say: a known reason is read as the enum's,
        # another as its text. Closed, a consumer reading the topic with this model
        # stopped on a withdrawal of a reason added later, one it must act on.
        union_mode="left_to_right",
        description="opt_out: the customer opted out of `channel`; closed: the line was "
        "closed; forgotten: the subscriber was erased (a profile tombstone). New reasons may "
        "be added",
    )
    occurred_at: WrittenInstant = Field(
        description="When the profile change happened: the profile update's `occurred_at`, "
        "or a tombstone's record timestamp; for a task dropped when it was to be sent again "
        "after a worker died, when it was dropped"
    )
    withdrawn_at: WrittenInstant = Field(
        description="When the detector withdrew the task (a repeat may carry a later one), "
        "on the clock of `occurred_at`"
    )
    expires_at: WrittenInstant = Field(
        description="The task's `expires_at`: no withdrawal of it comes after this, and a "
        "consumer may forget the task then"
    )


def retry_id(root_task_id: str, attempt: int) -> str:
    """The id of the n-th retry of a task: the same outcome re-read makes the same id."""
    digest = hashlib.blake2b(f"{root_task_id}|retry|{attempt}".encode(), digest_size=16)
    return digest.hexdigest()


def earlier_attempts(task: ServiceTask) -> list[str]:
    """The ids of the attempts before this retry (none for a first delivery): the task
    it retries first of all (`retry_of`), then its retries before this one."""
    if task.retry_of is None:
        return []
    return [task.retry_of, *(retry_id(task.retry_of, n) for n in range(1, task.attempt))]


AGENT_NUMBER_MAX = 2**63 - 1
"""The largest whole number taken as an outcome's `agent_id` (a signed 64-bit id)."""


def _agent_text(value: Any) -> Any:
    """A whole number from 0 to `AGENT_NUMBER_MAX` as its decimal text: a dialer's or a
    call centre's agent ids are numbers, and an outcome written with one (`"agent_id":
    17`) was a dead letter, a decline or an unanswered call lost (outcomes are not
    replayed) for a label the detector does not read. JSON Schema's `integer` (the
    schema's) includes 17.0; anything else is left for the string check to refuse."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not value.is_integer():
        return value
    return str(int(value)) if 0 <= value <= AGENT_NUMBER_MAX else value


AgentId = Annotated[
    str | None,
    BeforeValidator(_agent_text),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": 128},
                {"type": "integer", "minimum": 0, "maximum": AGENT_NUMBER_MAX},
                {"type": "null"},
            ],
            "description": "Who acted on the task, for people (the detector reads none of "
            "it). A whole number is taken as its decimal text",
        }
    ),
]


class TaskOutcome(BaseModel):
    """Written by dispatch consumers to `moments.task-outcomes`."""

    # A consumer's own fields are taken and dropped, not kept (the schema still allows
    # them): the detector reads none, and one holding NaN or Infinity (no JSON, but the
    # parser takes them) would be written as null by any later dump of the outcome.
    model_config = ConfigDict(
        extra="ignore", frozen=True, json_schema_extra={"additionalProperties": True}
    )

    # maxLength too: `$` in Python's re (jsonschema's) also matches before a final \n
    task_id: str = Field(
        pattern=TASK_ID_PATTERN, max_length=32, description="The task's task_id, as published"
    )
    subscriber_id: SubscriberId
    status: OutcomeStatus
    occurred_at: Instant
    agent_id: AgentId = Field(default=None, max_length=128)
    note: str | None = Field(
        default=None,
        description="Free text for people (the detector acts on none of it). One over "
        "2,000 characters is cut to 2,000, ending ` [cut from N characters]`: the outcome "
        "is taken (a long note made it a dead letter, and outcomes are not replayed)",
    )


def _instant_fields(*models: type[BaseModel]) -> frozenset[str]:
    """The names of the models' fields typed `Instant`."""
    marks = get_args(Instant)[1:]
    return frozenset(
        name
        for model in models
        for name, spec in model.model_fields.items()
        if all(any(m is mark for m in spec.metadata) for mark in marks)
    )


TIME_FIELDS = _instant_fields(*EVENT_MODELS.values(), TaskOutcome)
"""The fields holding an instant (`Instant`), of the input events and the task outcome."""
