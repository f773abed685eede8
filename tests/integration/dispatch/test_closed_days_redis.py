"""Days a channel is not worked (`closed_days:`) over Redis and the memory stores: a call
made on a closed day is parked past it (indexed with the tasks waiting for hours) and
published when the day is over; a reload that opens the days again wakes it at once; a
call put off to `next_day_at` of a day a reload then closes waits past that day."""

from __future__ import annotations

import datetime as dt

import pytest

from moments.models import Channel
from sinks.policy import DispatchPolicy

from .conftest import NOW, MakeWorker, published, task

pytestmark = pytest.mark.integration

CALL = Channel.OUTBOUND_CALL
TODAY = NOW.date()
TOMORROW = dt.datetime.combine(TODAY + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)


def closed_today(**more: object) -> DispatchPolicy:
    return DispatchPolicy.model_validate(
        {"timezone": "UTC", "closed_days": {"outbound_call": TODAY.isoformat()}, **more}
    )


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


async def test_a_call_made_on_a_closed_day_goes_when_the_day_is_over(
    make_worker: MakeWorker,
) -> None:
    w = make_worker(closed_today())
    call = task("c1", sub="13700000101", channel=CALL, expires_at=TOMORROW + dt.timedelta(days=1))
    await w.send(call)
    assert await w.ledger.state("c1") == "deferred"
    assert await w.sink.deferral.due_at("c1") == TOMORROW.timestamp()
    assert w.sample("moments_tasks_deferred_total", reason="channel_hours") == 1
    assert await w.sink.release_due(now=TOMORROW.timestamp() - 1) == 0
    assert await w.sink.release_due(now=TOMORROW.timestamp()) == 1
    [out] = await published(w.settings, 1)
    assert (out["task_id"], out["deferred"]["reason"]) == ("c1", "channel_hours")
    assert instant(out["deliver_after"]) == TOMORROW
    assert await w.ledger.state("c1") == "sent"


async def test_a_reload_that_opens_the_days_again_sends_it_now(make_worker: MakeWorker) -> None:
    """Closed today and tomorrow, so the reload comes while the call still waits."""
    two = f"{TODAY.isoformat()}..{TOMORROW.date().isoformat()}"
    w = make_worker(
        DispatchPolicy.model_validate({"timezone": "UTC", "closed_days": {"outbound_call": two}})
    )
    after = TOMORROW + dt.timedelta(days=1)
    call = task("c2", sub="13700000102", channel=CALL, expires_at=after + dt.timedelta(days=1))
    await w.send(call)
    assert await w.sink.deferral.due_at("c2") == after.timestamp()
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    w.sink.use_policy(DispatchPolicy.model_validate({"timezone": "UTC"}))
    assert await w.sink.release_due(now=at.timestamp()) == 1
    [out] = await published(w.settings, 1)
    assert out["task_id"] == "c2"
    assert instant(out["deliver_after"]) == at


async def test_started_with_the_day_closed_it_parks_the_call_waiting_for_tomorrows_capacity(
    make_worker: MakeWorker,
) -> None:
    """A call capacity put off to `next_day_at` of a day a reload then closes: the timetable
    changed, so it is judged again, and waits past the closed day."""
    w = make_worker(
        DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "capacity": {"*": {"outbound_call": 0}},
                "next_day_at": "09:00",
                "merge": {"hold_channels": []},
            }
        )
    )
    call = task("c3", sub="13700000103", channel=CALL, expires_at=TOMORROW + dt.timedelta(days=3))
    await w.send(call)
    nine = TOMORROW + dt.timedelta(hours=9)
    assert await w.sink.deferral.due_at("c3") == nine.timestamp()
    w.sink.use_policy(
        DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "next_day_at": "09:00",
                "merge": {"hold_channels": []},
                "closed_days": {"outbound_call": TOMORROW.date().isoformat()},
            }
        )
    )
    at = dt.datetime.now(dt.UTC).timestamp()
    assert await w.sink.release_due(now=at) == 1  # woken: the timetable changed
    assert await w.sink.deferral.due_at("c3") == nine.timestamp()  # still next_day_at
    assert await w.sink.release_due(now=nine.timestamp()) == 1
    day_after = TOMORROW + dt.timedelta(days=1)
    assert await w.sink.deferral.due_at("c3") == day_after.timestamp()
    assert await w.sink.release_due(now=day_after.timestamp()) == 1
    [out] = await published(w.settings, 1)
    assert (out["task_id"], instant(out["deliver_after"])) == ("c3", day_after)
