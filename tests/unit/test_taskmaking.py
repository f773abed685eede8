"""A task's `expires_at`: its moment's time plus the rule's `ttl`, in elapsed time. A
sweep's moment (a window's close, a special day's look) is dated on the subscriber's own
clock; across a change of that clock (DST) the task is still worth acting on for the
whole `ttl`, not an hour less or more (docs/rules.md, "The task")."""

from __future__ import annotations

import datetime as dt

from moments.models import EventType

from .rules.helpers import CONTRACT_LEAD, NO_ACTIVITY, NO_GATES, WELCOME, ev, rules_from, run


def worth(expires_at: dt.datetime, triggered_at: dt.datetime) -> dt.timedelta:
    """Elapsed: two times of one zone subtract on its wall clock, as they add."""
    return dt.timedelta(seconds=expires_at.timestamp() - triggered_at.timestamp())


class TestExpiryAcrossDst:
    def test_a_contracts_lead_judged_before_the_spring_change_lasts_its_ttl(self) -> None:
        """Looked at 09:00 GMT on 03-28 in London, clocks forward on 03-29: the 48h offer
        expires at 10:00 BST on 03-30 (it expired at 09:00 BST, 47 h on)."""
        profile = ev(
            EventType.PROFILE,
            "2026-03-28T08:00:00+00:00",
            timezone="Europe/London",
            contract_end="2026-04-10",
        )
        out = run(
            rules_from(NO_GATES + "rules:" + CONTRACT_LEAD),
            [profile],
            until="2026-03-28T12:00:00+00:00",
        )
        (task,) = out.tasks
        assert task.triggered_at.isoformat() == "2026-03-28T09:00:00+00:00"
        assert task.expires_at.isoformat() == "2026-03-30T10:00:00+01:00"
        assert worth(task.expires_at, task.triggered_at) == dt.timedelta(hours=48)

    def test_a_silence_closed_before_the_autumn_change_lasts_its_ttl(self) -> None:
        """A silence due at the close of 10-31 in New York (midnight EDT), clocks back on
        11-01: the 3d offer expires at 23:00 EST on 11-03 (it expired at midnight, 73 h
        on)."""
        events = [
            ev(EventType.PROFILE, "2026-10-20T12:00:00-04:00", timezone="America/New_York"),
            ev(EventType.USAGE, "2026-10-24T12:00:00-04:00", kind="data", quantity=1000),
        ]
        out = run(
            rules_from(NO_GATES + "rules:" + NO_ACTIVITY),
            events,
            until="2026-11-01T12:00:00-05:00",
        )
        (task,) = out.tasks
        assert task.triggered_at.isoformat() == "2026-11-01T00:00:00-04:00"
        assert task.expires_at.isoformat() == "2026-11-03T23:00:00-05:00"
        assert worth(task.expires_at, task.triggered_at) == dt.timedelta(hours=72)

    def test_an_events_moment_lasts_its_ttl_on_its_own_offset(self) -> None:
        """An event's time carries its offset: its task's expiry keeps it, the ttl on."""
        events = [
            ev(EventType.PROFILE, "2026-03-27T12:00:00+00:00", timezone="Europe/London"),
            ev(
                EventType.ROAMING,
                "2026-03-28T23:30:00+00:00",
                country="FR",
                roaming_type="international",
            ),
        ]
        out = run(rules_from(NO_GATES + "rules:" + WELCOME), events)
        (task,) = out.tasks
        assert task.expires_at.isoformat() == "2026-03-29T23:30:00+00:00"
        assert worth(task.expires_at, task.triggered_at) == dt.timedelta(hours=24)
