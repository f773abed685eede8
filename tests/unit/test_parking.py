"""`sinks.parking`: what a park decided in a wave asks the deferral queue, as plain
functions of the park (`TaskSink._parking` before)."""

from __future__ import annotations

import datetime as dt

from sinks.parking import parked_slot, parking
from sinks.routes import Park
from sinks.timegates import SUSPENDED_LAST_LOOK_S
from tests.integration.dispatch.conftest import task

AT = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
WINDOW = 1800.0


def park(
    reason: str,
    release: dt.datetime,
    deferred: str | None = None,
    line_since: float | None = None,
) -> Park:
    t = task("a" * 32, triggered=AT, deliver_after=AT, deferred=deferred)
    return Park(t, t, release.timestamp(), reason, True, 2.5, line_since)


class TestParkedSlot:
    def test_a_wait_of_its_own_is_published_saying_so(self) -> None:
        """Parked for its channel's hours, the payload says why and until when, and is
        due then."""
        slot = parked_slot(park("channel_hours", AT + 2 * HOUR))
        assert slot.deferred is not None
        assert (slot.deferred.reason, slot.deferred.until) == ("channel_hours", AT + 2 * HOUR)
        assert slot.deliver_after == AT + 2 * HOUR

    def test_a_suspended_line_keeps_what_gating_said(self) -> None:
        """The next look at a suspended line is not news: gating's deferral stays."""
        p = park("suspended", AT + HOUR, deferred="suspended")
        assert parked_slot(p) is p.slot


class TestParking:
    def test_what_the_queue_is_told(self) -> None:
        """The flags follow the reason; the merge window is the policy's."""
        p = park("capacity", AT + 20 * HOUR)
        slot = parked_slot(p)
        got = parking(p, slot, b"payload", AT.timestamp(), WINDOW)
        assert (got.task_id, got.payload, got.release_at) == (
            slot.task_id,
            b"payload",
            p.release_at,
        )
        assert (got.merge_window_s, got.rank, got.woken_at) == (WINDOW, 2.5, AT.timestamp())
        assert (got.waits_for_next_day, got.waits_for_hours, got.waits_for_cap) == (
            True,
            False,
            False,
        )

    def test_a_line_looked_at_keeps_its_group_open_past_the_look(self) -> None:
        """Waiting for its suspended line until its next look, its merge group stays open
        until a minute after that look, however short the window."""
        since = (AT - HOUR).timestamp()
        p = park("suspended", AT + HOUR, deferred="suspended", line_since=since)
        got = parking(p, parked_slot(p), b"x", AT.timestamp(), WINDOW)
        assert (got.waits_for_line, got.active_after) == (True, since)
        assert got.merge_window_s == HOUR.total_seconds() + SUSPENDED_LAST_LOOK_S
