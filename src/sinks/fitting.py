"""Capacity for what a wave sends, in the wave's order, and what a route its channel has
no room for becomes: each moment on that channel takes its own rule's overflow (docs/
architecture.md, "Capacity")."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping, Sequence

from moments.models import Channel, ServiceTask
from moments.records import SuppressReason
from sinks.capacity import CapacityLimiter, Slot, next_day_start
from sinks.contact import merge_tasks
from sinks.hours import Opening, first_allowed, quiet_opens
from sinks.metrics import DispatchMetrics
from sinks.policy import DispatchPolicy, OverflowPolicy
from sinks.retry import Retrying
from sinks.routes import Candidate, Fit, Route, Writes, carrier_bytes, part_id, waited
from sinks.stores import Leave, Slots

Opens = Callable[[ServiceTask, dt.datetime, Sequence[Opening]], dt.datetime | None]
"""When a task's channel is worked and the given quiet hours allow (`TimeGates.opening`)."""
Gone = Callable[[Candidate, ServiceTask, SuppressReason, Writes], None]
"""A moment dropped for good, counted (`TaskSink._gone`)."""


class CapacityFitting:
    """The capacity of one dispatch policy (`TaskSink.use_policy` makes one a reload), over
    the sink's slots."""

    def __init__(
        self,
        slots: Slots,
        policy: DispatchPolicy,
        opening: Opens,
        gone: Gone,
        dm: DispatchMetrics,
        redis: Retrying,
    ) -> None:
        self.policy = policy
        self.capacity = CapacityLimiter(slots, policy)
        self.opening = opening
        self.gone = gone
        self.dm = dm
        self._redis = redis
        self._retired = False

    def retire(self) -> None:
        """Another policy is in force (`TaskSink.use_policy`, which clears the capacity
        gauge): a decision still under way on this one takes its capacity but sets no
        figure, else a pool the new policy has not kept it for good, and a raised one its
        old figure until its next task."""
        self._retired = True

    async def within(
        self,
        routes: Sequence[Route],
        now: float,
        opted_out: Callable[[str], frozenset[str]] = lambda _: frozenset(),
        went: Mapping[str, float | None] | None = None,
    ) -> list[Fit]:
        """What capacity makes of each route (`fit`); `opted_out`: the channels a
        subscriber opted out of (no fallback to them).

        `went`: the routes that may have gone out under their ids (re-driven, or parked
        by a re-drive), by when the decision they repeat was taken (None: not known), on
        the channels they went out on (`sinks.routes.as_it_went`: a fallback they went out
        on is not fitted to the pool that refused them, whatever its limit now). A
        slot is taken once per task id, so a re-drive the same day finds the slot its
        first decision took; on a later day, or under a lowered limit, the group was
        moved to its fallback channel or split, its id going out again with other
        content. So a re-driven one is fitted as of that decision, on its day (its slot,
        or the same refusal and the same overflow: what went out); one a re-drive parked
        (its first decision's time not kept) is sent whole on its channel when its pool
        is full, not counted in it: over that day's limit when its first decision had no
        room either (it dropped, deferred or moved the task and its worker died before
        writing it), a rare crash's price against a different task under a sent id.

        Slots are taken in the routes' order, one store call for a run of routes; a run
        ends after a merged group or a task whose rule falls back to another channel, as
        their second take must come before the next route's first, and a route fitted as
        of its first decision is a run of its own."""
        went = went or {}
        out: list[Fit] = []
        start = 0
        while start < len(routes):
            end = start
            if went.get(routes[start].carrier_id) is None:
                while (
                    end < len(routes) - 1
                    and not self.takes_again(routes[end])
                    and went.get(routes[end + 1].carrier_id) is None
                ):
                    end += 1
            first = went.get(routes[start].carrier_id)
            at = dt.datetime.fromtimestamp(now if first is None else first, dt.UTC)
            run = [r.task for r in routes[start : end + 1]]
            requests = [(t.task_id, t.region, t.channel, t.priority) for t in run]
            take = functools.partial(self.capacity.take_many, requests, at)
            slots = await self._redis(take, "taking capacity")
            for r, slot in zip(routes[start : end + 1], slots, strict=True):
                self.capacity_left(r.task, slot)
                whole = r.carrier_id in went and went[r.carrier_id] is None
                out.append(
                    Fit(sent=r.task, send=r.moments)
                    if slot.taken or whole
                    else await self.fit(r, at, opted_out(r.task.subscriber_id))
                )
            start = end + 1
        return out

    def takes_again(self, r: Route) -> bool:
        overflow = self.policy.overflow_for(r.task.moment.rule_id)
        falls_back = overflow.policy is OverflowPolicy.FALLBACK and overflow.channel is not None
        return falls_back or len(r.moments) > 1

    async def fit(self, r: Route, at: dt.datetime, opted_out: frozenset[str] = frozenset()) -> Fit:
        """A route its channel had no slot for. The moments on that channel take their own
        rule's overflow: `fallback` keeps one in the group on the other channel (if not
        refused already), `defer` waits for the next day, `drop` (or a wait past its
        expiry) drops it; the others, led by the most personal channel left, try again.
        A merged group was refused as a whole for its lead's channel, under its lead's
        rule: a full manager pool dropped the complaint callbacks that had joined manager
        tasks, their own fallback to SMS unused, counted as the manager rule's.
        A fallback the customer opted out of (`opted_out`: the gates judged only the
        channel a moment was made for) is none: the moment waits or is dropped."""
        over: list[ServiceTask] = []
        fit = await self._fit(r, at, opted_out, over)
        # Each moment whose own channel was refused, by what became of it in this decision
        # (not its rule's policy): `fallback` only when it goes out on its fallback channel
        # now; one waiting (for the next day, or for its fallback's hours or quiet hours)
        # `defer`, judged again and counted again when it is released; one dropped (its
        # wait past its expiry) `drop`.
        waits = {m.task_id for m in fit.wait}
        dropped = {m.task_id for m in fit.dropped}
        for m in over:
            applied = (
                OverflowPolicy.DEFER
                if m.task_id in waits
                else OverflowPolicy.DROP
                if m.task_id in dropped
                else OverflowPolicy.FALLBACK
            )
            if applied is OverflowPolicy.DROP and m.counted:
                continue  # nor is its drop counted (`TaskSink._gone`): its first task's was
            self.dm.overflow.labels(m.moment.type, applied.value).inc()
        return fit

    async def _fit(
        self, r: Route, at: dt.datetime, opted_out: frozenset[str], over: list[ServiceTask]
    ) -> Fit:
        """`fit`, with the moments whose own channel was refused added to `over`."""
        later = next_day_start(at, self.policy.zone, self.policy.next_day_at).timestamp()
        fit = Fit(later=later)
        own = {m.task_id: m for m in r.moments}
        send, refused = list(r.moments), set[Channel]()
        channel = r.task.channel
        while True:
            refused.add(channel)
            for m in [m for m in send if m.channel == channel]:
                send.remove(m)
                overflow = self.policy.overflow_for(m.moment.rule_id)
                other = overflow.channel if overflow.policy is OverflowPolicy.FALLBACK else None
                if other is not None and other not in refused and other.value not in opted_out:
                    send.append(m.model_copy(update={"channel": other}))
                elif overflow.policy is not OverflowPolicy.DROP and later <= self.policy.last_send(
                    m
                ):
                    fit.wait.append(own[m.task_id])
                else:
                    fit.dropped.append(own[m.task_id])
                if m is own[m.task_id]:  # its own channel refused (once a moment)
                    over.append(m)
            if not send:
                return fit
            task = merge_tasks(part_id(r.carrier_id, send), send)
            if task.task_id != r.carrier_id:
                task = waited(task, r.task)
            quiet = [
                functools.partial(quiet_opens, m)
                for m in send
                if m.channel != own[m.task_id].channel
            ]
            opens = self.opening(task, at, quiet)
            if opens is None or opens > at:
                # Its channel is not worked now (`hours:`), or the quiet hours of a moment
                # moved to it hold it (they were judged for the channel it was made for):
                # the part waits for both (with what waits for the next day, judged again
                # then), or, when that comes too late, its channel is refused like a full
                # one.
                if opens is not None and opens.timestamp() <= self.policy.last_send(task):
                    fit.wait += [own[m.task_id] for m in send]
                    if opens.timestamp() < fit.later:
                        fit.later = opens.timestamp()
                        # The quiet hours' end unless the channel's hours put it later:
                        # then it waits for them (`channel_hours`), indexed, so that a
                        # change of those hours judges it again (`Deferrals.rejudge`).
                        # Told by whether the channel was worked now, a part the quiet
                        # hours held now and the hours after their end waited as
                        # `quiet_hours`, in no index, for the opening of hours changed since.
                        quiet_end = first_allowed(at, quiet) if quiet else at
                        fit.why = "quiet_hours" if opens == quiet_end else "channel_hours"
                    return fit
                channel = task.channel
                continue
            if await self.take(task, at):
                fit.sent, fit.send = task, send
                return fit
            channel = task.channel

    async def take(self, task: ServiceTask, at: dt.datetime) -> bool:
        slot = await self._redis(
            lambda: self.capacity.take(task.task_id, task.region, task.channel, task.priority, at),
            "taking capacity",
        )
        self.capacity_left(task, slot)
        return slot.taken

    def capacity_left(self, task: ServiceTask, slot: Slot) -> None:
        if self._retired:
            return
        if slot.left is not None and slot.pool is not None:  # the policy's regions only
            self.dm.capacity_left.labels(slot.pool, task.channel.value).set(slot.left)

    def split(self, r: Route, fit: Fit, w: Writes, went: float | None = None) -> list[Leave]:
        """The writes for what capacity made of a route (`fit`), and the merged moments
        that leave its group for another entry or for good. Each part goes as `part_id`
        says; the contact the route took is the sent part's, or given back; a moment
        dropped is counted as its own rule's. Out of a route whose moments may have gone
        out inside its candidate's carrier (`Writes.went_out`), a moment dropped and a
        part moved to an id of its own are marked re-driven (`Leave.went_out`), dated by
        the decision that may have sent them: `went`, when the route was fitted as of the
        one a re-drive repeats (`within`), else this one (`Writes.now`)."""
        carrier, sub = r.carrier_id, r.task.subscriber_id
        for m in fit.dropped:
            self.gone(r.c, m, SuppressReason.CAPACITY, w)
        to: dict[str, str] = {}
        if fit.sent is None:
            w.given_back.append((carrier, sub))
        else:
            to |= dict.fromkeys((m.task_id for m in fit.send), fit.sent.task_id)
            if fit.sent.task_id != carrier:
                w.moved.append((carrier, fit.sent.task_id, sub))
        if fit.wait:
            waiting = part_id(carrier, fit.wait)
            to |= dict.fromkeys((m.task_id for m in fit.wait), waiting)
            w.park(
                Route(r.c, waiting, fit.wait, merge_tasks(waiting, fit.wait)),
                fit.later,
                fit.why,
            )
        raw = r.c.stored()
        # Its moments may have gone out inside a carrier (`Writes.went_out`: re-driven, or
        # parked by a re-drive; a withdrawn one's lead, `TaskSink._kept`): a part moved to
        # its own id is marked re-driven as it goes pending, as that lead is, so that its
        # drop, now or at its release, keeps their cooldowns. Unmarked, the part its full
        # pool deferred gave them back when its release dropped it. Dated by the decision
        # that may have sent them: a re-driven route's first (`went`, as it was fitted),
        # not this re-drive's. Dated now, a re-drive past a moment's last send (workers
        # down overnight) marked its part as one that went pending too late to have gone
        # out (`sealed_alone`): its batch read again gave back the cooldown its release's
        # drop had kept (`TaskSink._dropped_before`), and a part that re-drive sent and
        # died before confirming was re-driven unsealed, its other moments sent again.
        went_out = w.keeps_cooldowns(r.c.carrier_id)
        leaves = [
            Leave(
                carrier,
                m.task_id,
                raw[m.task_id],
                to=to[m.task_id],
                carries=carries,
                went_out=went_out and to[m.task_id] == m.task_id,
                went_at=(w.now if went is None else went) if went_out else None,
            )
            for m in fit.send + fit.wait
            if to[m.task_id] != carrier
            for carries in [carrier_bytes(m, to[m.task_id], r.task)]
        ]
        for m in fit.dropped:
            if m.task_id == carrier:
                w.drop(carrier, SuppressReason.CAPACITY, m.expires_at)
            else:
                until = m.expires_at.timestamp()
                leaves.append(
                    Leave(
                        carrier,
                        m.task_id,
                        raw[m.task_id],
                        "capacity",
                        keep_until=until,
                        went_out=went_out,  # its cooldown kept: `gone`
                    )
                )
        return leaves
