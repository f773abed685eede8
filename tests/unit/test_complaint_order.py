"""Complaint records out of order: a late `opened` or `updated` record dated before the
complaint's resolution, read after it, leaves it resolved; one dated after it reopens it.

CRM systems send records late. The record kept no resolution, so such a record reopened
the complaint, and it then held back every retention call for the 30 days of
`open_complaint_lapses_after`."""

from __future__ import annotations

import datetime as dt

from moments.models import ComplaintEvent, EventType, TopUpEvent
from moments.state import SubscriberState
from moments.tracking import open_complaints, track

from .rules.helpers import at, ev, rules_from, run

RULES = """
gating: {quiet_hours: [], frequency_cap: null}
rules:
  - id: retention
    description: A call to a competitor's hotline
    on: [usage]
    when: {kind: voice, counterparty: "10010"}
    condition: {first_time: counterparty}
    task: {family: anomaly, type: competitor_hotline_call, channel: outbound_call,
           priority: 2, action: retention_call, ttl: 24h, purpose: sales,
           description: "Retention call"}
"""
HOUR = 3600


def complaint(when: str, status: str, cid: str = "c1") -> tuple[EventType, dict[str, object]]:
    return ev(
        EventType.COMPLAINT, when, complaint_id=cid, category="billing", severity=2, status=status
    )


def hotline(when: str) -> tuple[EventType, dict[str, object]]:
    return ev(EventType.USAGE, when, kind="voice", quantity=60, counterparty="10010")


def retention_tasks(events: list[tuple[EventType, dict[str, object]]]) -> list[str]:
    result = run(rules_from(RULES), events)
    made = [t.moment.type for t in result.tasks]
    blocked = result.suppressed.get(("competitor_hotline_call", "complaint_open"), 0)
    return made + ["blocked"] * blocked


class TestThroughTheEngine:
    def test_a_late_update_older_than_the_resolution_does_not_block_a_retention_call(
        self,
    ) -> None:
        events = [
            complaint(at("2026-11-02", "10:00"), "opened"),
            complaint(at("2026-11-02", "10:30"), "resolved"),
            complaint(at("2026-11-02", "10:20"), "updated"),  # sent late, read after it
            hotline(at("2026-11-03", "11:00")),
        ]
        assert retention_tasks(events) == ["competitor_hotline_call"]

    def test_a_late_opened_record_read_after_its_resolution_does_not_open_it(self) -> None:
        events = [
            complaint(at("2026-11-02", "10:30"), "resolved"),
            complaint(at("2026-11-02", "10:00"), "opened"),
            hotline(at("2026-11-03", "11:00")),
        ]
        assert retention_tasks(events) == ["competitor_hotline_call"]

    def test_a_record_after_the_resolution_reopens_it(self) -> None:
        events = [
            complaint(at("2026-11-02", "10:00"), "opened"),
            complaint(at("2026-11-02", "10:30"), "resolved"),
            complaint(at("2026-11-02", "16:00"), "updated"),  # the customer called again
            hotline(at("2026-11-03", "11:00")),
        ]
        assert retention_tasks(events) == ["blocked"]


def _event(when: int, status: str, cid: str = "c1") -> ComplaintEvent:
    return ComplaintEvent.model_validate(
        {
            "event_id": f"{cid}-{status}-{when}",
            "subscriber_id": "13800138001",
            "occurred_at": dt.datetime.fromtimestamp(when, dt.UTC).isoformat(),
            "complaint_id": cid,
            "category": "billing",
            "severity": 2,
            "status": status,
        }
    )


def _apply(state: SubscriberState, when: int, status: str, cid: str = "c1") -> None:
    """As the engine does: `track`, then the complaint source's latest time."""
    track(_event(when, status, cid), state, when, 30 * 86400, HOUR)
    state.seen["c"] = max(state.seen.get("c", 0), when)


class TestTheRecord:
    T = 1_790_000_000

    def test_the_resolution_is_forgotten_once_no_older_record_can_be_applied(self) -> None:
        """Every byte of a record counts: the resolution stays only while a record older
        than it is within the lateness of the subscriber's latest complaint record."""
        state = SubscriberState()
        _apply(state, self.T, "opened")
        _apply(state, self.T + 600, "resolved")
        assert state.complaints == {"c1": -(self.T + 600)}
        assert open_complaints(state, self.T + 700, 30 * 86400) == 0
        _apply(state, self.T + 600 + HOUR + 1, "opened", "c2")
        assert state.complaints == {"c2": self.T + 600 + HOUR + 1}

    def test_a_resolution_is_forgotten_when_it_lapses(self) -> None:
        state = SubscriberState()
        _apply(state, self.T, "resolved")
        assert list(state.complaints) == ["c1"]
        later = self.T + 30 * 86400
        top_up = TopUpEvent.model_validate(
            {
                "event_id": "t1",
                "subscriber_id": "13800138001",
                "occurred_at": dt.datetime.fromtimestamp(later, dt.UTC).isoformat(),
                "amount": 50,
                "channel": "app",
            }
        )
        track(top_up, state, later - 1, 30 * 86400, 40 * 86400)
        assert list(state.complaints) == ["c1"]  # within the lapse (and the lateness)
        track(top_up, state, later, 30 * 86400, 40 * 86400)
        assert state.complaints == {}

    def test_a_resolution_is_not_counted_open(self) -> None:
        state = SubscriberState(complaints={"c1": -self.T, "c2": self.T})
        assert open_complaints(state, self.T + 1, None) == 1
        assert open_complaints(state, self.T + 1, 30 * 86400) == 1

    def test_the_record_round_trips_a_resolution(self) -> None:
        state = SubscriberState(complaints={"c1": -self.T})
        assert SubscriberState.from_bytes(state.to_bytes()).complaints == {"c1": -self.T}

    def test_an_older_resolution_read_late_keeps_the_later_one(self) -> None:
        state = SubscriberState()
        _apply(state, self.T + 600, "resolved")
        _apply(state, self.T + 300, "resolved")
        _apply(state, self.T + 400, "updated")
        assert state.complaints == {"c1": -(self.T + 600)}


class TestLateResolution:
    """A resolution read after a newer record of the same complaint (the customer called
    again after it was resolved) is older news: the complaint stays open, as it is when
    the records are read in the order they happened (`test_a_record_after_the_resolution_
    reopens_it`). The outcome must not depend on which feed was read first."""

    def test_a_resolution_older_than_the_latest_record_read_last_leaves_it_open(self) -> None:
        events = [
            complaint(at("2026-11-02", "10:00"), "opened"),
            complaint(at("2026-11-02", "10:50"), "updated"),  # the customer called again
            complaint(at("2026-11-02", "10:30"), "resolved"),  # sent late, read last
            hotline(at("2026-11-03", "11:00")),
        ]
        assert retention_tasks(events) == ["blocked"]

    def test_a_resolution_newer_than_the_latest_record_resolves_it(self) -> None:
        state = SubscriberState()
        track(_event(1000, "opened"), state, 1000, None)
        track(_event(3000, "resolved"), state, 3000, None)
        assert open_complaints(state, 3000, None) == 0
        track(_event(2000, "resolved"), state, 2000, None)  # an older resolution, late
        assert open_complaints(state, 3000, None) == 0
