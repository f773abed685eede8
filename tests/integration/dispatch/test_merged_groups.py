"""Merged groups over time: a moment of a waiting group that is dropped is counted once
and leaves the group; the others go on without it. On Redis and in memory alike."""

from __future__ import annotations

import datetime as dt

import pytest

from moments.models import Channel, ProfileEvent

from .conftest import HOUR, NOW, MakeWorker, Worker, published, task

pytestmark = pytest.mark.integration

POLL = dt.timedelta(seconds=901)  # a suspended line's task is looked at every 15 minutes
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


async def reactivate(w: Worker, at: dt.datetime) -> None:
    active = ProfileEvent(event_id="p-g", subscriber_id=SUB, occurred_at=at, status="active")
    await w.sink.facts.record([active])


def suppressed(w: Worker, moment_type: str, reason: str = "expired") -> float:
    return w.sample("moments_tasks_suppressed_total", moment_type=moment_type, reason=reason)


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

    async def test_when_the_waiting_task_expires_the_merged_one_goes_on_under_its_own_id(
        self, make_worker: MakeWorker
    ) -> None:
        """The group was parked again as the merged task, led by the call and expiring
        with the SMS moment: the expired complaint was never counted and went out leading
        the task when the line was active again."""
        w = make_worker()
        await held_for_a_suspended_line(w, NOW + 2 * HOUR, NOW + 48 * HOUR)
        last = await polls(w, NOW + 4 * HOUR)
        assert suppressed(w, "complaint") == 1
        assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["dropped", "deferred"]
        await reactivate(w, last)
        assert await w.sink.release_due(now=(last + POLL).timestamp()) == 1
        [out] = await published(w.settings, 1)
        assert (out["task_id"], out["moment"]["type"], out["channel"]) == (
            "g2",
            "low_balance",
            "sms",
        )
        assert out["related"] is None
        assert [await w.ledger.state(i) for i in ("g1", "g2")] == ["dropped", "sent"]
        assert suppressed(w, "complaint") == 1
