"""A fetched batch that fails aiokafka's check is read again; one that keeps failing stops
the worker naming the fix (moments.consumer.BatchConsumer.corrupt_read).

aiokafka raises `CorruptRecordException("Invalid CRC - <partition>")` from a read whose
batch fails its CRC. It stopped the worker at once: a corrupt fetch, which a second read
cures, took a restart and a rebalance, and a batch stored damaged stopped it with a bare
traceback. Driven here through the batch consumer's fetch loop with given reads."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CorruptRecordException,
    IllegalStateError,
    NotCoordinatorForGroupError,
)
from faust.types import TP

import moments.consumer
from moments.app import create_app, register_agents
from moments.consumer import BatchConsumer, BatchConsumerThread, Fetch
from moments.engine import Detector
from moments.runtime import Runtime
from moments.settings import load_settings
from rules.catalog import RuleSet
from sinks.metrics import Metrics

USAGE = TP("telecom.usage", 0)


def _corrupt() -> CorruptRecordException:
    return CorruptRecordException(f"Invalid CRC - {USAGE}")


class _Consumer(BatchConsumer):
    """The fetch loop over given reads (a record map, or an error to raise), its seeks
    to the committed offsets counted."""

    def __init__(self, reads: list[Any]) -> None:  # no super(): no app, no broker
        self.app = SimpleNamespace(  # type: ignore[assignment]  # what the fetch loop reads
            should_stop=False, topics=SimpleNamespace(acks_enabled_for=lambda topic: False)
        )
        self.transport = SimpleNamespace(app=self.app)  # type: ignore[assignment]
        self.hot_topics = frozenset({USAGE.topic})
        self.epoch = 0
        self.flow_active = True
        self.suspend_flow = asyncio.Event()
        self.fetches: asyncio.Queue[Fetch] = asyncio.Queue()
        self._waiting: Counter[TP] = Counter()
        self._read_offset: Any = defaultdict(lambda: None)
        self._buffered_partitions: set[TP] = set()
        self._reads = list(reads)
        self._stop = False
        self.seeks_to_committed = 0
        self.counted = 0
        self.callback = self._not_hot

    async def _not_hot(self, message: Any) -> None:
        raise AssertionError(f"only hot records are read here: {message}")

    @property
    def should_stop(self) -> bool:
        return self._stop

    async def _wait_next_records(self, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's
        if not self._reads:
            self._stop = True
            return None, None
        read = self._reads.pop(0)
        if isinstance(read, BaseException):
            raise read
        return read, None

    def corrupt_read_seen(self) -> None:
        self.counted += 1

    async def perform_seek(self) -> None:
        self.seeks_to_committed += 1
        self.epoch += 1


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moments.consumer, "CORRUPT_PAUSE_S", 0.0, raising=False)


async def _drain(consumer: _Consumer) -> None:
    await consumer._drain_messages(SimpleNamespace(should_stop=False))


async def test_a_corrupt_fetch_is_read_again_from_the_committed_offsets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Raised out of the fetch loop before: the worker stopped."""
    consumer = _Consumer([_corrupt(), _corrupt(), {USAGE: ["r1", "r2"]}])
    await _drain(consumer)
    assert consumer.seeks_to_committed == 2
    assert consumer.counted == 2  # moments_dependency_errors_total{dependency="kafka"}
    fetch = consumer.fetches.get_nowait()
    assert fetch.records == [(USAGE, ["r1", "r2"])]
    assert "reading again from the committed offsets" in caplog.text


async def test_a_batch_that_keeps_failing_stops_the_worker_naming_the_fix() -> None:
    reads = moments.consumer.CORRUPT_READS
    consumer = _Consumer([_corrupt() for _ in range(reads + 1)])
    with pytest.raises(CorruptRecordException) as raised:
        await _drain(consumer)
    assert consumer.seeks_to_committed == reads
    note = " ".join(raised.value.__notes__)
    assert f"{reads} times in a row" in note
    assert "kafka-dump-log.sh" in note
    assert "--reset-offsets" in note


class _FailingSeeks(_Consumer):
    """Its seeks to the committed offsets fail with the given errors first: the lookup of
    the committed offsets (the group's coordinator moving, a partition taken away by a
    rebalance under way)."""

    def __init__(self, reads: list[Any], seek_errors: list[Exception]) -> None:
        super().__init__(reads)
        self.seek_errors = list(seek_errors)
        self.tried = 0

    async def perform_seek(self) -> None:
        self.tried += 1
        if self.seek_errors:
            raise self.seek_errors.pop(0)
        await super().perform_seek()


async def test_a_failed_lookup_of_the_committed_offsets_is_named_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It was raised out of the fetch loop unnamed (a bare traceback, the worker stopped),
    where the corrupt read itself is named and read again."""
    lookup = NotCoordinatorForGroupError("the coordinator moved")
    consumer = _FailingSeeks([_corrupt(), {USAGE: ["r1"]}], [lookup])
    await _drain(consumer)
    assert (consumer.tried, consumer.seeks_to_committed) == (2, 1)
    assert consumer.fetches.get_nowait().records == [(USAGE, ["r1"])]
    assert consumer.counted == 2  # the corrupt read, the failed lookup: both Kafka's
    said = caplog.text
    assert "reading again from the committed offsets failed" in said
    assert "NotCoordinatorForGroupError" in said


async def test_a_lookup_that_keeps_failing_stops_the_worker_naming_it() -> None:
    reads = moments.consumer.CORRUPT_READS
    errors: list[Exception] = [NotCoordinatorForGroupError("moved") for _ in range(reads)]
    consumer = _FailingSeeks([_corrupt(), {USAGE: ["r1"]}], errors)
    with pytest.raises(NotCoordinatorForGroupError) as raised:
        await _drain(consumer)
    assert consumer.tried == reads
    note = " ".join(raised.value.__notes__)
    assert f"could not read the committed offsets {reads} times in a row" in note
    assert "Invalid CRC" in note  # what it was reading again after
    assert consumer.fetches.empty()  # nothing read on from where the dropped read left


class _SeekDuringFetch(_FailingSeeks):
    """A seek (a revocation, Faust's recovery) is made while its first fetch is under way:
    the fetch loop drops that fetch as stale and seeks to the committed offsets itself."""

    async def _wait_next_records(self, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's
        if self.tried == 0 and self.epoch == 0:
            self.epoch += 1  # another seek, while this fetch waited
        return await super()._wait_next_records(timeout)


async def test_a_failed_lookup_after_a_seek_during_a_fetch_is_named_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fetch loop's other seek to the committed offsets (records fetched across a
    seek, dropped as stale): its lookup failing (the coordinator moving, a rebalance under
    way taking a partition away) escaped the loop as a bare traceback and stopped the
    worker, as the corrupt read's did before it was tried again."""
    lookup = NotCoordinatorForGroupError("the coordinator moved")
    consumer = _SeekDuringFetch([{USAGE: ["stale"]}, {USAGE: ["r1"]}], [lookup])
    await _drain(consumer)
    assert (consumer.tried, consumer.seeks_to_committed) == (2, 1)
    assert consumer.fetches.get_nowait().records == [(USAGE, ["r1"])]  # the stale one dropped
    assert consumer.fetches.empty()
    assert consumer.counted == 1  # the failed lookup, a Kafka error
    assert "reading again from the committed offsets failed" in caplog.text
    assert "NotCoordinatorForGroupError" in caplog.text


async def test_a_lookup_after_a_seek_during_a_fetch_that_keeps_failing_is_named() -> None:
    reads = moments.consumer.CORRUPT_READS
    errors: list[Exception] = [NotCoordinatorForGroupError("moved") for _ in range(reads)]
    consumer = _SeekDuringFetch([{USAGE: ["stale"]}, {USAGE: ["r1"]}], errors)
    with pytest.raises(NotCoordinatorForGroupError) as raised:
        await _drain(consumer)
    assert consumer.tried == reads
    note = " ".join(getattr(raised.value, "__notes__", ()))
    assert f"could not read the committed offsets {reads} times in a row" in note
    assert "a seek made while a fetch was under way" in note
    assert consumer.fetches.empty()


async def test_a_failed_lookup_once_a_rebalance_paused_the_flow_leaves_it_the_seek() -> None:
    """A rebalance under way (the flow paused) seeks the partitions it assigns itself
    once done, as the paused fetch loop's own failed seek leaves it to: the retries
    waited up to `CORRUPT_READS` pauses for a partition the rebalance took away, then
    stopped the worker."""
    reads = moments.consumer.CORRUPT_READS
    errors: list[Exception] = [IllegalStateError("No current assignment") for _ in range(reads)]
    consumer = _SeekDuringFetch([{USAGE: ["stale"]}], errors)

    async def paused_seek() -> None:
        consumer.flow_active = False  # the rebalance began while the fetch waited
        await _FailingSeeks.perform_seek(consumer)

    consumer.perform_seek = paused_seek  # type: ignore[method-assign]  # the rebalance's start
    await _drain(consumer)
    assert consumer.tried == 1
    assert consumer.fetches.empty()


async def test_the_app_counts_them_as_kafka_errors() -> None:
    """What `moments_dependency_errors_total{dependency="kafka"}` shows of them."""
    settings = load_settings()
    app = create_app(settings)
    metrics = Metrics()
    register_agents(app, settings, Runtime(settings, metrics, Detector(RuleSet.of([]), {})))
    consumer = cast(BatchConsumer, app.consumer)
    consumer.corrupt_read_seen()
    assert (
        metrics.registry.get_sample_value(
            "moments_dependency_errors_total", {"dependency": "kafka"}
        )
        == 1
    )


class _KafkaConsumer:
    """What of aiokafka's consumer a read again from the committed offsets uses: its own
    `seek_to_committed` (which seeks only to a committed offset above 0), over partitions
    whose positions a dropped read moved on."""

    seek_to_committed = AIOKafkaConsumer.seek_to_committed

    def __init__(self, positions: dict[TopicPartition, int], committed: dict[Any, Any]) -> None:
        self.positions = positions
        self._committed = committed
        self._subscription = SimpleNamespace(assigned_partitions=lambda: set(positions))
        self._fetcher = SimpleNamespace(seek_to=self._seek)

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._committed[tp]  # type: ignore[no-any-return]  # a given int or None

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.positions[tp] = 0  # the log's start: nothing deleted here

    async def seek_to_end(self, *tps: TopicPartition) -> None:
        raise AssertionError("a new worker starts from the earliest offset (Faust's default)")


def _reading(kafka: _KafkaConsumer) -> BatchConsumer:
    """A batch consumer over `kafka`, on a consumer thread that runs its calls at once."""
    thread = BatchConsumerThread.__new__(BatchConsumerThread)
    thread._moves = {}
    thread.consumer = SimpleNamespace(  # type: ignore[assignment]  # what the seek reads
        app=SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset="earliest"))
    )
    thread._ensure_consumer = lambda: kafka  # type: ignore[method-assign]

    async def call_thread(fun: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await fun(*args)

    thread.call_thread = call_thread  # type: ignore[method-assign]
    consumer = BatchConsumer.__new__(BatchConsumer)
    consumer._thread = thread
    consumer._read_offset = defaultdict(lambda: None)
    consumer._committed_offset = {}
    consumer.fetches = asyncio.Queue()
    consumer._waiting = Counter()
    consumer.epoch = 0
    consumer.processed = {}
    consumer.corrupt_read_seen = lambda: None
    return consumer


async def test_a_partition_never_committed_is_read_again_from_its_start() -> None:
    """aiokafka raised the CRC error after handing over (and dropping) the reads of the
    partitions before the damaged one, their positions moved on. Of a partition whose
    group had committed nothing yet (or offset 0), aiokafka's seek to the committed
    offsets left the position there: its records up to it were never processed, and the
    next commit went past them."""
    new, at_zero, committed = (TopicPartition(USAGE.topic, p) for p in (0, 1, 2))
    kafka = _KafkaConsumer(
        {new: 40, at_zero: 40, committed: 40}, {new: None, at_zero: 0, committed: 7}
    )
    consumer = _reading(kafka)
    await consumer.corrupt_read(_corrupt(), 1)
    assert kafka.positions == {new: 0, at_zero: 0, committed: 7}
    assert consumer.epoch == 1  # what was queued from before is dropped
