"""Subscriber records read back from the state's changelog, for people.

The records are compressed (moments.statezip), so a Kafka console tool shows only
binary: `moments state show` finds a subscriber's latest record in the changelog and
prints it with the field names of `SubscriberState`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, NamedTuple

from moments.cooldowns import RETURNS_TOPIC_SUFFIX
from moments.fence import Fold, header_value
from moments.partitioning import partition_of
from moments.settings import Settings
from moments.state import SubscriberState
from moments.statezip import MisnamedRecordError, unpack
from moments.topicread import Progress, TopicReader, topic_consumer

STATE_TABLE = "subscribers"
"""The Faust table's name (moments.app), hence its changelog `<app id>-subscribers-changelog`."""


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


def returns_topic(settings: Settings) -> str:
    """The internal topic of cooldown returns (moments.cooldowns), read with the input
    topics and co-partitioned with them: `<app id>-cooldown-returns`."""
    return f"{settings.app_id}-{RETURNS_TOPIC_SUFFIX}"


class Stored(NamedTuple):
    """A subscriber's latest record and the changelog partition that holds it."""

    value: bytes
    partition: int
    hashed: int
    """The partition murmur2 of the key names: another one means its events arrived
    misplaced (see moments.partitioning)."""


async def latest_records(
    settings: Settings, subscribers: Iterable[str], progress: Progress | None = None
) -> dict[str, Stored | None]:
    """Each subscriber's latest stored record in the changelog (None: none, or deleted).

    Reads the partitions murmur2 names for them, from their start to their end as of now,
    without a consumer group (a viewer takes nothing from the workers); a subscriber found
    there neither as a record nor as a tombstone is looked for in the other partitions,
    where events from a producer with another partitioner put it."""
    topic = changelog_topic(settings)
    wanted = {s.encode(): s for s in subscribers}
    missing = (
        f"no worker of app {settings.app_id!r} has run against this broker; check "
        "MOMENTS_APP_ID and MOMENTS_KAFKA_BOOTSTRAP"
    )
    async with topic_consumer(settings, topic, "state-show", missing) as (consumer, partitions):
        count = len(partitions)
        hashed = {key: partition_of(key, count) for key in wanted}
        reader = _LatestReader(consumer, topic, progress)
        latest = await reader.read(set(hashed.values()), set(wanted))
        unseen = set(wanted) - latest.keys()
        if unseen:
            latest |= await reader.read(set(partitions) - set(hashed.values()), unseen)
        found: dict[str, Stored | None] = {}
        for key, sub in wanted.items():
            value, partition = latest.get(key, (None, -1))
            found[sub] = None if value is None else Stored(value, partition, hashed[key])
        return found


class _LatestReader(TopicReader):
    """Keeps the value (None: a tombstone) of the wanted keys a restore would keep (the
    last, unless a stale record came after it: moments.fence), and its partition."""

    async def read(
        self, partitions: set[int], keys: set[bytes]
    ) -> dict[bytes, tuple[bytes | None, int]]:
        kept = Fold()
        where: dict[bytes, int] = {}
        async for records in self.batches(partitions):
            for record in records:
                if record.key in keys:
                    skipped = kept.skipped
                    kept.offer(record.key, record.value, header_value(record.headers))
                    if kept.skipped == skipped:
                        where[record.key] = record.partition
        return {key: (value, where[key]) for key, value in kept.values.items()}


def readable(stored: bytes) -> dict[str, Any]:
    """A stored record as a document with `SubscriberState`'s field names, and its sizes;
    `_damaged` says what is wrong with a record the workers read whole and mend (its
    frame naming a dictionary it was not written with)."""
    damaged: dict[str, str] = {}
    try:
        json = unpack(stored)  # once: from_bytes takes the JSON as it is
    except MisnamedRecordError as exc:
        json, damaged["_damaged"] = exc.json, str(exc)
    fields = dataclasses.asdict(SubscriberState.from_bytes(json))
    del fields["damaged"]  # what a read by the detector reset: none here (a read is not mended)
    return {
        **fields,
        "_stored_bytes": len(stored),
        "_json_bytes": len(json),
        **damaged,
    }
