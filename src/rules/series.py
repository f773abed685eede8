"""Series: per-subscriber aggregates over event-time windows, in a fixed ring.

A ring is a flat list `[newest, first, slots of the newest window, slots of the
one before, ...]`: `newest` and `first` are window indexes (see rules.windows);
each window has (sum, count, max) for a series over a numeric field, or (count,)
for a counting series. Trailing empty windows are not stored. Knowing `first`
(the first window with data) keeps a new subscriber's empty past from passing
for a baseline of zero. Once windows with data are dropped (older than `keep`), `first`
is the window just before the oldest kept: what came before it is no history, as for a
new subscriber, whatever `keep` later reads the ring.

A series a test reads as "fewer than" (rules.conditions' `history_series`) is begun at
the subscriber's first event of any kind (`begin`), in an entry of its own beside the
ring (`begun_tag`): their history in it, for that test, began there, data or not, and a
subscriber with no event in it is known to have had none since (`history_since`). A
baseline reads the ring's `first` alone (`history_from`): the months before a customer's
first charge are no part of their usual spend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from moments.models import EventType, InputEvent
from rules.predicates import Predicate
from rules.routing import Keys

Ring = list[float]
BEGUN = ".b"
"""What `Series.begun_tag` adds to a series' tag (catalog series' tags are hex, the risk
score's ring `hotline`: no ring's key ends so)."""
SeriesGroup = tuple[Predicate, tuple["Series", ...]]
"""Series sharing one `when` filter, with that filter."""


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    tag: str
    """Key in the subscriber record; changes when the definition does, so old data is dropped."""
    event_types: frozenset[EventType]
    when: Predicate
    field: str | None
    period: str
    keep: int
    when_key: str = ""
    """Identifies the `when` filter, so series sharing one are filtered once per event."""
    when_keys: Keys = dataclasses.field(default_factory=dict)
    """The texts the filter lets through per field (rules.routing.text_keys)."""
    declared_at: str = dataclasses.field(default="", compare=False)
    """Where the rules declare it, `file:line` (empty for one made in code): for a warning."""

    @property
    def width(self) -> int:
        return 3 if self.field else 1

    def value_of(self, event: InputEvent) -> float | None:
        """What an event that passed `when` adds (None: the field is missing)."""
        if self.field is None:
            return 1.0
        value = getattr(event, self.field, None)
        return None if value is None else float(value)

    @property
    def begun_tag(self) -> str:
        """Key in the subscriber record of where their history began for a "fewer than"
        test (`begin`), beside the ring's `tag`."""
        return f"{self.tag}{BEGUN}"

    def begin(self, index: int) -> Ring:
        """What `begun_tag` holds: the window `index` of the subscriber's event that begins
        their history (a partial one), with no event in the series yet. Every event of
        theirs is read from then on, so a window with none had none."""
        return [index]

    def fold(self, ring: Ring | None, index: int, amount: float) -> Ring | None:
        """Add `amount` to window `index`; returns the ring (updated in place when it can be),
        or None when the window is older than the ring keeps."""
        if ring and ring[0] == index:  # the newest window again: most events
            if self.field:
                if len(ring) < 5:
                    ring.extend([0.0] * (5 - len(ring)))
                total = ring[2] + amount
                # A whole number rounds to itself (seconds, units): round() to 4 places
                # formats the number and reads it back, the fold's dearest step.
                ring[2] = total if type(total) is float and total.is_integer() else round(total, 4)
                ring[3] += 1
                if amount > ring[4] or ring[3] == 1:  # the window's first: it is the largest
                    ring[4] = amount
            else:
                if len(ring) < 3:
                    ring.append(0.0)
                ring[2] += 1
            return ring
        width, keep = self.width, self.keep
        if not ring:
            ring = [index, index]
        newest = int(ring[0])
        if index > newest:
            shift = index - newest
            kept = ring[2 : 2 + width * (keep - shift)] if shift < keep else []
            # History that began before the windows kept now begins at the edge of them, a
            # window read as the partial one a history begins in: read with a larger `keep`
            # (raised in a reload), the windows dropped here count as no history, not as
            # empty ones that would make a baseline over them low.
            first = ring[1] if ring[1] > index - keep else index - keep
            ring = [index, first, *([0.0] * (width * shift) if kept else ()), *kept]
            newest = index
        pos = newest - index
        if pos >= keep:
            return None
        base = 2 + pos * width
        missing = base + width - len(ring)
        if missing > 0:
            ring.extend([0.0] * missing)
        if width == 1:
            ring[base] += 1
        else:
            total = ring[base] + amount
            ring[base] = total if type(total) is float and total.is_integer() else round(total, 4)
            ring[base + 1] += 1
            # An empty window's slots read 0: its first amount is its largest, a negative
            # one too (a refunded charge, a balance below zero).
            if amount > ring[base + 2] or ring[base + 1] == 1:
                ring[base + 2] = amount
        if index < ring[1]:
            ring[1] = index
        return ring

    def window(self, ring: Ring | None, index: int) -> tuple[float, float, float] | None:
        """(sum, count, max) of one window; zeros when empty; None when no longer kept."""
        if not ring:
            return (0.0, 0.0, 0.0)
        newest = int(ring[0])
        pos = newest - index
        if pos < 0:
            return (0.0, 0.0, 0.0)
        if pos >= self.keep:
            return None
        base = 2 + pos * self.width
        values = ring[base : base + self.width]
        values += [0.0] * (self.width - len(values))
        if self.width == 1:
            return (values[0], values[0], values[0])
        return (values[0], values[1], values[2])

    def aggregate(self, ring: Ring | None, index: int, agg: str, last: int = 1) -> float | None:
        """`agg` over windows index-last+1 .. index; None when one of them is not kept.
        The `max` of the windows with events; `avg` and `max` of windows with none are 0
        here, which the conditions take for no value (rules.conditions)."""
        total = count = 0.0
        peak: float | None = None
        for w in range(index - last + 1, index + 1):
            found = self.window(ring, w)
            if found is None:
                return None
            total, count = total + found[0], count + found[1]
            if found[1] and (peak is None or found[2] > peak):
                peak = found[2]  # of the windows with events: an empty one's max is no 0
        if peak is None:
            peak = 0.0
        if agg == "sum":
            return round(total, 4)
        if agg == "count":
            return count
        if agg == "max":
            return peak
        return round(total / count, 4) if count else 0.0

    def history_from(self, ring: Ring | None) -> int | None:
        """The first window with data, or the one just before the oldest kept once windows
        with data were dropped (a partial window either way); None when no data ever came.
        What a baseline's history begins at. (A ring begun before the begin had an entry
        of its own, `[window, window]`, says where the begin was: read as it was.)"""
        return int(ring[1]) if ring else None

    def settle(self, rings: dict[str, Ring]) -> None:
        """Forget where the subscriber's history was begun (`begun_tag`) once the ring has
        dropped windows with data (`first` moved to the edge of what it keeps): the edge is
        where their history begins from then on, also read with a `keep` raised in a reload
        later (the begin read then, the windows dropped counted as empty ones)."""
        ring = rings.get(self.tag)
        if ring and ring[1] <= ring[0] - self.keep:
            rings.pop(self.begun_tag, None)

    def history_since(self, ring: Ring | None, begun: Ring | None) -> int | None:
        """Where the history a "fewer than" test reads began: the subscriber's first event
        of any kind since the series was declared (`begun`, `begin`), or the ring's
        `history_from` when earlier, or once windows with data were dropped (what came
        before the oldest kept is no history); None when neither is known."""
        first = self.history_from(ring)
        if not begun:
            return first
        since = int(begun[0])
        if first is None:
            return since
        assert ring is not None  # for mypy: a first window is a ring's
        if first <= ring[0] - self.keep:
            return first
        return min(first, since)


def forget_begins(rings: dict[str, Ring], kept: Collection[str]) -> bool:
    """Drop the begins (`Series.begun_tag`) not in `kept` (those of the series the rules
    in force read as "fewer than", `RuleSet.begun_tags`): a reload that took the last such
    test of a series away, or redefined the series (a new tag), left its begin in every
    record it was written to, read by nothing and written with the record for good.
    Returns whether any went. Should a reload read the series as "fewer than" again, its
    history begins at the subscriber's next event: the test waits for it, as for a new
    subscriber (it never takes a history it has not seen for one without events)."""
    stale = [tag for tag in rings if tag.endswith(BEGUN) and tag not in kept]
    for tag in stale:
        del rings[tag]
    return bool(stale)
