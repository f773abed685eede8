"""Where subscriber state lives between batches: a plain dict, or a Faust table."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

from moments.engine import StateChange
from moments.partitioning import partition_of
from moments.state import SubscriberState
from moments.statecache import DEFAULT_CAPACITY, StateCache

ChangelogRecord = tuple[int, bytes, bytes | None]
"""(partition, key, value or None for a tombstone) to write to the state's changelog."""


class Census(NamedTuple):
    """One partition's records as `items` last went through all of them."""

    subscribers: int
    stored_bytes: int


class StateStore(Protocol):
    changelog_topic: str
    """Where `save`'s records go ("" when the store keeps no changelog)."""
    census: dict[int, Census]
    """Partition -> its records as counted by the last complete pass of `items` over it
    (a window sweep: hourly); empty for a store that holds no bytes."""

    def load(self, subscriber_id: str) -> SubscriberState | None: ...

    def has(self, subscriber_id: str) -> bool:
        """Whether the subscriber has a record (without lending it, as `load` does)."""
        ...

    def save(self, changes: Mapping[str, StateChange]) -> list[ChangelogRecord]:
        """Apply the changes locally; return what the changelog must receive (may be [])."""
        ...

    def items(self, partitions: Collection[int]) -> Iterator[tuple[str, SubscriberState, int]]:
        """Every subscriber held for these partitions, with its state and partition."""
        ...

    def persisted(self, last_offsets: Mapping[int, int]) -> None:
        """The changelog acknowledged every record `save` returned, up to these offsets
        (partition -> last offset)."""
        ...


class DictStateStore:
    """In-memory state for `run_pipeline`, the backtest and unit tests.

    `data` holds each subscriber's saved bytes; a record `load` hands out belongs to the
    caller until it is passed back to `save` (see moments.statecache)."""

    changelog_topic = ""

    def __init__(self, cache_capacity: int = DEFAULT_CAPACITY) -> None:
        self.data: dict[str, bytes] = {}
        self.cache = StateCache(cache_capacity)
        self.census: dict[int, Census] = {}

    def load(self, subscriber_id: str) -> SubscriberState | None:
        return self.cache.take(subscriber_id, self.data.get(subscriber_id))

    def has(self, subscriber_id: str) -> bool:
        return subscriber_id in self.data

    def items(self, partitions: Collection[int]) -> Iterator[tuple[str, SubscriberState, int]]:
        """Each subscriber's record as it is when yielded (the keys are a snapshot)."""
        count = size = 0
        for sub in list(self.data):
            raw = self.data.get(sub)
            if raw is not None:
                count += 1
                size += len(raw)
                yield sub, SubscriberState.from_bytes(raw), 0
        self.census[0] = Census(count, size)

    def persisted(self, last_offsets: Mapping[int, int]) -> None:
        pass  # no changelog

    def save(self, changes: Mapping[str, StateChange]) -> list[ChangelogRecord]:
        cache = self.cache
        for sub, change in changes.items():
            if change.state is None:
                self.data.pop(sub, None)
                cache.drop(sub)
            else:
                value = self.data[sub] = change.state.to_bytes()
                cache.keep(sub, value, change.state)
        return []


class FaustTableStore:
    """State in a Faust table's store; the changelog is written by the runtime, in bulk.

    Faust's own `table[key] = value` sends one changelog record per write through
    its producer buffer: a quarter of the worker's time at stream speed. Here the
    batch's writes go to the table's store directly and come back as changelog
    records, which the runtime produces together and awaits before the offsets
    are committed. Faust's recovery reads the same changelog topic on restart.

    A store may ask for the current event's partition (RocksDB does): each write
    is made with a stand-in event of the subscriber's own partition set as current.

    Records are cached deserialized between batches, each checked against the bytes
    the table holds when it is loaded (see moments.statecache): a record Faust replaced
    (recovery, standby, rebalance) is read again from the table.
    """

    def __init__(
        self,
        table: Any,
        source_topic: str,
        partitions: int,
        cache_capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.table = table
        self.cache = StateCache(cache_capacity)
        self.partitions = partitions
        self.changelog_topic: str = table.changelog_topic.get_topic_name()
        self._stand_ins: dict[int, _StandInEvent] = {}
        self.census: dict[int, Census] = {}
        self._source_topic = source_topic

    def load(self, subscriber_id: str) -> SubscriberState | None:
        return self.cache.take(subscriber_id, self.table.data.get(subscriber_id.encode()))

    def has(self, subscriber_id: str) -> bool:
        return subscriber_id.encode() in self.table.data

    def items(self, partitions: Collection[int]) -> Iterator[tuple[str, SubscriberState, int]]:
        """Subscribers of the given partitions (the table may hold standby copies of others),
        each record read when it is yielded: the keys are a snapshot, the bytes are not,
        so a sweep that lets batches run between its chunks never sees a stale record."""
        wanted = set(partitions)
        counts = dict.fromkeys(wanted, 0)
        sizes = dict.fromkeys(wanted, 0)
        for partition, keys, read in self._keys_by_partition(wanted):
            for key in keys:
                if (raw := read(key)) is not None:
                    counts[partition] += 1
                    sizes[partition] += len(raw)
                    yield key.decode(), SubscriberState.from_bytes(raw), partition
        for partition in wanted:
            self.census[partition] = Census(counts[partition], sizes[partition])

    def _keys_by_partition(
        self, wanted: set[int]
    ) -> Iterator[tuple[int, list[bytes], Callable[[bytes], bytes | None]]]:
        """(partition, a snapshot of its keys, how to read one) for each wanted partition,
        by where the store holds each record: right whatever hash the producers used."""
        data = self.table.data
        dbs: dict[int, Any] | None = getattr(data, "_dbs", None)
        if dbs is not None:  # Faust's RocksDB store: one database per partition
            for partition in sorted(wanted):
                if (db := dbs.get(partition)) is not None:
                    yield partition, list(data._visible_keys(db)), db.get
            return
        # The memory store notes each key's partition (see `save`); a key it has no note
        # for (none should be left) is placed by Kafka's default hash, murmur2.
        noted: dict[bytes, int] = getattr(data, "_key_partition", None) or {}
        grouped: dict[int, list[bytes]] = {p: [] for p in wanted}
        for key in list(data.keys()):
            where = noted.get(key)
            if where is None:
                where = partition_of(key, self.partitions)
            if where in grouped:
                grouped[where].append(key)
        for partition, keys in sorted(grouped.items()):
            yield partition, keys, data.get

    def persisted(self, last_offsets: Mapping[int, int]) -> None:
        """Tell the table's store how far the changelog holds what it holds, as Faust does
        when it writes the changelog itself: RocksDB keeps the offset on disk, so a
        restart on the same volume reads only the changelog after it (without it, every
        record written since the store's last recovery was read again, ~10k a second)."""
        written = getattr(self.table, "written", None)  # moments.restore.PreloadingTable's
        if written is not None:
            for partition, offset in last_offsets.items():
                written(partition, offset)

    def save(self, changes: Mapping[str, StateChange]) -> list[ChangelogRecord]:
        from faust.streams import _current_event

        data = self.table.data
        # Faust's memory store forgets, when a recovery ends, the keys of partitions this
        # worker no longer owns, by the partition it noted when it restored each key; the
        # keys written here are noted too, or a worker kept the state of every partition
        # it ever held (more memory after each scale-out; stale records if one came back).
        owners: dict[bytes, int] | None = getattr(data, "_key_partition", None)
        cache = self.cache
        out: list[ChangelogRecord] = []
        by_partition: dict[int, list[tuple[str, SubscriberState | None]]] = {}
        for sub, change in changes.items():
            by_partition.setdefault(change.partition, []).append((sub, change.state))
        # The stand-in event is set once per partition, not per record.
        for partition, items in by_partition.items():
            event = self._stand_ins.get(partition)
            if event is None:
                event = self._stand_ins[partition] = _StandInEvent(self._source_topic, partition)
            token = _current_event.set(weakref.ref(cast(Any, event)))
            try:
                for sub, state in items:
                    key = sub.encode()
                    if state is None:
                        data.pop(key, None)
                        cache.drop(sub)
                        out.append((partition, key, None))
                        if owners is not None:
                            owners.pop(key, None)
                    else:
                        value = state.to_bytes()
                        data[key] = value
                        cache.keep(sub, value, state)
                        out.append((partition, key, value))
                        if owners is not None:
                            owners[key] = partition
            finally:
                _current_event.reset(token)
        return out


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    partition: int


class _StandInEvent:
    """What a Faust store reads of the current event: `event.message.topic/.partition`."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Message(topic, partition)
