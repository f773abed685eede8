"""BatchConsumer.take: the batch loop gets every queued fetch at once, in order."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from moments.consumer import BatchConsumer, Fetch

A, B = TP("usage", 0), TP("usage", 1)


def consumer(*fetches: Fetch) -> Any:
    queue: asyncio.Queue[Fetch] = asyncio.Queue()
    waiting: Counter[TP] = Counter()
    for f in fetches:
        queue.put_nowait(f)
        waiting.update(tp for tp, _ in f.records)
    return SimpleNamespace(fetches=queue, _waiting=waiting)


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
