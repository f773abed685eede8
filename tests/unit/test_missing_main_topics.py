"""The tasks or dead-letter topic deleted under a running worker (sinks.retry, `needed_topic`).

Every publish to it is answered UNKNOWN_TOPIC_OR_PARTITION, which Kafka marks retriable.
A batch cannot go on without these topics (at-least-once in: its offsets wait), so the
write is still retried; but it was retried as a broker away: `moments_dependency_up
{dependency="kafka"}` 0 though the broker answers, `moments_dependency_errors_total`
rising and the log saying `kafka unavailable`, so ops looked at the wrong thing. Five such
answers in a row now make it a missing topic: dependency up, a line naming the topic and
its fix (throttled), `moments_topic_missing{topic}` while held, and the write goes out once
the topic is back. Tansu accepts produces to a deleted topic (it creates it again), so the
broker's answer is simulated here: no integration test can make it."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiokafka import errors as k

import sinks.retry
from moments.records import DeadLetter, RawRecord, RejectReason
from sinks.deadletter import DeadLetterSink
from sinks.dispatch import TaskSink
from sinks.memory import memory_stores
from sinks.metrics import Dependency, Metrics
from sinks.retry import HELD_THROTTLE, MISSING_TOPIC_ATTEMPTS, with_retry
from tests.integration.dispatch.conftest import task

from .test_produce_errors import FailingProducer

NOW = dt.datetime.now(dt.UTC)
TASKS = "moments.tasks"
DEAD_LETTERS = "moments.deadletter"
HELD = 6
"""Answers after the fifth in a row that the topic is unknown: the write is held over them."""


@dataclass
class Seen:
    """What a back-off saw on the registry when it began."""

    delay: float
    up: float | None
    missing: float | None
    errors: float | None


class BackOffs:
    """`sinks.retry`'s asyncio, its sleeps not slept: each notes what the metrics said.
    `cancel_at`: the sleep that raises CancelledError (the worker stopping)."""

    def __init__(self, metrics: Metrics, topic: str) -> None:
        self.metrics = metrics
        self.topic = topic
        self.seen: list[Seen] = []
        self.cancel_at: int | None = None

    async def sleep(self, delay: float) -> None:
        self.seen.append(
            Seen(
                delay,
                kafka_up(self.metrics),
                missing(self.metrics, self.topic),
                errors(self.metrics),
            )
        )
        assert len(self.seen) < 50, "retried for ever"
        await asyncio.sleep(0)  # other tasks run meanwhile, as in a real back-off
        if self.cancel_at is not None and len(self.seen) >= self.cancel_at:
            raise asyncio.CancelledError


def kafka_up(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("moments_dependency_up", {"dependency": "kafka"})


def errors(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value(
        "moments_dependency_errors_total", {"dependency": "kafka"}
    )


def missing(metrics: Metrics, topic: str) -> float | None:
    return metrics.registry.get_sample_value("moments_topic_missing", {"topic": topic})


class FixedClock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FixedClock:
    """The held line's throttle, on a clock of the test's own and with nothing seen yet."""
    fixed = FixedClock()
    monkeypatch.setattr(HELD_THROTTLE, "clock", fixed)
    monkeypatch.setattr(HELD_THROTTLE, "_seen", {})
    return fixed


def back_offs(monkeypatch: pytest.MonkeyPatch, metrics: Metrics, topic: str) -> BackOffs:
    fake = BackOffs(metrics, topic)
    monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    return fake


def unknown(n: int) -> list[BaseException]:
    return [k.UnknownTopicOrPartitionError() for _ in range(n)]


def held_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sinks.missingtopics"]


class TestTheTasksTopicDeleted:
    @pytest.mark.parametrize("in_ack", [False, True], ids=["at-send", "in-ack"])
    async def test_the_publish_waits_for_it_as_a_missing_topic_not_a_broker_away(
        self,
        monkeypatch: pytest.MonkeyPatch,
        clock: FixedClock,
        caplog: pytest.LogCaptureFixture,
        in_ack: bool,
    ) -> None:
        """Held, not raised (nothing lost: the task goes out once the topic is back), and
        from the fifth answer in a row Kafka is up, no failed call is counted, and the
        topic is counted missing; before, Kafka read down throughout."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, TASKS)
        producer = FailingProducer(*unknown(MISSING_TOPIC_ATTEMPTS + HELD), in_ack=in_ack)
        sink = TaskSink(producer, TASKS, memory_stores(), metrics)
        with caplog.at_level(logging.WARNING):
            await sink.dispatch([task("t1", deliver_after=NOW)])
        assert [topic for topic, _ in producer.sent] == [TASKS]
        waited, held = (
            sleeps.seen[: MISSING_TOPIC_ATTEMPTS - 1],
            sleeps.seen[MISSING_TOPIC_ATTEMPTS - 1 :],
        )
        assert len(held) == HELD + 1
        # A topic just made answers so for a moment: the first four are waited for as before.
        assert [s.up for s in waited] == [0] * len(waited)
        assert [(s.up, s.missing) for s in held] == [(1, 1)] * len(held)
        assert {s.errors for s in held} == {MISSING_TOPIC_ATTEMPTS - 1}
        assert (kafka_up(metrics), missing(metrics, TASKS)) == (1, 0)
        said = " ".join(r.getMessage() for r in caplog.records)
        assert f"the topic {TASKS} is there again after" in said
        assert "kafka is back" not in said

    async def test_its_line_names_the_topic_and_the_fix_once_per_30s(
        self,
        monkeypatch: pytest.MonkeyPatch,
        clock: FixedClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """One ERROR line for the held tries of 30 s, the next one counting those held
        back; it says the broker answers and how to make the topic again."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, TASKS)
        producer = FailingProducer(*unknown(MISSING_TOPIC_ATTEMPTS + HELD))
        sink = TaskSink(producer, TASKS, memory_stores(), metrics)
        real_sleep = sleeps.sleep

        async def later(delay: float) -> None:
            await real_sleep(delay)
            if len(sleeps.seen) == MISSING_TOPIC_ATTEMPTS + 2:
                clock.now += 31  # the third held try comes after the throttle's 30 s

        monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=later))
        with caplog.at_level(logging.WARNING):
            await sink.dispatch([task("t1", deliver_after=NOW)])
        first, second = held_lines(caplog)
        assert first.startswith(f"{TASKS}: the topic is missing on the broker while publishing")
        assert "not a Kafka outage" in first
        assert "nothing is lost" in first
        assert "create it again: restart a worker" in first
        assert '"Against a managed Kafka"' in first
        assert second.endswith("[2 more like this in the last 31 s]")
        unavailable = [r for r in caplog.records if "kafka unavailable" in r.getMessage()]
        assert len(unavailable) == 1, "attempt 1 alone is loud among the four waited for"

    async def test_a_broker_away_after_it_is_an_outage_again(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
    ) -> None:
        """The topic missing, then the broker away: Kafka reads down, the topic no longer
        counted missing (the error says nothing of it)."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, TASKS)
        away = [k.KafkaConnectionError(), k.KafkaConnectionError()]
        producer = FailingProducer(*unknown(MISSING_TOPIC_ATTEMPTS + 1), *away)
        await TaskSink(producer, TASKS, memory_stores(), metrics).dispatch(
            [task("t1", deliver_after=NOW)]
        )
        assert [(s.up, s.missing) for s in sleeps.seen[-4:]] == [(1, 1), (1, 1), (0, 0), (0, 0)]
        assert sleeps.seen[-1].errors == MISSING_TOPIC_ATTEMPTS - 1 + len(away)
        assert [topic for topic, _ in producer.sent] == [TASKS]

    async def test_a_held_publish_cancelled_is_no_longer_counted(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
    ) -> None:
        """The worker stopping (or a rebalance) cancels the held call: the gauge goes back
        to 0, not left at 1 until the next publish gets through."""
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, TASKS)
        sleeps.cancel_at = MISSING_TOPIC_ATTEMPTS + 2
        producer = FailingProducer(*unknown(40))
        with pytest.raises(asyncio.CancelledError):
            await TaskSink(producer, TASKS, memory_stores(), metrics).dispatch(
                [task("t1", deliver_after=NOW)]
            )
        assert sleeps.seen[-1].missing == 1
        assert missing(metrics, TASKS) == 0

    async def test_two_calls_held_on_it_count_two(
        self, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
    ) -> None:
        """The batch loop, the outcomes agent and the re-drive timer may each hold a
        publish: one going through leaves the others counted."""
        metrics = Metrics()
        back_offs(monkeypatch, metrics, TASKS)
        left = {"a": MISSING_TOPIC_ATTEMPTS + 1, "b": MISSING_TOPIC_ATTEMPTS + 10}
        seen: list[float | None] = []

        def call(name: str) -> Callable[[], Awaitable[str]]:
            async def send() -> str:
                if left[name]:
                    left[name] -= 1
                    raise k.UnknownTopicOrPartitionError()
                return name

            return send

        async def first() -> str:
            said = await with_retry(call("a"), Dependency.KAFKA, metrics, "a", needed_topic=TASKS)
            seen.append(missing(metrics, TASKS))
            return said

        b = asyncio.ensure_future(
            with_retry(call("b"), Dependency.KAFKA, metrics, "b", needed_topic=TASKS)
        )
        assert await first() == "a"
        assert seen == [1], "b is still held"
        assert await b == "b"
        assert missing(metrics, TASKS) == 0


class TestTheDeadLetterTopicDeleted:
    async def test_dead_letters_wait_for_it_as_a_missing_topic_not_a_broker_away(
        self,
        monkeypatch: pytest.MonkeyPatch,
        clock: FixedClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        metrics = Metrics()
        sleeps = back_offs(monkeypatch, metrics, DEAD_LETTERS)
        producer = FailingProducer(*unknown(MISSING_TOPIC_ATTEMPTS + HELD), in_ack=True)
        sink = DeadLetterSink(producer, DEAD_LETTERS, metrics)
        record = RawRecord("telecom.topup", 3, 1842, b"13800138000", b"{", 1_764_900_000_000)
        sink.add(DeadLetter(record, "topup", RejectReason.INVALID_JSON, "JSONDecodeError", "x"))
        with caplog.at_level(logging.WARNING):
            await sink.flush()
        assert [topic for topic, _ in producer.sent] == [DEAD_LETTERS]
        held = sleeps.seen[MISSING_TOPIC_ATTEMPTS - 1 :]
        assert [(s.up, s.missing) for s in held] == [(1, 1)] * (HELD + 1)
        [line] = held_lines(caplog)
        assert line.startswith(f"{DEAD_LETTERS}: the topic is missing on the broker while sending")
