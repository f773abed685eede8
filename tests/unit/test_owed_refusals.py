"""A batch's or decision's withdrawals and cooldown returns that Kafka refuses are left
owed in Redis for the re-drive timer (`sinks.steps.note_owed_refusal`): each is counted in
`moments_owed_refused_total{step,reason}`, by the timer step that owes it and the kind of
refusal. Before, they were only logged (throttled to a line per 30 s), so a dashboard or
an alert saw nothing until the timer's own try failed."""

from __future__ import annotations

import logging
import types
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
from aiokafka.errors import TopicAuthorizationFailedError, UnknownTopicOrPartitionError

import sinks.retry
import sinks.steps
from moments.cooldowns import CooldownReturn
from moments.enums import WithdrawReason
from sinks.base import Headers
from sinks.cooldowns import KafkaCooldownReturns
from sinks.memory import memory_stores
from sinks.metrics import Dependency, Metrics, RefusalReason, TimerStep
from sinks.owedreturns import OwedReturns
from sinks.retry import MISSING_TOPIC_ATTEMPTS, with_retry
from sinks.withdrawals import WITHDRAWALS_TOPIC

from .fakes import Clock
from .test_redrive_withdrawals_owed import RefusingProducer, setup
from .test_redriven_parked import GRACE_S, call, notices

T = TypeVar("T")


def refused(metrics: Metrics, step: TimerStep, reason: RefusalReason) -> float:
    found = metrics.registry.get_sample_value(
        "moments_owed_refused_total", {"step": step.value, "reason": reason.value}
    )
    assert found is not None, "every step and reason is declared at 0"
    return found


class RefusingReturns:
    """A cooldown returns topic the worker may not write."""

    def wanted(self, returns: Sequence[CooldownReturn]) -> list[CooldownReturn]:
        return list(returns)

    async def send(self, returns: Sequence[CooldownReturn]) -> None:
        raise TopicAuthorizationFailedError()


async def direct(call: Callable[[], Awaitable[T]], what: str) -> T:
    return await call()


class TestOwedRefusals:
    async def test_withdrawals_a_decision_had_refused_are_counted_by_step_and_reason(
        self,
    ) -> None:
        """Three decisions' notices refused by an ACL: 3 counted under `withdrawals` and
        `authorization`, nothing under the other reasons or the cooldown returns."""
        clock, stores, sink, producer = setup(hours=False)
        producer.refusing = True
        for n in range(3):
            task = call().model_copy(update={"task_id": f"{n:032x}"})
            await sink.withdrawals.withdraw_voided([(task, WithdrawReason.OPT_OUT, clock.now)])
        assert len(await stores.ledger.owed_withdrawals(-1.0)) == 3
        m = sink.metrics
        assert refused(m, TimerStep.WITHDRAWALS, RefusalReason.AUTHORIZATION) == 3
        assert refused(m, TimerStep.WITHDRAWALS, RefusalReason.OTHER) == 0
        assert refused(m, TimerStep.COOLDOWN_RETURNS, RefusalReason.AUTHORIZATION) == 0

    async def test_cooldown_returns_refused_are_counted_under_their_step(self) -> None:
        clock = Clock(1000.0)
        metrics = Metrics()
        owed = OwedReturns(memory_stores(clock).ledger, RefusingReturns(), direct, metrics)
        returns = [CooldownReturn("s1", "r1", 900, f"{n:032x}") for n in range(2)]
        assert await owed.send(returns) == 0
        assert refused(metrics, TimerStep.COOLDOWN_RETURNS, RefusalReason.AUTHORIZATION) == 2

    @pytest.mark.parametrize("step", [TimerStep.RELEASE, TimerStep.REDRIVE, TimerStep.EXPIRY])
    def test_only_the_steps_that_owe_a_refusal_have_series(self, step: TimerStep) -> None:
        """Bounded: two steps times the reasons."""
        metrics = Metrics()
        found = metrics.registry.get_sample_value(
            "moments_owed_refused_total", {"step": step.value, "reason": "authorization"}
        )
        assert found is None


class Sleeps:
    """`sinks.retry`'s asyncio, its sleeps counted and not slept; a call retried past
    `limit` would have been retried for ever."""

    limit = 50

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        assert len(self.delays) < self.limit, "retried for ever"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    fake = Sleeps()
    monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    return fake


class MissingTopicProducer(RefusingProducer):
    """The withdrawals topic deleted after the worker started: its next `missing` sends
    are answered UNKNOWN_TOPIC_OR_PARTITION (then it is back, made again)."""

    missing = 0

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Any:
        if self.missing and topic == WITHDRAWALS_TOPIC:
            self.missing -= 1
            raise UnknownTopicOrPartitionError()
        return await super().send(topic, value, key, partition, timestamp_ms, headers)


def missing_topic_sink() -> tuple[Clock, Any, Any, MissingTopicProducer]:
    clock, stores, sink, _ = setup(hours=False)
    producer = MissingTopicProducer(clock)
    sink.withdrawals.producer = producer
    return clock, stores, sink, producer


class TestMissingTopic:
    """A side topic deleted after the worker started answers UNKNOWN_TOPIC_OR_PARTITION at
    every send: a few times in a row it is a missing topic, not a broker away, and comes
    out as one, its fix named; before, it was waited out as an outage for ever
    (`moments_dependency_up` 0, the batch or the timer step held)."""

    async def test_a_decisions_withdrawal_to_a_deleted_topic_is_owed_counted_and_named(
        self,
        sleeps: Sleeps,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(sinks.steps.REFUSALS_THROTTLE, "every", 0.0)  # each line, here
        clock, stores, sink, producer = missing_topic_sink()
        producer.missing = 1000
        with caplog.at_level(logging.ERROR):
            await sink.withdrawals.withdraw_voided([(call(), WithdrawReason.OPT_OUT, clock.now)])
        assert len(sleeps.delays) == MISSING_TOPIC_ATTEMPTS - 1
        assert len(await stores.ledger.owed_withdrawals(-1.0)) == 1
        m = sink.metrics
        assert refused(m, TimerStep.WITHDRAWALS, RefusalReason.UNKNOWN_TOPIC) == 1
        assert refused(m, TimerStep.WITHDRAWALS, RefusalReason.OTHER) == 0
        up = m.registry.get_sample_value("moments_dependency_up", {"dependency": "kafka"})
        assert up == 1, "the broker answered: no outage"
        [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert f"the topic {WITHDRAWALS_TOPIC} is missing" in line
        assert "create it again" in line

    async def test_the_timers_try_names_the_missing_topic_and_goes_on(
        self, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The withdrawals step fails on it (counted, the fix in its line) and the tick goes
        on; once the topic is made again, the next try publishes what was owed."""
        clock, stores, sink, producer = missing_topic_sink()
        producer.missing = 1000
        await sink.withdrawals.withdraw_voided([(call(), WithdrawReason.OPT_OUT, clock.now)])
        clock.now += GRACE_S + 1
        with caplog.at_level(logging.ERROR, logger="sinks.steps"):
            await sink.redrive(GRACE_S)
        said = " ".join(r.getMessage() for r in caplog.records if r.name == "sinks.steps")
        assert "while publishing withdrawals owed" in said
        assert f"the topic {WITHDRAWALS_TOPIC} is missing" in said
        timer = sink.metrics.registry.get_sample_value(
            "moments_timer_errors_total", {"step": "withdrawals"}
        )
        assert timer == 1
        producer.missing = 0
        clock.now += GRACE_S + 1
        await sink.redrive(GRACE_S)
        assert notices(producer) == [(call().task_id, "opt_out")]
        assert await stores.ledger.owed_withdrawals(-1.0) == []


class GoneTopic(RefusingProducer):
    """A producer whose every send is answered UNKNOWN_TOPIC_OR_PARTITION."""

    sends = 0

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Any:
        self.sends += 1
        raise UnknownTopicOrPartitionError()


async def test_cooldown_returns_to_a_deleted_topic_are_owed_counted_and_named(
    sleeps: Sleeps,
) -> None:
    """The cooldown returns topic deleted: its send gives up after MISSING_TOPIC_ATTEMPTS,
    the returns are counted under `unknown_topic` and the decision goes on (0 sent)."""
    metrics = Metrics()
    producer = GoneTopic(Clock(1000.0))
    topic = KafkaCooldownReturns(producer, "moments-cooldown-returns", 4, lambda: {"r1"}, metrics)
    owed = OwedReturns(memory_stores(Clock(1000.0)).ledger, topic, direct, metrics)
    returns = [CooldownReturn("s1", "r1", 900, f"{n:032x}") for n in range(2)]
    assert await owed.send(returns) == 0
    assert producer.sends == MISSING_TOPIC_ATTEMPTS
    assert refused(metrics, TimerStep.COOLDOWN_RETURNS, RefusalReason.UNKNOWN_TOPIC) == 2


class TestUnknownTopicInRetry:
    async def test_a_topic_answering_unknown_a_few_times_is_still_waited_for(
        self, sleeps: Sleeps
    ) -> None:
        """A topic being made (its leaders not elected yet) answers the same code for a
        moment: fewer than MISSING_TOPIC_ATTEMPTS in a row are retried as before."""
        metrics = Metrics()
        left = [MISSING_TOPIC_ATTEMPTS - 1]

        async def send() -> str:
            if left[0]:
                left[0] -= 1
                raise UnknownTopicOrPartitionError()
            return "sent"

        said = await with_retry(send, Dependency.KAFKA, metrics, "x", missing_topic="t")
        assert said == "sent"
        assert len(sleeps.delays) == MISSING_TOPIC_ATTEMPTS - 1

    async def test_without_a_topic_named_it_is_an_outage_as_before(self, sleeps: Sleeps) -> None:
        """A call that names no topic (the state changelog) waits as for a broker away."""
        metrics = Metrics()
        left = [MISSING_TOPIC_ATTEMPTS + 3]

        async def send() -> str:
            if left[0]:
                left[0] -= 1
                raise UnknownTopicOrPartitionError()
            return "sent"

        assert await with_retry(send, Dependency.KAFKA, metrics, "x") == "sent"
