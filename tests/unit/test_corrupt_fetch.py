"""A fetched batch that fails aiokafka's check is read again; one that keeps failing stops
the worker naming the fix (moments.consumer.BatchConsumer.corrupt_read).

aiokafka raises `CorruptRecordException("Invalid CRC - <partition>")` from a read whose
batch fails its CRC. It stopped the worker at once: a corrupt fetch, which a second read
cures, took a restart and a rebalance, and a batch stored damaged stopped it with a bare
traceback. Driven here through the batch consumer's fetch loop with given reads."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.errors import CorruptRecordException
from faust.types import TP

import moments.consumer
from moments.app import create_app, register_agents
from moments.consumer import BatchConsumer, Fetch
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
