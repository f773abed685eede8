"""The time gates of dispatch, all judged by one policy's clock: a task's channel hours
(`hours:`), the quiet hours its moments carry, the suspended line it waits for, and the
waits dispatch parked a task for, judged again by the hours in force (docs/
architecture.md, "Dispatch: deferral, capacity, contact policy, merge window, outcomes")."""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Sequence

from moments.models import Deferral, ServiceTask
from moments.records import SuppressReason
from sinks.capacity import local_day
from sinks.contact import merge_tasks
from sinks.hours import Opening, first_allowed, quiet_opens
from sinks.policy import DispatchPolicy, OverflowPolicy
from sinks.relevance import SubscriberFacts, reactivated
from sinks.routes import Route, Writes, held_for_line, line_held_since, released

SUSPENDED_POLL_S = 3600.0
"""How often a task waiting for its suspended line is looked at: a safety net only. The
profile update that reactivates the line wakes its tasks (`record_facts`), and a task
whose decision read the facts before that update and is parked after the wake is due at
once by its park (`Parking.active_after`). The look finds what no wake reaches: a task
an earlier version parked without the line's index (`line:<id>`), or a wake lost with
Redis's last writes in a failover. Every 15 minutes, the looks were 70% of a simulated
week's releases; hourly, such a task is at most an hour late."""
SUSPENDED_LAST_LOOK_S = 60.0
"""The last look at a task whose line stays suspended is this long before it must go
(`DispatchPolicy.last_send`), where it is dropped (`suppressed{reason="suspended"}`):
released a few timer ticks late (10 s each by default), it is still judged before it is
expired."""

Drop = Callable[[Route, SuppressReason, Writes], None]
"""A route dropped whole (`TaskSink._drop_route`)."""


class TimeGates:
    """The gates of one dispatch policy (`TaskSink.use_policy` makes one a reload); `drop`
    drops a route they refuse for good."""

    def __init__(self, policy: DispatchPolicy, drop: Drop) -> None:
        self.policy = policy
        self.drop = drop

    def rejudged(self, task: ServiceTask, at: dt.datetime) -> ServiceTask:
        """A released task that dispatch parked for its channel's hours or the next day,
        judged by the policy in force (`Deferrals.rejudge` woke it when the hours,
        `next_day_at` or zone are not those it was parked by). Its `deliver_after` was
        dispatch's own wait, not gating's (which had passed when it was parked):

        - for its channel's hours, released before the opening it was given, it is judged
          again now, by the hours and the quiet hours in force, instead of parked for the
          old opening again;
        - deferred by capacity, it goes at the `next_day_at` in force on the local day it
          was deferred to, or now when that has come (or would come too late for it).
          Parked for 09:00 and `next_day_at` now 07:00, it waited until 09:00; now 11:00,
          it went at 09:00."""
        deferred = task.deferred
        if deferred is None or task.deliver_after <= at:
            # Released when it was due, not woken: what it waited for is over (a task a
            # version before `nextday` parked by capacity to another time than
            # `next_day_at`, released on time, was parked again until that hour).
            return task
        until = at
        if deferred.reason == "capacity":
            zone = self.policy.zone
            day = local_day(task.deliver_after, zone)
            moved = dt.datetime.combine(day, self.policy.next_day_at, tzinfo=zone)
            if moved == task.deliver_after:
                return task
            if moved > at and moved.timestamp() <= self.policy.last_send(task):
                until = moved
        elif deferred.reason != "channel_hours":
            return task
        update = {"deferred": Deferral(reason=deferred.reason, until=until), "deliver_after": until}
        return task.model_copy(update=update)

    def join_bounds(
        self, task: ServiceTask, now: float, gated: bool
    ) -> tuple[float | None, float | None]:
        """Which waiting task a fresh task may join (`Joining`), by when it could go itself
        (`at`: its `deliver_after`, its channel's hours, its quiet hours): one due at most a
        merge window before `at` (joined, it would hold that one's moments until `at`),
        and one due at most a window after `at`, unless that one waits for the
        subscriber's contact or frequency cap (`Parking.waits_for_cap`: the cap holds the
        task alone as well) or the task's channel is held for merging anyway
        (`merge.hold_channels`). No bound for a task waiting for its suspended line, or
        one that never goes (dropped when it comes up, joined or not). The quiet hours of
        a task the engine's gates judged just now (`gated`) allow its `deliver_after`, as
        `_route_wave` takes them to: walked again for every fresh task, they cost an
        eighth of dispatch's CPU per task (benchmarks/dispatch_cpu.py), for the few tasks
        whose subscriber has a waiting task.

        Unbounded, an SMS due now joined the customer's call held two hours for the call
        centre's opening and went out in the call, then; and a call made at night joined
        the SMS waiting for the end of quiet hours at 08:00 and held it until the centre
        opened. Bounded only for a task waiting for its channel's hours, an SMS due now
        joined the call the full call pool had put off to the next day (`next_day_at`),
        or an unreachable call's retry, and waited for it: a low-balance SMS held 18
        hours. A task waiting for quiet hours is joined by one whose own quiet hours end
        then (`at`)."""
        if task.deferred is not None and task.deferred.reason == "suspended":
            return None, None
        start = max(now, task.deliver_after.timestamp())
        at = dt.datetime.fromtimestamp(start, dt.UTC)
        opens = self.opening(task, at, [] if gated else [functools.partial(quiet_opens, task)])
        if opens is None:
            return None, None
        window = self.policy.merge.window.total_seconds()
        # Nothing puts it off: `start` itself, not as a datetime's microseconds. Rounded
        # down, the bound came under the release of the call its batch held for the
        # window (`now` + window) and the SMS due now went out alone.
        earliest = start if opens == at else opens.timestamp()
        # Held for the window anyway: a retry or a window of 0 is not (`MergePolicy.holds`);
        # unbounded, a late-read retry of a call due now joined an SMS waiting 10 hours.
        held = self.policy.merge.holds(task.channel, task.attempt)
        return earliest - window, None if held else earliest + window

    def suspended(self, r: Route, now: float, facts: dict[str, SubscriberFacts], w: Writes) -> bool:
        """Gating deferred a moment of this task for a suspended line (`line_held_since`,
        whatever the merged task's deferral), or the task waited for something else (quiet
        hours, channel hours, the contact cap, capacity, a crash...) and the latest
        profile update suspended the line meanwhile: it waits until a profile update
        says the line is active (which wakes it; looked at again every `SUSPENDED_POLL_S`
        as well), or is dropped at its last look, `SUSPENDED_LAST_LOOK_S` before it must
        go. The engine's fresh tasks are judged by the gates, which saw the line just now.
        Once active, it goes on like any task held back (`quiet` first), released now:
        gating gave it `deliver_after` the time it could have gone had the line been
        active and `deferred.until` its expiry, and it was published saying so hours
        later (a `deliver_after` inside its quiet hours, an `until` after it went)."""
        task = r.task
        since = line_held_since(r)
        seen = facts.get(task.subscriber_id)
        waited = not (r.c.fresh and r.c.deferral_counted)
        if waited and seen is not None and seen.line_suspended:
            # Suspended after it was made (or again after a reactivation that released
            # it): it waits as gating's task for a suspended line does, saying so, and
            # counted once as deferred for the line. Its wake compares the suspension.
            assert seen.suspended_at is not None  # line_suspended says so
            line = max(seen.suspended_at, since.timestamp() if since is not None else -math.inf)
            count = since is None
            if count:
                r.moments = [held_for_line(m) for m in r.moments]
                r.task = merge_tasks(r.carrier_id, r.moments)
        elif since is None:
            return False
        elif reactivated(since, facts[task.subscriber_id]):
            if task.deferred is not None and task.deferred.reason == "suspended":
                # The group waited for the line, and says it went now. One that waited
                # for something else (a moment released from the line before, its
                # payload in the group still gating's) keeps what it says.
                at = dt.datetime.fromtimestamp(now, dt.UTC)
                r.moments = [released(m, at) for m in r.moments]
                r.task = merge_tasks(r.carrier_id, r.moments)
            return False
        else:
            line, count = since.timestamp(), False
        again = min(now + SUSPENDED_POLL_S, self.policy.last_send(task) - SUSPENDED_LAST_LOOK_S)
        if again > now:
            w.park(r, again, "suspended", count=count, line_since=line)
        else:
            self.drop(r, SuppressReason.SUSPENDED, w)
        return True

    def quiet(self, r: Route, now: float, w: Writes) -> bool:
        """`now` is inside the quiet hours the task carries: it waits for their end, or is
        dropped as expired when they outlast it. Gating judged them when it made the task;
        whatever held it since (merge window, contact cap, capacity, a retry's wait, a
        suspended line, a crash) may bring it here at another hour.

        A merged task also waits while any of its moments' quiet hours hold, when they end
        before it must go: capacity may send a moment on its own channel (its lead's
        refused), and such a moment went out inside its own quiet hours when only the
        lead's were judged (an SMS at 08:18 in Shanghai, its group led by a call made in
        Tokyo; dispatch re-check)."""
        task = r.task
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        last = self.policy.last_send(task)
        lead = quiet_opens(task, at)
        if lead is None or lead.timestamp() > last:  # quiet until it expires, as gating says
            self.drop(r, SuppressReason.EXPIRED, w)
            return True
        until = max(
            [lead, *(o for m in r.moments if (o := quiet_opens(m, at)) and o.timestamp() <= last)]
        )
        if until <= at:
            return False
        w.park(r, until.timestamp(), "quiet_hours")
        return True

    def opening(
        self, task: ServiceTask, at: dt.datetime, quiet: Sequence[Opening]
    ) -> dt.datetime | None:
        """When the task's channel is worked (`hours:`) and the `quiet` hours allow, from
        `at`; None when never. A channel not listed is worked all day."""
        hours = self.policy.hours_for(task.channel)
        if hours is None:
            return first_allowed(at, quiet) if quiet else at
        zone = self.policy.zone
        return first_allowed(at, [lambda t: hours.opens(t, zone), *quiet])

    def worked(self, task: ServiceTask, now: float) -> tuple[ServiceTask, SuppressReason | None]:
        """The task, or on its rule's fallback channel (`overflow:`) when its own is not
        worked, its quiet hours allowing, before it must go and the fallback's is;
        expired when neither is. Judged per moment, before merging and waiting, so a call
        made at 00:30 that expires at 08:00 is an SMS now rather than dropped at 09:00.
        A channel the policy gives no hours nor days off is worked all day, whatever the
        other channels' (`quiet` judges its quiet hours alone): asked here, its quiet hours
        outlasting it moved it to its fallback whenever another channel had hours or a
        day off, and dropped it as expired under a policy with none."""
        if self.policy.always_worked or self.policy.hours_for(task.channel) is None:
            return task, None
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        quiet = [functools.partial(quiet_opens, task)]
        opens = self.opening(task, at, quiet)
        if opens is not None and opens.timestamp() <= self.policy.last_send(task):
            return task, None
        overflow = self.policy.overflow_for(task.moment.rule_id)
        if overflow.policy is OverflowPolicy.FALLBACK and overflow.channel not in (
            None,
            task.channel,
        ):
            other = task.model_copy(update={"channel": overflow.channel})
            opens = self.opening(other, at, [functools.partial(quiet_opens, other)])
            if opens is not None and opens.timestamp() <= self.policy.last_send(other):
                return other, None
        return task, SuppressReason.EXPIRED

    def off_hours(self, r: Route, now: float, w: Writes, went_out: bool = False) -> bool:
        """The task's channel is not worked now (`hours:`): it waits for the first instant
        its channel is worked and its moments' quiet hours allow (as `quiet` judges them),
        or is dropped as expired when that comes too late (`worked` let each moment
        through, so only a group whose moments' hours do not meet in time).

        `went_out`: the task may have gone out under its id (`sinks.routes.as_it_went`),
        sent on this channel by the decision it repeats, and its quiet hours allow now
        (`quiet` judged them first): when the opening comes too late it goes now (False),
        as that decision sent it. Dropped, it was lost where its worker died before the publish
        (the re-drive cannot tell); sent, the consumer has the task its first decision
        published inside the hours, late by the grace period, or a repeat it drops."""
        task = r.task
        if self.policy.hours_for(task.channel) is None:
            return False
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        last = self.policy.last_send(task)

        def member(m: ServiceTask) -> Opening:
            def opens(instant: dt.datetime) -> dt.datetime:
                o = quiet_opens(m, instant)
                return o if o is not None and o.timestamp() <= last else instant

            return opens

        quiet: list[Opening] = [functools.partial(quiet_opens, task), *map(member, r.moments)]
        opens = self.opening(task, at, quiet)
        if opens is not None and opens <= at:
            return False
        if opens is None or opens.timestamp() > last:
            if went_out:
                return False
            self.drop(r, SuppressReason.EXPIRED, w)
        else:
            w.park(r, opens.timestamp(), "channel_hours")
        return True
