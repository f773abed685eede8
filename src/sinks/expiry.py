"""Published tasks that expired with no outcome: counted by channel and type, and
forgotten once the outcome grace is past (docs/architecture.md, "Dispatch: deferral", its
publish step); a consumer that stopped acting on a channel shows here first."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from sinks.ledger import Unanswered, sent_meta_fields
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy
from sinks.retry import Retrying
from sinks.stores import Clock, Ledger

log = logging.getLogger("sinks.dispatch")
EXPIRE_BATCH = 500
"""Unanswered tasks a call counts as expired, per channel (`expire_unanswered`)."""
EXPIRE_BATCHES_PER_TICK = 20


class UnansweredExpiry:
    """Over the sink's ledger and metrics; `policy`: the sink's policy in force (its
    `outcomes.outcome_grace`); `clock`: the sink's; `redis`: its retried store calls."""

    def __init__(
        self,
        ledger: Ledger,
        metrics: Metrics,
        policy: Callable[[], DispatchPolicy],
        clock: Clock,
        redis: Retrying,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self._policy = policy
        self.clock = clock
        self._redis = redis

    @property
    def policy(self) -> DispatchPolicy:
        return self._policy()

    async def expire_unanswered(self, now: float | None = None) -> int:
        """Count and forget the published tasks that expired with no outcome, the outcome
        grace (`outcomes.outcome_grace`) past (`moments_tasks_unanswered_expired_total`),
        and set `moments_tasks_unanswered` by channel; returns how many expired. A
        consumer that stopped acting on a channel shows here first. Each call's tasks are
        counted as it takes them out of the index: counted after the last, those of the
        calls before one that failed were gone from the index and never counted (the
        timer tries a failed step again later: `sinks.steps`)."""
        now = self.clock() if now is None else now
        before = now - self.policy.outcomes.outcome_grace.total_seconds()
        gone: list[tuple[Unanswered, bytes | None]] = []
        for _ in range(EXPIRE_BATCHES_PER_TICK):
            # A call takes at most EXPIRE_BATCH a channel: after a consumer's outage the
            # index holds many more expired, and one call a tick (every worker reading the
            # same lowest ones) counted them over hours, the alert waiting on the count.
            batch = await self._redis(
                lambda: self.ledger.expire_unanswered(before, EXPIRE_BATCH),
                "expiring unanswered tasks",
            )
            gone += batch
            for u, entry in batch:
                moment_type = sent_meta_fields(entry).get("moment_type") or "unknown"
                self.metrics.unanswered_expired.labels(u.channel, str(moment_type)).inc()
            taken = Counter(u.channel for u, _ in batch)
            if not taken or max(taken.values()) < EXPIRE_BATCH:
                break
        if gone:
            by_channel = sorted(Counter(u.channel for u, _ in gone).items())
            log.info(
                "%d published task(s) expired with no outcome (%s): check those channels' "
                "dispatch consumers (`moments tasks pending --channel C`)",
                len(gone),
                ", ".join(f"{c} {n}" for c, n in by_channel),
            )
        counts = await self._redis(self.ledger.unanswered, "counting unanswered tasks")
        for channel, n in counts.items():
            self.metrics.unanswered.labels(channel).set(n)
        return len(gone)
