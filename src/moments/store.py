"""Where subscriber state lives between batches: a plain dict, or a Faust table."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from moments.engine import StateChange
from moments.state import SubscriberState


class StateStore(Protocol):
    def load(self, subscriber_id: str) -> SubscriberState | None: ...

    def save(self, changes: Mapping[str, StateChange]) -> None: ...


class DictStateStore:
    """In-memory state for `run_pipeline`, the backtest and unit tests."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def load(self, subscriber_id: str) -> SubscriberState | None:
        raw = self.data.get(subscriber_id)
        return SubscriberState.from_bytes(raw) if raw is not None else None

    def save(self, changes: Mapping[str, StateChange]) -> None:
        for sub, change in changes.items():
            if change.state is None:
                self.data.pop(sub, None)
            else:
                self.data[sub] = change.state.to_bytes()


class FaustTableStore:
    """State in a Faust table (changelog-backed), one write per subscriber per batch.

    Faust sends a table write to the changelog partition of the *current event*.
    After a batch the current event is whatever came last, so each write is made
    with an event from that subscriber's own partition set as current: the
    changelog and any RocksDB partition then match the source partition.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self._events_by_partition: dict[int, Any] = {}

    def use_events(self, events: list[Any]) -> None:
        """Remember one event per partition of the batch being processed."""
        self._events_by_partition = {e.message.partition: e for e in events}

    def load(self, subscriber_id: str) -> SubscriberState | None:
        raw = self.table.get(subscriber_id.encode())
        return SubscriberState.from_bytes(raw) if raw is not None else None

    def save(self, changes: Mapping[str, StateChange]) -> None:
        for sub, change in changes.items():
            key = sub.encode()
            with self._as_current(change.partition):
                if change.state is None:
                    if key in self.table:
                        del self.table[key]
                else:
                    self.table[key] = change.state.to_bytes()

    @contextlib.contextmanager
    def _as_current(self, partition: int) -> Iterator[None]:
        from faust.streams import _current_event

        event = self._events_by_partition[partition]
        token = _current_event.set(weakref.ref(event))
        try:
            yield
        finally:
            _current_event.reset(token)
