"""Task outcomes after two transaction markers in a row: Faust's own commits go on.

The outcomes are read by Faust's stream, whose commits follow its acknowledgements
(`Consumer._new_offset`): a run of acked offsets from the committed one, with one missing
offset tolerated at its head (a single commit marker) and longer runs of offsets holding
no record filled from the gaps its fetch loop notes (`Consumer._add_gap`). The batch
consumer's fetch loop (`BatchConsumer._drain_messages`) replaced Faust's and noted no
gap: two dispatch consumers' transactions ending together leave two markers in a row,
and with the record after them read in the same fetch, Faust's commit stopped before
them for good (`_new_offset` said None at every commit; lag grew, the acks piled up,
MomentsPartitionNotProgressing paged). The commit past a marker that the consumer's
thread notes (`passed`) cannot help: it knows only offsets after a read's last record.

The records are a broker's own batches (commit markers as control batches), parsed by
aiokafka; Faust's bookkeeping (ack, gaps, committable offsets) is Faust's own code."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.record.memory_records import MemoryRecords
from faust.types import TP
from intervaltree import IntervalTree

from moments.consumer import BatchConsumer
from tests.record_batches import commit_marker, records

OUTCOMES = TP("moments.task-outcomes", 0)


def parsed(data: bytes, position: int) -> list[Any]:
    """The records aiokafka hands over of `data` read from `position` (markers skipped)."""
    return list(
        PartitionRecords(
            OUTCOMES, MemoryRecords(data), [], position, None, None, True, READ_UNCOMMITTED
        )
    )


class _Consumer(BatchConsumer):
    """The batch consumer's fetch loop over given reads, with Faust's ack and commit
    bookkeeping; every record delivered is handled and acked in order, as the outcomes
    agent does."""

    def __init__(self, reads: list[list[Any]]) -> None:  # no super(): no app, no broker
        self.app = SimpleNamespace(  # type: ignore[assignment]  # what the fetch loop reads
            should_stop=False,
            consumer_generation_id=1,
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
        )
        self.transport = SimpleNamespace(app=self.app)  # type: ignore[assignment]
        self.hot_topics = frozenset({"telecom.usage"})
        self.epoch = 0
        self.flow_active = True
        self.suspend_flow = asyncio.Event()
        self._reads = list(reads)
        self._stop = False
        self._read_offset: Any = defaultdict(lambda: None)
        self._buffered_partitions: set[TP] = set()
        self._committed_offset: Any = defaultdict(lambda: None)
        self._acked: Any = defaultdict(list)
        self._acked_index: Any = defaultdict(set)
        self._gap: Any = defaultdict(IntervalTree)
        self._unacked_messages: set[Any] = set()
        self._n_acked = 0
        self._waiting_for_ack = None
        self.callback = self._handle
        self.handled: list[int] = []

    @property
    def should_stop(self) -> bool:
        return self._stop

    async def _handle(self, message: Any) -> None:
        self.handled.append(message.offset)
        self.ack(message)

    async def _wait_next_records(self, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's
        if not self._reads:
            self._stop = True
            return None, None
        return {OUTCOMES: self._reads.pop(0)}, {OUTCOMES}

    def commit_faust(self) -> int | None:
        """Faust's commits (its timer's) until one finds nothing more: the offset committed."""
        while True:
            offsets = self._filter_committable_offsets([OUTCOMES])
            if not offsets:
                return self._committed_offset[OUTCOMES]  # type: ignore[no-any-return]
            self._committed_offset.update(offsets)


async def drain(consumer: _Consumer) -> None:
    await consumer._drain_messages(SimpleNamespace(should_stop=False))


TWO_MARKERS = records(100, 2) + commit_marker(102) + commit_marker(103)


@pytest.mark.parametrize(
    "reads",
    [
        pytest.param([parsed(TWO_MARKERS + records(104, 2), 100)], id="one-read"),
        pytest.param(
            [parsed(records(100, 2), 100), parsed(TWO_MARKERS + records(104, 2), 102)],
            id="the-markers-read-with-the-record-after-them",
        ),
    ],
)
async def test_two_markers_in_a_row_do_not_stop_fausts_commits(reads: list[list[Any]]) -> None:
    """Records 100-101, commit markers at 102 and 103 (two transactions ending together),
    records 104-105: all four handled and acked, Faust commits 106; it stopped at 102."""
    consumer = _Consumer(reads)
    await drain(consumer)
    assert consumer.handled == [100, 101, 104, 105]
    assert consumer.commit_faust() == 106


async def test_one_marker_faust_tolerates_as_it_did() -> None:
    """One marker between records (102) was no trouble: Faust's commit steps over one
    missing offset at its head."""
    consumer = _Consumer([parsed(records(100, 2) + commit_marker(102) + records(103, 2), 100)])
    await drain(consumer)
    assert consumer.handled == [100, 101, 103, 104]
    assert consumer.commit_faust() == 105


async def test_a_record_not_yet_acked_is_not_committed_past() -> None:
    """The gap holds the offsets with no record only: while record 104 waits for its ack
    (the agent's batch still on Redis), the commit stays at 102, the markers' head."""
    consumer = _Consumer([parsed(TWO_MARKERS + records(104, 2), 100)])
    waiting: list[Any] = []

    async def hold_from_104(message: Any) -> None:
        consumer.handled.append(message.offset)
        if message.offset < 104:
            consumer.ack(message)
        else:
            waiting.append(message)

    consumer.callback = hold_from_104
    await drain(consumer)
    assert consumer.commit_faust() == 102
    consumer.ack(waiting[0])
    assert consumer.commit_faust() == 105
    consumer.ack(waiting[1])
    assert consumer.commit_faust() == 106
