"""Durations written the way analysts write them: `30m`, `24h`, `60d`, `2w`."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from decimal import Decimal

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


_WORDED = re.compile(r"^\s*(\d+)\s*([a-zA-Z]+)\s*$")
_WORDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), "m"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("d", "day", "days"), "d"),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), "w"),
}
_FRACTION = re.compile(r"^\s*(\d*\.\d+)\s*([smhdw])\s*$")
_IN_DAYS = {
    **dict.fromkeys(("mo", "mon", "month", "months"), ("month", 30)),
    **dict.fromkeys(("y", "yr", "yrs", "year", "years"), ("year", 365)),
}
_PAIRS = re.compile(r"^\s*(?:\d+\s*[smhdw]\s*){2,}$")
_PAIR = re.compile(r"(\d+)\s*([smhdw])")
_SPELLED = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]+)")
_JOINS = re.compile(r",|\band\b")
_FORM = "write a number and a unit, e.g. 30m, 24h, 60d"
_LONGEST_HINTED = 64
"""Longer text is told the form alone: no duration in words is that long, and looking
for one in pages of digits took seconds (a number of 5,000 digits is more than Python
reads as an int)."""
_LONG_WORDS = [w for w in (*_WORDS, *_IN_DAYS) if len(w) >= 4]
"""The unit words a misspelling is matched against: those short ones (`hr`, `mo`) are
close to too much."""


MAX_DAYS = 36_500
"""The longest duration read, 100 years: no rule or setting needs more, and more was a
mistake that loaded (`ttl: 3000000d` put every task's expiry past the year 9999, and
each event of the rule failed) or stopped the validation with a traceback (a `timedelta`
of `99999999999d` overflows)."""
_MAX_SECONDS = MAX_DAYS * 86400


def parse_duration(text: str) -> dt.timedelta:
    """Parse `<number><unit>` with unit s, m, h, d or w, at most `MAX_DAYS`; raise
    ValueError as `problem; fix` (a caller may show the fix alone)."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{echoed(str(text))} is not a duration; {_what_to_write(str(text))}")
    digits, unit = match.groups()
    digits = digits.lstrip("0") or "0"  # 5,000 zeros are 0, not more than Python reads
    # A number longer than the most seconds is more in any unit: not read (Python reads
    # no int of more than 4,300 digits, and says so in its own words).
    too_long = len(digits) > len(str(_MAX_SECONDS))
    seconds = 0 if too_long else int(digits) * _UNITS[unit]
    if too_long or seconds > _MAX_SECONDS:
        raise ValueError(
            f"{echoed(str(text).strip())} is longer than {MAX_DAYS}d (100 years), which no "
            f"rule or setting needs; write a shorter duration, {MAX_DAYS}d at most"
        )
    return dt.timedelta(seconds=seconds)


ECHOED_AT_MOST = 20
"""The most characters of a duration an error repeats: one written with thousands of
digits was echoed whole, pages of them before the words that say what to write."""


def cut_short(text: str, at_most: int = ECHOED_AT_MOST) -> str:
    """`text` for an error: its first `at_most` - 3 characters and `...` when longer
    than `at_most`."""
    return text if len(text) <= at_most else text[: at_most - 3] + "..."


def echoed(text: str, at_most: int = ECHOED_AT_MOST) -> str:
    """`text` quoted for an error, cut short (`cut_short`)."""
    return repr(cut_short(text, at_most))


def elapsed_after(start: dt.datetime, duration: dt.timedelta) -> dt.datetime:
    """`start` plus `duration` of elapsed time, shown on `start`'s clock. A duration here
    is seconds (a `d` is 86,400 of them): an aware datetime plus a timedelta adds on its
    zone's wall clock, so across a change of the clocks (DST) a `48h` from a time in
    Europe/London came out 47 or 49 hours on."""
    return (start.astimezone(dt.UTC) + duration).astimezone(start.tzinfo)


def _what_to_write(text: str) -> str:
    """`write 7d` for `7 days`, `write 90d (...)` for `3 months`; else the form."""
    if len(text) > _LONGEST_HINTED:
        return _FORM
    worded = _WORDED.match(text)
    if worded:
        number, word = int(worded.group(1)), worded.group(2).lower()
        if worded.group(2) == "M":  # months in ISO 8601 (P3M) and spreadsheets
            return (
                f"write {number}m for minutes, {number * 30}d for months (a month is no "
                "unit: 30 days each)"
            )
        if word in _WORDS:
            return f"write {number}{_WORDS[word]}"
        if word in _IN_DAYS:
            name, days = _IN_DAYS[word]
            return f"write {number * days}d (a {name} is no unit: {days} days each)"
        # `7 dayz`, `2 weks`: a unit word misspelt was told the form alone.
        close = difflib.get_close_matches(word, _LONG_WORDS, n=1, cutoff=0.75)
        if close:
            return _what_to_write(f"{number} {close[0]}")
    one = _summed(_PAIR.findall(text)) if _PAIRS.match(text) else None
    if one:  # `1w2d`, `1h30m`: the same time in one unit
        return f"write {one} (a duration is one number and one unit)"
    fraction = _FRACTION.match(text)
    if fraction:  # `1.5d`: whole numbers only; the same time in a smaller unit
        whole = _in_one_unit(Decimal(fraction.group(1)) * _UNITS[fraction.group(2)])
        if whole:
            return f"write {whole} (a duration is a whole number of its unit)"
    spelled = _spelled_sum(text)
    if spelled:  # `1 week 2 days`, `1 hour, 30 minutes`, `1.5 days`
        return spelled
    return _FORM


def _spelled_sum(text: str) -> str | None:
    """`write 9d (...)` for units in words summed (`1 week 2 days`, with spaces, commas or
    `and` between), `write 36h (...)` for a fraction of one (`1.5 days`): the time in one
    unit, and why. None when a part is no unit (or `M`: minutes or months?) or the time
    is no whole number of any unit, or past `MAX_DAYS`."""
    joined = _JOINS.sub(" ", text)
    pairs = _SPELLED.findall(joined)
    if not pairs or _SPELLED.sub("", joined).strip():
        return None
    seconds = Decimal(0)
    notes: list[str] = []
    for number, word in pairs:
        unit = _unit_seconds(word)
        if unit is None:
            return None
        each, note = unit
        seconds += Decimal(number) * each
        if note and note not in notes:
            notes.append(note)
    whole = _in_one_unit(seconds) if seconds <= _MAX_SECONDS else None
    if whole is None:
        return None
    why = "one number and one unit" if len(pairs) > 1 else "a whole number of its unit"
    return f"write {whole} (a duration is {'; '.join([why, *notes])})"


def _unit_seconds(word: str) -> tuple[int, str] | None:
    """The seconds of a unit word (`week`, `hrs`, `month`: 30 days, with the note that
    says so; a misspelling of one, `dayz`), None for no unit or `M` (minutes or months)."""
    if word == "M":
        return None
    lower = word.lower()
    if lower in _WORDS:
        return _UNITS[_WORDS[lower]], ""
    if lower in _IN_DAYS:
        name, days = _IN_DAYS[lower]
        return days * 86400, f"a {name} is no unit: {days} days each"
    close = difflib.get_close_matches(lower, _LONG_WORDS, n=1, cutoff=0.75)
    return _unit_seconds(close[0]) if close else None


def _summed(pairs: list[tuple[str, str]]) -> str | None:
    """The sum of `(number, unit)` pairs in one unit: `9d` for `1w2d`, `90m` for `1h30m`;
    None past `MAX_DAYS` (no duration to write)."""
    if any(len(number.lstrip("0")) > len(str(_MAX_SECONDS)) for number, _ in pairs):
        return None  # Python reads no int of more than 4,300 digits
    seconds = sum(int(number) * _UNITS[unit] for number, unit in pairs)
    return _in_one_unit(Decimal(seconds)) if seconds <= _MAX_SECONDS else None


def _in_one_unit(seconds: Decimal) -> str | None:
    """`seconds` in the largest unit it is a whole number (1 or more) of; None: none."""
    for unit in ("w", "d", "h", "m", "s"):
        whole = seconds / _UNITS[unit]
        if whole == int(whole) and whole >= 1:
            return f"{int(whole)}{unit}"
    return None
