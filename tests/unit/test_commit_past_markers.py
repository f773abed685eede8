"""A transactional producer's commit marker after the last record read: the batch loop's
commit goes past it (moments.consumer), so an idle partition that was read to its end
shows lag 0, not 1 with a committed offset that never moves (which paged
MomentsPartitionNotProgressing).

The Kafka consumer's side is aiokafka's own: its subscription state and its
`FetchResult`/`PartitionRecords`, which skip the control batch and move the position past
it, on record batches built as a broker returns them (Tansu, the test broker, has no
transactions). Only the fetcher's loop handing them out is a stand-in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.record.memory_records import MemoryRecords
from faust.types import TP

from moments.consumer import BatchConsumer, BatchConsumerThread
from tests.record_batches import commit_marker, records

TOPIC = "telecom.usage"
HOT = TP(TOPIC, 0)


class Fetcher:
    """aiokafka's fetcher as Faust's read sees it: fetched results handed out by their
    own `getall` (which moves the position), as `Fetcher.fetched_records` does."""

    def __init__(self, subscriptions: SubscriptionState) -> None:
        self._subscriptions = subscriptions
        self._closed = False
        self._records: dict[Any, FetchResult] = {}
        self.meanwhile: Any = None

    def fetched(self, tp: TP, data: bytes) -> None:
        """A fetch response for `tp` at its position."""
        assignment = self._subscriptions.subscription.assignment
        position = assignment.state_value(tp).position
        partition_records = PartitionRecords(
            tp, MemoryRecords(data), [], position, None, None, True, READ_UNCOMMITTED
        )
        self._records[tp] = FetchResult(
            tp, assignment=assignment, partition_records=partition_records, backoff=0
        )

    async def fetched_records(
        self,
        partitions: Any,
        timeout: float = 0,  # noqa: ASYNC109 - aiokafka's signature
        max_records: int | None = None,
    ) -> dict[Any, list[Any]]:
        if self.meanwhile is not None:  # something done while the read waits
            self.meanwhile()
        drained = {}
        for tp in list(self._records):
            result = self._records[tp]
            got = result.getall(max_records)
            if not result.has_more():
                del self._records[tp]
            if got:
                drained[tp] = got
        return drained


class KafkaConsumer:
    """What Faust's read touches of aiokafka's consumer."""

    def __init__(self) -> None:
        self._subscription = SubscriptionState()
        self._subscription.assign_from_user({HOT})
        self._subscription.seek(HOT, 0)
        self._fetcher = Fetcher(self._subscription)
        self._closed = False

    @property
    def position(self) -> int:
        state = self._subscription.subscription.assignment.state_value(HOT)
        return int(state.position)


class Consumer:
    hot_topics = marker_topics = frozenset({TOPIC})
    flow_active = True


def reader() -> Any:
    """The batch consumer's thread, without Faust's service around it."""
    thread: Any = object.__new__(BatchConsumerThread)
    thread.consumer = Consumer()
    thread.seeks, thread.passed, thread._moves, thread._watched = {}, {}, {}, None
    return thread


async def read(thread: Any, kafka: KafkaConsumer) -> list[int]:
    taken = await thread._fetch_records(kafka, {HOT}, timeout=0)
    return [r.offset for r in taken.get(HOT, [])]


class Committing:
    """What `commit_processed` reads of the batch consumer."""

    def __init__(self, thread: Any, committed: Mapping[TP, int], assigned: set[TP]) -> None:
        self._thread = thread
        self._committed_offset = dict(committed)
        self.processed: dict[TP, int] = {}
        self.assigned = assigned
        self.commits: list[dict[TP, int]] = []

    def assignment(self) -> set[TP]:
        return self.assigned

    async def _commit_offsets(self, offsets: Mapping[TP, int]) -> bool:
        self.commits.append(dict(offsets))
        self._committed_offset.update(offsets)
        return True


async def commit(consumer: Committing) -> list[dict[TP, int]]:
    await BatchConsumer.commit_processed(consumer)  # type: ignore[arg-type]
    return consumer.commits


class TestTheCommitPassesATransactionsMarker:
    async def test_marker_fetched_with_the_records(self) -> None:
        """Records 0-9 and the commit marker at 10 in one fetch: the commit is 11, the end
        offset, not 10 (lag 1 for good on an idle partition)."""
        thread, kafka = reader(), KafkaConsumer()
        kafka._fetcher.fetched(HOT, records(0, 10) + commit_marker(10))
        assert await read(thread, kafka) == list(range(10))
        assert kafka.position == 11
        consumer = Committing(thread, {}, {HOT})
        consumer.processed[HOT] = 10  # the batch loop: last record + 1
        assert await commit(consumer) == [{HOT: 11}]

    async def test_marker_fetched_alone_after_the_records(self) -> None:
        """The usual order on a live topic: the records are read before their transaction
        commits, then a fetch brings the marker alone (no record for the batch loop)."""
        thread, kafka = reader(), KafkaConsumer()
        kafka._fetcher.fetched(HOT, records(0, 10))
        assert await read(thread, kafka) == list(range(10))
        consumer = Committing(thread, {}, {HOT})
        consumer.processed[HOT] = 10
        assert await commit(consumer) == [{HOT: 10}]  # nothing past it known yet
        kafka._fetcher.fetched(HOT, commit_marker(10))
        assert await read(thread, kafka) == []
        assert await commit(consumer) == [{HOT: 10}, {HOT: 11}]  # the idle timer's commit
        assert await commit(consumer) == [{HOT: 10}, {HOT: 11}]  # and only once

    async def test_marker_read_after_a_restart(self) -> None:
        """A worker restarted on a partition committed at the marker (before this fix)
        reads the marker alone and commits past it, with nothing processed."""
        thread, kafka = reader(), KafkaConsumer()
        kafka._subscription.seek(HOT, 10)
        kafka._fetcher.fetched(HOT, commit_marker(10))
        assert await read(thread, kafka) == []
        consumer = Committing(thread, {HOT: 10}, {HOT})
        assert await commit(consumer) == [{HOT: 11}]

    async def test_not_for_a_partition_no_longer_assigned(self) -> None:
        thread, kafka = reader(), KafkaConsumer()
        kafka._subscription.seek(HOT, 10)
        kafka._fetcher.fetched(HOT, commit_marker(10))
        await read(thread, kafka)
        assert await commit(Committing(thread, {HOT: 10}, set())) == []


class TestOnlyWhatTheReadPassed:
    async def test_records_not_yet_processed_are_not_passed(self) -> None:
        """The batch loop is behind the read (records 10-19 queued): the marker after them
        is no reason to commit past 10."""
        thread, kafka = reader(), KafkaConsumer()
        kafka._fetcher.fetched(HOT, records(0, 10) + commit_marker(10) + records(11, 9))
        assert await read(thread, kafka) == [*range(10), *range(11, 20)]
        consumer = Committing(thread, {}, {HOT})
        consumer.processed[HOT] = 10
        assert await commit(consumer) == [{HOT: 10}]
        consumer.processed[HOT] = 20
        assert await commit(consumer) == [{HOT: 10}, {HOT: 20}]

    async def test_a_seek_while_reading_is_not_taken_for_a_marker(self) -> None:
        """A seek forward during a read (a rebalance's seek to another worker's commit)
        moves the position with no record read: records it skipped are someone else's,
        not offsets with none, and a later re-read ending there must not commit past
        them."""
        thread, kafka = reader(), KafkaConsumer()
        kafka._fetcher.fetched(HOT, records(0, 10))
        await read(thread, kafka)
        kafka._fetcher.meanwhile = lambda: kafka._subscription.seek(HOT, 500)
        assert await read(thread, kafka) == []
        assert kafka.position == 500
        consumer = Committing(thread, {}, {HOT})
        consumer.processed[HOT] = 10
        assert await commit(consumer) == [{HOT: 10}]
