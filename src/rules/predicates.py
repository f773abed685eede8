"""Field predicates of the `when:` block: equality, sets, ranges and prefixes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from moments.models import InputEvent

Predicate = Callable[[InputEvent], bool]


def always(_event: InputEvent) -> bool:
    return True


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def field_test(field_name: str, spec: Any) -> Predicate:
    """Build a test for one field. `spec` is a scalar (equality), a list (membership) or a
    mapping of operators: `in`, `not_in`, `prefix`, `gt`, `gte`, `lt`, `lte`, `eq`, `ne`."""
    if isinstance(spec, list):
        allowed = frozenset(str(v) for v in spec)
        return lambda e: str(getattr(e, field_name, None)) in allowed
    if not isinstance(spec, Mapping):
        expected = str(spec)
        return lambda e: str(getattr(e, field_name, None)) == expected
    tests: list[Predicate] = []
    for op, arg in spec.items():
        tests.append(_operator(field_name, op, arg))
    return lambda e: all(t(e) for t in tests)


def _operator(field_name: str, op: str, arg: Any) -> Predicate:
    def get(e: InputEvent) -> Any:
        return getattr(e, field_name, None)

    if op in ("in", "not_in"):
        members = frozenset(str(v) for v in arg)
        if op == "in":
            return lambda e: str(get(e)) in members
        return lambda e: get(e) is not None and str(get(e)) not in members
    if op == "prefix":
        prefixes = tuple(str(p) for p in (arg if isinstance(arg, list) else [arg]))
        return lambda e: get(e) is not None and str(get(e)).startswith(prefixes)
    if op == "eq":
        return lambda e: str(get(e)) == str(arg)
    if op == "ne":
        return lambda e: str(get(e)) != str(arg)
    bound = Decimal(str(arg))
    compare: dict[str, Callable[[Decimal], bool]] = {
        "gt": lambda v: v > bound,
        "gte": lambda v: v >= bound,
        "lt": lambda v: v < bound,
        "lte": lambda v: v <= bound,
    }
    check = compare[op]

    def numeric(e: InputEvent) -> bool:
        value = _number(get(e))
        return value is not None and check(value)

    return numeric


OPERATORS = frozenset({"in", "not_in", "prefix", "eq", "ne", "gt", "gte", "lt", "lte"})


def all_of(tests: list[Predicate]) -> Predicate:
    if not tests:
        return always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda e: first(e) and second(e)
    return lambda e: all(t(e) for t in tests)
