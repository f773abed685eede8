"""The dispatch producer, idempotent where the broker can do it.

`MOMENTS_IDEMPOTENT_PRODUCER` unset (auto) tries an idempotent producer first:
Apache Kafka grants a producer id and retried sends are not written twice.
A broker that cannot (Tansu answers InitProducerId with UnknownServerError; an
old or ACL-restricted Kafka answers UnsupportedVersion or an authorization error)
gets a plain producer instead, said once in the log. Tasks are deduplicated by
the Redis ledger either way; idempotence only removes broker-side duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from moments.connections import kafka_client_kwargs
from moments.exceptions import ConfigError
from moments.settings import Settings

log = logging.getLogger(__name__)

NO_IDEMPOTENCE: tuple[type[BaseException], ...] = (
    kafka_errors.UnknownError,  # Tansu: InitProducerId -> UnknownServerError
    kafka_errors.UnsupportedVersionError,  # brokers before InitProducerId (0.11)
    kafka_errors.ClusterAuthorizationFailedError,  # Kafka < 2.8 ACLs without IdempotentWrite
)
"""Errors from InitProducerId that mean "this broker will not give us a producer id"."""

ProducerFactory = Callable[..., AIOKafkaProducer]

TASKS_DEDUPLICATED = "tasks are still deduplicated by the Redis ledger"
"""What a plain producer means to the worker (and to a replay, whose events it reads):
a send retried may write a record twice, and the ledger still sends its task once."""

MAX_BATCH_BYTES = 256 * 1024
"""A producer batch per partition (aiokafka's default is 16 KiB). A batch's state
changelog (one record per subscriber, ~0.5 KB each) then goes in a few requests instead
of dozens in turn: 4,000 records took 106 ms in 16 KiB batches and 25-34 ms in these on
Tansu. Within Kafka's default `message.max.bytes` (1 MiB) and aiokafka's request limit."""
LINGER_MS = 0
"""No linger: the sinks append a whole batch's records before they await anything, so
they fill one producer batch per partition anyway, and a linger would only hold that
batch back (2 ms, once for a batch's tasks and once for its dead letters)."""


def producer_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments of the dispatch producer, security included, idempotence excluded."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "acks": "all",
        "linger_ms": LINGER_MS,
        "max_batch_size": MAX_BATCH_BYTES,
        "client_id": f"{settings.app_id}-dispatch",
        **kafka_client_kwargs(settings),
    }


async def start_producer(
    settings: Settings,
    factory: ProducerFactory = AIOKafkaProducer,
    without_idempotence: str = TASKS_DEDUPLICATED,
) -> AIOKafkaProducer:
    """A started dispatch producer. Connection errors propagate (the caller retries);
    a broker refusing idempotence is handled as `MOMENTS_IDEMPOTENT_PRODUCER` says.
    `without_idempotence`: what a plain producer means to the caller's records, said in
    the warning when the broker refuses a producer id (`moments state seed` writes state
    records, no task)."""
    wanted = settings.idempotent_producer
    kwargs = producer_kwargs(settings)
    if wanted is False:
        return await _started(factory(enable_idempotence=False, **kwargs))
    try:
        with _quiet_producer_id_error():
            producer = await _started(factory(enable_idempotence=True, **kwargs))
    except NO_IDEMPOTENCE as exc:
        if wanted:
            raise ConfigError(refused_message(settings, f"{type(exc).__name__}: {exc}")) from None
        log.warning(
            "idempotent producer off: Kafka %s refused a producer id (%s); %s. Set "
            "MOMENTS_IDEMPOTENT_PRODUCER=false to skip this check",
            settings.kafka_bootstrap,
            type(exc).__name__,
            without_idempotence,
        )
        return await _started(factory(enable_idempotence=False, **kwargs))
    log.info("idempotent producer on")
    return producer


async def idempotence_refused(
    settings: Settings, factory: ProducerFactory = AIOKafkaProducer
) -> str | None:
    """Why the broker refuses an idempotent producer (`"UnknownError: ..."`), None when it
    grants one. Connection errors propagate. Start-up and `moments check` ask it when
    MOMENTS_IDEMPOTENT_PRODUCER is true, before Faust starts: refused inside the worker,
    it crashed the worker after it had joined the group, and every restart made the
    group rebalance twice (ops review)."""
    try:
        with _quiet_producer_id_error():
            producer = await _started(factory(enable_idempotence=True, **producer_kwargs(settings)))
    except NO_IDEMPOTENCE as exc:
        return f"{type(exc).__name__}: {exc}"
    await producer.stop()
    return None


def is_idempotent(producer: AIOKafkaProducer) -> bool:
    """Whether `producer` (started by `start_producer`) got a producer id. aiokafka keeps
    no public flag: an idempotent producer is the one with a transaction manager."""
    return getattr(producer, "_txn_manager", None) is not None


def leaves_group(setting: bool | None, idempotent: bool | None) -> bool:
    """Whether a stopping worker sends LeaveGroup (`moments.consumer.stay_in_group`):
    `MOMENTS_LEAVE_GROUP_ON_STOP` as set; unset, only where the broker granted the
    dispatch producer a producer id (`idempotent`: True on Apache Kafka, False on Tansu,
    None before the producer started). Tansu can be told by that refusal, and a leave it
    mishandles wedges the group, while a stop without one only waits out the session."""
    if setting is not None:
        return setting
    return idempotent is True


def refused_message(settings: Settings, why: str) -> str:
    return (
        f"Kafka {settings.kafka_bootstrap} refused an idempotent producer ({why}); unset "
        "MOMENTS_IDEMPOTENT_PRODUCER (auto) or set it to false for this broker"
    )


@contextlib.contextmanager
def _quiet_producer_id_error() -> Iterator[None]:
    """Without aiokafka's ERROR line for a refused producer id: the warning or error that
    follows says what it means and what to do; alone, it read as a fault at every start
    on Tansu."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unexpected error during InitProducerIdRequest")

    sender = logging.getLogger("aiokafka.producer.sender")
    sender.addFilter(keep)
    try:
        yield
    finally:
        sender.removeFilter(keep)


async def _started(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


STOP_S = 10.0
"""Longest a one-off command waits for its producer to stop (`stop_within`)."""


WRITE_FAILED_FIX = "once `moments check` says the broker answers"
"""When a one-off command whose write failed (`moments.exceptions.KafkaWriteError`) can
look at what it wrote, or write it again."""


def error_said(exc: BaseException) -> str:
    """`exc` as one line names it: `KafkaConnectionError: Connection at ... closed`.
    aiokafka's errors put their class name in their text already (`Name: ...`, or `Name`
    alone), which a message writing both repeated."""
    text, name = str(exc), type(exc).__name__
    if text.startswith(name):
        return text
    return f"{name}: {text}" if text else name


LEFT_UNSENT = "the writes it still retried"
"""What `stop_within` says its producer was left with, when its caller says nothing more."""


async def stop_within(
    producer: AIOKafkaProducer, seconds: float | None = None, unsent: str = LEFT_UNSENT
) -> bool:
    """Stop `producer`, waiting at most `seconds`; False when it did not stop in time. A
    write not acknowledged in time (`sinks.base.acknowledged`) is still retried by the
    producer, and its stop waits for it: without end, an idempotent producer's (aiokafka
    never expires such a batch while its partition has a leader), a plain producer's
    until the batch expires (`request_timeout_ms`, 40 s, counted from when it was made,
    and a request sent to a broker that does not answer waits as long again), so a
    command that reported the failure, or was stopped (Ctrl-C) while it waited, hung on
    its way out with no word. `unsent`: what the producer held then, in the caller's
    words, for the warning that says it was left behind (may or may not be written).
    `seconds` None: `STOP_S`."""
    if seconds is None:
        seconds = STOP_S
    try:
        await asyncio.wait_for(producer.stop(), seconds)
    except TimeoutError:
        log.warning(
            "the Kafka producer did not stop within %g s: left behind with %s, which the "
            "broker has not acknowledged (it may or may not be written)",
            seconds,
            unsent,
        )
        return False
    return True
