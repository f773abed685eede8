"""An error that waiting cannot fix is not retried as a broker outage (sinks.retry).

Every aiokafka error was retried with back-off for ever: a task too large for its topic,
an ACL refusing the write, a broker without a request's version held every partition
for good while `moments_dependency_up{dependency="kafka"}` said the broker was away.
Such an error, and a bug (the `TypeError` aiokafka raises for headers given as a tuple,
commit 67af451), is raised at once with a note naming the fix; a broker away or busy
is still retried."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import types
from collections.abc import Awaitable
from typing import Any

import pytest
from aiokafka import errors as k
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from redis.exceptions import AuthenticationError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

import sinks.dispatch
import sinks.retry
from moments.records import DeadLetter, RawRecord, RejectReason
from sinks.base import produce_all
from sinks.deadletter import DeadLetterSink
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry
from tests.integration.dispatch.conftest import task

from .fakes import FakeProducer, Sent, acknowledged

NOW = dt.datetime.now(dt.UTC)


class RetriedForeverError(Exception):
    """What the fake back-off raises once a call was retried `BACK_OFFS` times: the
    retry would have gone on for ever."""


BACK_OFFS = 5


class BackOffs:
    """`sinks.retry`'s asyncio, its sleeps counted and not slept."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) >= BACK_OFFS:
            raise RetriedForeverError(f"retried {len(self.delays)} times")


@pytest.fixture
def back_offs(monkeypatch: pytest.MonkeyPatch) -> BackOffs:
    fake = BackOffs()
    monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    return fake


class FailingProducer(FakeProducer):
    """aiokafka's producer as the sinks use it: each send checks its record as aiokafka
    does (`estimate_size_in_bytes`: headers must be a list), then fails with the next of
    `errors` (at the send, or `in_ack` in its acknowledgement) until they run out."""

    def __init__(self, *errors: BaseException, in_ack: bool = False) -> None:
        self.errors = list(errors)
        self.in_ack = in_ack
        self.sends = 0
        self.sent: list[tuple[str, bytes | None]] = []

    async def take(self, record: Sent) -> Awaitable[Any]:
        self.sends += 1
        DefaultRecordBatchBuilder.estimate_size_in_bytes(
            record.key, record.value, record.headers or []
        )
        if self.errors:
            error = self.errors.pop(0)
            if not self.in_ack:
                raise error
            return acknowledged(error)
        self.sent.append((record.topic, record.value))
        return acknowledged()


def _sink(producer: FailingProducer, metrics: Metrics) -> TaskSink:
    return TaskSink(producer, "moments.tasks", memory_stores(), metrics)


def _kafka_up(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("moments_dependency_up", {"dependency": "kafka"})


def _kafka_errors(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(
        "moments_dependency_errors_total", {"dependency": "kafka"}
    )


REFUSALS: list[tuple[type[k.KafkaError], str]] = [
    (k.RecordTooLargeError, "max.message.bytes"),
    (k.MessageSizeTooLargeError, "max.message.bytes"),
    (k.TopicAuthorizationFailedError, "grant it Write"),
    (k.UnsupportedVersionError, "the broker's version"),
    (k.OutOfOrderSequenceNumber, "a restart starts a new producer"),
    (k.InvalidTopicError, "refused the request (InvalidTopicError)"),
]


class TestARefusalIsNotAnOutage:
    @pytest.mark.parametrize("in_ack", [False, True], ids=["at-send", "in-ack"])
    @pytest.mark.parametrize(("error", "fix"), REFUSALS, ids=[e.__name__ for e, _ in REFUSALS])
    async def test_the_task_sink_raises_it_at_once_naming_the_fix(
        self,
        back_offs: BackOffs,
        caplog: pytest.LogCaptureFixture,
        error: type[k.KafkaError],
        fix: str,
        in_ack: bool,
    ) -> None:
        """Retried for ever before: `RetriedForeverError` came out instead."""
        # Refused every time, as a refusal is: the old retry never got past it.
        producer = FailingProducer(*(error("refused") for _ in range(BACK_OFFS)), in_ack=in_ack)
        metrics = Metrics()
        with pytest.raises(error) as raised:
            await _sink(producer, metrics).dispatch([task("t1", deliver_after=NOW)])
        assert back_offs.delays == []
        assert producer.sends == 1
        notes = " ".join(getattr(raised.value, "__notes__", ()))
        assert "not retried while publishing tasks: not a kafka outage" in notes
        assert fix in notes
        # The broker answered: it is not said to be down, nor is the refusal a failed call.
        assert _kafka_up(metrics) != 0
        assert not _kafka_errors(metrics)
        said = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(said) == 1
        line = said[0].getMessage()
        assert line.startswith(f"kafka refused while publishing tasks: {raised.value} (")
        assert error.__name__ in line
        assert fix in line

    async def test_a_dead_letter_refused_by_an_acl_stops_the_flush(
        self, back_offs: BackOffs
    ) -> None:
        """The dead-letter sink sends a letter refused for its size again without its
        value; any other refusal was retried for ever."""
        refusals = (k.TopicAuthorizationFailedError("dlq") for _ in range(BACK_OFFS))
        producer = FailingProducer(*refusals, in_ack=True)
        sink = DeadLetterSink(producer, "dlq", Metrics())
        record = RawRecord("telecom.topup", 3, 1842, b"13800138000", b"{", 1_764_900_000_000)
        sink.add(DeadLetter(record, "topup", RejectReason.INVALID_JSON, "JSONDecodeError", "x"))
        with pytest.raises(k.TopicAuthorizationFailedError) as raised:
            await sink.flush()
        assert back_offs.delays == []
        assert "grant it Write" in " ".join(raised.value.__notes__)


SENDER_FAILED = "Unexpected error during batch delivery"
"""aiokafka's words (`aiokafka/producer/sender.py`), written out: the test holds the
retry to aiokafka's text, not to its own constant."""


class TestAFailedProducerIsNotAnOutage:
    @pytest.mark.parametrize("in_ack", [False, True], ids=["at-send", "in-ack"])
    async def test_the_task_sink_raises_it_at_once_saying_a_restart_fixes_it(
        self, back_offs: BackOffs, in_ack: bool
    ) -> None:
        """aiokafka's producer whose sender task failed (aio-libs/aiokafka#907) fails
        every send with the same bare KafkaError: retried as the broker away, it held
        every partition for good (`RetriedForeverError` came out)."""
        dead = [k.KafkaError(SENDER_FAILED) for _ in range(BACK_OFFS)]
        producer = FailingProducer(*dead, in_ack=in_ack)
        metrics = Metrics()
        with pytest.raises(k.KafkaError, match="Unexpected error during batch") as raised:
            await _sink(producer, metrics).dispatch([task("t1", deliver_after=NOW)])
        assert back_offs.delays == []
        notes = " ".join(raised.value.__notes__)
        assert "not retried while publishing tasks" in notes
        assert "the restart starts a new producer" in notes
        assert _kafka_up(metrics) != 0

    def test_aiokafkas_copy_of_it_is_told_too(self) -> None:
        # What the producer's accumulator raises for each send after the failure.
        failed = k.KafkaError(SENDER_FAILED)
        assert not sinks.retry.retried(copy.copy(failed))


class TestABugIsNotAnOutage:
    async def test_headers_as_a_tuple_raise_aiokafkas_type_error_with_a_note(
        self, back_offs: BackOffs, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Commit 67af451's headers: aiokafka's `TypeError: Expected list, got tuple`
        comes out of the sink, once, saying it is a bug and not an outage."""
        producer = FailingProducer()
        sink = _sink(producer, Metrics())

        async def with_tuple_headers(p: Any, messages: Any) -> None:
            # What mypy refuses now that `Headers` is a list (aiokafka's type): on purpose.
            tuples = [(t, key, v, tuple(h or ())) for t, key, v, h in messages]
            await produce_all(p, tuples)  # type: ignore[arg-type]

        monkeypatch.setattr(sinks.dispatch, "produce_all", with_tuple_headers)
        with pytest.raises(TypeError, match="Expected list, got tuple") as raised:
            await sink.dispatch([task("t1", deliver_after=NOW)])
        assert back_offs.delays == []
        assert producer.sends == 1
        assert "a bug in moments" in " ".join(raised.value.__notes__)

    async def test_the_sinks_give_aiokafka_headers_it_takes(self) -> None:
        """The real sink's records pass aiokafka's own size check (the check that raised
        for 67af451's tuple)."""
        producer = FailingProducer()
        await _sink(producer, Metrics()).dispatch([task("t1", deliver_after=NOW)])
        assert [topic for topic, _ in producer.sent] == ["moments.tasks"]

    async def test_a_note_is_added_once_through_nested_retries(self) -> None:
        metrics = Metrics()

        async def fails() -> None:
            raise ValueError("bad")

        async def outer() -> None:
            await with_retry(fails, Dependency.KAFKA, metrics, "inner")

        with pytest.raises(ValueError, match="bad") as raised:
            await with_retry(outer, Dependency.KAFKA, metrics, "inner")
        assert len(raised.value.__notes__) == 1


OUTAGES: list[BaseException] = [
    k.KafkaConnectionError("Connection at 127.0.0.1:9092 closed"),
    k.KafkaTimeoutError(),
    k.RequestTimedOutError(),
    k.NotLeaderForPartitionError(),
    k.LeaderNotAvailableError(),
    k.NotEnoughReplicasError(),
    k.UnknownTopicOrPartitionError(),
    k.NodeNotReadyError(),
    k.UnknownError(),
    k.KafkaError("Unable to get cluster metadata over all known brokers"),
]


class TestAnOutageIsStillRetried:
    @pytest.mark.parametrize("in_ack", [False, True], ids=["at-send", "in-ack"])
    @pytest.mark.parametrize("error", OUTAGES, ids=[type(e).__name__ for e in OUTAGES])
    async def test_the_task_goes_out_once_the_broker_answers(
        self, back_offs: BackOffs, error: BaseException, in_ack: bool
    ) -> None:
        producer = FailingProducer(error, error, in_ack=in_ack)
        metrics = Metrics()
        await _sink(producer, metrics).dispatch([task("t1", deliver_after=NOW)])
        assert back_offs.delays == [0.1, 0.2]
        assert [topic for topic, _ in producer.sent] == ["moments.tasks"]
        assert _kafka_errors(metrics) == 2
        assert _kafka_up(metrics) == 1


@pytest.mark.parametrize(
    ("error", "is_retried"),
    [
        (k.KafkaConnectionError(), True),
        (k.KafkaTimeoutError(), True),
        (k.ProducerClosed(), True),  # the runtime stopping: its stop cancels the call
        # Code 13 is NETWORK_EXCEPTION in Kafka's protocol, which Kafka's clients retry
        (k.StaleLeaderEpochCodeError(), True),
        (k.KafkaError("Unable to get cluster metadata over all known brokers"), True),
        (k.RecordTooLargeError(), False),
        (k.UnsupportedVersionError(), False),
        (k.SaslAuthenticationFailed(), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (RedisConnectionError(), True),
        (ReadOnlyError(), True),
        (ResponseError("BUSY Redis is busy running a script"), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
        (AuthenticationError(), True),  # a running worker's login refused: waited out
        (TypeError("Expected list, got tuple"), False),
        (ValueError(), False),
        (AttributeError(), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_what_is_retried(error: BaseException, is_retried: bool) -> None:
    assert sinks.retry.retried(error) is is_retried
