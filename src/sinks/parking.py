"""What a park decided in a wave (`Park`) asks the deferral queue (`Parking`): plain
functions of the park, its payload and the decision's time and merge window."""

from __future__ import annotations

import datetime as dt

from moments.models import Deferral, ServiceTask
from sinks.routes import Park
from sinks.stores import Parking
from sinks.timegates import SUSPENDED_LAST_LOOK_S


def parked_slot(p: Park) -> ServiceTask:
    """The payload `p` parks: its slot, re-deferred to its release unless that says no
    more than the slot does already."""
    task, slot = p.task, p.slot
    until = dt.datetime.fromtimestamp(p.release_at, dt.UTC)
    # A suspended line keeps gating's reason and bound: the poll time is not news.
    keep_gating = p.reason == "suspended" and task.deferred is not None
    if not keep_gating and (task.deferred is None or task.deferred.until < until):
        # Published when due: `deliver_after` says so, as `deferred.until` does (the
        # slot's deferral is the merged task's, `merge_tasks`).
        update = {"deferred": Deferral(reason=p.reason, until=until)}
        slot = slot.model_copy(update={**update, "deliver_after": max(slot.deliver_after, until)})
    return slot


def parking(p: Park, slot: ServiceTask, payload: bytes, now: float, window: float) -> Parking:
    """The park call for `p` decided at `now`, parking `slot` (`parked_slot`) as `payload`,
    the policy's merge window `window` seconds. A task waiting for its suspended line until
    its next look (`Park.line_since`) is due at once if the facts say the line is active
    when it is parked (`Parking.active_after`), and keeps the subscriber's merge group open
    until that look (when it is parked again), at least for the window: so it was,
    re-opened at every 15-minute look. The park compares the task's making with the
    subscriber's erasure mark (`Parking.made`)."""
    line, hours = p.reason == "suspended", p.reason == "channel_hours"
    capped = p.reason in ("contact_cap", "frequency_cap")
    next_day = p.reason == "capacity"
    if p.line_since is not None:
        # open until the release that parks it again, a few ticks after the look
        window = max(window, p.release_at - now + SUSPENDED_LAST_LOOK_S)
    return Parking(
        slot.task_id,
        slot.subscriber_id,
        payload,
        p.release_at,
        window,
        line,
        hours,
        capped,
        next_day,
        p.rank,
        p.line_since,  # what `TimeGates.suspended` compared the facts with
        now,
        # A tombstone recorded since the decision read the facts is looked at by the park
        made=p.made,
    )
