"""BatchConsumer.take: the batch loop gets every queued fetch at once, in order."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from moments.consumer import NO_SEEKS, BatchConsumer, BatchConsumerThread, Fetch

A, B = TP("usage", 0), TP("usage", 1)


def consumer(*fetches: Fetch) -> Any:
    queue: asyncio.Queue[Fetch] = asyncio.Queue()
    waiting: Counter[TP] = Counter()
    for f in fetches:
        queue.put_nowait(f)
        waiting.update(tp for tp, _ in f.records)
    return SimpleNamespace(fetches=queue, _waiting=waiting, _sought={})


async def test_queued_fetches_come_as_one_with_each_partition_in_order() -> None:
    fake = consumer(Fetch(3, [(A, [1, 2]), (B, [10])]), Fetch(3, [(A, [3]), (B, [11, 12])]))
    fetch = await BatchConsumer.take(fake, 100)
    assert fetch.epoch == 3
    assert [r for tp, batch in fetch.records if tp == A for r in batch] == [1, 2, 3]
    assert [r for tp, batch in fetch.records if tp == B for r in batch] == [10, 11, 12]
    assert fake.fetches.empty()
    assert +fake._waiting == Counter()  # nothing counted as waiting any more


async def test_a_later_epoch_drops_the_stale_fetches_before_it() -> None:
    fake = consumer(Fetch(3, [(A, [1])]), Fetch(4, [(A, [7])]), Fetch(4, [(B, [8])]))
    fetch = await BatchConsumer.take(fake, 100)
    assert fetch.epoch == 4
    assert fetch.records == [(A, [7]), (B, [8])]
    assert +fake._waiting == Counter()


async def test_one_fetch_alone_is_handed_as_it_is() -> None:
    only = Fetch(1, [(A, [1])])
    assert await BatchConsumer.take(consumer(only), 100) is only


async def test_fetches_are_merged_only_up_to_the_batch_size() -> None:
    fake = consumer(Fetch(1, [(A, [1, 2, 3])]), Fetch(1, [(A, [4, 5])]), Fetch(1, [(B, [6])]))
    first = await BatchConsumer.take(fake, 4)  # 3, then 5 >= 4: stop
    assert first.records == [(A, [1, 2, 3]), (A, [4, 5])]
    second = await BatchConsumer.take(fake, 4)
    assert second.records == [(B, [6])]
    big = consumer(Fetch(1, [(A, list(range(10)))]), Fetch(1, [(B, [6])]))
    assert (await BatchConsumer.take(big, 4)).records == [(A, list(range(10)))]  # alone


class _Thread:
    """The consumer's thread: aiokafka's reads and seeks, one after the other."""

    def __init__(self) -> None:
        self.seeks: dict[TP, int] = {}
        self.sought: list[tuple[TP, int]] = []

    def _ensure_consumer(self) -> Any:
        return SimpleNamespace(seek=lambda tp, offset: self.sought.append((tp, offset)))

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)

    async def seek_counted(self, partition: TP, offset: int) -> None:
        await BatchConsumerThread.seek_counted(self, partition, offset)  # type: ignore[arg-type]

    async def read(self, records: dict[TP, list[int]], monkeypatch: pytest.MonkeyPatch) -> Any:
        """What `_fetch_records` hands the drain loop for `records` taken from aiokafka now."""

        async def taken(*_: Any, **__: Any) -> dict[TP, list[int]]:
            return records

        monkeypatch.setattr(AIOKafkaConsumerThread, "_fetch_records", taken)
        thread = object.__new__(BatchConsumerThread)
        thread.seeks = self.seeks
        return await thread._fetch_records(None, set(records))


async def test_records_taken_before_their_partition_was_sought_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rewind guard seeks a silent partition back to its commit while a read of it is
    queued or in hand: those records, past the ones Faust dropped, would be handled before
    the re-read brings the earlier ones, which the state would then take for replays.
    aiokafka discards only the records it still holds itself."""
    thread = _Thread()
    fake = consumer()
    fake._thread, fake._read_offset = thread, {}
    before = await thread.read({A: [108, 109], B: [5]}, monkeypatch)
    await BatchConsumer.seek(fake, A, 100)
    after = await thread.read({A: [100, 101]}, monkeypatch)
    assert thread.sought == [(A, 100)]
    for read in (before, after):
        fake.fetches.put_nowait(Fetch(1, list(read.items()), getattr(read, "seeks", NO_SEEKS)))
        fake._waiting.update(list(read))
    fetch = await BatchConsumer.take(fake, 100)
    assert fetch.records == [(B, [5]), (A, [100, 101])]
    assert +fake._waiting == Counter()
    assert fake._read_offset == {A: 100}


async def test_a_fetch_is_dropped_from_the_moment_the_seek_is_asked() -> None:
    """Asked, not yet made on the consumer's thread: a fetch the batch loop takes then is
    from before it."""
    fake = consumer(Fetch(1, [(A, [108])]), Fetch(1, [(B, [5])]))
    fake._thread, fake._read_offset = _Thread(), {}
    seeking = asyncio.get_running_loop().create_future()

    async def slow_call(fun: Any, *args: Any) -> Any:
        await seeking
        return await fun(*args)

    fake._thread.call_thread = slow_call
    seek = asyncio.create_task(BatchConsumer.seek(fake, A, 100))
    await asyncio.sleep(0)
    assert (await BatchConsumer.take(fake, 100)).records == [(B, [5])]
    seeking.set_result(None)
    await seek


async def test_a_seek_that_fails_drops_nothing_read_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka refuses the seek (the partition was taken away meanwhile): the records of
    it read later are not taken for older than a seek that was never made."""
    thread = _Thread()
    fake = consumer()
    fake._thread, fake._read_offset = thread, {}

    def refused(tp: TP, offset: int) -> None:
        raise RuntimeError(f"No current assignment for partition {tp}")

    thread._ensure_consumer = lambda: SimpleNamespace(seek=refused)  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="No current assignment"):
        await BatchConsumer.seek(fake, A, 100)
    later = await thread.read({A: [100]}, monkeypatch)
    fake.fetches.put_nowait(Fetch(1, list(later.items()), getattr(later, "seeks", NO_SEEKS)))
    assert (await BatchConsumer.take(fake, 100)).records == [(A, [100])]


async def test_a_fetch_with_nothing_sought_is_handed_as_it_is() -> None:
    fake = consumer(Fetch(1, [(A, [1])], {A: 2}))
    fake._sought[A] = 2
    fake._sought[B] = 1
    only = fake.fetches._queue[0]
    assert await BatchConsumer.take(fake, 100) is only
