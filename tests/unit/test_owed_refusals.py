"""A batch's or decision's withdrawals and cooldown returns that Kafka refuses are left
owed in Redis for the re-drive timer (`sinks.steps.note_owed_refusal`): each is counted in
`moments_owed_refused_total{step,reason}`, by the timer step that owes it and the kind of
refusal. Before, they were only logged (throttled to a line per 30 s), so a dashboard or
an alert saw nothing until the timer's own try failed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from moments.cooldowns import CooldownReturn
from moments.enums import WithdrawReason
from sinks.memory import memory_stores
from sinks.metrics import Metrics, RefusalReason, TimerStep
from sinks.owedreturns import OwedReturns

from .fakes import Clock
from .test_redrive_withdrawals_owed import setup
from .test_redriven_parked import call

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
