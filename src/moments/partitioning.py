"""Whether input events arrive on the partition their key names under Kafka's default
partitioner (murmur2 of `subscriber_id`, modulo the partition count).

The state is co-partitioned with the input topics: all of a subscriber's events must
arrive on one partition number, whichever topic carries them. A producer that hashes
keys another way (librdkafka's default, CRC32, unless `partitioner=murmur2_random`), or
an input topic with another partition count than `MOMENTS_PARTITIONS`, splits a
subscriber's state across partitions (two records, held by two workers once there are
two). Nothing fails when that happens; this check makes it visible.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from moments.decoding import deletion_form
from moments.exceptions import ConfigError
from moments.records import DeadLetter, RawRecord, RejectReason

KEY_CACHE = 1 << 18
"""Keys whose partition is remembered (about 25 MB at most): murmur2 in Python costs
~1.7 µs a key, a lookup ~0.03 µs. When full the cache starts over."""

WARN_EVERY_S = 60.0

log = logging.getLogger(__name__)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives a keyed record: the Java
    client, aiokafka and kafka-python all use it."""
    from aiokafka.partitioner import murmur2

    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


class PartitionCountError(ConfigError):
    """An input record on a partition the state changelog does not have: the input topic
    was given more partitions while the worker ran (at start, the worker refuses such a
    layout: see `layout_problems`)."""


class PartitionCheck:
    """Counts the records of a batch that sit on another partition than their key's.

    `check` returns those counts by topic and logs a warning at most every `every_s`
    seconds, with how many there were since the last one and a partition pair seen (never
    a key: keys are subscriber ids)."""

    def __init__(
        self,
        partitions: int,
        capacity: int = KEY_CACHE,
        every_s: float = WARN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions
        self.capacity = capacity
        self.every_s = every_s
        self.clock = clock
        self._expected: dict[bytes, int] = {}
        self._held: Counter[str] = Counter()
        self._warned_at: float | None = None

    def expected(self, key: bytes) -> int:
        """The partition murmur2 names for `key`."""
        partition = self._expected.get(key)
        if partition is None:
            if len(self._expected) >= self.capacity:
                self._expected.clear()
            partition = self._expected[key] = partition_of(key, self.partitions)
        return partition

    def check(self, records: Iterable[RawRecord]) -> Counter[str]:
        """Topic -> records on a partition their key does not hash to (keyless records are
        not counted: they are dead letters). Raises `PartitionCountError` for a record on a
        partition beyond the configured count, before anything of the batch is applied."""
        out: Counter[str] = Counter()
        cache = self._expected
        example = ("", 0, 0)
        for record in records:
            key = record.key
            if key is None:
                continue
            expected = cache[key] if key in cache else self.expected(key)  # no call a hit
            if expected != record.partition:
                if record.partition >= self.partitions:
                    raise PartitionCountError(
                        f"{record.topic} has a record on partition {record.partition}, beyond "
                        f"MOMENTS_PARTITIONS ({self.partitions}): the topic was given more "
                        "partitions and the state changelog cannot follow; set "
                        "MOMENTS_PARTITIONS to the new count with a new MOMENTS_APP_ID and "
                        "replay the input (docs/operations.md, Scaling)"
                    )
                out[record.topic] += 1
                example = (record.topic, record.partition, expected)
        if out:
            self._held.update(out)
            self._warn(example)
        return out

    def misplaced(self, records: Iterable[RawRecord]) -> Counter[str]:
        """Topic -> keyed records on a partition their key does not hash to; unlike
        `check`, it neither warns nor refuses."""
        return Counter(
            record.topic
            for record in records
            if record.key is not None and self.expected(record.key) != record.partition
        )

    def misplaced_tombstones(
        self, records: Sequence[RawRecord], topic: str
    ) -> tuple[list[RawRecord], list[DeadLetter]]:
        """The batch less the tombstones of `topic` (profiles) that sit on another
        partition than their key's, and those as dead letters (the runtime asks only when
        `check` found misplaced records of `topic`): an event there is applied
        all the same, but a tombstone there would erase nothing where the subscriber's
        state is (security re-check), and a dead letter can be replayed to the right one."""
        refused: list[DeadLetter] = []
        kept: list[RawRecord] = []
        for record in records:
            key = record.key
            if (
                record.topic == topic
                and deletion_form(record.value) is not None
                and key
                and key.isdigit()
                and (expected := self.expected(key)) != record.partition
            ):
                refused.append(
                    DeadLetter(
                        record,
                        "profile",
                        RejectReason.MISPLACED,
                        "Misplaced",
                        f"a profile tombstone on partition {record.partition}, where its key "
                        f"names {expected}: nothing was erased; produce it with the default "
                        "partitioner (murmur2), or `moments deadletter replay` it",
                    )
                )
            else:
                kept.append(record)
        return kept, refused

    def _warn(self, example: tuple[str, int, int]) -> None:
        now = self.clock()
        if self._warned_at is not None and now - self._warned_at < self.every_s:
            return
        since = (
            "since the worker started"
            if self._warned_at is None
            else f"in the last {now - self._warned_at:.0f} s"
        )
        self._warned_at = now
        counts = ", ".join(f"{topic} {n}" for topic, n in sorted(self._held.items()))
        topic, partition, expected = example
        log.warning(
            "events on a partition their subscriber_id does not hash to, %s: %s "
            "(e.g. a record of %s on partition %d where murmur2 names %d). A subscriber's "
            "state splits across partitions: its producer must partition by murmur2 of the "
            "key (librdkafka clients: partitioner=murmur2_random) and the topic must have "
            "MOMENTS_PARTITIONS (%d) partitions",
            since,
            counts,
            topic,
            partition,
            expected,
            self.partitions,
        )
        self._held.clear()


def layout_problems(
    counts: Mapping[str, int],
    inputs: Sequence[str],
    changelog: str,
    configured: int,
    remake: str | None = None,
) -> list[str]:
    """What is wrong with the topics' partition counts (`counts`: the topics that exist),
    each naming the fix; [] when the state can be co-partitioned with the input.
    `remake`: the commands that make the changelog again with `configured` partitions,
    the fix when the input topics have that count and the changelog alone another (made
    again by a broker that creates topics on use, after a deletion): "set
    MOMENTS_PARTITIONS" to the changelog's count would then part it from the input."""
    problems: list[str] = []
    found = {topic: counts[topic] for topic in inputs if topic in counts}
    distinct = set(found.values())
    if len(distinct) > 1:
        detail = ", ".join(f"{topic} {n}" for topic, n in sorted(found.items()))
        problems.append(
            f"the input topics have different partition counts ({detail}): a subscriber's "
            "events must all arrive on one partition number; give them one count and set "
            "MOMENTS_PARTITIONS to it"
        )
    elif distinct and (count := next(iter(distinct))) != configured:
        problems.append(
            f"the input topics have {count} partitions and MOMENTS_PARTITIONS is {configured}: "
            f"the state is co-partitioned with them; set MOMENTS_PARTITIONS={count}"
        )
    held = counts.get(changelog)
    if held is not None and held != configured and remake is not None and distinct == {configured}:
        problems.append(
            f"the state changelog {changelog} has {held} partitions, the input topics and "
            f"MOMENTS_PARTITIONS {configured}: the state cannot move to another count (made "
            "again by a broker that creates topics on use, after a deletion?); with every "
            f"worker stopped, make it again with {configured} partitions, compacted: {remake}; "
            "then rebuild the state it lost with `moments state seed` (docs/operations.md, "
            '"Going live"), or start a new MOMENTS_APP_ID and replay the input'
        )
    elif held is not None and held != configured:
        problems.append(
            f"the state changelog {changelog} has {held} partitions and MOMENTS_PARTITIONS is "
            f"{configured}: the state cannot move to another count; set MOMENTS_PARTITIONS="
            f"{held}, or start a new MOMENTS_APP_ID and replay the input (docs/operations.md, "
            "Scaling)"
        )
    return problems
