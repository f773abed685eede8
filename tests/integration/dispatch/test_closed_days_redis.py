"""Days a channel is not worked (`closed_days:`) over Redis and the memory stores: a call
made on a closed day is parked past it (indexed with the tasks waiting for hours) and
published when the day is over; a reload that opens the days again wakes it at once; a
call put off to `next_day_at` of a day a reload then closes waits past that day.

"Today" is the day of the sinks' clock, pinned at each test's start (`pinned_clock`)."""

from __future__ import annotations

import datetime as dt

import pytest

from moments.models import Channel, ServiceTask
from sinks.policy import DispatchPolicy
from tests.unit.fakes import Clock

from .conftest import MakeWorker, pinned_clock, published, task

pytestmark = pytest.mark.integration

CALL = Channel.OUTBOUND_CALL


@pytest.fixture
def sink_clock() -> Clock:
    return pinned_clock()


def days(clock: Clock) -> tuple[dt.datetime, dt.date, dt.datetime]:
    """The clock's instant, its day (UTC) and the next day's midnight."""
    now = dt.datetime.fromtimestamp(clock.now, dt.UTC)
    tomorrow = now.date() + dt.timedelta(days=1)
    return now, now.date(), dt.datetime.combine(tomorrow, dt.time(0), tzinfo=dt.UTC)


def call(task_id: str, sub: str, now: dt.datetime, expires_at: dt.datetime) -> ServiceTask:
    """A call moment made `now`, by the sinks' clock."""
    return task(task_id, sub, channel=CALL, triggered=now, deliver_after=now, expires_at=expires_at)


def instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


async def test_a_call_made_on_a_closed_day_goes_when_the_day_is_over(
    make_worker: MakeWorker, sink_clock: Clock
) -> None:
    now, today, tomorrow = days(sink_clock)
    closed = {"outbound_call": today.isoformat()}
    w = make_worker(DispatchPolicy.model_validate({"timezone": "UTC", "closed_days": closed}))
    await w.send(call("c1", "13700000101", now, tomorrow + dt.timedelta(days=1)))
    assert await w.ledger.state("c1") == "deferred"
    assert await w.sink.deferral.due_at("c1") == tomorrow.timestamp()
    assert w.sample("moments_tasks_deferred_total", reason="channel_hours") == 1
    assert await w.sink.release_due(now=tomorrow.timestamp() - 1) == 0
    assert await w.sink.release_due(now=tomorrow.timestamp()) == 1
    [out] = await published(w.settings, 1)
    assert (out["task_id"], out["deferred"]["reason"]) == ("c1", "channel_hours")
    assert instant(out["deliver_after"]) == tomorrow
    assert await w.ledger.state("c1") == "sent"


async def test_a_reload_that_opens_the_days_again_sends_it_now(
    make_worker: MakeWorker, sink_clock: Clock
) -> None:
    """Closed today and tomorrow, so the reload comes while the call still waits."""
    now, today, tomorrow = days(sink_clock)
    two = f"{today.isoformat()}..{tomorrow.date().isoformat()}"
    w = make_worker(
        DispatchPolicy.model_validate({"timezone": "UTC", "closed_days": {"outbound_call": two}})
    )
    after = tomorrow + dt.timedelta(days=1)
    await w.send(call("c2", "13700000102", now, after + dt.timedelta(days=1)))
    assert await w.sink.deferral.due_at("c2") == after.timestamp()
    w.sink.use_policy(DispatchPolicy.model_validate({"timezone": "UTC"}))
    assert await w.sink.release_due(now=now.timestamp()) == 1
    [out] = await published(w.settings, 1)
    assert out["task_id"] == "c2"
    assert instant(out["deliver_after"]) == now


async def test_started_with_the_day_closed_it_parks_the_call_waiting_for_tomorrows_capacity(
    make_worker: MakeWorker, sink_clock: Clock
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
    now, _, tomorrow = days(sink_clock)
    await w.send(call("c3", "13700000103", now, tomorrow + dt.timedelta(days=3)))
    nine = tomorrow + dt.timedelta(hours=9)
    assert await w.sink.deferral.due_at("c3") == nine.timestamp()
    w.sink.use_policy(
        DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "next_day_at": "09:00",
                "merge": {"hold_channels": []},
                "closed_days": {"outbound_call": tomorrow.date().isoformat()},
            }
        )
    )
    assert await w.sink.release_due() == 1  # woken: the timetable changed
    assert await w.sink.deferral.due_at("c3") == nine.timestamp()  # still next_day_at
    assert await w.sink.release_due(now=nine.timestamp()) == 1
    day_after = tomorrow + dt.timedelta(days=1)
    assert await w.sink.deferral.due_at("c3") == day_after.timestamp()
    assert await w.sink.release_due(now=day_after.timestamp()) == 1
    [out] = await published(w.settings, 1)
    assert (out["task_id"], instant(out["deliver_after"])) == ("c3", day_after)
