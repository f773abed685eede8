"""What the dispatch sink needs from storage, as protocols, and the two ways to get it.

`TaskSink` decides; the stores only keep state and make each step atomic and idempotent
per task id. Redis with Lua (`redis_stores`) serves the stream, where several workers
share it; `memory_stores` (sinks.memory) serves the backtest in one process, on an
injected clock, with the same semantics. The scenario tests in
tests/integration/dispatch run against both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from moments.models import Channel, InputEvent
from sinks.relevance import SubscriberFacts

if TYPE_CHECKING:
    from sinks.ledger import TaskLedger, Unanswered, Voided

CHANNELS = tuple(c.value for c in Channel)
"""Every channel's name, in the enum's order."""

Clock = Callable[[], float]
"""Epoch seconds: `time.time` on the stream, event time in a backtest."""


@dataclass(frozen=True)
class Released:
    """A task whose time has come, with the payloads merged into it while it waited."""

    task_id: str
    payload: bytes
    members: list[bytes]


@dataclass(frozen=True)
class Parking:
    """One `Deferrals.park` call: the task waits until `release_at` (epoch seconds)."""

    task_id: str
    subscriber_id: str
    payload: bytes
    release_at: float
    merge_window_s: float
    waits_for_line: bool = False
    """Waiting for a suspended line: indexed by subscriber, so `wake` finds it when the
    line is active again."""
    waits_for_hours: bool = False
    """Waiting for its channel's hours (`channel_hours`): indexed, so `rejudge` finds it
    when a worker runs a policy whose hours differ from those it was parked by."""
    waits_for_cap: bool = False
    """Waiting for the subscriber's contact or frequency cap: indexed, so that a fresh
    task joins it however long it waits (`Joining.due_by` does not bound it), as the
    cap would hold that task alone as well."""
    waits_for_next_day: bool = False
    """Deferred by capacity to the next day (`capacity`): indexed, so `rejudge` finds it
    when a worker runs a policy whose `next_day_at` or zone differ from those it was
    parked by."""
    rank: float | None = None
    """Where it stands for capacity once due (`sinks.capacity.rank_score` of its moments,
    lower first): `release` hands out the highest ranked of everything due. None ranks
    it by its due time, before every ranked task (as a task an earlier version parked)."""
    active_after: float | None = None
    """Waiting for a suspended line: the subscriber's facts (`Facts`) saying the line is
    active for moments held since this time (epoch seconds; the latest trigger of the
    moments held for the line; `sinks.relevance.line_active`) when it is parked make it
    due at `woken_at` instead of `release_at`. The park and `wake` are each atomic, and
    a reactivation records the fact before it wakes: a park that comes after the wake
    (its decision read the facts before the reactivation) sees the fact, and one before
    is found by the wake."""
    woken_at: float = 0.0
    """When such a task is due if the facts say its line is active (the decision's now)."""
    made: float | None = None
    """When the task was made, as a tombstone's `forgotten` mark is compared with
    (`sinks.relevance.made_at`); None: not compared. Given, a park finding the subscriber's
    facts (`Facts`) marked forgotten at or after it parks nothing (False), in the same
    step: the entry is left pending, or, waiting already (one the tombstone's take did not
    find: an earlier version's park, in no index), taken out of the queue back to pending
    as `forget` takes a task, and marked unsent (`Ledger.unsent`) as `forget` leaves the
    tasks it takes. A tombstone records its mark before it takes the subscriber's waiting
    tasks out of the queue (`forget`), so a park after that take sees the mark, and one
    before is taken."""


@dataclass(frozen=True)
class Joining:
    """One `Deferrals.join_many` item: the task joins its subscriber's waiting task only
    if that one is due (its release time, epoch seconds) at or after `due_from`, and,
    unless it waits for the subscriber's caps (`Parking.waits_for_cap`), at or before
    `due_by` (None: no bound)."""

    task_id: str
    subscriber_id: str
    payload: bytes
    due_from: float | None = None
    due_by: float | None = None
    rank: float | None = None
    """Its own rank (`Parking.rank`): joined, the waiting task ranks as all their moments
    (`sinks.capacity.merged_rank`: the best priority, highest risk and oldest moment of
    either), as `claim_order` ranks the group once released (a complaint callback
    merged into a courtesy call goes first, and by the call's age)."""


@dataclass
class ClaimCall:
    """One `Ledger.claim` and its retries. The first try sets `at` (the store's time, its
    entries' score in `pending`) and every retry sends it again: a retry whose first try
    ran and lost its reply (a socket timeout under load, a cut connection) finds each
    entry that try wrote as the call writes it, scored at `at`, and answers as the first
    try did (`CLAIMED`, or `TAKEN_OVER`). Without it the retry's SET NX read the caller's
    own entry as another worker's: the task counted suppressed `dedup` and left to its
    re-drive, a grace period late."""

    at: float | None = None


@dataclass(frozen=True)
class Held:
    """A re-drive's claim, or a release's take, as its decision's writes are fenced by it
    (`Ledger.drop_many`, `Deferrals.park_many`), as its produce is (`Ledger.fence`): an
    entry is still its own when it holds `token` (`claimed:<id>`) and is among `claimed`,
    or holds none and is not (a merged moment its decision moved out of its group under
    its own id, claimed by no re-drive since). Another worker's re-drive that claimed an
    entry since (this decision stalled past the grace period) owns it: this one's late
    drop or park of it is not written, whatever that worker decided (a task it sent went
    on recorded as dropped, or parked and sent again at its release)."""

    token: str
    claimed: frozenset[str]

    def mine(self, task_id: str) -> str:
        """'1' for an entry this caller claimed, '' for one its decision made pending (as
        `_FENCE` takes it)."""
        return "1" if task_id in self.claimed else ""


@dataclass(frozen=True)
class Leave:
    """A moment leaving the merge group of the waiting task it joined (`Ledger.leave_many`):
    dropped (`dropped`: the reason), or moved to `to`: its own id when it now carries
    the others (its entry becomes pending, as a claim's), else the carrier it joins."""

    carrier_id: str
    task_id: str
    payload: bytes
    """The bytes the group holds for it (what it joined with)."""
    dropped: str | None = None
    to: str | None = None
    keep_until: float | None = None
    """Dropped: when it would have expired (its entry need not outlive that by much)."""
    carries: bytes = b""
    """Moved to its own id: the payload its pending entry holds (b"": `payload`), the
    group's deferral written in, so that a crash before the part is parked or sent
    leaves the re-drive what the group waited for, not what gating wrote when it joined."""
    went_out: bool = False
    """Out of a task that may have gone out with it inside (re-driven, or parked by a
    re-drive: `Writes.went_out`; or a task a leave so marked: `Writes.carried`). Moved to
    its own id (the task withdrawn: `TaskSink._kept`; a part capacity splits off such a
    task or off that lead: `CapacityFitting.split`): its entry is marked `redriven:<id>`
    `L<time>` as it goes pending (a leave's mark, `sinks.ledger.LEFT_MARK`), so that its
    drop, in this decision or a later one, keeps its moments' cooldowns; not sealed, nor
    withdrawn when dropped (its id never went out: `Ledger.redriven_carried`), until a
    re-drive's claim makes the mark its own (its decision may have published it).
    Dropped (its cooldown kept: `TaskSink._gone`): its entry is marked
    `redriven:<id>` `1` for its life (when it went pending not said: sealed,
    `sealed_alone`), so that its batch read again keeps the cooldown too
    (`TaskSink._dropped_before`); unmarked, that gave it back, and its rule fired again
    inside the cooldown for a moment that may have reached the customer."""
    went_at: float | None = None
    """Moved to its own id, `went_out`: when its decision judged it (epoch seconds), the
    time its mark holds (an earlier mark's kept), judged against its last send
    (`sealed_alone`); None: the leave's. Its decision judged it sendable then and may
    publish it: marked at the leave's time instead, a moment at its last send, the leave
    a moment later (Redis retried), was judged by its next re-drive as never gone out,
    and its drop gave back a cooldown the copy published may have spent. A part capacity
    split off a re-driven task: the decision that re-drive repeats, as of which it was
    fitted (`CapacityFitting.split`)."""
    returns: tuple[str, ...] = ()
    """Dropped by a fenced decision (`Held`): the keys of the cooldown returns it owes
    for the moment (`CooldownReturn.owed_key`, `OwedReturns.owe`), forgotten when the
    fence refuses the leave while the moment is still in its carrier
    (`Ledger.leave_many`)."""


@dataclass(frozen=True)
class SlotKey:
    """One capacity counter: a region the policy lists, or `"*"` for all the others, a
    channel and a local day."""

    region: str | None
    channel: Channel
    day: dt.date


class Ledger(Protocol):
    """Per task id: pending -> deferred / merged -> sent / dropped (see sinks.ledger)."""

    ttl: int

    async def claim(
        self,
        items: Sequence[tuple[str, bytes]],
        again: Collection[str] = (),
        call: ClaimCall | None = None,
    ) -> list[int]:
        """Mark each (task id, payload) pending: non-zero where this caller owns it
        (sinks.ledger's `CLAIMED`, or `TAKEN_OVER`). `again`: ids made by a moment judged
        again, which also take over a dropped entry whose task expired (sinks.ledger,
        `DROPPED_KEPT_S`), holding then the payload with `counted` set
        (sinks.payloads' `counted_payload`). `call`: the same object for every try of one
        claim, so that a retry takes what its first try wrote as its own (`ClaimCall`)."""
        ...

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
        """Sent: `meta` kept with the entry, `bodies` (payload, seconds) for outcomes, and
        `awaiting` (channel, expiry in epoch seconds) puts each task in the unanswered
        index until its first outcome, and (its subscriber in `subscribers`) in its
        subscriber's published index until it expires (`published_of`), in the same round
        trip; only as the entry leaves pending (a confirm repeated adds nothing). A task
        in `made` (when it was made, `sinks.relevance.made_at`; `math.inf`: not looked at
        against a tombstone) is first looked at against its subscriber's facts in the same
        step: one they make void now (`sinks.relevance.voided`: a tombstone, a closed line,
        an opt-out of its channel recorded since its decision read them) is left pending,
        in neither index, and returned with why and when (`Voided`), for the caller to
        withdraw and then confirm again with `withdrawn` naming it: in the published index
        as a withdrawn task (out of `published_of`, found by `forget_published`), in no
        unanswered index, and in `made` looked at against a tombstone alone (one applied
        since the withdrawal: confirmed with no body and in no index, and returned,
        `forgotten`)."""
        ...

    async def drop(self, task_id: str, reason: str) -> None: ...

    async def drop_many(
        self,
        items: Sequence[tuple[str, str]],
        keep_until: Mapping[str, float] | None = None,
        held: Held | None = None,
    ) -> list[bool]:
        """`drop` for each (task id, reason), in one round trip; `keep_until` (epoch
        seconds per task id, its expiry): the entry need not be kept much longer. `held`:
        a re-drive's or a release's decision, whose drop is written only on an entry still
        its own (`Held`), in the same step. False for each drop `held` refused (an entry
        no longer pending is left as it is, True: a drop repeated is harmless)."""
        ...

    async def leave_many(
        self, items: Sequence[Leave], held: Held | None = None, again: bool = False
    ) -> list[bool]:
        """Each item's moment out of its carrier's group, in one round trip: its payload
        leaves `group:<carrier>` and its entry (`M<carrier>`) becomes `X<reason>`, `P`
        with its payload (in `pending`) or `M<to>` (its payload in `group:<to>`). False
        where the entry was not merged into that carrier (any more). `held`: a re-drive's
        or a release's decision, whose leaves are written only while the carrier is still
        its own (`Held`), in the same step; one refused, the moment still in the carrier
        (another worker's re-drive claimed it since: it sent the moment inside it, or
        decides it), the returns the item owes for it (`Leave.returns`) are forgotten in
        that step: written, the drop sent a return for a moment that went out (its rule
        fired again, a second contact); kept, they stayed owed until the entry lapsed. Only
        those the item's decision owes itself (`owe_returns`' `owner`, its token): the
        worker that claimed the carrier since may owe one under the same key before its
        own leave is written, which forgotten here, that worker dead before sending it,
        was lost (the moment dropped, its rule's cooldown held). `again`: a retry of the
        call, whose first reply was lost: an entry already as its item's leave writes it
        (the fence passed) is that first try's, True (its drop counted once, its moved
        moment sent); one another worker's re-drive claimed the carrier of since is
        refused, whoever wrote it."""
        ...

    async def claim_stale(
        self,
        older_than: float,
        limit: int = 500,
        since: dict[str, float] | None = None,
        first_pending: dict[str, float | None] | None = None,
        token: str = "",
        carried: set[str] | None = None,
    ) -> list[tuple[str, bytes]]:
        """Pending entries older than `older_than` seconds, claimed by this caller (each
        re-scored now, so that one worker re-drives it, and marked re-driven in the same
        step: no join lands between), with their payloads. Each claimed entry holds
        `token` (`claimed:<id>`; '' for a new one), which any later claim replaces:
        `fence` tells this caller, right before its produce, which are still its own.
        `since`, when given, takes when each claimed entry went pending, read in the
        same step (claimed, released, or taken up by an earlier re-drive or its fence):
        its owner published it just after (`TaskSink._confirm_answered`). The mark
        (`redriven:<id>`) holds when the task first went pending: this claim's `since`,
        or the mark an earlier re-drive left, kept. `first_pending`, when given, takes
        for those an earlier re-drive had marked when that mark says they first went
        pending (None: a mark an older build wrote, which does not say): their `since`
        is that re-drive's claim, or a release after it parked them, not when they may
        first have gone out (`sinks.dispatch.sealed_by_redrive`). A leave's mark
        (`L<time>`, `Leave.went_out`) becomes the claim's with the leave's time, or, where
        the entry holds a release's token (parked since the leave, then released, and the
        release's worker died), with the score, the release's time: that decision is the
        one the re-drive repeats (not in `first_pending` then); either way the claim's mark
        keeps the leave's kind (`C<time>`, `sinks.ledger.CARRIED_MARK`), kept as it is by
        every later claim. `carried`, when given, takes the ids whose mark was a leave's, or
        a claim's made of one: their moments may have gone out inside another carrier
        (`Writes.carried`: their cooldowns kept when dropped), whichever re-drive decides
        them (the first one's worker dead past its claim, the second's too)."""
        ...

    async def fence(self, claimed: Collection[str], moved: Collection[str], token: str) -> set[str]:
        """Those of these entries still this re-drive's (or release's) to send, right
        before its produce, each re-scored now in the pending index (no worker claims it
        for another grace period while the produce runs); one round trip. Still pending,
        and: `claimed` (by its `claim_stale`, or taken by its `Deferrals.release`, with
        `token`) still holding `token`; `moved` (pending by its own decision, a merged
        moment moved out of its group under its own id) claimed by no re-drive since.
        Another worker's re-drive that claimed one since (this one stalled past the grace
        period) decides it: this one sends it not."""
        ...

    async def postpone(self, task_ids: Sequence[str], seconds: float) -> None:
        """Leave these pending entries to no re-drive for `seconds` more than any other
        (those a newer version wrote, this one cannot send: `sinks.readback`); one round
        trip. An entry no longer pending is left as it is."""
        ...

    async def owe_returns(self, items: Sequence[tuple[str, bytes]], owner: str = "") -> None:
        """Note the cooldown returns (key, record) of moments about to be dropped, in one
        round trip, before their drops are written; each stays owed until
        `settle_returns` (moments.cooldowns, `OwedReturns.send`). The key is the
        return's `owed_key`: its task's id, or, for a moment that task carried in
        `related`, that and the moment's own (one task may owe several). `owner`: the
        token of the fenced decision that owes them (`Held`; '' for none), the only one
        whose refused leave forgets them (`leave_many`): another worker's re-drive that
        claimed the carrier since may owe one under the same key, a later owe's owner
        replacing the earlier's."""
        ...

    async def owed_returns(self, older_than: float, limit: int = 500) -> list[tuple[str, bytes]]:
        """The returns owed for longer than `older_than` seconds (their sender died, or
        their drop was never written), each taken for another `older_than` (as
        `claim_stale`)."""
        ...

    async def settle_returns(self, task_ids: Sequence[str]) -> None:
        """The returns under these keys are owed no more (sent, or their task not dropped)."""
        ...

    async def owe_withdrawals(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Note the withdrawals (task id, the notice's bytes) of tasks about to be dropped
        that may have gone out (`redriven:<id>`), in one round trip, before their drops
        are written; each stays owed until `settle_withdrawals` (`Withdrawals.send_owed`,
        `resend_owed`)."""
        ...

    async def owed_withdrawals(
        self, older_than: float, limit: int = 500
    ) -> list[tuple[str, bytes]]:
        """The withdrawals owed for longer than `older_than` seconds (their publish failed,
        their worker died, or their drop was never written), each taken for another
        `older_than` (as `owed_returns`)."""
        ...

    async def settle_withdrawals(self, task_ids: Sequence[str]) -> None:
        """The withdrawals of these tasks are owed no more (published, or their task not
        dropped for a profile change)."""
        ...

    async def get(self, task_id: str) -> bytes | None: ...

    async def get_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """`get` for each task id, in one round trip."""
        ...

    async def group(self, task_id: str) -> list[bytes]: ...

    async def group_many(self, task_ids: Sequence[str]) -> list[list[bytes]]:
        """`group` for each task id, in one round trip."""
        ...

    async def pending_count(self) -> int: ...

    async def state(self, task_id: str) -> str | None: ...

    async def sent_meta(self, task_id: str) -> bytes | None: ...

    async def body(self, task_id: str) -> bytes | None: ...

    async def body_many(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """`body` for each task id, in one round trip."""
        ...

    async def published_of(self, subscriber_ids: Sequence[str], now: float) -> list[list[str]]:
        """Per subscriber, the ids of their published tasks that expire after `now` and
        were not withdrawn (`withdrawn`), in one round trip (sinks.withdrawals)."""
        ...

    async def withdrawn(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Each (task id, subscriber, channel) withdrawn: out of the subscriber's published
        index and of the unanswered index (no outcome is expected of it), in one round
        trip; its entry stays `sent` (an outcome still counts)."""
        ...

    async def answered_pending(self, task_ids: Sequence[str]) -> set[str]:
        """Those of these pending tasks an outcome came back for (`first_outcome` marked
        them answered, `answered:<id>`): they were published, their confirm not written
        (their worker died after the broker's ack). One round trip."""
        ...

    async def voided_pending(self, task_ids: Sequence[str]) -> Voided:
        """Those of these pending tasks their confirm found void (`confirm`, `Voided`: why
        and when, marked `void:<id>` in the same step): they were published, and their
        worker died before it confirmed them withdrawn. One round trip."""
        ...

    async def unsent(self, task_ids: Sequence[str]) -> set[str]:
        """Those of these pending tasks a tombstone took out of the deferral queue
        (`Deferrals.forget`): they waited there, never published (none a re-drive decided,
        `redriven`), so a re-drive that drops them (a crash before their decision)
        withdraws nothing. One round trip."""
        ...

    async def redriven(self, task_ids: Sequence[str]) -> set[str]:
        """Those of these tasks a re-drive decided again (`redriven:<id>`, written by its
        claim, `claim_stale`, for as long as the entry lives, until it is sent; not a
        leave's mark, `redriven_carried`, which its id never went out under): their
        worker may have published them before dying, so wherever one is dropped later
        for a profile change (its release, a tombstone) it is withdrawn, and a tombstone
        does not mark it `unsent`. One round trip."""
        ...

    async def redriven_carried(self, task_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """`redriven` of these tasks, and apart those a leave marked (`Leave.went_out`, a
        mark of its own kind no claim turned into its own since): their moments may have
        gone out inside another carrier, withdrawn since, so their drop keeps the moments'
        cooldowns; their ids themselves never went out, so they are not sealed, nor
        withdrawn when dropped. One round trip."""
        ...

    async def first_pending(self, task_ids: Sequence[str]) -> dict[str, float | None]:
        """Those of these tasks a re-drive decided again (`redriven`), or a leave marked
        (`redriven_carried`: when its decision judged it), each with when it
        first went pending, as its `redriven:<id>` mark holds it (`claim_stale`'s
        `first_pending`; None for a mark an older build wrote, which does not say). One
        round trip."""
        ...

    async def redriven_unsent(self, task_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """`redriven` and `unsent` of these tasks together, in one round trip (a drop that
        may withdraw them reads both)."""
        ...

    async def mark_moved(self, moved: Mapping[str, Mapping[str, str]]) -> None:
        """Before tasks are published: for each task id, the moments of it that go out on
        another channel than their stored payload's (moment id -> channel: a rule's
        fallback, for the channel's hours or a full pool), in `moved:<id>` for the
        ledger's ttl. A re-drive reads them (`moved`): the pending entry and the merge
        group hold the payloads as made, and judged again by the policy in force then,
        the task went out again on another channel under its id. One round trip."""
        ...

    async def moved(self, task_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """`mark_moved`'s channels of those of these tasks that have them (none: every
        moment of it went out, if it did, on its payload's channel). One round trip."""
        ...

    async def forget_published(self, subscriber_ids: Sequence[str]) -> None:
        """Erase these subscribers' published indexes (a tombstone, after its withdrawals
        were published) and the payloads of the tasks in them (`body`): an outcome of one
        reported later acts on nothing anyway."""
        ...

    async def first_outcome(
        self, task_id: str, status: str, channel: str | None = None, token: str = ""
    ) -> bool:
        """Note that `status` was reported for the task; False when it was before (the
        outcome read again after a restart, or sent twice): counted once. `token` (unique
        to the handling of one outcome; '' none) is noted with it: a call made again with
        the same token (retried, `with_retry`, as its reply was lost: a timeout, a dropped
        connection) is True again, where it found the status noted by itself and the
        outcome was counted by nobody. The task leaves
        the unanswered index (of `channel`; of every channel when None), in the same
        round trip; when None and the task is still pending (published, its confirm not
        written yet: the consumer answered first, or a re-drive sends it again), its
        confirm leaves it out of the index."""
        ...

    async def noted_any(self, task_ids: Sequence[str], statuses: Sequence[str]) -> set[str]:
        """The tasks among `task_ids` for which one of `statuses` was noted
        (`first_outcome`), in one round trip."""
        ...

    async def unanswered(self) -> dict[str, int]:
        """Published tasks with no outcome yet, by channel (every channel, 0 included)."""
        ...

    async def list_unanswered(self, channels: Sequence[str] = CHANNELS) -> list[Unanswered]:
        """Those tasks of `channels`, soonest expiry first."""
        ...

    async def expire_unanswered(
        self, expired_before: float, limit: int = 500
    ) -> list[tuple[Unanswered, bytes | None]]:
        """Take the unanswered tasks whose expiry is before `expired_before`, at most
        `limit` per channel, each with its ledger entry; each is taken by one caller."""
        ...


class Deferrals(Protocol):
    """Waiting tasks by release time, and each subscriber's open merge group.

    An empty payload (b"") in `park` and `join` means the one the ledger holds for the
    task (claimed or parked before): the sink sends a payload only when it changed."""

    async def park(
        self,
        task_id: str,
        subscriber_id: str,
        payload: bytes,
        release_at: float,
        merge_window_s: float,
    ) -> bool: ...

    async def park_many(
        self, items: Sequence[Parking], timetable: str = "", held: Held | None = None
    ) -> list[bool]:
        """`park` for each item, in order, in one round trip. `timetable`: the policy's
        (`DispatchPolicy.timetable`) their release times were computed by; parking one
        that waits for its channel's hours or the next day by another one than the
        store's mark (`rejudge`) marks it mixed ('': unknown), so the next `rejudge`
        wakes them all. `held`: a re-drive's or a release's decision, whose park is
        written only on an entry still its own (`Held`; refused: False), in the same
        step."""
        ...

    async def join_many(self, items: Sequence[Joining]) -> list[str | None]:
        """Merge each owned task into its subscriber's waiting task, if one is open and due
        within the item's bounds (`Joining`): that task's id (the same on a repeated call),
        else None; in order, in one round trip. Neither a task nor a carrier marked
        `redriven:<id>` (`Ledger.redriven`) is merged: it may have gone out under
        its id, which takes no other content (docs/consuming-tasks.md)."""
        ...

    async def release(self, now: float, limit: int = 500, token: str = "") -> list[Released]:
        """Take up to `limit` of the tasks due by `now`, the highest ranked
        (`Parking.rank`, then task id) of all of them, not the first by due time: a
        night's calls all due at the opening take the morning's slots by rank whatever
        part of the queue they are in. Each task goes to exactly one caller. Each task
        taken (pending again) holds `token` ('' for a new one) as a re-drive's claim
        does (`Ledger.claim_stale`), written in the same step, replacing the token of a
        re-drive that parked it: `Ledger.fence` tells the releasing worker, right before
        its produce, which are still its own (none a re-drive claimed since)."""
        ...

    async def wake(self, subscriber_ids: Sequence[str], now: float) -> int:
        """Make the tasks these subscribers' suspended lines held (`waits_for_line`) due
        now, so the next release decides them; returns how many. Called after the facts
        saying the lines are active are recorded: a task released and parked again
        meanwhile, by a decision that read the facts before them, is due at once by its
        park (`Parking.active_after`)."""
        ...

    async def rejudge(self, timetable: str, now: float) -> int:
        """Unless the waiting tasks were parked by `timetable` (the store's mark, kept with
        the queue: a restarted worker finds it), make every task waiting for its channel's
        hours (`waits_for_hours`) or the next day (`waits_for_next_day`) due now, so the
        next release judges it by the policy in force, and mark the store judged by
        `timetable` once every one is (Redis walks its indexes a chunk a call: a crash
        mid-walk leaves the mark another, and a task parked meanwhile by another
        timetable marks the store mixed, as after the walk); returns how many. Without
        a mark (a queue an earlier version parked), also the tasks it parked for those
        reasons without indexing them."""
        ...

    async def waiting(self) -> int: ...

    async def waiting_tasks(self) -> dict[str, float]:
        """Every waiting task's id with its due time (epoch seconds): those `waiting`
        counts, one due and not released yet included (the backtest says them at the end
        by reason and channel). Read a part at a time, never in one store command."""
        ...

    async def earliest_due(self) -> float | None:
        """When the first waiting task is due (epoch seconds); None when none waits."""
        ...

    async def waiting_and_due(self) -> tuple[int, float | None]:
        """`waiting` and `earliest_due` in one call (the sink's gauges, after each
        decision that took from the queue or added to it)."""
        ...

    async def due_at(self, task_id: str) -> float | None: ...

    async def forget(
        self, subscriber_ids: Sequence[str], now: float | None = None
    ) -> list[Released]:
        """Erase these subscribers' open merge group and suspended-line index, and take
        their waiting tasks out of the queue (each parked task is indexed by subscriber
        as it is parked; those the two name are taken too, and on Redis those overdue
        past the index's keeping, up to `sinks.deferral._OVERDUE_LOOK`): each goes back
        to pending (at `now`; None: the store's clock), as a release would move it, and
        is returned with its merged members for the
        caller to decide now (a profile tombstone: dropped, `is_forgotten`). A crash
        before that leaves them to the re-drive, which decides them the same way."""
        ...


class Slots(Protocol):
    """Capacity counters: a slot taken at most once per task id and counter."""

    async def take(self, key: SlotKey, task_id: str, allowed: int) -> tuple[bool, int]:
        """(taken, slots used now); idempotent per task id."""
        ...

    async def take_many(self, items: Sequence[tuple[SlotKey, str, int]]) -> list[tuple[bool, int]]:
        """`take` for each (key, task id, allowed), in this order (the earlier task gets the
        last slot, as with one call after another), in one round trip."""
        ...


class ContactBook(Protocol):
    """Contacts per subscriber over a sliding period."""

    async def take(
        self, subscriber_id: str, task_id: str, now: float, period_s: float, max_contacts: int
    ) -> float | None:
        """None when taken (or taken before by this task), else when a contact frees."""
        ...

    async def give_back(self, subscriber_id: str, task_id: str) -> None: ...

    async def take_many(
        self,
        items: Sequence[tuple[str, str, float]],
        period_s: float,
        max_contacts: int,
        look: bool = False,
    ) -> list[float | None]:
        """`take` for each (subscriber id, task id, now), in order, in one round trip;
        `look`: say what `take` would, taking nothing."""
        ...

    async def give_back_many(self, items: Sequence[tuple[str, str]]) -> None:
        """`give_back` for each (subscriber id, task id), in one round trip."""
        ...

    async def move_many(self, items: Sequence[tuple[str, str, str]]) -> None:
        """For each (subscriber id, task id, other task id): the contact the task took, if
        any, becomes the other's, at the same time; in one round trip."""
        ...

    async def take_back_many(
        self, items: Sequence[tuple[str, str, float]], period_s: float, now: float
    ) -> None:
        """For each (subscriber id, task id, when): the contact the task made at `when`,
        counted again unless it is counted or older than `period_s` at `now`; the cap does
        not refuse it (it was made: a contact given back for an attempt that reached no
        one, then an outcome saying the customer was reached). One round trip."""
        ...

    async def forget(self, subscriber_ids: Sequence[str]) -> None:
        """Erase these subscribers' contact history."""
        ...


class Facts(Protocol):
    """The latest top-up, home, abroad and active times per subscriber (sinks.relevance)."""

    async def record(self, events: Iterable[InputEvent]) -> int: ...

    async def get(self, subscriber_id: str) -> SubscriberFacts: ...

    async def get_many(self, subscriber_ids: Sequence[str]) -> list[SubscriberFacts]:
        """`get` for each subscriber, in one round trip."""
        ...

    async def forget(
        self, subscriber_ids: Sequence[str], at: float, erased: Mapping[str, float] | None = None
    ) -> None:
        """Erase these subscribers' facts, keeping only `forgotten` = `at` and `erased` (the
        tombstone's own time, by subscriber; `at` when not given)."""
        ...


class Declines(Protocol):
    """`declined` outcomes: a rule not sent to a subscriber for a while."""

    async def suppress(self, subscriber_id: str, rule_id: str, seconds: float) -> None: ...

    async def suppressed(self, subscriber_id: str, rule_id: str) -> bool: ...

    async def suppressed_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """`suppressed` for each (subscriber id, rule id), in one round trip."""
        ...

    async def forget(self, subscriber_ids: Sequence[str], rule_ids: Sequence[str]) -> None:
        """Erase these subscribers' declines of these rules."""
        ...


@dataclass(frozen=True)
class DispatchStores:
    ledger: Ledger
    deferral: Deferrals
    slots: Slots
    contacts: ContactBook
    """Contacts for the dispatch policy's contact cap (every channel)."""
    facts: Facts
    declines: Declines
    frequency: ContactBook
    """Contacts for the rule set's frequency cap (its counted channels only)."""


def redis_stores(ledger: TaskLedger) -> DispatchStores:
    """The stream's stores: Redis keys under the ledger's prefix (`moments:<app id>:`)."""
    from sinks.capacity import RedisSlots
    from sinks.contact import RedisContactBook
    from sinks.declines import RedisDeclines
    from sinks.deferral import DeferralQueue
    from sinks.relevance import FactsStore

    redis, prefix = ledger.redis, ledger.prefix
    return DispatchStores(
        ledger=ledger,
        deferral=DeferralQueue(redis, ledger),
        slots=RedisSlots(redis, prefix),
        contacts=RedisContactBook(redis, prefix),
        facts=FactsStore(redis, prefix),
        declines=RedisDeclines(redis, prefix),
        frequency=RedisContactBook(redis, prefix, "frequency"),
    )
