"""A graceful stop (SIGTERM) commits the batch it finishes.

Faust's stop waits for the consumer (`BatchConsumer.wait_empty`) while the partitions are
still this worker's: the batch in flight finishes, its tasks and state are durable, and
its offsets are committed before the worker leaves. Before, the stop invalidated the
queue as a revocation does (a new epoch), so the batch loop dropped the batch's offsets
once it finished: the next start read the whole batch again (counted as replays in
`moments_events_replayed_total`, slow on a big batch).

Unit-level: the consumer's own `wait_empty`, `take` and `commit_processed` on a stand-in
with no broker, and the real batch loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from types import SimpleNamespace

from faust.types import TP

from moments.batchloop import BatchLoop
from moments.consumer import BatchConsumer, Fetch
from moments.records import RawRecord
from moments.rewind import RewindGuard, TopicPartition

from .test_batchloop import Rec

T = "telecom.roaming"
P = TP(T, 0)


async def _nothing() -> None:
    pass


class _Consumer(BatchConsumer):
    """A `BatchConsumer` with no broker: the members a stop touches, the commits recorded."""

    def __init__(self, *, stopping: bool) -> None:  # no super(): no Faust app, no broker
        self.app = SimpleNamespace(should_stop=stopping)  # type: ignore[assignment]  # a stop reads this
        self.fetches: asyncio.Queue[Fetch] = asyncio.Queue()
        self.epoch = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.processed: dict[TP, int] = {}
        self._sought: dict[TP, int] = {}
        self._waiting: Counter[TP] = Counter()
        self._committed_offset = {P: 100}
        self.state_settled = _nothing
        self.commits: list[dict[TP, int]] = []
        self.stopping = False
        self._thread = SimpleNamespace(passed={})  # type: ignore[assignment]  # no markers read

    def queue(self, *offsets: list[int]) -> None:
        for batch in offsets:
            self.fetches.put_nowait(Fetch(self.epoch, [(P, [Rec(o) for o in batch])]))
            self._waiting[P] += 1

    async def _agents_done(self) -> None:
        pass

    async def commit_and_end_transactions(self) -> None:
        pass

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        self.commits.append(dict(offsets))
        self._committed_offset.update(offsets)
        return True


class _Held:
    """The runtime's batch handling, held until released (its tasks waiting on Redis)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.handled: list[list[int]] = []

    async def __call__(self, records: Sequence[RawRecord], _owned: object = None) -> None:
        self.started.set()
        await self.release.wait()
        self.handled.append([r.offset for r in records])


async def _stop_during_a_batch(consumer: _Consumer, batch_size: int = 100) -> _Held:
    held = _Held()
    loop = BatchLoop(consumer, held, RewindGuard(), lambda tp: 100, _no_seek, batch_size=batch_size)
    running = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(held.started.wait(), 5)
        stop = asyncio.create_task(consumer.wait_empty())
        await asyncio.sleep(0.05)  # the stop waits for the batch
        assert not stop.done()
        held.release.set()
        await asyncio.wait_for(stop, 5)
        await asyncio.sleep(0.05)  # the loop goes on to whatever it may take next
    finally:
        running.cancel()
    return held


async def _no_seek(_: Mapping[TopicPartition, int]) -> Collection[TopicPartition]:
    return ()


class TestStopCommitsTheBatchInFlight:
    async def test_the_batch_in_flight_at_a_stop_is_committed(self) -> None:
        """Its events are not read again by the next start; a fetch still queued is
        dropped unread (not handled, not committed: the next start reads it)."""
        consumer = _Consumer(stopping=True)
        consumer.queue([100, 101, 102])
        held = await _stop_during_a_batch(consumer)
        consumer.queue([103])  # nothing more is taken once the stop began
        await asyncio.sleep(0.05)
        assert held.handled == [[100, 101, 102]]
        assert consumer.commits == [{P: 103}]

    async def test_a_stop_finishes_the_chunk_in_flight_and_commits_what_it_handled(
        self,
    ) -> None:
        """A fetch larger than a batch: the chunk in flight is finished and committed, the
        next chunks are left for the next start (the stop stays within its deadline)."""
        consumer = _Consumer(stopping=True)
        consumer.queue([100, 101, 102, 103, 104, 105, 106])
        held = await _stop_during_a_batch(consumer, batch_size=3)
        assert held.handled == [[100, 101, 102]]
        assert consumer.commits == [{P: 103}]

    async def test_a_revocation_still_leaves_the_batch_in_flight_unmarked(self) -> None:
        """A rebalance is not a stop: the partitions' next owner reads the batch again
        (tests/unit/test_batch_revocation.py), so nothing of it is committed here."""
        consumer = _Consumer(stopping=False)
        consumer.queue([100, 101, 102])
        held = await _stop_during_a_batch(consumer)
        assert held.handled == [[100, 101, 102]]
        assert consumer.commits == []
        assert consumer.processed == {}
