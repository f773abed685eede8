"""The dispatch stores in one process's memory, for the backtest: the same state machine
and the same idempotent steps as the Redis scripts (sinks.ledger, sinks.deferral,
sinks.capacity, sinks.contact, sinks.relevance, sinks.declines), with expiry on an
injected clock, so a replay in event time ages keys as the stream would have.

Nothing here is shared between processes or survives one: that is what Redis is for.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from moments.enums import WithdrawReason
from moments.models import InputEvent
from sinks.capacity import merged_rank
from sinks.ledger import (
    CLAIM_TOKEN_KEPT_S,
    CLAIMED,
    DEFERRED,
    DROPPED,
    DROPPED_KEPT_S,
    LEFT_MARK,
    MERGED,
    PENDING,
    PUBLISHED_KEPT_S,
    SENT,
    TAKEN_OVER,
    WITHDRAWN_MEMBER,
    Unanswered,
    Voided,
    claimed_mark,
    first_pending_of,
    is_carried,
    is_left,
    moved_bytes,
    moved_of,
    new_claim_token,
    sent_meta_of,
    state_of,
    takeover_window,
)
from sinks.payloads import counted_payload
from sinks.relevance import (
    FACTS_TTL_S,
    SubscriberFacts,
    facts_from,
    facts_of,
    line_active,
    voided,
)
from sinks.stores import (
    CHANNELS,
    ClaimCall,
    Clock,
    DispatchStores,
    Held,
    Joining,
    Leave,
    Parking,
    Released,
    SlotKey,
)


@dataclass
class _Entry:
    value: bytes
    expires_at: float


def _left_as(i: Leave) -> bytes:
    """The entry a leave of `i` writes (`_LEAVE`): dropped, pending with what it carries,
    or merged into another carrier."""
    if i.dropped is not None:
        return DROPPED + i.dropped.encode()
    to = i.to or i.task_id
    if to == i.task_id:
        return PENDING + (i.carries or i.payload)
    return MERGED + to.encode()


class MemoryLedger:
    """`task:<id>`, the pending index, merge groups and sent bodies as dicts; `facts`: the
    subscribers' facts a confirm looks at (`confirm`'s `made`; None: none recorded)."""

    def __init__(self, clock: Clock, ttl_seconds: int, facts: MemoryFacts | None = None) -> None:
        self.clock = clock
        self.ttl = ttl_seconds
        self.facts = facts
        self.entries: dict[str, _Entry] = {}
        self.pending: dict[str, float] = {}
        self.groups: dict[str, _Entry] = {}  # value unused; members in group_members
        self.group_members: dict[str, list[bytes]] = {}
        self.bodies: dict[str, _Entry] = {}
        self.outcomes: dict[str, _Entry] = {}
        self.owed: dict[str, float] = {}  # cooldown returns owed: task id -> when
        self.owed_records: dict[str, bytes] = {}
        self.owed_owners: dict[str, str] = {}
        """The token of the fenced decision that owes each return (`owe_returns`' `owner`)."""
        self.owed_withdrawals_at: dict[str, float] = {}  # withdrawals owed: task id -> when
        self.owed_notices: dict[str, bytes] = {}
        self.awaiting: dict[str, dict[str, float]] = {c: {} for c in CHANNELS}
        """The unanswered index: channel -> task id -> expiry (epoch seconds)."""
        self.answered: dict[str, _Entry] = {}
        """Pending tasks an outcome came back for before their confirm (`answered:<id>`),
        kept the ledger's TTL from the latest such outcome, as Redis keeps the mark."""
        self.published: dict[str, dict[str, float]] = {}
        """The published index: subscriber -> task id -> expiry (epoch seconds)."""
        self.void_marks: dict[str, tuple[WithdrawReason, float]] = {}
        """`void:<id>`: pending tasks their confirm found void (`voided_pending`)."""
        self.unsent_marks: dict[str, _Entry] = {}
        """`unsent:<id>`: pending tasks a tombstone took out of the queue (`mark_unsent`)."""
        self.redriven_marks: dict[str, _Entry] = {}
        """`redriven:<id>`: tasks the re-drive decided again, until sent (`claim_stale`),
        each with when it first went pending."""
        self.claim_tokens: dict[str, _Entry] = {}
        """`claimed:<id>`: the token of the re-drive that claimed the task last
        (`claim_stale`) or the release that took it (`MemoryDeferrals.release`), for
        `CLAIM_TOKEN_KEPT_S`; its produce is fenced by it (`fence`)."""
        self.moved_marks: dict[str, _Entry] = {}
        """`moved:<id>`: the moments of a task published on another channel than their
        payload's (`mark_moved`)."""

    def _live(self, table: dict[str, _Entry], key: str) -> _Entry | None:
        entry = table.get(key)
        if entry is not None and entry.expires_at <= self.clock():
            del table[key]
            if table is self.groups:
                self.group_members.pop(key, None)
            return None
        return entry

    def set_keep_ttl(self, task_id: str, value: bytes) -> None:
        """SET ... XX KEEPTTL: only an existing entry changes; its expiry stays."""
        entry = self._live(self.entries, task_id)
        if entry is not None:
            entry.value = value

    async def claim(
        self,
        items: Sequence[tuple[str, bytes]],
        again: Collection[str] = (),
        call: ClaimCall | None = None,
    ) -> list[int]:
        retry = call is not None and call.at is not None
        now = call.at if call is not None and call.at is not None else self.clock()
        if call is not None:
            call.at = now
        window = takeover_window(self.ttl)
        owned: list[int] = []
        for task_id, payload in items:
            entry = self._live(self.entries, task_id)
            if retry and entry is not None and self.pending.get(task_id) == now:
                # As Redis: the entry as this call's first try wrote it is its own.
                if entry.value == PENDING + payload:
                    owned.append(CLAIMED)
                    continue
                if task_id in again and entry.value == PENDING + counted_payload(payload):
                    owned.append(TAKEN_OVER)
                    continue
            if entry is not None and not (
                task_id in again
                and entry.value.startswith(DROPPED)
                and entry.expires_at - now <= window
            ):
                owned.append(0)
                continue
            stored = payload if entry is None else counted_payload(payload)  # as Redis
            if entry is not None:  # as Redis: the dropped task's marks are not this one's
                self.unsent_marks.pop(task_id, None)
                self.redriven_marks.pop(task_id, None)
            # As Redis: nor a moved mark or claim token an id claimed afresh finds (they
            # outlive their entry).
            self.moved_marks.pop(task_id, None)
            self.claim_tokens.pop(task_id, None)
            self.entries[task_id] = _Entry(PENDING + stored, now + self.ttl)
            self.pending[task_id] = now
            owned.append(CLAIMED if entry is None else TAKEN_OVER)
        return owned

    def _settle(self, task_id: str, value: bytes) -> bool:
        """As the Redis script; whether an outcome came back while the entry was pending."""
        entry = self._live(self.entries, task_id)
        answered = False
        if entry is not None and entry.value.startswith(PENDING):
            entry.value = value
            answered = self._live(self.answered, task_id) is not None
            self.answered.pop(task_id, None)
            if value.startswith(SENT):  # as Redis: published, in the published index now
                self.redriven_marks.pop(task_id, None)
        self.pending.pop(task_id, None)
        self.groups.pop(task_id, None)
        self.group_members.pop(task_id, None)
        self.void_marks.pop(task_id, None)
        return answered

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
        now = self.clock()
        void: Voided = {}
        for task_id in task_ids:
            entry = self._live(self.entries, task_id)
            settles = entry is not None and entry.value.startswith(PENDING)
            sub = (subscribers or {}).get(task_id)
            look = (made or {}).get(task_id)
            sending = awaiting.get(task_id) if awaiting else None
            if settles and sub is not None and look is not None and sending is not None:
                # As the Redis script: facts that make it void leave it pending, unindexed.
                values = self.facts.fields(sub) if self.facts is not None else {}
                why = voided(values, sending[0], look)
                if why is not None and task_id in withdrawn:  # as Redis: a tombstone alone,
                    why = why if why[0] is WithdrawReason.FORGOTTEN else None
                    if why is not None:  # and confirmed so: no body, in no index
                        void[task_id] = why
                        self._settle(task_id, SENT + (meta or {}).get(task_id, b""))
                        continue
                if why is not None:
                    void[task_id] = self.void_marks[task_id] = why  # as Redis: marked
                    continue
            answered = self._settle(task_id, SENT + (meta or {}).get(task_id, b""))
            withdrawing = task_id in withdrawn  # as Redis: indexed as withdrawn, awaits nothing
            if settles and not answered and not withdrawing and awaiting and task_id in awaiting:
                channel, expires_at = awaiting[task_id]
                self.awaiting.setdefault(channel, {})[task_id] = expires_at
            if settles and sub is not None and awaiting and task_id in awaiting:  # as Redis
                index = self.published.setdefault(sub, {})
                cutoff = now - PUBLISHED_KEPT_S  # as Redis: kept as long as their bodies
                for gone in [i for i, at in index.items() if at <= cutoff]:
                    del index[gone]
                member = WITHDRAWN_MEMBER + task_id if withdrawing else task_id
                index[member] = awaiting[task_id][1]
            if settles and bodies and task_id in bodies:  # as Redis: once, as it leaves P
                body, keep = bodies[task_id]
                self.bodies[task_id] = _Entry(body, now + max(1, keep))
        return void

    async def drop(self, task_id: str, reason: str) -> None:
        self._settle(task_id, DROPPED + reason.encode())

    async def drop_many(
        self,
        items: Sequence[tuple[str, str]],
        keep_until: Mapping[str, float] | None = None,
        held: Held | None = None,
    ) -> list[bool]:
        written: list[bool] = []
        for task_id, reason in items:
            held_by_other = held is not None and not self.holds(
                task_id, held.token, bool(held.mine(task_id))
            )
            written.append(not held_by_other)
            if held_by_other:
                continue  # as `_SETTLE`: another worker's re-drive claimed it since
            entry = self._live(self.entries, task_id)
            settles = entry is not None and entry.value.startswith(PENDING)
            await self.drop(task_id, reason)
            until = (keep_until or {}).get(task_id)
            if settles and until is not None and entry is not None:  # as the Redis script
                entry.expires_at = min(entry.expires_at, until + DROPPED_KEPT_S)
                for marks in (self.unsent_marks, self.redriven_marks):
                    if (mark := self._live(marks, task_id)) is not None:
                        mark.expires_at = min(mark.expires_at, entry.expires_at)
        return written

    async def leave_many(
        self, items: Sequence[Leave], held: Held | None = None, again: bool = False
    ) -> list[bool]:
        out = []
        for i in items:
            entry = self._live(self.entries, i.task_id)
            merged = entry is not None and entry.value == MERGED + i.carrier_id.encode()
            if held is not None and not self.holds(
                i.carrier_id, held.token, bool(held.mine(i.carrier_id))
            ):
                # As `_LEAVE`: another worker's re-drive claimed the carrier since; the
                # returns owed for a moment still in it are forgotten.
                if merged and i.returns:  # only those it owes itself, as `_LEAVE`
                    own = [k for k in i.returns if self.owed_owners.get(k) == held.token]
                    self._settle_returns(own)
                out.append(False)
                continue
            if entry is None or not merged:
                # As `_LEAVE`: a retry finds its first try's write (its reply lost).
                out.append(again and entry is not None and entry.value == _left_as(i))
                continue
            if self._live(self.groups, i.carrier_id) is not None:
                members = self.group_members.get(i.carrier_id, [])
                members[:] = [m for m in members if m != i.payload]
            to = i.to or i.task_id
            if i.dropped is not None:
                entry.value = DROPPED + i.dropped.encode()
                if i.keep_until is not None:
                    entry.expires_at = min(entry.expires_at, i.keep_until + DROPPED_KEPT_S)
                if i.went_out:  # as `_LEAVE`: its cooldown kept when read again
                    self.redriven_marks[i.task_id] = _Entry(b"1", entry.expires_at)
            elif to == i.task_id:
                entry.value = PENDING + (i.carries or i.payload)
                self.pending[i.task_id] = self.clock()
                if i.went_out:  # as `_LEAVE`: a leave's mark, with when it was judged
                    mark = self._live(self.redriven_marks, i.task_id)
                    at = self.clock() if i.went_at is None else i.went_at
                    first = mark.value if mark is not None else LEFT_MARK + repr(at).encode()
                    self.redriven_marks[i.task_id] = _Entry(first, entry.expires_at)
            else:
                entry.value = MERGED + to.encode()
                self.add_to_group(to, i.payload)
            out.append(True)
        return out

    async def claim_stale(
        self,
        older_than: float,
        limit: int = 500,
        since: dict[str, float] | None = None,
        first_pending: dict[str, float | None] | None = None,
        token: str = "",
        carried: set[str] | None = None,
    ) -> list[tuple[str, bytes]]:
        now = self.clock()
        cutoff = now - older_than
        held = (token or new_claim_token()).encode()
        stale = sorted((score, tid) for tid, score in self.pending.items() if score <= cutoff)
        claimed: list[tuple[str, bytes]] = []
        for score, task_id in stale[:limit]:
            self.pending[task_id] = now
            value = await self.get(task_id)
            if value is None or not value.startswith(PENDING):
                self.pending.pop(task_id, None)
                continue
            claimed.append((task_id, value[1:]))
            # As `_CLAIM_STALE`: marked in the claim's step, with when it first went
            # pending (an earlier re-drive's mark kept).
            mark = self._live(self.redriven_marks, task_id)
            left = mark is not None and is_left(mark.value)
            # As Redis: a leave's mark with a release's token since is dated by the score.
            released = left and self._live(self.claim_tokens, task_id) is not None
            if first_pending is not None and mark is not None and not released:
                first_pending[task_id] = first_pending_of(mark.value)
            if carried is not None and mark is not None and is_carried(mark.value):
                carried.add(task_id)
            entry = self.entries[task_id]
            first = mark.value if mark is not None else repr(score).encode()
            if released:
                first = LEFT_MARK + repr(score).encode()
            first = claimed_mark(first)  # a leave's mark made the claim's, its kind kept
            self.redriven_marks[task_id] = _Entry(first, entry.expires_at)
            self.claim_tokens[task_id] = _Entry(held, now + CLAIM_TOKEN_KEPT_S)  # as Redis
            if since is not None:
                since[task_id] = score
        return claimed

    def holds(self, task_id: str, token: str, by_claim: bool) -> bool:
        """Whether the entry's `claimed:<id>` token is still `token`'s (`by_claim`: an
        entry it claimed) or, for one its decision made pending, none: as `_FENCE`,
        `_SETTLE` and `_PARK` read it for a fenced decision (`Held`)."""
        held = self._live(self.claim_tokens, task_id)
        if held is not None:
            return held.value == token.encode()
        return not by_claim

    async def fence(self, claimed: Collection[str], moved: Collection[str], token: str) -> set[str]:
        now = self.clock()
        mine: set[str] = set()
        items = [(i, True) for i in claimed] + [(i, False) for i in moved if i not in claimed]
        for task_id, by_claim in items:  # as `_FENCE`
            value = await self.get(task_id)
            if value is None or not value.startswith(PENDING):
                continue
            if not self.holds(task_id, token, by_claim):
                continue
            self.pending[task_id] = now
            mine.add(task_id)
        return mine

    async def postpone(self, task_ids: Sequence[str], seconds: float) -> None:
        later = self.clock() + seconds
        for task_id in task_ids:
            if task_id in self.pending:
                self.pending[task_id] = later

    async def owe_returns(self, items: Sequence[tuple[str, bytes]], owner: str = "") -> None:
        self._owe_into(self.owed, self.owed_records, items)
        for task_id, _ in items:  # as `_OWE_RETURNS`: none, an earlier owner's forgotten
            if owner:
                self.owed_owners[task_id] = owner
            else:
                self.owed_owners.pop(task_id, None)

    async def owed_returns(self, older_than: float, limit: int = 500) -> list[tuple[str, bytes]]:
        return self._owed_of(self.owed, self.owed_records, older_than, limit)

    async def settle_returns(self, task_ids: Sequence[str]) -> None:
        self._settle_returns(task_ids)

    def _settle_returns(self, task_ids: Sequence[str]) -> None:
        self._settle_of(self.owed, self.owed_records, task_ids)
        for task_id in task_ids:
            self.owed_owners.pop(task_id, None)

    async def owe_withdrawals(self, items: Sequence[tuple[str, bytes]]) -> None:
        self._owe_into(self.owed_withdrawals_at, self.owed_notices, items)

    async def owed_withdrawals(
        self, older_than: float, limit: int = 500
    ) -> list[tuple[str, bytes]]:
        return self._owed_of(self.owed_withdrawals_at, self.owed_notices, older_than, limit)

    async def settle_withdrawals(self, task_ids: Sequence[str]) -> None:
        self._settle_of(self.owed_withdrawals_at, self.owed_notices, task_ids)

    def _owe_into(
        self, at: dict[str, float], records: dict[str, bytes], items: Sequence[tuple[str, bytes]]
    ) -> None:
        now = self.clock()
        for task_id, record in items:
            at[task_id] = now
            records[task_id] = record

    def _owed_of(
        self, at: dict[str, float], records: dict[str, bytes], older_than: float, limit: int
    ) -> list[tuple[str, bytes]]:
        now = self.clock()
        cutoff = now - older_than
        due = sorted((when, task_id) for task_id, when in at.items() if when <= cutoff)
        for _, task_id in due[:limit]:
            at[task_id] = now
        return [(task_id, records[task_id]) for _, task_id in due[:limit]]

    def _settle_of(
        self, at: dict[str, float], records: dict[str, bytes], task_ids: Sequence[str]
    ) -> None:
        for task_id in task_ids:
            at.pop(task_id, None)
            records.pop(task_id, None)

    async def get(self, task_id: str) -> bytes | None:
        entry = self._live(self.entries, task_id)
        return None if entry is None else entry.value

    async def get_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        return [await self.get(task_id) for task_id in task_ids]

    async def group(self, task_id: str) -> list[bytes]:
        if self._live(self.groups, task_id) is None:
            return []
        return list(self.group_members.get(task_id, []))

    async def group_many(self, task_ids: Sequence[str]) -> list[list[bytes]]:
        return [await self.group(task_id) for task_id in task_ids]

    def add_to_group(self, carrier_id: str, payload: bytes) -> None:
        """RPUSH and EXPIRE (the ledger's ttl) on the carrier's group."""
        if self._live(self.groups, carrier_id) is None:
            self.group_members[carrier_id] = []
        self.group_members[carrier_id].append(payload)
        self.groups[carrier_id] = _Entry(b"", self.clock() + self.ttl)

    async def pending_count(self) -> int:
        return len(self.pending)

    async def state(self, task_id: str) -> str | None:
        return state_of(await self.get(task_id))

    async def sent_meta(self, task_id: str) -> bytes | None:
        return sent_meta_of(await self.get(task_id))

    async def body(self, task_id: str) -> bytes | None:
        entry = self._live(self.bodies, task_id)
        return None if entry is None else entry.value

    async def body_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        return [await self.body(i) for i in task_ids]

    async def published_of(self, subscriber_ids: Sequence[str], now: float) -> list[list[str]]:
        out = []
        for sub in subscriber_ids:
            index = self.published.get(sub, {})
            live = sorted(
                (at, i)
                for i, at in index.items()
                if at > now and not i.startswith(WITHDRAWN_MEMBER)
            )
            out.append([i for _, i in live])
        return out

    async def withdrawn(self, items: Sequence[tuple[str, str, str]]) -> None:
        for task_id, sub, channel in items:
            index = self.published.get(sub, {})
            if (at := index.pop(task_id, None)) is not None:  # as Redis: its body still found
                index[WITHDRAWN_MEMBER + task_id] = at
            self.awaiting.get(channel, {}).pop(task_id, None)

    def mark_unsent(self, task_id: str) -> None:
        """`unsent:<id>` for as long as the task's entry lives, as `_FORGET` sets it: not
        for one a re-drive decided (`redriven:<id>`)."""
        entry = self._live(self.entries, task_id)
        if entry is not None and self._live(self.redriven_marks, task_id) is None:
            self.unsent_marks[task_id] = _Entry(b"1", entry.expires_at)

    async def redriven(self, task_ids: Sequence[str]) -> set[str]:
        return (await self.redriven_carried(task_ids))[0]

    async def redriven_carried(self, task_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        marks = [(i, self._live(self.redriven_marks, i)) for i in task_ids]
        got = [(i, m.value) for i, m in marks if m is not None]
        return {i for i, m in got if not is_left(m)}, {i for i, m in got if is_left(m)}

    def marked(self, task_id: str) -> bool:
        """Whether the task bears a `redriven:<id>` mark of either kind (a claim's or a
        leave's), as the Redis scripts that look for it with EXISTS see it (`_JOIN`,
        `_FORGET`)."""
        return self._live(self.redriven_marks, task_id) is not None

    async def first_pending(self, task_ids: Sequence[str]) -> dict[str, float | None]:
        marks = {i: self._live(self.redriven_marks, i) for i in task_ids}
        return {i: first_pending_of(m.value) for i, m in marks.items() if m is not None}

    async def mark_moved(self, moved: Mapping[str, Mapping[str, str]]) -> None:
        until = self.clock() + self.ttl  # as Redis: EX ttl
        for task_id, channels in moved.items():
            self.moved_marks[task_id] = _Entry(moved_bytes(channels), until)

    async def moved(self, task_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        marks = {i: self._live(self.moved_marks, i) for i in task_ids}
        return {i: moved_of(m.value) for i, m in marks.items() if m is not None}

    async def redriven_unsent(self, task_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        return await self.redriven(task_ids), await self.unsent(task_ids)

    async def answered_pending(self, task_ids: Sequence[str]) -> set[str]:
        return {i for i in task_ids if self._live(self.answered, i) is not None}

    async def voided_pending(self, task_ids: Sequence[str]) -> Voided:
        out: Voided = {}
        for i in task_ids:
            entry = self._live(self.entries, i)
            if i in self.void_marks and entry is not None and entry.value.startswith(PENDING):
                out[i] = self.void_marks[i]  # as Redis: the mark lives as long as the entry
        return out

    async def unsent(self, task_ids: Sequence[str]) -> set[str]:
        return {i for i in task_ids if self._live(self.unsent_marks, i) is not None}

    async def forget_published(self, subscriber_ids: Sequence[str]) -> None:
        for sub in subscriber_ids:
            for member in self.published.pop(sub, {}):
                self.bodies.pop(member.removeprefix(WITHDRAWN_MEMBER), None)

    async def first_outcome(
        self, task_id: str, status: str, channel: str | None = None, token: str = ""
    ) -> bool:
        for c in CHANNELS if channel is None else (channel,):
            self.awaiting.get(c, {}).pop(task_id, None)
        entry = self._live(self.entries, task_id)
        parked = entry is not None and entry.value.startswith(DEFERRED)
        if (
            channel is None
            and entry is not None
            and (  # as Redis: a re-drive's parked too
                entry.value.startswith(PENDING)
                or (
                    parked
                    and (mark := self._live(self.redriven_marks, task_id)) is not None
                    and not is_left(mark.value)
                )
            )
        ):
            self.answered[task_id] = _Entry(b"1", self.clock() + self.ttl)  # as Redis: EX ttl
        key = f"{task_id}:{status}"
        if (mark := self._live(self.outcomes, key)) is not None:
            return token != "" and mark.value == token.encode()
        self.outcomes[key] = _Entry(token.encode() or b"1", self.clock() + self.ttl)
        return True

    async def noted_any(self, task_ids: Sequence[str], statuses: Sequence[str]) -> set[str]:
        return {
            t
            for t in task_ids
            if any(self._live(self.outcomes, f"{t}:{status}") is not None for status in statuses)
        }

    async def unanswered(self) -> dict[str, int]:
        return {c: len(self.awaiting.get(c, {})) for c in CHANNELS}

    async def list_unanswered(self, channels: Sequence[str] = CHANNELS) -> list[Unanswered]:
        found = [
            Unanswered(task_id, c, at)
            for c in channels
            for task_id, at in self.awaiting.get(c, {}).items()
        ]
        return sorted(found, key=lambda u: (u.expires_at, u.task_id))

    async def expire_unanswered(
        self, expired_before: float, limit: int = 500
    ) -> list[tuple[Unanswered, bytes | None]]:
        taken: list[tuple[Unanswered, bytes | None]] = []
        for c in CHANNELS:
            index = self.awaiting.get(c, {})
            due = sorted((at, i) for i, at in index.items() if at <= expired_before)[:limit]
            for at, task_id in due:
                del index[task_id]
                taken.append((Unanswered(task_id, c, at), await self.get(task_id)))
        return taken


class MemoryDeferrals:
    """The `deferred` sorted set (a dict and a heap), the tasks due by rank (`due`, a dict
    and a heap, with `moved`: their due times) and each subscriber's `open` group.

    As in Redis, a task stays in `scores` (waiting, with its due time) until released;
    once due it is ranked (`ranks` to `due`), and releases take the top of `due`."""

    def __init__(self, ledger: MemoryLedger, facts: MemoryFacts | None = None) -> None:
        self.ledger = ledger
        self.facts = facts
        """The subscribers' facts a park for a suspended line reads (`Parking.active_after`)."""
        self.scores: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self.open: dict[str, tuple[str, float]] = {}  # subscriber -> (carrier, expires at)
        self.lines: dict[str, set[str]] = {}  # subscriber -> tasks its suspended line holds
        self.hours: set[str] = set()  # tasks waiting for their channel's hours
        self.capped: set[str] = set()  # tasks waiting for the subscriber's caps
        self.next_day: set[str] = set()  # tasks deferred by capacity to the next day
        self.judged: str | None = None  # the timetable they were parked by ('*': several)
        self.ranks: dict[str, float] = {}  # waiting tasks' ranks, until due
        self.due: dict[str, float] = {}  # tasks due, not released, by rank
        self._due_heap: list[tuple[float, str]] = []
        self._moved: list[tuple[float, str]] = []  # (due time, id) of those in `due`
        self.waiting_of: dict[str, set[str]] = {}  # subscriber -> their tasks waiting
        self._owner: dict[str, str] = {}  # waiting task -> its subscriber

    def _open_carrier(self, subscriber_id: str) -> str | None:
        item = self.open.get(subscriber_id)
        if item is None:
            return None
        if item[1] <= self.ledger.clock():
            del self.open[subscriber_id]
            return None
        return item[0]

    async def park(
        self,
        task_id: str,
        subscriber_id: str,
        payload: bytes,
        release_at: float,
        merge_window_s: float,
        look: bool = False,
    ) -> bool:
        """See `sinks.deferral.DeferralQueue.park`; `look`: a look at a suspended line's
        task, which opens its own group again (`Parking.active_after`)."""
        value = await self.ledger.get(task_id)
        if value is None or value[:1] not in (PENDING, DEFERRED):
            return False
        self.ledger.set_keep_ttl(task_id, DEFERRED + (payload or value[1:]))
        self.ledger.pending.pop(task_id, None)
        release_at = max(0.0, release_at)
        self.scores[task_id] = release_at
        heapq.heappush(self._heap, (release_at, task_id))
        self.due.pop(task_id, None)
        self.ranks.pop(task_id, None)
        self._owner[task_id] = subscriber_id
        self.waiting_of.setdefault(subscriber_id, set()).add(task_id)
        carrier = self._open_carrier(subscriber_id)
        is_open = False
        if carrier is not None:
            carried = await self.ledger.get(carrier)
            is_open = carried is not None and carried.startswith(DEFERRED)
        if not is_open or (look and carrier == task_id):
            window_ms = max(1, int(merge_window_s * 1000))
            self.open[subscriber_id] = (task_id, self.ledger.clock() + window_ms / 1000)
        return True

    async def park_many(
        self, items: Sequence[Parking], timetable: str = "", held: Held | None = None
    ) -> list[bool]:
        out = []
        for i in items:
            if held is not None and not self.ledger.holds(
                i.task_id, held.token, bool(held.mine(i.task_id))
            ):
                out.append(False)  # as `_PARK`: another worker's re-drive claimed it since
                continue
            release_at = i.release_at
            since, facts = i.active_after, self.facts
            forgotten = None if facts is None else facts.fields(i.subscriber_id).get("forgotten")
            if i.made is not None and forgotten is not None and i.made <= forgotten:
                # As the Redis script: the subscriber forgotten since; a pending entry is
                # left so, a waiting one taken out of the queue back to pending; marked unsent
                value = await self.ledger.get(i.task_id)
                if value is not None and value.startswith(DEFERRED):
                    await self._take(i.task_id, self.ledger.clock())
                    self.lines.get(i.subscriber_id, set()).discard(i.task_id)
                    if self._open_carrier(i.subscriber_id) == i.task_id:
                        del self.open[i.subscriber_id]
                    value = await self.ledger.get(i.task_id)
                if value is not None and value.startswith(PENDING):
                    self.ledger.mark_unsent(i.task_id)
                    out.append(False)
                    continue
            if (
                i.waits_for_line
                and since is not None
                and facts is not None
                and line_active(since, *facts.line(i.subscriber_id))
            ):
                release_at = i.woken_at  # woken before this park: as the Redis script
            look = i.waits_for_line and i.active_after is not None
            ok = await self.park(
                i.task_id, i.subscriber_id, i.payload, release_at, i.merge_window_s, look
            )
            if ok and i.rank is not None:
                self.ranks[i.task_id] = i.rank
            if ok and i.waits_for_line:
                self.lines.setdefault(i.subscriber_id, set()).add(i.task_id)
            if ok and i.waits_for_hours:
                self.hours.add(i.task_id)
            elif ok:
                self.hours.discard(i.task_id)
            if ok and i.waits_for_cap:
                self.capped.add(i.task_id)
            elif ok:
                self.capped.discard(i.task_id)
            if ok and i.waits_for_next_day:
                self.next_day.add(i.task_id)
            elif ok:
                self.next_day.discard(i.task_id)
            if ok and self.judged is None:
                self.judged = timetable  # a fresh queue's first task
            indexed = i.waits_for_hours or i.waits_for_next_day
            if ok and indexed and self.judged != timetable:
                self.judged = "*"
            out.append(ok)
        return out

    def _due_now(self, task_id: str, now: float) -> int:
        """As the scripts' `due_now`: the task waiting for later than `now`, due now; 1
        when it was moved. One due already and ranked (in `due`, a negative score in
        Redis) keeps its due time: woken at an earlier `now` than the release that ranked
        it, it was moved back before it, out of `next_due`'s sight."""
        score = self.scores.get(task_id)
        if score is None or score <= now or task_id in self.due:
            return 0
        self.scores[task_id] = now
        heapq.heappush(self._heap, (now, task_id))
        return 1

    async def wake(self, subscriber_ids: Sequence[str], now: float) -> int:
        woken = 0
        for sub in dict.fromkeys(subscriber_ids):
            for task_id in sorted(self.lines.pop(sub, ())):
                woken += self._due_now(task_id, now)
        return woken

    async def rejudge(self, timetable: str, now: float) -> int:
        """As the Redis script; nothing here was parked by an earlier version (the stores
        live as long as the process), so there is no unindexed task to look for."""
        if self.judged == timetable:
            return 0
        self.judged = timetable
        woken = 0
        for task_id in sorted(self.hours | self.next_day):
            woken += self._due_now(task_id, now)
        return woken

    async def join_many(self, items: Sequence[Joining]) -> list[str | None]:
        return [await self.join(i) for i in items]

    async def forget(
        self, subscriber_ids: Sequence[str], now: float | None = None
    ) -> list[Released]:
        """As the Redis script: their waiting tasks (those the waiting index, the
        suspended-line index or the open merge group names) back to pending, marked
        unsent, returned."""
        at = self.ledger.clock() if now is None else now
        out: list[Released] = []
        for subscriber_id in dict.fromkeys(subscriber_ids):
            named = set(self.waiting_of.pop(subscriber_id, ()))
            named |= self.lines.pop(subscriber_id, set())
            carrier = self.open.pop(subscriber_id, None)
            if carrier is not None:
                named.add(carrier[0])
            for task_id in sorted(named):
                released = await self._take(task_id, at)
                if released is not None:
                    self.ledger.mark_unsent(task_id)
                    out.append(released)
        return out

    def _unindex(self, task_id: str) -> None:
        """Out of the subscriber's waiting index (`waiting_of`)."""
        sub = self._owner.pop(task_id, None)
        if sub is not None:
            mine = self.waiting_of.get(sub)
            if mine is not None:
                mine.discard(task_id)
                if not mine:
                    del self.waiting_of[sub]

    async def _take(self, task_id: str, now: float) -> Released | None:
        """The task out of the queue and its indexes, back to pending at `now` with its
        members (the heaps keep stale entries, skipped as a release's are); None when it
        is not waiting."""
        self._unindex(task_id)
        value = await self.ledger.get(task_id)
        if value is None or not value.startswith(DEFERRED):
            return None
        for index in (self.scores, self.due, self.ranks):
            index.pop(task_id, None)
        for ids in (self.hours, self.capped, self.next_day):
            ids.discard(task_id)
        payload = value[1:]
        self.ledger.set_keep_ttl(task_id, PENDING + payload)
        self.ledger.pending[task_id] = now
        return Released(task_id, payload, await self.ledger.group(task_id))

    async def join(self, item: Joining) -> str | None:
        task_id, subscriber_id, payload = item.task_id, item.subscriber_id, item.payload
        value = await self.ledger.get(task_id)
        if value is not None and value.startswith(MERGED):
            return value[1:].decode()
        if value is None or not value.startswith(PENDING):
            return None
        carrier = self._open_carrier(subscriber_id)
        if carrier is None or carrier == task_id:
            return None
        carried = await self.ledger.get(carrier)
        if carried is None or not carried.startswith(DEFERRED):
            return None
        if self.ledger.marked(carrier):  # as Redis: its group closes
            del self.open[subscriber_id]
            return None
        if self.ledger.marked(task_id):  # as Redis: it may have gone out
            return None
        due = self.scores.get(carrier)
        if item.due_from is not None or item.due_by is not None:
            if due is None:
                return None
            if item.due_from is not None and due < item.due_from:
                return None
            if item.due_by is not None and due > item.due_by and carrier not in self.capped:
                return None
        self.ledger.add_to_group(carrier, payload or value[1:])
        self.ledger.set_keep_ttl(task_id, MERGED + carrier.encode())
        self.ledger.pending.pop(task_id, None)
        rank = item.rank
        if rank is not None and carrier in self.due:
            rank = merged_rank(rank, self.due[carrier])
            if rank < self.due[carrier]:
                self.due[carrier] = rank
                heapq.heappush(self._due_heap, (rank, carrier))
        elif rank is not None and carrier in self.ranks:
            self.ranks[carrier] = merged_rank(rank, self.ranks[carrier])
        return carrier

    async def release(self, now: float, limit: int = 500, token: str = "") -> list[Released]:
        held = (token or new_claim_token()).encode()
        heap = self._heap
        while heap and heap[0][0] <= now:
            score, task_id = heapq.heappop(heap)
            if self.scores.get(task_id) != score or task_id in self.due:
                continue  # re-parked later, released or ranked already: a stale heap entry
            rank = self.due[task_id] = self.ranks.pop(task_id, score)
            heapq.heappush(self._due_heap, (rank, task_id))
            heapq.heappush(self._moved, (score, task_id))
        out: list[Released] = []
        taken = 0
        ranked = self._due_heap
        while ranked and taken < limit:
            rank, task_id = heapq.heappop(ranked)
            if self.due.get(task_id) != rank:
                continue  # ranked higher since, parked again or released: stale
            del self.due[task_id]
            del self.scores[task_id]
            self._unindex(task_id)
            self.hours.discard(task_id)
            self.capped.discard(task_id)
            self.next_day.discard(task_id)
            taken += 1
            value = await self.ledger.get(task_id)
            if value is None or not value.startswith(DEFERRED):
                continue
            payload = value[1:]
            self.ledger.set_keep_ttl(task_id, PENDING + payload)
            self.ledger.pending[task_id] = now
            # As `_RELEASE`: the release's token replaces a re-drive's (`fence`).
            kept = self.ledger.clock() + CLAIM_TOKEN_KEPT_S
            self.ledger.claim_tokens[task_id] = _Entry(held, kept)
            out.append(Released(task_id, payload, await self.ledger.group(task_id)))
        return out

    def next_due(self) -> float | None:
        """The earliest release time waiting (the backtest steps its clock to it), the
        tasks due and not released yet (in `due`) included."""
        moved = self._moved
        while moved and (
            moved[0][1] not in self.due or self.scores.get(moved[0][1]) != moved[0][0]
        ):
            heapq.heappop(moved)
        heap = self._heap
        while heap and (self.scores.get(heap[0][1]) != heap[0][0] or heap[0][1] in self.due):
            heapq.heappop(heap)
        # Each heap's top is its earliest live entry now: the lesser of the two, compared
        # here rather than by a list and `min` at each of the backtest's ~100k calls.
        if not moved:
            return heap[0][0] if heap else None
        if not heap:
            return moved[0][0]
        first, second = moved[0][0], heap[0][0]
        return first if first <= second else second

    async def waiting(self) -> int:
        return len(self.scores)

    async def earliest_due(self) -> float | None:
        return self.next_due()

    async def waiting_and_due(self) -> tuple[int, float | None]:
        return len(self.scores), self.next_due()

    async def due_at(self, task_id: str) -> float | None:
        return self.scores.get(task_id)

    async def waiting_tasks(self) -> dict[str, float]:
        return dict(self.scores)


@dataclass
class MemorySlots:
    """Capacity counters; also keeps who was refused, for the backtest's demand figures."""

    used: dict[SlotKey, set[str]] = field(default_factory=dict)
    refused: dict[SlotKey, set[str]] = field(default_factory=dict)

    async def take(self, key: SlotKey, task_id: str, allowed: int) -> tuple[bool, int]:
        ids = self.used.setdefault(key, set())
        if task_id in ids:
            return True, len(ids)
        if len(ids) < allowed:
            ids.add(task_id)
            return True, len(ids)
        self.refused.setdefault(key, set()).add(task_id)
        return False, len(ids)

    async def take_many(self, items: Sequence[tuple[SlotKey, str, int]]) -> list[tuple[bool, int]]:
        return [await self.take(key, task_id, allowed) for key, task_id, allowed in items]


@dataclass
class MemoryContactBook:
    contacts: dict[str, dict[str, float]] = field(default_factory=dict)

    async def take(
        self,
        subscriber_id: str,
        task_id: str,
        now: float,
        period_s: float,
        max_contacts: int,
        look: bool = False,
    ) -> float | None:
        book = self.contacts.setdefault(subscriber_id, {})
        for old in [t for t, at in book.items() if at <= now - period_s]:
            del book[old]
        if task_id in book:
            return None
        if len(book) < max_contacts:
            if not look:
                book[task_id] = now
            return None
        oldest = min(book.values())
        return oldest + period_s

    async def give_back(self, subscriber_id: str, task_id: str) -> None:
        self.contacts.get(subscriber_id, {}).pop(task_id, None)

    async def take_many(
        self,
        items: Sequence[tuple[str, str, float]],
        period_s: float,
        max_contacts: int,
        look: bool = False,
    ) -> list[float | None]:
        return [await self.take(s, t, now, period_s, max_contacts, look) for s, t, now in items]

    async def give_back_many(self, items: Sequence[tuple[str, str]]) -> None:
        for subscriber_id, task_id in items:
            await self.give_back(subscriber_id, task_id)

    async def move_many(self, items: Sequence[tuple[str, str, str]]) -> None:
        for subscriber_id, old, new in items:
            book = self.contacts.get(subscriber_id, {})
            if old in book:
                book[new] = book.pop(old)

    async def take_back_many(
        self, items: Sequence[tuple[str, str, float]], period_s: float, now: float
    ) -> None:
        for subscriber_id, task_id, at in items:
            if at > now - period_s:
                self.contacts.setdefault(subscriber_id, {}).setdefault(task_id, at)

    async def forget(self, subscriber_ids: Sequence[str]) -> None:
        for subscriber_id in subscriber_ids:
            self.contacts.pop(subscriber_id, None)


class MemoryFacts:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.facts: dict[str, tuple[dict[str, float], float]] = {}

    async def record(self, events: Iterable[InputEvent]) -> int:
        n = 0
        expires = self.clock() + FACTS_TTL_S
        for event in events:
            for name, at in facts_of(event):
                current = self._live(event.subscriber_id)
                if name not in current or current[name] < at:
                    current[name] = at
                self.facts[event.subscriber_id] = (current, expires)
                n += 1
        return n

    def _live(self, subscriber_id: str) -> dict[str, float]:
        item = self.facts.get(subscriber_id)
        if item is None or item[1] <= self.clock():
            return {}
        return item[0]

    async def get(self, subscriber_id: str) -> SubscriberFacts:
        return facts_from(self._live(subscriber_id))

    def fields(self, subscriber_id: str) -> Mapping[str, float]:
        """The subscriber's facts as stored (a confirm reads them, as the Redis script does
        with HMGET)."""
        return self._live(subscriber_id)

    def line(self, subscriber_id: str) -> tuple[float | None, float | None]:
        """The `active` and `suspended` facts (a park reads them, as the Redis script
        does with HMGET)."""
        live = self._live(subscriber_id)
        return live.get("active"), live.get("suspended")

    async def get_many(self, subscriber_ids: Sequence[str]) -> list[SubscriberFacts]:
        return [await self.get(s) for s in subscriber_ids]

    async def forget(
        self, subscriber_ids: Sequence[str], at: float, erased: Mapping[str, float] | None = None
    ) -> None:
        expires = self.clock() + FACTS_TTL_S
        for subscriber_id in subscriber_ids:
            when = (erased or {}).get(subscriber_id, at)
            self.facts[subscriber_id] = ({"forgotten": at, "erased": when}, expires)


class MemoryDeclines:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.until: dict[tuple[str, str], float] = {}

    async def suppress(self, subscriber_id: str, rule_id: str, seconds: float) -> None:
        self.until[(subscriber_id, rule_id)] = self.clock() + max(1, int(seconds))

    async def suppressed(self, subscriber_id: str, rule_id: str) -> bool:
        return self.until.get((subscriber_id, rule_id), -math.inf) > self.clock()

    async def suppressed_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        return [await self.suppressed(s, r) for s, r in pairs]

    async def forget(self, subscriber_ids: Sequence[str], rule_ids: Sequence[str]) -> None:
        gone = set(subscriber_ids)  # every rule's, as Redis finds them by its list
        for key in [k for k in self.until if k[0] in gone]:
            del self.until[key]


def memory_stores(clock: Clock = time.time, ttl_seconds: int = 400 * 86400) -> DispatchStores:
    """Fresh in-memory stores whose keys expire on `clock`."""
    facts = MemoryFacts(clock)
    ledger = MemoryLedger(clock, ttl_seconds, facts)
    return DispatchStores(
        ledger=ledger,
        deferral=MemoryDeferrals(ledger, facts),
        slots=MemorySlots(),
        contacts=MemoryContactBook(),
        facts=facts,
        declines=MemoryDeclines(clock),
        frequency=MemoryContactBook(),
    )
