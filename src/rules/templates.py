"""Task description templates: `{name}` and `{name:spec}` placeholders filled from values.

A placeholder is a param's name, alone or with a number format from a small safe subset
of Python's (`{spend:.2f}`, `{balance:,.0f}`, `{ratio:.0%}`, `{change:+.0%}`): an
optional sign, a thousands separator, up to `MAX_DECIMALS` decimals and `f` or `%`.
No attribute access, no indexing, no conversion, no nested fields, no width: a template
cannot reach into objects (a rules file cannot run code through it) nor blow a text up to
any length. A bare `{name}` shows the value as it always did (a whole number without
".0")."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""A bare `{name}`."""
FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")
"""`{name}` or `{name:spec}` (the spec any text without braces: `spec_problem` judges it)."""
BRACED = re.compile(r"\{[^{}]*\}")
NESTED = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*[:!][^{}]*\{[^{}]*\}[^{}]*\}")
"""A field inside a placeholder's spec, `{x:{width}}`."""
SPEC = re.compile(r"(?P<sign>[-+ ]?)(?P<grouping>[,_]?)(?:\.(?P<decimals>[0-9]+))?(?P<type>[f%]?)")
MAX_DECIMALS = 6
"""Decimals a spec may ask for: money has 2, a share 1 or 2 as a percentage."""
_LARGEST = 30
"""Digits before the point a formatted number may have; a larger one is shown plain."""
EXAMPLES = "e.g. {x:.2f}, {x:,.0f}, {x:.0%}"


def fill(template: str, values: Mapping[str, Any]) -> str:
    """Fill the placeholders from `values`; unknown or odd ones stay as written.

    A value a spec cannot format (text that is no number: the rules' checks refuse a spec
    on a param that holds text) is shown as a bare `{name}` shows it: a description never
    stops a task."""
    texts, fields = _parts(template)
    if not fields:
        return template
    shown = [texts[0]]
    for (name, spec), text in zip(fields, texts[1:], strict=True):
        value = values.get(name, _MISSING)
        if value is _MISSING or (spec and not _usable(spec)):
            shown.append("{" + name + (":" + spec if spec is not None else "") + "}")
        elif spec:
            shown.append(_formatted(value, spec))
        else:
            shown.append(_shown(value))
        shown.append(text)
    return "".join(shown)


_MISSING = object()


def _shown(value: Any) -> str:
    """A value as a customer reads it: a whole number without ".0" (counts and shares are
    kept as floats: "2 complaints", not "2.0")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):  # a holiday's `also`: not Python's ['national_day']
        return ", ".join(_shown(v) for v in value)
    return str(value)


def _formatted(value: Any, spec: str) -> str:
    number = _number(value)
    if number is None:
        return _shown(value)
    if isinstance(number, float) and number.is_integer() and not spec.endswith(("f", "%")):
        number = int(number)  # `{x:,}` of 1000.0 is 1,000, as `{x}` shows 1000
    try:
        if isinstance(number, Decimal) and "_" in spec:
            # Decimal knows only the ',' separator, and refused '_': money was shown unformatted.
            return format(number, spec.replace("_", ",")).replace(",", "_")
        return format(number, spec)
    except (ValueError, TypeError, OverflowError):  # pragma: no cover - specs are checked
        return _shown(value)


def _number(value: Any) -> int | float | Decimal | None:
    """The value as a number to format, or None: text that reads as one (a JSON dump's
    money, "49.90") is one; a boolean, other text and a huge value are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            return None
    if isinstance(value, Decimal):
        return value if value.is_finite() and value.adjusted() < _LARGEST else None
    if isinstance(value, int):
        return value if abs(value) < 10**_LARGEST else None
    if isinstance(value, float):
        return value if abs(value) < 10.0**_LARGEST else None
    return None


@functools.lru_cache(maxsize=1024)
def _parts(template: str) -> tuple[tuple[str, ...], tuple[tuple[str, str | None], ...]]:
    """The template split at its placeholders: its texts, and between each two a
    placeholder's name and spec (None for a bare one); rules are few, so their templates
    too."""
    split = FIELD.split(template)
    return tuple(split[0::3]), tuple(zip(split[1::3], split[2::3], strict=True))


@functools.lru_cache(maxsize=256)
def _usable(spec: str) -> bool:
    return spec_problem(spec) is None


def placeholders(template: str) -> list[str]:
    """The names the template shows, with or without a spec."""
    return [name for name, _ in FIELD.findall(template)]


def formats(template: str) -> list[tuple[str, str]]:
    """Each placeholder that has a spec: (name, spec)."""
    return [(m.group(1), m.group(2)) for m in FIELD.finditer(template) if m.group(2)]


def unfilled(template: str) -> list[str]:
    """Braced text that is no placeholder (`{x.y}`, `{x[0]}`, `{x!r}`, `{0}`, `{}`,
    `{x:{y}}`): `fill` leaves it as written, so it would reach the customer as such."""
    nested = NESTED.findall(template)
    for found in nested:
        template = template.replace(found, "")
    return nested + [m for m in BRACED.findall(template) if not FIELD.fullmatch(m)]


def unclosed(template: str) -> list[str]:
    """A `{` that opens no placeholder or a `}` that closes none, with the text around it
    (`Welcome to {country`, `{country} }`): `fill` leaves it as written, so the customer
    read "Welcome to {country"."""
    rest = NESTED.sub(lambda m: "\0" * len(m.group()), template)
    rest = BRACED.sub(lambda m: "\0" * len(m.group()), rest)
    found = []
    for at, char in enumerate(rest):
        if char in "{}":
            start, end = max(0, at - 20), min(len(template), at + 21)
            shown = template[start:end]
            found.append(f"{'...' if start else ''}{shown}{'...' if end < len(template) else ''}")
    return found


def spec_problem(spec: str) -> str | None:
    """What is wrong with a format spec, and what to write; None when it is one `fill`
    applies (an empty one shows the value as a bare `{name}` does)."""
    found = SPEC.fullmatch(spec)
    allowed = (
        "a format is an optional sign (+), a thousands separator (, or _), .N decimals "
        f"(0 to {MAX_DECIMALS}) and f (a number) or % (a fraction as a percentage), {EXAMPLES}"
    )
    if found is None:
        if spec.rstrip().endswith("d") and SPEC.fullmatch(spec.rstrip()[:-1] + "f"):
            return f"format ':{spec}' is not filled: for a whole number write :,.0f or :.0f"
        return f"format ':{spec}' is not filled ({_what_is_off(spec)}): {allowed}"
    decimals = found.group("decimals")
    if decimals is not None and int(decimals) > MAX_DECIMALS:
        return f"format ':{spec}' asks for {int(decimals)} decimals; at most {MAX_DECIMALS}"
    if decimals is not None and not found.group("type"):
        return (
            f"format ':{spec}' gives decimals but no type; write :{spec}f for a number or "
            f":{spec}% for a percentage"
        )
    return None


def _what_is_off(spec: str) -> str:
    if any(c in spec for c in "<>^="):
        return "no alignment or width: a text message is not a table"
    if spec[-1:].isalpha() and spec[-1] != "f":
        return f"no type {spec[-1]!r}: only f and %"
    head = spec.split(".", 1)[0]
    if any(c.isdigit() for c in head):
        return "no width or zero padding: a text message is not a table"
    if "," in head and "_" in head:
        return "one thousands separator, , or _, not both"
    return "not in the subset moments fills"
