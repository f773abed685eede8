"""The cooldown returns of tasks dispatch drops after they waited (docs/architecture.md,
"Cooldown returns"): owed in the ledger before their drops are written, sent once the
drops are, and sent by any worker's timer when their own worker stopped in between."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from moments.cooldowns import CooldownReturn
from sinks.cooldowns import CooldownReturns
from sinks.ledger import state_of
from sinks.metrics import Metrics, TimerStep
from sinks.retry import Retrying
from sinks.routes import Writes
from sinks.steps import note_owed_refusal
from sinks.stores import Ledger

log = logging.getLogger("sinks.dispatch")


class OwedReturns:
    """`returns`: where the returns go (None: nowhere, none are owed); `redis`: the sink's
    retried store calls; `metrics`: the sink's (a refusal is counted)."""

    def __init__(
        self,
        ledger: Ledger,
        returns: CooldownReturns | None,
        redis: Retrying,
        metrics: Metrics,
    ) -> None:
        self.ledger = ledger
        self.returns = returns
        self._redis = redis
        self.metrics = metrics

    async def owe(self, w: Writes, owner: str = "") -> None:
        """Note in the ledger the cooldown returns noted so far (of rules with a cooldown),
        before their drops are written: a worker that dies after writing a drop leaves its
        return owed, and any worker's timer sends it (`resend`). `owner`: the fenced
        decision's token (`Held`; '' for none), whose refused leave forgets only its own
        (`Ledger.owe_returns`)."""
        if not w.returned or self.returns is None:
            return
        owed = self.returns.wanted(w.returned)
        w.returned = []
        if owed:
            items = [(r.owed_key, r.to_bytes()) for r in owed]
            await self._redis(
                lambda: self.ledger.owe_returns(items, owner), "noting cooldown returns"
            )
            w.owed += owed

    async def send(self, owed: Sequence[CooldownReturn]) -> int:
        """`send_owed` right after the drops are written: a refusal of the returns topic
        (an ACL without Write on `<app id>-cooldown-returns`: what `with_retry` raises is no
        outage) is logged and the returns stay owed for any worker's timer (`resend`,
        counted in `moments_timer_errors_total{step="cooldown_returns"}` while it fails);
        the decision goes on, its tasks published. Raised, it stopped the worker at each
        batch with such a drop. Returns how many were sent."""
        from aiokafka.errors import KafkaError

        try:
            return await self.send_owed(owed)
        except KafkaError as exc:
            note_owed_refusal(
                "cooldown return(s)", len(owed), exc, TimerStep.COOLDOWN_RETURNS, self.metrics
            )
            return 0

    async def send_owed(self, owed: Sequence[CooldownReturn]) -> int:
        """Send the returns of the tasks their ledger entries say are dropped, or whose
        entry is gone (a dropped one is kept a day past its expiry; a sent one the ledger's
        whole TTL), durably, then settle those and the ones whose task was sent; a task
        still pending, waiting or merged (its drop never written) keeps its return owed
        until it is decided (but a merged moment's a stalled decision owed, its leave
        refused by the fence: forgotten in that step, `Ledger.leave_many`; and a merged
        moment's whose carrier was sent, the moment inside it: settled, `_inside_sent`).
        Only after the drop is durable: sent before, a worker that died before writing the
        drop left the task pending, and the re-drive could publish it with its cooldown
        given back (a second task inside the cooldown). A crash before the settle sends a
        return again: the engine applies it once (moments.cooldowns).
        Returns how many were sent."""
        if not owed:
            return 0
        assert self.returns is not None  # only owed when there is where to send them
        ids = list(dict.fromkeys(r.entry for r in owed))
        values = await self._redis(lambda: self.ledger.get_many(ids), "reading dropped tasks")
        state = {i: state_of(v) for i, v in zip(ids, values, strict=True)}
        await self._inside_sent(state, values, ids)
        dropped = [r for r in owed if state[r.entry] in ("dropped", None)]
        settled = [r.owed_key for r in owed if state[r.entry] in ("dropped", "sent", None)]
        if dropped:
            await self.returns.send(dropped)
        if settled:
            await self._redis(
                lambda: self.ledger.settle_returns(settled), "settling cooldown returns"
            )
        return len(dropped)

    async def _inside_sent(
        self, state: dict[str, str | None], values: Sequence[bytes | None], ids: Sequence[str]
    ) -> None:
        """The merged moments among `ids` (`M<carrier>`) whose carrier was sent, marked
        "sent" in `state`: they went out inside it, so the returns owed for them are settled
        unsent (a decision that owed one died before its leave, and the next decision of
        the carrier sent the moment inside it). Kept owed, such a return was read again
        every grace period for the moment's entry's life and sent once it lapsed: the
        rule's cooldown given back for a moment that reached the customer. One read more,
        only when an owed return's moment is merged."""
        carriers = {
            i: v[1:].decode()
            for i, v in zip(ids, values, strict=True)
            if v is not None and state[i] == "merged"
        }
        if not carriers:
            return
        wanted = list(dict.fromkeys(carriers.values()))
        got = await self._redis(lambda: self.ledger.get_many(wanted), "reading merged tasks")
        sent = {c for c, v in zip(wanted, got, strict=True) if state_of(v) == "sent"}
        for i, carrier in carriers.items():
            if carrier in sent:
                state[i] = "sent"

    async def resend(self, older_than: float) -> int:
        """The timer's: the returns owed longer than the grace period, whose worker died
        between the drop and the send (or before the drop: then they wait for their task's
        decision, or go when it is sent). Returns how many were sent."""
        if self.returns is None:
            return 0
        owed = await self._redis(
            lambda: self.ledger.owed_returns(older_than), "reading cooldown returns owed"
        )
        if not owed:
            return 0
        returns: list[CooldownReturn] = []
        malformed: list[str] = []
        for task_id, record in owed:
            try:
                returns.append(CooldownReturn.from_bytes(record))
            except ValueError as exc:
                log.error("task %s: cooldown return owed is not one (%s); left out", task_id, exc)
                malformed.append(task_id)
        if malformed:
            await self._redis(
                lambda: self.ledger.settle_returns(malformed), "settling cooldown returns"
            )
        sent = await self.send_owed(returns)
        if sent:
            log.warning(
                "sent %d cooldown return(s) of dropped tasks that their worker did not "
                "(it stopped between the drop and the send)",
                sent,
            )
        return sent
