"""Subscriber state for the backtest: records kept as objects, and an index of when each
is next due for the hourly sweep.

The stream keeps each record as bytes (its changelog needs them) and a cache of the
decoded records (moments.statecache); a backtest has no changelog and no restart, so
the decoded record is the only copy: `load` hands it out, the detector changes it in
place, `save` keeps it. What the engine sees is what the stream's cache hands it. The
sweep works on the same objects, so the CHECKED_DAY marker it sets without a save stays
in the record (the stream drops it with the copy its sweep decoded); either way it only
spares a second look that day, which would close nothing.

The stream's sweep looks at every subscriber whenever event time enters a new hour,
though a record only needs it at its local midnight (windows close) and at the hour of
the daily special-day look (`moments.sweep.next_sweep`). Here each record is looked at when
it is due: records saved since the last sweep are checked against the sweep's time,
the others wait in a heap until their time. A record the sweep looked at is checked
again at the next one (the sweep may have changed it)."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Iterator, Mapping

from moments.batchresult import StateChange
from moments.engine import Detector
from moments.state import SubscriberState
from moments.store import NOTHING_PENDING, Census, StateWrite, read_swept
from moments.sweep import next_sweep


class SweepIndex:
    """When each record is next due for the sweep (`moments.sweep.next_sweep`).

    `touch` every record written since the last sweep (a batch changed it, or it was
    read in anew); `due` works out their times at the sweep and takes from the heap the
    untouched ones whose time has come. Nothing here is specific to the backtest: a
    stream store could keep one per partition, touching every key of a partition when
    it is assigned (its records come from the changelog, not from `save`)."""

    def __init__(self) -> None:
        self._touched: set[str] = set()
        self._due_at: dict[str, float] = {}
        """When each untouched record is due; a heap entry that differs is stale."""
        self._heap: list[tuple[float, str]] = []

    def touch(self, key: str) -> None:
        self._touched.add(key)

    def touch_all(self, keys: Iterable[str]) -> None:
        """`touch` each of `keys`, in one step (a batch's records: `BacktestState.save`)."""
        self._touched.update(keys)

    def due(self, detector: Detector, at: int, records: Mapping[str, SubscriberState]) -> set[str]:
        """The keys a sweep to `at` can change (each then counts as touched: the sweep may
        change it); a key no longer in `records` is forgotten."""
        found = self._index(detector, at, records)
        due_at = self._due_at
        heap = self._heap
        while heap and heap[0][0] <= at:
            when, key = heapq.heappop(heap)
            if due_at.get(key) == when:
                del due_at[key]
                found.add(key)
        self._touched = set(found)
        return found

    def next_due(
        self, detector: Detector, at: int, records: Mapping[str, SubscriberState]
    ) -> float:
        """When the first record is due for a sweep from `at` on (`at` when one is due at
        `at` or earlier; inf: none is), so that a sweeper may skip the hours before it: a
        sweep finds nothing in them (`due`). The touched records' times are worked out
        here, at `at`, as `due` would at a later sweep before their time: `next_sweep`
        gives the same time from any instant before it, the record unchanged (the heap's
        times rely on it too). Those due at `at` stay touched, for `due` to find."""
        self._touched = self._index(detector, at, records)
        if self._touched:
            return at
        heap = self._heap
        while heap and self._due_at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: the record was due, or written, since
        return heap[0][0] if heap else float("inf")

    def _index(
        self, detector: Detector, at: int, records: Mapping[str, SubscriberState]
    ) -> set[str]:
        """The touched records due at `at` (`next_sweep`); the others' times put in the
        heap, and they are no longer touched. A key no longer in `records` is forgotten."""
        due_at = self._due_at
        heap = self._heap
        found: set[str] = set()
        for key in self._touched:
            state = records.get(key)
            if state is None:
                due_at.pop(key, None)
                continue
            when = next_sweep(detector, state, at)
            if when <= at:
                due_at.pop(key, None)
                found.add(key)
            elif due_at.get(key) != when:
                due_at[key] = when
                heapq.heappush(heap, (when, key))
        self._touched = set()
        return found


class BacktestState:
    """A `StateStore` holding records as objects, with `due` for an indexed sweep."""

    changelog_topic = ""

    def __init__(self) -> None:
        self.records: dict[str, SubscriberState] = {}
        self._rank: dict[str, int] = {}
        """Order of arrival, as the records' dict keeps it: the sweep's order of work."""
        self._next_rank = 0
        self.index = SweepIndex()
        self.census: dict[int, Census] = {}
        """Not kept: the records are objects here, not stored bytes."""
        self._before: dict[str, bytes] = {}
        """The JSON of each record `due` gave the sweep, as it was before: `reread`'s."""

    def load(self, subscriber_id: str) -> SubscriberState | None:
        return self.records.get(subscriber_id)

    def has(self, subscriber_id: str) -> bool:
        return subscriber_id in self.records

    def save(self, changes: Mapping[str, StateChange], generation: int | None = None) -> StateWrite:
        records = self.records
        self.index.touch_all(changes)
        for sub, change in changes.items():
            if change.state is None:
                records.pop(sub, None)
                self._rank.pop(sub, None)
                continue
            if sub not in records:
                self._rank[sub] = self._next_rank
                self._next_rank += 1
            records[sub] = change.state
        return NOTHING_PENDING

    def persisted(self, write: StateWrite, last_offsets: Mapping[int, int]) -> None:
        pass  # no changelog: `save` applied the changes

    def discard(self, write: StateWrite) -> None:
        pass  # nothing pending

    def items(self, partitions: Collection[int]) -> Iterator[tuple[str, SubscriberState, int]]:
        """Every record (the full sweep's input; `due` is the indexed one)."""
        for sub, state in list(self.records.items()):
            yield sub, state, 0

    def reread(self, subscriber_id: str) -> SubscriberState | None:
        """The record as it was before the sweep `due` gave it to (the sweep asks when it
        failed on it), put back in place of the object it left half-changed, as the stream
        reads its stored bytes anew: mended and swept again, or kept as it was for the next
        sweep. Handed the object itself, a retry found the day marked looked at and its
        windows closed by the failed pass, and the day's tasks were lost (the stream made
        them). A record `due` did not give (the full sweep of `items`): the object."""
        before = self._before.pop(subscriber_id, None)
        if before is None:
            return self.records.get(subscriber_id)
        state = read_swept(before)
        self.records[subscriber_id] = state
        self.index.touch(subscriber_id)
        return state

    def due(self, detector: Detector, at: int) -> list[tuple[str, SubscriberState, int]]:
        """The records a sweep to `at` can change, in the order `items` gives them; the
        others would come out of it unchanged (but for the CHECKED_DAY marker). Each one's
        JSON is kept until the next `due`, for `reread`."""
        records = self.records
        found = self.index.due(detector, at, records)
        self._before = {sub: records[sub].to_json() for sub in found}
        return [(sub, records[sub], 0) for sub in sorted(found, key=self._rank.__getitem__)]

    def next_due(self, detector: Detector, at: int) -> float:
        """When a sweep from `at` on next finds a record to change (`SweepIndex.next_due`)."""
        return self.index.next_due(detector, at, self.records)
