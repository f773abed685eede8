"""Contact policy and merge window: how often one subscriber is contacted, and how
several moments of one subscriber become one task.

- At most N contacts per subscriber per period across all rules: a Redis sorted set per
  subscriber (`moments:<app>:contacts:<subscriber>`, task id scored by send time).
  Taking a contact is idempotent per task id and atomic (Lua).
- Merge: `merge_tasks` (pure) turns a waiting task and the tasks that joined it into one
  task carrying the highest-priority moment, the others listed in `related`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from moments.models import Channel, RelatedMoment, ServiceTask
from sinks.luabatch import BatchScript
from sinks.policy import ContactPolicy
from sinks.stores import ContactBook

# K: zset; A: task id, now, '1' to look only; S: period, max (sinks.luabatch).
# Returns {taken (or would be) 0/1, epoch when a slot frees}.
_CONTACT = """
redis.call('ZREMRANGEBYSCORE', K[1], '-inf', tonumber(A[2]) - tonumber(S[1]))
if redis.call('ZSCORE', K[1], A[1]) then return {1, '0'} end
if redis.call('ZCARD', K[1]) < tonumber(S[2]) then
  if A[3] ~= '1' then
    redis.call('ZADD', K[1], A[2], A[1])
    redis.call('EXPIRE', K[1], math.ceil(tonumber(S[1])))
  end
  return {1, '0'}
end
local oldest = redis.call('ZRANGE', K[1], 0, 0, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + tonumber(S[1]))}
"""

# K: zset; A: from id, to id. The contact `from` made, as `to`'s (same time).
_MOVE = """
local at = redis.call('ZSCORE', K[1], A[1])
if not at then return 0 end
redis.call('ZADD', K[1], at, A[2])
redis.call('ZREM', K[1], A[1])
return 1
"""

# K: zset; A: task id, when; S: period, now. A contact made at `when` (given back, then
# said made after all), counted again unless counted or aged out; the key's TTL runs to
# its end at least.
_TAKE_BACK = """
local at, period, now = tonumber(A[2]), tonumber(S[1]), tonumber(S[2])
if at <= now - period then return 0 end
if redis.call('ZSCORE', K[1], A[1]) then return 0 end
redis.call('ZADD', K[1], at, A[1])
local left = math.ceil(at + period - now)
if redis.call('TTL', K[1]) < left then redis.call('EXPIRE', K[1], left) end
return 1
"""


@dataclass(frozen=True)
class Contact:
    taken: bool
    free_at: float | None = None  # epoch seconds when the next contact is allowed
    reason: str = "contact_cap"
    """Which cap refused it: `contact_cap` (dispatch policy) or `frequency_cap` (rules)."""


class RedisContactBook:
    """A sorted set per subscriber, task id scored by contact time; one Lua step."""

    def __init__(self, redis: Redis, prefix: str, name: str = "contacts") -> None:
        self.redis = redis
        self.prefix = f"{prefix}{name}:"
        self._take = BatchScript(redis, _CONTACT, keys=1, args=3)
        self._move = BatchScript(redis, _MOVE, keys=1, args=2)
        self._take_back = BatchScript(redis, _TAKE_BACK, keys=1, args=2)

    def key(self, subscriber_id: str) -> str:
        return f"{self.prefix}{subscriber_id}"

    async def take(
        self, subscriber_id: str, task_id: str, now: float, period_s: float, max_contacts: int
    ) -> float | None:
        return (await self.take_many([(subscriber_id, task_id, now)], period_s, max_contacts))[0]

    async def give_back(self, subscriber_id: str, task_id: str) -> None:
        await self.redis.zrem(self.key(subscriber_id), task_id)

    async def take_many(
        self,
        items: Sequence[tuple[str, str, float]],
        period_s: float,
        max_contacts: int,
        look: bool = False,
    ) -> list[float | None]:
        """`take` for each (subscriber id, task id, now), in one call, in this order;
        `look`: only say whether each would be taken, taking nothing."""
        flag = "1" if look else "0"
        calls = [((self.key(sub),), (task_id, now, flag)) for sub, task_id, now in items]
        replies = await self._take.run(calls, shared=(period_s, max_contacts)) if calls else []
        return [None if taken else float(free_at) for taken, free_at in replies]

    async def give_back_many(self, items: Sequence[tuple[str, str]]) -> None:
        """`give_back` for each (subscriber id, task id), in one pipeline."""
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        for subscriber_id, task_id in items:
            pipe.zrem(self.key(subscriber_id), task_id)
        await pipe.execute()

    async def move_many(self, items: Sequence[tuple[str, str, str]]) -> None:
        """For each (subscriber id, task id, other task id): the contact the task took, if
        any, becomes the other's, at the same time; in one call."""
        calls = [((self.key(sub),), (old, new)) for sub, old, new in items]
        if calls:
            await self._move.run(calls)

    async def take_back_many(
        self, items: Sequence[tuple[str, str, float]], period_s: float, now: float
    ) -> None:
        """See `sinks.stores.ContactBook.take_back_many`: one call."""
        calls = [((self.key(sub),), (task_id, at)) for sub, task_id, at in items]
        if calls:
            await self._take_back.run(calls, shared=(period_s, now))

    async def forget(self, subscriber_ids: Sequence[str]) -> None:
        """Erase the subscribers' contact history."""
        if subscriber_ids:
            await self.redis.delete(*(self.key(s) for s in subscriber_ids))


class ContactLimiter:
    """The contact policy over whichever `ContactBook` the sink was given."""

    def __init__(
        self, book: ContactBook, policy: ContactPolicy, reason: str = "contact_cap"
    ) -> None:
        self.book = book
        self.policy = policy
        self.reason = reason

    async def take(self, task_id: str, subscriber_id: str, now: float) -> Contact:
        if self.policy.max_contacts <= 0:
            return Contact(True)
        free_at = await self.book.take(
            subscriber_id,
            task_id,
            now,
            self.policy.period.total_seconds(),
            self.policy.max_contacts,
        )
        return Contact(True) if free_at is None else Contact(False, free_at, self.reason)

    async def give_back(self, task_id: str, subscriber_id: str) -> None:
        """Undo `take` for a task that was not sent after all (capacity)."""
        if self.policy.max_contacts > 0:
            await self.book.give_back(subscriber_id, task_id)

    @property
    def capped(self) -> bool:
        return self.policy.max_contacts > 0

    async def take_many(
        self, items: Sequence[tuple[str, str, float]], look: bool = False
    ) -> list[Contact]:
        """`take` for each (task id, subscriber id, now), with one store call; `look`:
        whether each would be taken, taking nothing."""
        if not self.capped or not items:
            return [Contact(True) for _ in items]
        frees = await self.book.take_many(
            [(sub, task_id, now) for task_id, sub, now in items],
            self.policy.period.total_seconds(),
            self.policy.max_contacts,
            look,
        )
        return [Contact(True) if f is None else Contact(False, f, self.reason) for f in frees]

    async def give_back_many(self, items: Sequence[tuple[str, str]]) -> None:
        """`give_back` for each (task id, subscriber id), with one store call."""
        if self.capped and items:
            await self.book.give_back_many([(sub, task_id) for task_id, sub in items])

    async def move_many(self, items: Sequence[tuple[str, str, str]]) -> None:
        """For each (task id, other task id, subscriber id): the contact the task took is
        the other's (part of a merged group sent under another id), with one store call."""
        if self.capped and items:
            await self.book.move_many([(sub, old, new) for old, new, sub in items])


_PERSONAL = {Channel.MANAGER: 0, Channel.OUTBOUND_CALL: 1, Channel.SMS: 2, Channel.APP_PUSH: 3}
"""Which channel leads a merged task: a person can tell the customer everything an SMS
would, not the other way round."""


def _rank(task: ServiceTask) -> tuple[int, int, dt.datetime, str]:
    return (_PERSONAL[task.channel], task.priority, task.triggered_at, task.task_id)


def lead_of(tasks: Sequence[ServiceTask]) -> ServiceTask:
    """The task that leads them merged: on the most personal channel, then the highest
    priority, the earliest."""
    return min(tasks, key=_rank)


def related_of(task: ServiceTask) -> list[RelatedMoment]:
    """The task's leading moment, under its own id (`moment_id`: a merged task's id is its
    group's), and what was already merged into it, as related moments."""
    own = RelatedMoment(
        task_id=task.moment_id or task.task_id,
        moment=task.moment,
        priority=task.priority,
        channel=task.channel,
        action=task.action,
        triggered_at=task.triggered_at,
        expires_at=task.expires_at,
        evidence=task.evidence,
    )
    return [own, *(task.related or [])]


def merge_tasks(carrier_id: str, tasks: Sequence[ServiceTask]) -> ServiceTask:
    """One task for several moments of one subscriber.

    It keeps the id of the task that waited (`carrier_id`, the ledger entry that is
    published) and its deferral, takes moment, channel and action from the task on the
    most personal channel (a manager, a call, an SMS, a push; then the highest priority,
    the earliest), the highest priority of them all, delivers no earlier than any of
    them wanted and expires with the last of them, and lists the other moments with
    their evidence and expiry. Its `moment_id` is the leading moment's own (the carrier's
    id named the lead's moment while the carrier's own moment was in `related` under the
    same id; dispatch consumer review). Leading by priority alone turned a held complaint callback
    into an SMS when an older SMS moment of the same priority joined it: no one made the
    call (dispatch review)."""
    if not tasks:
        raise ValueError("merge_tasks needs at least one task")
    if len(tasks) == 1:
        return tasks[0]
    ordered = sorted(tasks, key=_rank)
    top = ordered[0]
    # Once per moment: a group released again (capacity, contact cap) holds the carrier
    # as merged before *and* the members it merged, which it lists already.
    seen = {top.moment_id or top.task_id}
    related = []
    for r in [r for t in ordered[1:] for r in related_of(t)] + list(top.related or []):
        if r.task_id not in seen:
            seen.add(r.task_id)
            related.append(r)
    carrier = next((t for t in tasks if t.task_id == carrier_id), top)
    return top.model_copy(
        update={
            "task_id": carrier_id,
            "priority": min(t.priority for t in tasks),
            "deliver_after": max(t.deliver_after for t in tasks),
            "expires_at": max(t.expires_at for t in tasks),
            "deferred": carrier.deferred or next((t.deferred for t in ordered if t.deferred), None),
            "evidence": top.evidence,
            "related": related,
        }
    )
