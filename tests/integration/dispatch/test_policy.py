"""The dispatch path over a real Redis and broker: deferral, expiry, relevance, capacity
with each overflow policy, contact cap, merge window, racing workers and Redis outages."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from moments.embedded import RedisServer, free_port
from moments.models import Channel, Deferral, ProfileEvent, QuietHours, RoamingEvent, TopUpEvent
from rules.gating import FrequencyCap
from sinks.capacity import next_day_start
from sinks.policy import DispatchPolicy
from sinks.timegates import SUSPENDED_LAST_LOOK_S, SUSPENDED_POLL_S
from tests.unit.fakes import Clock as FakeClock
from tests.unit.fakes import ReactivatedMeanwhile

from .conftest import (
    HOUR,
    NOW,
    MakeWorker,
    ids,
    pinned_clock,
    published,
    task,
)

pytestmark = pytest.mark.integration
LOOK = dt.timedelta(seconds=1 + SUSPENDED_POLL_S)
"""The next look at a task a release at `soon + 1 s` parks for its suspended line."""
_SUPPRESSED = "moments_tasks_suppressed_total"


class TestDuplicatesAndRaces:
    """A replayed batch and two workers flushing the same tasks publish each task once."""

    async def test_replay_and_two_racing_workers(self, make_worker: MakeWorker) -> None:
        a, b = make_worker(), make_worker()
        batch = [task(f"r{i}", sub=f"1380013800{i}") for i in range(5)]
        await asyncio.gather(a.send(*batch), b.send(*batch))
        await a.send(*batch)  # the replay after a crash
        out = await published(a.settings, 5)
        assert ids(out) == [f"r{i}" for i in range(5)]
        sent = sum(
            w.sample("moments_tasks_published_total", moment_type=t, channel="sms")
            for w in (a, b)
            for t in ["first_international_roaming"]
        )
        assert sent == 5


class TestDroppedTasksAreSaid:
    """`flush` returns the ids of its tasks the ledger holds as dropped: the engine gives
    their cooldowns back. Made again after a crash (their state not written), a task the
    ledger stops says dropped again, so the state then written gives it back too."""

    async def test_dropped_not_sent_and_again_after_a_replay(self, make_worker: MakeWorker) -> None:
        no_sms_in_nj = {"capacity": {"NJ": {"sms": 0}}, "reserved_share": 0}
        w = make_worker(
            DispatchPolicy.model_validate(
                {
                    **no_sms_in_nj,
                    "overflow": {"*": {"policy": "drop"}},
                    "merge": {"hold_channels": []},
                }
            )
        )
        batch = [task("g1"), task("g2", sub="13800138002", region="SH")]

        async def flush() -> set[str]:
            for t in batch:
                w.sink.add(t)
            return await w.sink.flush()

        first = await flush()
        assert first == {"g1"}
        assert await flush() == {"g1"}  # the replay: both stopped by the ledger
        assert ids(await published(w.settings, 1)) == ["g2"]


class TestDeferral:
    """A task not yet deliverable waits in Redis and is released once, by any worker."""

    async def test_waits_then_released_once_by_racing_workers_after_a_restart(
        self, make_worker: MakeWorker
    ) -> None:
        first = make_worker()
        later = NOW + 2 * HOUR
        await first.send(task("d1", deliver_after=later, deferred="quiet_hours"))
        assert await first.ledger.state("d1") == "deferred"
        assert first.sample("moments_tasks_waiting") == 1
        assert await first.sink.release_due(now=NOW.timestamp()) == 0  # not due yet
        # "Restart": new connections and objects; the queue lives in Redis.
        a, b = make_worker(), make_worker()
        due = later.timestamp() + 1
        released = await asyncio.gather(a.sink.release_due(now=due), b.sink.release_due(now=due))
        assert sorted(released) == [0, 1]
        assert sum(w.sample("moments_tasks_released_total") for w in (a, b)) == 1
        [out] = await published(a.settings, 1)
        assert out["task_id"] == "d1"
        assert out["deferred"]["reason"] == "quiet_hours"
        assert await a.ledger.state("d1") == "sent"
        await a.send(task("d1", deliver_after=later))  # replayed: still a duplicate
        assert a.sample("moments_tasks_suppressed_total", **_dedup()) == 1

    async def test_task_that_expires_while_waiting_is_dropped_and_counted(
        self, make_worker: MakeWorker
    ) -> None:
        w = make_worker()
        now = dt.datetime.now(dt.UTC)  # the sink's clock: NOW was read at collection
        await w.send(task("e1", deliver_after=now + HOUR, expires_at=now + 2 * HOUR))
        assert await w.sink.release_due(now=(now + 3 * HOUR).timestamp()) == 1
        labels = {"moment_type": "first_international_roaming", "reason": "expired"}
        assert w.sample("moments_tasks_suppressed_total", **labels) == 1
        assert await w.ledger.state("e1") == "dropped"
        assert w.sample("moments_tasks_waiting") == 0
        assert w.sample("moments_tasks_published_total", **_sms()) == 0

    async def test_relevance_checks_cancel_low_balance_after_top_up_and_welcome_after_home(
        self, make_worker: MakeWorker
    ) -> None:
        w = make_worker()
        later = NOW + HOUR
        low = task("lb", sub="13900000001", moment_type="low_balance", deliver_after=later)
        welcome = task("rw", sub="13900000002", deliver_after=later)
        kept = task("lb2", sub="13900000003", moment_type="low_balance", deliver_after=later)
        await w.send(low, welcome, kept)
        await w.sink.facts.record(
            [
                TopUpEvent(
                    event_id="t1",
                    subscriber_id="13900000001",
                    occurred_at=NOW + dt.timedelta(minutes=5),
                    amount=50,
                    channel="app",
                ),
                RoamingEvent(
                    event_id="h1",
                    subscriber_id="13900000002",
                    occurred_at=NOW + dt.timedelta(minutes=9),
                    country="CN",
                    roaming_type="domestic",
                ),
                # a top-up before the moment does not cancel it
                TopUpEvent(
                    event_id="t2",
                    subscriber_id="13900000003",
                    occurred_at=NOW - dt.timedelta(minutes=5),
                    amount=50,
                    channel="app",
                ),
            ]
        )
        assert await w.sink.release_due(now=later.timestamp() + 1) == 3
        [out] = await published(w.settings, 1)
        assert out["task_id"] == "lb2"
        suppressed = "moments_tasks_suppressed_total"
        assert w.sample(suppressed, moment_type="low_balance", reason="topped_up") == 1
        assert (
            w.sample(suppressed, moment_type="first_international_roaming", reason="came_home") == 1
        )

    async def test_suspended_line_waits_for_reactivation(self, make_worker: MakeWorker) -> None:
        """Gating defers a task for a suspended line with its earliest time; it is sent
        only after a profile update says the line is active again, or dropped at expiry."""
        w = make_worker()
        soon = NOW + HOUR
        waits = task("s1", sub="13100000001", deliver_after=soon, deferred="suspended")
        lapses = task(
            "s2",
            sub="13100000002",
            deliver_after=soon,
            deferred="suspended",
            expires_at=soon + dt.timedelta(minutes=10),
        )
        w.sink.add(waits)
        w.sink.add(lapses)
        await w.sink.flush()  # from the engine: it counted the deferrals itself
        assert w.sample("moments_tasks_deferred_total", reason="suspended") == 0
        assert await w.sink.release_due(now=soon.timestamp() + 1) == 2
        assert [await w.ledger.state(i) for i in ("s1", "s2")] == ["deferred", "deferred"]
        # s2 must go 5 minutes before it expires (`min_time_left`): looked at a last time a
        # minute before that, it is dropped, its line still suspended
        last = soon + dt.timedelta(minutes=5, seconds=-SUSPENDED_LAST_LOOK_S)
        assert await w.sink.deferral.due_at("s2") == last.timestamp()
        assert await w.sink.release_due(now=last.timestamp()) == 1
        assert [await w.ledger.state(i) for i in ("s1", "s2")] == ["deferred", "dropped"]
        assert (
            w.sample(_SUPPRESSED, moment_type="first_international_roaming", reason="suspended")
            == 1
        )
        # the facts say s1's line is active, and no wake came: its next look finds it
        await w.sink.facts.record(
            [
                ProfileEvent(
                    event_id="p1",
                    subscriber_id="13100000001",
                    occurred_at=soon + dt.timedelta(minutes=5),
                    status="active",
                )
            ]
        )
        assert await w.sink.release_due(now=(soon + LOOK).timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["deferred"]["reason"]) == ("s1", "suspended")

    async def test_a_reactivation_makes_the_waiting_task_due_at_once(
        self, make_worker: MakeWorker
    ) -> None:
        """The profile update that reactivates a line wakes its waiting task: it goes at
        the next release, not at the next 15-minute look."""
        w = make_worker()
        held = task("r1", sub="13300000001", deferred="suspended")
        w.sink.add(held)
        await w.sink.flush()  # still suspended: parked until its next look, 15 min on
        assert await w.ledger.state("r1") == "deferred"
        assert await w.sink.release_due() == 0
        active = ProfileEvent(
            event_id="p-r1",
            subscriber_id="13300000001",
            occurred_at=dt.datetime.now(dt.UTC),
            status="active",
        )
        await w.sink.subscribers.record_facts([active])
        assert await w.sink.release_due() == 1
        [out] = await published(w.settings, 1)
        assert out["task_id"] == "r1"

    async def test_a_reactivation_while_a_release_decides_the_task_wakes_it_all_the_same(
        self, make_worker: MakeWorker
    ) -> None:
        """The race the wake alone left open: a release reads the facts (suspended), a
        second worker records the profile update reactivating the line and runs its wake
        (the task is being decided: nothing to wake), then the release parks the task
        until its next look, which was 15 minutes late, or an hour with hourly looks. The
        park reads the line's `active` fact in the same script and makes it due now."""
        w, other = make_worker(), make_worker()
        sub = "13300000002"
        w.sink.add(task("r2", sub=sub, deferred="suspended"))
        await w.sink.flush()  # from the engine; still suspended: parked until its next look
        look = await w.sink.deferral.due_at("r2")
        assert look is not None
        update = ProfileEvent(
            event_id="p-r2",
            subscriber_id=sub,
            occurred_at=dt.datetime.fromtimestamp(look, dt.UTC),
            status="active",
        )
        meanwhile = ReactivatedMeanwhile(w.sink.facts, other.sink, update)
        w.sink.facts = meanwhile  # type: ignore[assignment]
        assert await w.sink.release_due(now=look) == 1
        assert meanwhile.woken == [1]
        assert await w.ledger.state("r2") == "deferred"
        assert await w.sink.deferral.due_at("r2") == look
        assert await w.sink.release_due(now=look) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["deferred"]["reason"]) == ("r2", "suspended")

    async def test_a_reactivation_read_late_and_dated_before_the_task_wakes_it_mid_release(
        self, make_worker: MakeWorker
    ) -> None:
        """The same race, the update dated before the task's moment (the profile topic
        read behind the moment's): the park script reads the line's last status
        (`active` after `suspended`), as the decision would have."""
        w, other = make_worker(), make_worker()
        sub = "13300000003"
        suspended = ProfileEvent(
            event_id="p-s3", subscriber_id=sub, occurred_at=NOW - 2 * HOUR, status="suspended"
        )
        await w.sink.subscribers.record_facts([suspended])
        w.sink.add(task("r3", sub=sub, deferred="suspended"))
        await w.sink.flush()
        look = await w.sink.deferral.due_at("r3")
        assert look is not None
        update = ProfileEvent(
            event_id="p-r3",
            subscriber_id=sub,
            occurred_at=NOW - dt.timedelta(minutes=1),
            status="active",
        )
        meanwhile = ReactivatedMeanwhile(w.sink.facts, other.sink, update)
        w.sink.facts = meanwhile  # type: ignore[assignment]
        assert await w.sink.release_due(now=look) == 1
        assert meanwhile.woken == [1]
        assert await w.sink.deferral.due_at("r3") == look
        assert await w.sink.release_due(now=look) == 1
        [out] = await published(w.settings, 1)
        assert out["task_id"] == "r3"

    async def test_a_line_active_again_inside_its_quiet_hours_waits_for_them_to_end(
        self, make_worker: MakeWorker
    ) -> None:
        """Gating judged the quiet hours when it made the task; the task carries them, and
        dispatch judges them again when the line is active: it waits for the window to
        end (and says so), or is dropped as expired when the window outlasts it."""
        w = make_worker()
        soon = NOW + HOUR
        check = soon + LOOK  # the look after reactivation (no wake here)
        start = (check - HOUR).strftime("%H:%M")
        end = (check + 2 * HOUR).strftime("%H:%M")
        quiet = QuietHours(zone="+00:00", windows=[f"{start}-{end}"])
        waits = task("q1", sub="13200000001", deliver_after=soon, deferred="suspended")
        lapses = task(
            "q2",
            sub="13200000002",
            deliver_after=soon,
            deferred="suspended",
            expires_at=check + HOUR,
        )
        await w.send(*(t.model_copy(update={"quiet_hours": quiet}) for t in (waits, lapses)))
        assert await w.sink.release_due(now=soon.timestamp() + 1) == 2  # still suspended
        await w.sink.facts.record(
            [
                ProfileEvent(
                    event_id=f"p{n}",
                    subscriber_id=sub,
                    occurred_at=soon + dt.timedelta(minutes=5),
                    status="active",
                )
                for n, sub in enumerate(("13200000001", "13200000002"))
            ]
        )
        assert await w.sink.release_due(now=check.timestamp()) == 2
        assert [await w.ledger.state(i) for i in ("q1", "q2")] == ["deferred", "dropped"]
        opens = dt.datetime.combine(
            (check + 2 * HOUR).date(), dt.time.fromisoformat(end), tzinfo=dt.UTC
        )
        assert await w.sink.deferral.due_at("q1") == opens.timestamp()
        assert await published(w.settings, 0) == []
        assert await w.sink.release_due(now=opens.timestamp() + 1) == 1
        [out] = await published(w.settings, 1)
        assert out["task_id"] == "q1"
        assert out["deferred"]["reason"] == "quiet_hours"
        assert instant(out["deferred"]["until"]) == instant(out["deliver_after"]) == opens

    async def test_a_task_released_for_an_active_line_says_when_it_was_released(
        self, make_worker: MakeWorker
    ) -> None:
        """Gating gives such a task `deferred.until` at its expiry (it waits for the
        line, not for a time) and `deliver_after` the earliest time it could have gone
        had the line been active. Published hours later, it kept both: 130 of a 3-week
        backtest's tasks, two with a `deliver_after` inside the customer's quiet hours
        (01:00 in Seoul for a task published at 08:00 after waiting for them)."""
        w = make_worker()
        soon = NOW + HOUR
        expires = soon + 24 * HOUR
        check = soon + LOOK  # the look after reactivation (no wake here)
        start, end = (check - HOUR).strftime("%H:%M"), (check + 2 * HOUR).strftime("%H:%M")
        quiet = QuietHours(zone="+00:00", windows=[f"{start}-{end}"])
        subs = {"a1": "13200000011", "q1": "13200000012"}
        for task_id, sub in subs.items():
            held = task(task_id, sub=sub, deliver_after=soon, expires_at=expires)
            held = held.model_copy(
                update={
                    "deferred": Deferral(reason="suspended", until=expires),  # as the engine
                    "quiet_hours": quiet if task_id == "q1" else None,
                }
            )
            w.sink.add(held)
        await w.sink.flush()
        assert await w.sink.release_due(now=soon.timestamp() + 1) == 2  # still suspended
        await w.sink.facts.record(
            [
                ProfileEvent(
                    event_id=f"p-{sub}",
                    subscriber_id=sub,
                    occurred_at=soon + dt.timedelta(minutes=5),
                    status="active",
                )
                for sub in subs.values()
            ]
        )
        assert await w.sink.release_due(now=check.timestamp()) == 2
        [now_out] = await published(w.settings, 1)
        assert now_out["task_id"] == "a1"
        assert now_out["deferred"]["reason"] == "suspended"
        assert instant(now_out["deliver_after"]) == instant(now_out["deferred"]["until"]) == check
        opens = dt.datetime.combine(
            (check + 2 * HOUR).date(), dt.time.fromisoformat(end), tzinfo=dt.UTC
        )
        assert await w.sink.release_due(now=opens.timestamp() + 1) == 1
        [later] = [t for t in await published(w.settings, 2) if t["task_id"] == "q1"]
        assert later["deferred"]["reason"] == "quiet_hours"
        assert instant(later["deliver_after"]) == instant(later["deferred"]["until"]) == opens


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _dedup() -> dict[str, str]:
    return {"moment_type": "first_international_roaming", "reason": "dedup"}


def _sms() -> dict[str, str]:
    return {"moment_type": "first_international_roaming", "channel": "sms"}


NO_HOLD: dict[str, list[str]] = {"hold_channels": []}
"""Manager tasks sent when due, not held for the merge window: these tests are about capacity."""


def capacity_policy(**overflow: Any) -> DispatchPolicy:
    return DispatchPolicy.model_validate(
        {
            "capacity": {"NJ": {"manager": 1}},
            "reserved_share": 0,
            "overflow": overflow,
            "merge": NO_HOLD,
        }
    )


class TestCapacity:
    """Over a channel's daily capacity, each rule's overflow policy applies."""

    async def test_fallback_defer_and_drop(self, make_worker: MakeWorker) -> None:
        w = make_worker(
            capacity_policy(
                fb={"policy": "fallback", "channel": "sms"},
                later={"policy": "defer"},
                gone={"policy": "drop"},
            )
        )
        first = task("c0", sub="13700000000", moment_type="first", channel=Channel.MANAGER)
        fb = task("c1", sub="13700000001", moment_type="fb", channel=Channel.MANAGER)
        later = task("c2", sub="13700000002", moment_type="later", channel=Channel.MANAGER)
        gone = task("c3", sub="13700000003", moment_type="gone", channel=Channel.MANAGER)
        await w.send(first, fb, later, gone)
        out = await published(w.settings, 2)
        assert {(t["task_id"], t["channel"]) for t in out} == {("c0", "manager"), ("c1", "sms")}
        assert w.sample("moments_capacity_left", region="NJ", channel="manager") == 0
        assert await w.ledger.state("c2") == "deferred"
        due = await w.sink.deferral.due_at("c2")
        assert due is not None
        assert due > NOW.timestamp() + 60
        assert await w.ledger.state("c3") == "dropped"
        assert (
            w.sample("moments_tasks_suppressed_total", moment_type="gone", reason="capacity") == 1
        )
        assert w.sample("moments_tasks_deferred_total", reason="capacity") == 1
        overflow = {
            ("fb", "fallback"): 1,
            ("later", "defer"): 1,
            ("gone", "drop"): 1,
        }
        for (moment_type, policy), count in overflow.items():
            labels = {"moment_type": moment_type, "policy": policy}
            assert w.sample("moments_tasks_overflow_total", **labels) == count

    async def test_share_reserved_for_priorities_one_and_two(self, make_worker: MakeWorker) -> None:
        policy = DispatchPolicy.model_validate(
            {
                "capacity": {"*": {"manager": 2}},
                "reserved_share": 0.5,
                "overflow": {"*": {"policy": "drop"}},
                "merge": NO_HOLD,
            }
        )
        w = make_worker(policy)
        low1 = task("p1", sub="13600000001", priority=3, channel=Channel.MANAGER)
        low2 = task("p2", sub="13600000002", priority=3, channel=Channel.MANAGER)
        high = task("p3", sub="13600000003", priority=1, channel=Channel.MANAGER)
        await w.send(low1, low2, high)
        assert [await w.ledger.state(i) for i in ("p1", "p2", "p3")] == ["sent", "dropped", "sent"]


class TestContactAndMerge:
    """One subscriber is not contacted more than the policy allows; moments close together
    become one task."""

    async def test_moments_within_the_window_become_one_task(self, make_worker: MakeWorker) -> None:
        policy = DispatchPolicy.model_validate({"merge": {"window": "30m"}})
        w = make_worker(policy)
        later = NOW + HOUR
        sub = "13500000001"
        await w.send(task("m1", sub=sub, priority=4, deliver_after=later, deferred="quiet_hours"))
        await w.send(
            task(
                "m2",
                sub=sub,
                moment_type="competitor_hotline_call",
                priority=1,
                deliver_after=later,
            )
        )
        await w.send(task("m3", sub="13500000002"))  # someone else: not merged
        assert await w.ledger.state("m2") == "merged"
        merged_total = "moments_tasks_merged_total"
        assert w.sample(merged_total, moment_type="competitor_hotline_call") == 1
        assert w.sample(merged_total, moment_type="first_international_roaming") == 0
        assert await w.sink.release_due(now=later.timestamp() + 1) == 1
        out = await published(w.settings, 2)
        [merged] = [t for t in out if t["subscriber_id"] == sub]
        assert merged["task_id"] == "m1"
        assert merged["moment"]["type"] == "competitor_hotline_call"
        assert merged["priority"] == 1
        assert [(r["task_id"], r["evidence"]) for r in merged["related"]] == [("m1", ["ev-m1"])]
        assert await w.ledger.state("m1") == "sent"

    async def test_calls_are_held_for_the_window_by_default(self, make_worker: MakeWorker) -> None:
        w = make_worker()  # the default policy: calls and manager tasks held 30 min, SMS not
        sub = "13500000003"
        await w.send(task("h1", sub=sub, channel=Channel.MANAGER, priority=2))
        await w.send(task("h2", sub=sub, moment_type="complaint", channel=Channel.SMS, priority=3))
        await w.send(task("s1", sub="13500000004", channel=Channel.SMS))
        await w.send(task("c1", sub="13500000005", channel=Channel.OUTBOUND_CALL))
        states = [await w.ledger.state(i) for i in ("h1", "h2", "s1", "c1")]
        assert states == ["deferred", "merged", "sent", "deferred"]
        assert w.sample("moments_tasks_deferred_total", reason="merge_window") == 2
        [sms] = await published(w.settings, 1)
        assert sms["task_id"] == "s1"
        # Held for the window from when they were sent (the wall clock), not from NOW.
        later = dt.datetime.now(dt.UTC) + 31 * dt.timedelta(minutes=1)
        assert await w.sink.release_due(now=later.timestamp()) == 2
        out = {t["task_id"]: t for t in await published(w.settings, 3)}
        assert sorted(out) == ["c1", "h1", "s1"]
        h1 = out["h1"]
        assert (h1["channel"], h1["priority"]) == ("manager", 2)
        assert [r["moment"]["type"] for r in h1["related"]] == ["complaint"]

    async def test_contact_cap_defers_or_drops(self, make_worker: MakeWorker) -> None:
        policy = DispatchPolicy.model_validate({"contact": {"max_contacts": 1, "period": "1d"}})
        w = make_worker(policy)
        sub = "13400000001"
        await w.send(task("k1", sub=sub))
        hour_left = dt.datetime.now(dt.UTC) + HOUR  # by the sink's clock, not NOW's
        await w.send(task("k2", sub=sub, moment_type="b", expires_at=hour_left))  # cannot wait
        await w.send(task("k3", sub=sub, moment_type="a"))  # waits until the period frees
        await w.send(task("k4", sub=sub, moment_type="c"))  # joins the waiting one
        states = [await w.ledger.state(i) for i in ("k1", "k2", "k3", "k4")]
        assert states == ["sent", "dropped", "deferred", "merged"]
        due = await w.sink.deferral.due_at("k3")
        assert due is not None
        assert due >= NOW.timestamp() + 86400 - 5
        suppressed = {"moment_type": "b", "reason": "contact_cap"}
        assert w.sample("moments_tasks_suppressed_total", **suppressed) == 1


class TestTimeLeft:
    async def test_a_task_with_less_than_min_time_left_is_not_published(
        self, make_worker: MakeWorker
    ) -> None:
        """A moment found late (its event a day old, the task's TTL a day) went out with a
        minute to live and reached its consumer expired (dispatch review)."""
        w = make_worker(DispatchPolicy.model_validate({"merge": NO_HOLD}))
        # From the wall clock the sink reads, not the module's NOW: imported minutes
        # before the test ran (a full CI run), the 6-minute task had under 5 left too.
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4)
        await w.send(task("m1", sub="13400000031", expires_at=soon))
        await w.send(task("m2", sub="13400000032", expires_at=soon + dt.timedelta(minutes=2)))
        assert [await w.ledger.state(i) for i in ("m1", "m2")] == ["dropped", "sent"]
        expired = {"moment_type": "first_international_roaming", "reason": "expired"}
        assert w.sample("moments_tasks_suppressed_total", **expired) == 1

    async def test_a_wait_that_ends_too_close_to_the_expiry_drops_the_task(
        self, make_worker: MakeWorker
    ) -> None:
        """Released with three minutes to live, it is dropped, not published."""
        w = make_worker(DispatchPolicy.model_validate({"merge": NO_HOLD}))
        opens = NOW + HOUR
        held = task("m3", sub="13400000033", deliver_after=opens, deferred="quiet_hours")
        await w.send(held.model_copy(update={"expires_at": opens + dt.timedelta(minutes=3)}))
        await w.sink.release_due(now=opens.timestamp() + 1)
        assert await w.ledger.state("m3") == "dropped"


class TestFrequencyCap:
    """The rule set's cap (`gating.frequency_cap`) counts the contacts dispatch makes: a
    merged group is one, a task refused later gives its back. (It was a gate of the
    engine, counting every task made: merged, dropped and refused ones too, so customers
    lost low-balance reminders and complaint calls for a week; an analyst review.)"""

    CAP = FrequencyCap(max_contacts=1, period="1d", channels=(Channel.SMS, Channel.MANAGER))

    async def test_over_the_cap_a_task_waits_or_is_dropped(self, make_worker: MakeWorker) -> None:
        w = make_worker(DispatchPolicy.model_validate({"merge": NO_HOLD}), frequency_cap=self.CAP)
        sub = "13400000011"
        await w.send(task("f1", sub=sub))
        hour_left = dt.datetime.now(dt.UTC) + HOUR  # by the sink's clock, not NOW's
        await w.send(task("f2", sub=sub, moment_type="b", expires_at=hour_left))  # cannot wait
        await w.send(task("f3", sub=sub, moment_type="c", channel=Channel.APP_PUSH))  # uncounted
        await w.send(task("f4", sub=sub, moment_type="d"))  # waits until the day is over
        states = [await w.ledger.state(i) for i in ("f1", "f2", "f3", "f4")]
        assert states == ["sent", "dropped", "sent", "deferred"]
        due = await w.sink.deferral.due_at("f4")
        assert due is not None
        assert due >= NOW.timestamp() + 86400 - 5
        suppressed = {"moment_type": "b", "reason": "frequency_cap"}
        assert w.sample("moments_tasks_suppressed_total", **suppressed) == 1
        assert w.sample("moments_tasks_deferred_total", reason="frequency_cap") == 1
        contact_cap = {"moment_type": "b", "reason": "contact_cap"}  # the other cap's reason
        assert w.sample("moments_tasks_suppressed_total", **contact_cap) == 0

    async def test_its_reserve_keeps_room_for_priorities_one_and_two(
        self, make_worker: MakeWorker
    ) -> None:
        """Three courtesy SMS used up a new customer's week and their severity-1 complaint
        callback was dropped (dispatch review): priorities 3-5 may take the cap less its
        reserve, priorities 1-2 all of it."""
        cap = self.CAP.model_copy(update={"max_contacts": 3, "reserved": 1})
        w = make_worker(DispatchPolicy.model_validate({"merge": NO_HOLD}), frequency_cap=cap)
        sub = "13400000016"
        short = NOW + HOUR  # cannot wait for a contact to free up: dropped
        await w.send(
            task("x1", sub=sub, priority=5), task("x2", sub=sub, moment_type="b", priority=5)
        )
        await w.send(task("x3", sub=sub, moment_type="c", priority=5, expires_at=short))
        await w.send(task("x4", sub=sub, moment_type="d", priority=1, channel=Channel.MANAGER))
        await w.send(task("x5", sub=sub, moment_type="e", priority=2, expires_at=short))
        states = [await w.ledger.state(f"x{i}") for i in range(1, 6)]
        assert states == ["sent", "sent", "dropped", "sent", "dropped"]

    async def test_a_task_that_would_wait_past_its_expiry_is_dropped_at_once(
        self, make_worker: MakeWorker
    ) -> None:
        """Held by quiet hours while the cap is full until after it expires: released, it
        would be dropped; it is now, and a later moment does not merge into it (to be
        dropped with it) but waits on its own."""
        w = make_worker(DispatchPolicy.model_validate({"merge": NO_HOLD}), frequency_cap=self.CAP)
        sub = "13400000015"
        later = NOW + HOUR
        await w.send(task("d1", sub=sub))  # the day's one contact
        doomed = task("d2", sub=sub, moment_type="b", deliver_after=later, deferred="quiet_hours")
        await w.send(doomed.model_copy(update={"expires_at": NOW + 2 * HOUR}))
        assert await w.ledger.state("d2") == "dropped"
        assert (
            w.sample("moments_tasks_suppressed_total", moment_type="b", reason="frequency_cap") == 1
        )
        await w.send(
            task("d3", sub=sub, moment_type="c", deliver_after=later, deferred="quiet_hours")
        )
        assert await w.ledger.state("d3") == "deferred"  # waits on its own (3 days to go)

    async def test_a_merged_group_is_one_contact(self, make_worker: MakeWorker) -> None:
        w = make_worker(DispatchPolicy.model_validate({"merge": NO_HOLD}), frequency_cap=self.CAP)
        sub = "13400000012"
        later = NOW + HOUR
        await w.send(task("g1", sub=sub, deliver_after=later, deferred="quiet_hours"))
        await w.send(task("g2", sub=sub, moment_type="b", deliver_after=later))  # joins g1
        await w.send(task("g3", sub=sub, moment_type="c", deliver_after=later))  # joins g1
        assert [await w.ledger.state(i) for i in ("g2", "g3")] == ["merged", "merged"]
        assert await w.sink.release_due(now=later.timestamp() + 1) == 1
        [out] = await published(w.settings, 1)
        assert [r["task_id"] for r in out["related"]] == ["g2", "g3"]
        assert await w.ledger.state("g1") == "sent"

    async def test_a_task_capacity_refused_gives_its_contact_back(
        self, make_worker: MakeWorker
    ) -> None:
        policy = DispatchPolicy.model_validate(
            {
                "capacity": {"*": {"manager": 1}},
                "reserved_share": 0,
                "overflow": {"*": {"policy": "drop"}},
                "merge": NO_HOLD,
            }
        )
        w = make_worker(policy, frequency_cap=self.CAP)
        sub = "13400000013"
        await w.send(task("r0", sub="13400000014", channel=Channel.MANAGER))  # the only slot
        await w.send(task("r1", sub=sub, channel=Channel.MANAGER))  # took a contact, no slot
        await w.send(task("r2", sub=sub, moment_type="b"))  # the contact is free again
        states = [await w.ledger.state(i) for i in ("r0", "r1", "r2")]
        assert states == ["sent", "dropped", "sent"]


def quiet_around(due: dt.datetime) -> QuietHours:
    """Daily quiet hours (UTC) from 20 minutes before `due` to two hours after it."""
    start, end = due - dt.timedelta(minutes=20), due + 2 * HOUR
    return QuietHours(zone="+00:00", windows=[f"{start:%H:%M}-{end:%H:%M}"])


def quiet_end(due: dt.datetime) -> dt.datetime:
    return (due + 2 * HOUR).replace(second=0, microsecond=0)


class TestQuietHoursWhenHeld:
    """Gating judged a task's quiet hours when it was made; whatever held it afterwards
    (the merge window, the contact cap, capacity, a retry's wait) may bring it up at
    another hour, and dispatch judges them again then: it waits for their end.

    The sinks' clock stands at the test's start (`pinned_clock`), and the times a test
    expects are read from it: read again from the wall clock, a test could name another
    instant than the sink had decided by, another day after midnight UTC (flakes)."""

    @pytest.fixture(params=["now", "before_midnight"])
    def sink_clock(self, request: pytest.FixtureRequest) -> FakeClock:
        """Standing now; or at the last second of today (UTC), where a clock read a moment
        later is in the next day."""
        clock = pinned_clock()
        if request.param == "before_midnight":
            day = dt.datetime.fromtimestamp(clock.now, dt.UTC).date() + dt.timedelta(days=1)
            clock.now = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() - 1
        return clock

    @staticmethod
    def now(clock: FakeClock) -> dt.datetime:
        return dt.datetime.fromtimestamp(clock.now, dt.UTC)

    async def held_then_quiet(
        self, w: Any, task_id: str, due: dt.datetime, before: list[str] | None = None
    ) -> None:
        """The task waits until about `due`; released then, it finds its quiet hours and
        waits for their end; released then, it goes out, saying why it waited. `before`:
        the tasks published already."""
        before = before or []
        parked = await w.sink.deferral.due_at(task_id)
        assert parked is not None
        assert abs(parked - due.timestamp()) < 5, (parked, due)
        assert await w.sink.release_due(now=parked + 1) == 1
        assert await w.ledger.state(task_id) == "deferred"
        end = quiet_end(due)
        assert await w.sink.deferral.due_at(task_id) == end.timestamp()
        assert w.sample("moments_tasks_deferred_total", reason="quiet_hours") == 1
        assert ids(await published(w.settings, len(before))) == before
        assert await w.sink.release_due(now=end.timestamp() + 1) == 1
        [out] = [t for t in await published(w.settings, len(before) + 1) if t["task_id"] == task_id]
        assert out["deferred"]["reason"] == "quiet_hours"
        assert instant(out["deliver_after"]) == end
        assert await w.ledger.state(task_id) == "sent"

    async def test_after_the_merge_window(
        self, make_worker: MakeWorker, sink_clock: FakeClock
    ) -> None:
        w = make_worker()  # calls held 30 minutes
        due = self.now(sink_clock) + dt.timedelta(minutes=30)
        call = task("w1", sub="13100000001", channel=Channel.OUTBOUND_CALL)
        await w.send(call.model_copy(update={"quiet_hours": quiet_around(due)}))
        await self.held_then_quiet(w, "w1", due)

    async def test_after_the_contact_cap(
        self, make_worker: MakeWorker, sink_clock: FakeClock
    ) -> None:
        w = make_worker(
            DispatchPolicy.model_validate({"contact": {"max_contacts": 1, "period": "2h"}})
        )
        sub = "13100000002"
        await w.send(task("k1", sub=sub))
        due = self.now(sink_clock) + 2 * HOUR
        capped = task("k2", sub=sub, moment_type="b")
        await w.send(capped.model_copy(update={"quiet_hours": quiet_around(due)}))
        await self.held_then_quiet(w, "k2", due, before=["k1"])

    async def test_after_capacity_defers_it_to_the_next_day(
        self, make_worker: MakeWorker, sink_clock: FakeClock
    ) -> None:
        release = (self.now(sink_clock) + 3 * HOUR).replace(second=0, microsecond=0)
        policy = DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "next_day_at": f"{release:%H:%M}",
                "capacity": {"*": {"manager": 1}},
                "reserved_share": 0,
                "overflow": {"*": {"policy": "defer"}},
                "merge": NO_HOLD,
            }
        )
        w = make_worker(policy)
        await w.send(task("c1", sub="13100000003", channel=Channel.MANAGER))
        due = next_day_start(self.now(sink_clock), policy.zone, policy.next_day_at)
        over = task("c2", sub="13100000004", channel=Channel.MANAGER)
        await w.send(over.model_copy(update={"quiet_hours": quiet_around(due)}))
        await self.held_then_quiet(w, "c2", due, before=["c1"])

    async def test_after_a_retry_s_wait(
        self, make_worker: MakeWorker, sink_clock: FakeClock
    ) -> None:
        w = make_worker()
        due = self.now(sink_clock) + HOUR
        retry = task("r1", sub="13100000005", deliver_after=due, deferred="unreachable_retry")
        await w.send(retry.model_copy(update={"quiet_hours": quiet_around(due)}))
        await self.held_then_quiet(w, "r1", due)

    async def test_quiet_hours_that_outlast_it_drop_it_as_expired(
        self, make_worker: MakeWorker, sink_clock: FakeClock
    ) -> None:
        w = make_worker()
        due = self.now(sink_clock) + HOUR
        retry = task(
            "x1",
            sub="13100000006",
            deliver_after=due,
            deferred="unreachable_retry",
            expires_at=due + HOUR,
        )
        await w.send(retry.model_copy(update={"quiet_hours": quiet_around(due)}))
        assert await w.sink.release_due(now=due.timestamp() + 1) == 1
        assert await w.ledger.state("x1") == "dropped"
        labels = {"moment_type": "first_international_roaming", "reason": "expired"}
        assert w.sample("moments_tasks_suppressed_total", **labels) == 1
        assert await published(w.settings, 0) == []


class TestOneFlush:
    """Many tasks in one flush, several of one subscriber: the same decisions as when each
    task is decided after the one before it (the sink writes in waves of distinct
    subscribers, one store call per step)."""

    async def test_capacity_order_contact_cap_and_merge(self, make_worker: MakeWorker) -> None:
        policy = DispatchPolicy.model_validate(
            {
                "capacity": {"NJ": {"manager": 1, "sms": 1}},
                "reserved_share": 0,
                "overflow": {
                    "fb": {"policy": "fallback", "channel": "sms"},
                    "*": {"policy": "drop"},
                },
                "contact": {"max_contacts": 1, "period": "1d"},
                "merge": NO_HOLD,
            }
        )
        w = make_worker(policy)
        a, b, c = "13300000001", "13300000002", "13300000003"
        await w.send(
            task("a1", sub=a, moment_type="fb", channel=Channel.MANAGER),  # the manager slot
            task("b1", sub=b, moment_type="fb", channel=Channel.MANAGER),  # falls back: sms slot
            task("c1", sub=c, moment_type="x"),  # sms full now: dropped, contact given back
            task("a2", sub=a, moment_type="y"),  # a's contact taken by a1: waits a day
            task("a3", sub=a, moment_type="z"),  # joins a2, which waits
        )
        states = [await w.ledger.state(i) for i in ("a1", "b1", "c1", "a2", "a3")]
        assert states == ["sent", "sent", "dropped", "deferred", "merged"]
        out = await published(w.settings, 2)
        assert {(t["task_id"], t["channel"]) for t in out} == {("a1", "manager"), ("b1", "sms")}
        assert w.sample("moments_tasks_suppressed_total", moment_type="x", reason="capacity") == 1
        assert w.sample("moments_tasks_deferred_total", reason="contact_cap") == 1
        await w.send(task("c2", sub=c, moment_type="w", channel=Channel.APP_PUSH))
        assert await w.ledger.state("c2") == "sent"  # c1 gave its contact back


@pytest.mark.redis_only
class TestRedisOutage:
    """Redis stopped mid-flush and started again: the flush waits, then every task is
    published exactly once; a replay afterwards publishes nothing."""

    async def test_stop_and_restart_mid_flush(
        self, make_worker: MakeWorker, tmp_path: Path
    ) -> None:
        port = free_port()
        server = RedisServer(
            tmp_path / "redis",
            port=port,
            extra_args=["--appendonly", "yes", "--appendfsync", "always"],
        )
        server.start()
        try:
            w = make_worker(url=server.url)
            await w.send(task("o0", sub="13300000000"))
            server.stop()
            batch = [task(f"o{i}", sub=f"1330000000{i}") for i in range(1, 4)]
            flushing = asyncio.create_task(w.send(*batch))
            while w.sample("moments_dependency_errors_total", dependency="redis") < 1:  # noqa: ASYNC110 - polls a metric, not an event we own
                await asyncio.sleep(0.05)
            assert not flushing.done()
            assert w.sample("moments_dependency_up", dependency="redis") == 0
            server.start()
            await flushing
            assert w.sample("moments_dependency_up", dependency="redis") == 1
            await w.send(*batch, task("o0", sub="13300000000"))  # replay
            out = await published(w.settings, 4)
            assert ids(out) == ["o0", "o1", "o2", "o3"]
        finally:
            server.stop()
