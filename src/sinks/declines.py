"""`declined` outcomes on the stream: the same rule is not sent to that subscriber for a
while (`moments:<app>:declined:<subscriber>:<rule id>`, expiring on the Redis clock), the
rules a subscriber declined listed beside them (`declined-rules:<subscriber>`), so that a
profile tombstone finds them all, a rule no longer loaded included."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

# KEYS: the decline, the subscriber's declined rules; ARGV: rule id, seconds. The list
# lives as long as its longest decline: given the latest one's time, a shorter
# `declined_suppress` (a policy changed, two during its rollout) let it go while an
# earlier decline held, which a tombstone then found only were its rule still loaded.
_SUPPRESS = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1
"""


class RedisDeclines:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._suppress = redis.register_script(_SUPPRESS)

    def key(self, subscriber_id: str, rule_id: str) -> str:
        return f"{self.prefix}declined:{subscriber_id}:{rule_id}"

    def rules_key(self, subscriber_id: str) -> str:
        """The rule ids the subscriber declined (a set), kept as long as the longest-lived
        decline (`_SUPPRESS`)."""
        return f"{self.prefix}declined-rules:{subscriber_id}"

    async def suppress(self, subscriber_id: str, rule_id: str, seconds: float) -> None:
        keys = [self.key(subscriber_id, rule_id), self.rules_key(subscriber_id)]
        await self._suppress(keys=keys, args=[rule_id, max(1, int(seconds))])

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
