"""The Redis dedup ledger: no task id is published twice, none is lost in a crash.

Protocol per task id (see docs/architecture.md, "Exactly once out"):
1. `SET task:<id> P<payload> NX EX ttl` and `ZADD pending <now> <id>`: whoever sets it
   owns the publish; a second worker or a replay finds the key and stands down.
2. Produce the task and await the broker's acknowledgement.
3. `SET task:<id> S XX KEEPTTL` and `ZREM pending <id>`.
A crash between 1 and 3 leaves a pending entry with its payload; any worker re-drives
entries older than a grace period (claimed atomically), with the same task id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

PENDING = b"P"
SENT = b"S"

# Re-score an entry only if it is still stale, so exactly one worker claims it.
_CLAIM_STALE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


class TaskLedger:
    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.pending_key = f"{prefix}pending"
        self._claim_stale = redis.register_script(_CLAIM_STALE)

    def key(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    async def claim(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Mark each (task id, payload) pending; True where this caller now owns it."""
        if not items:
            return []
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for task_id, payload in items:
            pipe.set(self.key(task_id), PENDING + payload, nx=True, ex=self.ttl)
        results = await pipe.execute()
        owned = {task_id: now for (task_id, _), ok in zip(items, results, strict=True) if ok}
        if owned:
            await self.redis.zadd(self.pending_key, owned)
        return [bool(ok) for ok in results]

    async def confirm(self, task_ids: Sequence[str]) -> None:
        """Record that these tasks were acknowledged by the broker."""
        if not task_ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.set(self.key(task_id), SENT, xx=True, keepttl=True)
        pipe.zrem(self.pending_key, *task_ids)
        await pipe.execute()

    async def claim_stale(self, older_than: float, limit: int = 500) -> list[tuple[str, bytes]]:
        """Pending entries older than `older_than` seconds, claimed by this caller."""
        now = time.time()
        cutoff = now - older_than
        ids: list[Any] = await self.redis.zrangebyscore(
            self.pending_key, "-inf", cutoff, start=0, num=limit
        )
        claimed: list[tuple[str, bytes]] = []
        for raw_id in ids:
            task_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            ok = await self._claim_stale(keys=[self.pending_key], args=[task_id, cutoff, now])
            if not ok:
                continue
            value = await self._get(task_id)
            if value is None or not value.startswith(PENDING):
                # Expired, or confirmed by another worker meanwhile: nothing to re-drive.
                await self.redis.zrem(self.pending_key, task_id)
                continue
            claimed.append((task_id, value[1:]))
        return claimed

    async def _get(self, task_id: str) -> bytes | None:
        value: bytes | str | None = await self.redis.get(self.key(task_id))
        return value.encode() if isinstance(value, str) else value

    async def pending_count(self) -> int:
        return int(await self.redis.zcard(self.pending_key))

    async def state(self, task_id: str) -> str | None:
        """'pending', 'sent' or None: for tests and the `tasks` tools."""
        value = await self._get(task_id)
        if value is None:
            return None
        return "pending" if value.startswith(PENDING) else "sent"
