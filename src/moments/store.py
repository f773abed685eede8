"""Where subscriber state lives between batches: a plain dict, or a Faust table."""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from moments.batchresult import StateChange
from moments.fence import Stamp, headers_of, next_stamp, stamp_of_value
from moments.partitioning import partition_of
from moments.state import FRAME_DICTIONARY, UNREADABLE, DamagedRecordError, SubscriberState
from moments.statecache import DEFAULT_CAPACITY, StateCache

if TYPE_CHECKING:
    from moments.restore import Deletions

ChangelogRecord = tuple[int, bytes, bytes | None]
"""(partition, key, value or None for a tombstone) to write to the state's changelog."""
Header = tuple[str, bytes]


def read_swept(raw: bytes) -> SubscriberState:
    """A record for the window sweep: one whose bytes hold none is begun afresh, marked
    `UNREADABLE` (the sweep writes it back and counts it), rather than ending the sweep and
    stopping the worker; one read whole though its frame named another dictionary than
    its own is marked `FRAME_DICTIONARY`. A record a newer version wrote still raises
    (`NewerRecordError`)."""
    try:
        return SubscriberState.from_bytes(raw)
    except DamagedRecordError as exc:
        if exc.record is None:
            return SubscriberState(damaged=UNREADABLE)
        exc.record.damaged = FRAME_DICTIONARY
        return exc.record


class StateWrite:
    """One batch's (or sweep chunk's) saved changes, as `save` returns them: `records` for
    the changelog (empty for a store without one). A store with a changelog holds the
    changes pending until the runtime hands this back to `persisted` (the changelog
    acknowledged them) or `discard` (the write was abandoned)."""

    __slots__ = ("deletions", "headers", "records")

    def __init__(
        self, records: list[ChangelogRecord], headers: list[list[Header]] | None = None
    ) -> None:
        self.records = records
        self.headers = headers
        """Each record's headers (its fencing stamp, moments.fence), or None: none."""
        self.deletions: dict[bytes, Stamp] = {}
        """The stamp of each tombstone stamped (a key deleted), for the table to remember."""


NOTHING_PENDING = StateWrite([])
"""What a store without a changelog returns: its changes are applied already."""


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

    def save(self, changes: Mapping[str, StateChange], generation: int | None = None) -> StateWrite:
        """Take the changes: `load`, `has` and `items` see them from now on. A store with
        a changelog keeps them pending (its local copy unchanged) and returns the records
        the changelog must receive, stamped with `generation` (the consumer generation
        the writer holds their partitions in: moments.fence) when given; one without
        applies them and returns no record."""
        ...

    def items(self, partitions: Collection[int]) -> Iterator[tuple[str, SubscriberState, int]]:
        """Every subscriber held for these partitions, with its state and partition."""
        ...

    def reread(self, subscriber_id: str) -> SubscriberState | None:
        """The subscriber's record as stored, read anew as `items` reads it (`read_swept`):
        what the window sweep mends and sweeps again where its copy failed half-changed."""
        ...

    def persisted(self, write: StateWrite, last_offsets: Mapping[int, int]) -> None:
        """The changelog acknowledged `write`'s records, up to these offsets (partition ->
        last offset): apply them to the local copy, then note the offsets."""
        ...

    def discard(self, write: StateWrite) -> None:
        """`write`'s records will not reach the changelog (its partitions were reassigned,
        or the worker stops): drop them, so a later `load` reads the local copy again."""
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
                yield sub, read_swept(raw), 0
        self.census[0] = Census(count, size)

    def reread(self, subscriber_id: str) -> SubscriberState | None:
        raw = self.data.get(subscriber_id)
        return None if raw is None else read_swept(raw)

    def persisted(self, write: StateWrite, last_offsets: Mapping[int, int]) -> None:
        pass  # no changelog: `save` applied the changes

    def discard(self, write: StateWrite) -> None:
        pass  # nothing pending

    def save(self, changes: Mapping[str, StateChange], generation: int | None = None) -> StateWrite:
        cache = self.cache
        for sub, change in changes.items():
            if change.state is None:
                self.data.pop(sub, None)
                cache.drop(sub)
            else:
                value = self.data[sub] = change.state.to_bytes()
                cache.keep(sub, value, change.state)
        return NOTHING_PENDING


_Pending = tuple[StateWrite, int, str, bytes | None, SubscriberState | None]
"""A change saved, not yet in the table: (its write, partition, subscriber, bytes or None
for a tombstone, the state saved)."""


class FaustTableStore:
    """State in a Faust table's store; the changelog is written by the runtime, in bulk,
    before the store.

    Faust's own `table[key] = value` sends one changelog record per write through
    its producer buffer: a quarter of the worker's time at stream speed. Here the
    batch's changes come back from `save` as changelog records, which the runtime
    produces together and awaits before the offsets are committed. Faust's recovery
    reads the same changelog topic on restart.

    Write-ahead: the changelog has a record before the table's store does. `save` holds
    the batch's changes pending (`load`, `has` and `items` read them first, so nothing
    in this process reads an older record meanwhile); `persisted`, called once the
    changelog acknowledged them, writes them to the store and then tells it how far the
    changelog goes; `discard` drops an abandoned write. With RocksDB, written to disk
    first, a worker killed while the changelog write waited on the broker kept records
    the changelog lacked: restarted on the same volume, it judged the re-read events
    replays and committed them, so the changelog never got their updates and the
    partition's next owner restored the older record. Now the volume holds the older
    record too, and the events are applied again. Killed after the acknowledgement but
    before the store is written, the store lacks records the changelog has and its
    persisted offset was not moved: a restart reads them from the changelog.

    Writes are serialized by the runtime (its state lock holds one batch or sweep chunk
    from its loads to `persisted` or `discard`), so one at most is pending; each pending
    entry still names its write, so a write resolved out of turn leaves a later write's
    entries for the same keys in place.

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
        self._pending: dict[bytes, _Pending] = {}
        """Key -> its newest change saved and not yet persisted or discarded."""

    def load(self, subscriber_id: str) -> SubscriberState | None:
        if self._pending:
            entry = self._pending.get(subscriber_id.encode())
            if entry is not None:  # a copy: the state saved goes to the cache when persisted
                value = entry[3]
                return None if value is None else SubscriberState.from_bytes(value)
        return self.cache.take(subscriber_id, self.table.data.get(subscriber_id.encode()))

    def has(self, subscriber_id: str) -> bool:
        key = subscriber_id.encode()
        if self._pending and (entry := self._pending.get(key)) is not None:
            return entry[3] is not None
        return key in self.table.data

    def items(self, partitions: Collection[int]) -> Iterator[tuple[str, SubscriberState, int]]:
        """Subscribers of the given partitions (the table may hold standby copies of others),
        each record read when it is yielded: the keys are a snapshot, the bytes are not,
        so a sweep that lets batches run between its chunks never sees a stale record."""
        wanted = set(partitions)
        counts = dict.fromkeys(wanted, 0)
        sizes = dict.fromkeys(wanted, 0)
        for partition, keys, read in self._keys_by_partition(wanted):
            keys, read = self._with_pending(partition, keys, read)
            for key in keys:
                if (raw := read(key)) is not None:
                    counts[partition] += 1
                    sizes[partition] += len(raw)
                    yield key.decode(), read_swept(raw), partition
        for partition in wanted:
            self.census[partition] = Census(counts[partition], sizes[partition])

    def reread(self, subscriber_id: str) -> SubscriberState | None:
        """The pending change's bytes first, as `items` reads them; never the cache's copy."""
        key = subscriber_id.encode()
        if self._pending and (entry := self._pending.get(key)) is not None:
            value = entry[3]
        else:
            value = self.table.data.get(key)
        return None if value is None else read_swept(value)

    def _with_pending(
        self, partition: int, keys: list[bytes], read: Callable[[bytes], bytes | None]
    ) -> tuple[list[bytes], Callable[[bytes], bytes | None]]:
        """`keys` plus the partition's keys pending (saved, not in the table yet), and a
        reader that takes a pending change over the table's bytes at the time it reads."""
        pending = self._pending
        if pending:
            held = set(keys)
            keys = keys + [k for k, e in pending.items() if e[1] == partition and k not in held]

        def read_now(key: bytes) -> bytes | None:
            if pending and (entry := pending.get(key)) is not None:
                return entry[3]
            return read(key)

        return keys, read_now

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
                elif self._pending:  # no database yet: its first records are pending
                    yield partition, [], lambda _key: None
            return
        # The memory store notes each key's partition (see `persisted`); a key it has no
        # note for (none should be left) is placed by Kafka's default hash, murmur2.
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

    def save(self, changes: Mapping[str, StateChange], generation: int | None = None) -> StateWrite:
        """The changes as changelog records; held pending, the table's store unchanged
        until `persisted`. With `generation`, each record is stamped (moments.fence) over
        the stamp of the record it replaces: the one loaded, or else the one held here.

        All or nothing: a record that cannot be written (a damaged field,
        `batchresult.mend_unwritable`) raises with the store and the records as they were,
        for the save to be retried. Kept stamped and pending, the records before it were
        read by the retry as holding those stamps: a record begun with nothing held lost
        its mark, one over a generation gone back was stamped."""
        headers: list[list[Header]] | None = None if generation is None else []
        write = StateWrite([], headers)
        records = write.records
        pending = self._pending
        # Put back if the save fails: each record stamped, with the stamp it had, and
        # each pending entry replaced.
        stamped: list[tuple[SubscriberState, Stamp | None]] = []
        displaced: list[tuple[bytes, _Pending]] = []
        try:
            for sub, change in changes.items():
                key = sub.encode()
                state = change.state
                if headers is not None:
                    held = None if state is None else state.stamp
                    if held is None:  # a record made here, or a deletion: what does it replace?
                        held = self._held_stamp(key, change.partition)
                    stamp = next_stamp(held, cast(int, generation))
                    if state is not None:
                        stamped.append((state, state.stamp))
                        state.stamp = stamp
                    elif stamp:
                        write.deletions[key] = stamp
                    headers.append(headers_of(stamp))
                value = None if state is None else state.to_bytes()
                records.append((change.partition, key, value))
                if (replaced := pending.get(key)) is not None:
                    displaced.append((key, replaced))
                pending[key] = (write, change.partition, sub, value, state)
        except BaseException:
            for state, had in stamped:
                state.stamp = had
            for _, key, _ in records:
                pending.pop(key, None)
            pending.update(displaced)
            raise
        return write

    def _held_stamp(self, key: bytes, partition: int) -> Stamp | None:
        """The stamp of the record held for `key` (pending, or in the table); for a key
        deleted, its tombstone's, when known (the table remembers those it restored or
        wrote, with RocksDB on its volume too); None if none: the record written is then
        one begun with nothing held."""
        entry = self._pending.get(key) if self._pending else None
        if entry is not None:
            value = entry[3]
            if value is None:
                return entry[0].deletions.get(key)
        else:
            value = self.table.data.get(key)
            if value is None:
                deleted: Deletions | None = getattr(self.table, "_deleted", None)
                if deleted is None:
                    return None
                deleted.know(partition)
                return deleted.get(key)
        return stamp_of_value(value)

    def persisted(self, write: StateWrite, last_offsets: Mapping[int, int]) -> None:
        """The changelog holds `write`'s records: write them to the table's store, then tell
        the store how far the changelog holds what it holds, as Faust does when it writes
        the changelog itself: RocksDB keeps the offset on disk, so a restart on the same
        volume reads only the changelog after it (without it, every record written since
        the store's last recovery was read again, ~10k a second). The offset goes last:
        killed before it, a restart reads these records from the changelog again."""
        self._apply(write)
        written = getattr(self.table, "written", None)  # moments.restore.PreloadingTable's
        if written is not None:
            for partition, offset in last_offsets.items():
                written(partition, offset)

    def discard(self, write: StateWrite) -> None:
        """`write`'s records are not in the changelog: forget them (and any cached copy),
        so the next load reads the table's bytes."""
        pending = self._pending
        for _, key, _ in write.records:
            entry = pending.get(key)
            if entry is not None and entry[0] is write:
                del pending[key]
                self.cache.drop(entry[2])

    def _apply(self, write: StateWrite) -> None:
        from faust.streams import _current_event

        data = self.table.data
        if getattr(data, "_dbs", None) is None:  # a store that asks no current event
            self._apply_records(write, write.records)
            return
        # RocksDB picks a partition's database by the current event: a stand-in event
        # is set once per partition, not per record.
        by_partition: dict[int, list[ChangelogRecord]] = {}
        for record in write.records:
            by_partition.setdefault(record[0], []).append(record)
        for partition, records in by_partition.items():
            event = self._stand_ins.get(partition)
            if event is None:
                event = self._stand_ins[partition] = _StandInEvent(self._source_topic, partition)
            token = _current_event.set(weakref.ref(cast(Any, event)))
            try:
                self._apply_records(write, records)
            finally:
                _current_event.reset(token)

    def _apply_records(self, write: StateWrite, records: list[ChangelogRecord]) -> None:
        data = self.table.data
        # Faust's memory store forgets, when a recovery ends, the keys of partitions this
        # worker no longer owns, by the partition it noted when it restored each key; the
        # keys written here are noted too, or a worker kept the state of every partition
        # it ever held (more memory after each scale-out; stale records if one came back).
        owners: dict[bytes, int] | None = getattr(data, "_key_partition", None)
        # The tombstones the table remembers for fencing (moments.restore.PreloadingTable):
        # a key written here is deleted or held by this write's record, not an older one.
        deleted: Deletions | None = getattr(self.table, "_deleted", None)
        pending = self._pending
        cache = self.cache
        for partition, key, value in records:
            if value is None:
                data.pop(key, None)
                if owners is not None:
                    owners.pop(key, None)
                if deleted is not None:
                    if (stamp := write.deletions.get(key)) is not None:
                        deleted.remember(key, partition, stamp)
                    else:
                        deleted.forget(key, partition)
            else:
                data[key] = value
                if owners is not None:
                    owners[key] = partition
                if deleted:
                    deleted.forget(key, partition)
            entry = pending.pop(key, None)
            if entry is None:
                continue
            if entry[0] is not write:  # a later write's: it stays pending
                pending[key] = entry
            elif (state := entry[4]) is None:
                cache.drop(entry[2])
            else:
                cache.keep(entry[2], cast(bytes, value), state)


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    partition: int


class _StandInEvent:
    """What a Faust store reads of the current event: `event.message.topic/.partition`."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Message(topic, partition)


def store_problem(store: str) -> str | None:
    """Why a worker could not open its state table with `store` (MOMENTS_STORE), or None.

    Faust's RocksDB store needs bindings the project installs only with its `rocksdb`
    extra (the image has it): without them the worker joined the consumer group, then
    crashed on its first assignment with Faust's `pip install faust-streaming-rocksdb or
    rocksdict` and exit code 1, and made the group rebalance twice. Only rocksdict will do
    (the store's memory bounds, `moments.rocksdb_memory`, are set through it; Faust also
    takes python-rocksdb), tried without importing Faust: `moments check` runs without it."""
    if store != "rocksdb":
        return None
    try:
        importlib.import_module("rocksdict")
    except ImportError:
        pass
    else:
        return None
    return (
        "MOMENTS_STORE=rocksdb: the RocksDB bindings (rocksdict) are not installed here; "
        "install moments with its rocksdb extra (pip install -c constraints.txt "
        "'.[rocksdb]', as the container image does), or set MOMENTS_STORE=memory"
    )
