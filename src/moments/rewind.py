"""Catch records Faust dropped around a rebalance, so at-least-once holds.

faust-streaming 0.15 resumes fetching while its recovery still seeks the input
partitions to their committed offsets, then clears the stream queues when it
resumes flow (`clear_on_resume`). A record fetched in that window is put on a
queue, cleared and never seen again, while Faust's read offset has moved past
it: the agent's first batch after the rebalance starts beyond the committed
offset (seen with Tansu in about one restart in ten; the same race is
faust-streaming issue #596). The dropped record is never acked either, so
commits stall at it.

`RewindGuard` checks each input partition after an assignment: when its first
record lies beyond the committed offset, or when it stays silent although it has
a committed offset, the partition is sought back to that offset. Records fetched
before the seek are not handled before the re-read, so a subscriber's events are
still applied in offset order: the consumer drops those aiokafka handed over before
(`moments.consumer.BatchConsumer.take`), and the guard holds a partition from the
moment its seek is asked until it is made (`sought`): the rest of the batch that
showed the gap, and a silent partition's records fetched while the seeks of the
others were made. Records read twice are harmless: state updates are guarded by
offset and event id, and tasks by the ledger.

A seek that fails (its partition taken away by a rebalance under way, the consumer's
thread gone) crashed the worker. Now the partition stays held, with no time limit (its
records dropped meanwhile are only read again by the seek), and the seek is asked again
after a back-off (`RewindGuard.seek`, `due`: 1 s doubling up to 30 s) until it is made or
the partitions are assigned again (`reset`: the assignment's own seek to the committed
offsets reads them again).

No re-read is held: it may begin past the committed offset, and past the record
that showed the gap (those records compacted away, or deleted by retention: the read
starts at the first record the broker still has). Held until a record at or before
the one awaited came, every record of the re-read was dropped, for good, for the
hold's 30 s, and the offsets after them committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from moments.records import RawRecord

TopicPartition = tuple[str, int]
CommittedOffset = Callable[[TopicPartition], int | None]

HOLD_LIMIT_S = 30.0
"""Give up holding a partition whose seek was asked and never said made (`sought`)."""
SEEK_RETRY_FIRST_S = 1.0
"""How long after a failed seek it is asked again (`RewindGuard.due`); doubled at each
failure in a row, up to `SEEK_RETRY_MAX_S`."""
SEEK_RETRY_MAX_S = 30.0

SeekOne = Callable[[TopicPartition, int], Awaitable[None]]
"""Seeks one partition to an offset (the consumer's `seek`)."""
SeekFailed = Callable[[TopicPartition, int, Exception, float], None]
"""Told of a failed seek: the partition, the offset, the error, and the seconds until it
is asked again."""


def silent_seek_level(offset: int, end: int | None) -> int:
    """How loud to log the seek of a silent partition back to `offset`: a warning when
    records wait there (`end`, the partition's end offset, beyond it: they should have
    arrived, and Faust may have dropped them) or the end is unknown; a note when there is
    nothing to read, which is only a quiet partition (a rare topic at every restart)."""
    return logging.INFO if end is not None and end <= offset else logging.WARNING


class RewindGuard:
    """Filters each batch and says which partitions to seek back, and where to."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._checked: set[TopicPartition] = set()
        self._held: dict[TopicPartition, tuple[int, float]] = {}
        """Partition to be sought back -> (release offset, when the seek was asked), until
        the seek is made (`sought`): its records fetched meanwhile are from before it."""
        self._rewound: set[tuple[TopicPartition, int]] = set()
        self._retries: dict[TopicPartition, tuple[int, float, int]] = {}
        """Partition whose seek failed -> (offset, when it is asked again, failures in a
        row): held without a limit until the seek is made (`seek`, `due`)."""

    def reset(self) -> None:
        """Forget what was checked: call it when the partitions are (re)assigned."""
        self._checked.clear()
        self._held.clear()
        self._rewound.clear()
        self._retries.clear()

    def _rewind(self, tp: TopicPartition, offset: int, release_at: int) -> bool:
        """Note a seek of `tp` to `offset`; hold its records until the seek is made
        (`sought`), or one at or below `release_at` shows that the re-read has arrived."""
        if (tp, offset) in self._rewound:
            return False  # once per committed offset: a second read is taken as it is
        self._rewound.add((tp, offset))
        self._held[tp] = (release_at, self._clock())
        return True

    def filter(
        self, records: Sequence[RawRecord], committed: CommittedOffset
    ) -> tuple[list[RawRecord], dict[TopicPartition, int]]:
        """The records to process now, and the seeks to make before the next batch. No
        call a record of a partition checked and not held (nearly all): this runs for
        every record read."""
        held_back: set[int] = set()  # indexes
        seeks: dict[TopicPartition, int] = {}
        for index, record in enumerate(records):
            tp = (record.topic, record.partition)
            if tp in self._checked and tp not in self._held:
                continue
            held = self._held.get(tp)
            if held is not None:
                release_at, since = held
                if tp in self._retries or (
                    record.offset > release_at and self._clock() - since < HOLD_LIMIT_S
                ):
                    held_back.add(index)  # fetched before the seek; the re-read brings it again
                    continue
                del self._held[tp]
                self._checked.add(tp)
            else:  # not checked yet
                self._checked.add(tp)
                expected = committed(tp)
                if (
                    expected is not None
                    and record.offset > expected
                    # The re-read starts at or before this record, whatever was compacted.
                    and self._rewind(tp, expected, release_at=record.offset)
                ):
                    seeks[tp] = expected
                    held_back.add(index)
        if not held_back:
            return list(records), seeks
        return [r for index, r in enumerate(records) if index not in held_back], seeks

    def sought(self, seeks: Iterable[TopicPartition]) -> None:
        """The seeks `filter` asked for are made: what the consumer hands over of these
        partitions from now on is their re-read (it drops the records it took from aiokafka
        before a seek: `BatchConsumer.take`), taken wherever it begins. Held on for a record
        at or before the one that showed the gap, a re-read that began past it (that record
        compacted away, or deleted by retention, since it was read) was dropped, record
        after record, for `HOLD_LIMIT_S`, never fetched again, and committed past."""
        for tp in seeks:
            self._held.pop(tp, None)
            self._retries.pop(tp, None)

    async def seek(
        self, seeks: Mapping[TopicPartition, int], seek_one: SeekOne, failed: SeekFailed
    ) -> list[TopicPartition]:
        """Make `seeks` one after the other, each said made (`sought`) as it is; returns
        those made. One that fails raises nothing (it crashed the worker): its partition
        stays held, its records dropped as they come, for as long as it takes (they are
        read again only by the seek; released after `HOLD_LIMIT_S` they were lost, the
        offsets after them committed), and `due` asks for it again after a back-off.
        `failed` is told (to count and log it)."""
        made: list[TopicPartition] = []
        for tp, offset in seeks.items():
            try:
                await seek_one(tp, offset)
            except Exception as exc:
                failed(tp, offset, exc, self._failed(tp, offset))
                continue
            self.sought([tp])
            made.append(tp)
        return made

    def _failed(self, tp: TopicPartition, offset: int) -> float:
        """Note a failed seek of `tp`: held on, asked again after the back-off returned."""
        failures = self._retries[tp][2] if tp in self._retries else 0
        delay: float = min(SEEK_RETRY_MAX_S, SEEK_RETRY_FIRST_S * 2.0**failures)
        self._retries[tp] = (offset, self._clock() + delay, failures + 1)
        self._held.setdefault(tp, (-1, self._clock()))
        return delay

    def due(self) -> dict[TopicPartition, int]:
        """The failed seeks whose back-off is over: make them again (`seek`)."""
        now = self._clock()
        return {tp: offset for tp, (offset, at, _) in self._retries.items() if at <= now}

    def silent(
        self, assigned: Iterable[TopicPartition], committed: CommittedOffset
    ) -> dict[TopicPartition, int]:
        """Seeks for assigned partitions that delivered nothing since the assignment.

        Call it a little after the rebalance: a partition with a committed offset
        that stayed silent may have had its first records dropped. Its records are held
        until its seek is made (`sought`, called once each partition is sought: the seeks
        are made one after the other, and records of one not yet sought, fetched meanwhile
        from past its commit, were handled before the re-read brought the ones before
        them); then its re-read is taken as it comes, wherever it begins (records fetched
        before the seek are the consumer's to drop)."""
        seeks: dict[TopicPartition, int] = {}
        for tp in assigned:
            if tp in self._checked or tp in self._held:
                continue
            expected = committed(tp)
            if expected is not None and self._rewind(tp, expected, release_at=-1):
                seeks[tp] = expected
        return seeks
