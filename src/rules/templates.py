"""Task description templates: `{name}` placeholders filled from values, nothing else.

No attribute access, no indexing, no format specs: a template cannot reach into
objects, so a rules file cannot run code through it."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
BRACED = re.compile(r"\{[^{}]*\}")


def fill(template: str, values: Mapping[str, Any]) -> str:
    """Fill `{name}` placeholders from `values`; unknown or odd ones stay as written."""
    parts = _parts(template)
    if len(parts) == 1:
        return template
    shown = list(parts)
    for i in range(1, len(parts), 2):
        name = parts[i]
        value = values.get(name, _MISSING)
        shown[i] = "{" + name + "}" if value is _MISSING else _shown(value)
    return "".join(shown)


_MISSING = object()


def _shown(value: Any) -> str:
    """A value as a customer reads it: a whole number without ".0" (counts and shares are
    kept as floats: "2 complaints", not "2.0")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@functools.lru_cache(maxsize=1024)
def _parts(template: str) -> tuple[str, ...]:
    """The template split at its placeholders: text, name, text, ..., text (rules are few,
    so their templates too)."""
    return tuple(PLACEHOLDER.split(template))


def placeholders(template: str) -> list[str]:
    return PLACEHOLDER.findall(template)


def unfilled(template: str) -> list[str]:
    """Braced text that is not a `{name}` placeholder (`{x:.2f}`, `{x.y}`, `{0}`, `{}`):
    `fill` leaves it as written, so it would reach the customer as such."""
    return [m for m in BRACED.findall(template) if not PLACEHOLDER.fullmatch(m)]
