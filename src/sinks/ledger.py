"""The Redis dedup ledger: no task id is published twice, none is lost in a crash.

Protocol per task id (see docs/architecture.md, "Exactly once out" and "The deferral queue"):
1. `SET task:<id> P<payload> NX EX ttl` and `ZADD pending <now> <id>`, in one Lua
   script: whoever sets it owns the task; a second worker or a replay stands down.
2. The owner decides: publish, park in the deferral queue (`D<payload>`), merge into a
   waiting task of the same subscriber (`M<carrier id>`) or drop (`X<reason>`).
3. After the broker acknowledged a publish: `SET task:<id> S<meta> XX KEEPTTL`, `ZREM pending`.
A crash while an entry is `P` leaves it in the pending index with its payload; any
worker re-drives entries older than a grace period (claimed atomically) through the
same decision, with the same task id.

The cooldown returns of moments dropped after they waited (moments.cooldowns) are owed
here (`returns`, `returns:records`) from before their drops are written until they are
sent, so that one is sent only for a task dropped, and at least once.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from moments.enums import WithdrawReason
from sinks.luabatch import BatchScript
from sinks.payloads import COUNTED_TAIL
from sinks.stores import CHANNELS, ClaimCall, Held, Leave

PENDING = b"P"
DEFERRED = b"D"
MERGED = b"M"
SENT = b"S"
DROPPED = b"X"
_STATES = {
    PENDING: "pending",
    DEFERRED: "deferred",
    MERGED: "merged",
    SENT: "sent",
    DROPPED: "dropped",
}

# SET NX and the pending index in one step: a crash cannot leave a claim nobody re-drives.
# A moment judged again ('1' in A[3]) also takes over a dropped entry whose task expired
# (its TTL within the day a dropped entry outlives it, S[3], in milliseconds as the drop
# set it; -1: none): it was never sent. Its pending payload then says `counted` (the
# payload's closing brace replaced by S[4], as sinks.payloads' `counted_payload`): a
# re-drive after a crash before it was parked reads it as the one that counts nothing.
# The dropped task's `unsent:<id>`, `redriven:<id>` and `moved:<id>` marks (kept as long
# as its entry, or the ledger's ttl) go: they spoke of that task, not of this one. So does
# a `moved:<id>` mark an id claimed afresh finds: set at a publish, for the ledger's ttl,
# it outlives the entry it spoke of (claimed before it; a dropped one lives a day past its
# task's expiry), and a moment judged again after that entry lapsed (a silence's, every
# few days of a suspension) had its re-drive send it on the first task's channel. And a
# re-drive's or release's `claimed:<id>` token (a day from its claim, which may outlive
# a dropped entry): left, the fence refused the new task once merged and moved out of
# its group under its own id (`_FENCE` wants none there), re-driven a grace period late.
# A retry ('1' in S[9]: its first try's reply was lost, the script may have run) sends
# the first try's `now` again (`ClaimCall`) and reads an entry as that try wrote it (this
# call's payload, or its counted form for one judged again) and scored at `now` in the
# pending index as its own, answering as that try did. Another worker's entry differs in
# its score (its own claim time, or a re-drive's since) unless written at the same
# microsecond with the same payload; no token is written, so the first try costs nothing
# more. Read as another's, the task was counted suppressed `dedup` and left to its re-drive.
# K: task; A: payload, id, judged again ('1' or ''); S: ttl, now, kept past expiry (ms),
# the counted tail, the unsent, redriven, moved and claimed prefixes, a retry ('1' or '');
# SK: pending (sinks.luabatch)
_CLAIM = """
if redis.call('SET', K[1], 'P' .. A[1], 'NX', 'EX', S[1]) then
  redis.call('ZADD', SK[1], S[2], A[2])
  redis.call('DEL', S[7] .. A[2], S[8] .. A[2])
  return 1
end
if S[9] ~= '' then
  local score = redis.call('ZSCORE', SK[1], A[2])
  if score and tonumber(score) == tonumber(S[2]) then
    local v = redis.call('GET', K[1])
    if v == 'P' .. A[1] then return 1 end
    if A[3] ~= '' and #A[1] > 2 and v == 'P' .. string.sub(A[1], 1, -2) .. S[4] then
      return 2
    end
  end
end
if A[3] ~= '' then
  local v = redis.call('GET', K[1])
  local left = redis.call('PTTL', K[1])
  if v and string.sub(v, 1, 1) == 'X' and left >= 0 and left <= tonumber(S[3]) then
    local p = A[1]
    if #p > 2 then p = string.sub(p, 1, -2) .. S[4] end
    redis.call('SET', K[1], 'P' .. p, 'EX', S[1])
    redis.call('ZADD', SK[1], S[2], A[2])
    redis.call('DEL', S[5] .. A[2], S[6] .. A[2], S[7] .. A[2], S[8] .. A[2])
    return 2
  end
end
return 0
"""

# Re-score an entry only if it is still stale, so exactly one worker claims it, and mark
# it re-driven in the same step (it may have gone out): marked after the decision's first
# reads, a stalled worker's join landing in between merged it into its subscriber's
# waiting task (`sinks.deferral._JOIN` refuses a marked one), and it went out under its
# own id and again inside that task. The mark holds when the task first went pending (its
# score at the first re-drive's claim), kept by every later claim: a later claim's score
# is an earlier re-drive's claim, or a release after it parked the task, not when the
# task may first have gone out (`sinks.dispatch.sealed_by_redrive`). A mark an older
# build wrote holds '1', which says nothing of when, and is kept as it is. A leave's mark
# (`L<time>`, `_LEAVE`: its moments may have gone out inside another carrier, not under
# this id) becomes a claim's, with the leave's time: this id itself may have gone out now
# (its decision published it and died), as of the decision that made it pending. Unless
# the entry holds a `claimed:<id>` token (a release wrote one; a leave never does, and a
# re-drive's claim turned the mark into its own): the task was parked since the leave and
# released, and the decision that died is the release's, so the mark takes the score (the
# release's time). Dated by the leave, a lead that lapsed between the leave and the
# release was read as sendable then: the group sealed, and its other moments dropped with
# the lead though the release could not have sent them under its id. Either way the claim's
# mark keeps the leave's kind (`C<time>`, `CARRIED_MARK`: a claim's, sealed as any, kept as
# it is by every later claim), so that a second re-drive, after the first died past its
# claim, reports it too: its moments' cooldowns kept when it drops them (`Writes.carried`).
# Written as a plain claim's, the second re-drive of a task judged unsealed (its lead
# lapsed) returned the cooldown of a moment the withdrawn carrier may have carried.
# The claim also writes its token (`claimed:<id>`, a day), which a later claim overwrites:
# the claimer's produce is fenced by it (`_FENCE`), so that a re-drive that stalled past
# the grace period after its claim sends nothing another worker's claim took since.
# K: task, its `redriven:<id>` mark, its `claimed:<id>` token; A: id; S: cutoff, now,
# token, seconds to keep it; SK: pending. {the entry's value when this caller claimed it,
# its score before (when it went pending this time), the mark an earlier re-drive (or a
# leave) left ('' for none; `L<time>` or `C<time>` of a leave's kind, `is_carried`), '1'
# where a leave's mark was dated by the score instead (a
# release's token found) else ''}; false when it is no longer stale (another worker took
# it) or no longer pending (expired or settled meanwhile: then it leaves the index).
_CLAIM_STALE = """
local score = redis.call('ZSCORE', SK[1], A[1])
if not score or tonumber(score) > tonumber(S[1]) then return false end
local v = redis.call('GET', K[1])
if not v or string.sub(v, 1, 1) ~= 'P' then
  redis.call('ZREM', SK[1], A[1])
  return false
end
redis.call('ZADD', SK[1], S[2], A[1])
local before = redis.call('GET', K[2])
local mark = before or score
local released = ''
if before and string.sub(before, 1, 1) == 'L' then
  if redis.call('EXISTS', K[3]) == 1 then
    mark, released = 'C' .. score, '1'
  else
    mark = 'C' .. string.sub(before, 2)
  end
end
local left = redis.call('PTTL', K[1])
if left > 0 then redis.call('SET', K[2], mark, 'PX', left) end
redis.call('SET', K[3], S[3], 'EX', S[4])
return {v, score, before or '', released}
"""

# A re-drive's fence, right before its produce (`TaskLedger.fence`): whether the entry is
# still this caller's to send. It is when it is still pending and its `claimed:<id>` token
# is this caller's (A[2] '1': an entry this caller claimed), or none (A[2] '': an entry this
# caller's decision made pending, a merged moment it moved out of its group under its own
# id, which no re-drive claimed since). One still this caller's is re-scored now: no
# worker claims it for another grace period, while the produce runs.
# K: task, its `claimed:<id>` token; A: id, '1' for one this caller claimed; S: token,
# now; SK: pending. 1, or 0 where another worker's re-drive claimed it (or decided it:
# no longer pending) since.
_FENCE = """
local v = redis.call('GET', K[1])
if not v or string.sub(v, 1, 1) ~= 'P' then return 0 end
local held = redis.call('GET', K[2])
if held ~= S[1] and (held or A[2] ~= '') then return 0 end
redis.call('ZADD', SK[1], S[2], A[1])
return 1
"""

# Leave P for a final state; a no-op unless the entry is still P (a repeated call is safe).
# K: task, group, body, unanswered index of the task's channel, answered mark, published
# index of the task's subscriber, (K[8]) its `unsent:<id>` mark and (K[10]) its
# `redriven:<id>` mark, cut to the entry's new expiry when A[5] cuts it (each was set for
# the entry's life then, `_FORGET`, `_CLAIM_STALE`), the second deleted when it is sent;
# A: final value, id, body ('' for none), seconds to keep
# it, milliseconds to keep the entry ('' as it is), when the task expires ('' for none: not
# sent), seconds to keep the published index ('' for none), when the members it drops
# expired by (a day ago, PUBLISHED_KEPT_S: their bodies are kept as long, and a
# tombstone erases every body the index names, `forget_published`); SK: pending. A sent
# task enters the unanswered index (one ZADD) only as it leaves P, so a confirm repeated after
# its outcome came back does not put it back, and only when no outcome came back while it
# was P (`answered:<id>`, `first_outcome`: published, then the worker died before the
# confirm, or the consumer answered first), so a re-drive's confirm does not either. It
# enters its subscriber's published index (`published:<subscriber>`, by expiry: what a
# later opt-out withdraws, sinks.withdrawals) as it leaves P too, whose members expired
# a day before go then. Unless (K[7], the subscriber's facts hash, read whole with
# HGETALL: ~10-20 fields; A[9], the channel it went out on, '' for no look, its opt-in
# field named by it A-Z lowered, as `moments.models.channel_key` names them, and its
# opt-out every `opt_out:` field whose name A-Z lowered is that, the latest counting:
# `opt_out:WeChat` for `wechat`, recorded by a build before the lowering and kept while
# the subscriber's facts are written, as the release and the gates fold them,
# `sinks.relevance._facts`; A[10], when it was made, '' for no tombstone look) the facts
# make it void now, as `sinks.relevance.voided` reads them: then nothing is written, the
# entry stays P (a re-drive drops it and withdraws it, should its worker die) and the
# reply is {why, when}: a batch that recorded the change before this ran and looked the
# index up before it, or after it, finds nothing, and the caller withdraws the
# task itself; A[11]: '' or, for a task so withdrawn (`confirm`'s `withdrawn`), what its
# id is indexed under (`WITHDRAWN_MEMBER`, as `_WITHDRAWN` leaves a withdrawn task), and
# not in the unanswered index; its look is at a tombstone alone (one applied since its
# withdrawal: its body, written after the erasure, would be found by no one), and one
# found confirms it all the same, with no body and in no index, replying {why, when}:
# its notice went out, and left pending for another confirm, a crash before that one had
# its re-drive withdraw it again, `forgotten`. The body
# is written as the entry leaves P only: a confirm repeated (a re-drive's and its stalled
# first worker's) after a tombstone erased it writes it not again. A task left pending
# void is marked so (K[9], `void:<id>`: why and when, as long as its entry lives, taken as
# it leaves P): its re-drive withdraws and confirms it as its worker would have
# (`TaskSink._resume_void`), not deciding it again.
# K[11], A[12], A[13]: the entry's `claimed:<id>` token, and a fenced decision's token
# ('' for none: the engine's, a confirm) and '1' for an entry it claimed ('' for one its
# decision made pending), as `_FENCE` takes them: a drop of such a decision is written on
# an entry still its own only (`Held`), in this step; one another worker's re-drive
# claimed since (this decision stalled past the grace period) is left as it is, reply 0.
_SETTLE = """
if A[12] ~= '' then
  local held = redis.call('GET', K[11])
  if held ~= A[12] and (held or A[13] ~= '') then return 0 end
end
local function void(why, at)
  local ttl = redis.call('PTTL', K[1])
  if ttl > 0 then
    redis.call('SET', K[9], why .. ' ' .. at, 'PX', ttl)
  else
    redis.call('SET', K[9], why .. ' ' .. at)
  end
  return {why, at}
end
local v = redis.call('GET', K[1])
local erased = false
if v and string.sub(v, 1, 1) == 'P' then
  if A[9] ~= '' then
    local channel = string.lower(A[9])
    local all, got, out = redis.call('HGETALL', K[7]), {}, nil
    for i = 1, #all, 2 do
      local name, at = all[i], all[i + 1]
      if string.sub(name, 1, 8) ~= 'opt_out:' then
        got[name] = at
      elseif #name == 8 + #channel and string.lower(string.sub(name, 9)) == channel
          and (not out or tonumber(at) > tonumber(out)) then
        out = at
      end
    end
    local forgotten, opt_in, opt_list = got['forgotten'], got['opt_in:' .. channel], got['opt_list']
    if forgotten and A[10] ~= '' and tonumber(A[10]) <= tonumber(forgotten) then
      if A[11] == '' then return void('forgotten', got['erased'] or forgotten) end
      erased = got['erased'] or forgotten
    end
    local active, suspended = got['active'], got['suspended']
    if A[11] == '' and got['closed'] then
      local closed = tonumber(got['closed'])
      if (not active or closed > tonumber(active))
          and (not suspended or closed > tonumber(suspended)) then
        return void('closed', got['closed'])
      end
    end
    if A[11] == '' and out and (not opt_in or tonumber(out) >= tonumber(opt_in))
        and (not opt_list or tonumber(out) >= tonumber(opt_list)) then
      return void('opt_out', out)
    end
  end
  redis.call('SET', K[1], A[1], 'XX', 'KEEPTTL')
  if A[5] ~= '' then
    local ttl = redis.call('PTTL', K[1])
    if ttl < 0 or ttl > tonumber(A[5]) then redis.call('PEXPIRE', K[1], A[5]) end
    if redis.call('PTTL', K[8]) > tonumber(A[5]) then redis.call('PEXPIRE', K[8], A[5]) end
    if redis.call('PTTL', K[10]) > tonumber(A[5]) then redis.call('PEXPIRE', K[10], A[5]) end
  end
  if string.sub(A[1], 1, 1) == 'S' then redis.call('DEL', K[10]) end
  local answered = redis.call('DEL', K[5]) == 1
  if A[6] ~= '' and not answered and A[11] == '' then redis.call('ZADD', K[4], A[6], A[2]) end
  if A[6] ~= '' and A[7] ~= '' and not erased then
    redis.call('ZREMRANGEBYSCORE', K[6], '-inf', A[8])
    redis.call('ZADD', K[6], A[6], A[11] .. A[2])
    if redis.call('TTL', K[6]) < tonumber(A[7]) then redis.call('EXPIRE', K[6], A[7]) end
  end
  if A[3] ~= '' and not erased then redis.call('SET', K[3], A[3], 'EX', A[4]) end
end
redis.call('ZREM', SK[1], A[2])
redis.call('DEL', K[2], K[9])
if erased then return {'forgotten', erased} end
return 1
"""

# A task withdrawn (`Ledger.withdrawn`). K: its subscriber's published index, the
# unanswered index of its channel; A: id. Out of the unanswered index; in the published
# index renamed `WITHDRAWN_MEMBER` .. id at the same expiry, so that `published_of` no
# longer names it while a tombstone still finds its body (`forget_published`), trimmed
# with the live ones a day past its expiry, as long as its body is kept.
_WITHDRAWN = """
local at = redis.call('ZSCORE', K[1], A[1])
if at then
  redis.call('ZREM', K[1], A[1])
  redis.call('ZADD', K[1], at, S[1] .. A[1])
end
redis.call('ZREM', K[2], A[1])
return 1
"""

# An outcome of a task whose body is not there (expired, or its confirm not written yet).
# KEYS: outcome mark, task, answered mark, `redriven:<id>` mark, the unanswered index of
# every channel; ARGV: ttl, id, token (`Ledger.first_outcome`; '' none). Whether the status
# is new, or was noted with this token (the same call again, its reply lost); a task still
# pending (published, not confirmed), or waiting where a re-drive parked it (published,
# maybe, before its worker died: the outcome says it was; not a leave's mark, `L<time>`,
# whose id never went out), is marked answered, so its
# confirm leaves it out of the index (`_SETTLE`) and its release confirms it as sent.
_FIRST_OUTCOME_UNKNOWN = """
local mark = ARGV[3]
if mark == '' then mark = '1' end
local first = redis.call('SET', KEYS[1], mark, 'NX', 'EX', ARGV[1])
local v = redis.call('GET', KEYS[2])
local state = v and string.sub(v, 1, 1)
local redriven = state == 'D' and redis.call('GET', KEYS[4])
if state == 'P' or (redriven and string.sub(redriven, 1, 1) ~= 'L') then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[1])
end
for i = 5, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
if first or (ARGV[3] ~= '' and redis.call('GET', KEYS[1]) == ARGV[3]) then return 1 end
return 0
"""

# A merged moment out of its carrier's group. K: task, carrier's group, group it moves
# to, its `redriven:<id>` mark; A: carrier id, id, payload, 'X' (dropped) / 'P' (carries
# the others) / 'M' (joins A[5]), reason or new carrier, milliseconds to keep a dropped
# entry ('' as it is), the pending payload ('' the one it joined with), '1' when its
# carrier may have gone out with it inside (`Leave.went_out`; '' for none): carrying the
# others, marked `L<time>` (`LEFT_MARK`: its moments may have gone out inside that carrier,
# this id not: their cooldowns are kept, the task not sealed), for its entry's life, which
# a re-drive's claim turns into its own (`_CLAIM_STALE`); dropped, marked '1' (sealed,
# `sealed_alone`) for its entry's life, so that a batch read again keeps its cooldown as
# the drop did (`_dropped_before`);
# when its decision judged it (`Leave.went_at`, the mark's time carrying the others; ''
# the leave's, S[1]); S: now, ttl; SK: pending.
# K[5], A[10], A[11]: the carrier's `claimed:<id>` token, and a fenced decision's token
# ('' for none: the engine's) and '1' for a carrier it claimed ('' for one its decision
# made pending), as `_FENCE` takes them (`Held`): a leave of such a decision is written
# only while its carrier is still its own. One another worker's re-drive claimed since
# (this decision stalled past the grace period) is refused, reply 0: that worker decides
# the moment, and may have sent it inside the carrier. K[6], K[7], A[12]: the returns owed
# (by time, records) and the keys of those this decision owes for the moment, space
# separated (`Leave.returns`), forgotten with the refusal while the moment is still in that
# carrier: it went out there, or goes as that worker decides (a drop of it owes its own).
# Kept, it stayed owed for good (`OwedReturns.send_owed` keeps a merged moment's) and was
# sent once the entry lapsed; written, the drop sent it for a moment that went out, its
# rule free to fire again: a second contact. Only a return this decision owes itself
# (K[8], the owners of the returns owed, names its token, `_OWE_RETURNS`): the worker that
# claimed the carrier since may owe one under the same key, for the same drop, before its
# leave is written; forgotten here, and that worker dead before sending it, no timer found
# it: the moment dropped, its rule's cooldown held, a fire missed.
# A[13]: '1' for a retry of the call (its first reply lost, `sinks.retry.with_retry`): an
# entry already as this leave writes it, with the fence passed, is this leave's own
# first try, reply 1 (written: its drop counted suppressed once, `Writes.unwritten`, and
# a moment moved out under its own id sent now). Reply 0 there, the first try's drop was
# counted nowhere, and its moved moment was taken for another worker's and left to its
# re-drive. A carrier another worker's re-drive claimed between the two tries refuses the
# retry (its own write or that worker's: not told apart, so not counted).
_LEAVE = """
if A[10] ~= '' then
  local held = redis.call('GET', K[5])
  if held ~= A[10] and (held or A[11] ~= '') then
    if A[12] ~= '' and redis.call('GET', K[1]) == 'M' .. A[1] then
      for id in string.gmatch(A[12], '%S+') do
        if redis.call('HGET', K[8], id) == A[10] then
          redis.call('ZREM', K[6], id)
          redis.call('HDEL', K[7], id)
          redis.call('HDEL', K[8], id)
        end
      end
    end
    return 0
  end
end
local v = redis.call('GET', K[1])
if v ~= 'M' .. A[1] then
  if A[13] == '' or not v then return 0 end
  local was = 'M' .. A[5]
  if A[4] == 'X' then
    was = 'X' .. A[5]
  elseif A[4] == 'P' then
    was = 'P' .. A[3]
    if A[7] ~= '' then was = 'P' .. A[7] end
  end
  if v == was then return 1 end
  return 0
end
redis.call('LREM', K[2], 0, A[3])
if A[4] == 'X' then
  redis.call('SET', K[1], 'X' .. A[5], 'XX', 'KEEPTTL')
  if A[6] ~= '' then
    local ttl = redis.call('PTTL', K[1])
    if ttl < 0 or ttl > tonumber(A[6]) then redis.call('PEXPIRE', K[1], A[6]) end
  end
  if A[8] ~= '' then
    local left = redis.call('PTTL', K[1])
    if left > 0 then
      redis.call('SET', K[4], '1', 'PX', left)
    else
      redis.call('SET', K[4], '1', 'EX', S[2])
    end
  end
elseif A[4] == 'P' then
  local carries = A[3]
  if A[7] ~= '' then carries = A[7] end
  redis.call('SET', K[1], 'P' .. carries, 'XX', 'KEEPTTL')
  redis.call('ZADD', SK[1], S[1], A[2])
  if A[8] ~= '' then
    local left = redis.call('PTTL', K[1])
    local before = redis.call('GET', K[4])
    local at = A[9]
    if at == '' then at = S[1] end
    if left > 0 then redis.call('SET', K[4], before or ('L' .. at), 'PX', left) end
  end
else
  redis.call('SET', K[1], 'M' .. A[5], 'XX', 'KEEPTTL')
  redis.call('RPUSH', K[3], A[3])
  redis.call('EXPIRE', K[3], S[2])
end
return 1
"""


# Returns owed for longer than the cutoff, each re-scored now so that one worker at a time
# sends it again. K: returns (by time owed), records (and, for cooldown returns, their
# owners); A: cutoff, now, limit. Flat [id, record, ...]; an id whose record is gone
# leaves the index (and the owners).
_OWED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local record = redis.call('HGET', KEYS[2], id)
  if record then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, id)
    table.insert(out, record)
  else
    redis.call('ZREM', KEYS[1], id)
    if KEYS[3] then redis.call('HDEL', KEYS[3], id) end
  end
end
return out
"""


# KEYS: returns (owed, by time), return records (and, for cooldown returns, their owners:
# id -> the token of the fenced decision that owes it, `Held`, which a refused leave
# reads, `_LEAVE`); ARGV: now, the owner ('' for none: any owner an earlier decision
# left is deleted), then id, record pairs. Each record and its time in one step: a
# script, not MULTI (the ACL docs/security.md recommends grants no @transaction).
_OWE_RETURNS = """
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  if KEYS[3] then
    if ARGV[2] ~= '' then
      redis.call('HSET', KEYS[3], ARGV[i], ARGV[2])
    else
      redis.call('HDEL', KEYS[3], ARGV[i])
    end
  end
end
return 0
"""

# KEYS: returns, return records (and owners); ARGV: ids. Settled: out of all in one step.
_SETTLE_RETURNS = """
redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
if KEYS[3] then redis.call('HDEL', KEYS[3], unpack(ARGV)) end
return 0
"""


# KEYS: the unanswered index of each channel; ARGV: expired before, limit, task prefix.
# Per channel, up to `limit` of the lowest scored (soonest expiry) at or before the
# cutoff, each taken out of its index with its ledger entry: {{id, expiry, entry}, ...}
# per key (an entry gone: nil). Atomic, so workers expiring at once take disjoint sets.
_EXPIRE = """
local out = {}
for k = 1, #KEYS do
  local due = redis.call(
    'ZRANGEBYSCORE', KEYS[k], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2]
  )
  local taken = {}
  for i = 1, #due, 2 do
    redis.call('ZREM', KEYS[k], due[i])
    table.insert(taken, {due[i], due[i + 1], redis.call('GET', ARGV[3] .. due[i])})
  end
  table.insert(out, taken)
end
return out
"""


UNANSWERED_SCAN = 1000
"""The ZSCAN count of one read of an unanswered index (`list_unanswered`)."""

_SETTLE_CHUNK = 5000
"""Ids a settle call takes: `unpack` in a script is bounded by Lua's stack (LUAI_MAXCSTACK,
8000 in Redis)."""


DROPPED_KEPT_S = 86400
"""How long a dropped task's entry outlives the task's `expires_at`. It guards against the
task being made again (events read again after a crash) until then; after it, a task
made again is expired and dropped once more. Kept the ledger's whole TTL (400 days) it
cost Redis ~150 bytes for each of the many tasks the caps and capacity drop. A moment
judged again on a later day (a contract's end over its lead, a silence) makes its task
with a later expiry: it takes over the entry once the dropped task expired
(`TaskLedger.claim`'s `again`), as it would a day later once the entry is gone."""


CLAIMED = 1
"""`TaskLedger.claim`: the id was new to the ledger (or its entry gone)."""
TAKEN_OVER = 2
"""`TaskLedger.claim`: a dropped entry whose task expired, taken over by the task of a
moment judged again (counted at its first task: not again)."""


def takeover_window(ttl_seconds: int) -> int:
    """The TTL left, in seconds, at or under which a dropped entry's task has expired
    (`DROPPED_KEPT_S`), for a ledger keeping entries `ttl_seconds`; -1 (never) when that is
    not longer: a dropped entry then keeps only the ledger's TTL, which says nothing of its
    expiry."""
    return DROPPED_KEPT_S if ttl_seconds > DROPPED_KEPT_S else -1


Settle = tuple[
    str, bytes, bytes, int, int | None, tuple[str, float] | None, str | None, float | None, str
]
"""A settle call: task id, final value, body, seconds to keep the body, milliseconds to
keep the entry (None: its TTL as it is), for a sent task its channel and expiry (epoch
seconds), for the unanswered index (None: not sent), its subscriber, for the published
index (None: not indexed), and for an indexed task whose subscriber's facts are looked at
first, when it was made (`math.inf`: not against a tombstone; None: no look), and what its
id is indexed under ('' or, withdrawn, `WITHDRAWN_MEMBER`)."""

Voided = dict[str, tuple[WithdrawReason, float]]
"""`Ledger.confirm`'s reply: per task id the facts made void as it was confirmed, why and
when the change was (epoch seconds); left pending."""


def void_of(mark: bytes) -> tuple[WithdrawReason, float]:
    """A `void:<id>` mark read: why and when (`_SETTLE`, `why .. ' ' .. when`)."""
    why, _, at = mark.decode().partition(" ")
    return WithdrawReason(why), float(at)


WITHDRAWN_MEMBER = "withdrawn:"
"""What a withdrawn task's id is prefixed with in its subscriber's published index
(`_WITHDRAWN`): kept there, not live, until its body goes."""

PUBLISHED_KEPT_S = 86400
"""How long a subscriber's published index outlives the expiry of its latest task, and
keeps an expired task (as long as its body: `sinks.dispatch._BODY_GRACE_S`)."""


@dataclass(frozen=True)
class Unanswered:
    """A published task no outcome came back for (yet): `TaskLedger.unanswered_key`."""

    task_id: str
    channel: str
    expires_at: float
    """Epoch seconds: the task's `expires_at`."""


def _kept_ms(until: float | None, now: float) -> int | None:
    """Milliseconds a dropped entry is kept: `DROPPED_KEPT_S` past its task's expiry
    (`until`, epoch seconds). In whole seconds, cut down, the entry's TTL read a day or
    less up to ~1.5 s before the task expired, and a moment judged again took it over
    while its task was still live (the memory ledger, exact, did not)."""
    return None if until is None else max(1, int((until + DROPPED_KEPT_S - now) * 1000))


CLAIM_TOKEN_KEPT_S = 86400
"""How long a re-drive's claim token, or a release's (`claimed:<id>`), is kept: longer
than any decision runs. A decision that stalled longer finds it gone and sends nothing
(`fence`): its entries are re-driven again, late, not lost."""


def new_claim_token() -> str:
    """A token no other claim holds (`claim_stale`, `fence`)."""
    return uuid.uuid4().hex


LEFT_MARK = b"L"
"""What a leave's `redriven:<id>` mark begins with (`L<time>`, `_LEAVE`, `Leave.went_out`):
the moments of the task may have gone out inside another carrier, withdrawn since, so its
drop keeps their cooldowns; its id itself never went out (not `Ledger.redriven`: not
sealed, not withdrawn) until a re-drive claims it (`_CLAIM_STALE` turns the mark into its
own, `CARRIED_MARK`, the time kept). A claim's mark is the time alone, or `1` from an older
build."""
CARRIED_MARK = b"C"
"""What the `redriven:<id>` mark a re-drive's claim made of a leave's begins with
(`C<time>`, `_CLAIM_STALE`): a claim's mark (`Ledger.redriven`: sealed, withdrawn when
dropped) that keeps the leave's kind, so that every later claim reports it too
(`claim_stale`'s `carried`: the moments' cooldowns kept when dropped). A build before it
wrote the time alone, and a second re-drive returned those cooldowns; one that reads a
`C<time>` mark finds no time in it, and judges the task sealed."""


def is_left(mark: bytes) -> bool:
    """Whether a `redriven:<id>` mark is a leave's (`LEFT_MARK`), not a claim's."""
    return mark.startswith(LEFT_MARK)


def is_carried(mark: bytes) -> bool:
    """Whether a `redriven:<id>` mark says a leave made the task: a leave's own
    (`LEFT_MARK`) or the claim's a re-drive made of one (`CARRIED_MARK`)."""
    return mark.startswith((LEFT_MARK, CARRIED_MARK))


def claimed_mark(mark: bytes) -> bytes:
    """The mark a re-drive's claim makes of a leave's (`_CLAIM_STALE`): `L<time>` becomes
    `C<time>`; any other is kept as it is."""
    return CARRIED_MARK + mark.removeprefix(LEFT_MARK) if is_left(mark) else mark


def first_pending_of(mark: bytes) -> float | None:
    """When a re-driven task first went pending, as its `redriven:<id>` mark holds it
    (`_CLAIM_STALE`; a leave's, `LEFT_MARK`, when its decision judged it, as the claim's
    made of it, `CARRIED_MARK`, holds it on); None for a mark
    an older build wrote ('1'), which does not say, and for the `1` a merged moment dropped
    with a carrier that may have gone out bears (`_LEAVE`, `Leave.went_out`): both judged
    sealed (`sealed_alone`)."""
    try:
        at = float(mark[1:] if is_carried(mark) else mark)
    except ValueError:
        return None
    return None if mark == b"1" or not math.isfinite(at) else at


def moved_bytes(channels: Mapping[str, str]) -> bytes:
    """A `moved:<id>` mark's value: moment id -> channel, as JSON."""
    return orjson.dumps(dict(channels))


def moved_of(mark: bytes) -> dict[str, str]:
    """A `moved:<id>` mark's channels (`moved_bytes`)."""
    value = orjson.loads(mark)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def as_bytes(value: Any) -> bytes:
    """A Redis reply as bytes (a client set to decode answers str)."""
    return value if isinstance(value, bytes) else str(value).encode()


def state_of(value: bytes | None) -> str | None:
    """A ledger entry's state by its first byte: 'pending', 'deferred', 'merged', 'sent',
    'dropped', or None when there is no entry."""
    if value is None:
        return None
    return _STATES.get(value[:1], "unknown")


def sent_meta_of(value: bytes | None) -> bytes | None:
    """What `confirm` stored with a sent task (None when the entry is not `sent`)."""
    if value is None or not value.startswith(SENT):
        return None
    return value[1:]


def sent_meta_fields(value: bytes | None) -> dict[str, object]:
    """`sent_meta_of` read (rule and moment type, when it was sent); {} for an entry that
    is not `sent`, holds none or holds no JSON object."""
    raw = sent_meta_of(value)
    try:
        meta = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


class TaskLedger:
    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.pending_key = f"{prefix}pending"
        self.returns_key = f"{prefix}returns"
        """Cooldown returns owed: task id -> when (moments.cooldowns, `owe_returns`)."""
        self.return_records_key = f"{prefix}returns:records"
        """Task id -> the record of its cooldown return while it is owed."""
        self.return_owners_key = f"{prefix}returns:owners"
        """Task id -> the token of the fenced decision that owes its cooldown return (none:
        an unfenced one's), while it is owed (`owe_returns`' `owner`, read by `_LEAVE`)."""
        self.withdrawals_key = f"{prefix}withdrawals"
        """Withdrawals owed (`owe_withdrawals`): task id -> when."""
        self.withdrawal_records_key = f"{prefix}withdrawals:records"
        """Task id -> its withdrawal notice while it is owed."""
        self._claim = BatchScript(redis, _CLAIM, keys=1, args=3)
        self._claim_stale = BatchScript(redis, _CLAIM_STALE, keys=3, args=1)
        self._fence = BatchScript(redis, _FENCE, keys=2, args=2)
        self._settle = BatchScript(redis, _SETTLE, keys=11, args=13)
        self._first_unknown = redis.register_script(_FIRST_OUTCOME_UNKNOWN)
        self._leave = BatchScript(redis, _LEAVE, keys=8, args=13)
        self._withdrawn = BatchScript(redis, _WITHDRAWN, keys=2, args=1)
        self._owed = redis.register_script(_OWED)
        self._owe = redis.register_script(_OWE_RETURNS)
        self._settle_owed = redis.register_script(_SETTLE_RETURNS)
        self._expire = redis.register_script(_EXPIRE)

    def key(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def group_key(self, task_id: str) -> str:
        """The payloads of tasks merged into this (waiting) task."""
        return f"{self.prefix}group:{task_id}"

    def unanswered_key(self, channel: str) -> str:
        """Published tasks of `channel` no outcome came back for: task id -> its expiry
        (epoch seconds). An entry leaves at the task's first outcome (`first_outcome`),
        or is taken by `expire_unanswered` once its expiry and the grace are past."""
        return f"{self.prefix}unanswered:{channel}"

    def answered_key(self, task_id: str) -> str:
        """Set while the task's entry is pending when an outcome for it came back (it was
        published, its confirm not written yet): its confirm leaves it out of the
        unanswered index (`first_outcome`); taken as the entry leaves pending."""
        return f"{self.prefix}answered:{task_id}"

    def published_key(self, subscriber_id: str) -> str:
        """A subscriber's published tasks not withdrawn, expired a day ago at most (their
        bodies are kept as long): task id -> its expiry (epoch seconds); see
        `published_of` (the live ones) and `forget_published` (all)."""
        return f"{self.prefix}published:{subscriber_id}"

    def facts_key(self, subscriber_id: str) -> str:
        """The subscriber's facts (`sinks.relevance.FactsStore.key`): a confirm looks at
        them as it indexes a task (`confirm`'s `made`)."""
        return f"{self.prefix}facts:{subscriber_id}"

    def body_key(self, task_id: str) -> str:
        """A sent task's payload, kept until it expires (for outcome retries)."""
        return f"{self.prefix}body:{task_id}"

    def void_key(self, task_id: str) -> str:
        """Set while the task's entry is pending when its confirm found it void (why and
        when: `confirm`); taken as the entry leaves pending (`voided_pending`)."""
        return f"{self.prefix}void:{task_id}"

    def unsent_key(self, task_id: str) -> str:
        """Set (for as long as the entry lives) when a tombstone took the task out of the
        deferral queue back to pending (`sinks.deferral._FORGET`): it waited there, so it
        was never published, and its re-drive withdraws nothing (`unsent`)."""
        return f"{self.prefix}unsent:{task_id}"

    def moved_key(self, task_id: str) -> str:
        """Set before the task is published (`mark_moved`, for the ledger's ttl) when a
        moment of it goes out on another channel than its payload's: which, and on what."""
        return f"{self.prefix}moved:{task_id}"

    def redriven_key(self, task_id: str) -> str:
        """Set (for as long as the entry lives, until it is sent) when the re-drive claimed
        the task (`claim_stale`), holding when it first went pending: its worker may have
        published it before dying, so a later drop for a profile change withdraws it
        (`redriven`). Or, `L<time>` (`LEFT_MARK`), set by a leave (`leave_many`,
        `Leave.went_out`): its moments may have gone out inside another carrier
        (`redriven_carried`)."""
        return f"{self.prefix}redriven:{task_id}"

    def claimed_key(self, task_id: str) -> str:
        """The token of the re-drive that claimed the task last (`claim_stale`), or of
        the release that took it out of the deferral queue (`sinks.deferral._RELEASE`),
        for a day (`CLAIM_TOKEN_KEPT_S`): its produce is fenced by it (`fence`)."""
        return f"{self.prefix}claimed:{task_id}"

    async def claim(
        self,
        items: Sequence[tuple[str, bytes]],
        again: Collection[str] = (),
        call: ClaimCall | None = None,
    ) -> list[int]:
        """Mark each (task id, payload) pending: `CLAIMED` (or `TAKEN_OVER`) where this
        caller now owns it, else 0. `again`: ids of tasks made by a moment judged again,
        which also take over a dropped entry whose task expired (it was never sent: see
        `DROPPED_KEPT_S`); the entry then holds the payload with `counted` set
        (`counted_payload`). `call`: the same object for every try of one claim; a retry
        takes the entries its first try wrote as its own (`ClaimCall`, `_CLAIM`)."""
        if not items:
            return []
        retry = call is not None and call.at is not None
        now = call.at if call is not None and call.at is not None else time.time()
        if call is not None:
            call.at = now
        calls = [((self.key(i),), (payload, i, "1" if i in again else "")) for i, payload in items]
        window = takeover_window(self.ttl)
        shared = (
            self.ttl,
            now,
            window * 1000 if window >= 0 else -1,
            COUNTED_TAIL,
            self.unsent_key(""),
            self.redriven_key(""),
            self.moved_key(""),
            self.claimed_key(""),
            "1" if retry else "",
        )
        results = await self._claim.run(calls, shared, (self.pending_key,))
        return [int(ok or 0) for ok in results]

    async def confirm(
        self,
        task_ids: Sequence[str],
        meta: Mapping[str, bytes] | None = None,
        bodies: Mapping[str, tuple[bytes, int]] | None = None,
        awaiting: Mapping[str, tuple[str, float]] | None = None,
        subscribers: Mapping[str, str] | None = None,
        made: Mapping[str, float] | None = None,
        withdrawn: Collection[str] = (),
    ) -> Voided:
        """Record that these tasks were acknowledged by the broker.

        `meta` (small, kept as long as the ledger entry) and `bodies` (payload and
        seconds to keep it) are what outcomes need later; `awaiting` (channel and expiry,
        epoch seconds, per task id): the tasks enter the unanswered index until their
        first outcome (one ZADD each, in the same script); `subscribers` (per task id of
        `awaiting`): and their subscriber's published index until they expire or are
        withdrawn (`published_of`). `made` (per task id of `subscribers`, when it was made,
        `sinks.relevance.made_at`; `math.inf` for no tombstone look): first, in the same
        step, the subscriber's facts are looked at; a task they make void now
        (`sinks.relevance.voided`) is left pending, unindexed, and returned with why.
        `withdrawn` (ids of `subscribers`): such tasks, withdrawn since, are indexed as
        `_WITHDRAWN` leaves a withdrawn task, out of `published_of` and of the unanswered
        index, for a tombstone to erase their bodies (`forget_published`); those in `made`
        are looked at against a tombstone alone, and one applied since confirms them all
        the same, with no body and in no index, and returns them (`forgotten`): their
        notice went out, and nothing of the erased subscriber is to be written."""
        meta, bodies, awaiting = meta or {}, bodies or {}, awaiting or {}
        subs, looks = subscribers or {}, made or {}
        items: list[Settle] = []
        for task_id in task_ids:
            body, keep = bodies.get(task_id, (b"", 0))
            value = SENT + meta.get(task_id, b"")
            sent = awaiting.get(task_id)
            sub = subs.get(task_id)
            look = looks.get(task_id) if sent is not None and sub is not None else None
            member = WITHDRAWN_MEMBER if task_id in withdrawn else ""
            items.append((task_id, value, body, max(1, keep), None, sent, sub, look, member))
        replies = await self._settle_many(items)
        return {
            task_id: (WithdrawReason(as_bytes(reply[0]).decode()), float(reply[1]))
            for task_id, reply in zip(task_ids, replies, strict=True)
            if isinstance(reply, list)
        }

    async def drop(self, task_id: str, reason: str) -> None:
        """The owner decided not to send this task (expired, cancelled, capacity...)."""
        await self.drop_many([(task_id, reason)])

    async def drop_many(
        self,
        items: Sequence[tuple[str, str]],
        keep_until: Mapping[str, float] | None = None,
        held: Held | None = None,
    ) -> list[bool]:
        """`drop` for each (task id, reason), in one call. `keep_until` (epoch seconds per
        task id): its entry need not outlive this (see `DROPPED_KEPT_S`). `held`: see
        `sinks.stores.Ledger.drop_many` (checked in the same script, `_SETTLE`: 0 where
        it refused)."""
        now, until = time.time(), keep_until or {}
        replies = await self._settle_many(
            [
                (
                    i,
                    DROPPED + reason.encode(),
                    b"",
                    1,
                    _kept_ms(until.get(i), now),
                    None,
                    None,
                    None,
                    "",
                )
                for i, reason in items
            ],
            held,
        )
        return [reply != 0 for reply in replies]

    async def leave_many(
        self, items: Sequence[Leave], held: Held | None = None, again: bool = False
    ) -> list[bool]:
        """See `sinks.stores.Ledger.leave_many` (`held` checked in the same script,
        `_LEAVE`)."""
        if not items:
            return []
        now = time.time()
        calls = []
        for i in items:
            if i.dropped is not None:
                keep = _kept_ms(i.keep_until, now)
                mode, value, kept = "X", i.dropped, "" if keep is None else keep
            else:
                to = i.to or i.task_id
                mode, value, kept = ("P" if to == i.task_id else "M"), to, ""
            group = self.group_key(i.carrier_id)
            keys = (
                self.key(i.task_id),
                group,
                self.group_key(value) if mode == "M" else group,
                self.redriven_key(i.task_id),
                self.claimed_key(i.carrier_id),
                self.returns_key,
                self.return_records_key,
                self.return_owners_key,
            )
            marked = "1" if i.went_out else ""
            at = "" if i.went_at is None else repr(i.went_at)
            token, mine = ("", "") if held is None else (held.token, held.mine(i.carrier_id))
            owed = " ".join(i.returns) if held is not None else ""
            args = (
                i.carrier_id,
                i.task_id,
                i.payload,
                mode,
                value,
                kept,
                i.carries,
                marked,
                at,
                token,
                mine,
                owed,
                "1" if again else "",
            )
            calls.append((keys, args))
        done = await self._leave.run(calls, (now, self.ttl), (self.pending_key,))
        return [bool(ok) for ok in done]

    async def _settle_many(self, items: Sequence[Settle], held: Held | None = None) -> list[Any]:
        """The settle script's reply per item: 1, or {why, when} for a task its facts
        made void (`confirm`); 0 for one `held` (a fenced decision's drop) no longer
        holds."""
        if not items:
            return []
        now = time.time()
        calls = [
            (
                (
                    self.key(i),
                    self.group_key(i),
                    self.body_key(i),
                    self.pending_key if sent is None else self.unanswered_key(sent[0]),
                    self.answered_key(i),
                    self.pending_key if sub is None else self.published_key(sub),
                    self.pending_key if look is None or sub is None else self.facts_key(sub),
                    self.unsent_key(i),
                    self.void_key(i),
                    self.redriven_key(i),
                    self.claimed_key(i),
                ),
                (
                    value,
                    i,
                    body,
                    keep,
                    "" if entry_keep is None else entry_keep,
                    "" if sent is None else repr(sent[1]),
                    ""
                    if sent is None or sub is None
                    else max(1, int(sent[1] - now) + PUBLISHED_KEPT_S),
                    repr(now - PUBLISHED_KEPT_S),
                    "" if look is None or sent is None else sent[0],
                    "" if look is None or math.isinf(look) else repr(look),
                    member,
                    "" if held is None else held.token,
                    "" if held is None else held.mine(i),
                ),
            )
            for i, value, body, keep, entry_keep, sent, sub, look, member in items
        ]
        return await self._settle.run(calls, shared_keys=(self.pending_key,))

    async def claim_stale(
        self,
        older_than: float,
        limit: int = 500,
        since: dict[str, float] | None = None,
        first_pending: dict[str, float | None] | None = None,
        token: str = "",
        carried: set[str] | None = None,
    ) -> list[tuple[str, bytes]]:
        """See `sinks.stores.Ledger.claim_stale`: one script call for all of them."""
        now = time.time()
        cutoff = now - older_than
        ids: list[Any] = await self.redis.zrangebyscore(
            self.pending_key, "-inf", cutoff, start=0, num=limit
        )
        task_ids = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        calls = [((self.key(i), self.redriven_key(i), self.claimed_key(i)), (i,)) for i in task_ids]
        shared = (cutoff, now, token or new_claim_token(), CLAIM_TOKEN_KEPT_S)
        replies = await self._claim_stale.run(calls, shared, (self.pending_key,))
        claimed = [(i, r) for i, r in zip(task_ids, replies, strict=True) if r]
        if since is not None:
            since.update((i, float(as_bytes(score))) for i, (_, score, _, _) in claimed)
        if first_pending is not None:
            # A leave's mark dated by the release since (`released`): when it went pending
            # is its score, `since`.
            first_pending.update(
                (i, first_pending_of(as_bytes(mark)))
                for i, (_, _, mark, released) in claimed
                if mark and not released
            )
        if carried is not None:
            carried.update(
                i for i, (_, _, mark, _) in claimed if mark and is_carried(as_bytes(mark))
            )
        return [(i, as_bytes(value)[1:]) for i, (value, _, _, _) in claimed]

    async def fence(self, claimed: Collection[str], moved: Collection[str], token: str) -> set[str]:
        """See `sinks.stores.Ledger.fence`: one script call for all of them."""
        items = [(i, "1") for i in claimed] + [(i, "") for i in moved if i not in claimed]
        if not items:
            return set()
        calls = [((self.key(i), self.claimed_key(i)), (i, mine)) for i, mine in items]
        replies = await self._fence.run(calls, (token, time.time()), (self.pending_key,))
        return {i for (i, _), ok in zip(items, replies, strict=True) if ok}

    async def postpone(self, task_ids: Sequence[str], seconds: float) -> None:
        """See `sinks.stores.Ledger.postpone`: each one's score in the pending index
        moved on (XX: one that left it, settled meanwhile, is not put back)."""
        if task_ids:
            later = time.time() + seconds
            await self.redis.zadd(self.pending_key, dict.fromkeys(task_ids, later), xx=True)

    @property
    def _return_keys(self) -> tuple[str, ...]:
        """The returns owed by time, their records and their owners."""
        return (self.returns_key, self.return_records_key, self.return_owners_key)

    async def owe_returns(self, items: Sequence[tuple[str, bytes]], owner: str = "") -> None:
        """See `sinks.stores.Ledger.owe_returns`: the record, its time and its owner, in
        one step."""
        await self._owe_into(self._return_keys, items, owner)

    async def owed_returns(self, older_than: float, limit: int = 500) -> list[tuple[str, bytes]]:
        """See `sinks.stores.Ledger.owed_returns`."""
        return await self._owed_of(self._return_keys, older_than, limit)

    async def settle_returns(self, task_ids: Sequence[str]) -> None:
        """See `sinks.stores.Ledger.settle_returns`."""
        await self._settle_of(self._return_keys, task_ids)

    async def owe_withdrawals(self, items: Sequence[tuple[str, bytes]]) -> None:
        """See `sinks.stores.Ledger.owe_withdrawals`: kept as cooldown returns are, under
        keys of their own (the same scripts)."""
        await self._owe_into((self.withdrawals_key, self.withdrawal_records_key), items)

    async def owed_withdrawals(
        self, older_than: float, limit: int = 500
    ) -> list[tuple[str, bytes]]:
        """See `sinks.stores.Ledger.owed_withdrawals`."""
        keys = (self.withdrawals_key, self.withdrawal_records_key)
        return await self._owed_of(keys, older_than, limit)

    async def settle_withdrawals(self, task_ids: Sequence[str]) -> None:
        """See `sinks.stores.Ledger.settle_withdrawals`."""
        await self._settle_of((self.withdrawals_key, self.withdrawal_records_key), task_ids)

    async def _owe_into(
        self, keys: tuple[str, ...], items: Sequence[tuple[str, bytes]], owner: str = ""
    ) -> None:
        """Each (id, record) owed from now: `keys` are the index by time and the records
        (and, for cooldown returns, their owners, each `owner`)."""
        if not items:
            return
        args: list[str | bytes | float] = [time.time(), owner]
        for task_id, record in dict(items).items():
            args += [task_id, record]
        await self._owe(keys=list(keys), args=args)

    async def _owed_of(
        self, keys: tuple[str, ...], older_than: float, limit: int
    ) -> list[tuple[str, bytes]]:
        now = time.time()
        flat: list[Any] = await self._owed(keys=list(keys), args=[now - older_than, now, limit])
        return [(as_bytes(flat[n]).decode(), as_bytes(flat[n + 1])) for n in range(0, len(flat), 2)]

    async def _settle_of(self, keys: tuple[str, ...], task_ids: Sequence[str]) -> None:
        for start in range(0, len(task_ids), _SETTLE_CHUNK):
            await self._settle_owed(
                keys=list(keys), args=list(task_ids[start : start + _SETTLE_CHUNK])
            )

    async def get(self, task_id: str) -> bytes | None:
        value: bytes | str | None = await self.redis.get(self.key(task_id))
        return value.encode() if isinstance(value, str) else value

    async def get_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """`get` for each task id, in one pipeline."""
        if not task_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.get(self.key(task_id))
        return [None if v is None else as_bytes(v) for v in await pipe.execute()]

    async def group(self, task_id: str) -> list[bytes]:
        """Payloads merged into `task_id` while it waited."""
        return (await self.group_many([task_id]))[0]

    async def group_many(self, task_ids: Sequence[str]) -> list[list[bytes]]:
        """`group` for each task id, in one pipeline."""
        if not task_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.lrange(self.group_key(task_id), 0, -1)
        return [[as_bytes(r) for r in raw] for raw in await pipe.execute()]

    async def body(self, task_id: str) -> bytes | None:
        """A sent task's payload, while `confirm` keeps it (None when gone)."""
        value: bytes | str | None = await self.redis.get(self.body_key(task_id))
        return value.encode() if isinstance(value, str) else value

    async def body_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """`body` for each task id, in one pipeline."""
        if not task_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.get(self.body_key(task_id))
        return [None if v is None else as_bytes(v) for v in await pipe.execute()]

    async def _marked(self, task_ids: Sequence[str], key: Callable[[str], str]) -> set[str]:
        """The ids among `task_ids` whose mark (`key(id)`: answered, unsent, re-driven) is
        set, in one MGET."""
        if not task_ids:
            return set()
        marks: list[Any] = await self.redis.mget([key(i) for i in task_ids])
        return {i for i, mark in zip(task_ids, marks, strict=True) if mark is not None}

    async def answered_pending(self, task_ids: Sequence[str]) -> set[str]:
        """See `sinks.stores.Ledger.answered_pending`: one round trip."""
        return await self._marked(task_ids, self.answered_key)

    async def voided_pending(self, task_ids: Sequence[str]) -> Voided:
        """See `sinks.stores.Ledger.voided_pending`: one round trip."""
        if not task_ids:
            return {}
        marks: list[Any] = await self.redis.mget([self.void_key(i) for i in task_ids])
        return {
            i: void_of(as_bytes(mark))
            for i, mark in zip(task_ids, marks, strict=True)
            if mark is not None
        }

    async def unsent(self, task_ids: Sequence[str]) -> set[str]:
        """See `sinks.stores.Ledger.unsent`: one round trip."""
        return await self._marked(task_ids, self.unsent_key)

    async def redriven(self, task_ids: Sequence[str]) -> set[str]:
        """See `sinks.stores.Ledger.redriven`: one round trip."""
        return (await self.redriven_carried(task_ids))[0]

    async def redriven_carried(self, task_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """See `sinks.stores.Ledger.redriven_carried`: one MGET."""
        if not task_ids:
            return set(), set()
        marks: list[Any] = await self.redis.mget([self.redriven_key(i) for i in task_ids])
        got = [(i, as_bytes(m)) for i, m in zip(task_ids, marks, strict=True) if m is not None]
        return {i for i, m in got if not is_left(m)}, {i for i, m in got if is_left(m)}

    async def first_pending(self, task_ids: Sequence[str]) -> dict[str, float | None]:
        """See `sinks.stores.Ledger.first_pending`: one MGET."""
        if not task_ids:
            return {}
        marks: list[Any] = await self.redis.mget([self.redriven_key(i) for i in task_ids])
        return {
            i: first_pending_of(as_bytes(mark))
            for i, mark in zip(task_ids, marks, strict=True)
            if mark is not None
        }

    async def mark_moved(self, moved: Mapping[str, Mapping[str, str]]) -> None:
        """See `sinks.stores.Ledger.mark_moved`: one pipeline."""
        if not moved:
            return
        pipe = self.redis.pipeline(transaction=False)
        for task_id, channels in moved.items():
            pipe.set(self.moved_key(task_id), moved_bytes(channels), ex=self.ttl)
        await pipe.execute()

    async def moved(self, task_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """See `sinks.stores.Ledger.moved`: one MGET."""
        if not task_ids:
            return {}
        marks: list[Any] = await self.redis.mget([self.moved_key(i) for i in task_ids])
        return {
            i: moved_of(as_bytes(mark))
            for i, mark in zip(task_ids, marks, strict=True)
            if mark is not None
        }

    async def redriven_unsent(self, task_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """See `sinks.stores.Ledger.redriven_unsent`: one MGET of both marks."""
        if not task_ids:
            return set(), set()
        keys = [self.redriven_key(i) for i in task_ids] + [self.unsent_key(i) for i in task_ids]
        marks: list[Any] = await self.redis.mget(keys)
        n = len(task_ids)
        redriven = {
            i
            for i, mark in zip(task_ids, marks[:n], strict=True)
            if mark is not None and not is_left(as_bytes(mark))
        }
        unsent = {i for i, mark in zip(task_ids, marks[n:], strict=True) if mark is not None}
        return redriven, unsent

    async def published_of(self, subscriber_ids: Sequence[str], now: float) -> list[list[str]]:
        """See `sinks.stores.Ledger.published_of`: one pipeline."""
        if not subscriber_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for sub in subscriber_ids:
            pipe.zrangebyscore(self.published_key(sub), f"({now!r}", "+inf")
        return [
            [
                member
                for i in got
                if not (member := as_bytes(i).decode()).startswith(WITHDRAWN_MEMBER)
            ]
            for got in await pipe.execute()
        ]

    async def withdrawn(self, items: Sequence[tuple[str, str, str]]) -> None:
        """See `sinks.stores.Ledger.withdrawn`: one script call (`_WITHDRAWN`)."""
        if not items:
            return
        calls = [
            ((self.published_key(sub), self.unanswered_key(channel)), (task_id,))
            for task_id, sub, channel in items
        ]
        await self._withdrawn.run(calls, (WITHDRAWN_MEMBER,))

    async def forget_published(self, subscriber_ids: Sequence[str]) -> None:
        """See `sinks.stores.Ledger.forget_published`: their indexes read, then deleted with
        the bodies they name (two round trips: a confirm between them of a task of theirs
        writes nothing, their facts' `forgotten` mark, recorded before, making it void)."""
        if not subscriber_ids:
            return
        keys = [self.published_key(s) for s in subscriber_ids]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.zrange(key, 0, -1)
        members = [as_bytes(i).decode() for got in await pipe.execute() for i in got]
        ids = [m.removeprefix(WITHDRAWN_MEMBER) for m in members]
        await self.redis.delete(*keys, *(self.body_key(i) for i in ids))

    async def first_outcome(
        self, task_id: str, status: str, channel: str | None = None, token: str = ""
    ) -> bool:
        """See `sinks.stores.Ledger.first_outcome`; the task leaves the unanswered index
        (of `channel`, or of every channel when it is not known) in the same round trip.
        Not known, the call is a script that also marks a pending task answered
        (`_FIRST_OUTCOME_UNKNOWN`); known, the task was confirmed already (its body is
        kept by the confirm): a pipeline. The mark holds `token`, so the call made again
        after its reply was lost reads its own mark back: first."""
        key = f"{self.prefix}outcome:{task_id}:{status}"
        if channel is None:  # its body gone, or not kept yet: the entry says which
            keys = [key, self.key(task_id), self.answered_key(task_id)]
            keys += [self.redriven_key(task_id), *(self.unanswered_key(c) for c in CHANNELS)]
            args: list[str | int] = [self.ttl, task_id, token]
            return bool(await self._first_unknown(keys=keys, args=args))
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, token or b"1", nx=True, ex=self.ttl)
        pipe.get(key)
        pipe.zrem(self.unanswered_key(channel), task_id)
        noted, mark, _ = await pipe.execute()
        return bool(noted) or (
            token != "" and mark is not None and as_bytes(mark) == token.encode()
        )

    async def noted_any(self, task_ids: Sequence[str], statuses: Sequence[str]) -> set[str]:
        """See `sinks.stores.Ledger.noted_any`: one EXISTS per task, pipelined."""
        if not task_ids or not statuses:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.exists(*(f"{self.prefix}outcome:{task_id}:{status}" for status in statuses))
        found = await pipe.execute()
        return {t for t, n in zip(task_ids, found, strict=True) if int(n)}

    async def unanswered(self) -> dict[str, int]:
        """How many published tasks of each channel have had no outcome (yet)."""
        pipe = self.redis.pipeline(transaction=False)
        for c in CHANNELS:
            pipe.zcard(self.unanswered_key(c))
        return dict(zip(CHANNELS, (int(n) for n in await pipe.execute()), strict=True))

    async def list_unanswered(self, channels: Sequence[str] = CHANNELS) -> list[Unanswered]:
        """Every published task of these channels with no outcome yet, soonest expiry
        first. Each index is read with ZSCAN, about `UNANSWERED_SCAN` entries a call (a
        task there throughout is read at least once, and once listed), not in one ZRANGE:
        a consumer's outage leaves hundreds of thousands, and one read of them all held
        Redis (0.2 s per 100,000), every worker's calls waiting. The list is whole in
        memory: `moments tasks pending` reads pages by expiry instead
        (`unanswered_page`)."""
        found: dict[tuple[str, str], Unanswered] = {}
        for c in channels:
            key, cursor = self.unanswered_key(c), 0
            while True:
                cursor, members = await self.redis.zscan(key, cursor, count=UNANSWERED_SCAN)
                for i, score in members:
                    task_id = as_bytes(i).decode()
                    found[(c, task_id)] = Unanswered(task_id, c, float(score))
                if cursor == 0:
                    break
        return sorted(found.values(), key=lambda u: (u.expires_at, u.task_id))

    async def unanswered_page(self, channel: str, start: int, count: int) -> list[Unanswered]:
        """`count` of the channel's unanswered tasks from the `start`-th by expiry (for
        `moments tasks pending`, which reads the index a page at a time: one ZRANGE of
        it all blocked Redis for 0.2 s per 100,000 tasks)."""
        members: Any = await self.redis.zrange(
            self.unanswered_key(channel), start, start + count - 1, withscores=True
        )
        return [Unanswered(as_bytes(i).decode(), channel, float(score)) for i, score in members]

    async def expire_unanswered(
        self, expired_before: float, limit: int = 500
    ) -> list[tuple[Unanswered, bytes | None]]:
        """Take the unanswered tasks that expired before `expired_before` (epoch seconds:
        now less the grace an outcome still has), at most `limit` per channel, with their
        ledger entries (`S<meta>`: the moment type). One script call (`_EXPIRE`): each
        channel's lowest taken out of the index as they are read, so workers expiring at
        once take disjoint sets and together drain a backlog faster (they read the same
        lowest ones, and only the ZREM that removed one counted it, so a second worker
        added nothing)."""
        keys = [self.unanswered_key(c) for c in CHANNELS]
        args: list[str | float] = [expired_before, limit, f"{self.prefix}task:"]
        reply: list[Any] = await self._expire(keys=keys, args=args)
        return [
            (
                Unanswered(as_bytes(task_id).decode(), channel, float(expires_at)),
                None if entry is None else as_bytes(entry),
            )
            for channel, taken in zip(CHANNELS, reply, strict=True)
            for task_id, expires_at, entry in taken
        ]

    async def pending_count(self) -> int:
        return int(await self.redis.zcard(self.pending_key))

    async def state(self, task_id: str) -> str | None:
        """'pending', 'deferred', 'merged', 'sent', 'dropped' or None."""
        return state_of(await self.get(task_id))

    async def sent_meta(self, task_id: str) -> bytes | None:
        """What `confirm` stored with a sent task (None when not sent or forgotten)."""
        return sent_meta_of(await self.get(task_id))
