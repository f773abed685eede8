"""The state changelog read in bulk (moments.restore) over the real broker: the newest
value per key, deletions kept as such, and the end offset every value was read up to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from moments.connections import kafka_client_kwargs
from moments.embedded import ensure_topics
from moments.restore import read_changelog

pytestmark = pytest.mark.integration


async def test_the_newest_value_per_key_and_where_each_partition_ends(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings()
    topic = f"{settings.app_id}-state-changelog"
    kwargs = kafka_client_kwargs(settings)
    await ensure_topics(settings.kafka_bootstrap, {topic: 3}, [topic], client_kwargs=kwargs)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **kwargs)
    await producer.start()
    try:
        writes: list[tuple[int, bytes, bytes | None]] = [
            (0, b"a", b"a1"),
            (0, b"b", b"b1"),
            (0, b"a", b"a2"),  # overwritten: the newest counts
            (0, b"b", None),  # deleted
            (1, b"c", None),  # deleted before it was ever written: still a deletion
            (1, b"c", b"c1"),  # written again after a deletion
        ]
        for partition, key, value in writes:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()
    tps = [TP(topic, 0), TP(topic, 1)]
    read = await read_changelog(settings.bootstrap_servers, kwargs, tps, ends_of=[TP(topic, 2)])
    assert read[TP(topic, 0)].values == {b"a": b"a2", b"b": None}
    assert read[TP(topic, 1)].values == {b"c": b"c1"}
    assert [read[tp].end for tp in (*tps, TP(topic, 2))] == [4, 2, 0]
    assert read[TP(topic, 2)].values == {}  # asked for its end only

    # Records written after the read are not in it; a second read sees them.
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **kwargs)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"a3", key=b"a", partition=0)
    finally:
        await producer.stop()
    again = await read_changelog(settings.bootstrap_servers, kwargs, [TP(topic, 0)])
    assert (again[TP(topic, 0)].values[b"a"], again[TP(topic, 0)].end) == (b"a3", 5)
