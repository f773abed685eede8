"""The values the contract allows a field (`moments.models`: its Literals and enums), so
that a rule comparing such a field with another value is refused: `status: open` (the
contract says `opened`) passed validation and matched no event, silently."""

from __future__ import annotations

import difflib
import enum
import types
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from moments.models import EVENT_MODELS, EventType, ProfileEvent

Loc = tuple[str | int, ...]


def _values(annotation: Any) -> tuple[str, ...] | None:
    """The values a field's type allows, in the contract's order; None when it allows
    any (text, numbers, lists)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return tuple(str(a) for a in get_args(annotation))
    if origin is Annotated:
        return _values(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        found: list[str] = []
        for member in get_args(annotation):
            if member is type(None):
                continue
            allowed = _values(member)
            if allowed is None:
                return None
            found += [v for v in allowed if v not in found]
        return tuple(found) or None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(str(m.value) for m in annotation)
    return None


@cache
def event_values(event_types: tuple[EventType, ...], field: str) -> tuple[str, ...] | None:
    """The values `field` may have in events of these types (all of them allowed by one
    type or another); None when any of the types allows any value or lacks the field."""
    found: list[str] = []
    for event_type in event_types:
        info = EVENT_MODELS[event_type].model_fields.get(field)
        allowed = _values(info.annotation) if info is not None else None
        if allowed is None:
            return None
        found += [v for v in allowed if v not in found]
    return tuple(found) or None


@cache
def profile_values(field: str) -> tuple[str, ...] | None:
    """The values a profile field may have; None when it allows any."""
    info = ProfileEvent.model_fields.get(field)
    return _values(info.annotation) if info is not None else None


def tested(op: str, raw: Any) -> Iterator[tuple[Loc, str, Any]]:
    """What an operator compares a field with: (place under the operator, `value` or
    `prefix`, the value), for `eq`, `ne`, `in`, `not_in` and `prefix`; nothing for the
    numeric ones. `eq: null` (asks for a missing value) is left out."""
    if op in ("eq", "ne"):
        if raw is not None:
            yield (), "value", raw
    elif op in ("in", "not_in", "prefix"):
        kind = "prefix" if op == "prefix" else "value"
        if isinstance(raw, list):
            for i, value in enumerate(raw):
                yield (i,), kind, value
        elif raw is not None:
            yield (), kind, raw


def when_tests(test: Any) -> Iterator[tuple[Loc, str, Any]]:
    """As `tested`, for a `when:` entry: a scalar (equality), a list (one of) or a map of
    operators (its place then starts with the operator)."""
    if isinstance(test, dict):
        for op, raw in test.items():
            for loc, kind, value in tested(str(op), raw):
                yield (op, *loc), kind, value
    elif isinstance(test, list):
        yield from tested("in", test)
    else:
        yield from tested("eq", test)


def refusal(what: str, kind: str, value: Any, allowed: Sequence[str]) -> str | None:
    """Why `value` can never match `what` (a field whose values are `allowed`), with
    the values to choose from; None when it can."""
    text = str(value)
    if kind == "prefix":
        if any(a.startswith(text) for a in allowed):
            return None
        said = f"no value of {what} starts with {text!r}"
    elif text in allowed:
        return None
    else:
        said = f"{what} is never {text!r}"
    close = difflib.get_close_matches(text, allowed, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close and kind != "prefix" else ""
    return f"{said}: the contract allows {_listed(allowed)}{hint}"


def _listed(values: Iterable[str]) -> str:
    return ", ".join(values)
