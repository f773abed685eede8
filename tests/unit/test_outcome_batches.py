"""A batch of task outcomes that fails is never committed past, and an error that is not
an outage stops the worker (`moments.outcomebatches`, `BatchConsumer.hold`).

Faust's `take_events` acknowledges a batch as the agent leaves it, handled or not, and
Faust's commits follow its acknowledgements: an error in `handle_outcomes` crashed only
the agent (Faust's supervisor restarted it, the worker ran on) and the batch's offsets
were committed, its outcomes lost. tests/integration/test_outcome_errors.py runs it in a
worker."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest
from faust.types import TP

from moments.app import outcome_position, outcome_record
from moments.outcomebatches import OutcomeBatches, first_offsets, fix_of
from moments.records import RawRecord
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry
from tests.unit.test_commit_order import OUTCOMES, Broker, consumer_on

TOPIC = "moments.task-outcomes"


def batch(*where: tuple[int, int]) -> list[RawRecord]:
    """Outcome records at these (partition, offset)."""
    return [RawRecord(TOPIC, p, o, b"8613800000001", b"{}") for p, o in where]


class Recorder:
    """The consumer's `hold` and the app's `crash`, noted."""

    def __init__(self) -> None:
        self.held: list[dict[TP, int]] = []
        self.stopped: list[BaseException] = []

    def hold(self, offsets: Mapping[TP, int]) -> None:
        self.held.append(dict(offsets))

    async def stop(self, exc: BaseException) -> None:
        self.stopped.append(exc)


async def refused_claim() -> None:
    raise TypeError("Expected list, got tuple")


class TestOutcomeBatches:
    async def test_a_handled_batch_goes_on_unheld(self) -> None:
        seen: list[Sequence[RawRecord]] = []

        async def handle(records: Sequence[RawRecord]) -> None:
            seen.append(records)

        noted = Recorder()
        batches = OutcomeBatches(handle, noted.hold, noted.stop)
        assert await batches(batch((0, 4), (1, 9)))
        assert len(seen) == 1
        assert noted.held == []
        assert noted.stopped == []

    async def test_an_error_holds_the_batch_and_stops_the_worker_naming_the_fix(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bug under `with_retry` (its note names the fix): each partition held at its
        first offset in the batch, the worker stopped with the error, no batch after."""

        async def handle(records: Sequence[RawRecord]) -> None:
            await with_retry(refused_claim, Dependency.REDIS, Metrics(), "claiming task ids")

        noted = Recorder()
        batches = OutcomeBatches(handle, noted.hold, noted.stop)
        with caplog.at_level(logging.ERROR, "moments.outcomebatches"):
            assert not await batches(batch((1, 12), (0, 7), (1, 10), (0, 8)))
        assert noted.held == [{TP(TOPIC, 0): 7, TP(TOPIC, 1): 10}]
        assert [type(e) for e in noted.stopped] == [TypeError]
        said = caplog.records[-1].getMessage()
        assert "the outcomes agent stopped the worker: TypeError" in said
        assert "the batch's 4 outcome(s) are not committed" in said
        assert "moments: not retried while claiming task ids" in said
        assert "a bug in moments" in said

        async def never(records: Sequence[RawRecord]) -> None:
            raise AssertionError("a batch handled after the worker began to stop")

        batches.handle = never
        assert not await batches(batch((0, 9)))
        assert noted.held[-1] == {TP(TOPIC, 0): 9}
        assert len(noted.stopped) == 1

    async def test_a_cancelled_batch_is_held_and_the_cancellation_goes_on(self) -> None:
        """The worker stopping under a batch waiting on Redis: held, not a crash."""
        waiting = asyncio.Event()

        async def handle(records: Sequence[RawRecord]) -> None:
            waiting.set()
            await asyncio.Event().wait()

        noted = Recorder()
        batches = OutcomeBatches(handle, noted.hold, noted.stop)
        task = asyncio.create_task(batches(batch((0, 3))))
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert noted.held == [{TP(TOPIC, 0): 3}]
        assert noted.stopped == []


class Message:
    """What the agent reads of a Faust message."""

    def __init__(self, partition: int, offset: int, timestamp: float) -> None:
        self.topic, self.partition, self.offset = TOPIC, partition, offset
        self.timestamp = timestamp
        self.headers: list[tuple[str, bytes]] = []


class Event:
    def __init__(self, partition: int, offset: int, timestamp: float = 1.8e9) -> None:
        self.message = Message(partition, offset, timestamp)
        self.key: bytes | None = b"8613800000001"
        self.value: bytes | None = b"{}"


class TakenEvents:
    """Faust's `take_events` as the agent sees it: batches, each acknowledged as it leaves
    the generator, handled or not; `broken`: raised taking the events after the batches."""

    def __init__(self, *batches: list[Event], broken: Exception | None = None) -> None:
        self.batches = batches
        self.broken = broken
        self.acked: list[tuple[int, int]] = []

    async def __call__(self) -> AsyncIterator[list[Event]]:
        for events in self.batches:
            try:
                yield events
            finally:
                self.acked += [(e.message.partition, e.message.offset) for e in events]
        if self.broken is not None:
            raise self.broken


class TestConsume:
    """The agent's loop (`OutcomeBatches.consume`, wired by `moments.app`): an error outside
    `handle` goes its way too. Raised in the agent, making a batch's records (a message
    timestamp `round` refuses) or taking events from the stream, it crashed the agent's
    actor alone: Faust's supervisor restarted it, the worker ran on, and the batch,
    acknowledged as it left `take_events`, was committed unhandled."""

    async def test_batches_are_handled_until_the_stream_ends(self) -> None:
        seen: list[list[tuple[int, int, int | None]]] = []

        async def handle(records: Sequence[RawRecord]) -> None:
            seen.append([(r.partition, r.offset, r.timestamp_ms) for r in records])

        noted = Recorder()
        taken = TakenEvents([Event(0, 1), Event(1, 4)], [Event(0, 2)])
        batches = OutcomeBatches(handle, noted.hold, noted.stop)
        await batches.consume(taken(), outcome_record, outcome_position)
        ms = 1_800_000_000_000
        assert seen == [[(0, 1, ms), (1, 4, ms)], [(0, 2, ms)]]
        assert (noted.held, noted.stopped) == ([], [])

    async def test_an_error_making_a_batchs_records_holds_it_and_stops_the_worker(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def handle(records: Sequence[RawRecord]) -> None:
            raise AssertionError("a batch whose records could not be made was handled")

        noted = Recorder()
        taken = TakenEvents([Event(0, 7), Event(1, 3), Event(0, 8, timestamp=math.nan)])
        batches = OutcomeBatches(handle, noted.hold, noted.stop)
        with caplog.at_level(logging.ERROR, "moments.outcomebatches"):
            await batches.consume(taken(), outcome_record, outcome_position)
        assert noted.held == [{TP(TOPIC, 0): 7, TP(TOPIC, 1): 3}]
        assert [type(e) for e in noted.stopped] == [ValueError]
        said = caplog.records[-1].getMessage()
        assert "the batch's 3 outcome(s) are not committed" in said
        assert "a bug in moments" in said

    async def test_an_error_taking_events_stops_the_worker(self) -> None:
        """After a batch handled: that one goes on (acknowledged and committed), and the
        worker stops; the events the stream had buffered were never acknowledged."""
        handled: list[int] = []

        async def handle(records: Sequence[RawRecord]) -> None:
            handled.append(len(records))

        noted = Recorder()
        taken = TakenEvents([Event(0, 1)], broken=RuntimeError("Take buffer found no event"))
        batches = OutcomeBatches(handle, noted.hold, noted.stop)
        await batches.consume(taken(), outcome_record, outcome_position)
        assert handled == [1]
        assert taken.acked == [(0, 1)]
        assert [type(e) for e in noted.stopped] == [RuntimeError]
        assert noted.held == [{}]
        assert batches.failed


class TestFixOf:
    def test_an_error_raised_outside_with_retry_is_called_a_bug(self) -> None:
        assert fix_of(KeyError("status")).startswith("moments: not an outage: a bug in moments")

    def test_aiokafka_without_a_version_the_broker_speaks_is_not_called_a_bug(self) -> None:
        """aiokafka's NotImplementedError was "a bug in moments": the broker's version is."""
        said = fix_of(NotImplementedError("Support for FetchRequest v4 has not yet been added"))
        assert "a bug" not in said
        assert "the broker does not support a version of FetchRequest" in said

    def test_first_offsets_are_per_partition(self) -> None:
        assert first_offsets(batch((2, 5), (2, 3), (0, 1))) == {
            TP(TOPIC, 2): 3,
            TP(TOPIC, 0): 1,
        }


class TestHeldCommits:
    async def test_no_commit_goes_past_a_held_offset(self) -> None:
        """Held at 102 (a batch from 102 failed): Faust's commit of the acknowledgements
        (105) stops at 102, and stays there; another partition commits as before."""
        broker = Broker()
        consumer = consumer_on(broker)
        other = TP(OUTCOMES.topic, 1)
        consumer.assignment = lambda: {OUTCOMES, other}  # type: ignore[method-assign]
        assert await consumer._commit_offsets({OUTCOMES: 100})
        consumer.hold({OUTCOMES: 102})
        consumer.hold({OUTCOMES: 104})  # a later hold never moves it forward
        assert await consumer._commit_offsets({OUTCOMES: 105, other: 7})
        assert broker.committed == {OUTCOMES: 102, other: 7}
        assert not await consumer._commit_offsets({OUTCOMES: 110})
        assert broker.committed[OUTCOMES] == 102
        assert consumer._committed_offset[OUTCOMES] == 102
