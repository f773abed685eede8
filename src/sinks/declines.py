"""`declined` outcomes on the stream: the same rule is not sent to that subscriber for a
while (`moments:<app>:declined:<subscriber>:<rule id>`, expiring on the Redis clock)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis


class RedisDeclines:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, subscriber_id: str, rule_id: str) -> str:
        return f"{self.prefix}declined:{subscriber_id}:{rule_id}"

    async def suppress(self, subscriber_id: str, rule_id: str, seconds: float) -> None:
        await self.redis.set(self.key(subscriber_id, rule_id), b"1", ex=max(1, int(seconds)))

    async def suppressed(self, subscriber_id: str, rule_id: str) -> bool:
        return bool(await self.redis.exists(self.key(subscriber_id, rule_id)))

    async def suppressed_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """One MGET for all pairs (the keys hold b"1" while they live)."""
        if not pairs:
            return []
        values = await self.redis.mget([self.key(sub, rule) for sub, rule in pairs])
        return [v is not None for v in values]

    async def forget(self, subscriber_ids: Sequence[str], rule_ids: Sequence[str]) -> None:
        """Erase the subscribers' declines of these rules (the catalog's: a decline of a
        rule removed since expires on its own)."""
        keys = [self.key(sub, rule) for sub in subscriber_ids for rule in rule_ids]
        if keys:
            await self.redis.delete(*keys)
