"""The deferral queue: tasks that may not be delivered yet wait in Redis, by `deliver_after`.

Keys (prefix `moments:<app>:`):
- `deferred`: sorted set, task id scored by the epoch second it may be released;
- `task:<id>` (the ledger entry) holds `D<payload>` while the task waits, so the payload
  lives exactly as long as the dedup mark and a replay still finds the task;
- `open:<subscriber>`: the id of the subscriber's waiting task that later moments within
  the merge window join (`group:<id>` lists their payloads; their own entries say `M<id>`).

Every transition is one Lua script, so a crash never leaves a task in two places or in
none, and two workers releasing at once each get different tasks. Release moves a task
back to `P` (pending) before returning it: a worker that dies before publishing leaves a
pending entry the ledger's re-drive sends later.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from sinks.ledger import TaskLedger
from sinks.stores import Parking, Released

# KEYS: task, pending, deferred, open; ARGV: id, payload, release_at, window_ms, task prefix
_PARK = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local state = string.sub(v, 1, 1)
if state ~= 'P' and state ~= 'D' then return 0 end
redis.call('SET', KEYS[1], 'D' .. ARGV[2], 'XX', 'KEEPTTL')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
local carrier = redis.call('GET', KEYS[4])
local open = false
if carrier then
  local cv = redis.call('GET', ARGV[5] .. carrier)
  open = cv and string.sub(cv, 1, 1) == 'D'
end
if not open then redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[4]) end
return 1
"""

# KEYS: task, pending, open; ARGV: id, payload, task prefix, group prefix, ttl
# Returns the carrier's id when the task joined (or had joined) a waiting task, else nil.
_JOIN = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'M' then return string.sub(v, 2) end
if not v or string.sub(v, 1, 1) ~= 'P' then return false end
local carrier = redis.call('GET', KEYS[3])
if not carrier or carrier == ARGV[1] then return false end
local cv = redis.call('GET', ARGV[3] .. carrier)
if not cv or string.sub(cv, 1, 1) ~= 'D' then return false end
redis.call('RPUSH', ARGV[4] .. carrier, ARGV[2])
redis.call('EXPIRE', ARGV[4] .. carrier, ARGV[5])
redis.call('SET', KEYS[1], 'M' .. carrier, 'XX', 'KEEPTTL')
redis.call('ZREM', KEYS[2], ARGV[1])
return carrier
"""

# KEYS: deferred, pending; ARGV: now, limit, task prefix, group prefix
# Returns {id, payload, {member payloads}} for each task moved from D to P.
_RELEASE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  local v = redis.call('GET', key)
  if v and string.sub(v, 1, 1) == 'D' then
    local payload = string.sub(v, 2)
    redis.call('SET', key, 'P' .. payload, 'XX', 'KEEPTTL')
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    table.insert(out, {id, payload, redis.call('LRANGE', ARGV[4] .. id, 0, -1)})
  end
end
return out
"""


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class DeferralQueue:
    def __init__(self, redis: Redis, ledger: TaskLedger) -> None:
        self.redis = redis
        self.ledger = ledger
        self.prefix = ledger.prefix
        self.key = f"{ledger.prefix}deferred"
        self._park = redis.register_script(_PARK)
        self._join = redis.register_script(_JOIN)
        self._release = redis.register_script(_RELEASE)

    def open_key(self, subscriber_id: str) -> str:
        return f"{self.prefix}open:{subscriber_id}"

    async def park(
        self,
        task_id: str,
        subscriber_id: str,
        payload: bytes,
        release_at: float,
        merge_window_s: float,
    ) -> bool:
        """Move an owned (pending) task into the queue until `release_at` (epoch seconds);
        it becomes the subscriber's open merge group for `merge_window_s` unless one is open.
        False when the entry is no longer ours (settled or forgotten)."""
        item = Parking(task_id, subscriber_id, payload, release_at, merge_window_s)
        return bool(await self._park_call(item, self.redis))

    async def park_many(self, items: Sequence[Parking]) -> list[bool]:
        """`park` for each item, in one pipeline."""
        if not items:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for item in items:
            await self._park_call(item, pipe)
        return [bool(ok) for ok in await pipe.execute()]

    async def _park_call(self, item: Parking, client: Any) -> Any:
        return await self._park(
            keys=[
                self.ledger.key(item.task_id),
                self.ledger.pending_key,
                self.key,
                self.open_key(item.subscriber_id),
            ],
            args=[
                item.task_id,
                item.payload,
                item.release_at,
                max(1, int(item.merge_window_s * 1000)),
                f"{self.prefix}task:",
            ],
            client=client,
        )

    async def join(self, task_id: str, subscriber_id: str, payload: bytes) -> str | None:
        """Merge an owned task into the subscriber's waiting task, if one is open;
        returns that task's id (the same on a repeated call), else None."""
        carrier = await self._join_call(task_id, subscriber_id, payload, self.redis)
        return None if carrier is None else _bytes(carrier).decode()

    async def join_many(self, items: Sequence[tuple[str, str, bytes]]) -> list[str | None]:
        """`join` for each (task id, subscriber id, payload), in one pipeline."""
        if not items:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for task_id, subscriber_id, payload in items:
            await self._join_call(task_id, subscriber_id, payload, pipe)
        return [None if c is None else _bytes(c).decode() for c in await pipe.execute()]

    async def _join_call(
        self, task_id: str, subscriber_id: str, payload: bytes, client: Any
    ) -> Any:
        return await self._join(
            keys=[self.ledger.key(task_id), self.ledger.pending_key, self.open_key(subscriber_id)],
            args=[
                task_id,
                payload,
                f"{self.prefix}task:",
                f"{self.prefix}group:",
                self.ledger.ttl,
            ],
            client=client,
        )

    async def release(self, now: float | None = None, limit: int = 500) -> list[Released]:
        """Take the tasks due by `now`; each goes to exactly one caller."""
        at = time.time() if now is None else now
        raw: Sequence[Any] = await self._release(
            keys=[self.key, self.ledger.pending_key],
            args=[at, limit, f"{self.prefix}task:", f"{self.prefix}group:"],
        )
        return [
            Released(_bytes(item[0]).decode(), _bytes(item[1]), [_bytes(m) for m in item[2]])
            for item in raw
        ]

    async def waiting(self) -> int:
        return int(await self.redis.zcard(self.key))

    async def due_at(self, task_id: str) -> float | None:
        score: float | None = await self.redis.zscore(self.key, task_id)
        return score
