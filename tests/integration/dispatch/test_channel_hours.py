"""Channel hours (`hours:` in the dispatch policy) over Redis and the memory stores: a call
made while the call centre is closed is published when it opens (and the customer's
quiet hours allow), one that would expire first falls back or is dropped."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import Any

import pytest

from moments.models import Channel, OutcomeStatus, QuietHours, RiskScore, TaskOutcome
from moments.outcomes import handle_outcomes
from moments.records import RawRecord
from sinks.deferral import DeferralQueue
from sinks.policy import DispatchPolicy
from tests.unit.fakes import Clock

from .conftest import HOUR, NOW, MakeWorker, ids, pinned_clock, published, task

pytestmark = pytest.mark.integration


def opens() -> dt.datetime:
    """The centre opens two hours after the test's `NOW` (to the minute) and works eight
    hours: the sink's clock (the wall clock) finds it closed. Read at each test's start:
    a constant read at collection, an hour or more before some tests run, named hours the
    sink had already reached."""
    return (NOW + 2 * HOUR + dt.timedelta(minutes=1)).replace(second=0)


def closes() -> dt.datetime:
    return opens() + 8 * HOUR


CALL = Channel.OUTBOUND_CALL


def hours_policy(**more: Any) -> DispatchPolicy:
    return DispatchPolicy.model_validate(
        {
            "timezone": "UTC",
            "hours": {"outbound_call": f"{opens():%H:%M}-{closes():%H:%M}"},
            **more,
        }
    )


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def rounding_up(near: float) -> float:
    """Epoch seconds from `near` on whose instant (`datetime.fromtimestamp`, rounded to the
    microsecond) is after them."""
    n = near
    for _ in range(1000):
        if dt.datetime.fromtimestamp(n, dt.UTC).timestamp() > n:
            return n
        n += 0.0000003
    raise AssertionError(f"no clock reading near {near} rounds up")


class TestClosedChannel:
    async def test_a_call_made_at_night_is_published_when_the_centre_opens(
        self, make_worker: MakeWorker
    ) -> None:
        """Its subscriber's second call, minutes later, joins it: one call at the opening."""
        w = make_worker(hours_policy())
        sub = "13700000001"
        first = task("n1", sub=sub, moment_type="callback", channel=CALL)
        second = task(
            "n2",
            sub=sub,
            moment_type="offer",
            channel=CALL,
            triggered=NOW + dt.timedelta(minutes=3),
            deliver_after=NOW + dt.timedelta(minutes=3),
        )
        await w.send(first, second)
        assert [await w.ledger.state(i) for i in ("n1", "n2")] == ["deferred", "merged"]
        assert await w.sink.deferral.due_at("n1") == opens().timestamp()
        assert w.sample("moments_tasks_deferred_total", reason="channel_hours") == 1
        assert await w.sink.release_due(now=opens().timestamp() - 1) == 0
        assert await w.sink.release_due(now=opens().timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["channel"]) == ("n1", "outbound_call")
        assert [r["task_id"] for r in out["related"]] == ["n2"]
        assert out["deferred"]["reason"] == "channel_hours"
        assert instant(out["deferred"]["until"]) == instant(out["deliver_after"]) == opens()
        assert await w.ledger.state("n1") == "sent"

    async def test_it_waits_until_the_customers_quiet_hours_allow_too(
        self, make_worker: MakeWorker
    ) -> None:
        """The customer (UTC+05:00) is quiet from an hour before the opening to three
        hours after it: the first instant both allow is the end of their quiet hours."""
        w = make_worker(hours_policy())
        local = dt.timezone(dt.timedelta(hours=5))
        start = (opens() - HOUR).astimezone(local)
        end = (opens() + 3 * HOUR).astimezone(local)
        quiet = QuietHours(zone="+05:00", windows=[f"{start:%H:%M}-{end:%H:%M}"])
        call = task("q1", sub="13700000002", channel=CALL).model_copy(update={"quiet_hours": quiet})
        await w.send(call)
        both = opens() + 3 * HOUR
        assert await w.sink.deferral.due_at("q1") == both.timestamp()
        assert await w.sink.release_due(now=both.timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert out["deferred"]["reason"] == "channel_hours"
        assert instant(out["deliver_after"]) == both

    async def test_one_that_expires_before_the_opening_falls_back_or_is_dropped_once(
        self, make_worker: MakeWorker
    ) -> None:
        """`callback` falls back to SMS (not held by hours): an SMS now. `offer` has no
        fallback: dropped as expired, counted once, never published."""
        w = make_worker(
            hours_policy(overflow={"callback": {"policy": "fallback", "channel": "sms"}})
        )
        soon = NOW + HOUR
        falls_back = task(
            "f1", sub="13700000003", moment_type="callback", channel=CALL, expires_at=soon
        )
        dropped = task("d1", sub="13700000004", moment_type="offer", channel=CALL, expires_at=soon)
        await w.send(falls_back, dropped)
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["channel"]) == ("f1", "sms")
        assert await w.ledger.state("d1") == "dropped"
        assert await w.sink.release_due(now=opens().timestamp()) == 0
        expired = {"moment_type": "offer", "reason": "expired"}
        assert w.sample("moments_tasks_suppressed_total", **expired) == 1
        assert w.sample("moments_tasks_deferred_total", reason="channel_hours") == 0
        assert ids(await published(w.settings, 1)) == ["f1"]


class TestTheOpeningRanksTheNightsCalls:
    async def test_the_slots_go_by_priority_then_risk_not_by_task_id(
        self, make_worker: MakeWorker
    ) -> None:
        """Three calls held for the opening, two slots that day (no reserved share): the
        complaint callback (priority 1) and the priority-3 call of the customer at higher
        churn risk go; the other priority-3 call, first by task id, waits for the next
        day. The queue released them in task-id order, and the first two took the slots.
        Released two at a time (`release_batch`), the batches of one tick are ranked
        together."""
        policy = hours_policy(
            capacity={"NJ": {"outbound_call": 2}}, reserved_share=0, release_batch=2
        )
        w = make_worker(policy)
        risky = RiskScore(score=40, parts=[])
        calls = [
            task("a1", sub="13700000011", moment_type="offer", channel=CALL),
            task("b1", sub="13700000012", moment_type="offer", channel=CALL).model_copy(
                update={"risk": risky}
            ),
            task("c1", sub="13700000013", moment_type="offer", channel=CALL),
            task("d1", sub="13700000014", moment_type="callback", channel=CALL, priority=1),
        ]
        await w.send(*calls)
        assert [await w.sink.deferral.due_at(t.task_id) for t in calls] == [opens().timestamp()] * 4
        assert await w.sink.release_due(now=opens().timestamp()) == 4
        assert ids(await published(w.settings, 2)) == ["b1", "d1"]
        assert [await w.ledger.state(i) for i in ("a1", "c1")] == ["deferred", "deferred"]


class TestTheOpeningRanksTheWholeQueue:
    async def test_the_slots_go_to_the_highest_ranked_of_everything_due(
        self, make_worker: MakeWorker
    ) -> None:
        """30,000 calls held for the opening, 100 slots: the 100 highest ranked (50
        complaint callbacks, priority 1, and 50 priority-3 calls of customers at high churn
        risk) take them, though they are last by task id. A tick releases 10,000 (20
        batches of 500): the queue's first 10,000 by due time and id took the slots, the
        callbacks waited for the next day. The tick still releases 10,000, and the rest
        still wait."""
        policy = hours_policy(capacity={"NJ": {"outbound_call": 100}}, reserved_share=0)
        w = make_worker(policy)
        risky = RiskScore(score=80, parts=[])
        calls = []
        for n in range(30_000):
            call = task(f"t{n:05d}", sub=f"137{n:08d}", moment_type="offer", channel=CALL)
            if n >= 29_950:
                call = call.model_copy(update={"priority": 1})
            elif n >= 29_900:
                call = call.model_copy(update={"risk": risky})
            elif n % 2:
                call = call.model_copy(update={"priority": 5})
            calls.append(call)
        await w.send(*calls)
        assert await w.sink.deferral.waiting() == 30_000
        assert await w.sink.release_due(now=opens().timestamp()) == 10_000
        top = sorted(t.task_id for t in calls[-100:])
        assert ids(await published(w.settings, 100)) == top
        assert w.sample("moments_tasks_deferred_total", reason="capacity") == 9_900
        assert await w.sink.deferral.waiting() == 29_900


class TestAReloadedPolicy:
    @pytest.mark.parametrize("hours", ["earlier", "none"])
    async def test_calls_parked_for_the_old_opening_are_judged_by_the_new_hours(
        self, make_worker: MakeWorker, hours: str
    ) -> None:
        """The centre now opens an hour before the policy was reloaded (or the channel is
        no longer listed: worked all day): the call parked for the old opening goes at
        the next release, not at the old opening. It stayed parked for it."""
        w = make_worker(hours_policy())
        call = task("h1", sub="13700000021", channel=CALL)
        await w.send(call)
        assert await w.sink.deferral.due_at("h1") == opens().timestamp()
        at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        opened = (at - HOUR).replace(second=0)
        new = {"outbound_call": f"{opened:%H:%M}-{opened + 10 * HOUR:%H:%M}"}
        w.sink.use_policy(
            DispatchPolicy.model_validate(
                {"timezone": "UTC", "hours": new if hours == "earlier" else {}}
            )
        )
        assert await w.sink.release_due(now=at.timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert out["task_id"] == "h1"
        assert out["deferred"]["reason"] == "channel_hours"
        assert instant(out["deferred"]["until"]) == instant(out["deliver_after"]) == at
        assert await w.ledger.state("h1") == "sent"

    async def test_a_release_at_a_clock_reading_of_a_fraction_of_a_microsecond_sends_it(
        self, make_worker: MakeWorker
    ) -> None:
        """The release's clock is a float: its instant, rounded to the microsecond, may be
        after it. Woken and judged at it, the call was due that next microsecond, was
        parked again for it (a `channel_hours` deferral counted again) and went at the
        next release, a timer tick later."""
        w = make_worker(hours_policy())
        await w.send(task("h4", sub="13700000024", channel=CALL))
        w.sink.use_policy(DispatchPolicy.model_validate({"timezone": "UTC", "hours": {}}))
        now = rounding_up(time.time())
        assert await w.sink.release_due(now=now) == 1
        assert await w.ledger.state("h4") == "sent"
        assert w.sample("moments_tasks_deferred_total", reason="channel_hours") == 1
        [out] = await published(w.settings, 1)
        assert instant(out["deliver_after"]).timestamp() <= now

    async def test_a_later_opening_parks_them_again_for_it(self, make_worker: MakeWorker) -> None:
        w = make_worker(hours_policy())
        await w.send(task("h2", sub="13700000022", channel=CALL))
        later = opens() + HOUR
        w.sink.use_policy(
            DispatchPolicy.model_validate(
                {"timezone": "UTC", "hours": {"outbound_call": f"{later:%H:%M}-{closes():%H:%M}"}}
            )
        )
        assert await w.sink.release_due(now=opens().timestamp()) == 1
        assert await w.sink.deferral.due_at("h2") == later.timestamp()
        assert await w.sink.release_due(now=later.timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert instant(out["deliver_after"]) == later

    async def test_a_reload_landing_while_the_tasks_are_woken_wakes_them_again(
        self, make_worker: MakeWorker
    ) -> None:
        """A second reload comes while the first one's wake runs, after a call was parked
        for the hours of the first: the next release judges that call by the second
        one's. The wake's end cleared the second reload's mark, and the call waited for
        the first one's opening though the centre was now open."""
        w = make_worker(hours_policy())
        sink = w.sink
        later = opens() + HOUR
        first = {"outbound_call": f"{later:%H:%M}-{closes():%H:%M}"}
        sink.use_policy(DispatchPolicy.model_validate({"timezone": "UTC", "hours": first}))
        rejudge = sink.deferral.rejudge

        async def wake_and_reload(timetable: str, now: float) -> int:
            woken = await rejudge(timetable, now)
            await w.send(task("h4", sub="13700000024", channel=CALL))  # parked by `first`
            sink.use_policy(DispatchPolicy.model_validate({"timezone": "UTC", "hours": {}}))
            return woken

        sink.deferral.rejudge = wake_and_reload  # type: ignore[method-assign]
        at = dt.datetime.now(dt.UTC).timestamp()
        assert await sink.release_due(now=at) == 0
        assert await sink.deferral.due_at("h4") == later.timestamp()
        sink.deferral.rejudge = rejudge  # type: ignore[method-assign]
        assert await sink.release_due(now=at) == 1
        [out] = await published(w.settings, 1)
        assert out["task_id"] == "h4"


def earlier_hours() -> dict[str, str]:
    """The centre opened an hour before the wall clock's now."""
    opened = (dt.datetime.now(dt.UTC) - HOUR).replace(second=0, microsecond=0)
    return {"outbound_call": f"{opened:%H:%M}-{opened + 10 * HOUR:%H:%M}"}


class TestARestartedWorker:
    """The timetable the waiting tasks were parked by is kept with the queue
    (`Deferrals.rejudge`): a worker started with other hours judges them again. The mark
    lived in the reloading worker's memory: one restarted with the new file woke nothing,
    and the calls waited for the old opening though the centre was open."""

    async def test_started_with_other_hours_it_judges_the_waiting_calls_by_them(
        self, make_worker: MakeWorker
    ) -> None:
        before = make_worker(hours_policy())
        at = dt.datetime.now(dt.UTC).timestamp()
        assert await before.sink.release_due(now=at) == 0  # the queue marked with its hours
        await before.send(task("h5", sub="13700000025", channel=CALL))
        assert await before.sink.deferral.due_at("h5") == opens().timestamp()
        assert await before.sink.release_due(now=at) == 0
        after = make_worker(
            DispatchPolicy.model_validate({"timezone": "UTC", "hours": earlier_hours()})
        )
        assert await after.sink.release_due(now=at) == 1
        [out] = await published(after.settings, 1)
        assert (out["task_id"], out["deferred"]["reason"]) == ("h5", "channel_hours")
        assert await after.ledger.state("h5") == "sent"

    async def test_started_with_the_same_hours_it_leaves_them_waiting(
        self, make_worker: MakeWorker
    ) -> None:
        before = make_worker(hours_policy())
        at = dt.datetime.now(dt.UTC).timestamp()
        assert await before.sink.release_due(now=at) == 0
        await before.send(task("h6", sub="13700000026", channel=CALL))
        after = make_worker(hours_policy(capacity={"NJ": {"sms": 10}}))  # not the hours
        assert await after.sink.release_due(now=at) == 0
        assert await after.sink.deferral.due_at("h6") == opens().timestamp()

    async def test_a_worker_of_the_old_hours_parking_after_the_new_ones_marks_them_mixed(
        self, make_worker: MakeWorker
    ) -> None:
        """During a rolling restart a worker still on the old file parks a call after one
        on the new file judged the queue: the next worker started on the new file judges
        it again (its mark is no longer the new hours')."""
        new = DispatchPolicy.model_validate({"timezone": "UTC", "hours": earlier_hours()})
        at = dt.datetime.now(dt.UTC).timestamp()
        assert await make_worker(new).sink.release_due(now=at) == 0
        old = make_worker(hours_policy())
        await old.send(task("h7", sub="13700000027", channel=CALL))
        assert await old.sink.deferral.due_at("h7") == opens().timestamp()
        assert await make_worker(new).sink.release_due(now=at) == 1
        [out] = await published(old.settings, 1)
        assert out["task_id"] == "h7"

    @pytest.mark.redis_only
    async def test_a_call_parked_before_the_index_is_judged_by_the_new_hours(
        self, make_worker: MakeWorker
    ) -> None:
        """An earlier version parked calls for their channel's hours (and next-day
        deferrals) without indexing them: the first start with a mark-less queue finds
        them by their payload."""
        before = make_worker(hours_policy())
        await before.send(task("h8", sub="13700000028", channel=CALL))
        queue = before.sink.deferral
        assert isinstance(queue, DeferralQueue)
        # As an earlier version parked it: in no index, and no mark.
        await queue.redis.srem(queue.hours_key, "h8")
        await queue.redis.delete(f"{queue.prefix}judged")
        after = make_worker(
            DispatchPolicy.model_validate({"timezone": "UTC", "hours": earlier_hours()})
        )
        at = dt.datetime.now(dt.UTC).timestamp()
        assert await after.sink.release_due(now=at) == 1
        [out] = await published(after.settings, 1)
        assert out["task_id"] == "h8"

    @pytest.mark.redis_only
    async def test_calls_parked_after_the_upgrade_keep_the_old_ones_looked_for(
        self, make_worker: MakeWorker
    ) -> None:
        """The upgraded worker parks calls on the earlier version's queue before its first
        release: the mark says so (`?`), and the first release still finds the call the
        earlier version parked unindexed."""
        w = make_worker(hours_policy())
        await w.send(task("h9", sub="13700000029", channel=CALL))
        queue = w.sink.deferral
        assert isinstance(queue, DeferralQueue)
        await queue.redis.srem(queue.hours_key, "h9")
        await queue.redis.delete(f"{queue.prefix}judged")
        await w.send(task("h10", sub="13700000030", channel=CALL))
        await w.send(task("h11", sub="13700000031", channel=CALL))
        after = make_worker(
            DispatchPolicy.model_validate({"timezone": "UTC", "hours": earlier_hours()})
        )
        assert await after.sink.release_due(now=dt.datetime.now(dt.UTC).timestamp()) == 3
        assert ids(await published(after.settings, 3)) == ["h10", "h11", "h9"]


def next_day_policy(at: str, **more: Any) -> DispatchPolicy:
    """One SMS a day in NJ, the rest deferred to the next day at `at` (UTC)."""
    policy = {
        "timezone": "UTC",
        "capacity": {"NJ": {"sms": 1}},
        "reserved_share": 0,
        "next_day_at": at,
        **more,
    }
    return DispatchPolicy.model_validate(policy)


class TestAnotherNextDayAt:
    """A task capacity deferred to the next day goes at the `next_day_at` of the policy in
    force, whether the worker reloaded it or was started with it. It went at the time of
    the policy it was parked by: a reload from 09:00 to 07:00 left it two hours late, one
    to 11:00 sent it at 09:00.

    The next day is the one after the sinks' clock's, pinned at the test's start: `NOW`,
    read when the tests are collected, may be the day before by then."""

    @pytest.fixture
    def sink_clock(self) -> Clock:
        return pinned_clock()

    @staticmethod
    async def deferred_to_nine(make_worker: MakeWorker, clock: Clock) -> Any:
        w = make_worker(next_day_policy("09:00"))
        await w.send(task("d1", sub="13700000041"), task("d2", sub="13700000042"))
        assert ids(await published(w.settings, 1)) == ["d1"]
        day = dt.datetime.fromtimestamp(clock.now, dt.UTC).date() + dt.timedelta(days=1)
        nine = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)
        assert await w.sink.deferral.due_at("d2") == nine.timestamp()
        assert await w.ledger.state("d2") == "deferred"
        return w, nine

    @staticmethod
    def with_policy(w: Any, make_worker: MakeWorker, policy: DispatchPolicy, how: str) -> Any:
        if how == "reload":
            w.sink.use_policy(policy)
            return w
        return make_worker(policy)

    @pytest.mark.parametrize("how", ["reload", "restart"])
    async def test_an_earlier_one_releases_it_then(
        self, make_worker: MakeWorker, sink_clock: Clock, how: str
    ) -> None:
        w, nine = await self.deferred_to_nine(make_worker, sink_clock)
        w = self.with_policy(w, make_worker, next_day_policy("07:00"), how)
        seven = nine - 2 * HOUR
        assert await w.sink.release_due(now=seven.timestamp() - 60) == 1  # woken, parked again
        assert await w.sink.deferral.due_at("d2") == seven.timestamp()
        assert await w.sink.release_due(now=seven.timestamp()) == 1
        out = [t for t in await published(w.settings, 2) if t["task_id"] == "d2"]
        assert [t["deferred"]["reason"] for t in out] == ["capacity"]
        assert instant(out[0]["deliver_after"]) == instant(out[0]["deferred"]["until"]) == seven
        assert await w.ledger.state("d2") == "sent"

    @pytest.mark.parametrize("how", ["reload", "restart"])
    async def test_a_later_one_holds_it_until_then(
        self, make_worker: MakeWorker, sink_clock: Clock, how: str
    ) -> None:
        w, nine = await self.deferred_to_nine(make_worker, sink_clock)
        w = self.with_policy(w, make_worker, next_day_policy("11:00"), how)
        eleven = nine + 2 * HOUR
        # The first tick after the change, before 09:00: it wakes the task, which waits
        # on. (Released at its own 09:00, before any tick saw the change, a task goes
        # then: what it was parked by is over, and a task due is not held back.)
        assert await w.sink.release_due(now=nine.timestamp() - 60) == 1
        assert await w.ledger.state("d2") == "deferred"
        assert await w.sink.deferral.due_at("d2") == eleven.timestamp()
        assert await w.sink.release_due(now=eleven.timestamp()) == 1
        out = [t for t in await published(w.settings, 2) if t["task_id"] == "d2"]
        assert [instant(t["deliver_after"]) for t in out] == [eleven]

    async def test_one_that_came_already_releases_it_now(
        self, make_worker: MakeWorker, sink_clock: Clock
    ) -> None:
        """Reloaded at 08:30 to 08:00: it goes at 08:30, not the day after."""
        w, nine = await self.deferred_to_nine(make_worker, sink_clock)
        w.sink.use_policy(next_day_policy("08:00"))
        half_past = nine - dt.timedelta(minutes=30)
        assert await w.sink.release_due(now=half_past.timestamp()) == 1
        out = [t for t in await published(w.settings, 2) if t["task_id"] == "d2"]
        assert [instant(t["deliver_after"]) for t in out] == [half_past]


class TestAnSmsBesideAHeldCall:
    async def test_an_sms_due_now_goes_now_not_in_the_call_held_for_the_opening(
        self, make_worker: MakeWorker
    ) -> None:
        """The customer's call waits two hours for the centre; their low-balance SMS, due
        now, goes now on its own. It joined the call and waited for the opening with it."""
        w = make_worker(hours_policy())
        sub = "13700000031"
        call = task("m1", sub=sub, moment_type="callback", channel=CALL)
        sms = task("m2", sub=sub, moment_type="low_balance")
        await w.send(call)
        await w.send(sms)
        assert [await w.ledger.state(i) for i in ("m1", "m2")] == ["deferred", "sent"]
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["channel"], out["deferred"]) == ("m2", "sms", None)
        assert await w.sink.release_due(now=opens().timestamp()) == 1
        called = [t for t in await published(w.settings, 2) if t["task_id"] == "m1"]
        assert [(t["channel"], t["related"]) for t in called] == [("outbound_call", None)]

    async def test_an_sms_due_now_goes_now_not_in_the_call_waiting_for_tomorrows_capacity(
        self, make_worker: MakeWorker
    ) -> None:
        """The call pool is full today: the customer's call waits for tomorrow's
        (`next_day_at`); their low-balance SMS, due now, goes now on its own. It joined the
        call and waited until the next day with it."""
        policy = {"capacity": {"*": {"outbound_call": 0}}, "merge": {"hold_channels": []}}
        w = make_worker(DispatchPolicy.model_validate(policy))
        sub = "13700000034"
        await w.send(task("m7", sub=sub, moment_type="callback", channel=CALL))
        assert await w.ledger.state("m7") == "deferred"
        await w.send(task("m8", sub=sub, moment_type="low_balance"))
        assert [await w.ledger.state(i) for i in ("m7", "m8")] == ["deferred", "sent"]
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["channel"], out["related"]) == ("m8", "sms", None)

    async def test_a_call_still_joins_the_call_waiting_for_tomorrows_capacity(
        self, make_worker: MakeWorker
    ) -> None:
        """A second call moment of the customer (calls are held for merging) goes in the
        first one tomorrow: one call, not two."""
        w = make_worker(DispatchPolicy.model_validate({"capacity": {"*": {"outbound_call": 0}}}))
        sub = "13700000035"
        await w.send(task("m9", sub=sub, moment_type="callback", channel=CALL))
        held = await w.sink.deferral.due_at("m9")  # the merge window's end
        assert held is not None
        held += 1  # (its `deliver_after`, to the microsecond, may be a little later)
        assert await w.sink.release_due(now=held) == 1
        assert (await w.sink.deferral.due_at("m9") or 0) > held + 3 * HOUR.total_seconds()
        await w.send(task("m10", sub=sub, moment_type="offer", channel=CALL))
        assert [await w.ledger.state(i) for i in ("m9", "m10")] == ["deferred", "merged"]

    async def test_a_moment_still_joins_the_task_waiting_for_the_contact_cap(
        self, make_worker: MakeWorker
    ) -> None:
        """The customer had their contact of the day: their next SMS waits for the cap to
        free a day later, and the moment after it, due now, joins it (the cap would hold
        it alone as well): one contact then, not two."""
        policy = {"contact": {"max_contacts": 1, "period": "1d"}, "merge": {"hold_channels": []}}
        w = make_worker(DispatchPolicy.model_validate(policy))
        sub = "13700000036"
        await w.send(task("k1", sub=sub))
        await w.send(task("k2", sub=sub, moment_type="low_balance"))
        assert await w.ledger.state("k2") == "deferred"
        await w.send(task("k3", sub=sub, moment_type="bill_spike"))
        assert [await w.ledger.state(i) for i in ("k1", "k2", "k3")] == [
            "sent",
            "deferred",
            "merged",
        ]

    async def test_a_call_made_at_night_does_not_hold_the_sms_waiting_for_quiet_hours(
        self, make_worker: MakeWorker
    ) -> None:
        """The SMS waits an hour for the customer's quiet hours to end; the call made now
        could go only at the opening, two hours away: it waits on its own, and the SMS
        goes when the quiet hours end. The call joined the SMS, and the group, led by
        the call, waited for the opening."""
        w = make_worker(hours_policy())
        sub = "13700000033"
        quiet_end = NOW + HOUR
        sms = task(
            "m5",
            sub=sub,
            moment_type="low_balance",
            deliver_after=quiet_end,
            deferred="quiet_hours",
        )
        await w.send(sms)
        await w.send(task("m6", sub=sub, moment_type="callback", channel=CALL))
        assert [await w.ledger.state(i) for i in ("m5", "m6")] == ["deferred", "deferred"]
        assert await w.sink.release_due(now=quiet_end.timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["channel"], out["related"]) == ("m5", "sms", None)
        assert await w.sink.deferral.due_at("m6") == opens().timestamp()

    async def test_an_sms_still_rides_along_in_a_call_held_for_the_merge_window(
        self, make_worker: MakeWorker
    ) -> None:
        """Within the window the call is held for merging, the SMS moment joins it (one
        contact: the call tells the customer both)."""
        w = make_worker(DispatchPolicy.model_validate({"merge": {"window": "30m"}}))
        sub = "13700000032"
        await w.send(task("m3", sub=sub, moment_type="callback", channel=CALL))
        await w.send(task("m4", sub=sub, moment_type="low_balance"))
        assert [await w.ledger.state(i) for i in ("m3", "m4")] == ["deferred", "merged"]


def quiet_now(*channels: Channel) -> QuietHours:
    """The customer's quiet hours from an hour ago to two hours from now (UTC), holding
    back `channels` (the rules' `quiet_hours_channels`)."""
    start, end = NOW - HOUR, NOW + 2 * HOUR
    return QuietHours(zone="UTC", windows=[f"{start:%H:%M}-{end:%H:%M}"], channels=list(channels))


class TestAFallbackIsJudgedByItsOwnChannel:
    """A moment moved to its rule's fallback channel is judged by that channel's quiet
    hours, not the ones of the channel it was made for."""

    async def test_a_push_falling_back_to_sms_waits_for_the_sms_quiet_hours(
        self, make_worker: MakeWorker
    ) -> None:
        """Pushes are exempt from quiet hours, SMS not: the push pool is full, the moment
        falls back to SMS, which waits for the end of the customer's quiet hours. It went
        out at once, inside them."""
        w = make_worker(
            DispatchPolicy.model_validate(
                {
                    "capacity": {"*": {"app_push": 0}},
                    "overflow": {"nudge": {"policy": "fallback", "channel": "sms"}},
                }
            )
        )
        quiet = quiet_now(Channel.SMS, CALL, Channel.MANAGER)
        push = task("p1", sub="13700000041", moment_type="nudge", channel=Channel.APP_PUSH)
        w.sink.add(push.model_copy(update={"quiet_hours": quiet}))  # gated: sent now
        await w.sink.flush()
        end = instant(f"{(NOW + 2 * HOUR):%Y-%m-%dT%H:%M}:00+00:00")
        assert await w.ledger.state("p1") == "deferred"
        assert await w.sink.deferral.due_at("p1") == end.timestamp()
        assert await w.sink.release_due(now=end.timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert (out["channel"], out["deferred"]["reason"]) == ("sms", "quiet_hours")
        assert out["quiet_hours"] == {"zone": "UTC", "windows": quiet.windows}

    async def test_a_call_falling_back_to_an_sms_exempt_from_quiet_hours_goes_now(
        self, make_worker: MakeWorker
    ) -> None:
        """The call cannot wait for the centre's opening (it expires first) and falls back
        to SMS, which quiet hours do not hold here: the SMS goes now, carrying no quiet
        hours. It went out with the call's, telling the consumer to keep out of hours
        that do not hold SMS."""
        w = make_worker(
            hours_policy(overflow={"callback": {"policy": "fallback", "channel": "sms"}})
        )
        call = task(
            "f2",
            sub="13700000042",
            moment_type="callback",
            channel=CALL,
            expires_at=NOW + HOUR,
        ).model_copy(update={"quiet_hours": quiet_now(CALL, Channel.MANAGER)})
        w.sink.add(call)
        await w.sink.flush()
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["channel"], out["quiet_hours"]) == ("f2", "sms", None)

    async def test_a_retry_falling_back_to_sms_waits_for_the_sms_quiet_hours(
        self, make_worker: MakeWorker
    ) -> None:
        """Calls are exempt from quiet hours, SMS not. The call goes now and is
        unreachable; its retry, due an hour later, finds the centre closed until after the call
        expires and falls back to SMS, which waits for the end of the customer's quiet
        hours. The retry is made from the published task, which carried no quiet hours
        (they do not hold a call): the SMS went out at once, inside them."""
        more: dict[str, Any] = {
            "merge": {"hold_channels": []},
            "overflow": {"callback": {"policy": "fallback", "channel": "sms"}},
            "outcomes": {"unreachable_retry_after": "1h"},
        }
        w = make_worker(DispatchPolicy.model_validate(more))
        sub = "13700000043"
        quiet = quiet_now(Channel.SMS, Channel.MANAGER, Channel.APP_PUSH)
        u9 = hashlib.blake2b(b"u9", digest_size=16).hexdigest()  # a task id as made
        call = task(
            u9, sub=sub, moment_type="callback", channel=CALL, expires_at=NOW + 3 * HOUR
        ).model_copy(update={"quiet_hours": quiet})
        w.sink.add(call)
        await w.sink.flush()
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["channel"], out["quiet_hours"]) == (u9, "outbound_call", None)
        # The centre now opens only after the call expires.
        opens = (NOW + 4 * HOUR).replace(second=0)
        hours = {"outbound_call": f"{opens:%H:%M}-{opens + 8 * HOUR:%H:%M}"}
        w.sink.use_policy(
            DispatchPolicy.model_validate({**more, "timezone": "UTC", "hours": hours})
        )
        # Unanswered as it went out: its retry waits the hour, then is judged.
        went = dt.datetime.fromisoformat(out["deliver_after"])
        unreachable = TaskOutcome(
            task_id=u9,
            subscriber_id=sub,
            status=OutcomeStatus.UNREACHABLE,
            occurred_at=went,
        )
        record = RawRecord("outcomes", 0, 0, sub.encode(), unreachable.model_dump_json().encode())
        result = await handle_outcomes([record], w.sink, now=went)
        [retry_id] = result.retries
        assert await w.ledger.state(retry_id) == "deferred"
        due = (went + HOUR).timestamp()
        assert await w.sink.deferral.due_at(retry_id) == due
        await w.sink.release_due(now=due)
        assert await w.ledger.state(retry_id) == "deferred"
        end = instant(f"{(NOW + 2 * HOUR):%Y-%m-%dT%H:%M}:00+00:00")
        assert await w.sink.deferral.due_at(retry_id) == end.timestamp()
        assert await w.sink.release_due(now=end.timestamp()) == 1
        sent = [t for t in await published(w.settings, 2) if t["task_id"] == retry_id]
        assert [(t["channel"], t["deferred"]["reason"]) for t in sent] == [("sms", "quiet_hours")]


def minute(at: dt.datetime) -> dt.datetime:
    return at.replace(second=0, microsecond=0)


class TestACapacityPartHeldByQuietHoursAndChannelHours:
    """Capacity moves a moment to its fallback channel, whose quiet hours hold it now and
    whose hours (`hours:`) are closed when they end: the part waits for that channel's
    next opening, a wait the channel's hours decide."""

    @staticmethod
    def policy(opens: dt.datetime) -> DispatchPolicy:
        """Pushes have no room and fall back to SMS; SMS is worked from an hour ago to an
        hour from now, then again from `opens`."""
        windows = [
            f"{NOW - HOUR:%H:%M}-{NOW + HOUR:%H:%M}",
            f"{opens:%H:%M}-{NOW + 10 * HOUR:%H:%M}",
        ]
        return DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "capacity": {"*": {"app_push": 0}},
                "overflow": {"nudge": {"policy": "fallback", "channel": "sms"}},
                "hours": {"sms": windows},
            }
        )

    async def test_it_is_judged_again_when_those_hours_change(
        self, make_worker: MakeWorker
    ) -> None:
        """The SMS hours then open earlier: the part is judged again by them, as every task
        waiting for its channel's hours is (`channel_hours`, indexed for the re-judge). It
        was parked as waiting for quiet hours, which nothing re-judges, and kept the old
        opening, half an hour after the new one."""
        late, early = minute(NOW + 3 * HOUR), minute(NOW + 2 * HOUR + dt.timedelta(minutes=30))
        w = make_worker(self.policy(late))
        quiet = quiet_now(Channel.SMS, CALL, Channel.MANAGER)  # until two hours from now
        push = task("p9", sub="13700000049", moment_type="nudge", channel=Channel.APP_PUSH)
        w.sink.add(push.model_copy(update={"quiet_hours": quiet}))  # gated: sent now
        await w.sink.flush()
        assert await w.sink.deferral.due_at("p9") == late.timestamp()
        w.sink.use_policy(self.policy(early))
        assert await w.sink.release_due() == 1  # the re-judge made it due now
        assert await w.sink.deferral.due_at("p9") == early.timestamp()
        assert await w.sink.release_due(now=early.timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["channel"]) == ("p9", "sms")
        assert out["deferred"]["reason"] == "channel_hours"
        assert instant(out["deliver_after"]) == early
