"""Deserialized subscriber records kept between batches, so a busy subscriber's record is
not parsed again for every batch.

The store's bytes stay the truth. Each cached record remembers the bytes it was saved
as, and is handed out only while the store still holds exactly those bytes: anything
that replaced them (changelog recovery, a standby copy, a rebalance, a tombstone) makes
the record be read again from the store.

A record is lent to one batch at a time: `take` removes it from the cache, and only
`keep`, called when the batch's new state is saved, puts it back. A batch that fails
half-way (its states changed in memory, never saved) leaves nothing behind, and the
next batch reads the saved bytes again.
"""

from __future__ import annotations

from itertools import islice

from moments.state import SubscriberState

DEFAULT_CAPACITY = 50_000
"""Records kept (about 3 KB each with the default catalog: ~150 MB). Past it, the least
recently saved tenth goes at once (a dict in insertion order is the recency list)."""


class StateCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be 0 (no cache) or more, got {capacity}")
        self.capacity = capacity
        self._entries: dict[str, tuple[bytes, SubscriberState]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, key: str, saved: bytes | None) -> SubscriberState | None:
        """The record for `key`, given the bytes the store holds for it now (None: none).
        The cached copy when it was saved as exactly these bytes, else parsed from them."""
        entry = self._entries.pop(key, None)
        if saved is None:
            return None
        if entry is not None and entry[0] == saved:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return SubscriberState.from_bytes(saved)

    def keep(self, key: str, saved: bytes, state: SubscriberState) -> None:
        """Remember `state`, just saved to the store as `saved`."""
        if self.capacity == 0:
            return
        entries = self._entries
        entries.pop(key, None)  # re-inserted: now the most recent
        entries[key] = (saved, state)
        if len(entries) > self.capacity:
            excess = len(entries) - self.capacity + self.capacity // 10
            for old in list(islice(entries, excess)):
                del entries[old]

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
