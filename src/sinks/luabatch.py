"""Lua scripts that run once per item for a whole list of items in one call.

A pipeline of one script call per task cost the dispatch sink ~3 Redis commands per
task, and redis-py packs and parses each command in Python: about 60% of the sink's
CPU. Here a step's items travel as one EVALSHA: the script's body (`one`, reading its
keys from `K`, its arguments from `A`, and the keys and arguments common to all items
from `SK` and `S`) runs for each item in order, and the replies come back as one list.

All items run in one script, so they are also atomic together. The ledger wants a
single Redis anyway (docs/architecture.md): keys of many slots in one script would not do
on Redis Cluster, which `moments.connections.probe_redis` refuses at connect time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

CHUNK = 1000
"""Most items per call: a script blocks Redis while it runs (~5-10 µs an item)."""

_WRAPPER = """
local function one(K, A, S, SK)
%s
end
local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local ns, nsk = tonumber(ARGV[3]), tonumber(ARGV[4])
local S, SK = {}, {}
for j = 1, ns do S[j] = ARGV[4 + j] end
for j = 1, nsk do SK[j] = KEYS[j] end
local out = {}
local n = (#ARGV - 4 - ns) / na
for i = 0, n - 1 do
  local K, A = {}, {}
  for j = 1, nk do K[j] = KEYS[nsk + i * nk + j] end
  for j = 1, na do A[j] = ARGV[4 + ns + i * na + j] end
  local r = one(K, A, S, SK)
  if r == nil then r = false end
  out[i + 1] = r
end
return out
"""


def _wire(values: list[Any]) -> list[Any]:
    """`values` with each text as its UTF-8 bytes, as redis-py would send it (its default
    encoding, strict), other values as they are (redis-py writes numbers itself and
    refuses a bool). Encoded here, one pass a call: redis-py's encoder tests each text's
    type five times in Python before it encodes it, and a call's items carry ~20 keys and
    arguments each (the ledger's settle: 24), most of them text."""
    return [value.encode() if value.__class__ is str else value for value in values]


class BatchScript:
    """A per-item Lua body, run for many items per call.

    `keys` and `args` give how many keys and arguments each item has; a body returning
    nil or false gives None for that item. Keys every item uses (the pending index) go
    once, as `shared_keys`."""

    def __init__(self, redis: Redis, body: str, keys: int, args: int) -> None:
        if args < 1:
            raise ValueError("each item needs at least one argument (the count is by ARGV)")
        self.keys = keys
        self.args = args
        self._script: AsyncScript = redis.register_script(_WRAPPER % body)

    async def run(
        self,
        items: Sequence[tuple[Sequence[Any], Sequence[Any]]],
        shared: Sequence[Any] = (),
        shared_keys: Sequence[Any] = (),
    ) -> list[Any]:
        """Each item's (keys, args) through the body, in order; its replies in order."""
        out: list[Any] = []
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            keys: list[Any] = list(shared_keys)
            args: list[Any] = [self.keys, self.args, len(shared), len(shared_keys), *shared]
            for item_keys, item_args in chunk:
                if len(item_keys) != self.keys or len(item_args) != self.args:
                    raise ValueError(
                        f"an item has {len(item_keys)} key(s) and {len(item_args)} argument(s);"
                        f" this script takes {self.keys} and {self.args}"
                    )
                keys.extend(item_keys)
                args.extend(item_args)
            replies = await self._script(keys=_wire(keys), args=_wire(args))
            out.extend(replies)
        return out
