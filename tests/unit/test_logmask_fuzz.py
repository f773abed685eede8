"""Generated log lines in the shapes `moments.logmask` documents: no id after an id field's
name survives in clear (5 digits or more, any number of them quoted), no setting or
quantity is touched, and no 7 digits in a row are left of a number written as people and
programs write one (`+86`, groups, quotes, JSON, a dict's repr, a URL, a bytes literal)."""

from __future__ import annotations

import datetime
import json
import re
from urllib.parse import quote, urlencode

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from moments.logmask import install_pii_masking, mask_text

DIGITS = "0123456789"
# unquoted: 5 digits or more, over the contract's 20 too; quoted: any number of them
IDS = st.text(DIGITS, min_size=5, max_size=30)
QUOTED_IDS = st.text(DIGITS, min_size=1, max_size=30)
# id names as code and people write them, singular and plural
NAMES = st.sampled_from(
    [
        *("subscriber_id", "subscriberId", "SubscriberId", "SUBSCRIBER_ID"),
        *("subscriber-id", "subscriber id", "subscriber_ids", "subscriberIds"),
        *("msisdn", "MSISDN", "Msisdn", "msisdns", "MSISDNS"),
        *("counterparty", "counterParty", "counter_party", "counterparties"),
        *("counter party", "Counter Party", "counter-party"),
        *("COUNTERPARTY", "imei", "IMEI", "imeis", "Imei"),
    ]
)


NULLS = st.sampled_from(["None", "null"])
# between the ids of a list written without brackets, in a URL too
BARE_SEPARATORS = [", ", ",", " , ", "/", ";", "|", " | ", " ; ", " / ", " ", "  ", "\t"]
BARE_SEPARATORS += ["%2C", "%2c", "%2C%20", "%2F", "%3B", "%7C", "%20", "+", "%252C"]


@st.composite
def id_names(draw: st.DrawFn) -> str:
    """An id's name alone or as the part of a longer one (`event.`, `x_`, `callerMsisdn`)."""
    name = draw(NAMES)
    prefix = draw(st.sampled_from(["", "event.", "x_", "X_", "caller_", "caller", "Caller"]))
    if prefix in ("caller", "Caller"):  # camelCase: the name's part starts upper case
        name = name[0].upper() + name[1:]
    suffix = draw(st.sampled_from(["", "_list", "List", "2"]))
    return prefix + name + suffix


@st.composite
def values(draw: st.DrawFn, quote: str, ids: list[str]) -> str:
    items = [f"{quote}{i}{quote}" for i in ids]
    if len(items) > 1 and draw(st.booleans()):  # ids alone, without brackets
        if draw(st.booleans()):  # a null among them, first too
            items.insert(draw(st.integers(0, len(items) - 1)), draw(NULLS))
        return draw(st.sampled_from(BARE_SEPARATORS)).join(items)
    if len(items) > 1 and draw(st.booleans()):  # something else among them, or a dict
        other = draw(st.sampled_from(["None", "null", "'n/a'", "True", "-1"]))
        if draw(st.booleans()):
            items.insert(draw(st.integers(0, len(items) - 1)), other)
        else:
            return "{" + ", ".join(f"{item}: {other}" for item in items) + "}"
    comma = draw(st.sampled_from([", ", ",", " , "]))
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    opening, closing = draw(st.sampled_from([("[", "]"), ("(", ")"), ("{", "}")]))
    trailing = "," if len(items) == 1 and opening == "(" else ""
    return f"{opening}{comma.join(items)}{trailing}{closing}"


@st.composite
def id_lines(draw: st.DrawFn) -> tuple[str, list[str]]:
    quote = draw(st.sampled_from(["", "'", '"']))
    ids = draw(st.lists(QUOTED_IDS if quote else IDS, min_size=1, max_size=4))
    name, value = draw(id_names()), draw(values(quote, ids))
    shapes = ["{k}={v}", "{k}: {v}", '"{k}": {v}', "{k} {v}", "{k}={v};"]
    # a joining word between the name and the value (`msisdn is 97531`)
    shapes += ["{k} is {v}", "{k} was {v}", "{k}: is {v}", "{k} of {v}", "{k} for {v}"]
    # a duration between them, a comma or a space after it
    shapes += ["{k} for 30 s {v}", "{k} for 30 s, {v}", "{k} were 12 ms 30 s {v}"]
    if len(ids) == 1 and not quote and value == ids[0]:  # a query inside a query's value
        shapes += ["{k}%3D{v}", "{k}%253D{v}", "{k}%3A%20{v}"]
    shape = draw(st.sampled_from(shapes))
    before = draw(st.sampled_from(["", "dispatching ", "extra={", "event("]))
    after = draw(st.sampled_from(["", " done", ", offset=12", "}"]))
    # what may not be left in the line: each id as written (a short one may be any number)
    return before + shape.format(k=name, v=value) + after, [f"{quote}{i}{quote}" for i in ids]


@settings(max_examples=150, deadline=None)
@given(id_lines())
def test_no_id_after_its_name_survives(line_ids: tuple[str, list[str]]) -> None:
    line, ids = line_ids
    masked = mask_text(line)
    # a mask keeps at most 3 and 4 digits: no run of 5 is left of any id (a URL's escape,
    # `%20`, is no digits of one)
    assert not re.search(r"[0-9]{5}", re.sub(r"%[0-9A-Fa-f]{2}", " ", masked)), (line, masked)
    assert all(i not in masked for i in ids), (line, masked)


SETTING_NAMES = st.sampled_from(
    [
        *("ledger_ttl_seconds", "MOMENTS_LEDGER_TTL_SECONDS", "took_ms", "batch_bytes"),
        *("rows_count", "lag_seconds", "cache_mib", "MOMENTS_ROCKSDB_BLOCK_CACHE_MIB"),
    ]
)
# names holding an id's letters inside another word, and plain quantities: numbers up to
# 6 digits (7 and more are masked in free text, whatever the name says)
PLAIN_NAMES = st.sampled_from(
    [
        *("SubscriberIdleTimeout", "subscriberidle", "nosubscriber_id", "anytimeinterval"),
        *("primeiro", "Msisdnx", "Primeiro", "offset", "port", "partition", "pid"),
    ]
)


@st.composite
def quantity_lines(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        name, number = draw(SETTING_NAMES), draw(st.text(DIGITS, min_size=1, max_size=20))
    else:
        name, number = draw(PLAIN_NAMES), draw(st.text(DIGITS, min_size=1, max_size=6))
    shape = draw(st.sampled_from(["{k}={v}", "{k}: {v}", '"{k}": {v}', "{k}={v},"]))
    before = draw(st.sampled_from(["", "started ", "{", "config("]))
    return before + shape.format(k=name, v=number)


@settings(max_examples=100, deadline=None)
@given(quantity_lines())
def test_settings_and_quantities_are_left_alone(line: str) -> None:
    assert mask_text(line) == line


# Ids written as people and programs write them, in the lines that carry them. Each id is
# checked as its digits: no 7 of them in a row may be left, whatever stood between them.
CN_MOBILE = st.from_regex(r"\A1[3-9][0-9]{9}\Z")
LONG_IDS = st.text(DIGITS, min_size=7, max_size=24)


def _groups(national: str, sep: str) -> str:
    return sep.join((national[:3], national[3:7], national[7:]))


@st.composite
def abroad_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A number abroad (`+44 20 7946 0958`) or a landline's (`0755 8888 6666`, `+86 10
    8888 6666`), written in groups, and its digits."""
    separator = draw(st.sampled_from([" ", "-"]))
    if draw(st.booleans()):
        country = draw(st.from_regex(r"\A[1-9][0-9]{0,2}\Z"))
        groups = draw(st.lists(st.text(DIGITS, min_size=2, max_size=6), min_size=2, max_size=5))
        assume(len(country + "".join(groups)) <= 15)  # E.164: 15 digits at most
        return "+" + separator.join([country, *groups]), country + "".join(groups)
    area = draw(st.from_regex(r"\A0[1-9][0-9]{1,2}\Z"))
    line = draw(st.text(DIGITS, min_size=8, max_size=8))
    national = separator.join([area, line[:4], line[4:]])
    if draw(st.booleans()):
        return national, area + line
    return f"+86{separator}{national[1:]}", "86" + area[1:] + line


@st.composite
def other_groupings(draw: st.DrawFn) -> tuple[str, str]:
    """A mobile number grouped otherwise (`138 00138 001`, `138.0013.8001`), 9 digits in
    groups of 3 (`612 345 678`), a landline's
    with its area code in brackets (`(0755) 8888-6666`), a US number's (`(415) 555-2671`,
    `+1 (415) 555-2671`, `415-555-2671`) or an IMEI (`35-209900-176148-1`), 9 digits in
    groups of 3 after a country code without a `+` (`34 612 345 678`, `1-800-138-001`)."""
    separator = draw(st.sampled_from([" ", "-"]))
    kinds = ["mobile", "dotted", "landline", "us", "us dashed", "imei", "nine", "coded nine"]
    kind = draw(st.sampled_from(kinds))
    if kind == "coded nine":  # Spain's, Poland's, ... code, or any code and dashes only
        national = draw(st.from_regex(r"\A[1-9][0-9]{8}\Z"))
        if draw(st.booleans()):
            country = draw(st.sampled_from(["34", "48", "351", "420", "421", "0034", "0048"]))
            groups = [country, national[:3], national[3:6], national[6:]]
            # a short number after it, none of its digits (`34 612 345 678 9`)
            tail = draw(st.sampled_from(["", " 9", " 12"]))
            return separator.join(groups) + tail, country + national
        country, separator = draw(st.from_regex(r"\A[0-9]{1,3}\Z")), "-"
        # more groups with dashes, of any length (`1-800-138-001-002`)
        more = draw(st.lists(st.text(DIGITS, min_size=1, max_size=4), max_size=2))
        groups = [country, national[:3], national[3:6], national[6:], *more]
        return separator.join(groups), country + national + "".join(more)
    if kind == "nine":  # 3, 3 and 3 digits: a mobile number in Spain, Poland, Czechia
        national = draw(st.from_regex(r"\A[1-9][0-9]{8}\Z"))
        return separator.join([national[:3], national[3:6], national[6:]]), national
    if kind == "us dashed":  # dashes only: with spaces it is a row of sizes as often
        national = draw(st.from_regex(r"\A[2-9][0-9]{2}[2-9][0-9]{6}\Z"))
        written = f"{national[:3]}-{national[3:6]}-{national[6:]}"
        country = draw(st.sampled_from(["", "1-", "+1-", "+1 "]))
        return country + written, country.strip("+- ") + national
    if kind == "us":
        national = draw(st.from_regex(r"\A[2-9][0-9]{9}\Z"))
        spaced = draw(st.sampled_from([" ", ""]))
        written = f"({national[:3]}){spaced}{national[3:6]}{separator}{national[6:]}"
        if draw(st.booleans()):
            return "+1 " + written, "1" + national
        return written, national
    if kind == "imei":
        imei = draw(st.text(DIGITS, min_size=15, max_size=16))
        return separator.join([imei[:2], imei[2:8], imei[8:14], imei[14:]]), imei
    if kind == "landline":
        area = draw(st.from_regex(r"\A0[1-9][0-9]{1,2}\Z"))
        line = draw(st.text(DIGITS, min_size=8, max_size=8))
        return f"({area}) {line[:4]}{separator}{line[4:]}", area + line
    national = draw(CN_MOBILE)
    if kind == "dotted":
        return _groups(national, "."), national
    # groups of 2 digits or more, as people group them (`138 00138 001`, `13 800 138 001`)
    cuts = sorted(draw(st.sets(st.integers(2, 9), min_size=1, max_size=3)))
    assume(all(j - i >= 2 for i, j in zip([0, *cuts], [*cuts, 11], strict=False)))
    parts = [national[i:j] for i, j in zip([0, *cuts], [*cuts, 11], strict=True)]
    return separator.join(parts), national


@st.composite
def written_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A number as written, and its digits, now and then with an extension written on it
    (`138 0013 8001x12`)."""
    written, digits = draw(numbers_as_written())
    if draw(st.integers(0, 5)) == 0:
        written += draw(st.sampled_from(["x", "X"])) + draw(st.text(DIGITS, min_size=1, max_size=4))
    return written, digits


@st.composite
def numbers_as_written(draw: st.DrawFn) -> tuple[str, str]:
    """A number as written, and its digits: an E.164 number with +86, with spaces or
    dashes, with or without the country code, one abroad or a landline's, or an id of 7
    digits and more as it is."""
    if draw(st.booleans()):
        digits = draw(LONG_IDS)
        return draw(st.sampled_from([digits, "+" + digits])), digits
    if draw(st.integers(0, 3)) == 0:
        return draw(abroad_numbers())
    if draw(st.integers(0, 3)) == 0:
        return draw(other_groupings())
    national = draw(CN_MOBILE)
    written = draw(
        st.sampled_from(
            [
                *(national, "+86" + national, "86" + national, "0086" + national),
                *("+86 " + national, "+86-" + national, "(+86) " + national),
                *(_groups(national, " "), _groups(national, "-")),
                *("+86 " + _groups(national, " "), "+86-" + _groups(national, "-")),
                *("86 " + _groups(national, " "), "(+86) " + _groups(national, " ")),
            ]
        )
    )
    return written, national


ID_KEYS = ["msisdn", "subscriber_id", "counterparty", "imei", "callerMsisdn", "SUBSCRIBER_ID"]


@st.composite
def carried_numbers(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A log line carrying one to three numbers in one of the shapes logs hold them."""
    numbers = draw(st.lists(written_numbers(), min_size=1, max_size=3))
    written = [w for w, _ in numbers]
    key = draw(st.sampled_from(ID_KEYS))
    value: object = written[0] if len(written) == 1 else written
    shapes = {
        "free text": lambda: "call from " + " and ".join(written) + " failed",
        "key=value": lambda: f"{key}=" + ", ".join(written) + " done",
        "spaced list": lambda: f"{key}s: " + " ".join(written),
        "key: 'value'": lambda: f"{key}: " + ", ".join(repr(w) for w in written),
        "repr of a dict": lambda: "event " + repr({key: value, "count": 3}),
        "JSON": lambda: json.dumps({"event": "dead letter", key: value, "offset": 42}),
        "JSON in a string": lambda: json.dumps({"raw": json.dumps({key: value})}),
        "URL query": lambda: f"GET /v1/tasks?{urlencode({key: written[0], 'n': 1})} 200",
        "URL path": lambda: f"GET /v1/{key}s/{quote(written[0])}/tasks 404",
        "bytes": lambda: f"Sending (key={written[0].encode()!r} value=b'x')",
        "CSV row": lambda: ",".join(["e1", *written, "topup", "50"]),
        "tel URI": lambda: f"dialing tel:{written[0].replace(' ', '-')} (attempt 2)",
        "pydantic error": lambda: (
            f"1 validation error for UsageEvent\n{key}\n  String should match pattern "
            f"[type=string_pattern_mismatch, input_value={written[0]!r}, input_type=str]"
        ),
    }
    line = shapes[draw(st.sampled_from(sorted(shapes)))]()
    return line, [digits for _, digits in numbers]


_MASK = re.compile(r"[0-9]{3}\*+[0-9]{4}|\*+")
_BETWEEN_DIGITS = re.compile(r"%[0-9A-Fa-f]{2}|[^0-9A-Za-z#,]")


def _digits_left(masked: str) -> str:
    """The digits the line shows, each mask one `#`, with what may stand between the
    digits of one number (spaces, dashes, `+`, quotes, `%20`) taken out. A comma stays:
    it parts two numbers, never the groups of one (taken out, a CSV row's `e1,+10 00 00`,
    a 6-digit number left as it should be, read `1100000`, seven digits of the next)."""
    return _BETWEEN_DIGITS.sub("", _MASK.sub("#", masked))


@settings(max_examples=300, deadline=None)
@given(carried_numbers())
# a landline after a landline: `1300 0000 010` of the two read as a mobile number left the
# first matched from its `10`, and `+86` and the second's `0000 0000` showed (a CI flake)
@example(
    (
        "msisdns: 0000000x0 +86 10 1300 0000 010 0000 0000",
        ["0000000", "861013000000", "01000000000"],
    )
)
# two mobile numbers in a spaced list: `130` read as a country code and `1300 0000 130` as
# a mobile number grouped otherwise, so the second's `0000 0000` showed
@example(
    ("msisdns: 130 1300 0000 130 0000 0000x0", ["13013000000", "13000000000"]),
)
# an extension or a country code in brackets ended the list: the next id, 3 groups of 3
# after a number, was read as a row's in free text
@example(("msisdns: +86 10 0000 0000x0 100 000 000x0", ["861000000000", "100000000"]))
@example(("msisdns: (+86) 13000000000 100 000 000x0", ["13000000000", "100000000"]))
# a mobile number grouped otherwise took the next number's head (`13000000 130`), and
# its `0000 0000` showed
@example(
    (
        "msisdns: 0000000x0 13000000 130 0000 0000",
        ["0000000", "13000000", "13000000000"],
    )
)
# 9 digits in groups of 3 after Spain's code, among the ids: read as a row of numbers,
# their code and two groups showed
@example(("msisdns: 34 100 000 000 13000000000x0", ["34100000000", "13000000000"]))
# a field and a short number before a number in a CSV row: no digits of it
@example(("e1,+10 00 00x0,+86 11 0000 0000x0,topup,50", ["100000", "861100000000"]))
def test_no_seven_digits_of_a_number_survive_in_any_shape(
    line_digits: tuple[str, list[str]],
) -> None:
    line, numbers = line_digits
    masked = mask_text(line)
    left = _digits_left(masked)
    for digits in numbers:
        runs = {digits[i : i + 7] for i in range(len(digits) - 6)}
        assert not [run for run in runs if run in left], (line, masked)


@st.composite
def numbers_before_a_date(draw: st.DrawFn) -> tuple[str, str, str]:
    """A number as written and a date after it (`138 0013 8001 2026-12-07`, a time on it
    too), its digits and the date."""
    written, digits = draw(written_numbers())
    day = draw(st.dates(min_value=datetime.date(1000, 1, 1)))
    sign = draw(st.sampled_from(["-", "/"]))
    date = day.strftime(f"%Y{sign}%m{sign}%d") + draw(st.sampled_from(["", "T10:00:00Z"]))
    return f"call {written} {date}", digits, date


@settings(max_examples=200, deadline=None)
@given(numbers_before_a_date())
# a date's year read as the last group of a next number's head: the number showed whole
@example(("call 1300 000 0000 2000-01-01", "13000000000", "2000-01-01"))
def test_a_date_after_a_number_stays_whole(number_date: tuple[str, str, str]) -> None:
    line, digits, date = number_date
    masked = mask_text(line)
    assert masked.endswith(" " + date), (line, masked)
    left = _digits_left(masked.removesuffix(date))
    assert not [digits[i : i + 7] for i in range(len(digits) - 6) if digits[i : i + 7] in left]


@st.composite
def numbers_beside_a_date_or_time(draw: st.DrawFn) -> tuple[str, str, str]:
    """A number as written with a date or a time before it (`2026-12-07 138 0013 8001`,
    `10:00:00 ...`), or a time after it (`+44 20 7946 0958 10:00:00`), its digits and the
    date or time."""
    written, digits = draw(written_numbers())
    moment = draw(st.datetimes(min_value=datetime.datetime(1000, 1, 1)))
    sign = draw(st.sampled_from(["-", "/"]))
    time = moment.strftime(draw(st.sampled_from(["%H:%M", "%H:%M:%S"])))
    if draw(st.booleans()):
        when = draw(
            st.sampled_from(
                [time, moment.strftime(f"%Y{sign}%m{sign}%d"), moment.strftime("%Y-%m-%dT%H:%M:%S")]
            )
        )
        return f"call {when} {written}", digits, when
    return f"call {written} {time}", digits, time


@settings(max_examples=200, deadline=None)
@given(numbers_beside_a_date_or_time())
@example(("call 1999-01-01 130 0000 0000", "13000000000", "1999-01-01"))
# a country code, a dash and groups in a date's shape: read as `+1` and a date, shown
@example(("call +1-0000-01-01 00:00", "100000101", "00:00"))
def test_a_date_or_time_beside_a_number_stays_whole(number_when: tuple[str, str, str]) -> None:
    line, digits, when = number_when
    masked = mask_text(line)
    assert f" {when} " in f"{masked} ", (line, masked)
    left = _digits_left(masked.replace(when, " "))
    runs = [digits[i : i + 7] for i in range(len(digits) - 6)]
    assert not [run for run in runs if run in left], (line, masked)


@st.composite
def numbers_in_groups_with_a_tail(draw: st.DrawFn) -> tuple[str, str]:
    """A number written in groups, or whole after a plus, with letters or a decimal
    fraction straight after it (`+86 138 0013 8001abc`, `+44 20 7946 0958.5`,
    `+8613800138001abc`), or whole with hex letters before it too (`8613800138000abc`,
    `id13800138000`: a number glued to a word, no hex string's), in free text or after an
    id's name, and its digits."""
    kind = draw(st.sampled_from(["abroad", "other", "mobile", "plus", "whole"]))
    if kind == "plus":
        digits = draw(LONG_IDS)
        written = "+" + digits
    elif kind == "whole":
        digits = draw(LONG_IDS)
        written = draw(st.from_regex(r"\A[a-fA-F]{0,6}\Z")) + digits
    elif kind == "abroad":
        written, digits = draw(abroad_numbers())
    elif kind == "other":
        written, digits = draw(other_groupings())
    else:
        digits = draw(CN_MOBILE)
        country = draw(st.sampled_from(["", "+86 ", "+86-", "86 "]))
        written = country + _groups(digits, draw(st.sampled_from([" ", "-"])))
        digits = country.strip("+- ") + digits
    # letters (not an extension's x and digits: that is a test of its own) or a fraction
    # short of 7 digits (its digits stay: a fraction's)
    tail = draw(
        st.one_of(
            st.from_regex(r"\A[A-Za-z_]{1,6}\Z"),
            st.from_regex(r"\A\.[0-9]{1,6}\Z"),
        )
    )
    shape = draw(st.sampled_from(["call {} failed", "msisdn={} done", "{}"]))
    return shape.format(written + tail), digits


@settings(max_examples=300, deadline=None)
@given(numbers_in_groups_with_a_tail())
@example(("call +86 10 1300 0000abc", "861013000000"))
@example(("call +44 20 7946 0958.5", "442079460958"))
@example(("call 8613800138000abc failed", "8613800138000"))
def test_letters_or_a_fraction_on_a_number_in_groups_leave_none_of_it(
    line_digits: tuple[str, str],
) -> None:
    line, digits = line_digits
    masked = mask_text(line)
    left = _digits_left(masked)
    runs = [digits[i : i + 7] for i in range(len(digits) - 6)]
    assert not [run for run in runs if run in left], (line, masked)


# configured names (`install_pii_masking(names=)`) with digits in them: a random topic
# prefix, an app id with a date, a word, digits and letters
CONFIGURED_NAMES = st.one_of(
    st.from_regex(r"\At[0-9a-f]{11}\.?\Z"),
    st.from_regex(r"\Amoments-[0-9]{8}\Z"),
    st.from_regex(r"\A[a-z]{1,4}[0-9]{7,9}[a-f]{0,3}\Z"),
)


@st.composite
def numbers_beside_a_name(draw: st.DrawFn) -> tuple[str, str, str]:
    """A configured name and a number as written beside it, glued to it or after a sign,
    on either side, in free text; the name and the number's digits."""
    name = draw(CONFIGURED_NAMES)
    written, digits = draw(written_numbers())
    assume(not any(digits[i : i + 7] in name for i in range(len(digits) - 6)))
    sign = draw(st.sampled_from(["", " ", ".", "-", "_", ":", "/"]))
    pair = name + sign + written if draw(st.booleans()) else written + sign + name
    return f"topic {pair} done", name, digits


@settings(max_examples=300, deadline=None)
@given(numbers_beside_a_name())
def test_a_configured_name_shows_no_digits_of_a_number_beside_it(
    line_name: tuple[str, str, str],
) -> None:
    """The names keep their own digits and no more: each run of 7 of the number's digits
    the line shows with the name configured it shows without (a number after a dot read
    as a fraction, or in groups glued to a word, is a shape of its own, not the name's)."""
    line, name, digits = line_name
    unnamed = _digits_left(mask_text(line).replace(name, ","))
    install_pii_masking(True, names=[name])
    try:
        masked = mask_text(line)
    finally:
        install_pii_masking(True)
    left = _digits_left(masked.replace(name, ","))
    runs = [digits[i : i + 7] for i in range(len(digits) - 6)]
    assert not [run for run in runs if run in left and run not in unnamed], (line, masked)
