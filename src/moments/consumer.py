"""A Faust consumer that hands the input topics to the detector in whole fetches.

Faust delivers every record on its own: a `wait_first` per message, a channel
queue, a stream, an event, an ack. On this machine that held a worker to a few
thousand events per second while the detector itself does ~50k. This consumer
keeps Faust's path for its own topics (changelogs, the assignor's) and puts the
records of the input topics ("hot" topics) on a queue, one fetch at a time, for
the batch loop in `moments.app`. Offsets of hot topics are committed by that
loop once a batch's outputs are durable (`commit_processed`), never by Faust's
ack tracking.

Rebalances: a seek to the committed offsets (recovery) or a revocation
invalidates whatever is queued (`epoch`); a seek of one partition (the rewind
guard's) drops that partition's records taken from aiokafka before it
(`Fetch.seeks`); and a revocation waits for the batch in
flight and a window sweep's chunk (`state_settled`) before Faust moves on, so a
partition's state writes are done before another worker restores them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

from aiokafka.errors import CorruptRecordException
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from moments.shutdown import within

log = logging.getLogger(__name__)

QUEUED_FETCHES = 4
"""Fetches waiting for the batch loop; beyond this the fetcher waits (backpressure)."""


@dataclass(slots=True)
class Fetch:
    """The hot records of one fetch, per partition, tagged with the epoch they belong to."""

    epoch: int
    records: list[tuple[TP, list[Any]]]
    seeks: Mapping[TP, int] = field(default_factory=dict)
    """How many times each partition had been sought when these records were taken from
    aiokafka (`BatchConsumerThread.seeks`, absent: never): a partition sought since is read
    again from where it was sought, and these records of it are dropped
    (`BatchConsumer.take`)."""


async def _nothing_held() -> None:
    """`BatchConsumer.state_settled` until the app sets it."""


def _nothing_counted() -> None:
    """`BatchConsumer.corrupt_read_seen` until the app sets it."""


def _count(fetch: Fetch) -> int:
    return sum(len(batch) for _, batch in fetch.records)


def _since_seeks(fetch: Fetch, sought: Mapping[TP, int]) -> Fetch:
    """`fetch` without the partitions sought after its records were taken from aiokafka
    (`sought`: partition -> its seeks so far): their records come again from where they
    were sought. Left in, they were handled before the records of the re-read that precede
    them, whose events the state then took for replays."""
    if not sought:
        return fetch
    seeks = fetch.seeks
    kept = [(tp, b) for tp, b in fetch.records if seeks.get(tp, 0) >= sought.get(tp, 0)]
    return fetch if len(kept) == len(fetch.records) else Fetch(fetch.epoch, kept, seeks)


class _Taken(dict[Any, Any]):
    """What aiokafka handed over in one read, with the seeks made by then (`Fetch.seeks`)."""

    __slots__ = ("seeks",)

    def __init__(self, records: Mapping[Any, Any], seeks: Mapping[TP, int]) -> None:
        super().__init__(records)
        self.seeks = seeks


NO_SEEKS: Mapping[TP, int] = MappingProxyType({})


FETCH_MAX_WAIT_MS = 100
"""How long a fetch may wait for data (`MOMENTS_FETCH_WAIT_MS` sets it). Faust fixes
1,500 ms; with it the benchmark's event-to-task latency at half load was p50 1.5 s /
p99 3.4 s, with 100 ms p50 0.6 s / p99 1.0 s (docs/performance.md)."""
LAST_COMMIT_S = 10.0
"""How long a revocation or a shutdown waits to finish the batch in flight and commit.
Kubernetes allows 60 s (deploy/k8s); without a bound, a shutdown while the broker was
gone took 90 s and ended in a crash."""
CORRUPT_READS = 5
"""Reads in a row that may fail aiokafka's check of a fetched batch (`CorruptRecordException`:
its CRC, or a batch it cannot parse) before the worker stops (`BatchConsumer.corrupt_read`)."""
CORRUPT_PAUSE_S = 1.0
"""The pause before reading again after such a read, times the reads failed so far."""
CORRUPT_SPELL_S = 60.0
"""Failed reads count as in a row while each comes within this of the one before (the
pauses add up to 15 s): a partition read well meanwhile does not reset the count, as
another partition's damaged batch fails every read again."""


def corrupt_batch_note(exc: BaseException, reads: int) -> str:
    """What fixes a fetched batch that failed aiokafka's check `reads` times in a row."""
    return (
        f"moments: not retried: a fetched batch failed aiokafka's check {reads} times in a "
        f"row ({exc}): not a corrupt fetch, which a read again cures, but a batch stored "
        "damaged (or a broker that builds it wrong). The worker stops before committing it. "
        "Check the partition's log segment on its leader (kafka-dump-log.sh "
        "--deep-iteration --files <segment>.log); if a replica holds an intact copy, make "
        "it the leader; otherwise move the app's group past the batch "
        "(kafka-consumer-groups.sh --reset-offsets --to-offset <next batch> --group "
        "<MOMENTS_APP_ID> --topic <topic>:<partition>), which gives up its records"
    )


def seek_failed_note(after: str, failed: BaseException, tries: int) -> str:
    """What to do when reading again from the committed offsets (`after`: what made the
    worker read again) could not look them up `tries` times in a row."""
    return (
        f"moments: could not read the committed offsets {tries} times in a row "
        f"({type(failed).__name__}: {failed}), to read again from them {after}. The worker "
        "stops before committing past the records that read dropped; check that the brokers "
        "and the group's coordinator answer (kafka-consumer-groups.sh --describe --group "
        "<MOMENTS_APP_ID>), then start it again: it reads from the committed offsets"
    )


STALE_FETCH = "after a seek made while a fetch was under way (its records dropped as stale)"
"""What the fetch loop reads again after when a seek came during a fetch (`seek_again`)."""


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seeks: dict[TP, int] = {}
        """Partition -> seeks of it made so far (`seek_counted`), changed on the consumer's
        thread only, so that a read taken before a seek and one taken after it tell apart."""
        self.passed: dict[TP, tuple[int, int]] = {}
        """Partition (of `BatchConsumer.marker_topics`) -> `(start, end)`: offsets `start`
        to `end - 1` hold no record for us (a transaction's commit or abort marker, an
        aborted or compacted batch), seen as aiokafka's position passed them while
        reading. The last such run per partition (`BatchConsumer.commit_processed` commits
        `end` for `start`)."""
        self._moves: dict[TP, int] = {}
        """Partition -> position changes made by anything but reading (every seek, from
        any thread: `_watch_seeks`), so that a read tells its own from a seek's."""
        self._watched: Any = None

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - Faust's signature
        max_records: int | None = None,
    ) -> Any:
        """Faust's read, with the seeks made when aiokafka handed the records over: on this
        thread, between two seeks or not, never during one. Notes the offsets the read
        passed without a record (`passed`)."""
        before = self._positions(consumer, active_partitions)
        moves = dict(self._moves) if before else {}
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        if before:
            self._note_passed(consumer, before, moves, records)
        return _Taken(records, dict(self.seeks)) if self.seeks else records

    def _positions(self, consumer: Any, partitions: Any) -> dict[TP, tuple[Any, int]]:
        """The aiokafka states and positions (those with one) of the partitions of
        `BatchConsumer.marker_topics`."""
        assignment = getattr(getattr(consumer, "_subscription", None), "subscription", None)
        assignment = getattr(assignment, "assignment", None)
        if assignment is None or not partitions:
            return {}
        marked = cast("BatchConsumer", self.consumer).marker_topics
        self._watch_seeks(consumer)
        found: dict[TP, tuple[Any, int]] = {}
        for tp in partitions:
            if tp.topic in marked:
                state = assignment.state_value(tp)
                if state is not None and state.has_valid_position:
                    found[tp] = (state, state.position)
        return found

    def _note_passed(
        self,
        consumer: Any,
        before: Mapping[TP, tuple[Any, int]],
        moves: Mapping[TP, int],
        records: Mapping[Any, Any],
    ) -> None:
        """Where a read moved a partition's position past offsets that held no record for
        us: after its last record handed over (or from where it stood, with none), up to
        its new position. aiokafka moves a position so only past records it hands over
        and batches it skips (control batches: a transactional producer's markers, which
        a worker's last record before an idle spell always has after it). A partition
        sought or reassigned meanwhile is left out: its move was no read's."""
        after = self._positions(consumer, before)
        for tp, (state, position) in after.items():
            was = before.get(tp)
            if was is None or was[0] is not state or self._moves.get(tp) != moves.get(tp):
                continue
            got = records.get(tp)
            start = got[-1].offset + 1 if got else was[1]
            if start < position:
                self.passed[tp] = (start, position)

    def _watch_seeks(self, consumer: Any) -> None:
        """Count every seek of the Kafka consumer (`_moves`): they all go through its
        subscription state's `seek` (aiokafka's `seek`, `seek_to_committed`, and Faust's
        `seek`, which calls it from the event loop's thread)."""
        subscriptions = consumer._subscription
        if self._watched is subscriptions:
            return
        seek = subscriptions.seek
        moves = self._moves

        def seek_noted(tp: Any, offset: int) -> Any:
            moves[tp] = moves.get(tp, 0) + 1  # before the position changes
            return seek(tp, offset)

        subscriptions.seek = seek_noted
        self._watched = subscriptions

    async def seek_counted(self, partition: TP, offset: int) -> None:
        """Seek `partition` on this thread, counted (see `seeks`): aiokafka discards what it
        holds of it, and the records it hands over after are the seek's."""
        self._ensure_consumer().seek(partition, offset)
        self.seeks[partition] = self.seeks.get(partition, 0) + 1

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Every seek to the committed offsets (Faust's `perform_seek`: its recovery after
        an assignment, a rebalance's pause, a corrupt or stale fetch read again) calls
        this on the consumer thread: `seek_to_committed_or_start`."""
        committed: Mapping[TP, int] = await self.call_thread(self.seek_to_committed_or_start)
        return committed  # None for a partition never committed on, as aiokafka's

    async def seek_to_committed_or_start(self) -> Mapping[Any, int | None]:
        """aiokafka's `seek_to_committed`, and each partition it leaves where it stands (no
        committed offset, or 0: it seeks only to an offset above 0) sought to where a new
        worker starts it (Faust's `consumer_auto_offset_reset`, earliest by default). Its
        committed offsets, {} with nothing assigned (aiokafka asserts there is some).

        A read dropped (a corrupt fetch, a seek meanwhile, records fetched during a
        rebalance's pause) had moved such a partition's position past records never
        processed, and aiokafka's seek left it there: a worker whose group had not
        committed yet lost them for good (re-check)."""
        consumer = self._ensure_consumer()
        if not consumer.assignment():
            return {}
        committed: Mapping[Any, int | None] = await consumer.seek_to_committed()
        fresh = [tp for tp, offset in committed.items() if offset is None or offset <= 0]
        if fresh:
            for tp in fresh:
                self._moves[tp] = self._moves.get(tp, 0) + 1  # no read's move (`_note_passed`)
            reset = getattr(self.consumer.app.conf, "consumer_auto_offset_reset", "earliest")
            if reset == "latest":
                await consumer.seek_to_end(*fresh)
            else:
                await consumer.seek_to_beginning(*fresh)
        return committed

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; no public setter.
        consumer._fetch_max_wait_ms = cast("BatchConsumer", self.consumer).fetch_wait_ms
        return consumer

    def verify_event_path(self, now: float, tp: TP) -> None:
        """Faust's periodic check of a partition's path, for the topics of Faust's own
        streams only (task outcomes). Its stream and commit parts read a Faust stream's
        bookkeeping, which the batch loop does not keep: during any stall over five
        minutes (Redis down, say) they logged "Stream has not started processing" or
        "Has not committed" (367 ERROR lines in a 7-minute Redis outage) with advice to
        raise Faust timeouts. Its fetch part cannot fire with aiokafka 0.14: it takes the
        partition's last fetch (wall-clock ms) from the monotonic clock, a time always in
        the future (SRE drill). The batch loop's health is ours: /livez,
        moments_event_loop_stalled_seconds, MomentsPartitionNotProgressing."""
        if tp.topic in cast("BatchConsumer", self.consumer).hot_topics:
            return
        super().verify_event_path(now, tp)

    async def on_thread_stop(self) -> None:
        """Faust's stop of the Kafka consumer, bounded, and not undone by aiokafka's
        CancelledError from a fetch cut off while closing (aio-libs/aiokafka#647): raised
        here, it kept the thread from reporting its stop and the worker waited 60 s.
        Without the group's goodbye where the app says so (`BatchConsumer.leave_group`)."""
        consumer = self._consumer
        if consumer is not None and not cast("BatchConsumer", self.consumer).leave_group():
            stay_in_group(consumer)
        try:
            await asyncio.wait_for(super().on_thread_stop(), LAST_COMMIT_S)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled ourselves
            log.warning("the Kafka consumer closed with a fetch cut off; stopping anyway")
        except Exception as exc:  # a broker gone: leave without its goodbye
            log.warning(
                "the Kafka consumer did not close cleanly (%s: %s); stopping anyway",
                type(exc).__name__,
                exc,
            )


def stay_in_group(consumer: Any) -> None:
    """Close `consumer` (an AIOKafkaConsumer) without its LeaveGroup: the other members get
    its partitions once its session times out (missed heartbeats) instead of at once.

    For Tansu 0.6: a leader that leaves while the group is forming (a member joined, the
    leader had not joined again yet) stays the group's leader for good, and every other
    member joins and syncs again and again with no partition (docs/tansu.md). A member
    that only goes silent is dropped, and its leadership with it. aiokafka has no setting
    for this: its coordinator's `_maybe_leave_group` (on close, and when the consumer sat
    idle past `max_poll_interval_ms`) is replaced by the part of it that forgets the
    membership."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "reset_generation"):
        return  # not started, or no group

    async def forget_membership() -> None:
        coordinator.reset_generation()

    coordinator._maybe_leave_group = forget_membership
    log.info(
        "leaving the consumer group without LeaveGroup: its other members take this "
        "worker's partitions after its session times out (MOMENTS_LEAVE_GROUP_ON_STOP)"
    )


def _always() -> bool:
    return True


class BatchConsumer(faust_aiokafka.Consumer):
    hot_topics: frozenset[str] = frozenset()
    """Set by the app: the topics whose records go to `fetches`, not to Faust's streams."""
    marker_topics: frozenset[str] = frozenset()
    """Set by the app: the topics whose commits go past a transaction's markers
    (`commit_processed`): the hot topics and the task outcomes, read by Faust's stream."""
    fetch_wait_ms: int = FETCH_MAX_WAIT_MS
    """Set by the app (`MOMENTS_FETCH_WAIT_MS`): read when the Kafka consumer is made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetches: asyncio.Queue[Fetch] = asyncio.Queue(maxsize=QUEUED_FETCHES)
        self.epoch = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.processed: dict[TP, int] = {}
        """Hot partition -> next offset to read, once the batch before it is durable."""
        self._sought: dict[TP, int] = {}
        """Partition -> seeks of it asked (`seek`): its records taken from aiokafka with
        fewer (`Fetch.seeks`) are from before the last one, and dropped."""
        self._waiting: Counter[TP] = Counter()
        """Partitions with records fetched and not yet taken by the batch loop."""
        self.stopping = False
        """Set by `wait_empty` when the worker stops (not on a revocation): the batch loop
        finishes the batch in flight, marks its offsets for the last commit and takes no
        more (`BatchLoop.step`)."""
        self._commits = asyncio.Lock()
        """Held by each offset commit (`_commit_offsets`), so that commits end in the order
        they begin and none moves a committed offset back."""
        self.state_settled: Callable[[], Awaitable[None]] = _nothing_held
        """Set by the app (`Runtime.settled`): returns once no batch or window sweep chunk
        holds the state. The sweep runs on a timer, beside the batch loop: a revocation
        that waited for the loop alone let a chunk's changelog write land after the
        partition's next owner had restored it, or even after that owner's own writes."""
        self.held: dict[TP, int] = {}
        """Partition -> the offset its commits stop at (`hold`), for the consumer's life."""
        self.corrupt_read_seen: Callable[[], None] = _nothing_counted
        """Set by the app: counts each read `corrupt_read` takes (a metric)."""
        self.leave_group: Callable[[], bool] = _always
        """Set by the app (`MOMENTS_LEAVE_GROUP_ON_STOP`): asked when the consumer stops,
        whether it sends LeaveGroup (`stay_in_group`)."""

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def hold(self, offsets: Mapping[TP, int]) -> None:
        """Commit no offset of these partitions past the one given, whatever is
        acknowledged after (`moments.outcomebatches`): a batch of task outcomes that did
        not finish is acknowledged by Faust's `take_events` as the agent leaves it, and
        Faust's commits follow its acknowledgements. Kept while the consumer lives: the
        worker is stopping, and its next start reads the partitions from there."""
        for tp, offset in offsets.items():
            self.held[tp] = min(offset, self.held.get(tp, offset))

    def holds(self, tp: TP) -> bool:
        """True while records of `tp` are fetched but not yet taken: the partition is busy,
        not silent."""
        return self._waiting[tp] > 0

    async def take(self, max_records: int) -> Fetch:
        """The next fetch for the batch loop, with the fetches queued behind it while they
        add up to fewer than `max_records` records (the first is taken whatever its size).

        Taken together, not one each: a batch's writes cost ~40 ms however small it is
        (Redis and broker round trips), and at half load the bench's newest event was
        already ~0.35 s old when its batch started, queued behind smaller ones. Per
        partition the records stay in order. A fetch of a later epoch (a seek or a
        revocation happened) makes the ones before it stale: they are dropped."""
        fetch = await self.fetches.get()
        self._waiting.subtract(tp for tp, _ in fetch.records)
        fetch = _since_seeks(fetch, self._sought)
        count = _count(fetch)
        while count < max_records and not self.fetches.empty():
            more = self.fetches.get_nowait()
            self._waiting.subtract(tp for tp, _ in more.records)
            more = _since_seeks(more, self._sought)
            if more.epoch != fetch.epoch:
                fetch, count = more, _count(more)
            else:
                fetch, count = (
                    Fetch(fetch.epoch, fetch.records + more.records, NO_SEEKS),
                    count + _count(more),
                )
        return fetch

    async def seek(self, partition: TP, offset: int) -> None:
        """Seek one partition (the rewind guard's), as Faust's `seek` does but on the
        consumer's thread and counted, so that the records of it aiokafka handed over
        before are dropped (`take`): aiokafka discards only those it still holds. Which
        read took them before the seek cannot be told from here: a read waiting for data
        when the seek is made returns the seek's records, one that had them already
        returns the older ones."""
        thread = cast(BatchConsumerThread, self._thread)
        # Noted first: a fetch taken meanwhile from the queue is from before the seek.
        self._sought[partition] = thread.seeks.get(partition, 0) + 1
        try:
            await thread.call_thread(thread.seek_counted, partition, offset)
        except BaseException:
            # Not sought (the partition taken away meanwhile, say): left noted, every later
            # read of it would have been dropped as older than a seek never made.
            self._sought[partition] = thread.seeks.get(partition, 0)
            raise
        self._read_offset[partition] = offset if offset else None

    def invalidate(self) -> None:
        """Queued fetches are stale from now on (a seek or a revocation)."""
        self.epoch += 1
        self._drop_queued()

    def _drop_queued(self) -> None:
        while not self.fetches.empty():
            fetch = self.fetches.get_nowait()
            self._waiting.subtract(tp for tp, _ in fetch.records)

    async def perform_seek(self) -> None:
        """Faust's (through `BatchConsumerThread.seek_to_committed`), and what was fetched
        before it dropped."""
        await super().perform_seek()
        self.invalidate()
        self.processed.clear()

    async def seek_while_paused(self) -> None:
        """Records fetched while the flow is paused (a rebalance under way) are dropped and
        the partitions sought back to their committed offsets, as Faust's own loop does,
        and like it this survives a failed seek: the rebalance may have taken a partition
        away meanwhile (aiokafka: "No current assignment for partition"), which crashed
        the fetcher and stopped the worker when a second worker joined. Faust's recovery
        seeks the partitions it assigns once the rebalance is done."""
        try:
            await self.perform_seek()
        except Exception as exc:
            self.invalidate()
            log.warning(
                "seek to the committed offsets during a rebalance failed (%s: %s); the "
                "rebalance's own seek follows",
                type(exc).__name__,
                exc,
            )

    async def wait_empty(self) -> None:
        """On revocation or shutdown: drop what is queued, let the agents finish the events
        they hold and the batch loop its batch, commit, let a window sweep finish the chunk
        it holds (its records written before another worker restores the partitions);
        within `LAST_COMMIT_S` in all (at least a second each for the last two), so
        neither an agent that cannot finish nor a broker that is gone holds a shutdown
        past the orchestrator's grace period (uncommitted events are read again, and their
        tasks are not sent twice).

        A stop (the app stopping, its fetcher already stopped) is not a revocation: the
        partitions stay this worker's until it leaves the group, so the batch in flight
        is finished and its offsets committed here, and only what is queued is dropped.
        Invalidated as on a revocation, the batch loop dropped the finished batch's offsets
        and the next start read it all again (replays in the metrics, slow on a big one)."""
        if self.app.should_stop:
            self.stopping = True
            self._drop_queued()
        else:
            self.invalidate()
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._agents_done(), LAST_COMMIT_S)
        except TimeoutError:
            log.warning(
                "an agent still held an event after %g s (the outcomes agent waits until the "
                "worker has started: Redis or Kafka not up yet, see moments_dependency_up); "
                "going on without it: the event is read again",
                LAST_COMMIT_S,
            )
        await within(
            self._batch_committed(),
            max(1.0, LAST_COMMIT_S - (time.monotonic() - started)),
            "the last commit",
            "the events since the last commit will be read again",
            self.idle.is_set,
        )
        await self._sweep_settled(max(1.0, LAST_COMMIT_S - (time.monotonic() - started)))

    async def _sweep_settled(self, seconds: float) -> None:
        """Wait for a window sweep's chunk in flight (`state_settled`), up to `seconds`.
        One still waiting then (on Redis, say), or a batch the last commit's wait gave up
        on, sends no more records once it goes on: both check that their partitions are
        still held (`Runtime._publish`)."""
        try:
            await asyncio.wait_for(self.state_settled(), seconds)
        except TimeoutError:
            log.warning(
                "a batch or a window sweep still held the state after %g s (Redis or Kafka "
                "slow or gone: see moments_dependency_up); going on: it writes no more "
                "records of these partitions, their next owner reads or sweeps them again",
                seconds,
            )

    async def _agents_done(self) -> None:
        """Faust's own `wait_empty`, which waits for the events its agents hold, cannot be
        bounded: its wait for an acknowledgement swallows the cancellation `wait_for`
        sends, so an agent that never finished (the outcomes agent waiting for Redis) held
        a stopping worker for ever, deaf to SIGTERM. This one can be cancelled."""
        while True:
            self._clean_unacked_messages()
            if not self._unacked_messages:
                return
            await asyncio.sleep(0.05)

    async def _batch_committed(self) -> None:
        await self.commit_and_end_transactions()  # what the agents acknowledged
        await self.idle.wait()
        await self.commit_processed()

    async def commit_processed(self) -> None:
        """Commit the hot offsets whose batches are durable (Faust's bookkeeping included).

        Past the offsets that hold no record for us right after them (`passed`): a
        transactional producer's commit marker follows its last record, and the offset
        after that record, committed, left the group one short of the end for good on an
        idle partition: lag 1 and a committed offset that never moved, which paged
        MomentsPartitionNotProgressing (and every Kafka lag tool showed 1). So also for an
        assigned partition with nothing processed since its last commit (the marker read
        after a restart), and for the task outcomes, read by Faust's own stream: Faust
        commits up to the marker, this past it (Faust never commits below a commit)."""
        offsets: dict[TP, int] = {}
        passed = dict(getattr(self._thread, "passed", {}))  # the thread adds to it
        assigned = passed.keys() & self.assignment() if passed else set()
        for tp in self.processed.keys() | assigned:
            done = self._committed_offset.get(tp)
            offset = self.processed.get(tp, done)
            if offset is None:
                continue
            skip = passed.get(tp)
            if skip is not None and skip[0] == offset:
                offset = skip[1]
            if done is None or offset > done:
                offsets[tp] = offset
        if offsets:
            await self._commit_offsets(offsets)

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        """Faust's commit, one at a time and only forward: of `offsets`, those past the
        committed offset when this commit's turn comes. Faust's commit timer and the batch
        loop's (`commit_processed`, the task outcomes past a marker) both commit here; two
        at once, the older one (Faust's, up to the marker) finishing after the newer one
        (past it) wrote its offset last, and Faust's view of the committed offset, the
        broker's too, went back (the outcomes read again after a restart, lag 1 shown).
        None past a partition's `held` offset."""
        async with self._commits:
            held = self.held
            ahead = {}
            for tp, offset in offsets.items():
                if tp in held:
                    offset = min(offset, held[tp])
                done = self._committed_offset.get(tp)
                if done is None or offset > done:
                    ahead[tp] = offset
            if not ahead:
                return False
            return await super()._commit_offsets(ahead, start_new_transaction)

    async def corrupt_read(self, exc: BaseException, reads: int) -> None:
        """A read that failed aiokafka's check of a fetched batch (`CorruptRecordException`,
        "Invalid CRC - <partition>"), the `reads`-th in a row: read again from the
        committed offsets, after a pause, as a new worker would, up to `CORRUPT_READS`;
        then raised, with a note naming the fix; each counted (`corrupt_read_seen`:
        `moments_dependency_errors_total{dependency="kafka"}`). aiokafka raises it from
        the middle of a read and drops what it had taken of the partitions before it (their
        positions moved on): a seek to the committed offsets (`perform_seek`) reads those
        again too.
        Raised before, it stopped the worker at once, and a corrupt fetch (a batch
        damaged on its way, which a second read cures) took a restart and a rebalance.

        The seek looks the committed offsets up (the group's coordinator): a lookup that
        fails (the coordinator moving, a partition a rebalance under way took away) is
        named, counted and tried again after a longer pause, up to `CORRUPT_READS` tries;
        then raised with a note naming it. Nothing is read on meanwhile: the dropped read
        moved positions past records never processed. It was raised out of the fetch loop
        unnamed, a bare traceback, and the worker stopped."""
        self.corrupt_read_seen()
        if reads > CORRUPT_READS:
            exc.add_note(corrupt_batch_note(exc, reads - 1))
            log.error("%s", corrupt_batch_note(exc, reads - 1).removeprefix("moments: "))
            raise exc
        log.warning(
            "a fetched batch failed aiokafka's check (%s: %s); reading again from the "
            "committed offsets in %.0f s (%d of %d)",
            type(exc).__name__,
            exc,
            CORRUPT_PAUSE_S * reads,
            reads,
            CORRUPT_READS,
        )
        await self.seek_again(f"after a fetched batch failed aiokafka's check ({exc})", reads)

    async def seek_again(self, after: str, reads: int = 0) -> None:
        """Read again from the committed offsets (`perform_seek`; `after`: why, for the
        note), after a pause of `CORRUPT_PAUSE_S` times `reads`. Records were dropped
        before it and positions moved past them, so nothing is read on meanwhile: a lookup
        of the committed offsets that fails (the group's coordinator moving, a partition a
        rebalance under way took away) is named, counted and tried again after a longer
        pause, up to `CORRUPT_READS` tries; then raised with a note naming it. Raised
        out of the fetch loop unnamed, it was a bare traceback, and the worker stopped.
        Once a rebalance paused the flow, a failed lookup is left to the rebalance's own
        seek of the partitions it assigns, as `seek_while_paused` leaves it."""
        tries = 1
        while True:
            if reads:
                await asyncio.sleep(CORRUPT_PAUSE_S * reads)
            try:
                await self.perform_seek()
                return
            except Exception as failed:
                if self.should_stop or isinstance(failed, self.consumer_stopped_errors):
                    raise  # stopping: the fetch loop's own handling, no pauses
                self.invalidate()  # what was fetched before it is stale either way
                self.corrupt_read_seen()
                if not self.flow_active:  # a rebalance under way seeks what it assigns
                    log.warning(
                        "reading again from the committed offsets failed during a "
                        "rebalance (%s: %s); the rebalance's own seek follows",
                        type(failed).__name__,
                        failed,
                    )
                    return
                if tries >= CORRUPT_READS:
                    note = seek_failed_note(after, failed, tries)
                    failed.add_note(note)
                    log.error("%s", note.removeprefix("moments: "))
                    raise
                reads, tries = reads + 1, tries + 1
                log.warning(
                    "reading again from the committed offsets failed: looking them up "
                    "raised %s: %s; trying again in %.0f s (%d of %d)",
                    type(failed).__name__,
                    failed,
                    CORRUPT_PAUSE_S * reads,
                    tries,
                    CORRUPT_READS,
                )

    async def _drain_messages(self, fetcher: Any) -> None:
        # Faust's loop, with the hot topics taken out in bulk and without a
        # wait_first per message while the flow is not suspended.
        callback = self.callback
        hot_topics = self.hot_topics
        read_offset = self._read_offset
        buffered = self._buffered_partitions
        acks_for = self.app.topics.acks_enabled_for
        corrupt, corrupt_at = 0, 0.0
        try:
            while not (self.should_stop or fetcher.should_stop):
                epoch = self.epoch
                try:
                    records, active = await self._wait_next_records(1.0)
                except CorruptRecordException as exc:
                    now = time.monotonic()
                    corrupt = corrupt + 1 if now - corrupt_at < CORRUPT_SPELL_S else 1
                    corrupt_at = now
                    await self.corrupt_read(exc, corrupt)
                    continue
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.seek_while_paused()
                    continue
                hot: list[tuple[TP, list[Any]]] = []
                for tp, batch in records.items():
                    if active is not None and tp not in active and tp not in buffered:
                        continue
                    if tp.topic in hot_topics:
                        hot.append((tp, batch))
                        continue
                    for record in batch:
                        last = read_offset[tp]
                        if last is not None and record.offset < last:
                            continue
                        if last is not None and record.offset > last + 1 and acks_for(tp.topic):
                            # Offsets with no record before this one (transaction markers),
                            # noted for Faust's commits as its own loop does: two markers
                            # in a row (transactions ending together) stopped them for good.
                            await self._add_gap(tp, last + 1, record.offset - 1)
                        message = self._to_message(tp, record)
                        if self.suspend_flow.is_set():
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)
                        read_offset[tp] = record.offset
                if not hot:
                    continue
                if epoch != self.epoch:
                    # A seek happened while fetching: these may be stale or fresh; read
                    # them again from the committed offsets rather than guess.
                    await self.seek_again(STALE_FETCH)
                    continue
                self._waiting.update(tp for tp, _ in hot)
                try:
                    seeks = getattr(records, "seeks", NO_SEEKS)
                    await self.fetches.put(Fetch(epoch, hot, seeks))
                except BaseException:
                    self._waiting.subtract(tp for tp, _ in hot)
                    raise
                await asyncio.sleep(0)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer
