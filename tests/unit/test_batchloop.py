"""The worker's batch loop (moments.batchloop) on a fake consumer: what it hands the
runtime, which offsets it marks processed, when it commits and when a new epoch stops it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka.errors import IllegalStateError
from faust.types import TP

from moments.batchloop import COMMIT_EVERY_S, BatchLoop
from moments.consumer import Fetch, _since_seeks
from moments.records import RawRecord
from moments.rewind import HOLD_LIMIT_S, RewindGuard, TopicPartition

from .fakes import Clock

T = "telecom.roaming"


@dataclass
class Rec:
    """What aiokafka hands over per record (the fields the loop reads)."""

    offset: int
    key: bytes = b"k"
    value: bytes = b"{}"
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class FakeSource:
    fetches: list[Fetch]
    epoch: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    processed: dict[TP, int] = field(default_factory=dict)
    stopping: bool = False
    commits: list[dict[TP, int]] = field(default_factory=list)
    sought: dict[TP, int] = field(default_factory=dict)
    """Partition -> seeks made so far: as the consumer does, a fetch taken from aiokafka
    before a seek of a partition (`Fetch.seeks`) loses that partition's records."""

    async def take(self, max_records: int) -> Fetch:
        return _since_seeks(self.fetches.pop(0), self.sought)

    async def commit_processed(self) -> None:
        self.commits.append(dict(self.processed))


def fetch(
    *parts: tuple[int, list[int]], epoch: int = 0, seeks: dict[int, int] | None = None
) -> Fetch:
    """A fetch taken from aiokafka once partition p had been sought `seeks[p]` times."""
    sought = {TP(T, p): n for p, n in (seeks or {}).items()}
    return Fetch(epoch, [(TP(T, p), [Rec(o) for o in offsets]) for p, offsets in parts], sought)


class Harness:
    def __init__(self, fetches: list[Fetch], committed: dict[TopicPartition, int]) -> None:
        self.source = FakeSource(fetches)
        self.handled: list[list[tuple[int, int]]] = []
        self.seeks: list[dict[TopicPartition, int]] = []
        self.clock = Clock()
        self.refused = 0
        """How many seeks to come fail (as aiokafka's for a partition no longer assigned)."""
        self.failed: list[tuple[TopicPartition, int, float]] = []
        self.loop = BatchLoop(
            self.source,
            self.handle,
            RewindGuard(self.clock),
            committed.get,
            self.seek,
            batch_size=3,
            clock=self.clock,
        )

    async def handle(self, records: Sequence[RawRecord], _owned: object = None) -> None:
        self.handled.append([(r.partition, r.offset) for r in records])

    async def seek(self, seeks: Mapping[TopicPartition, int]) -> list[TopicPartition]:
        """The app's `seek_back`: each partition through the guard, one that fails held."""
        self.seeks.append(dict(seeks))
        return await self.loop.guard.seek(seeks, self.seek_one, self.seek_failed)

    async def seek_one(self, tp: TopicPartition, offset: int) -> None:
        if self.refused:
            self.refused -= 1
            raise IllegalStateError(f"No current assignment for partition {TP(*tp)}")
        self.source.sought[TP(*tp)] = self.source.sought.get(TP(*tp), 0) + 1

    def seek_failed(self, tp: TopicPartition, offset: int, exc: Exception, retry_in: float) -> None:
        self.failed.append((tp, offset, retry_in))


async def test_records_go_in_batches_and_their_offsets_are_marked() -> None:
    h = Harness([fetch((0, [5, 6, 7, 8]), (1, [0]))], {(T, 0): 5, (T, 1): 0})
    await h.loop.step()
    assert h.handled == [[(0, 5), (0, 6), (0, 7)], [(0, 8), (1, 0)]]
    assert h.source.processed == {TP(T, 0): 9, TP(T, 1): 1}
    assert h.source.idle.is_set()


async def test_a_partition_sought_back_is_not_marked_until_its_re_read() -> None:
    """Marked from the fetch, the held records' last offset was committed: a crash before
    the re-read lost the events between the commit and it (code review)."""
    h = Harness(
        [
            fetch((0, [108]), (1, [7])),  # partition 0 committed at 100: 100-107 dropped
            fetch((0, [109, 110]), (1, [8])),  # fetched before the seek: dropped
            fetch((0, list(range(100, 111))), seeks={0: 1}),  # the re-read
        ],
        {(T, 0): 100, (T, 1): 7},
    )
    await h.loop.step()
    assert h.seeks == [{(T, 0): 100}]
    assert h.source.processed == {TP(T, 1): 8}
    await h.loop.step()
    assert h.source.processed == {TP(T, 1): 9}
    await h.loop.step()
    assert h.source.processed == {TP(T, 0): 111, TP(T, 1): 9}


async def test_a_new_epoch_during_a_fetch_stops_it_unmarked() -> None:
    h = Harness([fetch((0, [0, 1, 2, 3, 4, 5]))], {(T, 0): 0})

    async def revoked_after_first(records: Sequence[RawRecord], _owned: object) -> None:
        h.handled.append([(r.partition, r.offset) for r in records])
        h.source.epoch += 1  # a revocation while the first batch was handled

    h.loop.handle = revoked_after_first
    await h.loop.step()
    assert h.handled == [[(0, 0), (0, 1), (0, 2)]]
    assert h.source.processed == {}


async def test_a_stale_fetch_is_dropped_unread() -> None:
    h = Harness([fetch((0, [0]), epoch=0)], {(T, 0): 0})
    h.source.epoch = 1
    await h.loop.step()
    assert (h.handled, h.source.processed) == ([], {})


async def test_offsets_are_committed_at_most_once_a_second() -> None:
    h = Harness([fetch((0, [0])), fetch((0, [1])), fetch((0, [2]))], {(T, 0): 0})
    h.clock.now += COMMIT_EVERY_S
    await h.loop.step()
    await h.loop.step()  # within the second: marked, not committed
    h.clock.now += COMMIT_EVERY_S
    await h.loop.step()
    assert h.source.commits == [{TP(T, 0): 1}, {TP(T, 0): 3}]


async def test_a_silent_partition_re_read_from_past_its_commit_is_handled() -> None:
    """The silent-partition timer seeks partition 0 back to its commit, 100; the record at
    100 is gone (compacted, or deleted by retention), so the re-read begins at 103. Its
    records were held for a record at 100 that never came: dropped, never fetched again,
    and the offsets after them committed."""
    h = Harness([fetch((0, [103, 104, 105])), fetch((0, [106]))], {(T, 0): 100})
    assert h.loop.guard.silent([(T, 0)], lambda tp: 100) == {(T, 0): 100}
    h.loop.guard.sought([(T, 0)])  # the app's seek_back, once the seek is made
    await h.loop.step()
    await h.loop.step()
    assert h.handled == [[(0, 103), (0, 104), (0, 105)], [(0, 106)]]
    assert h.source.processed == {TP(T, 0): 107}
    assert h.seeks == []


async def test_a_re_read_that_begins_past_the_record_that_showed_the_gap_is_handled() -> None:
    """Partition 0, committed at 100, first delivered 108 (Faust dropped 100-107): sought
    back to 100. Before the re-read, 100-108 went (compaction, retention): it begins at
    109. It was held for a record at or before 108 that never came, so 109 and every
    record after it were dropped for 30 s, never fetched again, and the offsets after
    them committed. The consumer drops what it took from aiokafka before the seek, so
    what comes after the seek is the re-read, wherever it begins."""
    h = Harness(
        [
            fetch((0, [108, 109])),
            fetch((0, [109, 110, 111]), seeks={0: 1}),  # the re-read
            fetch((0, [112]), seeks={0: 1}),
        ],
        {(T, 0): 100},
    )
    await h.loop.step()
    assert (h.seeks, h.handled, h.source.processed) == ([{(T, 0): 100}], [], {})
    await h.loop.step()
    h.clock.now += HOLD_LIMIT_S  # once the hold gave up, the records after came
    await h.loop.step()
    assert h.handled == [[(0, 109), (0, 110), (0, 111)], [(0, 112)]]
    assert h.source.processed == {TP(T, 0): 113}


async def test_a_failed_seek_holds_the_partition_until_a_seek_is_made() -> None:
    """Partition 0, committed at 100, first delivered 108 (Faust dropped 100-107): its seek
    back fails (aiokafka: the partition no longer assigned, a rebalance under way). It
    raised out of the batch loop and crashed the worker. Now the loop goes on with the
    other partitions, partition 0's records are held, past the hold's 30 s limit too (let
    go then, 109-111 were handled before 100-108 and 121 committed), and its seek is made
    again after a back-off: the re-read is handled in order, marked from what was handled."""
    h = Harness(
        [
            fetch((0, [108]), (1, [7])),
            fetch((0, [109, 110]), (1, [8])),  # not sought yet: held
            fetch((0, [111]), (1, [9])),  # past the hold limit: still held
            fetch((0, list(range(100, 112))), seeks={0: 1}),  # the re-read
        ],
        {(T, 0): 100, (T, 1): 7},
    )
    h.refused = 1
    await h.loop.step()
    assert h.failed == [((T, 0), 100, 1.0)]
    await h.loop.step()
    h.clock.now += HOLD_LIMIT_S
    await h.loop.step()
    assert h.handled == [[(1, 7)], [(1, 8)], [(1, 9)]]
    assert h.source.processed == {TP(T, 1): 10}
    assert h.loop.guard.due() == {(T, 0): 100}  # its back-off is over
    assert await h.seek(h.loop.guard.due()) == [(T, 0)]  # the app's retry timer
    await h.loop.step()
    assert [o for batch in h.handled[3:] for p, o in batch] == list(range(100, 112))
    assert h.source.processed == {TP(T, 0): 112, TP(T, 1): 10}
    assert h.loop.guard.due() == {}
