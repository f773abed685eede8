"""Capacity per region, channel and local day, with a share reserved for priorities 1-2.

Limits come from the dispatch policy (`capacity:` in the YAML file named by
`MOMENTS_DISPATCH_POLICY`): a region's own, or the `"*"` pool all the regions it does not
list share. On the stream each (region or `*`, channel, day) is a Redis set of
the task ids that took a slot (`moments:<app>:cap:<region>:<channel>:<YYYY-MM-DD>`, kept
2 days): taking a slot is idempotent per task id, so a re-driven or retried task never
counts twice, and the check and the add are one Lua script, so workers never over-book.
The backtest keeps the same sets in memory (sinks.memory).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from moments.models import Channel, ServiceTask
from sinks.luabatch import BatchScript
from sinks.policy import ANY, DispatchPolicy
from sinks.stores import SlotKey, Slots

HIGH_PRIORITY = 2  # priorities 1..HIGH_PRIORITY may use the reserved share
_KEEP_S = 2 * 86400

# K: set; A: task id, allowed; S: ttl (sinks.luabatch). Returns {taken 0/1, used}.
_TAKE = """
if redis.call('SISMEMBER', K[1], A[1]) == 1 then
  return {1, redis.call('SCARD', K[1])}
end
local used = redis.call('SCARD', K[1])
if used < tonumber(A[2]) then
  redis.call('SADD', K[1], A[1])
  redis.call('EXPIRE', K[1], S[1])
  return {1, used + 1}
end
return {0, used}
"""


def allowed_for(limit: int, reserved_share: float, priority: int) -> int:
    """How many slots a task of this priority may fill: all for priorities 1-2, the
    unreserved part for the rest."""
    if priority <= HIGH_PRIORITY:
        return limit
    return limit - math.ceil(limit * reserved_share)


def claim_order(tasks: Sequence[ServiceTask]) -> tuple[int, float, dt.datetime, str]:
    """Which of several tasks released together takes capacity first: the highest
    priority (the one the reserved share serves, raised already by a high churn risk),
    then the highest risk score, then the oldest moment (`tasks`: a task and the moments
    merged into it, ranked by their best).

    A night's calls held for the centre's opening (`channel_hours`) or deferred to
    `next_day_at` all come due at once and went out in task-id order (the queue's order
    for one release time): with the morning's slots short, low-priority courtesy calls
    took them before a complaint callback."""
    return (
        min(t.priority for t in tasks),
        -max((t.risk.score if t.risk is not None else 0.0) for t in tasks),
        min(t.triggered_at for t in tasks),
        tasks[0].task_id,
    )


_RISK_STEPS = 10_000  # risk scores (0-100) to the hundredth
_SECONDS = 2**33  # triggered_at to the second, up to the year 2242


def rank_score(tasks: Sequence[ServiceTask]) -> float:
    """`claim_order` as one number, lower first, for the deferral queue's `due` set
    (`Deferrals.release` hands out the highest ranked of everything due): the priority,
    then the risk score to the hundredth, then the oldest moment to the second; ties go
    by task id (a sorted set orders equal scores by member). Exact as a double (under
    2**53), and above any epoch second (priority >= 1), so a task parked without one (by
    an earlier version) ranks by its due time, before every ranked one. Within a
    release the sink sorts by `claim_order` itself, so the rounding only matters between
    tasks released in different calls."""
    if len(tasks) == 1:  # nearly every call (each fresh task's join): no claim_order
        task = tasks[0]
        priority, triggered = task.priority, task.triggered_at
        risk = -task.risk.score if task.risk is not None else -0.0
    else:
        priority, risk, triggered, _ = claim_order(tasks)
    steps = round(min(max(100.0 + risk, 0.0), 100.0) * _RISK_STEPS / 100)
    second = min(max(int(triggered.timestamp()), 0), _SECONDS - 1)
    return float((min(max(priority, 1), 7) * (_RISK_STEPS + 1) + steps) * _SECONDS + second)


RANK_SECONDS = _SECONDS
RANK_RISKS = _RISK_STEPS + 1
"""A rank is (priority * RANK_RISKS + risk steps) * RANK_SECONDS + second."""
RANKED = RANK_RISKS * RANK_SECONDS
"""The lowest rank `rank_score` gives (priority 1, risk 100, the epoch); below it, a due
time (a task an earlier version parked without a rank)."""


def merged_rank(a: float, b: float) -> float:
    """The rank of two waiting tasks' moments merged (`Joining.rank` into the carrier's),
    as `rank_score` gives for them all: their best priority, their highest risk and their
    oldest moment, each of its own, not the better of the two ranks (a priority-1
    callback at 23:00 joining a call of risk 60 made at 21:00 ranks as priority 1, risk
    60, 21:00, as `claim_order` ranks the group once released). Either not a rank (a due
    time): the lower. The deferral queue's join script (`sinks.deferral`) does the same
    in Lua; exact, as all the parts are integers under 2**53."""
    if a < RANKED or b < RANKED:
        return min(a, b)
    steps_a, second_a = divmod(int(a), RANK_SECONDS)
    steps_b, second_b = divmod(int(b), RANK_SECONDS)
    priority_a, risk_a = divmod(steps_a, RANK_RISKS)
    priority_b, risk_b = divmod(steps_b, RANK_RISKS)
    steps = min(priority_a, priority_b) * RANK_RISKS + min(risk_a, risk_b)
    return float(steps * RANK_SECONDS + min(second_a, second_b))


def local_day(at: dt.datetime, zone: ZoneInfo) -> dt.date:
    return at.astimezone(zone).date()


def next_day_start(at: dt.datetime, zone: ZoneInfo, start: dt.time) -> dt.datetime:
    """`start` o'clock on the local day after `at`'s (wall-clock, so DST days are right)."""
    day = local_day(at, zone) + dt.timedelta(days=1)
    return dt.datetime.combine(day, start, tzinfo=zone)


@dataclass(frozen=True)
class Slot:
    taken: bool
    left: int | None  # None: unlimited
    pool: str | None = None
    """The region whose slots it was (`"*"`: every region the policy does not list)."""


class RedisSlots:
    """Each counter a Redis set of the task ids that took a slot, kept 2 days."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._take = BatchScript(redis, _TAKE, keys=1, args=2)

    def key(self, key: SlotKey) -> str:
        return f"{self.prefix}cap:{key.region or ANY}:{key.channel.value}:{key.day.isoformat()}"

    async def take(self, key: SlotKey, task_id: str, allowed: int) -> tuple[bool, int]:
        return (await self.take_many([(key, task_id, allowed)]))[0]

    async def take_many(self, items: Sequence[tuple[SlotKey, str, int]]) -> list[tuple[bool, int]]:
        """`take` for each item in one call, in this order."""
        calls = [((self.key(key),), (task_id, allowed)) for key, task_id, allowed in items]
        replies = await self._take.run(calls, shared=(_KEEP_S,)) if calls else []
        return [(bool(taken), int(used)) for taken, used in replies]


class CapacityLimiter:
    """The policy's limit for a task's region, channel, priority and local day, over
    whichever `Slots` store the sink was given."""

    def __init__(self, slots: Slots, policy: DispatchPolicy) -> None:
        self.slots = slots
        self.policy = policy

    async def take(
        self, task_id: str, region: str | None, channel: Channel, priority: int, at: dt.datetime
    ) -> Slot:
        """Take a slot for the task on `at`'s local day; `taken` False when full."""
        return (await self.take_many([(task_id, region, channel, priority)], at))[0]

    async def take_many(
        self, requests: Sequence[tuple[str, str | None, Channel, int]], at: dt.datetime
    ) -> list[Slot]:
        """`take` for each (task id, region, channel, priority), in this order, with one
        store call for all the limited ones."""
        slots: list[Slot | None] = []
        calls: list[tuple[SlotKey, str, int]] = []
        pools: list[tuple[str, int]] = []
        day = local_day(at, self.policy.zone)
        for task_id, region, channel, priority in requests:
            pool = self.policy.pool(region, channel)
            if pool is None:
                slots.append(Slot(True, None))
                continue
            slots.append(None)
            allowed = allowed_for(pool[1], self.policy.reserved_share, priority)
            calls.append((SlotKey(pool[0], channel, day), task_id, allowed))
            pools.append(pool)
        taken = iter(zip(await self.slots.take_many(calls) if calls else [], pools, strict=True))
        out: list[Slot] = []
        for slot in slots:
            if slot is None:
                (ok, used), (name, limit) = next(taken)
                slot = Slot(ok, max(0, limit - used), name)
            out.append(slot)
        return out
