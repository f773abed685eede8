"""Where dispatch sends the cooldown returns of the tasks it drops after they waited
(moments.cooldowns): the worker's internal topic, or a list the backtest applies."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from moments.cooldowns import CooldownReturn
from moments.partitioning import partition_of
from sinks.base import Producer, acknowledged
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry

CooledRules = Callable[[], Collection[str]]
"""The ids of the rules in force that have a cooldown (rules are reloaded): only their
tasks' returns are sent. Asked only when there are returns to send."""


class CooldownReturns(Protocol):
    def wanted(self, returns: Sequence[CooldownReturn]) -> list[CooldownReturn]:
        """Those of `returns` whose rules have a cooldown now: the ones dispatch owes."""
        ...

    async def send(self, returns: Sequence[CooldownReturn]) -> None:
        """Send the returns of rules with a cooldown; returns once they are durable."""
        ...


class _OfCooledRules:
    """`wanted` for both senders: the returns whose rules have a cooldown now."""

    cooled: CooledRules

    def wanted(self, returns: Sequence[CooldownReturn]) -> list[CooldownReturn]:
        cooled = self.cooled()
        return [r for r in returns if r.rule_id in cooled]


class KafkaCooldownReturns(_OfCooledRules):
    """The worker's: each return to the partition of its subscriber on the internal topic
    (murmur2 of the key, as the input topics, with the same partition count), sent once
    dispatch has written the drops to the ledger (owed there from before the drops to
    after the acknowledgement: a worker that dies in between leaves it to any worker's
    re-drive timer, `OwedReturns.resend`; one sent twice the engine finds stale)."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        partitions: int,
        cooled: CooledRules,
        metrics: Metrics,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.cooled = cooled
        self.metrics = metrics

    async def send(self, returns: Sequence[CooldownReturn]) -> None:
        wanted = self.wanted(returns)
        if not wanted:
            return

        async def produce() -> None:
            futures = [
                await self.producer.send(
                    self.topic,
                    value=r.to_bytes(),
                    key=r.key,
                    partition=partition_of(r.key, self.partitions),
                )
                for r in wanted
            ]
            await acknowledged(self.producer, futures, (self.topic,))  # within a deadline

        # A refusal is logged by every caller (`OwedReturns.send`, `TimerSteps`): once.
        await with_retry(
            produce,
            Dependency.KAFKA,
            self.metrics,
            "returning cooldowns",
            log_refusal=False,
            missing_topic=self.topic,  # made as the worker starts: deleted since, no outage
            producer=self.producer,
        )


class CollectedCooldownReturns(_OfCooledRules):
    """The backtest's: kept until it applies them to its state (`take`), before the
    next slice of events."""

    def __init__(self, cooled: CooledRules) -> None:
        self.cooled = cooled
        self.pending: list[CooldownReturn] = []

    async def send(self, returns: Sequence[CooldownReturn]) -> None:
        self.pending.extend(self.wanted(returns))

    def take(self) -> list[CooldownReturn]:
        taken, self.pending = self.pending, []
        return taken
