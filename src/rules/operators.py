"""The comparison operators of the rule language, on plain values.

One meaning for `eq`, `ne`, `in`, `not_in`, `prefix`, `gt`, `gte`, `lt` and `lte`,
whether they appear in a `when:` filter (rules.predicates) or in a `condition:`
(rules.conditions): numbers compare as numbers (`10` equals `10.0`), other values as
text; a missing value (None) passes no operator but `ne` and `not_in`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

NUMERIC_OPS = ("gt", "gte", "lt", "lte")
OPERATORS = frozenset({"in", "not_in", "prefix", "eq", "ne", *NUMERIC_OPS})


def number(value: Any) -> float | None:
    """The value as a number, or None (booleans and text that is no number are not)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def number_hint(value: Any) -> str:
    """What to write instead of `value` where a number is needed: `-80%` is -0.8."""
    text = str(value).strip()
    percent = number(text[:-1]) if text.endswith("%") else None
    if percent is not None:
        return f"write {percent / 100:g} for {text} (a fraction: % is not read)"
    return "write a number, e.g. 3 or -0.8 (no words, units or %)"


def same(value: Any, expected: Any) -> bool:
    """Equality: numeric when the value is a number and the expected value reads as one
    (an event's 10.0 equals a rule's 10 or "10"), else as text."""
    if value is None:
        return expected is None
    if isinstance(value, str):  # text (and text enums) compare as text, and most often
        return value == str(expected)
    a, b = number(value), number(expected)
    if a is not None and b is not None:
        return a == b
    return str(value) == str(expected)


_ORDER: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@functools.cache
def bound_test(op: str) -> Callable[[Any, Any], bool]:
    """`gt`, `gte`, `lt` or `lte` as a test of (value, bound), False when either side is
    no number; chosen once when a rule is compiled, not by name for every event (a rule's
    comparison runs for most events of its type)."""
    compare = _ORDER[op]

    def test(value: Any, bound: Any) -> bool:
        v, limit = number(value), number(bound)
        return v is not None and limit is not None and compare(v, limit)

    return test


@dataclass(frozen=True, slots=True)
class Members:
    """The list of an `in`/`not_in`: as text, and the entries that read as numbers."""

    texts: frozenset[str]
    numbers: frozenset[float]


def members_of(values: Iterable[Any]) -> Members:
    listed = list(values)
    numbers = (number(v) for v in listed)
    return Members(
        frozenset(str(v) for v in listed), frozenset(n for n in numbers if n is not None)
    )


def member(value: Any, members: Members) -> bool:
    """`in`: a number matches a listed number whatever its spelling (the event's 5.0 and
    the rule's 5 or "5"), text matches listed text (the event's "10000" and the rule's
    10000)."""
    if value is None:
        return False
    if isinstance(value, str):
        return value in members.texts
    n = number(value)
    return (n is not None and n in members.numbers) or str(value) in members.texts


def empty_list(op: str | None, what: str, written: str | None = None) -> str:
    """Why an empty list of `op` (`in`, `not_in`, `prefix`; None: a `when:` field's bare
    list, one of) is refused where it is written: it matches no value, or (`not_in`)
    tests nothing. `what` names the value tested: "event's counterparty"; `written`, the
    list as written when it is no `[]` (a param holding no value)."""
    if written is None:
        written = f"{op}: []" if op else "[]"
    if op == "not_in":
        return (
            f"{written} lists no value, so it lets every event through: list the values to "
            f"leave out, or leave {op}: out"
        )
    found = "starts with one" if op == "prefix" else "is in it"
    return f"{written} lists no value, so no {what} {found} (it matches nothing): list the values"


def starts_with(value: Any, prefixes: tuple[str, ...]) -> bool:
    return value is not None and str(value).startswith(prefixes)


def prefixes_of(raw: Any) -> tuple[str, ...]:
    return tuple(str(p) for p in (raw if isinstance(raw, list) else [raw]))
