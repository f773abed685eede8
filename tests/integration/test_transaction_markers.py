"""On the real worker and broker: a transaction's commit marker after the last record of
an input partition. The worker commits past it once read, so the partition, read to its
end and idle, shows lag 0; committed at the marker, it showed lag 1 and a committed
offset that never moved, and MomentsPartitionNotProgressing paged.

No client here writes transactions (Tansu has none for aiokafka), so the marker is sent
as a producer's transaction coordinator writes it: a control batch, in a raw produce
request; Tansu stores and serves it, and aiokafka skips it as it does on Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.protocol.produce import ProduceRequest

from moments.connections import kafka_client_kwargs
from moments.embedded import free_port
from moments.settings import Settings
from tests.record_batches import commit_marker

from .conftest import MakeSettings, WorkerProcess
from .kafka_io import metric_value

pytestmark = pytest.mark.integration

SUB = "13800138123"


async def records_and_markers(settings: Settings, topic: str, markers: int, after: bool) -> int:
    """One record (no JSON: a dead letter, read and committed all the same), `markers`
    commit markers in a row after it (transactions ending together), and one more record
    when `after`, all on one partition; that partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", **kafka_client_kwargs(settings)
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value=b"not json", key=SUB.encode())
        client = producer.client
        leader = client.cluster.leader_for_partition(TopicPartition(topic, sent.partition))
        for expected in range(1, markers + 1):
            request = ProduceRequest(
                transactional_id=None,
                required_acks=-1,
                timeout=10_000,
                topics=[(topic, [(sent.partition, commit_marker())])],
            )
            answer = await client.send(leader, request)
            ((_, ((_, error, offset, *_),)),) = answer.topics
            assert (error, offset) == (0, expected), answer
        if after:
            last = await producer.send_and_wait(
                topic, value=b"not json", key=SUB.encode(), partition=sent.partition
            )
            assert last.offset == markers + 1
        return int(sent.partition)
    finally:
        await producer.stop()


async def offsets_reach(
    port: int,
    topic: str,
    partition: int,
    expected: tuple[float, float, float],
    worker: WorkerProcess,
) -> None:
    """Wait (90 s at most) for the worker's metrics to show `expected` as the partition's
    (end offset, committed offset, lag)."""
    labels = {"topic": topic, "partition": str(partition)}
    deadline = time.monotonic() + 90
    seen: tuple[float, float, float] = (0.0, 0.0, 0.0)
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # /metrics not served yet
            seen = (
                await metric_value(port, "moments_consumer_end_offset", labels),
                await metric_value(port, "moments_consumer_committed_offset", labels),
                await metric_value(port, "moments_consumer_lag", labels),
            )
        if seen == expected:
            return
        await asyncio.sleep(0.5)
    assert seen == expected, f"end, committed, lag: {seen}\n{worker.log()[-3000:]}"


@pytest.mark.parametrize("name", ["roaming", "task_outcomes"])
async def test_an_idle_partition_read_to_a_commit_marker_has_no_lag(
    name: str,
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    worker = start_worker(settings)
    topic = settings.topic(name)  # an input topic (the batch loop's), the outcomes (Faust's)
    partition = await records_and_markers(settings, topic, markers=1, after=False)
    await offsets_reach(port, topic, partition, (2, 2, 0), worker)


async def test_outcomes_read_across_two_markers_in_a_row_are_committed_to_the_end(
    make_settings: MakeSettings,
    topics_for: Callable[[Settings], Any],
    start_worker: Callable[[Settings], WorkerProcess],
) -> None:
    """Outcomes 0 and 3 with two markers between them, read in one fetch by Faust's
    stream: committed 4 (lag 0). Faust's commit stopped at 1 for good (lag 3): the batch
    consumer's fetch loop did not note the offsets with no record for it."""
    port = free_port()
    settings = make_settings(metrics_port=port)
    await topics_for(settings)
    topic = settings.topic("task_outcomes")
    partition = await records_and_markers(
        settings, topic, markers=2, after=True
    )  # all there before the first read
    worker = start_worker(settings)
    await offsets_reach(port, topic, partition, (4, 4, 0), worker)
