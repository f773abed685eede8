"""The dispatch sink: tasks go to `moments.tasks` once per task id, through the ledger,
when they may be delivered, within capacity and the contact policy.

Every task the ledger lets us own goes through one decision (`_decide`), whether it is
fresh from a batch, released from the deferral queue or re-driven after a crash:
declined-rule suppression, expiry, relevance and (a task that waited) the customer's
opt-outs since -> merge into a waiting task of the
same subscriber -> wait (deferral queue) while `deliver_after` is in the future, the line
is suspended, the task's quiet hours cover the hour, its channel is not worked now
(`hours:`, `sinks.hours`) or the channel holds for the merge window -> contact cap ->
capacity and overflow -> publish.
Each step is idempotent per task id, so a retry after a Redis error, a re-drive after a
crash or a second worker racing never sends a task twice or loses it.

The sink claims, routes each wave and writes what it decided; the steps' judgments are
its collaborators', built from one policy (`sinks.judging`): the time gates
(`sinks.timegates`), the contact caps (`sinks.caps`), capacity (`sinks.fitting`); the
park calls are `sinks.parking`'s, the cooldown returns of drops `sinks.owedreturns`', a
task read back from the stores `sinks.readback`'s.
Beside the decision, the sink's `subscribers` record their facts and erase them
(`sinks.subscribers`), its `expiry` counts the published tasks no outcome came back
for (`sinks.expiry`), and its `withdrawals` name the published tasks a later profile
change made void (`sinks.withdrawals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from moments.cooldowns import CooldownReturn
from moments.enums import REACHED, OutcomeStatus, WithdrawReason
from moments.models import ServiceTask, earlier_attempts
from moments.records import SuppressReason
from rules.gating import FrequencyCap
from sinks.base import Headers, Message, Producer, produce_all
from sinks.capacity import (
    claim_order,
    rank_score,
)
from sinks.contact import lead_of, merge_tasks
from sinks.cooldowns import CooldownReturns
from sinks.expiry import UnansweredExpiry
from sinks.hours import published
from sinks.judging import Judging, judging_by
from sinks.ledger import PENDING, TAKEN_OVER, Voided, new_claim_token, state_of
from sinks.legacy import TaskTtl, no_ttl
from sinks.metrics import Dependency, DispatchMetrics, Metrics, NewerRead, TimerStep
from sinks.owedreturns import OwedReturns
from sinks.parking import parked_slot, parking
from sinks.payloads import Decoded, Payloads, sent_meta, task_bytes
from sinks.policy import DispatchPolicy
from sinks.readback import NEWER_WAIT_S, stored_candidate
from sinks.relevance import (
    SubscriberFacts,
    check_for,
    falls_back,
    is_forgotten,
    line_closed,
    made_at,
    opted_out,
    opted_out_of,
)
from sinks.retry import Retrying, with_retry
from sinks.routes import (
    Candidate,
    Park,
    Route,
    Writes,
    as_it_went,
    moved_from,
    waited,
    waves,
)
from sinks.steps import Step, TimerSteps
from sinks.stores import ClaimCall, Clock, DispatchStores, Held, Joining, Leave, Released
from sinks.subscribers import Subscribers
from sinks.timegates import TimeGates
from sinks.withdrawals import WITHDRAWN_FOR, Withdrawals

log = logging.getLogger(__name__)
T = TypeVar("T")
_BODY_GRACE_S = 86400
RELEASE_BATCHES_PER_TICK = 20
LEASE_S = 30.0
"""`TaskSink.lease_s` until a `redrive` says otherwise: `MOMENTS_PENDING_REDRIVE_SECONDS`'
default."""
LEASE_RENEW_MIN_S = 0.01
"""The shortest wait between two renewals of a claim (`_keep_claim`), whatever the grace."""


ANSWERED = frozenset({SuppressReason.REACHED, SuppressReason.FAILED})
"""Why a retry is dropped when an outcome of an earlier attempt says it is done with
(`TaskSink._reached`): its rule's cooldown is not given back, as a published task's is
not (re-check: a retry dropped `reached` gave it back, and the rule's next moment called
the customer reached a minute before)."""


def sealed_moment(own: tuple[ServiceTask, str] | None) -> SuppressReason | None:
    """Why a moment merged into a sealed task is dropped, its carrier judged (`own`: None
    while it goes out). Sealed: the task may have gone out under its id with its merged
    moments inside. A re-driven one is, only where its first publish could have carried
    them: its carrier still sendable when it went pending, or re-driven before
    (`sealed_by_redrive`); a released one where a re-drive parked it (that re-drive kept
    its carrier, sendable after the task went pending: `TaskSink._parked_by_redrive`).

    - None while the carrier goes out: the moment is kept as it went, whatever became of
      it since (expired: its `related` entry's `expires_at` tells consumers to leave it
      out; its rule declined, no longer relevant, its own channel opted out of). Dropped,
      the task went out again under its id without it: a consumer that acted on the first
      copy drops the second as a repeat, yet a decline, read from the second's body,
      suppressed the rules of the moments left only, and the dropped one's cooldown was
      given back for a contact that may have been made.
    - the carrier's reason when it is dropped for one no withdrawal names (its rule
      declined, its moment expired or no longer relevant): the moment goes with it, as
      it went out inside it. Sent on under the lead's id, it reached a consumer that had
      acted on the carrier a second time, under an id it had not seen.
    - None when the carrier is dropped and withdrawn (`WITHDRAWN_FOR`): the consumer is
      told not to act on it, and its moments still worth sending go on under the lead's
      id, judged as any (`TaskSink._kept`)."""
    if own is None or own[1] in WITHDRAWN_FOR:
        return None
    return SuppressReason(own[1])


def first_went_pending(
    task_id: str, since: Mapping[str, float], first: Mapping[str, float | None]
) -> float | None:
    """When a re-driven task first went pending, as the decision it repeats was taken: the
    mark an earlier re-drive left (`first`, `Ledger.claim_stale`'s `first_pending`), else
    when it went pending before this claim (`since`); None when not known (a mark an older
    build wrote)."""
    return first[task_id] if task_id in first else since.get(task_id)


def sealed_by_redrive(c: Candidate, went: float | None, policy: DispatchPolicy) -> bool:
    """Whether a re-driven merged task may have gone out under its id with its merged
    moments inside, and so goes out again as it went or not at all (`sealed_moment`).

    Its worker decided it at or after it first went pending (`went`,
    `first_went_pending`), and could publish the group under the carrier's id only while
    the carrier's own moment was sendable (`policy.last_send`); one expired by then was
    dropped, and the others could go out only under their lead's id, after leaving the
    group (which the re-drive would not find whole). So a carrier lapsed before `went`
    never went out: its live moments are judged as any and go on under their lead's id
    (sealed, they were dropped with it, never sent). A second re-drive (the first died
    mid-decision) reads `went` from the first's mark, not from its own claim's score (that
    claim's, or a release of a park it made): read from the score, a group released after
    its carrier lapsed was sealed, and its live moments dropped with the carrier though
    none went out. `went` None (a mark an older build wrote, which does not say when):
    sealed, the price of never sending a moment twice, under two ids."""
    if went is None:
        return True
    carrier = next((t for t in c.tasks if t.task_id == c.carrier_id), None)
    return carrier is None or sealed_alone(carrier, went, policy)


def sealed_alone(task: ServiceTask, went: float | None, policy: DispatchPolicy) -> bool:
    """`sealed_by_redrive` of a task by itself, the carrier of its own entry: whether a
    re-drive that decided it (`went`: when it first went pending, its `redriven:<id>`
    mark's time; None for an older build's mark, which does not say) judged that it may
    have gone out, so that its drop kept its cooldown (`_gone`)."""
    return went is None or went <= policy.last_send(task)


def went_as(c: Candidate, moved: Mapping[str, Mapping[str, str]]) -> ServiceTask:
    """The task `c` carries as it went out: its merged moments in it (`merge_tasks`), each
    on the channel its decision moved it to (`as_it_went`, the carrier's `moved:<id>`
    marks in `moved`)."""
    return merge_tasks(c.carrier_id, [as_it_went(t, moved.get(c.carrier_id, {})) for t in c.tasks])


class TaskSink:
    """`stores`: Redis on the stream (`redis_stores`), memory in a backtest
    (`memory_stores`); `clock`: the time decisions are made at (wall clock on the stream,
    event time in a backtest). The decisions are the same code either way."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        stores: DispatchStores,
        metrics: Metrics,
        policy: DispatchPolicy | None = None,
        clock: Clock = time.time,
        frequency_cap: Callable[[], FrequencyCap | None] = lambda: None,
        task_ttl: TaskTtl = no_ttl,
        returns: CooldownReturns | None = None,
        withdrawals_topic: str | None = None,
        retrying: Retrying | None = None,
    ) -> None:
        """`retrying`: how the stores are called; by default each call is retried through
        an outage (`with_retry`, Redis's); stores that cannot be away (the backtest's, in
        memory) are called directly (`sinks.retry.unretried`)."""
        self._redis: Retrying = retrying or self._retried
        """How the sink and its collaborators call the stores."""
        self._read_together = retrying is None
        """Whether a decision's two reads (declines, facts) are awaited together: Redis
        answers each over the network; stores called directly answer at once, and
        `asyncio.gather` only made two tasks and a turn of the loop a decision."""
        self.producer = producer
        self.topic = topic
        self.stores = stores
        self.metrics = metrics
        self.clock = clock
        self.ledger = stores.ledger
        self.deferral = stores.deferral
        self.frequency_cap = frequency_cap
        """The rule set's frequency cap, as it is now (rules are reloaded): a decision
        takes the one in force at its start (`_judging_now`)."""
        self.task_ttl = task_ttl
        """A rule's task ttl (rules loaded now): a group an earlier version parked
        (`sinks.legacy`) may need it for its carrier's expiry."""
        self._owed = OwedReturns(self.ledger, returns, self._redis, metrics)
        self.facts = stores.facts
        self.declines = stores.declines
        self.dm = DispatchMetrics.of(metrics)
        self._judging = self._judging_by(policy or DispatchPolicy())
        self._pending: list[ServiceTask] = []
        self._rejudged: set[str] = set()
        """Ids among `_pending` made by a moment judged again (`BatchResult.rejudged`)."""
        self._taken_over: set[str] = set()
        """Ids of the flushed tasks that took a dropped entry over (`took_over`)."""
        self._decoded = Decoded()
        self.subscribers = Subscribers(stores, self._decoded, clock, self._redis, self.decide_taken)
        """Their facts recorded, and their erasure (`sinks.subscribers`)."""
        self.expiry = UnansweredExpiry(
            self.ledger, metrics, lambda: self.policy, clock, self._redis
        )
        """Published tasks that expired with no outcome (`sinks.expiry`)."""
        self.withdrawals = Withdrawals(
            producer, withdrawals_topic, self.ledger, metrics, clock, self._redis
        )
        """Published tasks a later profile change made void (`sinks.withdrawals`; no
        notices without `withdrawals_topic`, but a tombstone's erasure all the same)."""
        self._payloads = Payloads(self._decoded)
        self._timer = TimerSteps(
            metrics.timer_errors, "re-drive timer", clock, failing=metrics.timer_failing
        )
        """Runs `redrive`'s steps, each error counted, and backs off its owed ones."""
        self._judged: str | None = None
        """The timetable the deferral queue was last found or made judged by
        (`Deferrals.rejudge`); None until this sink's first release."""
        self.lease_s = LEASE_S
        """The grace period after which another worker's re-drive may claim a pending
        task (`redrive`'s `older_than`, `MOMENTS_PENDING_REDRIVE_SECONDS`): a re-drive's
        or a release's produce renews its claim every third of it (`_keep_claim`)."""
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        """How the claim's renewal waits between two renewals (a test steps it)."""

    @property
    def returns(self) -> CooldownReturns | None:
        """Where the cooldowns of tasks dropped after they waited go (moments.cooldowns)."""
        return self._owed.returns

    @returns.setter
    def returns(self, returns: CooldownReturns | None) -> None:
        self._owed.returns = returns

    def add(self, item: ServiceTask, rejudged: bool = False) -> None:
        """Take a task of the engine's batch for the next `flush`. `rejudged`: made by a
        moment judged again (a silence on its next day, a contract's end each day of its
        lead), counted at its first judgement: held back by the ledger it is no `dedup`
        suppression, and new there (its first task) its deferral is counted here, which
        the engine left out."""
        self._pending.append(item)
        if rejudged:
            self._rejudged.add(item.task_id)

    def took_over(self) -> set[str]:
        """The ids of the tasks `flush` claimed since the last call that took their first
        task's dropped entry over (`TAKEN_OVER`), and were not dropped in that flush: their
        rule's cooldown mark is theirs now (`moments.batchresult.take_over_cooldowns`)."""
        taken, self._taken_over = self._taken_over, set()
        return taken

    def use_policy(self, policy: DispatchPolicy) -> None:
        """Dispatch by `policy` from now on (a reload of its file): its helpers (`Judging`:
        time gates, contact caps, capacity) are built from it together, and each decision
        from now on takes them; one under way finishes on the policy it began with. Their
        counters stay in the stores. When it changes the channel hours, `next_day_at` or
        the zone they are read in (`DispatchPolicy.timetable`), the next release first
        judges the tasks waiting for them again (`release_due`)."""
        # A decision under way finishes on the old helpers: its capacity figures are
        # not set again after the gauge is cleared (`CapacityFitting.retire`).
        self._judging.fitting.retire()
        self._judging = self._judging_by(policy)
        # A pool the policy no longer has kept its last figure for ever, and a raised one
        # its old figure until its next task: each is set again by its next task.
        self.dm.capacity_left.clear()

    def _judging_by(self, policy: DispatchPolicy) -> Judging:
        return judging_by(
            policy,
            self.stores,
            self.frequency_cap(),
            self._drop_route,
            self._gone,
            self.dm,
            self._redis,
        )

    def _judging_now(self) -> Judging:
        """What a decision beginning now judges by, to its end: the policy in force and the
        rule set's frequency cap now (a rules reload since the last decision changes it)."""
        self._judging = self._judging.under(self.frequency_cap())
        return self._judging

    @property
    def policy(self) -> DispatchPolicy:
        """The policy in force: a decision under way keeps the one it began with."""
        return self._judging.policy

    def _retried(self, call: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
        # The retrying coroutine itself, not one awaiting it: a frame less on each of
        # the ~5 store calls a decision makes.
        return with_retry(call, Dependency.REDIS, self.metrics, what)

    async def flush(self) -> set[str]:
        """Claim every added task, then publish, park, merge or drop the ones we own;
        duplicates are counted, not sent. Returns when all of it is durable, with the
        ids of the added tasks the ledger now holds as dropped (ours or, read again after
        a crash, dropped before): their cooldowns are given back
        (`moments.batchresult.give_back_cooldowns`)."""
        if not self._pending:
            return set()
        batch, self._pending = self._pending, []
        rejudged, self._rejudged = self._rejudged, set()
        return await self.dispatch(batch, from_engine=True, rejudged=rejudged)

    async def dispatch(
        self,
        batch: Sequence[ServiceTask],
        from_engine: bool = False,
        rejudged: Collection[str] = (),
        why: dict[str, str] | None = None,
    ) -> set[str]:
        """`flush` for tasks not added: other callers (outcome retries) use this, so they
        never take tasks another agent added and has not flushed yet. `from_engine`: the
        engine counted the gating deferrals in `moments_tasks_deferred_total` already
        (but those of `rejudged`, see `add`), and the ids dropped are returned (else
        none). `why`, when given, takes the reason of each task dropped (id -> reason).
        Only the engine's tasks count as `dedup` when the ledger holds them: an outcome's
        retry held there was queued by the same outcome read before (sent twice, or read
        again after a restart), counted once as the outcome is (`moments.outcomes`), not
        a task suppressed."""
        if not batch:
            return set()
        unique = list({t.task_id: t for t in batch}.values())
        payloads = [(t.task_id, self._payloads.of(t)) for t in unique]
        # The engine's tasks were made after their batch's tombstones, which were recorded
        # before this (`Runtime._publish`): as a tombstone's `forgotten` mark goes, they
        # were made just after now (`_send`), on this sink's clock.
        begun = math.nextafter(self.clock(), math.inf)
        try:
            # A moment judged again whose task expired unsent (a contract's end, a silence
            # over a long suspension) is offered again at a later judgement (a contract's
            # lead judged again for a line still suspended makes none: `emit`). Left out,
            # a silence's task made again for the line stood down while the dropped entry
            # lived, and once it had lapsed was new to the ledger: its deferral and its
            # drop counted again every few days of the suspension.
            takers = [t.task_id for t in unique if t.task_id in rejudged]
            # One `ClaimCall` for every try: a retry (its first reply lost, the script ran)
            # takes what that try wrote as its own. Read as another worker's, the task was
            # counted suppressed `dedup` and left to its re-drive, a grace period late.
            call = ClaimCall()
            owned = await self._redis(
                lambda: self.ledger.claim(payloads, takers, call), "claiming task ids"
            )
            candidates: list[Candidate] = []
            known: list[str] = []
            taken: set[str] = set()
            for task, mine in zip(unique, owned, strict=True):
                again = task.task_id in rejudged
                if mine:
                    if mine == TAKEN_OVER:
                        # Its first task's drop counted the moment: its own counts nothing,
                        # here or when it is released (the payload it is parked with says
                        # so), or re-driven after a crash before it was parked or dropped
                        # (the entry claimed holds it counted: `counted_payload`).
                        task = task.model_copy(update={"counted": True})
                        taken.add(task.task_id)
                    self._payloads.stored(task)
                    candidates.append(
                        Candidate(task.task_id, [task], fresh=True, deferral_counted=from_engine)
                    )
                    if again and task.deferred is not None and mine != TAKEN_OVER:
                        self.metrics.deferred.labels(task.deferred.reason).inc()
                else:
                    if from_engine and not again:  # a moment judged again is one moment
                        self._suppressed(task, SuppressReason.DEDUP)
                    known.append(task.task_id)
            dropped = await self._decide(candidates, made=begun, why=why)
            if not from_engine:
                return set()
            self._taken_over |= taken - dropped
            if known:
                dropped |= await self._dropped_before([t for t in unique if t.task_id in known])
            return dropped & {t.task_id for t in unique}
        finally:
            self._payloads.clear()

    async def _dropped_before(self, tasks: Sequence[ServiceTask]) -> set[str]:
        """The ids of `tasks` the ledger holds as dropped whose drop gave their cooldowns
        back. The engine makes a task again when its events are read again (a crash before
        their state was written): that state never had the cooldown given back, so a task
        dropped the first time gives it back again. Not one a re-drive decided
        (`redriven:<id>`, kept while the entry lives) that may have gone out (sealed,
        `sealed_by_redrive`: its worker died after the produce, before the confirm and the
        state): it keeps its cooldown as the re-drive's drop does (`_gone`); a worker that
        was dropping it owed its return, which the timer sends. One that first went pending
        after its last send (`first_went_pending`, the mark's time) never went out: the
        re-drive dropped it unsealed and returned its cooldown (`_gone`), and so does the
        batch read again. Whichever the engine applies first, the other finds the mark
        gone (`holds_mark`). Kept as a sealed one's, the return read before the batch again
        (the returns topic caught up ahead of the input partition's backlog) found no mark
        to remove in the state before the batch, which then set it again: the rule stayed
        in cooldown for a task never sent, and its next moment made none. Judged by the
        task the batch made again (the same id, the same expiry) and the policy in force:
        a `min_time_left` reloaded since the re-drive may judge it otherwise. A merged
        moment dropped with a carrier that may have gone out with it inside (`_gone` kept
        its cooldown) bears the mark `1` its leave set (`Leave.went_out`): sealed, kept."""
        task_ids = [t.task_id for t in tasks]
        values = await self._redis(lambda: self.ledger.get_many(task_ids), "reading task ids")
        gone = [t for t, v in zip(tasks, values, strict=True) if state_of(v) == "dropped"]
        if not gone:
            return set()
        ids = [t.task_id for t in gone]
        first = await self._redis(lambda: self.ledger.first_pending(ids), "reading task ids")
        policy = self.policy
        return {
            t.task_id
            for t in gone
            if t.task_id not in first or not sealed_alone(t, first[t.task_id], policy)
        }

    async def redrive(self, older_than: float) -> int:
        """The timer's work, safe on every worker at once: release the deferred tasks whose
        time came (`release_due`), send again the tasks whose publish was never settled
        (a crash), the cooldown returns and withdrawals owed, and expire the unanswered
        tasks; returns how many were re-driven. Each step runs whatever an earlier one
        raised, each error is counted, and what the steps not owed raised is raised after
        the last; the cooldown returns and withdrawals owed and the expired tasks stay in
        Redis, and their step is tried again at a later tick (`sinks.steps.TimerSteps`)."""
        redriven = 0
        # The claims this tick's re-drive and release take are renewed by a third of it
        # while their produce runs (`_keep_claim`).
        self.lease_s = older_than

        async def stale() -> None:
            nonlocal redriven
            redriven = await self._redrive_stale(older_than)

        await self._timer.run(
            [
                Step(TimerStep.RELEASE, "releasing due tasks", self.release_due),
                Step(TimerStep.REDRIVE, "re-driving pending tasks", stale),
                Step(
                    TimerStep.COOLDOWN_RETURNS,
                    "sending cooldown returns owed",
                    lambda: self._owed.resend(older_than),
                    owed=True,
                    lease=older_than,
                ),
                Step(
                    TimerStep.WITHDRAWALS,
                    "publishing withdrawals owed",
                    lambda: self.withdrawals.resend_owed(older_than),
                    owed=True,
                    lease=older_than,
                ),
                Step(
                    TimerStep.EXPIRY,
                    "expiring unanswered tasks",
                    self.expiry.expire_unanswered,
                    owed=True,
                    kept="the expired tasks stay in the unanswered index",
                ),
            ]
        )
        return redriven

    async def _redrive_stale(self, older_than: float) -> int:
        """Decide again the pending tasks older than `older_than` (their worker died before
        their publish was settled); returns how many."""
        since: dict[str, float] = {}
        first: dict[str, float | None] = {}
        carried: set[str] = set()
        # This claim's token: its produce is fenced by it (`_fenced`).
        token = new_claim_token()
        stale = await self._redis(
            lambda: self.ledger.claim_stale(
                older_than, since=since, first_pending=first, token=token, carried=carried
            ),
            "reading pending tasks",
        )
        groups = await self._redis(
            lambda: self.ledger.group_many([task_id for task_id, _ in stale]),
            "reading merge groups",
        )
        candidates = []
        newer: list[str] = []
        for (task_id, payload), members in zip(stale, groups, strict=True):
            if (
                c := stored_candidate(
                    task_id, [payload, *members], self._decoded, self.task_ttl, newer
                )
            ) is not None:
                candidates.append(c)
        await self._leave_to_newer(newer, NewerRead.REDRIVE)
        if candidates:
            log.warning("re-driving %d task(s) whose publish was not confirmed", len(candidates))
            self.metrics.pending_redriven.inc(len(candidates))
            await self._decide(
                candidates, redriven=since, first_pending=first, fence=token, carried=carried
            )
        return len(candidates)

    async def _fenced(
        self, tasks: list[ServiceTask], claimed: Collection[str], token: str
    ) -> list[ServiceTask]:
        """Those of a re-drive's or a release's `tasks` still its own to send, right
        before their produce (`Ledger.fence`: one round trip, the only one more than its
        decision's; none for a decision that sends nothing): pending still, and claimed by
        no other worker's re-drive since its claim or release (`claimed`, with `token`)
        or since its decision made them pending (a merged moment moved out of its group
        under its own id). Each is re-scored, so that no worker claims it while the
        produce runs. One another worker's re-drive took (this one stalled past the grace
        period after its claim or release: Redis retried, a long pause, a slow broker) is
        left to that worker, which decides it with what it read: sent by both, the same
        id went out twice and maybe not the same (a call the customer opted out of
        meanwhile after its withdrawal, another channel). A produce that itself takes
        longer than the grace period after the fence keeps the claim renewed
        (`_keep_claim`; docs/architecture.md, the crash table)."""
        if not tasks:
            return tasks
        ids = [t.task_id for t in tasks]
        mine = await self._redis(
            lambda: self.ledger.fence(
                [i for i in ids if i in claimed], [i for i in ids if i not in claimed], token
            ),
            "fencing re-driven or released tasks",
        )
        taken = [i for i in ids if i not in mine]
        if taken:
            log.warning(
                "%d re-driven or released task(s) taken by another worker's re-drive while "
                "this one decided them (it stalled past the grace period): not published "
                "here (first: %r)",
                len(taken),
                taken[0],
            )
        return [t for t in tasks if t.task_id in mine]

    async def _confirm_answered(
        self, candidates: Sequence[Candidate], since: Mapping[str, float]
    ) -> list[Candidate]:
        """The re-driven tasks an outcome came back for while they were pending
        (`Ledger.answered_pending`) confirmed as sent, as their worker would have: a consumer
        answered them, so they went out, and their worker died before the confirm (or
        lost its Redis). Decided again, one was published a second time, or, its
        `declined` read first, dropped as `declined`: counted suppressed and its rule's
        cooldown given back, for a task that had reached the customer. Each is the
        task as its pending entry and merge group hold it (`merge_tasks`), as the outcome
        read it (`moments.outcomes`), each moment on the channel it went out on
        (`as_it_went`: confirmed as the call its payload holds, a call that went out as its
        fallback SMS was withdrawn by an opt-out of calls, not of SMS); not published
        again, its `sent_at` when its entry went pending (`since`, `Ledger.claim_stale`:
        its owner published it just after; the re-drive's own time was hours late after a
        long outage). Returns the others.
        Released tasks alike: one a re-drive parked, answered while it waited
        (`redriven:<id>`), dated by its release (when it went out is not kept).
        Looked at by the decision after it read the declines (`_decide`): an outcome
        writes its mark before its decline, so a decline the decision read is never
        missed here; one read after this look is as one read after the publish again."""
        answered = await self._redis(
            lambda: self.ledger.answered_pending([c.carrier_id for c in candidates]),
            "reading pending tasks answered already",
        )
        if not answered:
            return list(candidates)
        # As it went out: the body and index a later opt-out withdraws it by.
        sent = await self._as_they_went([c for c in candidates if c.carrier_id in answered])
        log.warning(
            "%d re-driven or released task(s) already answered by their consumer (their "
            "worker died after publishing them): confirmed as sent, not published again "
            "(first: %r)",
            len(sent),
            sent[0].task_id,
        )
        await self._send(sent, produce=False, sent_at=since)
        return [c for c in candidates if c.carrier_id not in answered]

    async def _as_they_went(self, candidates: Sequence[Candidate]) -> list[ServiceTask]:
        """Each of `candidates` as it went out (`went_as`), their `moved:<id>` marks read
        in one call."""
        ids = [c.carrier_id for c in candidates]
        moved = await self._redis(lambda: self.ledger.moved(ids), "reading moved channels")
        return [went_as(c, moved) for c in candidates]

    async def _resume_void(
        self, candidates: list[Candidate], since: Mapping[str, float]
    ) -> list[Candidate]:
        """The re-driven tasks their worker's confirm found void (`Ledger.voided_pending`):
        it published them and died before it confirmed them withdrawn. Each is withdrawn
        and confirmed as that worker would have (`_void`: the task as its pending entry
        and merge group hold it, each moment on the channel it went out on, `as_it_went`),
        its notice again with the same reason and time (it may
        have gone out before the crash), not decided again: decided again, one whose
        customer opted back in meanwhile was published again under the id withdrawn, and
        one whose subscriber was erased since was withdrawn again as `forgotten`.
        Returns the others."""
        void = await self._redis(
            lambda: self.ledger.voided_pending([c.carrier_id for c in candidates]),
            "reading pending tasks found void",
        )
        if not void:
            return candidates
        # As it went out: its notice names the channel opted out of, its body and index
        # the one it went on.
        tasks = await self._as_they_went([c for c in candidates if c.carrier_id in void])
        log.warning(
            "%d re-driven task(s) found void as they were confirmed: withdrawn and "
            "confirmed, not decided again (first: %r)",
            len(tasks),
            tasks[0].task_id,
        )
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        meta = {t.task_id: sent_meta(t, since.get(t.task_id, now.timestamp())) for t in tasks}
        bodies = {t.task_id: self._body(t, now) for t in tasks}
        await self._void(tasks, void, meta, bodies, {t.task_id: made_at(t) for t in tasks})
        return [c for c in candidates if c.carrier_id not in void]

    async def _leave_to_newer(self, task_ids: Sequence[str], path: NewerRead) -> None:
        """Pending tasks a newer version wrote (`stored_candidate`'s `newer`): counted, and
        re-driven by no worker for `NEWER_WAIT_S` (every 30 s, each of this version's
        workers read them again, and logged it, for as long as their entries lived)."""
        if task_ids:
            self.metrics.newer_tasks.labels(path.value).inc(len(task_ids))
            await self._redis(
                lambda: self.ledger.postpone(task_ids, NEWER_WAIT_S),
                "leaving tasks of a newer version to its workers",
            )

    async def release_due(self, now: float | None = None) -> int:
        """Take the deferred tasks due by `now` (default: the clock) and send (or drop) them,
        ranked for capacity (`claim_order`), not in the queue's order. A full batch of
        releases asks for the next, up to `RELEASE_BATCHES_PER_TICK` (at one batch a tick,
        a night's queue all due at 08:00 left at 50 tasks/s per worker: 200,000 tasks took
        over an hour). The store hands out the highest ranked of everything due
        (`Parking.rank`, `Deferrals.release`), so a tick's batches are the top of the whole
        queue, not its first part by due time and id (a priority-5 call first by id took
        a region's slots before a complaint callback later in the queue); they are sorted
        by `claim_order` again here, as ranks are rounded. The tasks taken hold this
        release's token (`claimed:<id>`, written by the store in the step that takes
        them), and its produce is fenced by it (`_fenced`): one round trip more when it
        sends, none when it sends nothing."""
        now = self.clock() if now is None else now
        timetable = self._judging.timetable
        if self._judged != timetable:
            # The first release of this sink, or its policy's hours, `next_day_at` or zone
            # changed: the tasks waiting for them are made due now (`Deferrals.rejudge`)
            # unless the queue says they were parked by these already, and each is judged
            # by the policy in force (`TimeGates.rejudged`). The mark is kept in the store, so a
            # worker restarted with another policy finds that it changed (in this
            # process's memory only, a restart woke nothing). Set to the timetable the
            # wake was for, not the one in force after it: a reload landing while it runs
            # wakes again at the next tick.
            # Noted before the walk: a decision that parks by an older timetable while it
            # runs forgets it again (`_decide`), and the next release asks the queue.
            self._judged = timetable
            try:
                woken = await self._redis(
                    lambda: self.deferral.rejudge(timetable, now),
                    "judging tasks waiting for channel hours or the next day again",
                )
            except BaseException:
                self._judged = None
                raise
            if woken:
                log.info(
                    "channel hours changed (the policy's hours, closed days, next_day_at or "
                    "timezone are not those the waiting tasks were parked by): %d waiting "
                    "task(s) judged again now",
                    woken,
                )
        due: list[Released] = []
        # This release's token: each task taken holds it, and its produce is fenced by it.
        token = new_claim_token()
        for _ in range(RELEASE_BATCHES_PER_TICK):
            batch = await self._redis(
                lambda: self.deferral.release(now, self.policy.release_batch, token),
                "releasing tasks",
            )
            due += batch
            if len(batch) < self.policy.release_batch:
                break
        if due:
            self.dm.released.inc(len(due))
            await self.decide_taken(due, now, fence=token)
        else:
            await self._update_waiting()
        return len(due)

    async def decide_taken(
        self,
        taken: Sequence[Released],
        now: float,
        why: dict[str, str] | None = None,
        retake: bool = True,
        fence: str | None = None,
    ) -> None:
        """Decide the tasks taken out of the deferral queue (pending again): those its
        release handed out, and those of subscribers a tombstone erased
        (`Subscribers.forget`), dropped then as `forgotten`. Ranked by `claim_order`; one
        an outcome answered while it waited (a re-drive parked it) is confirmed as sent
        (`_confirm_answered`, looked at by the decision as the re-drive's is). `why`,
        `retake` and `fence` (the release's token, `release_due`): as `_decide`'s."""
        newer: list[str] = []
        loaded = [
            stored_candidate(
                r.task_id, [r.payload, *r.members], self._decoded, self.task_ttl, newer
            )
            for r in taken
        ]
        await self._leave_to_newer(newer, NewerRead.RELEASE)
        ranked = sorted((c for c in loaded if c is not None), key=lambda c: claim_order(c.tasks))
        # A retake's (`_decide_raced`): its caller looked at the answered marks.
        await self._decide(ranked, now, why, retake=retake, released=retake, fence=fence)

    async def _decide(
        self,
        candidates: Sequence[Candidate],
        now: float | None = None,
        why: dict[str, str] | None = None,
        made: float = math.inf,
        redriven: Mapping[str, float] | None = None,
        retake: bool = True,
        released: bool = False,
        first_pending: Mapping[str, float | None] | None = None,
        fence: str | None = None,
        carried: Collection[str] = (),
    ) -> set[str]:
        """Route every candidate (`_route_wave`), then publish the ones to send together;
        returns the ids of the ledger entries dropped (`why`, when given, takes each one's
        reason). `made`: when the engine's fresh tasks among them were made, as a
        tombstone's mark is compared with (`_send`). `redriven` (a re-drive's, by id: when
        each went pending): those answered already are confirmed as sent
        (`_confirm_answered`), looked at once the declines are read (each was marked
        re-driven by its claim, `Ledger.claim_stale`; `first_pending`: when those an
        earlier re-drive had marked first went pending, as its mark says), the merged ones
        sealed where they may have gone out with their moments inside
        (`sealed_by_redrive`, judged when each first went pending, `first_went_pending`);
        `released` (taken out of the deferral queue, `decide_taken`): those answered
        already alike, dated now. A park refused for a tombstone recorded since the facts
        were read (`Writes.raced`) is decided again once this is done (`retake`; not again
        from that decision), so dropped `forgotten`: the tombstone's take of the
        subscriber's waiting tasks came before the park, and its payload waited for its
        release time. `fence`: a re-drive's claim token, or a release's (each task it took
        holds it: `Deferrals.release`); its tasks are published only where no other
        worker's re-drive claimed them since (`_fenced`). `carried` (a re-drive's): those
        whose claim found a leave's mark (`Ledger.claim_stale`): their moments may have
        gone out inside another carrier, and keep their cooldowns when dropped, sealed or
        not (`Writes.carried`), as a release reads them (`_parked_by_redrive`).

        Declines and facts are read for all candidates at once (nothing here writes them);
        the writes go in waves (`waves`), one store call per step for a whole wave."""
        dropped: set[str] = set()
        if not candidates:
            return dropped
        # A re-drive's claimed entries (or a release's taken ones), which its fence checks,
        # and its drops and parks too (`Held`: written on entries still its own only).
        claimed = {c.carrier_id for c in candidates} if fence is not None else set()
        held = None if fence is None else Held(fence, frozenset(claimed))
        at = self.clock() if now is None else now
        # Fresh tasks that park nothing leave the deferral queue as it was: its count (a
        # Redis call) is read again only when this decision took from it or added to it,
        # and by the release timer, which also sees what other workers did.
        queue_changed = any(not c.fresh for c in candidates)
        # This decision's policy, frequency cap and helpers, whatever reloads (of the
        # policy or of the rules) land meanwhile.
        j = self._judging_now()
        raced: list[str] = []
        try:
            declined, facts, reached = await self._read_for(candidates, at, j.policy)
            if redriven is not None:
                candidates = await self._resume_void(list(candidates), redriven)
            if redriven is not None or released:
                # After the declines' read: an outcome marks its task answered before it
                # writes its decline, so a decline read here finds its task marked.
                # Looked at first, a decline read between the two dropped the task as
                # `declined` (its cooldown given back), another outcome sent it again.
                candidates = await self._confirm_answered(candidates, redriven or {})
            # Those that may have gone out, by when the decision they repeat was taken
            # (`CapacityFitting.within`; None: parked by a re-drive, not known).
            sealed: dict[str, float | None] = {}
            # Those whose moments may have gone out inside another carrier (a leave's
            # mark): their cooldowns kept when dropped; a release's, not sealed either.
            leavers: set[str] = set(carried)
            if redriven is not None:
                # Produced, maybe (each marked re-driven by its claim, `Ledger.claim_stale`):
                # one this decision parks is withdrawn when dropped later; its merged
                # moments inside only where its carrier could go out then.
                # Judged by when each first went pending, as the decision it repeats was
                # (that time not known, an older build's mark: when it went pending now).
                first = first_pending or {}
                for c in candidates:
                    went = first_went_pending(c.carrier_id, redriven, first)
                    if sealed_by_redrive(c, went, j.policy):
                        sealed[c.carrier_id] = redriven.get(c.carrier_id) if went is None else went
            elif released:
                parked, leavers = await self._parked_by_redrive(candidates)
                sealed = dict.fromkeys(parked)
            # The channels their moments went out on where a decision moved them
            # (`as_it_went`): the payloads hold the ones they were made for.
            moved_on: dict[str, dict[str, str]] = {}
            if sealed:
                ids = list(sealed)
                moved_on = await self._redis(
                    lambda: self.ledger.moved(ids), "reading moved channels"
                )
            to_send: list[ServiceTask] = []
            for wave in waves(candidates):
                sendable, parks, gone = await self._route_wave(
                    wave, at, declined, facts, j, reached, raced, sealed, moved_on, held, leavers
                )
                to_send += sendable
                dropped |= set(gone)
                if why is not None:
                    why.update(gone)
                queue_changed = queue_changed or parks
            # The engine's fresh tasks: its gates judged their subscriber just now, after
            # any tombstone of the batch (`_send`).
            fresh = {c.carrier_id: made for c in candidates if c.fresh and c.deferral_counted}
            if held is not None:
                to_send = await self._fenced(to_send, claimed, held.token)
            await self._send(to_send, fresh, held=held)
        except BaseException:
            # A wave that failed after its parks were written never said it parked: the
            # queue may have changed (only asked again when the timetable did, below).
            queue_changed = True
            raise
        finally:
            self._payloads.clear()
            if queue_changed and j.timetable != self._judging.timetable:
                # It parked by the hours of a policy reloaded since, maybe after a release
                # judged the queue by the new ones (the queue then says `*`, parked by
                # two): the next release asks the queue again, else its tasks waited for
                # the old openings until the next reload or restart.
                self._judged = None
        if queue_changed:
            await self._update_waiting()
        if raced and retake:
            await self._decide_raced(raced, at, why)
        return dropped

    async def _decide_raced(
        self, task_ids: Sequence[str], now: float, why: dict[str, str] | None
    ) -> None:
        """The tasks whose park a tombstone refused (`Writes.raced`, pending), with their
        merge groups, decided again (`decide_taken`): dropped `forgotten`, the moments
        merged into them with them. One no longer pending (another worker's re-drive
        took it) is left to that worker."""
        ids = list(task_ids)
        values = await self._redis(lambda: self.ledger.get_many(ids), "reading raced parks")
        groups = await self._redis(lambda: self.ledger.group_many(ids), "reading raced parks")
        taken = [
            Released(i, v[1:], g)
            for i, v, g in zip(ids, values, groups, strict=True)
            if v is not None and v.startswith(PENDING)
        ]
        await self.decide_taken(taken, now, why, retake=False)

    async def _parked_by_redrive(
        self, candidates: Sequence[Candidate]
    ) -> tuple[set[str], set[str]]:
        """The tasks among those released that a re-drive parked (`redriven:<id>`): they may
        have gone out under their ids, and go out again as they went or not at all
        (`sealed_moment`, `as_it_went`, `CapacityFitting.within`), and dropped keep their
        cooldowns (`_gone`). And apart, those a leave marked (`Leave.went_out`,
        `Ledger.redriven_carried`): their moments may have gone out inside a carrier
        withdrawn since, their ids not, so they are judged as any (not sealed: the lead
        declined or expired, the others go on under their own lead's id; a full pool
        refuses them) and dropped keep their cooldowns. Read as a re-drive's, their
        release sealed them, and a lead dropped for a reason no withdrawal names took
        down with it moments whose only copy was withdrawn: lost.
        Every one is looked at, whatever its rule's fallback under the policy in force: a
        task of one moment whose fallback a reload removed was released unsealed,
        dropped `expired` for its channel closed until after it must go (sealed, it goes
        now, `off_hours`' `went_out`), its cooldown returned. Still
        one round trip a release, which a task parked by no re-drive answers with nothing.

        None for when they first went pending, though the mark holds it: the channels
        they went out on are their `moved:<id>` marks' (`as_it_went` judges no time), and
        fitted to capacity as of then, a pool refusing them then (its day gone, or their
        first decision died before taking a slot) had today's overflow split or move
        them; sent whole (`within`), they go as they went."""
        ids = [c.carrier_id for c in candidates if not c.fresh]
        if not ids:
            return set(), set()
        return await self._redis(
            lambda: self.ledger.redriven_carried(ids), "reading tasks a re-drive parked"
        )

    async def _update_waiting(self) -> None:
        waiting, due = await self._redis(self.deferral.waiting_and_due, "counting waiting")
        self.metrics.waiting.set(waiting)
        self.metrics.earliest_due.set(due or 0)

    def _suppressed(self, task: ServiceTask, reason: SuppressReason) -> None:
        self.metrics.suppressed.labels(task.moment.type, str(reason)).inc()

    def _count_suppressed(self, w: Writes) -> None:
        """The wave's moments dropped for good (`Writes.suppressed`) counted, once their
        drops are written: those whose drop or leave was not (`Writes.unwritten`: a stalled
        decision's, refused by its fence, `Held`) are the re-drive's that claimed them
        since, which counts what it decides. Counted as they were judged (before), a
        moment another worker then sent inside its carrier was counted suppressed too."""
        for m, reason in w.suppressed:
            if m.task_id not in w.unwritten:
                self._suppressed(m, reason)

    def _gone(self, c: Candidate, m: ServiceTask, reason: SuppressReason, w: Writes) -> None:
        """A moment dropped for good: counted once its drop is written
        (`_count_suppressed`), and, unless it is fresh from the engine's
        batch (which gives its cooldown back itself: `give_back_cooldowns`) or forgotten,
        its rule's cooldown returned (`OwedReturns.owe` before the drop is written, `.send` after).
        A retry's too: retries follow only `unreachable`, so a dropped one reached no one
        either; but not one dropped for an outcome of an earlier attempt (`ANSWERED`, and
        `declined`: a retry's rule declined is its own earlier attempt's, the customer
        reached): the customer was reached after all, or the task failed, and the
        outcome of a task that went out keeps its cooldown. Nor one of a task that may
        have gone out under its id (`Writes.went_out`: re-driven, or parked by a
        re-drive), whatever the reason (expired after an outage, declined, no room): given
        back, its rule fired again and the customer it may have reached was contacted a
        second time, under a new id. A worker that was dropping it when it died owed the
        return first (`OwedReturns.owe`), which the timer sends once the drop is written."""
        if not m.counted:  # the task of a moment counted at its first task's drop
            w.suppressed.append((m, reason))  # counted once its drop is written
        from_batch = c.fresh and c.deferral_counted
        forgotten = reason is SuppressReason.FORGOTTEN
        if forgotten:  # read back (and kept) once more to be dropped: let it go
            self._decoded.forget([m.subscriber_id])
        answered = reason in ANSWERED or (
            reason is SuppressReason.DECLINED and m.retry_of is not None
        )
        went_out = w.keeps_cooldowns(c.carrier_id)
        if self.returns is not None and not (from_batch or forgotten or answered or went_out):
            w.returned += CooldownReturn.all_of(m)

    async def _read_for(
        self,
        candidates: Sequence[Candidate],
        at: float,
        policy: DispatchPolicy,
    ) -> tuple[set[tuple[str, str]], dict[str, SubscriberFacts], dict[str, SuppressReason]]:
        """The declined (subscriber, rule) pairs among the unexpired tasks, the facts of the
        subscribers whose tasks need them (a task that waited or was re-driven: its
        erasure and opt-outs since; a relevance check; a suspended line), and the retries
        an outcome of an earlier attempt says are not to be sent, with why (`_reached`)."""
        live = [t for c in candidates for t in c.tasks if t.expires_at.timestamp() > at]
        pairs = list(dict.fromkeys((t.subscriber_id, t.moment.rule_id) for t in live))
        # Facts also for tasks that turn out declined: the two reads then go together
        # instead of one after the other (a declined task is dropped either way).
        # A task that waited, was re-driven or is a retry may belong to a subscriber
        # forgotten since; the engine's fresh tasks not (the tombstone's batch dropped
        # those made before it).
        waited = [
            t.subscriber_id
            for c in candidates
            if not (c.fresh and c.deferral_counted)
            for t in c.tasks
            if t.expires_at.timestamp() > at
        ]
        wanted = (
            waited
            + [t.subscriber_id for t in live if check_for(policy.relevance, t) is not None]
            # A task whose rule falls back to another channel (hours or capacity): the
            # gates judged the opt-outs of the channel it was made for only.
            + [t.subscriber_id for t in live if falls_back(policy, t)]
            + [
                c.tasks[0].subscriber_id
                for c in candidates
                if any(t.deferred is not None and t.deferred.reason == "suspended" for t in c.tasks)
            ]
        )
        subscribers = list(dict.fromkeys(wanted))

        async def declines() -> list[bool]:
            if not pairs:
                return []
            return await self._redis(
                lambda: self.declines.suppressed_many(pairs), "reading declines"
            )

        async def facts_of() -> list[SubscriberFacts]:
            if not subscribers:
                return []
            return await self._redis(lambda: self.facts.get_many(subscribers), "reading facts")

        if pairs and subscribers and self._read_together:
            flags, got = await asyncio.gather(declines(), facts_of())
        else:  # one read or none, or stores in memory: no tasks to schedule
            flags, got = await declines(), await facts_of()
        declined = {pair for pair, flag in zip(pairs, flags, strict=True) if flag}
        return declined, dict(zip(subscribers, got, strict=True)), await self._reached(live)

    async def _reached(self, live: Sequence[ServiceTask]) -> dict[str, SuppressReason]:
        """The retries among these that an outcome of an earlier attempt, read after the
        `unreachable` that queued the retry, says are not to be sent: `reached` (`REACHED`:
        the customer was reached) or else `failed` (a failed task is not sent again).
        None is read for a batch with no retry in it."""
        earlier = {t.task_id: earlier_attempts(t) for t in live if t.retry_of is not None}
        if not earlier:
            return {}
        ids = list(dict.fromkeys(i for attempts in earlier.values() for i in attempts))
        marks = {
            SuppressReason.REACHED: [s.value for s in REACHED],
            SuppressReason.FAILED: [OutcomeStatus.FAILED.value],
        }
        found: dict[str, SuppressReason] = {}
        for reason, statuses in marks.items():  # reached first: it says more
            noted = await self._redis(
                functools.partial(self.ledger.noted_any, ids, statuses),
                "reading a task's outcomes",
            )
            for t, attempts in earlier.items():
                if t not in found and noted.intersection(attempts):
                    found[t] = reason
        return found

    def _keep(
        self,
        task: ServiceTask,
        now: float,
        declined: set[tuple[str, str]],
        facts: dict[str, SubscriberFacts],
        policy: DispatchPolicy,
        reached: Mapping[str, SuppressReason] | None = None,
    ) -> SuppressReason | None:
        """None when the task is still worth sending, else why not."""
        if now > policy.last_send(task):
            return SuppressReason.EXPIRED
        if is_forgotten(task, facts.get(task.subscriber_id)):
            return SuppressReason.FORGOTTEN
        if (task.subscriber_id, task.moment.rule_id) in declined:
            return SuppressReason.DECLINED
        if reached and (answered := reached.get(task.task_id)) is not None:
            return answered
        check = check_for(policy.relevance, task)
        if check is not None:
            verdict = check(task, facts[task.subscriber_id])
            if not verdict.keep:
                return verdict.reason
        return None

    async def _route_wave(
        self,
        wave: Sequence[Candidate],
        now: float,
        declined: set[tuple[str, str]],
        facts: dict[str, SubscriberFacts],
        j: Judging,
        reached: Mapping[str, SuppressReason] | None = None,
        raced: list[str] | None = None,
        sealed: Mapping[str, float | None] | None = None,
        moved_on: Mapping[str, Mapping[str, str]] | None = None,
        held: Held | None = None,
        carried: Collection[str] = (),
    ) -> tuple[list[ServiceTask], bool, dict[str, str]]:
        """The decision for each candidate of a wave (see the module docstring), one store
        call per step for all of them; returns the tasks to send, whether any was
        parked, and the entries dropped (id -> reason); `raced` takes the ids of the
        parks a tombstone refused (`Writes.raced`).

        No two candidates of a wave have the same subscriber, so the per-subscriber steps
        (merge, park, contact cap) of one never see another's; capacity, shared by all,
        is taken in the candidates' order (`CapacityFitting.within`). Each call is idempotent per
        task id, so a retried call (`with_retry`) repeats the ones that got through
        harmlessly, as a retried single step did."""
        w = Writes(
            timetable=j.timetable,
            now=now,
            went_out=frozenset(sealed or ()),
            carried=frozenset(carried),
        )
        routes = await self._kept(wave, now, declined, facts, w, j, reached, sealed, moved_on, held)
        routes = await self._join(routes, now, j.gates)
        window = j.policy.merge.window.total_seconds()
        doomed = await j.caps.capped_until_expiry(
            [r.task for r in routes if r.c.fresh and r.task.deliver_after.timestamp() > now], now
        )
        # Those that may have gone out under their ids, on their channels as they went
        # (`as_it_went`): never dropped for the channel's hours (`off_hours`' `went_out`),
        # fitted to capacity as they went (`within`).
        went = {
            r.carrier_id: sealed[r.carrier_id]
            for r in routes
            if sealed and r.carrier_id in sealed and r.carrier_id == r.c.carrier_id
        }
        contacting: list[Route] = []
        for r in routes:
            task = r.task
            # The engine's gates judged it just now, on the channel it was made for.
            gated = r.c.fresh and r.c.deferral_counted and not r.moved
            if task.task_id in doomed:
                self._drop_route(r, SuppressReason.FREQUENCY_CAP, w)
            elif task.deliver_after.timestamp() > now:
                reason = task.deferred.reason if task.deferred else "deliver_after"
                w.park(r, task.deliver_after.timestamp(), reason, count=not gated)
            elif (
                j.gates.suspended(r, now, facts, w)
                or (not gated and j.gates.quiet(r, now, w))
                or j.gates.off_hours(r, now, w, went_out=r.carrier_id in went)
            ):
                pass
            elif r.c.fresh and j.policy.merge.holds(task.channel, task.attempt):
                # Not a retry (`attempt` >= 1): it waited for `unreachable_retry_after`,
                # or its outcome was read after that, and it goes when the wait ends, as
                # documented; held here, one read 2 h 1 min late went 30 minutes later.
                # Nor with a window of 0, which holds nothing: parked until now, the task
                # went at the next tick saying `deferred: merge_window`.
                w.park(r, now + window, "merge_window")
            else:
                contacting.append(r)
        capacity: list[Route] = []
        over_cap: set[str] = set()
        tasks = [r.task for r in contacting]
        for r, contact in zip(contacting, await j.caps.take(tasks, now, w), strict=True):
            task = r.task
            if contact.taken:
                capacity.append(r)
            elif contact.free_at is not None and contact.free_at <= j.policy.last_send(task):
                w.park(r, contact.free_at, contact.reason)
            elif r.carrier_id in went:
                # It may have gone out, its contact not in the books (a cap its decision
                # did not meet: one a reload set or lowered since, a channel counted
                # since, or its contact aged out while a re-drive parked it): it goes as
                # it went, its contact counted now (`ContactCaps.write`). Dropped, a
                # contact made was counted `contact_cap`, its rule's cooldown given back
                # for a moment that may have reached the customer.
                over_cap.add(r.carrier_id)
                capacity.append(r)
            else:
                self._drop_route(r, SuppressReason(contact.reason), w)
        to_send: list[ServiceTask] = []
        leaves: list[Leave] = w.leaving
        fits = await j.fitting.within(capacity, now, opted_out_of(facts), went)
        for r, fit in zip(capacity, fits, strict=True):
            if fit.sent is not None:
                to_send.append(fit.sent)
                if moved := moved_from(r.c.tasks, fit.send):
                    w.channels_moved[fit.sent.task_id] = moved
                if r.carrier_id in over_cap:
                    w.counted.append(fit.sent)
            leaves += j.fitting.split(r, fit, w, went.get(r.carrier_id))
        await self._owed.owe(w, "" if held is None else held.token)
        lost = await self._leave(leaves, held, w.owed, w.unwritten)
        if lost:
            to_send = [t for t in to_send if t.task_id not in lost]
            w.parks = [p for p in w.parks if p.slot.task_id not in lost]
            w.channels_moved = {i: m for i, m in w.channels_moved.items() if i not in lost}
            w.counted = [t for t in w.counted if t.task_id not in lost]
        notices = await self.withdrawals.owe_dropped(
            await self._may_have_gone(wave, w, moved_on or {})
        )
        await self._write(w, j, held)
        self._count_suppressed(w)
        await self._owed.send(w.owed)
        await self.withdrawals.send_owed(notices)
        if raced is not None:
            raced += w.raced
        return to_send, bool(w.parks), dict(w.drops)

    async def _may_have_gone(
        self, wave: Sequence[Candidate], w: Writes, moved_on: Mapping[str, Mapping[str, str]]
    ) -> list[tuple[ServiceTask, str]]:
        """The wave's tasks about to be dropped for a profile change their consumer must hear
        of (`WITHDRAWN_FOR`) that may have gone out: those a re-drive decided
        (`Ledger.redriven`: produced, maybe, before their worker died, never confirmed, so
        in no published index), dropped at once or where the re-drive parked them (a
        release, a tombstone); each with its reason. Not one a leave marked (its moments
        may have gone out inside another carrier, its id not: `Ledger.redriven_carried`),
        whose notice named an id no consumer saw. Not one a tombstone took out of the
        deferral queue before a re-drive decided it (`Ledger.unsent`): it waited there,
        never published, and withdrawn it named the erased subscriber on the topic for a
        task no consumer saw. Both marks in one read (`Ledger.redriven_unsent`). The
        engine's fresh tasks carry no mark: not looked at. Each named as it went out
        (`as_it_went`, its `moved:<id>` marks, `moved_on`): a call that went out as its
        fallback SMS and is dropped for an opt-out of SMS is withdrawn as the SMS, not as
        the call no consumer got."""
        reasons = dict(w.drops)
        # Each as it went out, its merged moments in it (`merge_tasks`): the notice names
        # the channel and moment type the task went out with, its lead's, where the
        # carrier's own moment named another.
        void = [
            (
                went_as(c, moved_on),
                reason,
            )
            for c in wave
            if not c.fresh and (reason := reasons.get(c.carrier_id)) in WITHDRAWN_FOR
            if any(t.task_id == c.carrier_id for t in c.tasks)
        ]
        if not void:
            return []
        ids = [t.task_id for t, _ in void]
        marked, unsent = await self._redis(
            lambda: self.ledger.redriven_unsent(ids), "reading re-driven tasks"
        )
        # `unsent` speaks for a task dropped for the tombstone only (read for all: read
        # after the first for those alone, it was a round trip more per wave).
        never = {i for i in unsent if reasons[i] == SuppressReason.FORGOTTEN}
        return [(t, r) for t, r in void if t.task_id in marked and t.task_id not in never]

    def _drop_route(self, r: Route, reason: SuppressReason, w: Writes) -> None:
        """Drop a route whole: each of its moments counted once, under its own type; the
        carrier's entry dropped, each merged moment leaving its group dropped. Counted
        once under the lead's type, the others stayed merged, uncounted, for the ledger's
        life (499 moments in a simulated week; dispatch re-check)."""
        carrier = r.carrier_id
        raw = r.c.stored()
        for m in r.moments:
            self._gone(r.c, m, reason, w)
            if m.task_id != carrier and m.task_id in raw:
                until = m.expires_at.timestamp()
                w.leaving.append(
                    Leave(
                        carrier,
                        m.task_id,
                        raw[m.task_id],
                        reason,
                        keep_until=until,
                        went_out=w.keeps_cooldowns(r.c.carrier_id),
                    )
                )
        w.drop(carrier, reason, r.task.expires_at)

    async def _leave(
        self,
        leaves: Sequence[Leave],
        held: Held | None = None,
        owed: Sequence[CooldownReturn] = (),
        unwritten: set[str] | None = None,
    ) -> set[str]:
        """Move merged moments out of their groups (`Ledger.leave_many`); returns the ids
        of the new carriers that were not merged where their group said (a second worker
        has them: they are left alone). `held`: a re-drive's or a release's, whose leaves
        are written only while their carrier is its own; each dropped moment names the
        returns `owed` for it (`Leave.returns`), forgotten where the fence refuses its
        leave (another worker's re-drive sent it inside its carrier, or decides it).
        `unwritten` takes the ids of the dropped moments whose leave was not written
        (`Writes.unwritten`: not counted suppressed)."""
        if not leaves:
            return set()
        if held is not None and owed:
            keys: dict[str, list[str]] = {}
            for r in owed:
                keys.setdefault(r.entry, []).append(r.owed_key)
            leaves = [
                replace(i, returns=tuple(keys[i.task_id]))
                if i.dropped is not None and i.task_id in keys
                else i
                for i in leaves
            ]
        tries = 0

        async def leave() -> list[bool]:
            # A retry (its first reply lost) takes its first try's writes as written
            # (`again`): refused, its drops were counted nowhere, its moved moments left
            # to their re-drive.
            nonlocal tries
            tries += 1
            return await self.ledger.leave_many(leaves, held, again=tries > 1)

        left = await self._redis(leave, "leaving merge groups")
        lost = {
            i.task_id for i, ok in zip(leaves, left, strict=True) if not ok and i.to == i.task_id
        }
        if unwritten is not None:
            unwritten.update(
                i.task_id
                for i, ok in zip(leaves, left, strict=True)
                if not ok and i.dropped is not None
            )
        for task_id in lost:
            log.warning("task %s: no longer merged where its group said; left alone", task_id)
        return lost

    async def _kept(
        self,
        wave: Sequence[Candidate],
        now: float,
        declined: set[tuple[str, str]],
        facts: dict[str, SubscriberFacts],
        w: Writes,
        j: Judging,
        reached: Mapping[str, SuppressReason] | None = None,
        sealed: Mapping[str, float | None] | None = None,
        moved_on: Mapping[str, Mapping[str, str]] | None = None,
        held: Held | None = None,
    ) -> list[Route]:
        """The moments of each candidate still worth sending (`_keep`), as routes. Each one
        that is not is counted once and leaves for good: a merged one its carrier's group
        (its entry `X<reason>`), the carrier's own its entry (dropped), the others then
        going on as a group of their own under their lead's id. Kept in the group, an
        expired moment was counted again at every release (every 15 minutes while a
        suspended line held the group) and could still lead the task sent.
        A task that may have gone out under its id (`sealed`: re-driven,
        `sealed_by_redrive`, or parked by a re-drive, `redriven:<id>`), its merged moments
        with it, goes out again as it went or not at all (`sealed_moment`): the same id
        carries the same body, which a decline reads and a consumer that acted on the
        first copy drops as a repeat. `held`: a re-drive's or a release's, whose moves out
        of a group are fenced by it (`_leave`)."""
        sealed = sealed or {}
        routes: list[Route] = []
        leaves: list[Leave] = []
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        if at.timestamp() > now:
            # Rounded up to the microsecond: a task judged due at `at` (`rejudged`) was
            # not due at `now`, parked again for that microsecond (a deferral counted
            # again) and went a release later.
            at -= dt.timedelta(microseconds=1)
        for c in wave:
            raw = c.stored()
            kept: list[ServiceTask] = []
            moved = False
            own: tuple[ServiceTask, str] | None = None  # the ledger's drop reason
            tasks = c.tasks if c.fresh else [j.gates.rejudged(t, at) for t in c.tasks]
            seal = c.carrier_id in sealed and not c.lost_own
            marks = (moved_on or {}).get(c.carrier_id, {})
            if seal:  # its carrier judged first: its moments go as it goes
                tasks = sorted(tasks, key=lambda t: t.task_id != c.carrier_id)
            # Not the engine's fresh tasks (its gates judged the opt-outs and the line
            # just now): one that waited, or was re-driven, is dropped when the latest
            # profile opted out of its channel, or closed the line, as the gates drop it;
            # and any, fresh too, when it would go out on a fallback opted out of (its
            # own channel not worked: `worked`).
            # `_read_for` read their facts.
            waited_ = not (c.fresh and c.deferral_counted)
            for t in tasks:
                if c.lost_own and t.task_id == c.carrier_id:
                    own = (t, "lost")  # not a moment of its own: not counted
                    continue
                reason: SuppressReason | None = None
                if seal and t.task_id != c.carrier_id:
                    reason = sealed_moment(own)
                    if reason is None and own is None:
                        went_as = as_it_went(t, marks)  # as it went out
                        moved = moved or went_as.channel != t.channel
                        kept.append(went_as)
                        continue
                if reason is None:
                    reason = self._keep(t, now, declined, facts, j.policy, reached)
                seen = facts.get(t.subscriber_id) if waited_ else None
                if reason is None and seal and t.task_id == c.carrier_id:
                    # Judged as the task it went out as: its moments on the channels they
                    # went out on (`as_it_went`), opted out of by the merged task's
                    # channel, its lead's: an opt-out of its own moment's channel, when
                    # another moment leads it, withdraws nothing.
                    went = merge_tasks(c.carrier_id, [as_it_went(m, marks) for m in tasks])
                    if opted_out(went, seen):
                        reason = SuppressReason.OPT_OUT
                    elif line_closed(t, seen):
                        reason = SuppressReason.CLOSED
                    else:
                        routed = as_it_went(t, marks)
                        moved = moved or routed.channel != t.channel
                        kept.append(routed)
                        continue
                if reason is None and opted_out(t, seen):
                    reason = SuppressReason.OPT_OUT
                if reason is None and line_closed(t, seen):
                    reason = SuppressReason.CLOSED
                if reason is None:
                    made_for = t.channel
                    t, reason = j.gates.worked(t, now)
                    moved = moved or t.channel != made_for
                    if (
                        reason is None
                        and t.channel != made_for
                        and opted_out(t, facts.get(t.subscriber_id))
                    ):
                        reason = SuppressReason.OPT_OUT
                if reason is None:
                    kept.append(t)
                    continue
                self._gone(c, t, reason, w)
                if t.task_id == c.carrier_id:
                    own = (t, reason)
                else:
                    until = t.expires_at.timestamp()
                    # Its cooldown kept (`_gone`): marked so that its batch read again
                    # keeps it too (`Leave.went_out`, `_dropped_before`).
                    leaves.append(
                        Leave(
                            c.carrier_id,
                            t.task_id,
                            raw[t.task_id],
                            reason,
                            keep_until=until,
                            went_out=w.keeps_cooldowns(c.carrier_id),
                        )
                    )
            if own is None:
                task = merge_tasks(c.carrier_id, kept)
                routes.append(Route(c, c.carrier_id, kept, task, moved))
                continue
            w.drop(c.carrier_id, own[1], own[0].expires_at)
            if kept:
                # A carrier that may have gone out with them inside, withdrawn (or one a
                # leave so marked, dropped): its moments go on under their lead's id, marked
                # as a leave marks it (`Leave.went_out`, `L<time>`) so that a later drop
                # keeps their cooldowns; not as a re-drive's claim marks one: the lead's id
                # never went out, and read so its release sealed it, dropping the others
                # with a declined lead though their only copy was withdrawn. Unmarked, its
                # release dropping it gave them back.
                lead = lead_of(kept)
                kept = [waited(t, own[0]) if t is lead else t for t in kept]
                leaves += [
                    Leave(
                        c.carrier_id,
                        t.task_id,
                        raw[t.task_id],
                        to=lead.task_id,
                        carries=task_bytes(t) if t.task_id == lead.task_id else b"",
                        went_out=t.task_id == lead.task_id and w.keeps_cooldowns(c.carrier_id),
                        # judged sendable now, by its last send (`_keep`): marked so
                        went_at=now,
                    )
                    for t in kept
                ]
                routes.append(Route(c, lead.task_id, kept, merge_tasks(lead.task_id, kept), moved))
        await self._owed.owe(w, "" if held is None else held.token)
        lost = await self._leave(leaves, held, w.owed, w.unwritten)
        return [r for r in routes if r.carrier_id not in lost]

    async def _join(self, routes: list[Route], now: float, gates: TimeGates) -> list[Route]:
        """Merge each fresh task into its subscriber's waiting task, if one is open and the
        merge holds neither much longer than alone (`TimeGates.join_bounds`); the routes left (the
        tasks that did not join)."""
        fresh = [r.task for r in routes if r.c.fresh]
        if not fresh:
            return routes
        items = [
            Joining(
                t.task_id,
                t.subscriber_id,
                self._payloads.unless_stored(t),
                *bounds,
                rank_score(r.moments),
            )
            for r in routes
            if r.c.fresh
            for t in [r.task]
            for bounds in [gates.join_bounds(t, now, r.c.deferral_counted and not r.moved)]
        ]
        carriers = await self._redis(lambda: self.deferral.join_many(items), "merging")
        joined = {t.task_id for t, carrier in zip(fresh, carriers, strict=True) if carrier}
        for task in fresh:
            if task.task_id in joined:
                self.dm.merged.labels(task.moment.type).inc()
        return [r for r in routes if r.task.task_id not in joined]

    async def _write(self, w: Writes, j: Judging, held: Held | None = None) -> None:
        """A wave's last step, before its tasks are published: the channels its tasks'
        moments were moved to (`Writes.channels_moved`: a re-drive sends each as it went,
        `as_it_went`), contacts given back or moved, then tasks parked, then dropped.
        `held`: a re-drive's or a release's, whose parks and drops are written on entries
        still its own only (`Held`): one another worker's re-drive claimed since (this
        one stalled past the grace period) is that worker's, and written after its fence
        a drop or park recorded a task it sent as dropped, or parked it to go out again."""
        if w.channels_moved:
            moved = w.channels_moved
            await self._redis(lambda: self.ledger.mark_moved(moved), "marking moved channels")
        await j.caps.write(w)
        if w.parks:
            window = j.policy.merge.window.total_seconds()
            slots = [parked_slot(p) for p in w.parks]
            items = [
                parking(p, slot, self._payloads.unless_stored(slot), w.now, window)
                for p, slot in zip(w.parks, slots, strict=True)
            ]
            timetable = w.timetable
            parked = await self._redis(
                lambda: self.deferral.park_many(items, timetable, held), "deferring a task"
            )
            for p, slot, ok in zip(w.parks, slots, parked, strict=True):
                if ok:
                    self._payloads.stored(slot)
                if ok and p.count:
                    self.metrics.deferred.labels(p.reason).inc()
            refused = [p for p, ok in zip(w.parks, parked, strict=True) if not ok]
            if refused:
                w.raced += await self._erased_since(refused)
        if w.drops:
            written = await self._redis(
                lambda: self.ledger.drop_many(w.drops, w.drops_expire, held), "dropping"
            )
            w.unwritten.update(i for (i, _), ok in zip(w.drops, written, strict=True) if not ok)

    async def _erased_since(self, parks: Sequence[Park]) -> list[str]:
        """The entries of the refused `parks` whose subscriber a tombstone erased at or
        after the park's `made` (the facts read again): the park refuses for nothing else
        but an entry no longer this worker's."""
        subs = list(dict.fromkeys(p.slot.subscriber_id for p in parks))
        got = await self._redis(lambda: self.facts.get_many(subs), "reading erasures")
        erased = {s: f.forgotten_at for s, f in zip(subs, got, strict=True)}
        return [
            p.slot.task_id
            for p in parks
            if p.made is not None
            and (at := erased[p.slot.subscriber_id]) is not None
            and p.made <= at
        ]

    async def _send(
        self,
        tasks: list[ServiceTask],
        fresh: Mapping[str, float] | None = None,
        produce: bool = True,
        sent_at: Mapping[str, float] | None = None,
        held: Held | None = None,
    ) -> None:
        """Publish `tasks`, then confirm them; those the confirm finds void (`_void`) are
        withdrawn. `fresh`: the engine's fresh tasks among them, by id, with when they
        were made as a tombstone's mark is compared with: when their batch began
        dispatching, after its own tombstones were recorded, which do not make them void;
        one another worker recorded after that (the partition's next owner, while this
        revoked one still publishes) does. `produce` False: published already (answered
        while pending, `_confirm_answered`), confirmed only, counted published (its
        worker died before counting it), its time to publish not observed (unknown);
        `sent_at`: when those went out, as best known, by id (else now). `held`: a
        re-drive's or a release's claim, fenced just before (`_fenced`): renewed while the
        produce and the confirm run (`_keep_claim`), so that a produce retried past the
        grace period (the broker away) is not decided again by another worker meanwhile."""
        if not tasks:
            return
        if held is None or not produce:
            await self._publish(tasks, fresh, produce, sent_at)
            return
        lost: set[str] = set()
        keeping = asyncio.ensure_future(self._keep_claim([t.task_id for t in tasks], held, lost))
        try:
            await self._publish(tasks, fresh, produce, sent_at, lost)
        finally:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping

    async def _keep_claim(self, ids: Sequence[str], held: Held, lost: set[str]) -> None:
        """Renew `held`'s claim of `ids` (`Ledger.fence`: each still its own re-scored now)
        every third of the grace period (`lease_s`) until cancelled; those another
        worker's re-drive claimed meanwhile (this worker could not renew in time: its
        Redis calls retried, its loop stalled) go into `lost`, and are not produced again
        (`_publish`)."""
        period = max(LEASE_RENEW_MIN_S, self.lease_s / 3)
        while True:
            await self.sleep(period)
            live = [i for i in ids if i not in lost]
            if not live:
                return
            renew = functools.partial(
                self.ledger.fence,
                [i for i in live if i in held.claimed],
                [i for i in live if i not in held.claimed],
                held.token,
            )
            mine = await self._redis(renew, "keeping the claim of tasks being published")
            lost.update(i for i in live if i not in mine)

    async def _publish(
        self,
        tasks: list[ServiceTask],
        fresh: Mapping[str, float] | None,
        produce: bool,
        sent_at: Mapping[str, float] | None,
        lost: set[str] | None = None,
    ) -> None:
        """`_send`'s work. `lost`: ids of a claim kept while this runs (`_keep_claim`)
        that another worker's re-drive claimed since: a produce tried again leaves them
        out, and only what the produce that went through held is confirmed; the others,
        maybe gone out in a try that failed, are that worker's, which decides them as
        tasks that may have gone out (re-driven)."""
        if produce:
            headers: Headers = [("content-type", b"application/json")]
            payloads = {t.task_id: self._payloads.of(published(t)) for t in tasks}
            messages: dict[str, Message] = {
                t.task_id: (self.topic, t.subscriber_id.encode(), payloads[t.task_id], headers)
                for t in tasks
            }
            gone = lost if lost is not None else set()
            sending: list[str] = []

            def produce_them() -> Awaitable[None]:
                sending[:] = [i for i in messages if i not in gone]
                return produce_all(self.producer, [messages[i] for i in sending])

            await with_retry(
                produce_them,
                Dependency.KAFKA,
                self.metrics,
                "publishing tasks",
                needed_topic=self.topic,  # deleted since the start: held, named, not an outage
                producer=self.producer,  # asked afresh whether the topic is still there
            )
            if len(sending) < len(tasks):
                left = [t.task_id for t in tasks if t.task_id not in sending]
                log.warning(
                    "%d re-driven or released task(s) claimed by another worker's re-drive "
                    "while their produce was retried (this worker could not renew its "
                    "claim in time): not published again here, left to that worker "
                    "(first: %r)",
                    len(left),
                    left[0],
                )
                kept = set(sending)
                tasks = [t for t in tasks if t.task_id in kept]
                if not tasks:
                    return
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        ids = [t.task_id for t in tasks]
        went = sent_at or {}
        meta = {t.task_id: sent_meta(t, went.get(t.task_id, now.timestamp())) for t in tasks}
        # Each task awaits its outcome until it expires (and the grace after: see
        # `expire_unanswered`): one ZADD in the confirm's script.
        awaiting = {t.task_id: (str(t.channel), t.expires_at.timestamp()) for t in tasks}
        # The body an outcome's retry is made from keeps what dispatch judges it by (the
        # channels its quiet hours hold, `published` leaves them out): made from the
        # published task, a retry of a call exempt from quiet hours carried none, and
        # falling back to SMS it went out inside them.
        bodies = {t.task_id: self._body(t, now) for t in tasks}
        # And its subscriber's published index until it expires: what a later opt-out,
        # closed line or tombstone withdraws (`sinks.withdrawals`).
        subs = {t.task_id: t.subscriber_id for t in tasks}
        # Looked at against the subscriber's facts in the same step: a profile change
        # recorded since this decision read them, which its batch may have looked the
        # index up for before this confirm, makes the task void. With no withdrawals topic
        # too: a tombstone's erasure may have run since, and the task is then confirmed
        # with no body and no index entry (`_void`), its notice alone left out.
        fresh = fresh or {}
        made = {t.task_id: fresh[t.task_id] if t.task_id in fresh else made_at(t) for t in tasks}
        void = await self._redis(
            lambda: self.ledger.confirm(ids, meta, bodies, awaiting, subs, made),
            "confirming published tasks",
        )
        # Counted once a label pair (`labels` is ~10 calls), not once a task.
        for (moment_type, channel), n in Counter((t.moment.type, t.channel) for t in tasks).items():
            self.metrics.published.labels(moment_type, channel.value).inc(n)
        if produce:
            for task in tasks:
                seconds = max(0.0, (now - task.triggered_at).total_seconds())
                self.metrics.event_to_task.observe(seconds)
        if void:
            voided = [t for t in tasks if t.task_id in void]
            await self._void(voided, void, meta, bodies, made)

    def _body(self, task: ServiceTask, now: dt.datetime) -> tuple[bytes, int]:
        """The task's body for outcomes, and the seconds to keep it: a day past its
        expiry, and at least a second (a task confirmed long after it went out,
        `_confirm_answered`, may be past its expiry and the grace)."""
        keep = int((task.expires_at - now).total_seconds()) + _BODY_GRACE_S
        return self._payloads.of(task), max(1, keep)

    async def _void(
        self,
        tasks: Sequence[ServiceTask],
        void: Voided,
        meta: Mapping[str, bytes],
        bodies: Mapping[str, tuple[bytes, int]],
        made: Mapping[str, float],
    ) -> None:
        """Tasks just published that a profile change recorded since their decision read
        the facts made void (`Ledger.confirm`, left pending): withdrawn, then confirmed
        (nothing more is expected of them: in no unanswered index). Their meta and body
        are kept for an outcome sent all the same, the task in its subscriber's published
        index as a withdrawn one, so that a later tombstone erases the body; but for a
        task whose subscriber a tombstone erased: an outcome of it acts on nothing, and
        written after the erasure its body would be their payload kept in no index a
        tombstone reads; nor for one whose tombstone came after the withdrawal (that
        confirm looks at the mark in the same step: the tombstone's erasure may have run
        already). A crash in between leaves them pending, marked void: their re-drive
        takes this up again (`_resume_void`)."""
        await self.withdrawals.withdraw_voided([(t, *void[t.task_id]) for t in tasks])
        ids = [t.task_id for t in tasks]
        kept = {i: meta[i] for i in ids}
        live = [t for t in tasks if void[t.task_id][0] is not WithdrawReason.FORGOTTEN]
        held = {t.task_id: bodies[t.task_id] for t in live}
        expiring = {t.task_id: (t.channel.value, t.expires_at.timestamp()) for t in live}
        subs = {t.task_id: t.subscriber_id for t in live}
        looks = {t.task_id: made[t.task_id] for t in live}
        # One a tombstone erased since its withdrawal is confirmed by the same step with no
        # body and in no index (left pending for another confirm, a crash before that one
        # had its re-drive withdraw it again, `forgotten`).
        await self._redis(
            lambda: self.ledger.confirm(
                ids, kept, held, expiring, subs, looks, withdrawn=held.keys()
            ),
            "confirming withdrawn tasks",
        )
