"""Which rules (or series) an event can meet, found with one look at one field.

Most `when:` filters of an event type test the same field with plain equality
(`kind: voice`, `status: opened`). Running every filter for every event was a
tenth of the detector's time; bucketing the rules by the texts they let through on
that field leaves only the rules an event can pass, whose filters still run in full.

A bucket is always a superset of the rules whose filter passes, in the original order
(a task's contact counts against the next rule's frequency cap, so order matters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from moments.placetext import PLACE_FIELDS, place_key

T = TypeVar("T")

Keys = Mapping[str, frozenset[str]]
"""Field -> the only texts a filter lets through there (fields it tests as text)."""


def text_keys(when: Mapping[str, Any] | None) -> Keys:
    """The fields a `when:` filter tests with plain equality or a list, and the texts that
    pass. For a text value these are exact (rules.operators: `same` compares text with
    `str(expected)`, `member` looks the text up among the listed entries as text), but
    for a region or tier, whose texts are keys whatever the case (moments.placetext);
    fields tested with operators are left out, so they never narrow a bucket."""
    keys: dict[str, frozenset[str]] = {}
    for name, test in (when or {}).items():
        if isinstance(test, list):
            keys[name] = frozenset(str(v) for v in test)
        elif not isinstance(test, Mapping) and test is not None:
            keys[name] = frozenset({str(test)})
        else:
            continue
        if name in PLACE_FIELDS:
            keys[name] = frozenset(place_key(text) for text in keys[name])
    return keys


@dataclass(frozen=True, slots=True)
class Routes(Generic[T]):
    """The items an event of one type may meet, bucketed by one field's text."""

    every: tuple[T, ...]
    field: str | None = None
    by_text: Mapping[str, tuple[T, ...]] | None = None
    rest: tuple[T, ...] = ()
    """Items for a text no filter names: those that do not test the field."""
    place: bool = False
    """The field is a region or tier: looked up by `place_key`, as `text_keys` made them."""

    def candidates(self, event: object) -> tuple[T, ...]:
        if self.by_text is None or self.field is None:
            return self.every
        value = getattr(event, self.field, None)
        # Only exact str: a str enum hashes by its name, not its text.
        if type(value) is str:
            return self.by_text.get(place_key(value) if self.place else value, self.rest)
        return self.every


def route(items: Sequence[T], keys_of: Callable[[T], Keys]) -> Routes[T]:
    """Bucket `items` on the field that most of them test as text (no bucketing when none
    does)."""
    every = tuple(items)
    keyed = [keys_of(item) for item in every]
    counts: dict[str, int] = {}
    for keys in keyed:
        for name in keys:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return Routes(every)
    field = max(sorted(counts), key=lambda name: counts[name])
    texts = sorted({text for keys in keyed for text in keys.get(field, ())})
    by_text = {
        text: tuple(
            item for item, keys in zip(every, keyed, strict=True) if text in keys.get(field, {text})
        )
        for text in texts
    }
    rest = tuple(item for item, keys in zip(every, keyed, strict=True) if field not in keys)
    return Routes(every, field, by_text, rest, field in PLACE_FIELDS)
