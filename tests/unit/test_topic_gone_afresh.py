"""A write to a topic deleted under a plain producer is reported missing at its first failure.

A plain producer (MOMENTS_IDEMPOTENT_PRODUCER=false, or a broker granting no producer id)
expires its batch in flight after its 40 s request timeout with the broker's last answer,
NOT_LEADER_OR_FOLLOWER: `with_retry` read that as a broker away and started the count of
UNKNOWN_TOPIC_OR_PARTITION answers again, and each later try waited 40 s for the topic's
metadata before answering unknown: the tasks topic was reported missing
(`moments_topic_missing`, the `sinks.missingtopics` line) about 4 minutes after its
deletion, Kafka reading down meanwhile. Now such a failure has the broker asked afresh
(`sinks.base.gone_topics`, through the producer's client): a topic it no longer has is
held as missing at once. Tansu creates a deleted topic again on a produce, so the
broker's answers are simulated."""

from __future__ import annotations

import pytest
from aiokafka import errors as k

from moments.records import DeadLetter, RawRecord, RejectReason
from sinks.deadletter import DeadLetterSink
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Dependency, Metrics
from sinks.retry import MISSING_TOPIC_ATTEMPTS, with_retry
from tests.integration.dispatch.conftest import task

from .test_delivery_deadline import NOW, Client
from .test_missing_main_topics import FixedClock, back_offs, clock, kafka_up, missing
from .test_produce_errors import FailingProducer

__all__ = ["clock"]  # the fixture, imported for the tests below

TASKS = "moments.tasks"
DEAD_LETTERS = "moments.deadletter"
RETURNS = "moments-cooldown-returns"


class AskableProducer(FailingProducer):
    """`FailingProducer` with aiokafka's client, whose broker has the topics in `there`."""

    def __init__(self, *errors: BaseException, there: set[str], in_ack: bool = False) -> None:
        super().__init__(*errors, in_ack=in_ack)
        self.client = Client(there)


IN_FLIGHT_FAILURES = [
    k.NotLeaderForPartitionError(),
    k.LeaderNotAvailableError(),
    k.RequestTimedOutError(),
    k.KafkaTimeoutError("1 write(s) to moments.tasks not acknowledged in 120 s"),
]


class TestTheTasksTopicDeletedUnderAPlainProducer:
    @pytest.mark.parametrize("error", IN_FLIGHT_FAILURES, ids=lambda e: type(e).__name__)
    async def test_its_batch_failing_in_flight_holds_it_missing_at_once(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock, error: k.KafkaError
    ) -> None:
        """The first back-off already reads Kafka up and the topic missing; the write
        goes out once the topic is there. Before, Kafka read down and nothing was missing
        until five answers of unknown in a row (40 s each)."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, TASKS)
        producer = AskableProducer(error, there=set(), in_ack=True)
        await TaskSink(producer, TASKS, memory_stores(), metrics).dispatch(
            [task("t1", deliver_after=NOW)]
        )
        assert [(s.up, s.missing) for s in sleeps.seen] == [(1, 1)]
        assert producer.client.asked == 1
        assert [topic for topic, _ in producer.sent] == [TASKS]
        assert (kafka_up(metrics), missing(metrics, TASKS)) == (1, 0)

    async def test_the_unknown_answers_after_it_stay_held(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
    ) -> None:
        """The next tries (each aiokafka's 40 s wait for the topic's metadata, answered
        unknown) are held as the topic missing, not started again as a broker away."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, TASKS)
        errors = [k.NotLeaderForPartitionError(), *(k.UnknownTopicOrPartitionError(),) * 2]
        producer = AskableProducer(*errors, there=set())
        await TaskSink(producer, TASKS, memory_stores(), metrics).dispatch(
            [task("t1", deliver_after=NOW)]
        )
        assert [(s.up, s.missing) for s in sleeps.seen] == [(1, 1)] * 3
        assert {s.errors for s in sleeps.seen} == {0}, "no failed call counted"

    async def test_with_the_topic_there_it_is_a_broker_away_as_before(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
    ) -> None:
        """A leader moving (NOT_LEADER_OR_FOLLOWER while the topic is there) is an outage:
        waited for, Kafka down, no topic missing."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, TASKS)
        producer = AskableProducer(k.NotLeaderForPartitionError(), there={TASKS}, in_ack=True)
        await TaskSink(producer, TASKS, memory_stores(), metrics).dispatch(
            [task("t1", deliver_after=NOW)]
        )
        assert [(s.up, s.missing, s.errors) for s in sleeps.seen] == [(0, None, 1)]
        assert producer.client.asked == 1


class TestTheDeadLetterTopicDeletedUnderAPlainProducer:
    async def test_its_batch_failing_in_flight_holds_it_missing_at_once(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
    ) -> None:
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, DEAD_LETTERS)
        producer = AskableProducer(k.NotLeaderForPartitionError(), there=set(), in_ack=True)
        sink = DeadLetterSink(producer, DEAD_LETTERS, metrics)
        record = RawRecord("telecom.topup", 3, 1842, b"13800138000", b"{", 1_764_900_000_000)
        sink.add(DeadLetter(record, "topup", RejectReason.INVALID_JSON, "JSONDecodeError", "x"))
        await sink.flush()
        assert [(s.up, s.missing) for s in sleeps.seen] == [(1, 1)]
        assert [topic for topic, _ in producer.sent] == [DEAD_LETTERS]


class TestASideTopicDeletedUnderAPlainProducer:
    async def test_a_failure_in_flight_counts_towards_it_instead_of_starting_again(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
    ) -> None:
        """A side topic (`missing_topic`: the cooldown returns, the withdrawals) is raised
        once missing: a failure in flight whose fresh answer is "gone" counts as one
        answer of unknown, so a NOT_LEADER_OR_FOLLOWER among them no longer starts the
        five again."""
        metrics = Metrics()
        back_offs(monkeypatch, metrics, RETURNS)
        unknown = [k.UnknownTopicOrPartitionError() for _ in range(MISSING_TOPIC_ATTEMPTS - 1)]
        failures = [k.NotLeaderForPartitionError(), *unknown, k.UnknownTopicOrPartitionError()]
        producer = AskableProducer(there=set())
        tries = 0

        async def call() -> None:
            nonlocal tries
            tries += 1
            raise failures[tries - 1]

        with pytest.raises(k.UnknownTopicOrPartitionError):
            await with_retry(
                call,
                Dependency.KAFKA,
                metrics,
                "returning cooldowns",
                missing_topic=RETURNS,
                producer=producer,
            )
        assert tries == MISSING_TOPIC_ATTEMPTS
