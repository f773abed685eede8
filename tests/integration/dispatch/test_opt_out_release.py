"""An opt-out that comes while a task waits (quiet hours, channel hours, capacity, a
suspended line...) holds at its release, on Redis and in memory: the engine's gates judge
the opt-outs only when the task is made, so a silence deferred at midnight to 08:00 went
out by SMS at 08:00 to a customer whose profile opted out of SMS at 07:00."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from moments.models import Channel, ProfileEvent
from sinks.policy import DispatchPolicy

from .conftest import HOUR, NOW, MakeWorker, ids, published, task

pytestmark = pytest.mark.integration

OUT, CALLS_ONLY, STAYS, LIFTED, LATE = (
    "13800138001",
    "13800138002",
    "13800138003",
    "13800138004",
    "13800138005",
)
MINUTE = dt.timedelta(minutes=1)


def profile(sub: str, when: dt.datetime, opt_out: list[str] | None, **more: str) -> ProfileEvent:
    return ProfileEvent(
        event_id=f"p-{sub}-{when.timestamp()}",
        subscriber_id=sub,
        occurred_at=when,
        opt_out=opt_out,
        **more,
    )


async def test_a_waiting_sms_is_dropped_after_an_sms_opt_out(make_worker: MakeWorker) -> None:
    w = make_worker()
    later = NOW + HOUR
    waiting = {
        sub: task(f"t-{sub}", sub, deliver_after=later, deferred="quiet_hours")
        for sub in (OUT, CALLS_ONLY, STAYS, LIFTED, LATE)
    }
    await w.send(*waiting.values())
    assert {await w.ledger.state(t.task_id) for t in waiting.values()} == {"deferred"}
    await w.sink.subscribers.record_facts(
        [
            # OUT: opted out of SMS while its task waited; a later profile not saying
            # opt_out (null) leaves it so
            profile(OUT, NOW + MINUTE, ["sms"]),
            profile(OUT, NOW + 2 * MINUTE, None, tier="gold"),
            # CALLS_ONLY: opted out of calls only: the SMS goes
            profile(CALLS_ONLY, NOW + MINUTE, ["outbound_call"]),
            # STAYS: a profile saying nothing of opt-outs
            profile(STAYS, NOW + MINUTE, None, tier="gold"),
            # LIFTED: opted out, then in again (`[]`)
            profile(LIFTED, NOW + MINUTE, ["sms"]),
            profile(LIFTED, NOW + 2 * MINUTE, []),
        ]
    )
    # LATE: opted out; an older profile read after it (opting in) does not undo it
    await w.sink.subscribers.record_facts([profile(LATE, NOW + 2 * MINUTE, ["sms", "manager"])])
    await w.sink.subscribers.record_facts([profile(LATE, NOW + MINUTE, [])])

    assert await w.sink.release_due(now=later.timestamp() + 1) == 5
    out = await published(w.settings, 3)
    assert ids(out) == sorted(f"t-{s}" for s in (CALLS_ONLY, STAYS, LIFTED))
    for sub in (OUT, LATE):
        assert await w.ledger.state(f"t-{sub}") == "dropped"
    opt_out = {"moment_type": "first_international_roaming", "reason": "opt_out"}
    assert w.sample("moments_tasks_suppressed_total", **opt_out) == 2
    # Dropped for good: not released, nor sent, again.
    assert await w.sink.release_due(now=(later + 2 * HOUR).timestamp()) == 0
    assert ids(await published(w.settings, 3)) == ids(out)


async def test_a_waiting_call_falling_back_to_an_opted_out_sms_is_dropped(
    make_worker: MakeWorker,
) -> None:
    """A call waiting for quiet hours, released while the call centre is closed until
    after it expires, goes by its rule's fallback, SMS: not to a customer opted out of
    SMS (the channel it would go out on), still to one opted out of nothing."""
    opens = (NOW + 3 * HOUR).replace(second=0)
    w = make_worker(
        DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "hours": {"outbound_call": f"{opens:%H:%M}-{opens + 8 * HOUR:%H:%M}"},
                "overflow": {"callback": {"policy": "fallback", "channel": "sms"}},
                "merge": {"hold_channels": []},
            }
        )
    )
    later = NOW + HOUR
    calls = [
        task(
            f"c-{sub}",
            sub,
            moment_type="callback",
            channel=Channel.OUTBOUND_CALL,
            deliver_after=later,
            deferred="quiet_hours",
            expires_at=later + HOUR,
        )
        for sub in (OUT, STAYS)
    ]
    await w.send(*calls)
    assert await w.ledger.state(f"c-{OUT}") == "deferred"
    await w.sink.subscribers.record_facts([profile(OUT, NOW + MINUTE, ["sms"])])
    assert await w.sink.release_due(now=later.timestamp() + 1) == 2
    [out] = await published(w.settings, 1)
    assert (out["task_id"], out["channel"]) == (f"c-{STAYS}", "sms")
    assert await w.ledger.state(f"c-{OUT}") == "dropped"
    opt_out = {"moment_type": "callback", "reason": "opt_out"}
    assert w.sample("moments_tasks_suppressed_total", **opt_out) == 1


OVERFLOW = {"callback": {"policy": "fallback", "channel": "sms"}}


def call(task_id: str, sub: str) -> Any:
    return task(
        task_id,
        sub,
        moment_type="callback",
        channel=Channel.OUTBOUND_CALL,
        expires_at=NOW + 2 * HOUR,
    )


async def test_a_fresh_call_does_not_fall_back_to_an_opted_out_sms_after_hours(
    make_worker: MakeWorker,
) -> None:
    """The engine's gates judged the call, the channel it was made for; the fallback it
    takes at dispatch, the centre closed until after it expires, is judged against the
    customer's opt-outs too."""
    opens = (NOW + 3 * HOUR).replace(second=0)
    w = make_worker(
        DispatchPolicy.model_validate(
            {
                "timezone": "UTC",
                "hours": {"outbound_call": f"{opens:%H:%M}-{opens + 8 * HOUR:%H:%M}"},
                "overflow": OVERFLOW,
                "merge": {"hold_channels": []},
            }
        )
    )
    await w.sink.subscribers.record_facts([profile(OUT, NOW - HOUR, ["sms"])])
    await w.send(call("h-out", OUT), call("h-stays", STAYS))
    [out] = await published(w.settings, 1)
    assert (out["task_id"], out["channel"]) == ("h-stays", "sms")
    assert await w.ledger.state("h-out") == "dropped"
    opt_out = {"moment_type": "callback", "reason": "opt_out"}
    assert w.sample("moments_tasks_suppressed_total", **opt_out) == 1


async def test_a_fresh_call_does_not_fall_back_to_an_opted_out_sms_when_calls_are_full(
    make_worker: MakeWorker,
) -> None:
    """No capacity left for calls: the SMS fallback is not the opted-out customer's; the
    next day comes after the call expires, so it is dropped for capacity."""
    w = make_worker(
        DispatchPolicy.model_validate(
            {
                "capacity": {"*": {"outbound_call": 1}},
                "reserved_share": 0,
                "overflow": OVERFLOW,
                "merge": {"hold_channels": []},
            }
        )
    )
    await w.sink.subscribers.record_facts([profile(OUT, NOW - HOUR, ["sms"])])
    await w.send(call("c-first", CALLS_ONLY))  # takes the one call of the day
    await w.send(call("c-out", OUT), call("c-stays", STAYS))
    got = await published(w.settings, 2)
    assert sorted((t["task_id"], t["channel"]) for t in got) == [
        ("c-first", "outbound_call"),
        ("c-stays", "sms"),
    ]
    assert await w.ledger.state("c-out") == "dropped"
    capacity = {"moment_type": "callback", "reason": "capacity"}
    assert w.sample("moments_tasks_suppressed_total", **capacity) == 1


async def test_a_waiting_task_is_dropped_when_the_line_closed_meanwhile(
    make_worker: MakeWorker,
) -> None:
    """A line closed while the task waited: dropped at its release (`closed`), as gating
    drops a task of a closed line, not sent to a line that no longer exists (and then
    withdrawn). A line closed, then made active again, lets it go (the latest status
    decides, as for opt-outs)."""
    w = make_worker()
    later = NOW + HOUR
    closed, reopened = "13800138011", "13800138012"
    waiting = {
        sub: task(f"t-{sub}", sub, deliver_after=later, deferred="quiet_hours")
        for sub in (closed, reopened)
    }
    await w.send(*waiting.values())
    await w.sink.subscribers.record_facts(
        [
            profile(closed, NOW + MINUTE, None, status="closed"),
            profile(reopened, NOW + MINUTE, None, status="closed"),
            profile(reopened, NOW + 2 * MINUTE, None, status="active"),
        ]
    )
    assert await w.sink.release_due(now=later.timestamp() + 1) == 2
    assert ids(await published(w.settings, 1)) == [f"t-{reopened}"]
    assert await w.ledger.state(f"t-{closed}") == "dropped"
    gone = {"moment_type": "first_international_roaming", "reason": "closed"}
    assert w.sample("moments_tasks_suppressed_total", **gone) == 1


async def test_a_waiting_task_waits_for_a_line_suspended_meanwhile(
    make_worker: MakeWorker,
) -> None:
    """A line suspended while the task waited (quiet hours here): at its release it waits
    for the line, as gating holds a task made for a suspended line, instead of going out
    to it; counted once as deferred for the line, released by the reactivation saying
    so, dropped at its last look if the line stays suspended. Suspended after an
    `active` that came after the task was made, it waits too; suspended and reactivated
    before the release, it goes then."""
    w = make_worker()
    later = NOW + HOUR
    held, again, stays, back = "13800138021", "13800138022", "13800138023", "13800138024"
    waiting = [
        task(f"t-{held}", held, deliver_after=later, deferred="quiet_hours"),
        task(f"t-{again}", again, deliver_after=later, deferred="quiet_hours"),
        task(
            f"t-{stays}",
            stays,
            deliver_after=later,
            deferred="quiet_hours",
            expires_at=later + HOUR,
        ),
        task(f"t-{back}", back, deliver_after=later, deferred="quiet_hours"),
    ]
    await w.send(*waiting)
    await w.sink.subscribers.record_facts(
        [
            profile(held, NOW + MINUTE, None, status="suspended"),
            profile(again, NOW + MINUTE, None, status="active"),
            profile(again, NOW + 2 * MINUTE, None, status="suspended"),
            profile(stays, NOW + MINUTE, None, status="suspended"),
            profile(back, NOW + MINUTE, None, status="suspended"),
            profile(back, NOW + 2 * MINUTE, None, status="active"),
        ]
    )
    assert await w.sink.release_due(now=later.timestamp() + 1) == 4
    assert ids(await published(w.settings, 1)) == [f"t-{back}"]
    for sub in (held, again, stays):
        assert await w.ledger.state(f"t-{sub}") == "deferred"
    line = {"reason": "suspended"}
    assert w.sample("moments_tasks_deferred_total", **line) == 3

    # The reactivation wakes the task held for the line: it goes, saying it waited for it.
    await w.sink.subscribers.record_facts([profile(held, later + MINUTE, None, status="active")])
    went = later + 2 * MINUTE
    assert await w.sink.release_due(now=went.timestamp()) == 1
    out = {t["task_id"]: t for t in await published(w.settings, 2)}
    assert sorted(out) == [f"t-{held}", f"t-{back}"]
    assert out[f"t-{held}"]["deferred"]["reason"] == "suspended"
    assert dt.datetime.fromisoformat(out[f"t-{held}"]["deferred"]["until"]) == went
    assert w.sample("moments_tasks_deferred_total", **line) == 3  # counted once

    # The line that stays suspended: its task is dropped at its last look (a minute
    # before the last time it may go, `min_time_left` before it expires).
    last = later + HOUR - 5 * MINUTE
    assert await w.sink.release_due(now=last.timestamp() - 30) == 1
    assert await w.ledger.state(f"t-{stays}") == "dropped"
    gone = {"moment_type": "first_international_roaming", "reason": "suspended"}
    assert w.sample("moments_tasks_suppressed_total", **gone) == 1
    assert await w.ledger.state(f"t-{again}") == "deferred"
    assert ids(await published(w.settings, 2)) == sorted(out)
