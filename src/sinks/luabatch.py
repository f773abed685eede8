"""Lua scripts that run once per item for a whole list of items in one call.

A pipeline of one script call per task cost the dispatch sink ~3 Redis commands per
task, and redis-py packs and parses each command in Python: about 60% of the sink's
CPU. Here a step's items travel as one EVALSHA: the script's body (`one`, reading its
keys from `K`, its arguments from `A`, and the keys and arguments common to all items
from `SK` and `S`) runs for each item in order, and the replies come back as one list.
The EVALSHA is packed in one C call and sent on a pooled connection (`_round_trip`), not
through redis-py's packing, which costs Python calls a key or argument.

All items run in one script, so they are also atomic together. The ledger wants a
single Redis anyway (docs/architecture.md): keys of many slots in one script would not do
on Redis Cluster, which `moments.connections.probe_redis` refuses at connect time.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

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


def _packed(command: Sequence[Any]) -> bytes:
    """`command` in the Redis protocol, packed in one C call (hiredis, which redis-py packs
    with too): the bytes redis-py would write for it, each text as UTF-8 (strict), each
    number as `repr` writes it (tests/unit/test_luabatch_wire.py). redis-py's own packing
    costs ~6 Python calls a key or argument (its encoder tests each value's type, its
    packer walks them twice), and a call's items carry ~20 each (the ledger's settle: 24).
    A value redis-py refuses is refused too: a bool, None, any other type (TypeError)."""
    return hiredis.pack_command(tuple(command))  # type: ignore[no-any-return]  # untyped


async def _round_trip(redis: Redis, command: bytes) -> Any:
    """Send a packed command on one of `redis`'s pooled connections and read its reply, as
    `Redis.execute_command` does: retried by the connection's retry policy (a connection
    error or timeout disconnects it, the next try connects again; so a script whose
    reply was lost can run twice, as through redis-py), the reply read by the client's
    `parse_response` (an error reply raised: NOSCRIPT as `NoScriptError`). A pooled
    connection always, never a single-connection client's own (its lock is redis-py's)."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def once() -> Any:
        await connection.send_packed_command(command)
        return await redis.parse_response(connection, "EVALSHA")

    async def failed(_: Exception) -> None:
        await connection.disconnect()

    try:
        return await connection.retry.call_with_retry(once, failed)
    finally:
        await pool.release(connection)


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
        self._redis = redis
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
            item_keys = [keys for keys, _ in chunk]
            item_args = [args for _, args in chunk]
            # Lengths taken by map, in C: a check of the whole chunk, not a call an item.
            if set(map(len, item_keys)) - {self.keys} or set(map(len, item_args)) - {self.args}:
                self._refuse(chunk)
            keys = [*shared_keys, *chain.from_iterable(item_keys)]
            args = [self.keys, self.args, len(shared), len(shared_keys), *shared]
            args.extend(chain.from_iterable(item_args))
            out.extend(await self._call(keys, args))
        return out

    def _refuse(self, chunk: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> None:
        for item_keys, item_args in chunk:
            if len(item_keys) != self.keys or len(item_args) != self.args:
                raise ValueError(
                    f"an item has {len(item_keys)} key(s) and {len(item_args)} argument(s);"
                    f" this script takes {self.keys} and {self.args}"
                )

    async def _call(self, keys: list[Any], args: list[Any]) -> list[Any]:
        """One EVALSHA of the wrapper; loaded first if Redis has it not (a restarted or
        flushed Redis), as `AsyncScript` does."""
        script = self._script
        command = _packed([b"EVALSHA", script.sha, len(keys), *keys, *args])
        try:
            replies: list[Any] = await _round_trip(self._redis, command)
        except NoScriptError:
            script.sha = await self._redis.script_load(script.script)
            command = _packed([b"EVALSHA", script.sha, len(keys), *keys, *args])
            replies = await _round_trip(self._redis, command)
        return replies
