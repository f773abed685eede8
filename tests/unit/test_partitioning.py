"""moments.partitioning: which records sit on another partition than their key's."""

from __future__ import annotations

import asyncio
import logging
import zlib

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from moments.engine import Detector
from moments.models import EventType
from moments.partitioning import (
    PartitionCheck,
    PartitionCountError,
    layout_problems,
    partition_of,
)
from moments.records import RawRecord, RejectReason
from moments.runtime import Runtime, record_batch
from moments.settings import load_settings
from moments.store import DictStateStore
from rules.catalog import RuleSet
from sinks.deadletter import DeadLetterSink
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Metrics

from .fakes import Clock

SUBSCRIBERS = [f"1380000{n:04d}".encode() for n in range(400)]
MISPLACED = "moments_events_misplaced_total"


def record(topic: str, key: bytes | None, partition: int) -> RawRecord:
    return RawRecord(topic, partition, 0, key, b"{}")


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner (consistent_random) for a keyed record."""
    return zlib.crc32(key) % partitions


class TestPartitionOf:
    @pytest.mark.parametrize("partitions", [1, 2, 4, 8, 12])
    def test_agrees_with_the_producer_that_aiokafka_uses(self, partitions: int) -> None:
        chosen = DefaultPartitioner()
        every = list(range(partitions))
        for key in SUBSCRIBERS:
            assert partition_of(key, partitions) == chosen(key, every, every)


class TestPartitionCheck:
    """Counts by topic the records that murmur2 of the key would put elsewhere."""

    def test_records_where_their_key_hashes_to_are_not_counted(self) -> None:
        check = PartitionCheck(4)
        batch = [record("usage", key, partition_of(key, 4)) for key in SUBSCRIBERS]
        assert check.check(batch) == {}
        assert check.check(batch) == {}  # from the cache the second time

    def test_another_partitioner_is_counted_by_topic(self) -> None:
        check = PartitionCheck(4)
        usage = [record("usage", key, partition_of(key, 4)) for key in SUBSCRIBERS]
        roaming = [record("roaming", key, crc32_partition(key, 4)) for key in SUBSCRIBERS]
        off = sum(crc32_partition(k, 4) != partition_of(k, 4) for k in SUBSCRIBERS)
        assert 200 < off < 400  # about three in four
        assert check.check(usage + roaming) == {"roaming": off}

    def test_a_topic_with_fewer_partitions_than_configured_is_counted(self) -> None:
        check = PartitionCheck(4)
        batch = [record("topup", key, partition_of(key, 2)) for key in SUBSCRIBERS]
        expected = sum(partition_of(k, 4) != partition_of(k, 2) for k in SUBSCRIBERS)
        assert check.check(batch) == {"topup": expected}
        assert expected > 0

    def test_keyless_records_are_left_to_the_dead_letters(self) -> None:
        assert PartitionCheck(4).check([record("usage", None, 3)]) == {}

    def test_a_full_cache_starts_over_and_stays_right(self) -> None:
        check = PartitionCheck(4, capacity=10)
        batch = [record("usage", key, (partition_of(key, 4) + 1) % 4) for key in SUBSCRIBERS]
        assert check.check(batch) == {"usage": len(SUBSCRIBERS)}
        assert len(check._expected) <= 10

    def test_at_least_one_partition(self) -> None:
        with pytest.raises(ValueError, match="partitions must be >= 1"):
            PartitionCheck(0)


class TestWarning:
    """One warning per interval, with the counts held back since the last one and the
    fix; never a key (keys are subscriber ids)."""

    def test_warns_once_per_interval_with_the_counts_since(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        clock = Clock()
        check = PartitionCheck(4, every_s=60, clock=clock)
        key = next(k for k in SUBSCRIBERS if partition_of(k, 4) != 0)
        wrong = [record("roaming", key, 0)]
        with caplog.at_level(logging.WARNING, logger="moments.partitioning"):
            check.check(wrong)
            clock.now += 30
            check.check(wrong)
            check.check(wrong)
            clock.now += 31
            check.check(wrong)
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 2, messages
        assert "since the worker started: roaming 1 " in messages[0]
        assert "in the last 61 s: roaming 3 " in messages[1]
        assert f"on partition 0 where murmur2 names {partition_of(key, 4)}" in messages[1]
        assert "partitioner=murmur2_random" in messages[0]
        assert "MOMENTS_PARTITIONS (4)" in messages[0]
        assert all(key.decode() not in m for m in messages)

    def test_silent_while_every_record_is_in_place(self, caplog: pytest.LogCaptureFixture) -> None:
        check = PartitionCheck(4)
        with caplog.at_level(logging.WARNING, logger="moments.partitioning"):
            check.check([record("usage", k, partition_of(k, 4)) for k in SUBSCRIBERS])
        assert caplog.records == []


class TestLayoutProblems:
    """The topics' partition counts a worker refuses to start with, each with its fix."""

    INPUTS = ("t.usage", "t.topup", "t.roaming")

    def test_input_and_changelog_at_the_configured_count_are_fine(self) -> None:
        counts = dict.fromkeys(self.INPUTS, 4) | {"app-subscribers-changelog": 4}
        assert layout_problems(counts, self.INPUTS, "app-subscribers-changelog", 4) == []

    def test_topics_not_created_yet_are_no_problem_here(self) -> None:
        assert layout_problems({}, self.INPUTS, "changelog", 4) == []

    def test_input_with_another_count_names_the_setting(self) -> None:
        (problem,) = layout_problems(dict.fromkeys(self.INPUTS, 8), self.INPUTS, "changelog", 4)
        assert "have 8 partitions and MOMENTS_PARTITIONS is 4" in problem
        assert problem.endswith("set MOMENTS_PARTITIONS=8")

    def test_inputs_that_disagree_are_listed(self) -> None:
        counts = {"t.usage": 4, "t.topup": 8}
        (problem,) = layout_problems(counts, self.INPUTS, "changelog", 4)
        assert "different partition counts (t.topup 8, t.usage 4)" in problem

    def test_a_changelog_of_another_count_cannot_follow(self) -> None:
        counts = dict.fromkeys(self.INPUTS, 8) | {"changelog": 4}
        problems = layout_problems(counts, self.INPUTS, "changelog", 8)
        assert len(problems) == 1
        assert "the state changelog changelog has 4 partitions" in problems[0]
        assert "MOMENTS_PARTITIONS=4, or start a new MOMENTS_APP_ID" in problems[0]


class TestPartitionsAddedWhileRunning:
    """Input topics given more partitions while workers run: a record on a partition the
    state changelog lacks stops the batch with the fix, before anything is applied (the
    changelog write crashed with aiokafka's "Unrecognized partition")."""

    def test_the_check_refuses_a_partition_beyond_the_configured_count(self) -> None:
        key = SUBSCRIBERS[0]
        with pytest.raises(PartitionCountError, match=r"MOMENTS_PARTITIONS \(2\)"):
            PartitionCheck(2).check([record("t.usage", key, 3)])

    async def test_the_runtime_applies_nothing_of_such_a_batch(self) -> None:
        settings = load_settings(partitions=2)
        topic = settings.topic("usage")
        runtime = Runtime(settings, Metrics(), Detector(RuleSet.of([]), {topic: EventType.USAGE}))
        store = DictStateStore()
        value = b'{"event_id": "u1", "subscriber_id": "13800000001", "kind": "data",'
        value += b' "occurred_at": "2026-11-23T10:00:00+08:00"}'
        with pytest.raises(PartitionCountError, match="partition 3, beyond"):
            await runtime.handle([RawRecord(topic, 3, 0, b"13800000001", value)], store)
        assert store.data == {}


class TestMisplacedTombstones:
    """A profile tombstone on another partition than its key's erased nothing where the
    subscriber's state was (security re-check): it is a dead letter `misplaced`, which
    `deadletter replay` sends where it belongs. Events there are applied as before."""

    def test_only_the_misplaced_tombstones_of_the_profile_topic_are_refused(self) -> None:
        check = PartitionCheck(4)
        key = b"13812345678"
        right = partition_of(key, 4)
        wrong = (right + 1) % 4
        records = [
            RawRecord("telecom.profile", wrong, 1, key, None),  # refused
            RawRecord("telecom.profile", right, 2, key, None),  # erases
            RawRecord("telecom.profile", wrong, 3, key, b"{}"),  # an event: applied
            RawRecord("telecom.usage", wrong, 4, key, None),  # empty_value, not ours
            RawRecord("telecom.profile", wrong, 5, b"abc", None),  # key_mismatch, not ours
        ]
        kept, refused = check.misplaced_tombstones(records, "telecom.profile")
        assert [r.offset for r in kept] == [2, 3, 4, 5]
        [letter] = refused
        assert (letter.record.offset, letter.reason.value) == (1, "misplaced")
        assert letter.message.startswith(
            f"a profile tombstone on partition {wrong}, where its key names {right}: nothing "
            "was erased"
        )


class TestMisplacedCountedOnce:
    """`moments_events_misplaced_total` counts each misplaced event once, when its batch
    is durable: read again after a restart without the last commit and skipped as already
    applied, it is not counted again (a restart a few minutes after a one-off burst made
    MomentsEventsMisplaced fire, docs/operations.md "Counters after a restart")."""

    async def test_events_skipped_as_already_applied_are_not_counted_again(self) -> None:
        settings = load_settings(partitions=2)
        topic = settings.topic("usage")
        detector = Detector(RuleSet.of([]), {topic: EventType.USAGE})
        metrics = Metrics()
        runtime = Runtime(settings, metrics, detector)
        store = DictStateStore()
        key = b"13800000001"
        wrong = 1 - partition_of(key, 2)
        records = [RawRecord(topic, wrong, n, key, usage(f"u{n}", "13800000001")) for n in range(3)]
        off = runtime.placement.check(records)
        assert off == {topic: 3}
        first = detector.process(records, store.load, None)
        store.save(first.changes)
        first.misplaced = runtime.misplaced_events(off, first)  # as `Runtime.handle` does
        record_batch(metrics, first)
        again = detector.process(records, store.load, None)  # read again after a restart
        assert again.replays == records
        again.misplaced = runtime.misplaced_events(runtime.placement.check(records), again)
        record_batch(metrics, again)
        labels = {"event_type": "usage"}
        assert metrics.registry.get_sample_value(MISPLACED, labels) == 3
        assert metrics.registry.get_sample_value("moments_events_total", labels) == 6

    async def test_a_record_refused_for_its_bytes_is_counted_at_each_read(self) -> None:
        """No state remembers it: its dead letter is sent again too."""
        settings = load_settings(partitions=2)
        topic = settings.topic("usage")
        detector = Detector(RuleSet.of([]), {topic: EventType.USAGE})
        metrics = Metrics()
        runtime = Runtime(settings, metrics, detector)
        store = DictStateStore()
        key = b"13800000001"
        records = [RawRecord(topic, 1 - partition_of(key, 2), 0, key, b'{"event_id": ')]
        for _ in range(2):
            result = detector.process(records, store.load, None)
            store.save(result.changes)
            assert result.replays == []
            result.misplaced = runtime.misplaced_events(runtime.placement.check(records), result)
            record_batch(metrics, result)
        labels = {"event_type": "usage"}
        assert metrics.registry.get_sample_value(MISPLACED, labels) == 2


def usage(event_id: str, subscriber: str) -> bytes:
    return (
        f'{{"event_id": "{event_id}", "subscriber_id": "{subscriber}", "kind": "data", '
        '"occurred_at": "2026-11-23T10:00:00+08:00"}'
    ).encode()


class _Producer:
    """Takes every record (dead letters one by one, changelog batches) and acknowledges it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, value: bytes | None = None, **_: object) -> object:
        self.sent.append((topic, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1 << 20, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> object:
        self.sent.append((topic, None))
        return asyncio.sleep(0)


def roaming(event_id: str, subscriber: str) -> bytes:
    return (
        f'{{"event_id": "{event_id}", "subscriber_id": "{subscriber}", "country": "FR", '
        '"roaming_type": "international", "occurred_at": "2026-11-23T10:00:00+08:00"}'
    ).encode()


async def test_a_batch_read_again_in_part_counts_only_its_new_misplaced_events() -> None:
    """Through `Runtime.handle`, as the batch loop calls it: two event types, events on
    their key's partition among the misplaced ones, a batch read again in part (after a
    restart without the last commit) with new events and a misplaced profile tombstone
    among those already applied. Each misplaced event is counted once, under its own
    event type; the tombstone (a dead letter, no state remembers it) at each read."""
    settings = load_settings(partitions=2)
    usage_topic, roaming_topic = settings.topic("usage"), settings.topic("roaming")
    profile_topic = settings.topic("profile")
    types = {usage_topic: EventType.USAGE, roaming_topic: EventType.ROAMING}
    detector = Detector(RuleSet.of([]), {**types, profile_topic: EventType.PROFILE})
    metrics = Metrics()
    runtime = Runtime(settings, metrics, detector)
    producer = _Producer()
    runtime._producer = producer
    runtime.tasks = TaskSink(None, "tasks", memory_stores(lambda: 0.0), metrics)  # type: ignore[arg-type]
    runtime.dead_letters = DeadLetterSink(producer, "dlq", metrics)  # type: ignore[arg-type]
    store = DictStateStore()
    a, b = "13800000001", "13800000002"
    off_a, off_b = 1 - partition_of(a.encode(), 2), 1 - partition_of(b.encode(), 2)
    right_b = partition_of(b.encode(), 2)
    first = [
        RawRecord(usage_topic, off_a, 0, a.encode(), usage("u0", a)),
        RawRecord(usage_topic, off_a, 1, a.encode(), usage("u1", a)),
        RawRecord(roaming_topic, off_b, 0, b.encode(), roaming("r0", b)),
        RawRecord(usage_topic, right_b, 0, b.encode(), usage("u2", b)),
    ]
    await runtime.handle(first, store)
    again = [
        first[1],  # applied: read again
        RawRecord(usage_topic, off_a, 2, a.encode(), usage("u3", a)),  # new
        first[2],  # applied
        RawRecord(profile_topic, off_b, 0, b.encode(), None),  # a tombstone off its partition
        first[3],  # applied, on its partition
    ]
    result = await runtime.handle(again, store)
    assert result.replayed == 3
    assert [letter.reason for letter in result.dead_letters] == [RejectReason.MISPLACED]

    def count(event_type: str) -> float | None:
        return metrics.registry.get_sample_value(MISPLACED, {"event_type": event_type})

    assert (count("usage"), count("roaming"), count("profile")) == (3, 1, 1)


def test_a_misplaced_tombstones_error_class_is_one_the_asyncapi_document_names() -> None:
    """The published DeadLetter headers list each `__dlq.errors.exception.class.name` the
    worker writes; `Misplaced`, a profile tombstone's on another partition than its key's,
    was missing (a consumer of the dead letters reading the document for the names)."""
    from moments.schemas import asyncapi_document

    key = b"13800138001"
    wrong = (partition_of(key, 4) + 1) % 4
    _, (refused,) = PartitionCheck(4).misplaced_tombstones(
        [RawRecord("telecom.profile", wrong, 0, key, None)], "telecom.profile"
    )
    headers = asyncapi_document()["components"]["messages"]["DeadLetter"]["headers"]
    said = headers["properties"]["__dlq.errors.exception.class.name"]["description"]
    assert refused.error_class == "Misplaced"
    assert refused.error_class in said.split(": ", 1)[1].split(". ")[0].split(", ")
