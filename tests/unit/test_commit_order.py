"""Offset commits only move forward (`BatchConsumer._commit_offsets`).

Faust's commit timer commits the task outcomes up to a transaction's marker (its acks),
the batch loop's `commit_processed` past it; both end in `Consumer._commit_offsets`,
which awaits the producer's flush and the broker before it notes the offset. Two at
once, the older finishing last wrote its lower offset last: the group's committed offset
went back (the outcomes after it read again at the next start). The consumer is a real
`BatchConsumer` on a Faust app; only the broker's commit is a stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from moments.consumer import BatchConsumer, BatchTransport

OUTCOMES = TP("moments.task-outcomes", 0)


class Broker:
    """The group's committed offsets; a commit waits for `release` when asked to."""

    def __init__(self) -> None:
        self.committed: dict[TP, int] = {}
        self.held: dict[int, asyncio.Event] = {}

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        gate = self.held.get(offsets.get(OUTCOMES, -1))
        if gate is not None:
            await gate.wait()
        self.committed.update(offsets)
        return True


async def _nothing() -> None:
    return None


def consumer_on(broker: Broker) -> BatchConsumer:
    app = faust.App("commit-order", broker="kafka://127.0.0.1:1")
    transport = BatchTransport(["kafka://127.0.0.1:1"], app, loop=asyncio.get_running_loop())

    async def ignored(*_: Any) -> None:
        return None

    consumer = transport.create_consumer(
        callback=ignored, on_partitions_revoked=ignored, on_partitions_assigned=ignored
    )
    assert isinstance(consumer, BatchConsumer)
    consumer.assignment = lambda: {OUTCOMES}  # type: ignore[method-assign]
    consumer._commit = broker.commit  # type: ignore[method-assign]
    consumer.app = SimpleNamespace(  # type: ignore[assignment]
        producer=SimpleNamespace(flush=_nothing),
        tables=SimpleNamespace(on_commit=lambda offsets: None),
        monitor=SimpleNamespace(on_tp_commit=lambda offsets: None),
    )
    return consumer


class TestCommitsMoveForward:
    async def test_an_older_commit_finishing_last_does_not_move_the_offset_back(self) -> None:
        """Faust commits 102 (up to a marker) and is slow; the batch loop commits 103 (past
        it) meanwhile: 103 stays committed, for the broker and in Faust's view."""
        broker = Broker()
        consumer = consumer_on(broker)
        broker.held[102] = asyncio.Event()
        older = asyncio.create_task(consumer._commit_offsets({OUTCOMES: 102}))
        await asyncio.sleep(0.01)
        newer = asyncio.create_task(consumer._commit_offsets({OUTCOMES: 103}))
        await asyncio.sleep(0.01)
        broker.held[102].set()
        await asyncio.gather(older, newer)
        assert broker.committed[OUTCOMES] == 103
        assert consumer._committed_offset[OUTCOMES] == 103

    async def test_a_commit_behind_the_committed_offset_is_not_sent(self) -> None:
        """An offset computed before another commit went further is dropped, not sent."""
        broker = Broker()
        consumer = consumer_on(broker)
        assert await consumer._commit_offsets({OUTCOMES: 103})
        sent: list[Mapping[TP, int]] = []
        commit = broker.commit

        async def noted(offsets: Mapping[TP, int]) -> bool:
            sent.append(dict(offsets))
            return await commit(offsets)

        consumer._commit = noted  # type: ignore[method-assign]
        assert not await consumer._commit_offsets({OUTCOMES: 102})
        assert await consumer._commit_offsets({OUTCOMES: 105})
        assert sent == [{OUTCOMES: 105}]
        assert broker.committed[OUTCOMES] == 105

    async def test_a_commit_that_raises_lets_the_next_one_through(self) -> None:
        """The broker refuses a commit (an error aiokafka raises): the lock is released,
        nothing is noted as committed, and the next commit of the same offset is sent."""
        broker = Broker()
        consumer = consumer_on(broker)
        commit = broker.commit

        async def refused(offsets: Mapping[TP, int]) -> bool:
            raise ConnectionError("broker gone")

        consumer._commit = refused  # type: ignore[method-assign]
        try:
            await consumer._commit_offsets({OUTCOMES: 104})
        except ConnectionError:
            pass
        else:
            raise AssertionError("the refusal was swallowed")
        assert consumer._committed_offset[OUTCOMES] is None
        consumer._commit = commit  # type: ignore[method-assign]
        assert await asyncio.wait_for(consumer._commit_offsets({OUTCOMES: 104}), 5)
        assert broker.committed[OUTCOMES] == 104

    async def test_a_commit_given_up_on_lets_the_next_one_through(self) -> None:
        """A stop's bounded wait cancels a commit stuck on the broker: the commit behind
        it is not held for good."""
        broker = Broker()
        consumer = consumer_on(broker)
        broker.held[102] = asyncio.Event()
        stuck = asyncio.create_task(consumer._commit_offsets({OUTCOMES: 102}))
        await asyncio.sleep(0.01)
        behind = asyncio.create_task(consumer._commit_offsets({OUTCOMES: 103}))
        await asyncio.sleep(0.01)
        assert not behind.done()  # one at a time
        stuck.cancel()
        assert await asyncio.wait_for(behind, 5)
        assert broker.committed[OUTCOMES] == 103
