"""Subscriber records read back from the state's changelog, for people.

The records are compressed (moments.statezip), so a Kafka console tool shows only
binary: `moments state show` finds a subscriber's latest record in the changelog and
prints it with the field names of `SubscriberState`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from moments.connections import kafka_client_kwargs
from moments.exceptions import ConfigError
from moments.partitioning import partition_of
from moments.settings import Settings
from moments.state import SubscriberState
from moments.statezip import unpack

STATE_TABLE = "subscribers"
"""The Faust table's name (moments.app), hence its changelog `<app id>-subscribers-changelog`."""

Progress = Callable[[int, int], None]
"""Called with (records read, records to read)."""


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


async def latest_records(
    settings: Settings, subscribers: Iterable[str], progress: Progress | None = None
) -> dict[str, bytes | None]:
    """Each subscriber's latest stored record in the changelog (None: none, or deleted).

    Reads only the partitions that hold them, from their start to their end as of now,
    without a consumer group (a viewer takes nothing from the workers)."""
    topic = changelog_topic(settings)
    wanted = {s.encode(): s for s in subscribers}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        client_id=f"{settings.app_id}-state-show",
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ConfigError(
                f"topic {topic} does not exist: no worker of app {settings.app_id!r} has run "
                "against this broker; check MOMENTS_APP_ID and MOMENTS_KAFKA_BOOTSTRAP"
            )
        count = len(partitions)
        tps = sorted({TopicPartition(topic, partition_of(k, count)) for k in wanted})
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts = {tp: await consumer.position(tp) for tp in tps}
        ends = await consumer.end_offsets(tps)
        total = sum(ends[tp] - starts[tp] for tp in tps)
        found: dict[str, bytes | None] = dict.fromkeys(wanted.values())
        left = {tp for tp in tps if ends[tp] > starts[tp]}
        done = 0
        while left:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    sub = wanted.get(record.key) if record.key is not None else None
                    if sub is not None:
                        found[sub] = record.value
                    done += 1
            for tp in list(left):  # by position: the last offsets may hold no record
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            if progress is not None:
                progress(done, total)
        return found
    finally:
        await consumer.stop()


def readable(stored: bytes) -> dict[str, Any]:
    """A stored record as a document with `SubscriberState`'s field names, and its sizes."""
    json = unpack(stored)  # once: from_bytes takes the JSON as it is
    return {
        **dataclasses.asdict(SubscriberState.from_bytes(json)),
        "_stored_bytes": len(stored),
        "_json_bytes": len(json),
    }
