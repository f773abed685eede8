"""RewindGuard: records Faust dropped around a rebalance are read again, in order."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka.errors import IllegalStateError

from moments.records import RawRecord, next_offsets
from moments.rewind import (
    HOLD_LIMIT_S,
    SEEK_RETRY_MAX_S,
    CommittedOffset,
    RewindGuard,
    SeekOne,
    TopicPartition,
    silent_seek_level,
)

from .calls import counted_calls
from .fakes import Clock

T = "telecom.roaming"


def rec(offset: int, partition: int = 0, topic: str = T) -> RawRecord:
    return RawRecord(topic, partition, offset, b"k", b"{}")


def offsets(records: list[RawRecord]) -> list[int]:
    return [r.offset for r in records]


def test_first_batch_at_the_committed_offset_passes() -> None:
    guard = RewindGuard()
    keep, seeks = guard.filter([rec(5), rec(6)], lambda tp: 5)
    assert offsets(keep) == [5, 6]
    assert seeks == {}


def test_a_gap_after_the_committed_offset_seeks_back_and_holds_later_records() -> None:
    guard = RewindGuard()
    committed = {(T, 0): 1, (T, 1): 0}
    keep, seeks = guard.filter([rec(2), rec(3), rec(0, partition=1)], committed.get)
    assert seeks == {(T, 0): 1}
    assert [(r.partition, r.offset) for r in keep] == [(1, 0)]
    # Fetched before the seek took effect: held back, they come again.
    keep, seeks = guard.filter([rec(4)], committed.get)
    assert (offsets(keep), seeks) == ([], {})
    # The re-read starts at the committed offset: everything from there, in order.
    keep, seeks = guard.filter([rec(1), rec(2), rec(3), rec(4)], committed.get)
    assert (offsets(keep), seeks) == ([1, 2, 3, 4], {})


def test_a_real_gap_is_accepted_after_one_rewind() -> None:
    """Compaction removed offset 1: the re-read starts at 2 and is taken as it is."""
    guard = RewindGuard()
    keep, seeks = guard.filter([rec(2), rec(3)], lambda tp: 1)
    assert (offsets(keep), seeks) == ([], {(T, 0): 1})
    keep, seeks = guard.filter([rec(2), rec(3)], lambda tp: 1)
    assert (offsets(keep), seeks) == ([2, 3], {})
    guard.reset()  # the next rebalance checks again, once
    keep, seeks = guard.filter([rec(7)], lambda tp: 1)
    assert seeks == {(T, 0): 1}


def test_no_committed_offset_means_nothing_to_compare() -> None:
    guard = RewindGuard()
    keep, seeks = guard.filter([rec(9)], lambda tp: None)
    assert (offsets(keep), seeks) == ([9], {})


def test_only_the_first_record_after_an_assignment_is_checked() -> None:
    guard = RewindGuard()
    guard.filter([rec(1)], lambda tp: 1)
    keep, seeks = guard.filter([rec(5)], lambda tp: 1)  # a later gap: compaction, not a drop
    assert (offsets(keep), seeks) == ([5], {})


def test_a_silent_partition_is_sought_back_once() -> None:
    guard = RewindGuard()
    seen = (T, 0)
    guard.filter([rec(3)], lambda tp: 3)
    seeks = guard.silent([seen, (T, 1)], lambda tp: {(T, 0): 3, (T, 1): 1}[tp])
    assert seeks == {(T, 1): 1}, "only the partition that delivered nothing"
    assert guard.silent([(T, 1)], lambda tp: 1) == {}, "once per committed offset"
    guard.sought([(T, 1)])  # the seek is made (the app's seek_back says so)
    keep, seeks = guard.filter([rec(1, partition=1), rec(2, partition=1)], lambda tp: 1)
    assert (offsets(keep), seeks) == ([1, 2], {})


def test_a_silent_partitions_re_read_is_taken_wherever_it_begins() -> None:
    """Offset 4 was compacted away (or deleted by retention): the re-read from the
    committed offset begins at 6. Held until a record at 4 came, 6 and every record after
    it were dropped for 30 s, and never fetched again: lost, and committed past (records
    fetched before the seek are the consumer's to drop: test_batch_consumer_take)."""
    guard = RewindGuard(Clock(100.0))
    assert guard.silent([(T, 0)], lambda tp: 4) == {(T, 0): 4}
    guard.sought([(T, 0)])
    keep, seeks = guard.filter([rec(6), rec(7)], lambda tp: 4)
    assert (offsets(keep), seeks) == ([6, 7], {})  # no second seek: once per offset
    assert offsets(guard.filter([rec(8)], lambda tp: 4)[0]) == [8]


def test_a_silent_partitions_records_fetched_before_its_seek_is_made_are_dropped() -> None:
    """The silent check seeks its partitions one after the other, each an await: records
    of one not yet sought, fetched meanwhile from past its commit (Faust dropped the first
    ones), passed the gap check as already rewound and were handled; the seek then
    brought the records before them, which the state took for replays of a subscriber
    whose later event was applied. Held until the seek is made, they come again in order."""
    guard = RewindGuard()
    assert guard.silent([(T, 0)], lambda tp: 4) == {(T, 0): 4}
    keep, seeks = guard.filter([rec(9), rec(10)], lambda tp: 4)  # before the seek is made
    assert (offsets(keep), seeks) == ([], {})
    guard.sought([(T, 0)])
    keep, seeks = guard.filter([rec(4), rec(5)], lambda tp: 4)  # the re-read
    assert (offsets(keep), seeks) == ([4, 5], {})


def test_silent_partitions_without_a_committed_offset_are_left_alone() -> None:
    assert RewindGuard().silent([(T, 0)], lambda tp: None) == {}


def test_once_the_seek_is_made_the_re_read_is_taken_wherever_it_begins() -> None:
    """6 showed the gap; 4-6 were compacted away (or deleted by retention) before the
    re-read, which begins at 9. Held for a record at or before 6, 9 and every record after
    it were dropped for 30 s, never fetched again, and committed past. What the consumer
    hands over after the seek is the re-read (it drops what it took before)."""
    guard = RewindGuard(Clock(100.0))
    assert guard.filter([rec(6), rec(7)], lambda tp: 4) == ([], {(T, 0): 4})
    guard.sought([(T, 0)])
    keep, seeks = guard.filter([rec(9), rec(10)], lambda tp: 4)
    assert (offsets(keep), seeks) == ([9, 10], {})


def test_a_hold_that_is_never_released_gives_up_after_the_limit() -> None:
    clock = Clock(100.0)
    guard = RewindGuard(clock)
    # 6 showed the gap; the seek was never said made (`sought`), nor did a re-read come.
    assert guard.filter([rec(6)], lambda tp: 4) == ([], {(T, 0): 4})
    assert guard.filter([rec(9)], lambda tp: 4)[0] == []
    clock.now += HOLD_LIMIT_S
    assert offsets(guard.filter([rec(9)], lambda tp: 4)[0]) == [9]


def test_the_offsets_marked_processed_never_pass_a_held_record() -> None:
    """The batch loop marked each fetched partition processed up to its last record
    fetched, held ones included: after a seek back to 100, a fetch of 109-120 made before
    it was held, yet 121 was committed, and a crash before the re-read lost 100-120 (code
    review). Marked from the records kept, a partition whose records were all held is
    not marked, and the re-read marks it."""
    guard = RewindGuard()
    committed = {(T, 0): 100, (T, 1): 7}
    keep, seeks = guard.filter([rec(108), rec(7, partition=1)], committed.get)
    assert seeks == {(T, 0): 100}
    assert next_offsets(keep) == {(T, 1): 8}
    keep, _ = guard.filter([rec(o) for o in range(109, 121)] + [rec(8, 1)], committed.get)
    assert next_offsets(keep) == {(T, 1): 9}
    keep, _ = guard.filter([rec(o) for o in range(100, 121)], committed.get)
    assert next_offsets(keep) == {(T, 0): 121}


class TestCallsARecord:
    """The batch loop filters and marks every record the worker reads: after the first
    fetch of an assignment, nothing is held and every partition is checked, and each
    record cost two calls in the filter and one in `next_offsets`."""

    @staticmethod
    def _calls(run: Callable[[], object]) -> int:
        return sum(counted_calls(run)[1].values())

    def test_a_checked_partitions_records_pass_with_no_call_each(self) -> None:
        guard = RewindGuard()
        assert guard.filter([rec(0), rec(0, partition=1)], lambda tp: 0) == (
            [rec(0), rec(0, partition=1)],
            {},
        )
        few = [rec(o, partition=o % 2) for o in range(1, 11)]
        many = [rec(o, partition=o % 2) for o in range(1, 1001)]
        assert guard.filter(many, lambda tp: 0) == (many, {})
        assert self._calls(lambda: guard.filter(many, lambda tp: 0)) == self._calls(
            lambda: guard.filter(few, lambda tp: 0)
        )

    def test_an_assignments_first_fetch_too(self) -> None:
        """Its partitions are checked by their first records, the rest pass with no call
        (the bench's 20,000 events come in one fetch)."""
        few = [rec(o, partition=o % 2) for o in range(10)]
        many = [rec(o, partition=o % 2) for o in range(1000)]
        committed: CommittedOffset = lambda tp: tp[1]  # noqa: E731  # each at its first record
        assert RewindGuard().filter(many, committed) == (many, {})
        assert self._calls(lambda: RewindGuard().filter(many, committed)) == self._calls(
            lambda: RewindGuard().filter(few, committed)
        )

    def test_the_offsets_to_mark_are_found_with_no_call_a_record(self) -> None:
        few = [rec(o, partition=o % 2) for o in range(10)]
        many = [rec(o, partition=o % 2) for o in range(1000)]
        assert next_offsets(many) == {(T, 0): 999, (T, 1): 1000}
        assert self._calls(lambda: next_offsets(many)) == self._calls(lambda: next_offsets(few))


class TestAFailedSeek:
    """A seek back that fails (aiokafka: "No current assignment for partition", a
    rebalance under way; the consumer's thread gone) raised out of the silent-partition
    timer or the batch loop and crashed the worker; the partitions after it in the same
    round were left held with no seek, and after the hold's 30 s their records dropped
    meanwhile were lost, the offsets after them committed."""

    @staticmethod
    def seeker(refuse: set[TopicPartition]) -> tuple[list[TopicPartition], SeekOne]:
        made: list[TopicPartition] = []

        async def seek_one(tp: TopicPartition, offset: int) -> None:
            if tp in refuse:
                raise IllegalStateError(f"No current assignment for partition {tp}")
            made.append(tp)

        return made, seek_one

    async def test_the_partition_stays_held_and_is_sought_again_after_a_back_off(self) -> None:
        clock = Clock(100.0)
        guard = RewindGuard(clock)
        refuse = {(T, 0)}
        made, seek_one = self.seeker(refuse)
        failed: list[tuple[TopicPartition, int, float]] = []

        def note(tp: TopicPartition, offset: int, exc: Exception, retry_in: float) -> None:
            failed.append((tp, offset, retry_in))

        seeks = guard.silent([(T, 0), (T, 1)], lambda tp: 4)
        assert await guard.seek(seeks, seek_one, note) == [(T, 1)]
        assert (made, failed) == ([(T, 1)], [((T, 0), 4, 1.0)])
        assert guard.due() == {}
        clock.now += HOLD_LIMIT_S
        # Held past the limit: its records are read again only by the seek.
        assert guard.filter([rec(9), rec(5, partition=1)], lambda tp: 4)[0] == [rec(5, 1)]
        waits: list[float] = []
        while len(waits) < 6:
            assert list(guard.due()) == [(T, 0)]
            await guard.seek(guard.due(), seek_one, note)
            waits.append(failed[-1][2])
            clock.now += failed[-1][2]
        assert waits == [2.0, 4.0, 8.0, 16.0, SEEK_RETRY_MAX_S, SEEK_RETRY_MAX_S]
        refuse.clear()
        assert await guard.seek(guard.due(), seek_one, note) == [(T, 0)]
        assert guard.due() == {}
        assert offsets(guard.filter([rec(7), rec(8)], lambda tp: 4)[0]) == [7, 8]

    async def test_a_new_assignment_forgets_a_failed_seek(self) -> None:
        """The assignment's own seek to the committed offsets reads the partition again."""
        clock = Clock(100.0)
        guard = RewindGuard(clock)
        _, seek_one = self.seeker({(T, 0)})
        seeks = guard.silent([(T, 0)], lambda tp: 4)
        await guard.seek(seeks, seek_one, lambda *_: None)
        clock.now += SEEK_RETRY_MAX_S
        guard.reset()
        assert guard.due() == {}
        assert offsets(guard.filter([rec(4), rec(5)], lambda tp: 4)[0]) == [4, 5]


class TestSilentSeekLevel:
    """A silent partition sought back at start was a WARNING for every quiet partition
    (`telecom.complaint[1]: nothing arrived since the rebalance; reading again from offset
    0` at each start of `moments run`, and at each rolling restart for the partitions of a
    rare topic): an operator could do nothing about it. It warns when records wait there,
    which should have arrived."""

    def test_records_waiting_past_the_offset_warn(self) -> None:
        assert silent_seek_level(offset=5, end=9) == logging.WARNING

    def test_nothing_to_read_there_is_only_noted(self) -> None:
        assert silent_seek_level(offset=5, end=5) == logging.INFO
        assert silent_seek_level(offset=0, end=0) == logging.INFO

    def test_an_end_the_broker_did_not_give_warns(self) -> None:
        assert silent_seek_level(offset=5, end=None) == logging.WARNING
