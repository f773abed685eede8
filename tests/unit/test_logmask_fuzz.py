"""Generated log lines in the shapes `moments.logmask` documents: no id after an id field's
name survives in clear (5 digits or more, any number of them quoted), and no setting or
quantity is touched."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from moments.logmask import mask_text

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


# between the ids of a list written without brackets
BARE_SEPARATORS = [", ", ",", " , ", "/", ";", "|", " | ", " ; ", " / ", " ", "  ", "\t"]


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
    shape = draw(st.sampled_from(["{k}={v}", "{k}: {v}", '"{k}": {v}', "{k} {v}", "{k}={v};"]))
    before = draw(st.sampled_from(["", "dispatching ", "extra={", "event("]))
    after = draw(st.sampled_from(["", " done", ", offset=12", "}"]))
    # what may not be left in the line: each id as written (a short one may be any number)
    return before + shape.format(k=name, v=value) + after, [f"{quote}{i}{quote}" for i in ids]


@settings(max_examples=150, deadline=None)
@given(id_lines())
def test_no_id_after_its_name_survives(line_ids: tuple[str, list[str]]) -> None:
    line, ids = line_ids
    masked = mask_text(line)
    # a mask keeps at most 3 and 4 digits: no run of 5 is left of any id
    assert not re.search(r"[0-9]{5}", masked), (line, masked)
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
