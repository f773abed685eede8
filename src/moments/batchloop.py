"""The worker's batch loop: the input topics' fetches, taken whole from the consumer
(`moments.consumer`), into batches for the runtime, and the offsets marked processed
once a batch's outputs are durable.

Kept out of the Faust wiring (`moments.app`) so it can be tested without a broker: the
consumer is anything with the few members `BatchSource` names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from faust.types import TP

from moments.consumer import Fetch
from moments.records import RawRecord, next_offsets
from moments.rewind import CommittedOffset, RewindGuard, TopicPartition

COMMIT_EVERY_S = 1.0
"""At most one offset commit a second from the loop (a timer commits when it is idle)."""


class BatchSource(Protocol):
    """What the loop needs of `moments.consumer.BatchConsumer`."""

    epoch: int
    idle: asyncio.Event
    processed: dict[TP, int]
    stopping: bool

    async def take(self, max_records: int) -> Fetch:
        """The next fetch; of a partition sought back (`BatchLoop.seek`), none of the records
        taken from the broker before the seek: what follows a seek is its re-read, taken
        wherever it begins (`RewindGuard.sought`)."""
        ...

    async def commit_processed(self) -> None: ...


Seek = Callable[[Mapping[TopicPartition, int]], Awaitable[Collection[TopicPartition]]]
"""Seeks partitions back to offsets (and says why in the log); returns those sought. One
whose seek failed is not among them: it stays held and is sought again later
(`RewindGuard.seek`)."""

Owned = Callable[[], bool]
"""True while the worker still holds a batch's partitions in the consumer generation it
began in (see `Ownership`)."""

Ownership = Callable[[Collection[int]], Owned]
"""Called as a fetch's batches begin with their partitions: what tells, later, whether they
are still held (the app's: no rebalance began, the same generation, still assigned)."""


def _always_owned(_: Collection[int]) -> Owned:
    return lambda: True


class BatchLoop:
    def __init__(
        self,
        source: BatchSource,
        handle: Callable[[Sequence[RawRecord], Owned], Awaitable[Any]],
        guard: RewindGuard,
        committed: CommittedOffset,
        seek: Seek,
        batch_size: int,
        on_fetch: Callable[[], None] = lambda: None,
        ownership: Ownership = _always_owned,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.handle = handle
        self.guard = guard
        self.committed = committed
        self.seek = seek
        self.batch_size = batch_size
        self.on_fetch = on_fetch
        """Called before each fetch is looked at (the app follows the group's generation)."""
        self.ownership = ownership
        self.clock = clock
        self._last_commit = clock()

    async def run(self) -> None:
        while True:
            await self.step()

    async def step(self) -> None:
        """Take the next fetch and process it: records the rewind guard holds back are left
        for the re-read, the rest go in batches of at most `batch_size`; a seek or a
        revocation meanwhile (a new epoch) stops it, the rest read again from the commit.
        So does a rebalance that began meanwhile (`ownership`): a batch still waiting then
        (on Redis, past the revocation's bounded wait) writes no state (`Runtime.handle`),
        and its offsets are not marked: the partitions' next owner reads its events again.
        Offsets are marked from the records processed, and committed at most once a
        `COMMIT_EVERY_S`. A stop of the worker (`stopping`) lets the batch in flight
        finish and marks it, for the stop's last commit, and begins no other: the
        partitions are still this worker's, and unmarked, the batch was read again by
        the next start."""
        source = self.source
        fetch = await source.take(self.batch_size)
        if fetch.epoch != source.epoch or source.stopping:
            return
        source.idle.clear()
        try:
            self.on_fetch()
            records = [
                RawRecord(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp, r.headers)
                for tp, batch in fetch.records
                for r in batch
            ]
            records, seeks = self.guard.filter(records, self.committed)
            if seeks:
                # What comes of those sought now is their re-read; one whose seek failed
                # stays held until a later seek of it is made.
                self.guard.sought(await self.seek(seeks))
            size, epoch = self.batch_size, source.epoch
            owned = self.ownership({tp.partition for tp, _ in fetch.records})
            handled = 0
            for start in range(0, len(records), size):
                if source.epoch != epoch or source.stopping or not owned():
                    break
                await self.handle(records[start : start + size], owned)
                handled = start + size
            if fetch.epoch != source.epoch or not owned():
                return
            # Per partition the records are in offset order: those handled are a prefix.
            for (topic, partition), offset in next_offsets(records[:handled]).items():
                source.processed[TP(topic, partition)] = offset
            if self.clock() - self._last_commit >= COMMIT_EVERY_S:
                await source.commit_processed()
                self._last_commit = self.clock()
        finally:
            source.idle.set()
