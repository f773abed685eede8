"""Merged groups over time: a moment of a waiting group that is dropped is counted once
and leaves the group, the others go on without it; capacity refusing a group's channel
refuses the moments on it, not the group. On Redis and in memory alike."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from moments.models import Channel, Deferral, ProfileEvent, QuietHours
from sinks.capacity import next_day_start
from sinks.policy import DispatchPolicy
from sinks.timegates import SUSPENDED_POLL_S

from .conftest import HOUR, NOW, MakeWorker, Worker, published, task

pytestmark = pytest.mark.integration

POLL = dt.timedelta(seconds=SUSPENDED_POLL_S + 1)  # a suspended line's task's next look
SUB = "13900000101"


async def held_for_a_suspended_line(
    w: Worker, carrier_expires: dt.datetime, member_expires: dt.datetime
) -> None:
    """A call held for a suspended line (`g1`), an SMS moment merged into it (`g2`)."""
    call = task(
        "g1",
        sub=SUB,
        moment_type="complaint",
        channel=Channel.OUTBOUND_CALL,
        deferred="suspended",
        expires_at=carrier_expires,
    )
    sms = task(
        "g2", sub=SUB, moment_type="low_balance", deferred="suspended", expires_at=member_expires
    )
    for t in (call, sms):  # from the engine, which counted the deferrals
        w.sink.add(t)
        await w.sink.flush()
    assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["deferred", "merged"]


async def polls(w: Worker, until: dt.datetime) -> dt.datetime:
    """Release the group at each look until `until`; returns the time of the last."""
    at = dt.datetime.now(dt.UTC)  # it was parked a look after its flush
    while at + POLL <= until:
        at += POLL
        assert await w.sink.release_due(now=at.timestamp()) == 1
    return at


async def reactivate(w: Worker, at: dt.datetime, wake: bool = False) -> None:
    """The facts say the line is active from `at`: found at the group's next look, or,
    `wake`, as the profile update does it, made due now."""
    active = ProfileEvent(event_id="p-g", subscriber_id=SUB, occurred_at=at, status="active")
    if wake:
        await w.sink.subscribers.record_facts([active])
    else:
        await w.sink.facts.record([active])


def suppressed(w: Worker, moment_type: str, reason: str = "expired") -> float:
    return w.sample("moments_tasks_suppressed_total", moment_type=moment_type, reason=reason)


async def the_member_goes_on(w: Worker) -> None:
    """The group of `held_for_a_suspended_line`, the call's moment expiring in 2 h and the
    SMS's in 48: the call is dropped as expired (counted once), and when the line is
    active again the SMS moment goes out alone under its own id."""
    last = await polls(w, NOW + 4 * HOUR)
    assert suppressed(w, "complaint") == 1
    assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["dropped", "deferred"]
    await reactivate(w, last)
    assert await w.sink.release_due(now=(last + POLL).timestamp()) == 1
    [out] = await published(w.settings, 1)
    assert (out["task_id"], out["moment"]["type"], out["channel"]) == ("g2", "low_balance", "sms")
    assert out["related"] is None
    assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["dropped", "sent"]
    assert suppressed(w, "complaint") == 1


class TestDroppedWhileWaiting:
    async def test_an_expired_member_is_counted_once_and_leaves_the_group(
        self, make_worker: MakeWorker
    ) -> None:
        """The analyst's backtest counted such a moment once per look until the line was
        active again (75 times for one task): it stayed in the group and was judged, and
        dropped, at every release."""
        w = make_worker()
        await held_for_a_suspended_line(w, NOW + 48 * HOUR, NOW + 2 * HOUR)
        last = await polls(w, NOW + 4 * HOUR)
        assert suppressed(w, "low_balance") == 1
        assert await w.ledger.state("g2") == "dropped"
        assert await w.ledger.group("g1") == []
        await reactivate(w, last)
        assert await w.sink.release_due(now=(last + POLL).timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["moment"]["type"], out["related"]) == ("g1", "complaint", None)
        assert suppressed(w, "low_balance") == 1

    async def test_a_group_whose_line_stays_suspended_drops_each_moment_once(
        self, make_worker: MakeWorker
    ) -> None:
        """Dropped whole (here: its line still suspended when it must go), a group was
        counted once under its lead's type and its other moments stayed `merged` for the
        ledger's life, uncounted (499 moments in a simulated week; dispatch re-check). The
        same drop serves the contact and frequency caps and quiet hours outlasting it."""
        w = make_worker()
        await held_for_a_suspended_line(w, NOW + 2 * HOUR, NOW + 2 * HOUR)
        for _ in range(20):  # looked at every 15 minutes until it lapses
            due = await w.sink.deferral.due_at("g1")
            if due is None:
                break
            await w.sink.release_due(now=float(due))
        assert suppressed(w, "complaint", "suspended") == 1
        assert suppressed(w, "low_balance", "suspended") == 1
        assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["dropped", "dropped"]

    async def test_when_the_waiting_task_expires_the_merged_one_goes_on_under_its_own_id(
        self, make_worker: MakeWorker
    ) -> None:
        """The group was parked again as the merged task, led by the call and expiring
        with the SMS moment: the expired complaint was never counted and went out leading
        the task when the line was active again."""
        w = make_worker()
        await held_for_a_suspended_line(w, NOW + 2 * HOUR, NOW + 48 * HOUR)
        await the_member_goes_on(w)

    async def test_the_moment_that_goes_on_says_what_the_group_waited_for(
        self, make_worker: MakeWorker
    ) -> None:
        """The waiting task lapses when its quiet hours end; the moment that joined it
        goes out then, under its own id: its `deliver_after` and `deferred` are the
        group's (it said it could go ten minutes before: a window its quiet hours, one
        of another zone, left it when it joined)."""
        w = make_worker()
        opens = NOW + HOUR
        waits = task("g1", sub=SUB, deliver_after=opens, deferred="quiet_hours")
        await w.send(waits.model_copy(update={"expires_at": opens + dt.timedelta(minutes=3)}))
        own = opens - dt.timedelta(minutes=10)
        joins = task("g2", sub=SUB, moment_type="low_balance", deliver_after=own)
        await w.send(
            joins.model_copy(update={"deferred": Deferral(reason="quiet_hours", until=own)})
        )
        assert await w.ledger.state("g2") == "merged"
        assert await w.sink.release_due(now=opens.timestamp() + 1) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["deferred"]["reason"]) == ("g2", "quiet_hours")
        assert instant(out["deliver_after"]) == instant(out["deferred"]["until"]) == opens
        assert suppressed(w, "first_international_roaming") == 1


def refusing_managers(**overflow: Any) -> DispatchPolicy:
    """One manager task and one call a day in NJ; a contact a day per subscriber."""
    return DispatchPolicy.model_validate(
        {
            "capacity": {"NJ": {"manager": 1, "outbound_call": 1}},
            "reserved_share": 0,
            "overflow": {"complaint": {"policy": "fallback", "channel": "sms"}, **overflow},
            "contact": {"max_contacts": 1, "period": "1d"},
            "merge": {"hold_channels": []},
        }
    )


async def manager_task_joined_by_a_callback(w: Worker, *fill: Channel) -> dt.datetime:
    """A manager task waiting for quiet hours to end (`m1`), a complaint callback merged
    into it (`c2`); other subscribers' tasks due at the same time take the day's slots
    of the channels `fill` first. Returns when they are released."""
    later = NOW + HOUR
    for n, channel in enumerate(fill):  # as urgent and older than m1: ranked first
        filler = task(
            f"a{n}",
            sub=f"1390000020{n}",
            channel=channel,
            priority=1,
            triggered=NOW - HOUR,
            deliver_after=later,
        )
        await w.send(
            filler.model_copy(update={"deferred": Deferral(reason="quiet_hours", until=later)})
        )
    manager = task(
        "m1",
        sub=SUB,
        moment_type="third_complaint_30d",
        priority=1,
        channel=Channel.MANAGER,
        deliver_after=later,
        deferred="quiet_hours",
    )
    # The customer's quiet hours hold the callback too (ending ten minutes earlier: judged
    # on the clock of where they roam now): it joins the manager task.
    own = later - dt.timedelta(minutes=10)
    callback = task(
        "c2",
        sub=SUB,
        moment_type="complaint",
        priority=2,
        channel=Channel.OUTBOUND_CALL,
        deliver_after=own,
        deferred="quiet_hours",
    )
    await w.send(manager)
    await w.send(callback)
    assert [await w.ledger.state(i) for i in ("m1", "c2")] == ["deferred", "merged"]
    at = later + dt.timedelta(seconds=1)
    assert await w.sink.release_due(now=at.timestamp()) == 1 + len(fill)
    return at


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def counted(w: Worker, name: str, **labels: str) -> float:
    return w.sample(f"moments_tasks_{name}_total", **labels)


class TestCapacityRefusesAGroup:
    """Capacity refuses a merged group for its lead's channel: each moment on that
    channel takes its own rule's overflow, the others go on, led by the next most
    personal channel. (The whole group was refused with its lead: complaint callbacks
    merged into manager tasks were dropped with them when the manager pool was full, their
    own fallback to SMS unused, counted as the manager rule's; analyst review.)"""

    async def test_the_callback_is_made_and_the_manager_task_waits_for_the_next_day(
        self, make_worker: MakeWorker
    ) -> None:
        policy = refusing_managers(**{"*": {"policy": "defer"}})
        w = make_worker(policy)
        at = await manager_task_joined_by_a_callback(w, Channel.MANAGER)
        out = {t["task_id"]: t for t in await published(w.settings, 2)}
        assert sorted(out) == ["a0", "c2"]
        call = out["c2"]
        assert (call["channel"], call["moment"]["type"], call["related"]) == (
            "outbound_call",
            "complaint",
            None,
        )
        assert [await w.ledger.state(i) for i in ("m1", "c2")] == ["deferred", "sent"]
        day = next_day_start(at, policy.zone, policy.next_day_at)
        assert await w.sink.deferral.due_at("m1") == day.timestamp()
        assert await w.ledger.group("m1") == []
        assert counted(w, "overflow", moment_type="third_complaint_30d", policy="defer") == 1
        assert counted(w, "overflow", moment_type="complaint", policy="fallback") == 0
        assert counted(w, "deferred", reason="capacity") == 1
        # The contact the group took is the call's: the manager task takes its own.
        contacts, now = w.sink.stores.contacts, at.timestamp()
        assert await contacts.take_many([(SUB, "c2", now)], 86400, 1, look=True) == [None]
        [refused] = await contacts.take_many([(SUB, "m1", now)], 86400, 1, look=True)
        assert refused is not None

    async def test_the_callback_falls_back_to_sms_and_the_manager_task_is_dropped(
        self, make_worker: MakeWorker
    ) -> None:
        w = make_worker(refusing_managers(**{"*": {"policy": "drop"}}))
        await manager_task_joined_by_a_callback(w, Channel.MANAGER, Channel.OUTBOUND_CALL)
        out = {t["task_id"]: t for t in await published(w.settings, 3)}
        assert sorted(out) == ["a0", "a1", "c2"]
        assert (out["c2"]["channel"], out["c2"]["moment"]["type"]) == ("sms", "complaint")
        assert [await w.ledger.state(i) for i in ("m1", "c2")] == ["dropped", "sent"]
        capacity = {"reason": "capacity"}
        assert counted(w, "suppressed", moment_type="third_complaint_30d", **capacity) == 1
        assert counted(w, "suppressed", moment_type="complaint", **capacity) == 0
        assert counted(w, "overflow", moment_type="third_complaint_30d", policy="drop") == 1
        assert counted(w, "overflow", moment_type="complaint", policy="fallback") == 1
        published_sms = {"moment_type": "complaint", "channel": "sms"}
        assert w.sample("moments_tasks_published_total", **published_sms) == 1

    async def test_a_callback_sent_on_its_own_says_when_the_group_went(
        self, make_worker: MakeWorker
    ) -> None:
        """The group waited for a suspended line, then (active again at night) for the
        end of the quiet hours; the callback goes out without the manager task, under its
        own id: it says what the group waited for and until when, not what gating wrote
        in its own payload when it joined."""
        w = make_worker(refusing_managers(**{"*": {"policy": "defer"}}))
        soon = NOW + HOUR
        check = soon + POLL  # the look after reactivation
        start, end = (check - HOUR).strftime("%H:%M"), (check + 2 * HOUR).strftime("%H:%M")
        quiet = {"quiet_hours": QuietHours(zone="+00:00", windows=[f"{start}-{end}"])}
        manager = task(
            "m1",
            sub=SUB,
            moment_type="third_complaint_30d",
            priority=1,
            channel=Channel.MANAGER,
            deliver_after=soon,
            deferred="suspended",
        )
        callback = task(
            "c2",
            sub=SUB,
            moment_type="complaint",
            priority=2,
            channel=Channel.OUTBOUND_CALL,
            deliver_after=soon,
            deferred="suspended",
        )
        for t in (manager, callback):
            w.sink.add(t.model_copy(update=quiet))
            await w.sink.flush()
        assert await w.ledger.state("c2") == "merged"
        assert await w.sink.release_due(now=soon.timestamp() + 1) == 1  # still suspended
        await reactivate(w, soon + dt.timedelta(minutes=5))
        assert await w.sink.release_due(now=check.timestamp()) == 1  # waits for the quiet hours
        opens = dt.datetime.combine((check + 2 * HOUR).date(), dt.time.fromisoformat(end), dt.UTC)
        assert await w.sink.deferral.due_at("m1") == opens.timestamp()
        for n, channel in enumerate((Channel.MANAGER, Channel.OUTBOUND_CALL)):  # the day's slots
            filler = task(
                f"a{n}",
                sub=f"1390000030{n}",
                channel=channel,
                priority=1,  # as urgent and older than m1: ranked first (`claim_order`)
                triggered=NOW - HOUR,
                deliver_after=opens,
            )
            await w.send(
                filler.model_copy(update={"deliver_after": opens - dt.timedelta(minutes=1)})
            )
        assert await w.sink.release_due(now=opens.timestamp() + 1) == 3
        [sms] = [t for t in await published(w.settings, 3) if t["task_id"] == "c2"]
        assert (sms["channel"], sms["deferred"]["reason"]) == ("sms", "quiet_hours")
        assert instant(sms["deliver_after"]) == instant(sms["deferred"]["until"]) == opens
        assert await w.ledger.state("m1") == "deferred"  # the manager task waits a day


class TestQuietHoursOfAGroup:
    async def test_a_moment_that_may_go_alone_keeps_its_own_quiet_hours(
        self, make_worker: MakeWorker
    ) -> None:
        """The group was judged by its lead's quiet hours only: led by a call made while
        roaming (quiet hours in another zone, over), its SMS moment went out alone when
        capacity refused the call, inside its own quiet hours (08:18 in Shanghai; dispatch
        re-check). Now the group waits until every moment's quiet hours are over."""
        policy = DispatchPolicy.model_validate(
            {
                "capacity": {"NJ": {"outbound_call": 0}},
                "reserved_share": 0,
                "overflow": {"*": {"policy": "drop"}},
                "merge": {"hold_channels": []},
            }
        )
        w = make_worker(policy)
        look = NOW + dt.timedelta(minutes=30)

        def window(a: dt.datetime, b: dt.datetime) -> QuietHours:
            return QuietHours(zone="+00:00", windows=[f"{a:%H:%M}-{b:%H:%M}"])

        ends = NOW + 2 * HOUR
        sms = task(
            "q1", sub=SUB, moment_type="first_service_order", deferred="suspended", expires_at=ends
        ).model_copy(update={"quiet_hours": window(look - HOUR, look + HOUR)})
        call = task(
            "q2",
            sub=SUB,
            moment_type="service_failure",
            channel=Channel.OUTBOUND_CALL,
            priority=2,
            deferred="suspended",
            expires_at=ends,
        ).model_copy(update={"quiet_hours": window(look - 3 * HOUR, look - HOUR)})
        for t in (sms, call):
            w.sink.add(t)
            await w.sink.flush()
        assert [await w.ledger.state(i) for i in ("q1", "q2")] == ["deferred", "merged"]
        await reactivate(w, look, wake=True)  # before its next look
        await w.sink.release_due(now=look.timestamp())
        assert await w.ledger.state("q1") == "deferred"  # waits for its moments' hours
        opens = (look + HOUR).replace(second=0)  # the SMS moment's window ends (HH:MM)
        assert await w.sink.deferral.due_at("q1") == opens.timestamp()
        await w.sink.release_due(now=opens.timestamp())
        (sent,) = await published(w.settings, 1)
        assert (sent["task_id"], sent["channel"]) == ("q1", "sms")
