"""The deferral queue: tasks that may not be delivered yet wait in Redis, by `deliver_after`.

Keys (prefix `moments:<app>:`):
- `deferred`: sorted set, task id scored by the epoch second it may be released, or, once
  due and ranked (in `due`), by -1 minus that second: a task counts as waiting, and says
  when it was due, until it is released, and the next release's scan for what came due
  (scores 0 to now) skips the ones ranked already;
- `rank`: hash, each waiting task's rank (`Parking.rank`, lower first; absent for a task
  an earlier version parked, which ranks by its due time, before every ranked one),
  until it is due;
- `due`: sorted set, the tasks due, scored by rank: a release moves what came due from
  `deferred` (in chunks, so a night's queue due at once never blocks Redis for long)
  and takes the top of `due`, so capacity goes by rank across everything due, not
  per release batch in due-time and id order;
- `task:<id>` (the ledger entry) holds `D<payload>` while the task waits, so the payload
  lives exactly as long as the dedup mark and a replay still finds the task;
- `open:<subscriber>`: the id of the subscriber's waiting task that later moments within
  the merge window join (`group:<id>` lists their payloads; their own entries say `M<id>`).
- `line:<subscriber>`: the tasks waiting for the subscriber's suspended line, made due
  at once by the profile update that reactivates it (`wake`, after its fact is written
  to `facts:<subscriber>`); a task parked for the line when the facts say the line is
  active (`sinks.relevance.line_active`) is due at once instead (`Parking.active_after`: its
  decision read the facts before the reactivation, and the wake came before this park);
- `hours`: the ids of the tasks waiting for their channel's hours (`channel_hours`), and
  `nextday`: those deferred by capacity to the next day (`capacity`), both made due at
  once (`rejudge`) when a worker runs a policy whose zone, hours or `next_day_at`
  (`DispatchPolicy.timetable`) are not those `judged` says they were parked by;
- `judged`: that timetable (`*` when workers of two timetables parked; `?`, or absent
  while the queue is not empty, when an earlier version parked without it: then the
  tasks it parked are looked for once, by their payload; `~<timetable>:<nonce>` while a
  re-judge walks the indexes toward that timetable, a chunk a call, and after a crash
  mid-walk, until the next re-judge walks again).
- `capped`: the ids of the tasks waiting for the subscriber's contact or frequency cap,
  which a fresh task joins however long they wait (`Joining`).
- `waiting:<subscriber>`: sorted set, the ids of the subscriber's tasks parked, by the
  time each was parked until, kept `WAITING_KEPT_S` past the latest of them (members a
  release took out stay until then, as ids only): what a profile tombstone takes out of
  the queue at once (`forget`), so that their payloads do not wait for their release time.

Every transition is one Lua script, so a crash never leaves a task in two places or in
none, and two workers releasing at once each get different tasks. Release moves a task
back to `P` (pending) before returning it: a worker that dies before publishing leaves a
pending entry the ledger's re-drive sends later.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from sinks.capacity import RANK_RISKS, RANK_SECONDS, RANKED
from sinks.ledger import CLAIM_TOKEN_KEPT_S, TaskLedger, as_bytes, new_claim_token
from sinks.luabatch import BatchScript
from sinks.stores import Held, Joining, Parking, Released

# K: task, open, line, the subscriber's facts (sinks.relevance), the subscriber's waiting
# index; A: id, payload (''
# keeps the one stored), release_at, window_ms, what it waits for: 'l' a suspended line,
# 'h' its channel's hours, 'c' the subscriber's caps, 'n' the next day (one argument:
# each costs the client ~2.5 µs to pack), rank ('': none), active after ('': not looked
# at) and woken at (`Parking.active_after`, `woken_at`), made ('': not compared with a
# tombstone's mark, `Parking.made`: 0 when the facts' `forgotten` is at or after it, the
# entry left pending or, waiting (`D`, one the tombstone's take did not find: an earlier
# version's park, in no index), taken out of the queue back to pending at now as `_FORGET`
# takes it, and marked `unsent:<id>` as `_FORGET` marks the tasks it takes: it waited,
# never published; not one a re-drive decides, `redriven:<id>`, which may have gone out);
# S: task prefix, ttl, the parker's timetable, now (the parking
# worker's clock, `time.time()`, epoch seconds: the release times it is compared with are
# on the workers' clocks too, and a skew between them of seconds is nothing beside
# `WAITING_KEPT_S`), `WAITING_KEPT_S`, unsent prefix, redriven prefix; SK: pending,
# deferred, hours, capped, nextday, judged, due, rank. The task enters the waiting index
# (`forget`), which drops the ids parked until more than `WAITING_KEPT_S` ago and is kept
# that long past the latest release time it holds.
# K[6], A[10], A[11]: the entry's `claimed:<id>` token, and a fenced decision's token ('':
# none, the engine's) and '1' for an entry it claimed, as `_FENCE` takes them: its park is
# written on an entry still its own only (`sinks.stores.Held`); one another worker's
# re-drive claimed since (this decision stalled past the grace period) is left, 0.
_PARK = """
if A[10] ~= '' then
  local held = redis.call('GET', K[6])
  if held ~= A[10] and (held or A[11] ~= '') then return 0 end
end
local v = redis.call('GET', K[1])
if not v then return 0 end
local state = string.sub(v, 1, 1)
if state ~= 'P' and state ~= 'D' then return 0 end
if A[9] ~= '' then
  local forgotten = redis.call('HGET', K[4], 'forgotten')
  if forgotten and tonumber(A[9]) <= tonumber(forgotten) then
    if state == 'D' then
      redis.call('ZREM', SK[2], A[1])
      redis.call('SREM', SK[3], A[1])
      redis.call('SREM', SK[4], A[1])
      redis.call('SREM', SK[5], A[1])
      redis.call('ZREM', SK[7], A[1])
      redis.call('HDEL', SK[8], A[1])
      redis.call('ZREM', K[5], A[1])
      redis.call('SREM', K[3], A[1])
      if redis.call('GET', K[2]) == A[1] then redis.call('DEL', K[2]) end
      redis.call('SET', K[1], 'P' .. string.sub(v, 2), 'XX', 'KEEPTTL')
      redis.call('ZADD', SK[1], S[4], A[1])
    end
    local left = redis.call('PTTL', K[1])
    if left > 0 and redis.call('EXISTS', S[7] .. A[1]) == 0 then
      redis.call('SET', S[6] .. A[1], '1', 'PX', left)
    end
    return 0
  end
end
local payload = A[2]
if payload == '' then payload = string.sub(v, 2) end
local release_at = A[3]
if A[7] ~= '' then
  local line = redis.call('HMGET', K[4], 'active', 'suspended')
  if line[1] then
    local active = tonumber(line[1])
    if active > tonumber(A[7]) or (line[2] and active > tonumber(line[2])) then
      release_at = A[8]
    end
  end
end
redis.call('SET', K[1], 'D' .. payload, 'XX', 'KEEPTTL')
redis.call('ZREM', SK[1], A[1])
redis.call('ZADD', SK[2], release_at, A[1])
local now, kept = tonumber(S[4]), tonumber(S[5])
redis.call('ZADD', K[5], release_at, A[1])
redis.call('ZREMRANGEBYSCORE', K[5], '-inf', '(' .. (now - kept))
local last = redis.call('ZRANGE', K[5], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('EXPIRE', K[5], math.ceil(math.max(0, tonumber(last[2]) - now) + kept))
end
redis.call('ZREM', SK[7], A[1])
if A[6] == '' then
  redis.call('HDEL', SK[8], A[1])
else
  redis.call('HSET', SK[8], A[1], A[6])
end
local carrier = redis.call('GET', K[2])
local open = false
if carrier then
  local cv = redis.call('GET', S[1] .. carrier)
  open = cv and string.sub(cv, 1, 1) == 'D'
end
-- a look at a suspended line's task opens its own group again (`Parking.active_after`)
if (not open) or (A[7] ~= '' and carrier == A[1]) then
  redis.call('SET', K[2], A[1], 'PX', A[4])
end
if string.find(A[5], 'l', 1, true) then
  redis.call('SADD', K[3], A[1])
  redis.call('EXPIRE', K[3], S[2])
end
if string.find(A[5], 'h', 1, true) then
  redis.call('SADD', SK[3], A[1])
else
  redis.call('SREM', SK[3], A[1])
end
if string.find(A[5], 'c', 1, true) then
  redis.call('SADD', SK[4], A[1])
else
  redis.call('SREM', SK[4], A[1])
end
if string.find(A[5], 'n', 1, true) then
  redis.call('SADD', SK[5], A[1])
else
  redis.call('SREM', SK[5], A[1])
end
local judged = redis.call('GET', SK[6])
if not judged then
  if redis.call('ZCARD', SK[2]) <= 1 then judged = S[3] else judged = '?' end
  redis.call('SET', SK[6], judged)
end
local indexed = string.find(A[5], 'h', 1, true) or string.find(A[5], 'n', 1, true)
if indexed and judged ~= S[3] and judged ~= '?'
  and string.sub(judged, 1, #S[3] + 2) ~= '~' .. S[3] .. ':' then
  redis.call('SET', SK[6], '*')
end
return 1
"""

# The task `id` waiting in `deferred` for later than `now`, due now; 1 when it was moved,
# 0 when it is due already (a ranked one's score is negative) or not waiting. Every wake
# (a reactivated line, a changed timetable, an earlier version's tasks) goes through it.
_DUE_NOW = """
local function due_now(deferred, id, now)
  local score = redis.call('ZSCORE', deferred, id)
  if score and tonumber(score) > tonumber(now) then
    redis.call('ZADD', deferred, now, id)
    return 1
  end
  return 0
end
"""

# KEYS: judged, deferred, an index (`hours` or `nextday`); ARGV: now, timetable, walk
# (`~<timetable>:<nonce>`), SSCAN cursor, count, first (1 on the walk's first chunk),
# last (1 on the last index). One chunk of a re-judge walk (`rejudge`). The first chunk
# returns {0, 0, 0} when `judged` is the timetable, else sets `judged` to the walk. A
# later one returns {cursor, 0, 0} (stop) unless `judged` is still the walk or `*` (a
# worker of another timetable parked meanwhile: the walk goes on, its tasks due as the
# single call made them, but it does not mark the queue): another walk started since
# (it covers everything this one would) or one finished. Otherwise: the waiting tasks
# of the chunk due now, {next cursor, woken, 1}; the last chunk of the last index
# sets `judged` to the timetable if it is still the walk.
_REJUDGE = (
    _DUE_NOW
    + """
local judged = redis.call('GET', KEYS[1])
if ARGV[6] == '1' then
  if judged == ARGV[2] then return {'0', 0, 0} end
  redis.call('SET', KEYS[1], ARGV[3])
  judged = ARGV[3]
elseif judged ~= ARGV[3] and judged ~= '*' then
  return {ARGV[4], 0, 0}
end
local page = redis.call('SSCAN', KEYS[3], ARGV[4], 'COUNT', ARGV[5])
local n = 0
for _, id in ipairs(page[2]) do
  n = n + due_now(KEYS[2], id, ARGV[1])
end
if page[1] == '0' and ARGV[7] == '1' and judged == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[2])
end
return {page[1], n, 1}
"""
)
_REJUDGE_CHUNK = 500
"""The SSCAN count of one re-judge script call (a hint: a set's small encodings answer
whole). One script over a night's 200,000 ids held Redis 3.4-6.7 s in the slowlog on a
loaded 2-core machine, past redis-py's 5 s socket timeout and Redis's 5 s busy threshold
(other clients answered BUSY), every worker's ledger calls stalled; 500 a call took at
most 22-36 ms (docs/performance.md)."""

# KEYS: deferred; ARGV: now, task prefix, ids... Those of the ids still waiting whose
# payload says they wait for their channel's hours or the next day (`Deferral.reason` as
# orjson writes the model), due now; how many.
_WAKE_UNINDEXED = (
    _DUE_NOW
    + """
local n = 0
for i = 3, #ARGV do
  local v = redis.call('GET', ARGV[2] .. ARGV[i])
  if v and string.sub(v, 1, 1) == 'D' and (
    string.find(v, '"reason":"channel_hours"', 1, true)
    or string.find(v, '"reason":"capacity"', 1, true)
  ) then
    n = n + due_now(KEYS[1], ARGV[i], ARGV[1])
  end
end
return n
"""
)
_SCAN_COUNT = 1000

# K: line; S: now; SK: deferred. The line's waiting tasks still in the queue, due now.
_WAKE = (
    _DUE_NOW
    + """
local ids = redis.call('SMEMBERS', K[1])
redis.call('DEL', K[1])
local n = 0
for _, id in ipairs(ids) do
  n = n + due_now(SK[1], id, S[1])
end
return n
"""
)

# K: task, open; A: id, payload ('' takes the one claimed), due from, due by unless it
# waits for the subscriber's caps ('': no bound), rank ('': none); S: task prefix, group
# prefix, ttl, redriven prefix; SK: pending, deferred, capped, due, rank. The carrier's id
# when the task joined (or had joined) a waiting task, else false; the carrier ranks as
# its moments and the task's together (`sinks.capacity.merged_rank`: the best priority,
# the highest risk, the oldest moment, each of its own), in `rank` or, due already, in
# `due`. Neither the task nor the carrier may be one the re-drive decides
# (`redriven:<id>`, set by its claim, `TaskLedger.claim_stale`): it may have gone out under
# its id, so absorbed into another task it was sent twice and withdrawn with neither (a
# stalled worker's join landing while another worker re-drives it), and as a carrier it
# went out again under an id the consumer may have seen, the moments that joined it in
# `related`, which a consumer dropping repeats by id never acted on; such a carrier's
# group is closed (`open` deleted), so the task's park opens one of its own that the
# subscriber's next moments join (kept open for the window, every join refused, each went
# as a task of its own). The marks are looked at once a carrier is found: most fresh tasks
# find none, and the script's commands for them stay the two GETs.
_JOIN = """
local function merged(a, b)
  local ranked, seconds, risks = @RANK_LAYOUT@
  if a < ranked or b < ranked then return math.min(a, b) end
  local sa, sb = a % seconds, b % seconds
  local ka, kb = (a - sa) / seconds, (b - sb) / seconds
  local ra, rb = ka % risks, kb % risks
  local pa, pb = (ka - ra) / risks, (kb - rb) / risks
  return (math.min(pa, pb) * risks + math.min(ra, rb)) * seconds + math.min(sa, sb)
end
local v = redis.call('GET', K[1])
if v and string.sub(v, 1, 1) == 'M' then return string.sub(v, 2) end
if not v or string.sub(v, 1, 1) ~= 'P' then return false end
local carrier = redis.call('GET', K[2])
if not carrier or carrier == A[1] then return false end
local cv = redis.call('GET', S[1] .. carrier)
if not cv or string.sub(cv, 1, 1) ~= 'D' then return false end
if redis.call('EXISTS', S[4] .. carrier) == 1 then
  redis.call('DEL', K[2])
  return false
end
if redis.call('EXISTS', S[4] .. A[1]) == 1 then return false end
if A[3] ~= '' or A[4] ~= '' then
  local due = tonumber(redis.call('ZSCORE', SK[2], carrier))
  if not due then return false end
  if due < 0 then due = -1 - due end
  if A[3] ~= '' and due < tonumber(A[3]) then return false end
  if A[4] ~= '' and due > tonumber(A[4]) and redis.call('SISMEMBER', SK[3], carrier) == 0 then
    return false
  end
end
local payload = A[2]
if payload == '' then payload = string.sub(v, 2) end
redis.call('RPUSH', S[2] .. carrier, payload)
redis.call('EXPIRE', S[2] .. carrier, S[3])
redis.call('SET', K[1], 'M' .. carrier, 'XX', 'KEEPTTL')
redis.call('ZREM', SK[1], A[1])
if A[5] ~= '' then
  local ranked = redis.call('ZSCORE', SK[4], carrier)
  if ranked then
    local rank = merged(tonumber(A[5]), tonumber(ranked))
    if rank < tonumber(ranked) then
      redis.call('ZADD', SK[4], string.format('%.17g', rank), carrier)
    end
  else
    ranked = redis.call('HGET', SK[5], carrier)
    if ranked then
      local rank = merged(tonumber(A[5]), tonumber(ranked))
      if rank < tonumber(ranked) then
        redis.call('HSET', SK[5], carrier, string.format('%.17g', rank))
      end
    end
  end
end
return carrier
""".replace("@RANK_LAYOUT@", f"{RANKED}, {RANK_SECONDS}, {RANK_RISKS}")

# KEYS: deferred, pending, hours, capped, nextday, due, rank; ARGV: now, limit, task
# prefix, group prefix, most tasks to rank, the release's token, the claim token prefix,
# seconds to keep it. Ranks up to that many of the tasks come due
# (into `due` by their rank, their due time without one; their `deferred` score -1 minus their due
# time); {0} when there may be more to rank (call again), else {1, released}: for each
# of the `limit` highest ranked in `due` moved from D to P, {id, payload, {member
# payloads}}. One in `due` whose `deferred` score is not a ranked one (parked again by
# an earlier version) only leaves `due`: it waits, and is ranked again when due.
# Each one moved to P holds the release's token (`claimed:<id>`, as `_CLAIM_STALE`
# writes a re-drive's, replacing the one a re-drive that parked it left): the release's
# produce is fenced by it (`TaskLedger.fence`), so that a release stalled past the grace
# period sends nothing a re-drive claimed since.
_RELEASE = """
local moving = redis.call(
  'ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[5]
)
for i = 1, #moving, 2 do
  local id = moving[i]
  local rank = redis.call('HGET', KEYS[7], id) or moving[i + 1]
  redis.call('HDEL', KEYS[7], id)
  redis.call('ZADD', KEYS[6], rank, id)
  redis.call('ZADD', KEYS[1], -1 - tonumber(moving[i + 1]), id)
end
if #moving >= 2 * tonumber(ARGV[5]) then return {0} end
local ids = redis.call('ZRANGE', KEYS[6], 0, tonumber(ARGV[2]) - 1)
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[6], id)
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) < 0 then
    redis.call('ZREM', KEYS[1], id)
    redis.call('SREM', KEYS[3], id)
    redis.call('SREM', KEYS[4], id)
    redis.call('SREM', KEYS[5], id)
    local key = ARGV[3] .. id
    local v = redis.call('GET', key)
    if v and string.sub(v, 1, 1) == 'D' then
      local payload = string.sub(v, 2)
      redis.call('SET', key, 'P' .. payload, 'XX', 'KEEPTTL')
      redis.call('ZADD', KEYS[2], ARGV[1], id)
      redis.call('SET', ARGV[7] .. id, ARGV[6], 'EX', ARGV[8])
      table.insert(out, {id, payload, redis.call('LRANGE', ARGV[4] .. id, 0, -1)})
    end
  end
end
return {1, out}
"""
# K: the subscriber's waiting index, open, line; A: the subscriber id; S: now, task
# prefix, group prefix, unsent prefix, `WAITING_KEPT_S`, `_OVERDUE_LOOK`, redriven
# prefix; SK: deferred, pending, hours, capped, nextday, due, rank.
# A profile tombstone: each of the subscriber's tasks still waiting (`D`) that the waiting
# index, the suspended-line index or the open merge group names (the two others also name
# tasks a version before the waiting index parked), or whose payload names the subscriber
# as its own among the `_OVERDUE_LOOK` longest overdue of each part of the queue (waiting,
# ranked) due more than `WAITING_KEPT_S` ago (the waiting index keeps an id no longer;
# read once a call, for all its subscribers: a GET each), leaves the
# queue and its indexes and goes back to pending (`P`, in the pending index at `now`), as
# `_RELEASE` moves it, {id, payload, {member payloads}} for the caller to decide (its
# facts say the subscriber is forgotten: dropped; a crash first leaves it to the
# re-drive, which drops it too); the waiting index, open merge group and suspended-line
# index are deleted. Each is marked `unsent:<id>` (the id alone, as long as its entry
# lives: `TaskLedger.unsent`): it waited, never published, and a re-drive that drops it
# withdraws nothing, as its decision here does not (a released task's re-drive withdraws
# it: its worker may have published it before dying). But for one a re-drive parked
# (`redriven:<id>`, `TaskLedger.claim_stale`): its worker may have published it before
# dying, and its drop withdraws it wherever it is decided. Its `claimed:<id>` token is
# kept: deleted, a stalled decision that moved it out of a merge group under its own id
# before the re-drive that parked it claimed it found it its own again (`_FENCE` wants no
# token there), and published the erased subscriber's task.
_FORGET = """
local out = {}
local ids, seen = {}, {}
local function named(id)
  if not seen[id] then
    seen[id] = true
    table.insert(ids, id)
  end
end
for _, id in ipairs(redis.call('ZRANGE', K[1], 0, -1)) do named(id) end
for _, id in ipairs(redis.call('SMEMBERS', K[3])) do named(id) end
local carrier = redis.call('GET', K[2])
if carrier then named(carrier) end
if not S.overdue then
  -- Once a call (S is every item's): the overdue ids by the subscriber their payload
  -- names first (its own field; a merged moment's, or a rule's params, come after).
  S.overdue = {}
  local cut, most = tonumber(S[1]) - tonumber(S[5]), S[6]
  local overdue = redis.call('ZRANGEBYSCORE', SK[1], 0, '(' .. cut, 'LIMIT', 0, most)
  local ranked = redis.call('ZREVRANGEBYSCORE', SK[1], -1, '(' .. (-1 - cut), 'LIMIT', 0, most)
  for _, id in ipairs(ranked) do table.insert(overdue, id) end
  for _, id in ipairs(overdue) do
    local v = redis.call('GET', S[2] .. id)
    local sub = v and string.match(v, '"subscriber_id":"([^"]*)"')
    if sub then
      S.overdue[sub] = S.overdue[sub] or {}
      table.insert(S.overdue[sub], id)
    end
  end
end
for _, id in ipairs(S.overdue[A[1]] or {}) do named(id) end
for _, id in ipairs(ids) do
  local key = S[2] .. id
  local v = redis.call('GET', key)
  if v and string.sub(v, 1, 1) == 'D' then
    redis.call('ZREM', SK[1], id)
    redis.call('SREM', SK[3], id)
    redis.call('SREM', SK[4], id)
    redis.call('SREM', SK[5], id)
    redis.call('ZREM', SK[6], id)
    redis.call('HDEL', SK[7], id)
    local payload = string.sub(v, 2)
    redis.call('SET', key, 'P' .. payload, 'XX', 'KEEPTTL')
    redis.call('ZADD', SK[2], S[1], id)
    local left = redis.call('PTTL', key)
    if left > 0 and redis.call('EXISTS', S[7] .. id) == 0 then
      redis.call('SET', S[4] .. id, '1', 'PX', left)
    end
    table.insert(out, {id, payload, redis.call('LRANGE', S[3] .. id, 0, -1)})
  end
end
redis.call('DEL', K[1], K[2], K[3])
return out
"""

WAITING_KEPT_S = 86400
"""How long a subscriber's waiting index (`waiting:<subscriber>`) outlives the latest
release time it holds, and keeps an id parked until a time that long past: a task still
in the queue then (released late: no worker ran the timer, or a backlog of due tasks) is
out of the index, and a tombstone finds it by the look at the overdue (`_OVERDUE_LOOK`);
one past that look is left to its release, which drops it
(`sinks.relevance.is_forgotten`)."""

_OVERDUE_LOOK = 1000
"""Most tasks of each part of the queue (waiting, due and ranked) due more than
`WAITING_KEPT_S` ago whose payloads a tombstone reads for the subscriber's (`_FORGET`):
the waiting index names them no longer. Normally none (the release takes a task when
due; `MomentsDeferredTasksOverdue` fires long before a day): the look is then two
range reads. In a backlog of more, the oldest are read, a GET and a pattern match each,
once a script call (up to `luabatch.CHUNK` tombstones: read again for each, 2,000 such
tasks and 100 tombstones held Redis 1.7 s), and the rest left to their release, which
drops them (`is_forgotten`)."""

_RANK_CHUNK = 1000
"""Most tasks one release call ranks: a night's 200,000 calls due at once are ranked in
200 calls, not one that blocks Redis: 5,000 a call took 24-31 ms of Redis in the slowlog
on the development machine (loaded), so about a fifth of that a call."""


def _bound(at: float | None) -> str:
    return "" if at is None else repr(at)


def _due(score: float) -> float:
    """A `deferred` score as the time the task is due (a ranked one's is -1 minus it)."""
    return -1 - score if score < 0 else score


@dataclass
class _Walk:
    """Where a re-judge walk (`DeferralQueue.rejudge`) is: a retry goes on from it."""

    timetable: str
    mark: str
    """`judged` while it walks: `~<timetable>:<nonce>`."""
    woken: int
    """Tasks made due so far (the unindexed ones included)."""
    index: int = 0
    """Which index (`hours`, then `nextday`) it walks."""
    cursor: bytes | str = "0"
    """Its SSCAN cursor there."""
    first: bool = True
    """No chunk answered yet: the next call starts the walk (sets its mark)."""


class DeferralQueue:
    def __init__(self, redis: Redis, ledger: TaskLedger) -> None:
        self.redis = redis
        self.ledger = ledger
        self.prefix = ledger.prefix
        self.key = f"{ledger.prefix}deferred"
        self.hours_key = f"{ledger.prefix}hours"
        """The ids of the tasks in the queue waiting for their channel's hours."""
        self.capped_key = f"{ledger.prefix}capped"
        """The ids of the tasks in the queue waiting for the subscriber's caps."""
        self.next_day_key = f"{ledger.prefix}nextday"
        """The ids of the tasks in the queue deferred by capacity to the next day."""
        self.judged_key = f"{ledger.prefix}judged"
        """The timetable the tasks in `hours` and `nextday` were parked by."""
        self.due_key = f"{ledger.prefix}due"
        """The tasks due, not released yet, by rank."""
        self.rank_key = f"{ledger.prefix}rank"
        """Each waiting task's rank, until it is due."""
        self._park = BatchScript(redis, _PARK, keys=6, args=11)
        self._rejudge = redis.register_script(_REJUDGE)
        self._wake_unindexed_script = redis.register_script(_WAKE_UNINDEXED)
        self._wake = BatchScript(redis, _WAKE, keys=1, args=1)
        self._join = BatchScript(redis, _JOIN, keys=2, args=5)
        self._release = redis.register_script(_RELEASE)
        self._forget = BatchScript(redis, _FORGET, keys=3, args=1)
        self._walk: _Walk | None = None
        """A re-judge walk a failed call interrupted, which the next `rejudge` of the same
        timetable goes on with."""

    def open_key(self, subscriber_id: str) -> str:
        return f"{self.prefix}open:{subscriber_id}"

    def line_key(self, subscriber_id: str) -> str:
        """The tasks waiting for this subscriber's suspended line to be active again."""
        return f"{self.prefix}line:{subscriber_id}"

    def facts_key(self, subscriber_id: str) -> str:
        """The subscriber's facts (`sinks.relevance.FactsStore.key`): a park for the line
        reads `active` there (`Parking.active_after`)."""
        return f"{self.prefix}facts:{subscriber_id}"

    def waiting_key(self, subscriber_id: str) -> str:
        """The ids of the subscriber's tasks parked, by release time (`forget`)."""
        return f"{self.prefix}waiting:{subscriber_id}"

    def _taken_keys(self) -> tuple[str, ...]:
        """The queue's keys a task taken out of it leaves, as `_RELEASE` and `_FORGET`
        read them (K[1] to K[7])."""
        return (
            self.key,
            self.ledger.pending_key,
            self.hours_key,
            self.capped_key,
            self.next_day_key,
            self.due_key,
            self.rank_key,
        )

    async def forget(
        self, subscriber_ids: Sequence[str], now: float | None = None
    ) -> list[Released]:
        """See `sinks.stores.Deferrals.forget`: one script call (`_FORGET`)."""
        calls = [
            ((self.waiting_key(s), self.open_key(s), self.line_key(s)), (s,))
            for s in dict.fromkeys(subscriber_ids)
        ]
        if not calls:
            return []
        at = time.time() if now is None else now
        ledger = self.ledger
        shared = (
            at,
            f"{self.prefix}task:",
            f"{self.prefix}group:",
            ledger.unsent_key(""),
            WAITING_KEPT_S,
            _OVERDUE_LOOK,
            ledger.redriven_key(""),
        )
        replies = await self._forget.run(calls, shared, self._taken_keys())
        return [
            Released(as_bytes(item[0]).decode(), as_bytes(item[1]), [as_bytes(m) for m in item[2]])
            for taken in replies
            for item in taken
        ]

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
        return (await self.park_many([item]))[0]

    async def park_many(
        self, items: Sequence[Parking], timetable: str = "", held: Held | None = None
    ) -> list[bool]:
        """`park` for each item, in one call; `timetable`: the one (`DispatchPolicy.timetable`)
        their release times were computed by ('' unknown: the next `rejudge` wakes them);
        `held`: a fenced decision's (`sinks.stores.Held`), checked in the same script."""
        if not items:
            return []
        calls = [
            (
                (
                    self.ledger.key(item.task_id),
                    self.open_key(item.subscriber_id),
                    self.line_key(item.subscriber_id),
                    self.facts_key(item.subscriber_id),
                    self.waiting_key(item.subscriber_id),
                    self.ledger.claimed_key(item.task_id),
                ),
                (
                    item.task_id,
                    item.payload,
                    max(0.0, item.release_at),
                    max(1, int(item.merge_window_s * 1000)),
                    "l" * item.waits_for_line
                    + "h" * item.waits_for_hours
                    + "c" * item.waits_for_cap
                    + "n" * item.waits_for_next_day,
                    _bound(item.rank),
                    _bound(item.active_after if item.waits_for_line else None),
                    _bound(item.woken_at) if item.waits_for_line else "",
                    _bound(item.made),
                    "" if held is None else held.token,
                    "" if held is None else held.mine(item.task_id),
                ),
            )
            for item in items
        ]
        shared_keys = (
            self.ledger.pending_key,
            self.key,
            self.hours_key,
            self.capped_key,
            self.next_day_key,
            self.judged_key,
            self.due_key,
            self.rank_key,
        )
        shared = (
            f"{self.prefix}task:",
            self.ledger.ttl,
            timetable,
            time.time(),
            WAITING_KEPT_S,
            self.ledger.unsent_key(""),
            self.ledger.redriven_key(""),
        )
        parked = await self._park.run(calls, shared, shared_keys)
        return [bool(ok) for ok in parked]

    async def join_many(self, items: Sequence[Joining]) -> list[str | None]:
        """Merge each owned task into its subscriber's waiting task, if one is open and due
        within the item's bounds (`Joining`); that task's id (the same on a repeated
        call), else None; in one call."""
        if not items:
            return []
        calls = [
            (
                (self.ledger.key(i.task_id), self.open_key(i.subscriber_id)),
                (i.task_id, i.payload, _bound(i.due_from), _bound(i.due_by), _bound(i.rank)),
            )
            for i in items
        ]
        shared = (
            f"{self.prefix}task:",
            f"{self.prefix}group:",
            self.ledger.ttl,
            self.ledger.redriven_key(""),
        )
        shared_keys = (
            self.ledger.pending_key,
            self.key,
            self.capped_key,
            self.due_key,
            self.rank_key,
        )
        carriers = await self._join.run(calls, shared, shared_keys)
        return [None if c is None else as_bytes(c).decode() for c in carriers]

    async def wake(self, subscriber_ids: Sequence[str], now: float) -> int:
        calls = [((self.line_key(sub),), ("",)) for sub in dict.fromkeys(subscriber_ids)]
        if not calls:
            return 0
        return sum(int(n) for n in await self._wake.run(calls, (now,), (self.key,)))

    async def rejudge(self, timetable: str, now: float) -> int:
        """See `sinks.stores.Deferrals.rejudge`. Both indexes are walked in chunks
        (`_REJUDGE`, `_REJUDGE_CHUNK` ids a script call, SSCAN: an id indexed throughout
        the walk is read at least once), not in one script: a night's few hundred
        thousand ids blocked Redis, and every worker's ledger calls with it, for the
        whole walk. While it walks, `judged` says so (`~<timetable>:<nonce>`); it becomes
        the timetable only at the end of the walk that set it, so:
        - a worker of this timetable parking meanwhile leaves it; one of another (a
          rolling restart, a reload not landed yet) marks it `*` as after the single
          call, and the walk goes on but does not mark the queue judged (the next
          `rejudge` of any worker whose mark differs walks again);
        - two walks at once: the later one's mark stands, the earlier stops at its next
          chunk (the later reads everything it would); one of them marks the queue;
        - a crash mid-walk leaves the walk's mark: the next `rejudge` walks again (the
          tasks made due already cost one ZSCORE each);
        - a call that fails mid-walk (Redis away) leaves the walk to this queue's next
          `rejudge` of the timetable (the sink's retry), which goes on from the chunk
          that failed and counts the whole walk's tasks.
        The first time (no `judged`), the whole queue is read once before the walk for
        the tasks an earlier version parked without indexing them (`_wake_unindexed`)."""
        raw = await self.redis.get(self.judged_key)
        judged = None if raw is None else as_bytes(raw).decode()
        walk = self._walk if self._walk is not None and self._walk.timetable == timetable else None
        self._walk = None
        if judged == timetable:
            return 0 if walk is None else walk.woken
        if walk is None:
            woken = await self._wake_unindexed(now) if judged in (None, "?") else 0
            walk = _Walk(timetable, f"~{timetable}:{secrets.token_hex(4)}", woken)
        try:
            await self._walk_on(walk, now)
        except BaseException:
            # A retry (`with_retry`, the sink's) goes on from the chunk that failed. From
            # the start, it woke again the tasks the walk had made due that another worker
            # released and parked by the new timetable meanwhile (each released, judged
            # and counted again), and its count left out the chunks before the failure.
            self._walk = walk
            raise
        return walk.woken

    async def _walk_on(self, walk: _Walk, now: float) -> None:
        """`_REJUDGE` a chunk a call from where `walk` is, until the walk ends or stops."""
        indexes = (self.hours_key, self.next_day_key)
        while walk.index < len(indexes):
            last = walk.index == len(indexes) - 1
            args: list[bytes | str | float] = [now, walk.timetable, walk.mark, walk.cursor]
            args += [_REJUDGE_CHUNK, int(walk.first), int(last)]
            reply: Sequence[Any] = await self._rejudge(
                keys=[self.judged_key, self.key, indexes[walk.index]], args=args
            )
            cursor, going = as_bytes(reply[0]), int(reply[2])
            walk.first = False
            walk.woken += int(reply[1])
            if not going:
                return
            if cursor == b"0":
                walk.index, walk.cursor = walk.index + 1, "0"
            else:
                walk.cursor = cursor

    async def _wake_unindexed(self, now: float) -> int:
        """Make due now the waiting tasks whose payload says they wait for their channel's
        hours or the next day (`_WAKE_UNINDEXED`): parked before `hours` and `nextday` were
        kept, they are in neither. ZSCAN returns every task in the queue throughout (a
        score changed meanwhile does not hide one). Two round trips per 1,000 waiting
        tasks, once (nothing on a queue that is empty); the payloads stay in Redis."""
        woken = 0
        prefix = f"{self.prefix}task:"
        async for chunk in self._scan_chunks():
            woken += int(
                await self._wake_unindexed_script(keys=[self.key], args=[now, prefix, *chunk])
            )
        return woken

    async def _scan_chunks(self) -> AsyncIterator[list[str]]:
        async for pairs in self._scan_pages():
            yield [task_id for task_id, _ in pairs]

    async def _scan_pages(self) -> AsyncIterator[list[tuple[str, float]]]:
        """The queue's (id, score) a ZSCAN page at a time (`_SCAN_COUNT`, a hint: a small
        sorted set answers whole), empty pages left out."""
        cursor: int = 0
        while True:
            cursor, pairs = await self.redis.zscan(self.key, cursor, count=_SCAN_COUNT)
            page = [(as_bytes(member).decode(), float(score)) for member, score in pairs]
            if page:
                yield page
            if cursor == 0:
                return

    async def waiting_tasks(self) -> dict[str, float]:
        """See `sinks.stores.Deferrals.waiting_tasks`: ZSCAN, `_SCAN_COUNT` a call, so no
        command holds Redis for the whole queue (a night's 200,000 are 200 round trips,
        and about as many entries in the dict returned). A task waiting throughout is
        listed (ZSCAN's guarantee; one it returns twice is listed once); one parked or
        released meanwhile may be listed or not."""
        return {
            task_id: _due(score) async for page in self._scan_pages() for task_id, score in page
        }

    async def release(
        self, now: float | None = None, limit: int = 500, token: str = ""
    ) -> list[Released]:
        """See `sinks.stores.Deferrals.release`: what came due is ranked first, a chunk a
        call (`_RELEASE`), then the top of `due` is taken, each holding `token`."""
        at = time.time() if now is None else now
        keys = list(self._taken_keys())
        args: list[str | float] = [
            at,
            limit,
            f"{self.prefix}task:",
            f"{self.prefix}group:",
            _RANK_CHUNK,
            token or new_claim_token(),
            self.ledger.claimed_key(""),
            CLAIM_TOKEN_KEPT_S,
        ]
        while True:
            reply: Sequence[Any] = await self._release(keys=keys, args=args)
            if int(reply[0]):
                break
        raw: Sequence[Any] = reply[1]
        return [
            Released(as_bytes(item[0]).decode(), as_bytes(item[1]), [as_bytes(m) for m in item[2]])
            for item in raw
        ]

    async def waiting(self) -> int:
        return int(await self.redis.zcard(self.key))

    async def earliest_due(self) -> float | None:
        """The first to come due, or, when some are due and not released yet (ranked, in
        `due`), the first of those (the highest score below 0)."""
        return (await self._look(count=False))[1]

    async def waiting_and_due(self) -> tuple[int, float | None]:
        return await self._look(count=True)

    async def _look(self, count: bool) -> tuple[int, float | None]:
        """How many wait (when `count`; else 0) and `earliest_due`: one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.key, 0, "+inf", start=0, num=1, withscores=True)
            pipe.zrevrangebyscore(self.key, "(0", "-inf", start=0, num=1, withscores=True)
            if count:
                pipe.zcard(self.key)
            waiting, ranked, *size = await pipe.execute()
        found = [_due(float(score)) for _, score in [*waiting, *ranked]]
        return int(size[0]) if size else 0, min(found) if found else None

    async def due_at(self, task_id: str) -> float | None:
        score: float | None = await self.redis.zscore(self.key, task_id)
        return None if score is None else _due(score)
