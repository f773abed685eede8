"""Restoring the state table from its changelog with a plain consumer.

Faust's recovery hands every changelog record through its consumer thread, a
stream event and a queue, one by one: a restarted worker came back at ~9-11k
records/s on this machine (`benchmarks/recovery.py`), so 1M subscribers would
take minutes before the first event is processed. Here the changelog partitions
that a rebalance makes active are read in bulk with aiokafka, from the offset
the store already holds (nothing for a new memory store; RocksDB's persisted
offset), the newest value of each key goes into the store, and Faust is told
the store holds everything up to the end offset read (`persisted_offset`), so
its own recovery has nothing left to read.

The store's offset is kept current as the batch loop writes the changelog
(`moments.store.FaustTableStore.persisted`), so a partition kept through a
rebalance has nothing to read. Anything that fails here leaves the partition to
Faust's recovery, as before. Standby partitions (kept only with RocksDB: see
`moments.settings.Settings.standby_copies`) are read the same way when the table is
told to (`preload_standbys`); Faust then follows them from where the read ended.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP, StoreT
from yarl import URL

from moments.fence import (
    HEADER,
    UNSTAMPED,
    Fold,
    Stamp,
    from_headers,
    header_value,
    later_wins,
    parse_header,
    stamp_of_value,
    to_header,
)

log = logging.getLogger(__name__)

READ_LIMIT_S = 300.0
"""Give up bulk reading after this long and leave what is unread to Faust's recovery."""
FETCH_BYTES = 16 * 1024 * 1024
"""Per request and per partition: records are small, so large fetches."""
APPLY_CHUNK = 20_000
"""Records a bulk restore applies to the store between two turns of the event loop: a
partition of millions applied in one go held the loop for tens of seconds, nothing beat
the health clock (/livez failed, and Kubernetes restarted the worker mid-restore, to
restore again) and the consumer's heartbeats waited too."""


@dataclass
class ChangelogPartition:
    """The value of each key read from one changelog partition that a restore keeps
    (None: deleted): the newest, unless a stale one came after it (moments.fence)."""

    end: int
    """The partition's end offset as the broker reported it when the read began: every
    record before it was read (and on Tansu a few after it: see `read_changelog`)."""
    kept: Fold = field(default_factory=Fold)

    @property
    def values(self) -> dict[bytes, bytes | None]:
        return self.kept.values


async def read_changelog(
    bootstrap_servers: list[str],
    client_kwargs: Mapping[str, Any],
    starts: Mapping[TP, int | None],
) -> dict[TP, ChangelogPartition]:
    """Each partition's records from its start offset (None: the beginning) up to at least
    its end offset at the start of the read, folded to the newest value per key; a record
    stamped below the one kept for its key is stale and skipped (moments.fence).

    Tansu reports a partition's end as the first offset of its last batch plus one, inside
    a batch of many records; the whole batch comes with the fetch and all of it is kept.
    The end stays the reported one: Faust refuses a store that claims more than it
    (ConsistencyError), and re-applies the rest of that batch, values the store holds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        # A start the broker no longer has (compacted or deleted away) reads from the
        # first record it does have: a compacted changelog still holds every key's newest.
        auto_offset_reset="earliest",
        fetch_max_bytes=FETCH_BYTES,
        max_partition_fetch_bytes=FETCH_BYTES,
        **client_kwargs,
    )
    await consumer.start()
    try:
        wanted = {TopicPartition(tp.topic, tp.partition): tp for tp in starts}
        ends = await consumer.end_offsets(list(wanted))
        out = {tp: ChangelogPartition(ends[k]) for k, tp in wanted.items()}
        pending = {k for k, tp in wanted.items() if (starts[tp] or 0) < ends[k]}
        if not pending:
            return out
        consumer.assign(list(pending))
        for k in pending:
            start = starts[wanted[k]]
            if start is None:
                await consumer.seek_to_beginning(k)
            else:
                consumer.seek(k, start)
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=100_000)
            for k, records in fetched.items():
                offer = out[wanted[k]].kept.offer
                for record in records:
                    if record.key is not None:
                        offer(record.key, record.value, header_value(record.headers))
            for k in list(pending):
                if await consumer.position(k) >= ends[k]:
                    pending.discard(k)
        return out
    finally:
        await consumer.stop()


class _Message(NamedTuple):
    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class _ChangelogEvent(NamedTuple):
    """What a Faust store's `apply_changelog_batch` reads of a changelog event."""

    message: _Message
    key: bytes
    value: bytes | None


def _say_skipped(count: int) -> None:
    log.warning(
        "state: %d stale changelog record(s) not restored: written by a previous owner of "
        "the partition, they landed after the record of a later owner (a write held up "
        "past a rebalance; docs/architecture.md, 'A state write that lands after the next "
        "owner's')",
        count,
    )


def _stamped(raw: bytes) -> tuple[tuple[str, bytes], ...]:
    return ((HEADER, raw),) if raw else ()


DELETIONS_FAMILY = "moments-deletions"
"""The column family of each partition's RocksDB database that keeps `Deletions`."""


class Deletions(dict[bytes, Stamp]):
    """Key -> the stamp of the tombstone that deleted it, for a stamped tombstone the table
    applied (restored, or written by the worker): a stale record after it must not bring
    the subscriber back (moments.fence). A key leaves once a record of it is applied, and
    memory when the worker gives its partition up (`forget_partitions`).

    With RocksDB, each is kept on the partition's database too, in a column family of its
    own (`moments-deletions`: Faust's reads and iterations of the records never see it),
    and a partition's are read back into memory the first time the table meets the
    partition. A worker restarted on its volume reads only the changelog after the offset
    the volume holds: remembered only in memory, the deletions before that offset were
    forgotten, and a previous owner's stale record in that tail (landing after the
    deletion) found nothing held and no deletion known, and brought the subscriber back.
    The memory store reads the whole changelog on every restore: memory is enough."""

    def __init__(self, table: Any) -> None:
        super().__init__()
        self.table = table
        self._read: set[int] = set()
        """The partitions whose deletions on disk are in memory."""
        self._keys: dict[int, set[bytes]] = {}
        """Partition -> the keys remembered for it, to forget them with the partition."""

    def _store(self) -> Any:
        """The table's store if it keeps partitions' databases (RocksDB), else None."""
        store = self.table.data
        return store if getattr(store, "_dbs", None) is not None else None

    def know(self, partition: int) -> None:
        """Read `partition`'s deletions from its database once (RocksDB)."""
        if partition in self._read:
            return
        if self._store() is None:  # memory: nothing on disk
            self._read.add(partition)
            return
        family = self._family(partition, create=False)
        if family is not None:
            keys = self._keys.setdefault(partition, set())
            for key, raw in family.items():
                if stamp := parse_header(raw):
                    self[key] = stamp
                    keys.add(key)
        self._read.add(partition)

    def forget_partitions(self, keep: set[int]) -> None:
        """The deletions of partitions not in `keep` leave memory (their databases were let
        go, and the changelog went on without this worker): with RocksDB they are read
        again from the partition's database when it is met next; the memory store reads
        the whole changelog when it gets a partition back. Kept, a worker held the
        deletions of every partition it ever held, for as long as it ran."""
        self._read &= keep
        for partition in [p for p in self._keys if p not in keep]:
            for key in self._keys.pop(partition):
                self.pop(key, None)

    def remember(self, key: bytes, partition: int, stamp: Stamp) -> None:
        self[key] = stamp
        self._keys.setdefault(partition, set()).add(key)
        if self._store() is not None:
            self._family(partition, create=True).put(key, to_header(stamp))

    def forget(self, key: bytes, partition: int) -> None:
        if self.pop(key, None) is not None:
            if (keys := self._keys.get(partition)) is not None:
                keys.discard(key)
            if self._store() is not None:
                family = self._family(partition, create=False)
                if family is not None:
                    family.delete(key)

    def _family(self, partition: int, create: bool) -> Any:
        """The partition's column family of deletions (None: none yet, and not `create`).
        Asked of the database each time, never kept: a handle kept would keep the database
        open (and locked) after Faust lets it go on a revocation."""
        db = self._store()._db_for_partition(partition)
        try:
            return db.get_column_family(DELETIONS_FAMILY)
        except Exception:  # rocksdict says only Exception: the family does not exist
            if not create:
                return None
        # The store's own options: the settings' write buffers, the shared block cache.
        options = self._store().rocksdb_options.as_options()
        return db.create_column_family(DELETIONS_FAMILY, options)


class PreloadingTable(faust.Table[bytes, bytes]):
    """A table whose active changelog partitions are read in bulk on a rebalance (see the
    module's docstring). `client` must be set before the worker starts."""

    def __init__(
        self,
        *args: Any,
        prepare_store: Callable[[StoreT[bytes, bytes]], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.prepare_store = prepare_store
        """Called with the store Faust makes for the table, before it opens anything (the
        RocksDB store's memory bounds: `moments.rocksdb_memory.bound`)."""
        self.client: tuple[list[str], Mapping[str, Any]] | None = None
        """(bootstrap servers, aiokafka security arguments) for the bulk reads."""
        self._held: dict[TP, int] = {}
        """Active changelog partition -> the last offset the store holds."""
        self.preload_standbys = False
        """Read standby partitions in bulk too: for a store that keeps them (RocksDB)."""
        self._deleted = Deletions(self)
        """Key -> the stamp of the tombstone that deleted it, for a stamped tombstone
        applied here: a stale record after it must not bring the subscriber back."""
        self.stale_skipped = 0
        """Changelog records not applied: stamped below the record held (moments.fence)."""
        self.on_stale: Callable[[int, int], None] | None = None
        """Told (partition, count) of the records skipped as stale, as they are (the
        worker counts them in `moments_state_stale_records_skipped_total`)."""

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Faust's recovery and standby copies: each record is applied unless it is stamped
        below the record the store holds for its key (moments.fence)."""
        skipped = self.stale_skipped
        super().apply_changelog_batch(self._fenced(batch, unique=False))
        if self.stale_skipped > skipped:
            _say_skipped(self.stale_skipped - skipped)

    def _fenced(self, batch: Iterable[Any], unique: bool) -> Iterator[Any]:
        """`batch`, each stale record replaced by the held record again (the same offset,
        so a store that notes offsets notes it read). `unique`: each key once (a bulk
        read's fold), so no key of the batch needs remembering."""
        data = self.data
        deleted = self._deleted
        seen: dict[bytes, tuple[bytes | None, Stamp | None]] = {}
        partition = -1
        for event in batch:
            message = event.message
            key, value = message.key, message.value
            if message.partition != partition:
                partition = message.partition
                deleted.know(partition)
            found = seen.get(key) if seen else None
            if found is not None:
                held_value, held = found
            else:
                # The record held first: a deletion remembered counts only for a key the
                # store holds nothing for (a volume an older version wrote on after the
                # deletion holds its record, and its family still the deletion).
                held_value = data.get(key)
                if held_value is not None:
                    held = stamp_of_value(held_value)
                elif deleted and (gone := deleted.get(key)) is not None:
                    held = gone
                elif unique and value is not None:  # a bulk read's record, nothing held
                    yield event
                    continue
                else:
                    held = None
            later = from_headers(message.headers)
            if not later:  # unstamped: in log order, as before stamps
                if deleted:
                    deleted.forget(key, partition)
                if not unique:
                    seen[key] = (value, UNSTAMPED)
                yield event
                continue
            deleted_held = held_value is None and held is not None
            if not later_wins(later, value is None, held, deleted_held):
                self._skipped(partition, 1)
                again = _Message(message.tp, partition, message.offset, key, held_value)
                yield _ChangelogEvent(again, key, held_value)
                continue
            if value is None:
                deleted.remember(key, partition, later)
            elif deleted:
                deleted.forget(key, partition)
            if not unique:
                seen[key] = (value, later)
            yield event

    def _skipped(self, partition: int, count: int) -> None:
        """`count` stale records of `partition` not applied."""
        self.stale_skipped += count
        if self.on_stale is not None:
            self.on_stale(partition, count)

    def _new_store_by_url(self, url: str | URL) -> StoreT[bytes, bytes]:
        store = super()._new_store_by_url(url)
        if self.prepare_store is not None:
            self.prepare_store(store)
        return store

    def persisted_offset(self, tp: TP) -> int | None:
        found = self._held.get(tp)
        if found is not None:
            return found
        try:
            return super().persisted_offset(tp)
        except NotImplementedError:  # a store that keeps no offset (older Faust's memory)
            return None

    def written(self, partition: int, offset: int) -> None:
        """The changelog holds every record saved so far, up to `offset` in `partition`."""
        tp = TP(self.changelog_topic.get_topic_name(), partition)
        self.data.set_persisted_offset(tp, offset)
        if tp in self._held:
            self._held[tp] = offset

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        changelog = self.changelog_topic.get_topic_name()
        active = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == changelog}
        standby: set[TP] = set()
        if self.preload_standbys:
            standby = {
                tp for tp in self.app.assignor.assigned_standbys() if tp.topic == changelog
            } - active
        # A partition given up since is no longer held: its records went on without us.
        self._held = {tp: offset for tp, offset in self._held.items() if tp in active}
        mine = {tp.partition for tp in active | standby}
        self._deleted.forget_partitions(mine)
        for partition in sorted(mine):  # before the restores, and the worker's first write
            try:
                self._deleted.know(partition)
            except Exception as exc:  # tried again when a restore meets the partition
                log.warning(
                    "state: the deletions kept for partition %d could not be read yet (%s: %s)",
                    partition,
                    type(exc).__name__,
                    exc,
                )
        if (active or standby) and self.client is not None:
            await self._preload({tp: self.persisted_offset(tp) for tp in active | standby}, active)

    async def _apply_in_chunks(
        self, tp: TP, part: ChangelogPartition, held: int | None, last: int
    ) -> None:
        """`part`'s records into the store, `APPLY_CHUNK` at a time, the event loop free to
        run between two (the health beat, the consumer's heartbeats). Only the last chunk
        carries the offset read up to: the others carry the one the store held already
        (-1, Faust's own "nothing read": its recovery reads from the changelog's first
        record), so a chunk that fails leaves the store's offset where it was, and Faust's
        recovery reads the whole partition again, as when it was applied in one go."""
        before = -1 if held is None else held
        stamps = part.kept.stamps
        items = iter(part.values.items())
        left = len(part.values)
        while True:
            chunk = list(itertools.islice(items, APPLY_CHUNK))
            left -= len(chunk)
            offset = last if left <= 0 else before
            events = (
                _ChangelogEvent(
                    _Message(tp, tp.partition, offset, key, value, _stamped(stamps[key])),
                    key,
                    value,
                )
                for key, value in chunk
            )
            super().apply_changelog_batch(self._fenced(events, unique=True))
            if left <= 0:
                return
            await asyncio.sleep(0)

    async def _preload(self, held: Mapping[TP, int | None], active: set[TP]) -> None:
        """Read `held`'s partitions in bulk from after the offsets given; Faust's recovery
        then starts at the end of what was read, for standby partitions as for active ones
        (it asks `persisted_offset`, which the store answers once it applied them)."""
        started = time.perf_counter()
        servers, kwargs = self.client or ([], {})
        starts = {tp: None if offset is None else offset + 1 for tp, offset in held.items()}
        try:
            read = await asyncio.wait_for(read_changelog(servers, kwargs, starts), READ_LIMIT_S)
        except Exception as exc:  # Faust's recovery reads them instead, slower
            log.warning(
                "bulk restore of %d state partition(s) failed (%s: %s); Faust's recovery "
                "reads them instead",
                len(held),
                type(exc).__name__,
                exc,
            )
            return
        count = standbys = 0
        before = self.stale_skipped
        for tp, part in read.items():
            if part.kept.skipped:  # skipped in the read: a stale record after a newer one
                self._skipped(tp.partition, part.kept.skipped)
            last = part.end - 1  # RocksDB keeps the highest offset applied
            try:
                await self._apply_in_chunks(tp, part, held.get(tp), last)
            except Exception as exc:  # Faust's recovery reads it again from its offset
                log.warning(
                    "bulk restore of %s failed (%s: %s); Faust's recovery reads it instead",
                    tp,
                    type(exc).__name__,
                    exc,
                )
                continue
            applied = sum(value is not None for value in part.values.values())
            count += applied
            if tp in active:
                self._held[tp] = last
            else:
                standbys += applied
        # Skipped in the read (a stale record after a newer one) and against the store.
        skipped = self.stale_skipped - before
        if skipped:
            _say_skipped(skipped)
        if count:
            log.info(
                "state: %d record(s) of %d partition(s) restored from the changelog in %.1f s"
                " (%d of them in %d standby partition(s))",
                count,
                len(read),
                time.perf_counter() - started,
                standbys,
                len(read.keys() - active),
            )
