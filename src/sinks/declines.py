"""`declined` outcomes on the stream: the same rule is not sent to that subscriber for a
while (`moments:<app>:declined:<subscriber>:<rule id>`, expiring on the Redis clock), the
rules a subscriber declined listed beside them (`declined-rules:<subscriber>`), so that a
profile tombstone finds them all, a rule no longer loaded included."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis


class RedisDeclines:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, subscriber_id: str, rule_id: str) -> str:
        return f"{self.prefix}declined:{subscriber_id}:{rule_id}"

    def rules_key(self, subscriber_id: str) -> str:
        """The rule ids the subscriber declined (a set), kept as long as the latest decline."""
        return f"{self.prefix}declined-rules:{subscriber_id}"

    async def suppress(self, subscriber_id: str, rule_id: str, seconds: float) -> None:
        ttl = max(1, int(seconds))
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.key(subscriber_id, rule_id), b"1", ex=ttl)
        pipe.sadd(self.rules_key(subscriber_id), rule_id)
        pipe.expire(self.rules_key(subscriber_id), ttl)
        await pipe.execute()

    async def suppressed(self, subscriber_id: str, rule_id: str) -> bool:
        return bool(await self.redis.exists(self.key(subscriber_id, rule_id)))

    async def suppressed_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """One MGET for all pairs (the keys hold b"1" while they live)."""
        if not pairs:
            return []
        values = await self.redis.mget([self.key(sub, rule) for sub, rule in pairs])
        return [v is not None for v in values]

    async def forget(self, subscriber_ids: Sequence[str], rule_ids: Sequence[str]) -> None:
        """Erase the subscribers' declines: of these rules (those loaded) and of the rules
        their `rules_key` lists (one removed or renamed since; a decline written before
        that list was kept is found only among the loaded rules, and expires on its own)."""
        if not subscriber_ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        for sub in subscriber_ids:
            pipe.smembers(self.rules_key(sub))
        listed: list[set[bytes | str]] = await pipe.execute()
        keys = {
            self.key(sub, rule.decode() if isinstance(rule, bytes) else rule)
            for sub, declined in zip(subscriber_ids, listed, strict=True)
            for rule in [*rule_ids, *declined]
        }
        await self.redis.delete(*keys, *(self.rules_key(sub) for sub in subscriber_ids))
