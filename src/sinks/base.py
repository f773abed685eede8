"""What the sinks need of a Kafka producer, and how they send a batch of records."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sinks.writewaits import CHECK_BROKER, SLOW_ACK_S, WRITE_WAITS, say_still_waiting

Headers = list[tuple[str, bytes | None]]
"""Kafka record headers: a header's value may be null. A list, as aiokafka takes them:
given a tuple its size check raises `TypeError: Expected list, got tuple`, and the
sinks published no task (commit 67af451, a tuple shared by the sinks)."""
Message = tuple[str, bytes | None, bytes | None, Headers | None]
"""A record to send: topic, key, value, headers."""


class Producer(Protocol):
    """The part of aiokafka's producer the sinks use."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]: ...


class BatchProducer(Protocol):
    """aiokafka's batch API: records appended to a batch built here, one future a batch."""

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Awaitable[Any]: ...


DELIVERY_TIMEOUT_S = 120.0
"""How long a write's acknowledgements are awaited (`acknowledged`) before the write is
a failed try, raised for `sinks.retry.with_retry` to count and retry: Kafka's own
`delivery.timeout.ms` default. aiokafka has no delivery timeout: an idempotent producer
retries a batch for as long as its partition has a leader (`Sender._can_retry` never
expires it), so a write whose broker keeps answering a retriable error (a topic deleted
while the producer's metadata still names a leader, too few in-sync replicas) hung with
no error at all: no `moments_topic_missing`, no `moments_dependency_up` 0. Above the
producer's `request_timeout_ms` (40 s), by which a plain producer expires a batch itself
with the broker's error, which says more than a timeout."""


@dataclass(frozen=True)
class Unanswered:
    """What the error of a write not acknowledged in time (`_unacknowledged`) tells its
    caller's reader after what happened: `then`, of a broker that did not answer; `gone`,
    of a topic it no longer has (empty: the caller says its fix itself)."""

    then: str
    gone: str = ""


ASK_AFRESH_S = 5.0
"""Longest the broker's metadata is waited for when it is asked whether a topic is still
there (`gone_topics`, from `_unacknowledged` and `sinks.retry.with_retry`): a broker that
answers does so in milliseconds. One that does not (frozen, its network cut) holds the
ask for aiokafka's request timeout, 40 s a node."""

ASKED_AFRESH = (
    "moments: the broker was asked afresh as the write's deadline passed, and did not say "
    "a topic of it was gone (or did not answer)"
)
"""The note (`add_note`) on `_unacknowledged`'s KafkaTimeoutError: `sinks.retry` asks
nothing more of the broker for it (`asked_afresh`)."""


def asked_afresh(exc: BaseException) -> bool:
    """Whether `exc` is a write not acknowledged in time whose topics the broker was asked
    about as it failed, none of them found gone (`ASKED_AFRESH`)."""
    return ASKED_AFRESH in getattr(exc, "__notes__", ())


RETRIED = Unanswered(then=f"tried again as a broker away; {CHECK_BROKER}")
"""The words of a writer that retries the write (`sinks.retry.with_retry`: the worker's
sinks, `moments simulate`), which holds a missing topic with its own fix."""

STOPPED = Unanswered(then=CHECK_BROKER)
"""The words of a command that stops on the failure and retries nothing (`moments state
seed`): what happened and the check, no "tried again"."""


async def produce_all(
    producer: Producer, messages: Sequence[Message], deadline_s: float | None = None
) -> None:
    """Send every (topic, key, value, headers) and wait for all acknowledgements, at most
    `deadline_s` (`acknowledged`)."""
    futures = [
        await producer.send(topic, value=value, key=key, headers=headers)
        for topic, key, value, headers in messages
    ]
    await acknowledged(producer, futures, {m[0] for m in messages}, deadline_s)


async def acknowledged(
    producer: object,
    futures: Sequence[Awaitable[Any]],
    topics: Collection[str],
    deadline_s: float | None = None,
    return_exceptions: bool = False,
    unanswered: Unanswered = RETRIED,
) -> list[Any]:
    """The acknowledgements of a write to `topics`, in order, as `asyncio.gather` gives
    them, but within `deadline_s`. Those still awaited then are cancelled (aiokafka
    leaves a future it finds done alone) and the write fails: with
    UnknownTopicOrPartitionError when the broker, asked afresh, no longer has one of
    `topics` (a topic deleted: `sinks.retry` counts it towards a missing topic), else
    with KafkaTimeoutError (a broker away or failing: retried as one). Cancelled, it
    cancels them all, as gather did. `deadline_s` None: `DELIVERY_TIMEOUT_S`.
    `unanswered`: what that error says for the caller, after what happened."""
    answers, late = await _within(producer, futures, topics, deadline_s, unanswered)
    if late is not None:
        raise late
    if not return_exceptions:
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
    return answers


async def acknowledged_each(
    producer: object,
    futures: Sequence[Awaitable[Any]],
    topics: Collection[str],
    deadline_s: float | None = None,
    unanswered: Unanswered = RETRIED,
) -> list[Any]:
    """Each acknowledgement of a write to `topics`, in order: its answer or its error, as
    `asyncio.gather(..., return_exceptions=True)` gives them, but within `deadline_s`
    (None: `DELIVERY_TIMEOUT_S`): those still awaited then are cancelled and answered
    with the error `acknowledged` raises (UnknownTopicOrPartitionError when the broker,
    asked afresh, no longer has one of `topics`, else KafkaTimeoutError), so a caller
    that keeps what went (a command's replay) knows which did, `unanswered` saying what
    it means to the caller. Cancelled, it cancels them all."""
    answers, _ = await _within(producer, futures, topics, deadline_s, unanswered)
    return answers


async def _within(
    producer: object,
    futures: Sequence[Awaitable[Any]],
    topics: Collection[str],
    deadline_s: float | None,
    unanswered: Unanswered,
) -> tuple[list[Any], Exception | None]:
    """`acknowledged_each`'s answers (each error retrieved: no "never retrieved" line), and
    the error of those still awaited at the deadline, cancelled (None: all came)."""
    waited = [asyncio.ensure_future(f) for f in futures]
    if not waited:
        return [], None
    if all(f.done() for f in waited):
        # Answered already (a producer that keeps what it is given: the backtest's): no
        # wait, whose timer and turns of the event loop were most of a write's work.
        return [f.exception() or f.result() for f in waited], None
    if deadline_s is None:
        deadline_s = DELIVERY_TIMEOUT_S
    waiting = WRITE_WAITS.begin()  # moments_kafka_write_wait_seconds
    try:
        slow_s = min(SLOW_ACK_S, deadline_s)
        _, pending = await asyncio.wait(waited, timeout=slow_s)
        if pending and deadline_s > slow_s:  # said now, not only at the deadline
            say_still_waiting(topics, len(pending), slow_s, deadline_s)
            _, pending = await asyncio.wait(waited, timeout=deadline_s - slow_s)
    except asyncio.CancelledError:
        for future in waited:
            future.cancel()
        raise
    finally:
        WRITE_WAITS.end(waiting)
    late: Exception | None = None
    if pending:
        for future in pending:
            future.cancel()
        late = await _unacknowledged(producer, topics, len(pending), deadline_s, unanswered)
    return [late if f in pending else (f.exception() or f.result()) for f in waited], late


async def gone_topics(producer: object, topics: Collection[str], wait_s: float) -> list[str]:
    """Which of `topics` the broker says it does not have, asked afresh through the
    producer's own client (aiokafka's `client.add_topic` and `force_metadata_update`);
    none when the producer has no such client or the broker does not answer within
    `wait_s`."""
    client = getattr(producer, "client", None)
    if client is None:
        return []
    for topic in topics:  # asked for, tracked or not (a write to it tracks it already)
        client.add_topic(topic)
    try:
        async with asyncio.timeout(wait_s):
            answered = await client.force_metadata_update()
    except (TimeoutError, OSError):
        return []
    except Exception as exc:  # aiokafka's errors: the broker away, not an answer
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            return []
        raise
    if not answered:
        return []
    return sorted(t for t in topics if client.cluster.partitions_for_topic(t) is None)


async def _unacknowledged(
    producer: object,
    topics: Collection[str],
    waiting: int,
    deadline_s: float,
    unanswered: Unanswered = RETRIED,
) -> Exception:
    """The error of a write with `waiting` acknowledgements still awaited at its deadline:
    what happened, then what it means to the caller and its fix (`unanswered`). It said
    "taken as the broker away" to every caller, which read oddly where nothing was
    retried (the dead-letter replay stops on it)."""
    from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

    said = f"{waiting} write(s) to {', '.join(sorted(topics))} not acknowledged in {deadline_s:g} s"
    # Within ASK_AFRESH_S, not the write's deadline: a broker that does not answer held
    # the ask for aiokafka's request timeout (40 s a node), added to each try's 120 s.
    gone = await gone_topics(producer, topics, ASK_AFRESH_S)
    error: Exception
    if gone:
        fix = f": {unanswered.gone}" if unanswered.gone else ""
        error = UnknownTopicOrPartitionError(
            f"{said}, and the broker no longer has {', '.join(gone)} (deleted?){fix}"
        )
    else:
        error = KafkaTimeoutError(
            f"{said}: the broker did not answer them in time (it is away, or answers them "
            "with an error the producer retries: a partition without a leader, too few "
            "in-sync replicas; an idempotent producer retries such a write without end); "
            f"{unanswered.then}"
        )
        error.add_note(ASKED_AFRESH)
    return error


async def produce_to_partitions(
    producer: BatchProducer,
    topic: str,
    records: Sequence[tuple[int, bytes, bytes | None]],
    headers: Sequence[list[tuple[str, bytes]]] | None = None,
    deadline_s: float | None = None,
    unanswered: Unanswered = RETRIED,
) -> dict[int, int]:
    """Send every (partition, key, value) to `topic` and wait for all acknowledgements;
    returns, per partition, the first offset of the last batch written there: every
    record up to it is durable, and it is never past what a broker reports as the
    partition's end (Tansu reports a partition's end as that offset plus one, so a
    store claiming more than it fails Faust's recovery check).

    In batches built here, not one `send` per record: a state changelog write is one
    record per subscriber of the batch, and `send`'s per-record future and queueing cost
    ~17 µs of CPU each against ~2.5 µs appended to a batch (4,000 records of 500 bytes on
    Tansu). Records keep their order within a partition. `headers`, when given, holds
    each record's headers, in the order of `records`. Acknowledged within `deadline_s`,
    or the write fails (`acknowledged`, in the words of `unanswered`)."""
    by_partition: dict[int, list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]] = {}
    none: list[tuple[str, bytes]] = []  # aiokafka's batch wants a list (and keeps none)
    for n, (partition, key, value) in enumerate(records):
        by_partition.setdefault(partition, []).append(
            (key, value, none if headers is None else headers[n])
        )
    sent: list[int] = []  # the partition of each batch sent
    futures = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value, extra in items:
            if batch.append(key=key, value=value, timestamp=None, headers=extra) is None:  # full
                sent.append(partition)
                futures.append(await _send_closed(producer, batch, topic, partition))
                batch = producer.create_batch()
                # a first record always fits
                batch.append(key=key, value=value, timestamp=None, headers=extra)
        sent.append(partition)
        futures.append(await _send_closed(producer, batch, topic, partition))
    last: dict[int, int] = {}
    answers = await acknowledged(producer, futures, (topic,), deadline_s, unanswered=unanswered)
    for partition, written in zip(sent, answers, strict=True):
        if written is not None:  # RecordMetadata: the batch's first offset
            last[partition] = max(last.get(partition, -1), written.offset)
    return last


async def _send_closed(producer: BatchProducer, batch: Any, topic: str, partition: int) -> Any:
    """A batch we filled ourselves goes out at once: closed, it does not wait out the
    producer's linger (left open, aiokafka holds it for `linger_ms` in case a `send` adds
    to it, and every batch of the worker waited so before its changelog was durable)."""
    batch.close()
    return await producer.send_batch(batch, topic, partition=partition)
