"""The values the contract allows a field (`moments.models`: its Literals and enums, and
what its validators take), so that a rule comparing such a field with another value is
refused: `status: open` (the contract says `opened`), `country: UK` (a roaming record
saying UK is a dead letter: GB), `amount: {lt: 0}` passed validation and matched no
event, silently."""

from __future__ import annotations

import difflib
import enum
import math
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from moments.decoding import problem
from moments.models import EVENT_MODELS, EventType, ProfileEvent
from moments.zones import ZONE_PATTERN, tzdata_zones
from rules.operators import NUMERIC_OPS, number

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


def when_tests(test: Any, bounds: bool = False) -> Iterator[tuple[Loc, str, str, Any]]:
    """As `tested` (`compared` with `bounds`), for a `when:` entry: a scalar (equality), a
    list (one of) or a map of operators (its place then starts with the operator); with
    the operator."""
    each = compared if bounds else tested
    if isinstance(test, dict):
        for op, raw in test.items():
            for loc, kind, value in each(str(op), raw):
                yield (op, *loc), str(op), kind, value
    elif isinstance(test, list):
        for loc, kind, value in each("in", test):
            yield loc, "in", kind, value
    else:
        for loc, kind, value in each("eq", test):
            yield loc, "eq", kind, value


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


def holds_number(annotation: Any) -> bool:
    """True when every value of the type is a number: `Decimal`, `int | None`,
    `Annotated[float, ...]`; not `bool`, text, dates or a mix."""
    if get_origin(annotation) is Annotated:
        return holds_number(get_args(annotation)[0])
    if get_origin(annotation) is Union or get_origin(annotation) is types.UnionType:
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return bool(kinds) and all(holds_number(a) for a in kinds)
    return annotation in (int, float, Decimal)


def _holds_list(annotation: Any) -> bool:
    """True when a value of the type may be a list (a profile's `opt_out`, `quiet_hours`)."""
    if get_origin(annotation) is Annotated:
        return _holds_list(get_args(annotation)[0])
    if get_origin(annotation) is Union or get_origin(annotation) is types.UnionType:
        return any(_holds_list(a) for a in get_args(annotation))
    return get_origin(annotation) is list or annotation is list


Bound = tuple[float, bool]
"""A number's bound and whether it is open (`exclusiveMinimum`: the bound itself is out)."""


@dataclass(frozen=True)
class Carried:
    """What one field of a contract model can carry, by the model's own validators (the
    ones that refuse an event: the ISO 3166 list, tzdata, an amount's bounds), to refuse a
    rule's literal that no event or profile can hold: `country: UK` loaded and matched
    nothing, since a roaming record saying UK is a dead letter."""

    field: str
    adapter: TypeAdapter[Any]
    number: bool
    low: Bound | None
    high: Bound | None
    codes: tuple[str, ...] | None
    """The values its schema lists (`enum`), or tzdata's zone names for a `timezone`, for
    `prefix:`."""
    profile: bool = False
    """A profile's field (tested with `profile:`), not an event's."""
    zone: bool = False
    """An IANA time zone name (`codes`: tzdata's names)."""

    def refused(self, value: Any) -> str | None:
        """Why `value`, as a rule compares it with the field (numbers as numbers, anything
        else as its text: `rules.operators`), is never the field's; None when it may be."""
        if self.number:
            read = number(value)
            if read is None:
                return "it holds a number, and this is none: write a number, e.g. 100"
            value = read
        else:
            value = str(value)
        try:
            held = self.adapter.validate_python(value)
        except ValidationError as refused:
            return self._why(refused.errors())
        if held is None or held == "":
            if self.profile:  # "" clears the field: it is gone from the profile
                none = f"not: {{profile: {self.field}}}"
            else:
                none = f"`{self.field}: null` in when:, not: {{field: {self.field}}} in a condition"
            return f"a blank text is read as no value, never as one (to test for none: {none})"
        if isinstance(held, str) and held != value and held == value.strip().lower():
            # a top-up's channel: taken in lowercase, `APP` is `app`
            return f"it is taken in lowercase: write {held!r}"
        return None

    def _why(self, errors: list[ErrorDetails]) -> str:
        # A validator's own words (check_zone's, _utc_offset's) over a pattern's or a
        # union branch's; the field is named as the event's, for the fixes the dead
        # letters give (country_fix, zone_refusal, the IMEI's, a subscriber's).
        error = next((e for e in errors if e["type"] == "value_error"), errors[0])
        ctx = error.get("ctx") or {}
        bound = {
            "greater_than_equal": ("at least", "ge"),
            "greater_than": ("above", "gt"),
            "less_than_equal": ("at most", "le"),
            "less_than": ("below", "lt"),
        }.get(error["type"])
        if bound is not None and bound[1] in ctx:
            return (
                f"it is always {bound[0]} {_shown(ctx[bound[1]])} in the contract: compare "
                "with a value inside that range, or remove the test"
            )
        return problem({**error, "loc": (self.field,)})


def _shown(value: Any) -> str:
    """A bound as written in the contract: 0.0001, 999999999.9999, 1000000000000000."""
    read = number(value)
    if read is None:
        return str(value)
    return str(int(read)) if read.is_integer() else repr(read)


def _carried(model: type[BaseModel], field: str) -> Carried | None:
    info = model.model_fields.get(field)
    if info is None or _holds_list(info.annotation):
        return None  # a list is compared as a whole: no literal test can be judged here
    hint: Any = Annotated[info.annotation, info]  # the field's type with its constraints
    adapter: TypeAdapter[Any] = TypeAdapter(hint)
    schema = adapter.json_schema()
    branches = schema.get("anyOf", [schema])
    numbers = [b for b in branches if b.get("type") in ("number", "integer")]
    low = _widest(numbers, "minimum", "exclusiveMinimum", min)
    high = _widest(numbers, "maximum", "exclusiveMaximum", max)
    codes = next((tuple(b["enum"]) for b in branches if "enum" in b), None)
    zone = codes is None and any(b.get("pattern") == ZONE_PATTERN for b in branches)
    if zone:  # a `timezone`: `prefix: Europa/` loaded, and matched nothing
        codes = tzdata_zones()
    return Carried(
        field, adapter, holds_number(info.annotation), low, high, codes, model is ProfileEvent, zone
    )


def _widest(
    branches: list[dict[str, Any]], closed: str, opened: str, pick: Callable[..., float]
) -> Bound | None:
    """The loosest bound of the numeric branches on one side; None when one has none."""
    found: list[Bound] = []
    for branch in branches:
        if closed in branch:
            found.append((float(branch[closed]), False))
        elif opened in branch:
            found.append((float(branch[opened]), True))
        else:
            return None
    if not found:
        return None
    edge = pick(b[0] for b in found)
    return edge, all(b[1] for b in found if b[0] == edge)


@cache
def event_carried(event_types: tuple[EventType, ...], field: str) -> tuple[Carried, ...]:
    """What `field` carries in events of each type (empty when a type lacks it or holds a
    list there: then nothing is refused)."""
    found = [_carried(EVENT_MODELS[t], field) for t in event_types]
    return tuple(c for c in found if c is not None) if all(found) else ()


def profile_list(field: str) -> bool:
    """Whether a profile's `field` holds a list (`opt_out`, `quiet_hours`)."""
    info = ProfileEvent.model_fields.get(field)
    return info is not None and _holds_list(info.annotation)


@cache
def profile_carried(field: str) -> tuple[Carried, ...]:
    """What a profile's `field` carries (empty for a list, or no field of the profile)."""
    found = _carried(ProfileEvent, field)
    return () if found is None else (found,)


def compared(op: str, raw: Any) -> Iterator[tuple[Loc, str, Any]]:
    """As `tested`, and a number an order operator compares with (`lt: 0`, kind `bound`)."""
    if op in NUMERIC_OPS:
        if raw is not None:
            yield (), "bound", raw
        return
    yield from tested(op, raw)


def never_carried(
    what: str, carried: Sequence[Carried], op: str, kind: str, value: Any
) -> str | None:
    """Why a test (`op` of `value`, as `compared` gives it) of a field that `carried` says
    what it holds can never match (or, with `ne`/`not_in`, never fail: it tests nothing),
    naming the fix; None when it can, or when the field allows any value. A field of
    several event types refuses only what none of them carries."""
    if not carried or (isinstance(value, str) and value.startswith("$")):
        return None
    if op in ("in", "not_in") and not str(value).strip():
        return None  # a param's list holding no value, refused as such (`empty_list`)
    if kind == "bound":
        return _out_of_bounds(what, carried, op, value)
    if kind == "prefix":
        if any(held.codes is None for held in carried):
            return None  # text of any kind: a prefix of some value, for all we know
        codes = sorted({c for held in carried for c in held.codes or ()})
        text = str(value)
        if any(c.startswith(text) for c in codes):
            return None
        # `Europa/` for `Europe/`, `asia/` for `Asia/`: the starts of the values as long.
        starts = sorted({c[: len(text)] for c in codes})
        close = difflib.get_close_matches(text, starts, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        kind_of = "IANA time zone names" if all(h.zone for h in carried) else "the contract's"
        return (
            f"no {what} starts with {text!r}: its values are {kind_of} "
            f"({', '.join(codes[:3])}, ... {len(codes)} in all); write a prefix of one{hint}"
        )
    reasons = [held.refused(value) for held in carried]
    if any(r is None for r in reasons):
        return None
    shown = repr(value) if isinstance(value, str) else _shown(value)
    return f"{what} is never {shown}: {reasons[0]}"


def _out_of_bounds(what: str, carried: Sequence[Carried], op: str, value: Any) -> str | None:
    """`lt: 0` of an amount (always above 0), `gt: 3` of a severity (1 to 3): no value
    of the field passes it."""
    limit = number(value)
    if limit is None or not math.isfinite(limit) or not all(h.number for h in carried):
        return None
    said: list[str] = []
    for held in carried:
        if op in ("lt", "lte") and held.low is not None:
            edge, open_ = held.low
            if limit < edge or (limit == edge and (op == "lt" or open_)):
                said.append(f"{'above' if open_ else 'at least'} {_shown(edge)}")
                continue
        if op in ("gt", "gte") and held.high is not None:
            edge, open_ = held.high
            if limit > edge or (limit == edge and (op == "gt" or open_)):
                said.append(f"{'below' if open_ else 'at most'} {_shown(edge)}")
                continue
        return None
    return (
        f"{what} is always {said[0]} in the contract, so {op}: {_shown(value)} matches "
        "nothing: compare with a value inside that range, or remove the test"
    )
