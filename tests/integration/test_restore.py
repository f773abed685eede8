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
    p0, p1, p2 = (TP(topic, p) for p in range(3))
    read = await read_changelog(settings.bootstrap_servers, kwargs, {p0: None, p1: None, p2: None})
    assert read[p0].values == {b"a": b"a2", b"b": None}
    assert read[p1].values == {b"c": b"c1"}
    assert [read[tp].end for tp in (p0, p1, p2)] == [4, 2, 0]
    assert read[p2].values == {}
    # From an offset the store holds already: only what came after it.
    tail = await read_changelog(settings.bootstrap_servers, kwargs, {p0: 3, p1: 2})
    assert (tail[p0].values, tail[p1].values) == ({b"b": None}, {})

    # Records written after a read are not in it; the next read sees them.
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **kwargs)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"a3", key=b"a", partition=0)
    finally:
        await producer.stop()
    again = await read_changelog(settings.bootstrap_servers, kwargs, {p0: 4})
    assert (again[p0].values, again[p0].end) == ({b"a": b"a3"}, 5)
