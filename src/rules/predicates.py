"""Field predicates of the `when:` block: equality, sets, ranges and prefixes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from moments.models import InputEvent
from moments.placetext import PLACE_FIELDS, folded, folded_spec
from rules.operators import (
    OPERATORS,
    bound_test,
    empty_list,
    member,
    members_of,
    number,
    number_hint,
    prefixes_of,
    same,
    starts_with,
)

__all__ = ["OPERATORS", "Predicate", "all_of", "always", "field_test"]

Predicate = Callable[[InputEvent], bool]


def always(_event: InputEvent) -> bool:
    return True


def field_test(field_name: str, spec: Any) -> Predicate:
    """Build a test for one field. `spec` is a scalar (equality), a list (membership) or a
    mapping of operators (rules.operators); a numeric bound that is no number is a
    ValueError. A region or tier is matched whatever its case (moments.placetext)."""
    if field_name in PLACE_FIELDS:
        return _place_test(field_name, spec)
    return _plain_test(field_name, spec)


def _place_test(field_name: str, spec: Any) -> Predicate:
    """The same tests on the folded texts: of the filter, and of the event (read into a
    stand-in, so that the event and what a task records of it keep the text as written)."""
    test = _plain_test(field_name, folded_spec(spec))

    def check(e: InputEvent) -> bool:
        value = folded(getattr(e, field_name, None))
        return test(SimpleNamespace(**{field_name: value}))  # type: ignore[arg-type]

    return check


def _plain_test(field_name: str, spec: Any) -> Predicate:
    if isinstance(spec, list):
        if not spec:
            raise ValueError(empty_list(None, f"event's {field_name}"))
        allowed = members_of(spec)
        return lambda e: member(getattr(e, field_name, None), allowed)
    if not isinstance(spec, Mapping):
        return lambda e: same(getattr(e, field_name, None), spec)
    return all_of([_operator(field_name, op, arg) for op, arg in spec.items()])


def _operator(field_name: str, op: str, arg: Any) -> Predicate:
    def get(e: InputEvent) -> Any:
        return getattr(e, field_name, None)

    if op in ("in", "not_in") and not isinstance(arg, list):
        # A word here was taken as its letters (`in: data`: d, a, t) and matched nothing.
        raise ValueError(f"{op} needs a list, got {arg!r}: write {op}: [{arg}]")
    if op in ("in", "not_in", "prefix") and arg == []:
        raise ValueError(empty_list(op, f"event's {field_name}"))

    if op == "in":
        members = members_of(arg)
        return lambda e: member(get(e), members)
    if op == "not_in":
        members = members_of(arg)
        return lambda e: not member(get(e), members)  # a missing value is in no list
    if op == "prefix":
        prefixes = prefixes_of(arg)
        return lambda e: starts_with(get(e), prefixes)
    if op == "eq":
        return lambda e: same(get(e), arg)
    if op == "ne":
        return lambda e: not same(get(e), arg)
    bound = number(arg)
    if bound is None:
        raise ValueError(f"{op} needs a number, got {arg!r}: {number_hint(arg)}")
    if not math.isfinite(bound):
        # `gte: .nan` compared false with every value: the rule loaded and never fired.
        raise ValueError(f"{op} needs a finite number, got {arg!r}: write a number, e.g. 100")
    test = bound_test(op)
    return lambda e: test(get(e), arg)


def all_of(tests: list[Predicate]) -> Predicate:
    if not tests:
        return always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda e: first(e) and second(e)
    return lambda e: all(t(e) for t in tests)
