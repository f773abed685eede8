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
from collections.abc import Mapping, Sequence

import pytest
from faust.types import TP

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
