"""Subscriber state for the backtest: records kept as objects, and an index of when each
is next due for the hourly sweep.

The stream keeps each record as bytes (its changelog needs them) and a cache of the
decoded records (moments.statecache); a backtest has no changelog and no restart, so
the decoded record is the only copy: `load` hands it out, the detector changes it in
place, `save` keeps it. What the engine sees is what the stream's cache hands it.

The stream's sweep looks at every subscriber whenever event time enters a new hour,
though a record only needs it at its local midnight (windows close) and at the hour of
the daily special-day look (`Detector.next_sweep`). Here each record is looked at when
it is due: records saved since the last sweep are checked against the sweep's time,
the others wait in a heap until their time. A record the sweep looked at is checked
again at the next one (the sweep may have changed it)."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator, Mapping

from moments.engine import Detector, StateChange
from moments.state import SubscriberState
from moments.store import ChangelogRecord


class BacktestState:
    """A `StateStore` holding records as objects, with `due` for an indexed sweep."""

    changelog_topic = ""

    def __init__(self) -> None:
        self.records: dict[str, SubscriberState] = {}
        self._rank: dict[str, int] = {}
        """Order of arrival, as the records' dict keeps it: the sweep's order of work."""
        self._next_rank = 0
        self._touched: set[str] = set()
        """Saved (or swept) since the last sweep: their due time is worked out again."""
        self._due_at: dict[str, float] = {}
        """When each untouched record is due; a heap entry that differs is stale."""
        self._heap: list[tuple[float, str]] = []

    def load(self, subscriber_id: str) -> SubscriberState | None:
        return self.records.get(subscriber_id)

    def save(self, changes: Mapping[str, StateChange]) -> list[ChangelogRecord]:
        records = self.records
        touched = self._touched
        for sub, change in changes.items():
            touched.add(sub)
            if change.state is None:
                records.pop(sub, None)
                self._rank.pop(sub, None)
                continue
            if sub not in records:
                self._rank[sub] = self._next_rank
                self._next_rank += 1
            records[sub] = change.state
        return []

    def items(self, partitions: Collection[int]) -> Iterator[tuple[str, SubscriberState, int]]:
        """Every record (the full sweep's input; `due` is the indexed one)."""
        for sub, state in list(self.records.items()):
            yield sub, state, 0

    def due(self, detector: Detector, at: int) -> list[tuple[str, SubscriberState, int]]:
        """The records a sweep to `at` can change, in the order `items` gives them; the
        others would come out of it unchanged (but for the CHECKED_DAY marker)."""
        records = self.records
        due_at = self._due_at
        heap = self._heap
        found: set[str] = set()
        for sub in self._touched:
            state = records.get(sub)
            if state is None:
                due_at.pop(sub, None)
                continue
            when = detector.next_sweep(state, at)
            if when <= at:
                due_at.pop(sub, None)
                found.add(sub)
            elif due_at.get(sub) != when:
                due_at[sub] = when
                heapq.heappush(heap, (when, sub))
        while heap and heap[0][0] <= at:
            when, sub = heapq.heappop(heap)
            if due_at.get(sub) == when:
                del due_at[sub]
                found.add(sub)
        self._touched = found.copy()  # the sweep may change them: checked again next time
        rank = self._rank
        return [(sub, records[sub], 0) for sub in sorted(found, key=rank.__getitem__)]
