"""The worker's Kafka writes do not wait out the producer's linger: every batch of a
batch loop waited `linger_ms` once for its tasks and once for its state changelog."""

from __future__ import annotations

from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from moments.producer import producer_kwargs
from moments.settings import Settings
from sinks.base import produce_to_partitions


class Recorder:
    """aiokafka's own batches (small, so records need several), handed to a fake send."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bool]] = []  # (partition, closed when handed over)

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1024, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.sent.append((partition, batch.closed()))
        return _done()


async def _done() -> None:
    return None


async def test_changelog_batches_go_closed_so_they_leave_at_once() -> None:
    recorder = Recorder()
    records = [(i % 2, f"k{i}".encode(), b"v" * 300) for i in range(20)]  # several per partition
    await produce_to_partitions(recorder, "changelog", records)
    assert len(recorder.sent) > 2
    assert all(closed for _, closed in recorder.sent), recorder.sent


def test_the_dispatch_producer_does_not_linger() -> None:
    """Tasks and dead letters go through `send` (the partitioner picks the partition), not
    batches of ours: a linger would hold each batch's tasks back."""
    settings = Settings(kafka_bootstrap="127.0.0.1:9092")
    assert producer_kwargs(settings)["linger_ms"] == 0
