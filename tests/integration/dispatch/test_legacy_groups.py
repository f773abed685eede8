"""Merge groups parked by the version before per-moment groups (2532d37): it parked a
released group again as the merged task, the carrier's entry holding the lead's moment
under the carrier's id, the group's latest expiry, and the others in `related`. A
rolling upgrade releases such groups with the current sink: every moment goes out once,
and none that lapsed leads. On Redis and in memory alike."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any

import pytest

from moments.models import Channel, Deferral, ServiceTask
from sinks.contact import merge_tasks
from sinks.payloads import task_bytes
from sinks.policy import DispatchPolicy
from sinks.stores import DispatchStores, Joining, Parking

from .conftest import HOUR, NOW, MakeWorker, Worker, published, task

pytestmark = pytest.mark.integration

SUB = "13900000401"
WINDOW_S = 1800.0


async def parked_as_merged(
    stores: DispatchStores,
    carrier: ServiceTask,
    members: list[ServiceTask],
    release_at: float,
    reparks: int = 1,
) -> None:
    """`carrier` waits with its own payload and `members` join it (as both versions
    do); then, `reparks` times, the earlier version released the group and parked it
    again as the merged task (2532d37's `_route_wave` and `_parking`, literally)."""
    ledger, deferral = stores.ledger, stores.deferral
    claimed = await ledger.claim([(t.task_id, task_bytes(t)) for t in [carrier, *members]])
    assert all(claimed)
    parking = Parking(carrier.task_id, SUB, b"", release_at, WINDOW_S)
    assert await deferral.park_many([parking]) == [True]
    joins = [Joining(m.task_id, SUB, b"") for m in members]
    assert await deferral.join_many(joins) == [carrier.task_id] * len(members)
    for _ in range(reparks):
        [due] = await deferral.release(release_at, 10)
        # The earlier version's tasks had no moment_id (a payload's is read as its id).
        tasks = [
            ServiceTask.model_validate_json(p).model_copy(update={"moment_id": None})
            for p in [due.payload, *due.members]
        ]
        merged = merge_tasks(carrier.task_id, tasks)
        until = dt.datetime.fromtimestamp(release_at, dt.UTC)
        merged = merged.model_copy(
            update={
                "deferred": Deferral(reason="capacity", until=until),
                "deliver_after": max(merged.deliver_after, until),
                "moment_id": None,
            }
        )
        parking = Parking(carrier.task_id, SUB, task_bytes(merged), release_at, WINDOW_S)
        assert await deferral.park_many([parking]) == [True]
    stored = await ledger.get(carrier.task_id)
    assert stored is not None
    assert b'"related":[{' in stored


def moments_out(tasks: list[dict[str, Any]]) -> Counter[str]:
    """Each moment published, by type, however it went (leading or related)."""
    return Counter(m["moment"]["type"] for t in tasks for m in [t, *(t.get("related") or [])])


def suppressed(w: Worker, moment_type: str, reason: str = "expired") -> float:
    return w.sample("moments_tasks_suppressed_total", moment_type=moment_type, reason=reason)


def sms(task_id: str, **kw: Any) -> ServiceTask:
    return task(task_id, sub=SUB, moment_type="low_balance", **kw)


def call(task_id: str, **kw: Any) -> ServiceTask:
    return task(
        task_id, sub=SUB, moment_type="complaint", channel=Channel.OUTBOUND_CALL, priority=2, **kw
    )


def manager(task_id: str, **kw: Any) -> ServiceTask:
    return task(
        task_id,
        sub=SUB,
        moment_type="third_complaint_30d",
        channel=Channel.MANAGER,
        priority=1,
        **kw,
    )


class TestLedByAnotherMoment:
    async def test_the_lead_lapsed_the_carrier_goes_out_as_its_own_moment(
        self, make_worker: MakeWorker
    ) -> None:
        """The carrier's entry held the call's moment expiring with the SMS moment: the
        lapsed complaint led the task sent, the SMS moment only in its `related`."""
        w = make_worker()
        at = (NOW + 4 * HOUR).timestamp()
        await parked_as_merged(
            w.sink.stores,
            sms("g1", expires_at=NOW + 48 * HOUR),
            [call("g2", expires_at=NOW + 3 * HOUR)],
            at,
        )
        assert await w.sink.release_due(now=at) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["moment"]["type"], out["channel"]) == (
            "g1",
            "low_balance",
            "sms",
        )
        assert out["related"] is None
        assert instant(out["expires_at"]) == NOW + 48 * HOUR
        assert suppressed(w, "complaint") == 1
        assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["sent", "dropped"]

    async def test_parked_twice_the_copy_of_the_lead_is_not_sent_again(
        self, make_worker: MakeWorker
    ) -> None:
        """Parked again a second time, the merged task listed the call's moment under the
        carrier's id in place of the SMS moment's (lost then): the call went out with
        itself in its `related`. Now the call goes once, under its own id."""
        w = make_worker()
        at = (NOW + HOUR).timestamp()
        await parked_as_merged(w.sink.stores, sms("g1"), [call("g2")], at, reparks=2)
        assert await w.sink.release_due(now=at) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["moment"]["type"], out["related"]) == ("g2", "complaint", None)
        assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["dropped", "sent"]


def one_manager_a_day() -> DispatchPolicy:
    return DispatchPolicy.model_validate(
        {
            "capacity": {"NJ": {"manager": 1}},
            "reserved_share": 0,
            "overflow": {"*": {"policy": "defer"}},
            "merge": {"hold_channels": []},
        }
    )


class TestLedByTheCarrier:
    async def test_a_moment_sent_alone_is_not_listed_again_by_the_carrier(
        self, make_worker: MakeWorker
    ) -> None:
        """Capacity refuses the manager task: the callback goes alone, the manager task
        waits for the next day. Its entry held the merged task, which lists the callback:
        it went out again the next day, in the manager task's `related`."""
        policy = one_manager_a_day()
        w = make_worker(policy)
        at = NOW + HOUR
        await parked_as_merged(w.sink.stores, manager("m1"), [call("c2")], at.timestamp())
        # As urgent and older: it takes the day's slot first (`claim_order`).
        filler = task(
            "a0",
            sub="13900000499",
            channel=Channel.MANAGER,
            priority=1,
            triggered=NOW - HOUR,
            deliver_after=at,
        )
        await w.send(filler.model_copy(update={"deliver_after": at - dt.timedelta(minutes=1)}))
        assert await w.sink.release_due(now=at.timestamp()) == 2
        next_day = await w.sink.deferral.due_at("m1")
        assert next_day is not None
        assert await w.sink.release_due(now=next_day) == 1
        out = {t["task_id"]: t for t in await published(w.settings, 3)}
        assert sorted(out) == ["a0", "c2", "m1"]
        assert (out["m1"]["moment"]["type"], out["m1"]["related"]) == ("third_complaint_30d", None)
        assert moments_out([out["c2"], out["m1"]]) == Counter(["complaint", "third_complaint_30d"])
        assert out["m1"]["priority"] == 1

    async def test_a_lapsed_carrier_is_dropped_and_the_others_go_on(
        self, make_worker: MakeWorker
    ) -> None:
        """The merged task expired with the callback: the manager moment, lapsed, led the
        task sent. Its own expiry is its rule's ttl (the rules loaded now)."""
        ttl = {("third_complaint_30d", 1): 2 * HOUR}
        w = make_worker(task_ttl=lambda rule_id, version: ttl.get((rule_id, version)))
        at = (NOW + 3 * HOUR).timestamp()
        lapses = manager("m1", expires_at=NOW + 2 * HOUR)
        await parked_as_merged(w.sink.stores, lapses, [call("c2", expires_at=NOW + 48 * HOUR)], at)
        assert await w.sink.release_due(now=at) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["moment"]["type"], out["related"]) == ("c2", "complaint", None)
        assert suppressed(w, "third_complaint_30d") == 1
        assert [await w.ledger.state(i) for i in ("m1", "c2")] == ["dropped", "sent"]

    async def test_a_group_an_earlier_worker_released_before_it_crashed_is_re_driven(
        self, make_worker: MakeWorker
    ) -> None:
        """Released by an earlier worker that crashed before it published: the re-drive
        reads the same merged entry, pending."""
        ttl = {("third_complaint_30d", 1): 2 * HOUR}
        w = make_worker(task_ttl=lambda rule_id, version: ttl.get((rule_id, version)))
        past = dt.datetime.now(dt.UTC) - 3 * HOUR
        lapsed = manager("m1", triggered=past, expires_at=past + 2 * HOUR)
        other = call("c2", triggered=past, expires_at=past + 48 * HOUR)
        due = time.time() - 1
        await parked_as_merged(w.sink.stores, lapsed, [other], due)
        assert len(await w.sink.deferral.release(due, 10)) == 1  # then the crash
        assert await w.sink.redrive(older_than=0) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["moment"]["type"], out["related"]) == ("c2", "complaint", None)
        assert suppressed(w, "third_complaint_30d") == 1


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)
