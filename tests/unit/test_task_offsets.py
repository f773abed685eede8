"""Every time in a published task is written with the offset of its `triggered_at` (the
event's that made the moment): a consumer reads `deliver_after` and `deferred.until`
beside `triggered_at` and `expires_at` on one clock. The ones dispatch and the worker
set (its wait, the worker's clock) were written in UTC, `Z`, while the moment's were in
the event's offset, +08:00 upstream (docs/consuming-tasks.md, "Times")."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from moments.models import Channel, RelatedMoment
from tests.unit.test_channel_hours_capacity import AT, OPENS, moment, policy, published

UTC_NOW = AT.astimezone(dt.UTC)


def offsets(task: dict[str, object]) -> set[str]:
    """The offsets the task's times are written with (`2026-11-02T10:00:00+08:00`: `+08:00`)."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value[10] == "T":
            found.add("Z" if value.endswith("Z") else value[-6:])

    walk(task)
    return found


class TestPublishedTimes:
    def test_a_task_dispatch_held_says_when_in_the_moments_offset(self) -> None:
        """A call made at 08:30 (+08:00) waits for the centre's 10:00: `deliver_after` and
        `deferred.until` are 10:00+08:00, not 02:00Z; `created_at` (the worker's clock, in
        UTC) is written in +08:00 too. The instants are the same."""
        call = moment("a", "care", Channel.OUTBOUND_CALL)
        call = call.model_copy(update={"created_at": UTC_NOW})
        p = policy(merge={"hold_channels": []})
        [(at, out)] = published(p, [[call]], OPENS)
        assert at == OPENS
        assert out["deliver_after"] == "2026-11-02T10:00:00+08:00"
        assert out["deferred"] == {"reason": "channel_hours", "until": "2026-11-02T10:00:00+08:00"}
        assert out["created_at"] == "2026-11-02T08:30:00+08:00"
        assert out["triggered_at"] == "2026-11-02T08:30:00+08:00"
        assert offsets(out) == {"+08:00"}

    def test_a_merged_moment_dated_in_another_offset_is_written_in_the_tasks(self) -> None:
        sms = moment("b", "offer", Channel.SMS)
        other = RelatedMoment(
            task_id="c" * 32,
            moment=sms.moment,
            priority=3,
            channel=Channel.SMS,
            action="act",
            triggered_at=UTC_NOW,
            expires_at=UTC_NOW + dt.timedelta(days=1),
            evidence=["ev-c"],
        )
        sms = sms.model_copy(
            update={"related": [other], "expires_at": UTC_NOW + dt.timedelta(days=2)}
        )
        [(_, out)] = published(policy(), [[sms]])
        assert out["related"][0]["triggered_at"] == "2026-11-02T08:30:00+08:00"
        assert out["expires_at"] == "2026-11-04T08:30:00+08:00"
        assert offsets(out) == {"+08:00"}

    def test_a_moment_dated_in_utc_is_written_in_utc(self) -> None:
        sms = moment("d", "offer", Channel.SMS)
        sms = sms.model_copy(update={"triggered_at": UTC_NOW, "deliver_after": AT})
        [(_, out)] = published(policy(), [[sms]])
        assert out["deliver_after"] == "2026-11-02T00:30:00Z"
        assert offsets(out) == {"Z"}

    def test_a_sweeps_moment_in_a_zone_with_a_clock_change_keeps_its_offset(self) -> None:
        """A sweep's moment (a silence's close, a special day's look) is dated on the
        subscriber's zone, not an event's offset: 00:30 on 11-01 in New York is -04:00, and
        the times after the clocks went back that night (the worker's clock, the expiry) were
        written -05:00 beside it, as the zone has them, not in the moment's offset."""
        new_york = ZoneInfo("America/New_York")
        when = dt.datetime(2026, 11, 1, 0, 30, tzinfo=new_york)
        sms = moment("e", "offer", Channel.SMS)
        sms = sms.model_copy(
            update={
                "triggered_at": when,
                "deliver_after": when,
                "created_at": UTC_NOW,
                "expires_at": when + dt.timedelta(days=2),
            }
        )
        [(_, out)] = published(policy(), [[sms]])
        assert out["triggered_at"] == "2026-11-01T00:30:00-04:00"
        assert offsets(out) == {"-04:00"}
