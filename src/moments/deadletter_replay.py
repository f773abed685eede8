"""Reading the dead-letter topic, and sending back to their input topics the dead letters
the current code accepts (`moments deadletter show` and `replay`).

When the rejection was ours (a validation a later version relaxes) the events are not
lost: their bytes wait in the dead-letter topic. A replay re-validates each one with the
worker's own `decode`, sends the ones that pass to their original topic with their
original key, value and headers (a `moments.replayed-from` header says where from), and leaves
the ones that would be rejected again where they are, counted by reason.

A dead letter is replayed once: after the broker acknowledged a batch, its dead-letter
coordinates go into a Redis set, and a later replay skips them (`again` overrides). The
detector's own guard against a re-delivered event keeps only the latest few event ids
per subscriber, so it could not stop a second replay a day later from counting the same
top-up twice. For the same reason an original record dead-lettered twice (read again by
a worker) is sent back once (`FirstCopies` in a run, `replayed_origin_key` across runs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis

from moments.connections import redis_client
from moments.deadletters import DeadLetterEntry, Selection, Summary, parse_entry, revalidate
from moments.decoding import deletion_form
from moments.models import InputEvent
from moments.producer import start_producer, stop_within
from moments.records import DeadLetter, Header, RejectReason
from moments.refusals import allowed_ahead
from moments.settings import Settings
from moments.topiclayout import topic_types as input_topic_types
from moments.topicread import Progress, TopicReader, topic_consumer
from sinks.base import Producer, Unanswered, acknowledged_each
from sinks.relevance import FACTS_TTL_S, FactsStore, erasures
from sinks.writewaits import CHECK_BROKER

REPLAYED_HEADER = "moments.replayed-from"
"""On a replayed record: `<dead-letter topic>:<partition>:<offset>` it came from."""


def replayed_key(settings: Settings, partition: int) -> str:
    """The Redis set of offsets of one dead-letter partition already replayed."""
    return f"{settings.redis_prefix}deadletter-replayed:{partition}"


def replayed_origin_key(settings: Settings, topic: str, partition: int) -> str:
    """The Redis set of offsets of one input partition whose records went back: a copy
    of one (`FirstCopies`) that a later replay selects alone is not sent again."""
    return f"{settings.redis_prefix}deadletter-replayed-origin:{topic}:{partition}"


async def dead_letters(
    settings: Settings, progress: Progress | None = None
) -> AsyncIterator[list[DeadLetterEntry]]:
    """Every record of the dead-letter topic as of now, in fetched batches, parsed."""
    topic = settings.topic("deadletter")
    missing = (
        "no worker of this configuration has run against this broker; check "
        "MOMENTS_TOPIC_PREFIX and MOMENTS_KAFKA_BOOTSTRAP"
    )
    async with topic_consumer(settings, topic, "deadletter", missing) as (consumer, partitions):
        reader = TopicReader(consumer, topic, progress)
        async for records in reader.batches(partitions):
            yield [
                parse_entry(r.partition, r.offset, r.key, r.value, r.headers, r.timestamp)
                for r in records
            ]


async def summarize(
    settings: Settings,
    selection: Selection,
    progress: Progress | None = None,
    each: Callable[[DeadLetterEntry], None] | None = None,
) -> Summary:
    """The selected dead letters counted by topic and reason, and how many of them are
    copies of an original record counted before (`FirstCopies`: its coordinates, as a
    replay keeps them); `each` is called with every one as it is read (the topic may hold
    millions: nothing else is kept)."""
    summary = Summary()
    originals = FirstCopies()
    async for batch in dead_letters(settings, progress):
        selected = [entry for entry in batch if selection.matches(entry)]
        for entry in selected:
            summary.add(entry)
            if each is not None:
                each(entry)
        summary.copies += len(originals.split(selected)[1])
    return summary


@dataclass
class ReplayReport:
    replayed: Summary = field(default_factory=Summary)
    """Sent back (or, in a dry run, that would be), by origin topic and first reason."""
    still_rejected: Summary = field(default_factory=Summary)
    """Rejected by the current code too, by origin topic and the reason now."""
    already: int = 0
    """Selected and accepted, but replayed before: skipped."""
    older_than_lateness: int = 0
    """Of the replayed, events dated before now minus MOMENTS_LATENESS_SECONDS: a worker
    applies one only if its subscriber sent nothing newer by more than that since."""
    not_selected: int = 0
    copies: int = 0
    """Accepted, but another dead letter of the same original record (its topic,
    partition and offset) came before in the run: not sent, remembered as replayed."""


Origin = tuple[str, int, int]
"""The original record's topic, partition and offset (`__dlq.errors.*`)."""


class FirstCopies:
    """Each original record once. A worker that reads a record again (it ended without
    its last commit, or a rebalance kept a batch from being written) dead-letters it
    again: the same bytes, other coordinates in the dead-letter topic. Both were sent
    back, and the detector's guard against a re-delivered event (the latest 2 event ids
    of a subscriber's top-ups) missed the second copy of a subscriber's third."""

    def __init__(self) -> None:
        self._seen: set[Origin] = set()

    def split(
        self, entries: Sequence[DeadLetterEntry]
    ) -> tuple[list[DeadLetterEntry], list[DeadLetterEntry]]:
        """(the entries whose original comes first here, the later copies). A dead letter
        without its origin's partition and offset (written by another tool) is its own."""
        first: list[DeadLetterEntry] = []
        copies: list[DeadLetterEntry] = []
        for entry in entries:
            origin = origin_of(entry)
            if origin is None:
                first.append(entry)
            elif origin in self._seen:
                copies.append(entry)
            else:
                self._seen.add(origin)
                first.append(entry)
        return first, copies


def origin_of(entry: DeadLetterEntry) -> Origin | None:
    if entry.origin_partition is None or entry.origin_offset is None:
        return None
    return (entry.origin_topic, entry.origin_partition, entry.origin_offset)


async def replay(
    settings: Settings,
    selection: Selection,
    *,
    dry_run: bool = False,
    again: bool = False,
    progress: Progress | None = None,
) -> ReplayReport:
    """Send the selected dead letters the current code accepts back to their topics."""
    report = ReplayReport()
    topic_types = input_topic_types(settings)  # what a worker reads, as it reads it
    old_before = time.time() - settings.lateness_seconds
    old: set[str] = set()  # accepted events of the batch older than the lateness
    events: dict[str, InputEvent] = {}  # the batch's accepted events, by coordinates
    originals = FirstCopies()
    redis = redis_client(settings)
    producer = None if dry_run else await start_producer(settings)
    try:
        async for batch in dead_letters(settings, progress):
            accepted: list[DeadLetterEntry] = []
            for entry in batch:
                if not selection.matches(entry):
                    report.not_selected += 1
                    continue
                verdict = revalidate(entry, topic_types)
                if isinstance(verdict, DeadLetter | str):
                    outcomes = settings.topic("task_outcomes")
                    report.still_rejected.add(_as_rejected_now(entry, verdict, outcomes))
                    continue
                why = still_out_of_time(entry, verdict, settings.lateness_seconds)
                if why is None and verdict is not None and before_erasures(verdict):
                    why = BEYOND_ERASURES_MESSAGE
                if why is not None:
                    due = None  # a late one never comes due
                    if entry.reason == RejectReason.FUTURE.value and verdict is not None:
                        due = replayable_from(verdict, settings.lateness_seconds)
                    report.still_rejected.add(replace(entry, message=why), due)
                    continue
                accepted.append(entry)
                if verdict is not None:
                    events[entry.coordinates] = verdict
                    if verdict.occurred_at.timestamp() < old_before:
                        old.add(entry.coordinates)
            # An erased subscriber's event: sent back, a worker drops it, but the topic
            # would hold the erased person's data again until its retention.
            gone = await _of_erased(redis, settings, accepted, events)
            for entry in accepted:
                if entry.coordinates in gone:
                    report.still_rejected.add(replace(entry, message=ERASED_MESSAGE))
            accepted = [e for e in accepted if e.coordinates not in gone]
            events.clear()
            # A copy of an original met before (sent now or in an earlier replay) is not
            # sent, even with `again`; it is remembered with the entries sent, so that a
            # later replay selecting it alone (`--since`) skips it too.
            accepted, copies = originals.split(accepted)
            fresh = accepted if again else await _not_replayed(redis, settings, accepted)
            report.already += len(accepted) - len(fresh)
            if not again:  # a copy of a record an earlier replay sent (of its first copy)
                fresh, sent_before = await _not_sent_before(redis, settings, fresh)
                copies += sent_before
            report.copies += len(copies)
            failure: BaseException | None = None
            if fresh and producer is not None:
                fresh, failure = await _send(producer, settings, fresh)
                if failure is not None:
                    # A copy is remembered with its first copy only once that went.
                    copies = []
            if (fresh or copies) and producer is not None:
                await _remember(redis, settings, [*fresh, *copies])
            for entry in fresh:
                report.replayed.add(entry)
                report.older_than_lateness += entry.coordinates in old
            old.clear()
            if failure is not None:
                raise failure
    finally:
        if producer is not None:
            # Those not acknowledged were not remembered: the next replay sends them again.
            await stop_within(producer, unsent="the records it was sending back")
        with contextlib.suppress(Exception):
            await redis.aclose()
    return report


ERASED_MESSAGE = (
    "its subscriber was erased after it (a profile tombstone on the profile topic): not "
    "replayed, as a worker drops it (docs/security.md, 'Forgetting a subscriber')"
)


ERASURES_REACH_S = FACTS_TTL_S - 86400
"""How far back the erasure marks surely reach, from now: a mark is kept `FACTS_TTL_S`
(90 days) from its tombstone, which came after every event of the subscriber it drops;
a day less for the clocks of this host, Redis and the workers."""
BEYOND_ERASURES_MESSAGE = (
    "dated more than 89 days ago, before the erasure marks reach (kept 90 days): whether "
    "its subscriber was erased since cannot be told, so it is not replayed; send it again "
    "yourself only if its subscriber is known not to be erased (docs/security.md, "
    "'Forgetting a subscriber')"
)


def before_erasures(event: InputEvent, now: float | None = None) -> bool:
    """Whether `event` is dated before the erasure marks surely reach (`ERASURES_REACH_S`):
    a tombstone of its subscriber may have come and its mark expired since. A worker drops
    such an event all the same (a record of the number's new holder remembers the
    erasure, or the lateness refuses it), but sent back it would sit on the input topic
    with the erased person's data until the topic's retention."""
    at = time.time() if now is None else now
    return event.occurred_at.timestamp() < at - ERASURES_REACH_S


async def _of_erased(
    redis: Redis,
    settings: Settings,
    entries: Sequence[DeadLetterEntry],
    events: Mapping[str, InputEvent],
) -> set[str]:
    """The coordinates of those of `entries` whose event is dated at or before its
    subscriber's erasure (the dispatch stores' `forgotten` mark, kept 90 days), to the
    second, as a worker compares them (`Detector.process`): one pipeline."""
    subs = list(
        dict.fromkeys(
            events[e.coordinates].subscriber_id for e in entries if e.coordinates in events
        )
    )
    if not subs:
        return set()
    facts = await FactsStore(redis, settings.redis_prefix).get_many(subs)
    erased = {sub: int(when) for sub, when in erasures(subs, facts).items()}
    gone: set[str] = set()
    for entry in entries:
        event = events.get(entry.coordinates)
        if event is None or (mark := erased.get(event.subscriber_id)) is None:
            continue
        if int(event.occurred_at.timestamp()) <= mark:
            gone.add(entry.coordinates)
    return gone


def still_out_of_time(
    entry: DeadLetterEntry, event: InputEvent | None, lateness_s: int
) -> str | None:
    """Why a record refused for its time would be refused again, or None: a late event
    only comes later when sent back; a future one is taken once its time has come (as
    far ahead as the worker allows: `allowed_ahead`, which the lateness can shorten)."""
    if entry.reason == RejectReason.LATE.value:
        return "late, and later still if sent back: not replayed"
    ahead = allowed_ahead(lateness_s)
    if (
        entry.reason == RejectReason.FUTURE.value
        and event is not None
        and event.occurred_at.timestamp() > time.time() + ahead
    ):
        return "still dated ahead of the clock: replay it once its time has come"
    return None


def replayable_from(event: InputEvent, lateness_s: int) -> dt.datetime:
    """The first whole second from which a worker takes `event` (and a replay sends it):
    its time less how far ahead a worker allows (`allowed_ahead`). A replay that said only
    "once its time has come" left the operator to work that out from the dead letter's
    own message, of each one."""
    at = math.ceil(event.occurred_at.timestamp()) - allowed_ahead(lateness_s)
    return dt.datetime.fromtimestamp(at, dt.UTC)


def not_an_input_message(origin_topic: str, outcomes_topic: str) -> str:
    """Why a dead letter of a topic no worker reads events from stays where it is."""
    if origin_topic == outcomes_topic:  # "not an input topic of this configuration" read
        # as a setting to fix, where the consumer is the one to send it again
        return (
            f"{origin_topic}: task outcomes are not replayed; the dispatch consumer sends "
            "the outcome again, fixed (docs/consuming-tasks.md, 'What the detector checks')"
        )
    return (
        f"{origin_topic} is not an input topic of this configuration (a topic renamed "
        "since? check MOMENTS_TOPIC_PREFIX and MOMENTS_TOPICS__*)"
    )


def _as_rejected_now(
    entry: DeadLetterEntry, verdict: DeadLetter | str, outcomes_topic: str
) -> DeadLetterEntry:
    """The entry with the reason and message the current code gives."""
    if isinstance(verdict, DeadLetter):
        return replace(entry, reason=verdict.reason.value, message=verdict.message)
    message = not_an_input_message(entry.origin_topic, outcomes_topic)
    return replace(entry, reason=verdict, message=message)


async def _not_replayed(
    redis: Redis, settings: Settings, entries: Sequence[DeadLetterEntry]
) -> list[DeadLetterEntry]:
    if not entries:
        return []
    by_partition: dict[int, list[DeadLetterEntry]] = {}
    for entry in entries:
        by_partition.setdefault(entry.partition, []).append(entry)
    fresh: list[DeadLetterEntry] = []
    for partition, group in by_partition.items():
        seen = await redis.smismember(
            replayed_key(settings, partition), [str(e.offset) for e in group]
        )
        fresh.extend(e for e, done in zip(group, seen, strict=True) if not done)
    return fresh


async def _not_sent_before(
    redis: Redis, settings: Settings, entries: Sequence[DeadLetterEntry]
) -> tuple[list[DeadLetterEntry], list[DeadLetterEntry]]:
    """(the entries whose original record no earlier replay sent, in their order; the
    others)."""
    by_origin: dict[tuple[str, int], list[DeadLetterEntry]] = {}
    for entry in entries:
        if entry.origin_partition is not None and entry.origin_offset is not None:
            by_origin.setdefault((entry.origin_topic, entry.origin_partition), []).append(entry)
    sent: set[str] = set()
    for (topic, partition), group in by_origin.items():
        seen = await redis.smismember(
            replayed_origin_key(settings, topic, partition),
            [str(e.origin_offset) for e in group],
        )
        sent.update(e.coordinates for e, done in zip(group, seen, strict=True) if done)
    if not sent:
        return list(entries), []
    return (
        [e for e in entries if e.coordinates not in sent],
        [e for e in entries if e.coordinates in sent],
    )


async def _send(
    producer: Producer, settings: Settings, entries: Sequence[DeadLetterEntry]
) -> tuple[list[DeadLetterEntry], BaseException | None]:
    """Send every entry back to its topic: (those the broker acknowledged, the first
    failure). Every send is awaited, so that a failure (the broker gone in the middle of
    a batch) leaves the others known: the whole batch was left unmarked, and the next
    replay sent those that had gone back a second time (a top-up counted twice)."""
    source = settings.topic("deadletter")
    pending: list[tuple[DeadLetterEntry, Awaitable[Any]]] = []
    failure: BaseException | None = None
    for e in entries:
        try:
            sending = await producer.send(
                e.origin_topic,
                value=e.value,
                key=e.key,
                headers=replay_headers(e, source),
                timestamp_ms=replay_timestamp_ms(e),
            )
        except Exception as exc:  # not queued: neither it nor the rest is sent
            failure = exc
            break
        pending.append((e, sending))
    # Within the delivery deadline: an idempotent producer retries a batch to a topic
    # deleted under it without end, and the replay hung with no word.
    topics = {e.origin_topic for e, _ in pending}
    acks = await acknowledged_each(
        producer, [sending for _, sending in pending], topics, unanswered=REPLAY_UNANSWERED
    )
    sent: list[DeadLetterEntry] = []
    for (entry, _), ack in zip(pending, acks, strict=True):
        if isinstance(ack, BaseException):
            failure = failure or ack
        else:
            sent.append(entry)
    return sent, failure


REPLAY_UNANSWERED = Unanswered(
    then=CHECK_BROKER,
    gone=(
        "create it again as the topic it was (its partition count; docs/operations.md, "
        '"Against a managed Kafka")'
    ),
)
"""What a send not acknowledged in time means to a replay (`_send`), which stops on it
and is run again: no "tried again as a broker away", as the worker's sinks say."""


def replay_timestamp_ms(entry: DeadLetterEntry) -> int | None:
    """The Kafka timestamp a replayed record is sent with: a profile deletion's own (the
    time its subscriber was erased, `__dlq.errors.original.timestamp`), None for the
    others (the producer's clock: a worker reads an event's time from its value). A
    misplaced tombstone sent back dated by the replay, days later, moved the erasure
    to then: the number's next holder's events of the days between, read after it,
    were dropped as the erased person's, and their tasks waiting in the deferral queue
    with them."""
    if entry.original_timestamp is None or deletion_form(entry.value) is None:
        return None
    return round(entry.original_timestamp.timestamp() * 1000)


def replay_headers(entry: DeadLetterEntry, source: str) -> list[Header]:
    """The original record's headers, and where it is replayed from (an earlier
    `REPLAYED_HEADER` replaced: a record refused again and replayed again says the last)."""
    kept = [(k, v) for k, v in entry.headers if k != REPLAYED_HEADER]
    return [*kept, (REPLAYED_HEADER, f"{source}:{entry.coordinates}".encode())]


async def _remember(redis: Redis, settings: Settings, entries: Sequence[DeadLetterEntry]) -> None:
    """Marks the entries replayed, and their original records sent, for as long as the
    task ledger remembers a task."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition in {e.partition for e in entries}:
            key = replayed_key(settings, partition)
            pipe.sadd(key, *(str(e.offset) for e in entries if e.partition == partition))
            pipe.expire(key, settings.ledger_ttl_seconds)
        origins: dict[str, set[str]] = {}
        for entry in entries:
            if (origin := origin_of(entry)) is not None:
                key = replayed_origin_key(settings, origin[0], origin[1])
                origins.setdefault(key, set()).add(str(origin[2]))
        for key, offsets in origins.items():
            pipe.sadd(key, *offsets)
            pipe.expire(key, settings.ledger_ttl_seconds)
        await pipe.execute()
