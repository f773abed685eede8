"""Retry a call to Redis or Kafka with exponential back-off, visible in metrics and logs.

An unreachable dependency never crashes the worker and is never swallowed: the
batch waits (its offsets are not committed) until the call goes through.

An error that waiting cannot fix is not an outage and is raised at once, with a note
naming the fix: a bug (aiokafka's `TypeError: Expected list, got tuple` for headers
given as a tuple) and a Kafka refusal (a record too large for its topic, an ACL refusing
the write, a broker without a request's version). Every aiokafka error used to be
retried, and such a refusal held every partition for good, reported as a broker away
(`moments_dependency_up` 0). Raised out of the batch loop or the outcomes agent
(`moments.outcomebatches`), it stops the worker before the batch's offsets are
committed: restarted, the worker reads the batch again, so nothing is lost
(docs/operations.md, "The worker stops: not an outage").
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from moments.exceptions import RedisClusterError
from moments.logthrottle import RepeatThrottle
from sinks.base import ASK_AFRESH_S, asked_afresh, gone_topics
from sinks.kafkacodes import described
from sinks.metrics import Dependency, Metrics

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)


@functools.cache  # imported when first needed, then kept: called for every Redis call
def _retryable() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import (
        MasterDownError,
        OutOfMemoryError,
        ReadOnlyError,
        TryAgainError,
    )
    from redis.exceptions import TimeoutError as RedisTimeoutError

    # Replies of a Redis that is there but cannot serve now: a failover (a replica still
    # read-only, the master down), memory full until keys expire, a cluster slot moving.
    states = (MasterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError)
    return (*RETRYABLE, RedisConnectionError, RedisTimeoutError, *states)


@functools.cache
def _kafka_away() -> tuple[type[BaseException], ...]:
    """aiokafka errors of a broker away, busy or failing over that aiokafka does not mark
    `retriable`; retried like those that it marks."""
    from aiokafka import errors as k

    return (
        k.KafkaTimeoutError,  # a send not acknowledged in request_timeout_ms: the broker paused
        k.KafkaUnavailableError,
        k.BrokerNotAvailableError,
        k.ReplicaNotAvailableError,
        # Code 13, NETWORK_EXCEPTION in Kafka's protocol ("the server disconnected before
        # a response was received"; aiokafka names it after an older meaning): a broker
        # lost a connection on the request's way (a forward to the controller). Kafka's
        # own clients retry it.
        k.StaleLeaderEpochCodeError,
        # The runtime stopped the producer under a retried call: the worker is stopping,
        # and its stop cancels the call (raised, it made a clean stop a crash).
        k.ProducerClosed,
    )


SENDER_FAILED = "Unexpected error during batch delivery"
"""The bare KafkaError of an aiokafka producer whose sender task failed (an error inside
aiokafka: aio-libs/aiokafka#907). Every send after it raises it again (a copy of it, kept
by the producer's accumulator), so waiting never ends it: retried, it held every
partition for good, reported as the broker away. A restart starts a new producer."""


def producer_failed(exc: BaseException) -> bool:
    """Whether `exc` is `SENDER_FAILED`: the producer, not the broker, stopped."""
    from aiokafka.errors import KafkaError

    return type(exc) is KafkaError and exc.args[:1] == (SENDER_FAILED,)


def kafka_outage(exc: BaseException) -> bool:
    """Whether an aiokafka error is a broker away or busy, which waiting cures: marked
    `retriable` by aiokafka (a connection lost, no leader, not enough replicas, a request
    timed out) or by Kafka (`sinks.kafkacodes.RETRIABLE`: a produce request corrupted on
    its way, CORRUPT_MESSAGE, which aiokafka does not retry), one of `_kafka_away`, code
    -1 (UNKNOWN_SERVER_ERROR: a broker's own failure, Tansu's storage), or aiokafka's
    bare KafkaError ("Unable to get cluster metadata over all known brokers") unless it
    says the producer's sender failed (`SENDER_FAILED`). Not a refusal of what was sent,
    nor a code aiokafka did not know that Kafka does not mark retriable (INVALID_RECORD,
    87: `sinks.kafkacodes`), which was retried for ever as code -1."""
    from aiokafka.errors import BrokerResponseError, KafkaError, UnknownError

    from sinks.kafkacodes import RETRIABLE

    if not isinstance(exc, KafkaError) or producer_failed(exc):
        return False
    if isinstance(exc, BrokerResponseError) and exc.errno in RETRIABLE:
        return True
    return (
        bool(exc.retriable)
        or type(exc) in (KafkaError, UnknownError)
        or isinstance(exc, _kafka_away())
    )


def retried(exc: BaseException) -> bool:
    """Whether `with_retry` backs off and calls again after `exc`: a dependency away or
    busy, a Redis refusing a running worker's login, or one in cluster mode (found by
    `moments.connections.probe_redis` after a preflight that did not reach Redis).
    Anything else (a bug, a Kafka refusal) is raised at once."""
    from aiokafka.errors import KafkaError

    if isinstance(exc, _refused_login()):
        return True  # Redis changed under a running worker: waited out (`_refused_login`)
    if isinstance(exc, RedisClusterError):
        return True  # found once the worker runs: waited out, the log line names the fix
    if isinstance(exc, KafkaError):
        return kafka_outage(exc)
    return isinstance(exc, _retryable()) or _not_now(exc)


@functools.cache
def _kafka_fixes() -> tuple[tuple[tuple[type[BaseException], ...], str], ...]:
    from aiokafka import errors as k

    return (
        (
            (k.RecordTooLargeError, k.MessageSizeTooLargeError, k.RecordListTooLargeError),
            "a record over the producer's max_request_size (1 MiB) or its topic's "
            "max.message.bytes: raise the topic's max.message.bytes (kafka-configs "
            "--alter --entity-type topics), or report what made a record that large",
        ),
        (
            (
                k.TopicAuthorizationFailedError,
                k.ClusterAuthorizationFailedError,
                k.GroupAuthorizationFailedError,
                k.TransactionalIdAuthorizationFailed,
            ),
            "the worker's Kafka principal may not do this: grant it Write on the output "
            "topics and the state changelog (docs/security.md)",
        ),
        (
            (
                k.AuthenticationFailedError,
                k.AuthenticationMethodNotSupported,
                k.SaslAuthenticationFailed,
                k.UnsupportedSaslMechanismError,
                k.IllegalSaslStateError,
            ),
            "the broker refused the worker's login: check MOMENTS_KAFKA_SASL_* and "
            "MOMENTS_KAFKA_SECURITY_PROTOCOL (moments check says which)",
        ),
        (
            (
                k.UnsupportedVersionError,
                k.UnsupportedForMessageFormatError,
                k.IncompatibleBrokerVersion,
                k.UnrecognizedBrokerVersion,
                k.UnsupportedCodecError,
            ),
            "the broker does not support a request or format the producer uses: check "
            "the broker's version and the topic's message.format.version",
        ),
        (
            (
                k.OutOfOrderSequenceNumber,
                k.DuplicateSequenceNumber,
                k.UnknownProducerId,
                k.InvalidProducerEpoch,
                k.ProducerFenced,
            ),
            "the broker lost this idempotent producer's sequence: a restart starts a new "
            "producer (MOMENTS_IDEMPOTENT_PRODUCER=false turns idempotence off)",
        ),
    )


BUGS: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,  # serialization errors too (pydantic's ValidationError, UnicodeError)
    AttributeError,
    LookupError,
    AssertionError,
    NameError,
    NotImplementedError,
    ArithmeticError,
)
"""Errors of the code itself, not of a dependency: what the producer raised given a
tuple of headers where aiokafka wants a list (`TypeError: Expected list, got tuple`)."""


def not_retried_note(exc: BaseException, dependency: Dependency, what: str) -> str | None:
    """Why `exc` was raised rather than retried, and what fixes it (for its traceback);
    None for an error the caller expects (the runtime stopped, say)."""
    from aiokafka.errors import KafkaError
    from redis.exceptions import ResponseError

    head = f"moments: not retried while {what}: not a {dependency.value} outage"
    if producer_failed(exc):
        return (
            f"{head}: aiokafka's producer stopped sending (its sender task failed: its "
            "log says why, after 'Unexpected error in sender routine'), and every send "
            "now fails alike; the restart starts a new producer. Report the error above"
        )
    if isinstance(exc, KafkaError):
        coded = described(exc)
        if coded is not None:
            return f"{head}: the broker answered {coded}"
        for kinds, fix in _kafka_fixes():
            if isinstance(exc, kinds):
                return f"{head}, and waiting will not fix it; {fix}"
        return (
            f"{head}: Kafka (the broker or aiokafka) refused the request "
            f"({type(exc).__name__}), and waiting will not fix it; its error says what"
        )
    if isinstance(exc, ResponseError):
        return f"{head}: Redis refused the command; its reply says why"
    missing = missing_in_aiokafka(exc)
    if missing is not None:
        return f"{head}: {missing}, and waiting will not fix it"
    if unknown_partition(exc):
        return f"{head}: {FEWER_PARTITIONS}, and waiting will not fix it"
    if isinstance(exc, BUGS):
        return (
            f"{head}: a bug in moments, and waiting will not fix it; report it with this traceback"
        )
    return None


def missing_in_aiokafka(exc: BaseException) -> str | None:
    """What aiokafka's NotImplementedError means, which is no bug of moments':
    `Support for ProduceRequest v3 has not yet been added` (no version of a request that
    both the broker and aiokafka speak) or `Zstd codec is not available` (a topic
    compressed with a codec whose Python library is not installed)."""
    if not isinstance(exc, NotImplementedError):
        return None
    said = str(exc)
    if said.startswith("Support for ") and said.endswith("has not yet been added"):
        request = said.removeprefix("Support for ").split(" ", 1)[0]
        return (
            f"the broker does not support a version of {request} that aiokafka "
            f"speaks ({said}, the broker's lowest): the broker is too old or too new for "
            "this aiokafka, or a Kafka-compatible broker without that version. Check the "
            "broker's version (and that MOMENTS_KAFKA_BOOTSTRAP points at the intended "
            "one), then upgrade it or the moments release; aiokafka negotiates versions "
            "itself and ignores its api_version setting since 0.13, so it cannot be pinned"
        )
    if said.endswith("codec is not available"):
        return (
            f"{said}: a topic holds records compressed with a codec this install cannot "
            "read or write; install cramjam (aiokafka's snappy, lz4 and zstd codecs) in "
            "the worker's environment, or have the producers use gzip"
        )
    return None


FEWER_PARTITIONS = (
    "the topic has no such partition (aiokafka's `Unrecognized partition`): it has fewer "
    "partitions than MOMENTS_PARTITIONS, most likely deleted under the worker and made "
    "again by a broker that creates topics on use, with its own count "
    "(auto.create.topics.enable and num.partitions; Tansu makes 4). Delete it and create it "
    "with MOMENTS_PARTITIONS partitions (the state changelog compacted: docs/operations.md, "
    '"MomentsTopicMissing"), then restart the worker'
)
"""What `not_retried_note` says of `unknown_partition`: no bug of moments', though it is an
AssertionError."""


def unknown_partition(exc: BaseException) -> bool:
    """Whether `exc` is aiokafka's check that a write's chosen partition is in the topic's
    metadata (`AIOKafkaProducer._partition`, `send_batch` to the state changelog, or a
    `send` with a partition: the cooldown returns)."""
    return isinstance(exc, AssertionError) and str(exc) == "Unrecognized partition"


_PIPELINE_ERROR = " of pipeline caused error: "
"""What redis-py puts before a pipeline's first error reply (`Command # 1 (HGETALL ...)
of pipeline caused error: BUSY ...`)."""
_NOT_NOW = ("BUSY ", "MISCONF ", "NOREPLICAS ")
"""Replies of a Redis that will serve once its state changes, which redis-py gives no
class of their own (a plain ResponseError): `BUSY`, another client's script running past
the busy threshold (5 s by default); `MISCONF`, writes refused while Redis cannot persist
(its disk full, its AOF or snapshot failing); `NOREPLICAS`, writes refused while fewer
replicas than `min-replicas-to-write` answer."""


def _not_now(exc: BaseException) -> bool:
    """One of the `_NOT_NOW` replies, told by its first word, after the command's number
    when a pipeline (the stores' plain reads and deletes) raised it."""
    from redis.exceptions import ResponseError

    if not isinstance(exc, ResponseError):
        return False
    reply = str(exc)
    return (reply.partition(_PIPELINE_ERROR)[2] or reply).startswith(_NOT_NOW)


@functools.cache
def _refused_login() -> tuple[type[BaseException], ...]:
    """Redis refusing the worker's login (redis-py files it under ConnectionError) or its
    rights on a command. At start-up `moments.connections.preflight` stops the worker on
    them, naming the variable: the settings are wrong. Once it runs they worked, so Redis
    changed under it (a rotated password, an ACL user edited): it waits, as for a Redis
    away, instead of crashing with a traceback, and a password file is read again at each
    new connection (`moments.redislogin`)."""
    from redis.exceptions import (
        AuthenticationError,
        AuthenticationWrongNumberOfArgsError,
        NoPermissionError,
    )

    return (AuthenticationError, AuthenticationWrongNumberOfArgsError, NoPermissionError)


MISSING_TOPIC_ATTEMPTS = 5
"""Answers of UNKNOWN_TOPIC_OR_PARTITION in a row after which a topic `with_retry` was told
of (`missing_topic`) is taken as missing, not as a broker away. Kafka marks the code
retriable (a topic just made has no leaders for a moment), and aiokafka asks for a
topic's metadata for up to its request timeout before it gives up on it, so five in a
row are minutes of a topic the broker does not have."""


def unknown_topic(exc: BaseException) -> bool:
    """Whether `exc` is the broker saying it has no such topic (UNKNOWN_TOPIC_OR_PARTITION,
    code 3, or UNKNOWN_TOPIC_ID, 100)."""
    from aiokafka.errors import BrokerResponseError

    return isinstance(exc, BrokerResponseError) and exc.errno in (3, 100)


def maybe_gone(exc: BaseException) -> bool:
    """Whether `exc`, from a write, may be a broker answering for a topic deleted under the
    producer rather than a broker away: UNKNOWN_TOPIC_OR_PARTITION itself, or what a plain
    producer's in-flight batch fails with once the topic is gone (NOT_LEADER_OR_FOLLOWER,
    LEADER_NOT_AVAILABLE, REQUEST_TIMED_OUT: the broker no longer leads the partition) and
    a KafkaTimeoutError (aiokafka's wait for a topic's metadata; a write not acknowledged
    in time, `sinks.base.acknowledged`, whose own ask `with_retry` does not repeat)."""
    from aiokafka.errors import BrokerResponseError, KafkaTimeoutError

    if unknown_topic(exc) or isinstance(exc, KafkaTimeoutError):
        return True
    return isinstance(exc, BrokerResponseError) and exc.errno in (5, 6, 7)


RECREATE_TOPIC = (
    "create it again: restart a worker (it creates the topics it writes as it starts, where "
    'its Kafka principal may create topics), or create it as docs/operations.md, "Against a '
    'managed Kafka", says'
)
"""The fix of a topic found missing, for `missing_topic_note` and `_say_held`."""


def missing_topic_note(topic: str, what: str, times: int) -> str:
    """The fix of a topic `with_retry` found missing (`MISSING_TOPIC_ATTEMPTS`)."""
    return (
        f"moments: not retried while {what}: the topic {topic} is missing on the broker "
        f"(UNKNOWN_TOPIC_OR_PARTITION {times} times in a row: deleted after the worker "
        "started?), not a Kafka outage, and waiting will not bring it back; "
        f"{RECREATE_TOPIC}"
    )


held_log = logging.getLogger("sinks.missingtopics")
HELD_THROTTLE = RepeatThrottle(by_first_arg=True)
"""A held write's line (`_say_held`) once per 30 s for each topic, with a count of the
lines held back: each held call (a batch's, the outcomes agent's, the re-drive timer's)
tries again every few seconds."""
held_log.addFilter(HELD_THROTTLE)


REFUSED_LOGIN_HELP = (
    "Redis refused the worker's login or its rights while it ran (its password or ACL user "
    "changed?): give Redis's new password to the worker (MOMENTS_REDIS_PASSWORD_FILE is read "
    "again at each new connection; MOMENTS_REDIS_PASSWORD and MOMENTS_REDIS_USERNAME take a "
    "restart) or put the user's rights back; `moments check` tries the login"
)


async def with_retry(
    call: Callable[[], Awaitable[T]],
    dependency: Dependency,
    metrics: Metrics,
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    log_refusal: bool = True,
    missing_topic: str | None = None,
    needed_topic: str | None = None,
    topic_fix: str = RECREATE_TOPIC,
    producer: object | None = None,
) -> T:
    """Await `call()` until it succeeds; back off between failures of a dependency away
    or busy (`retried`; forever: the caller decides when to give up by cancelling). Any
    other error is raised at once, noted with what fixes it (`not_retried_note`).
    `missing_topic`: the topic `call` writes, made as the worker starts (a side topic): a
    broker that answers it is unknown `MISSING_TOPIC_ATTEMPTS` times in a row has lost it
    (deleted after the start), and that error is raised, noted with its fix
    (`missing_topic_note`), as a refusal is: retried, it was a broker away for ever.
    `needed_topic`: the topic `call` writes that its batch cannot go on without (the
    tasks, the dead letters): answered unknown as often in a row, it is still retried (the
    batch waits, its offsets not committed: nothing is lost), but as a missing topic, not
    a broker away: `moments_dependency_up` 1, not counted in
    `moments_dependency_errors_total`, the call counted in `moments_topic_missing{topic}`
    while it is held, and a line naming the topic and its fix (`_say_held`, throttled).
    `topic_fix`: how to make `needed_topic` again, for that line (the state changelog's
    differs from an output topic's: `moments.runtime.changelog_fix`).
    `producer`: the producer `call` writes `missing_topic` or `needed_topic` through. A
    write failing as the topic gone may fail otherwise (`maybe_gone`: a plain producer's
    batch in flight fails as NOT_LEADER_OR_FOLLOWER after its 40 s, which reset the count,
    and each later try waited 40 s for the topic's metadata: a needed topic was reported
    missing after about 4 minutes). Then the broker is asked afresh through it
    (`sinks.base.gone_topics`): a needed topic it no longer has is held at once, a missing
    topic's answer counts as one in a row instead of starting the count again.
    `log_refusal=False`: the caller logs a Kafka refusal itself, the note included (what
    it publishes is owed: `sinks.steps.note_owed_refusal`, `TimerSteps`); logged here too,
    each refusal made two ERROR lines, and a batch's one an unthrottled line per batch."""
    refused = _refused_login()
    delay = first_delay
    attempt = 0
    told_login = False  # a refused login's fix is logged at its first, whatever the attempt
    up = metrics.up_of[dependency]
    topic = missing_topic or needed_topic
    unknown = 0  # the topic answered unknown, in a row
    held: str | None = None  # the topic counted in moments_topic_missing (`needed_topic`)
    missed = False  # held at some attempt: its recovery is the topic's, not the broker's
    try:
        while True:
            try:
                value = await call()
            except Exception as exc:
                unknown = await _unknown_count(exc, unknown, topic, producer, bool(needed_topic))
                if missing_topic and unknown >= MISSING_TOPIC_ATTEMPTS:
                    up.set(1)  # the broker answered: no outage
                    _say_missing(exc, missing_topic, what, unknown, log_refusal)
                    raise
                if needed_topic and unknown >= MISSING_TOPIC_ATTEMPTS:
                    if held is None:
                        metrics.topic_missing.labels(needed_topic).inc()
                        held, missed = needed_topic, True
                    up.set(1)  # the broker answered: no outage
                    attempt += 1
                    _say_held(needed_topic, what, unknown, delay, topic_fix)
                    await asyncio.sleep(delay)
                    delay = min(max_delay, delay * 2)
                    continue
                if held is not None:  # another error: the broker's, said as such below
                    metrics.topic_missing.labels(held).dec()
                    held = None
                if not retried(exc):
                    _say_not_retried(exc, dependency, what, log_refusal)
                    raise
                login = isinstance(exc, refused)
                attempt += 1
                metrics.dependency_errors.labels(dependency.value).inc()
                up.set(0)
                loud = attempt in (1, 10) or attempt % 100 == 0 or (login and not told_login)
                told_login = told_login or login
                level = logging.WARNING if loud else logging.DEBUG
                log.log(
                    level,
                    "%s %s while %s (attempt %d, retrying in %.1fs): %s: %s%s",
                    dependency.value,
                    "refused" if isinstance(exc, RedisClusterError) else "unavailable",
                    what,
                    attempt,
                    delay,
                    type(exc).__name__,
                    exc,
                    f"; {REFUSED_LOGIN_HELP}" if login else "",
                )
                await asyncio.sleep(delay)
                delay = min(max_delay, delay * 2)
                continue
            if missed:
                log.warning(
                    "the topic %s is there again after %d failed attempts while %s",
                    needed_topic,
                    attempt,
                    what,
                )
            elif attempt:
                log.warning(
                    "%s is back after %d failed attempts while %s",
                    dependency.value,
                    attempt,
                    what,
                )
            up.set(1)
            return value
    finally:
        if held is not None:  # gone through, or cancelled (the worker stopping, a rebalance)
            metrics.topic_missing.labels(held).dec()


async def _unknown_count(
    exc: Exception, unknown: int, topic: str | None, producer: object | None, needed: bool
) -> int:
    """The answers of `topic` unknown in a row, `exc` counted (`with_retry`, `producer`)."""
    if topic is None:
        return 0
    if asked_afresh(exc):  # as the write failed (`sinks.base._unacknowledged`): none gone
        return 0  # (or no answer, which a second ask would wait for once more)
    asked = producer is not None and maybe_gone(exc) and (needed or not unknown_topic(exc))
    if asked and await gone_topics(producer, (topic,), ASK_AFRESH_S):
        return max(unknown + 1, MISSING_TOPIC_ATTEMPTS) if needed else unknown + 1
    return unknown + 1 if unknown_topic(exc) else 0


def _say_not_retried(
    exc: Exception, dependency: Dependency, what: str, log_refusal: bool = True
) -> None:
    """A note on `exc` (in its traceback, wherever it is logged) saying why it was not
    retried and what fixes it; a Kafka refusal is logged here too, with that note, as
    nothing else says it is not an outage (unless `log_refusal` is False: its caller does)."""
    from aiokafka.errors import KafkaError

    note = not_retried_note(exc, dependency, what)
    if note is None or note in getattr(exc, "__notes__", ()):  # an outer retry's too
        return
    exc.add_note(note)
    if log_refusal and isinstance(exc, KafkaError):
        log.error(  # aiokafka's errors say their class: "RecordTooLargeError: ..."
            "%s refused while %s: %s (%s)",
            dependency.value,
            what,
            exc,
            note.removeprefix("moments: "),
        )


def _say_missing(exc: Exception, topic: str, what: str, times: int, log_refusal: bool) -> None:
    """`_say_not_retried` for a topic found missing (`missing_topic_note`)."""
    note = missing_topic_note(topic, what, times)
    exc.add_note(note)
    if log_refusal:
        log.error("%s (%s)", exc, note.removeprefix("moments: "))


def _say_held(topic: str, what: str, times: int, delay: float, fix: str = RECREATE_TOPIC) -> None:
    """The line of a write held on a missing `needed_topic`, throttled per topic
    (`HELD_THROTTLE`): logged as a broker away, it sent ops to look at a broker that
    answers."""
    held_log.error(
        "%s: the topic is missing on the broker while %s (UNKNOWN_TOPIC_OR_PARTITION %d "
        "times in a row: deleted after the worker started?), not a Kafka outage; the batch "
        "waits, its offsets not committed (nothing is lost), tried again in %.1fs until the "
        "topic is there (moments_topic_missing); %s",
        topic,
        what,
        times,
        delay,
        fix,
    )


class Retrying(Protocol):
    """A dependency's calls, each retried (`with_retry`) and named for the log: what the
    sink's collaborators are given to call its stores with."""

    def __call__(self, call: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]: ...


def unretried(call: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
    """A `Retrying` for stores that cannot be away: the backtest's, in its own memory
    (`sinks.memory`). The call itself: no back-off, no `moments_dependency_up` set at
    every call, and an error is raised at once. Through `with_retry`, each of the store
    calls of a decision cost a coroutine and a gauge's set (a third of a million in a
    backtest of 300k events), and an OSError of a store in memory, taken for Redis
    away, was retried for ever: the backtest hung with a warning about Redis."""
    return call()
