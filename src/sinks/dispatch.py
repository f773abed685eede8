"""The dispatch sink: tasks go to `moments.tasks` once per task id, through the ledger,
when they may be delivered, within capacity and the contact policy.

Every task the ledger lets us own goes through one decision (`_route`), whether it is
fresh from a batch, released from the deferral queue or re-driven after a crash:
declined-rule suppression, expiry and relevance -> merge into a waiting task of the
same subscriber -> wait (deferral queue) while `deliver_after` is in the future or the
channel holds for the merge window -> contact cap -> capacity and overflow -> publish.
Each step is idempotent per task id, so a retry after a Redis error, a re-drive after a
crash or a second worker racing never sends a task twice or loses it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from pydantic import ValidationError

from moments.models import Deferral, ServiceTask
from sinks.base import Headers, Producer, produce_all
from sinks.capacity import CapacityLimiter, next_day_start
from sinks.contact import ContactLimiter, merge_tasks
from sinks.metrics import Dependency, DispatchMetrics, Metrics, SuppressReason
from sinks.policy import DispatchPolicy, OverflowPolicy
from sinks.relevance import check_for, reactivated
from sinks.retry import with_retry
from sinks.stores import Clock, DispatchStores

log = logging.getLogger(__name__)
T = TypeVar("T")
_BODY_GRACE_S = 86400
SUSPENDED_POLL_S = 900.0


def task_bytes(task: ServiceTask) -> bytes:
    return orjson.dumps(task.model_dump(mode="json"))


def sent_meta(task: ServiceTask) -> bytes:
    """What the ledger keeps of a sent task for outcomes: rule and moment type."""
    return orjson.dumps({"rule_id": task.moment.rule_id, "moment_type": task.moment.type})


@dataclass
class Candidate:
    """A task we own in the ledger (`carrier_id`) and the tasks merged into it."""

    carrier_id: str
    tasks: list[ServiceTask]
    fresh: bool = False  # straight from a batch (may join or open a merge group)
    deferral_counted: bool = False  # the engine counted its gating deferral already
    reasons: list[str] = field(default_factory=list)


class TaskSink:
    """`stores`: Redis on the stream (`redis_stores`), memory in a backtest
    (`memory_stores`); `clock`: the time decisions are made at (wall clock on the stream,
    event time in a backtest). The decisions are the same code either way."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        stores: DispatchStores,
        metrics: Metrics,
        policy: DispatchPolicy | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.stores = stores
        self.metrics = metrics
        self.policy = policy or DispatchPolicy()
        self.clock = clock
        self.ledger = stores.ledger
        self.deferral = stores.deferral
        self.capacity = CapacityLimiter(stores.slots, self.policy)
        self.contacts = ContactLimiter(stores.contacts, self.policy.contact)
        self.facts = stores.facts
        self.declines = stores.declines
        self.dm = DispatchMetrics.of(metrics)
        self._pending: list[ServiceTask] = []

    def add(self, item: ServiceTask) -> None:
        self._pending.append(item)

    async def _redis(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        return await with_retry(call, Dependency.REDIS, self.metrics, what)

    async def flush(self) -> None:
        """Claim every added task, then publish, park, merge or drop the ones we own;
        duplicates are counted, not sent. Returns when all of it is durable."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        await self.dispatch(batch, from_engine=True)

    async def dispatch(self, batch: Sequence[ServiceTask], from_engine: bool = False) -> None:
        """`flush` for tasks not added: other callers (outcome retries) use this, so they
        never take tasks another agent added and has not flushed yet. `from_engine`: the
        engine counted the gating deferrals in `moments_tasks_deferred_total` already."""
        if not batch:
            return
        unique = list({t.task_id: t for t in batch}.values())
        payloads = [(t.task_id, task_bytes(t)) for t in unique]
        owned = await self._redis(lambda: self.ledger.claim(payloads), "claiming task ids")
        candidates: list[Candidate] = []
        for task, mine in zip(unique, owned, strict=True):
            if mine:
                candidates.append(
                    Candidate(task.task_id, [task], fresh=True, deferral_counted=from_engine)
                )
            else:
                self._suppressed(task, SuppressReason.DEDUP.value)
        await self._decide(candidates)

    async def redrive(self, older_than: float) -> int:
        """The timer's work, safe on every worker at once: release the deferred tasks whose
        time came, and send again the tasks whose publish was never settled (a crash);
        returns how many were re-driven."""
        await self.release_due()
        stale = await self._redis(
            lambda: self.ledger.claim_stale(older_than), "reading pending tasks"
        )
        candidates = []
        for task_id, payload in stale:
            members = await self._group(task_id)
            if (c := self._candidate(task_id, [payload, *members])) is not None:
                candidates.append(c)
        if candidates:
            log.warning("re-driving %d task(s) whose publish was not confirmed", len(candidates))
            self.metrics.pending_redriven.inc(len(candidates))
            await self._decide(candidates)
        return len(candidates)

    async def _group(self, task_id: str) -> list[bytes]:
        return await self._redis(lambda: self.ledger.group(task_id), "reading merge groups")

    async def release_due(self, now: float | None = None) -> int:
        """Take the deferred tasks due by `now` (default: the clock) and send (or drop) them."""
        now = self.clock() if now is None else now
        due = await self._redis(
            lambda: self.deferral.release(now, self.policy.release_batch), "releasing tasks"
        )
        if due:
            self.dm.released.inc(len(due))
            loaded = [self._candidate(r.task_id, [r.payload, *r.members]) for r in due]
            await self._decide([c for c in loaded if c is not None], now)
        else:
            await self._update_waiting()
        return len(due)

    @staticmethod
    def _candidate(task_id: str, payloads: Sequence[bytes]) -> Candidate | None:
        """The stored task and its merged members; None (logged, left pending for the
        next re-drive) when a payload no longer fits the model."""
        try:
            return Candidate(task_id, [ServiceTask.model_validate_json(p) for p in payloads])
        except ValidationError as exc:
            log.error(
                "task %s: stored payload does not fit ServiceTask (%s); it stays pending "
                "and is tried again on every re-drive: run the version that wrote it, or "
                "inspect it with GET on its ledger key",
                task_id,
                exc.errors()[0]["msg"] if exc.errors() else exc,
            )
            return None

    async def _decide(self, candidates: Sequence[Candidate], now: float | None = None) -> None:
        to_send: list[ServiceTask] = []
        for candidate in candidates:
            at = self.clock() if now is None else now
            task = await self._route(candidate, at)
            if task is not None:
                to_send.append(task)
        await self._send(to_send)
        if candidates:
            await self._update_waiting()

    async def _update_waiting(self) -> None:
        self.metrics.waiting.set(await self._redis(self.deferral.waiting, "counting waiting"))

    def _suppressed(self, task: ServiceTask, reason: str) -> None:
        self.metrics.suppressed.labels(task.moment.type, reason).inc()

    async def _keep(self, task: ServiceTask, now: float) -> str | None:
        """None when the task is still worth sending, else why not."""
        if task.expires_at.timestamp() <= now:
            return SuppressReason.EXPIRED.value
        declined = await self._redis(
            lambda: self.declines.suppressed(task.subscriber_id, task.moment.rule_id),
            "reading declines",
        )
        if declined:
            return "declined"
        check = check_for(self.policy.relevance, task)
        if check is not None:
            facts = await self._redis(lambda: self.facts.get(task.subscriber_id), "reading facts")
            verdict = check(task, facts)
            if not verdict.keep:
                return verdict.reason
        return None

    async def _route(self, c: Candidate, now: float) -> ServiceTask | None:
        kept: list[ServiceTask] = []
        last_reason = SuppressReason.EXPIRED.value
        for t in c.tasks:
            reason = await self._keep(t, now)
            if reason is None:
                kept.append(t)
            else:
                self._suppressed(t, reason)
                last_reason = reason
        if not kept:
            await self._redis(lambda: self.ledger.drop(c.carrier_id, last_reason), "dropping")
            return None
        task = merge_tasks(c.carrier_id, kept)
        payload = task_bytes(task)
        window = self.policy.merge.window.total_seconds()
        if c.fresh:
            carrier = await self._redis(
                lambda: self.deferral.join(task.task_id, task.subscriber_id, payload), "merging"
            )
            if carrier is not None:
                self.dm.merged.labels(task.moment.type).inc()
                return None
        if task.deliver_after.timestamp() > now:
            reason = task.deferred.reason if task.deferred else "deliver_after"
            count = not (c.fresh and c.deferral_counted)
            await self._park(task, task.deliver_after.timestamp(), reason, count)
            return None
        if await self._suspended(task, now):
            return None
        if c.fresh and task.channel in self.policy.merge.hold_channels:
            await self._park(task, now + window, "merge_window")
            return None
        contact = await self._redis(
            lambda: self.contacts.take(task.task_id, task.subscriber_id, now), "contact policy"
        )
        if not contact.taken:
            assert contact.free_at is not None
            if contact.free_at < task.expires_at.timestamp():
                await self._park(task, contact.free_at, "contact_cap")
                return None
            await self._drop(task, "contact_cap")
            return None
        sendable = await self._within_capacity(task, now)
        if sendable is None or isinstance(sendable, float):
            await self._redis(
                lambda: self.contacts.give_back(task.task_id, task.subscriber_id),
                "contact policy",
            )
            if isinstance(sendable, float):
                await self._park(task, sendable, "capacity")
                return None
            await self._drop(task, SuppressReason.CAPACITY.value)
            return None
        return sendable

    async def _within_capacity(self, task: ServiceTask, now: float) -> ServiceTask | float | None:
        """The task to send (maybe on its fallback channel), or when to try again (next
        day), or None to drop it, by the rule's overflow policy."""
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        slot = await self._take(task, at)
        if slot:
            return task
        overflow = self.policy.overflow_for(task.moment.rule_id)
        self.dm.overflow.labels(task.moment.type, overflow.policy.value).inc()
        if overflow.policy is OverflowPolicy.FALLBACK and overflow.channel is not None:
            fallback = task.model_copy(update={"channel": overflow.channel})
            if await self._take(fallback, at):
                return fallback
        if overflow.policy is OverflowPolicy.DROP:
            return None
        later = next_day_start(at, self.policy.zone, self.policy.next_day_at)
        return later.timestamp() if later < task.expires_at else None

    async def _take(self, task: ServiceTask, at: dt.datetime) -> bool:
        slot = await self._redis(
            lambda: self.capacity.take(task.task_id, task.region, task.channel, task.priority, at),
            "taking capacity",
        )
        if slot.left is not None:
            self.dm.capacity_left.labels(task.region or "*", task.channel.value).set(slot.left)
        return slot.taken

    async def _suspended(self, task: ServiceTask, now: float) -> bool:
        """Gating deferred this task for a suspended line: it waits (checked again every
        `SUSPENDED_POLL_S`) until a profile update says the line is active, or expires."""
        if task.deferred is None or task.deferred.reason != "suspended":
            return False
        facts = await self._redis(lambda: self.facts.get(task.subscriber_id), "reading facts")
        if reactivated(task, facts):
            return False
        again = now + SUSPENDED_POLL_S
        if again < task.expires_at.timestamp():
            await self._park(task, again, "suspended", count=False)
        else:
            await self._drop(task, "suspended")
        return True

    async def _park(
        self, task: ServiceTask, release_at: float, reason: str, count: bool = True
    ) -> None:
        until = dt.datetime.fromtimestamp(release_at, dt.UTC)
        # A suspended line keeps gating's reason and bound: the poll time is not news.
        keep_gating = reason == "suspended" and task.deferred is not None
        if not keep_gating and (task.deferred is None or task.deferred.until < until):
            task = task.model_copy(update={"deferred": Deferral(reason=reason, until=until)})
        payload = task_bytes(task)
        window = self.policy.merge.window.total_seconds()
        parked = await self._redis(
            lambda: self.deferral.park(
                task.task_id, task.subscriber_id, payload, release_at, window
            ),
            "deferring a task",
        )
        if parked and count:
            self.metrics.deferred.labels(reason).inc()

    async def _drop(self, task: ServiceTask, reason: str) -> None:
        self._suppressed(task, reason)
        await self._redis(lambda: self.ledger.drop(task.task_id, reason), "dropping")

    async def _send(self, tasks: list[ServiceTask]) -> None:
        if not tasks:
            return
        headers: Headers = [("content-type", b"application/json")]
        payloads = {t.task_id: task_bytes(t) for t in tasks}
        messages: list[tuple[str, bytes | None, bytes | None, Headers | None]] = [
            (self.topic, t.subscriber_id.encode(), payloads[t.task_id], headers) for t in tasks
        ]
        await with_retry(
            lambda: produce_all(self.producer, messages),
            Dependency.KAFKA,
            self.metrics,
            "publishing tasks",
        )
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        ids = [t.task_id for t in tasks]
        meta = {t.task_id: sent_meta(t) for t in tasks}
        bodies = {
            t.task_id: (
                payloads[t.task_id],
                int((t.expires_at - now).total_seconds()) + _BODY_GRACE_S,
            )
            for t in tasks
        }
        await self._redis(
            lambda: self.ledger.confirm(ids, meta, bodies), "confirming published tasks"
        )
        for task in tasks:
            self.metrics.published.labels(task.moment.type, task.channel.value).inc()
            self.metrics.event_to_task.observe(max(0.0, (now - task.triggered_at).total_seconds()))
