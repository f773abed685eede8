"""Days a channel is not worked (`closed_days:` in the dispatch policy): the call centre
closed over Spring Festival. There was no field for it: the documented workaround was
reloading a policy with no capacity around the day, which dropped the tasks that would
expire before the day after, and waited for `next_day_at` even where the hours open
earlier."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import zoneinfo
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moments.backtest import CollectingProducer, EventTime
from moments.exceptions import ConfigError
from moments.models import Channel, QuietHours
from sinks.dispatch import TaskSink
from sinks.hours import channel_hours, days_off_text, days_text
from sinks.memory import memory_stores
from sinks.metrics import Metrics
from sinks.policy import DispatchPolicy, load_policy
from tests.unit.test_channel_hours_capacity import AT, moment, published

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
D = dt.date


def local(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=SHANGHAI)


class TestFormat:
    def test_dates_and_ranges_as_days(self) -> None:
        days = days_off_text([D(2027, 2, 6), "2027-02-10..2027-02-12", "2027-02-11"])
        assert days == (D(2027, 2, 6), D(2027, 2, 10), D(2027, 2, 11), D(2027, 2, 12))
        assert days_off_text("2027-01-01") == (D(2027, 1, 1),)
        assert days_off_text(" 2027-02-06 .. 2027-02-07 ") == (D(2027, 2, 6), D(2027, 2, 7))
        assert days_text(days) == "2027-02-06, 2027-02-10..2027-02-12"

    @pytest.mark.parametrize(
        ("value", "says"),
        [
            ("2027-02-30", "2027-02-30: write days as YYYY-MM-DD or a range FROM..TO"),
            ("Feb 6", "Feb 6: write days as YYYY-MM-DD"),
            ("2027-02-13..2027-02-06", "the range ends before it starts"),
            ("2027-01-01..2028-06-01", "more than 366 days closed; a channel closed for good"),
            (7, "7: write days as YYYY-MM-DD"),
            # What Python's date.fromisoformat reads besides YYYY-MM-DD was taken: an ISO
            # week closed its Monday alone, a range left unfinished one day.
            ("2027-W06", "2027-W06: write days as YYYY-MM-DD"),
            ("2027-W06-7", "2027-W06-7: write days as YYYY-MM-DD"),
            ("20270206", "20270206: write days as YYYY-MM-DD"),
            ("2027-02-06..", "2027-02-06..: write days as YYYY-MM-DD or a range FROM..TO"),
            ("2027-02-06..2027-02-08..2027-02-10", "write days as YYYY-MM-DD or a range"),
        ],
    )
    def test_refused_with_the_fix(self, value: object, says: str) -> None:
        with pytest.raises(ValueError, match=re.escape(says)):
            days_off_text(value)

    def test_the_policy_file_names_where(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.yaml"
        path.write_text("closed_days:\n  manager: [2027-02-06, 2027-02-31]\n")
        with pytest.raises(ConfigError) as err:
            load_policy(path)
        assert f"{path}:2:" in str(err.value)
        assert "2027-02-31: write days as YYYY-MM-DD" in str(err.value)

    def test_a_bad_item_of_a_block_list_is_refused_at_its_own_line(self, tmp_path: Path) -> None:
        """The list is checked whole (a range is expanded, the total bounded), so pydantic's
        error is the list's: the bad day on the fourth line was reported at the channel's
        line, and so was a bad window of `hours:`."""
        path = tmp_path / "policy.yaml"
        path.write_text(
            "hours:\n  manager:\n    - 09:00-12:00\n    - 13:00-25:00\n"
            "closed_days:\n  sms:\n    - 2027-02-06\n    - 2027-02-06..2027-02-01\n"
        )
        with pytest.raises(ConfigError) as err:
            load_policy(path)
        said = str(err.value)
        assert f"{path}:4:7: hours.manager: 13:00-25:00: hour must be 00-23" in said
        assert f"{path}:8:7: closed_days.sms: 2027-02-06..2027-02-01: the range ends" in said

    def test_said_in_words_and_in_the_timetable(self) -> None:
        policy = DispatchPolicy.model_validate(
            {
                "hours": {"manager": "09:00-18:00"},
                "closed_days": {
                    "manager": ["2027-02-06..2027-02-08"],
                    "outbound_call": "2027-02-07",
                },
            }
        )
        assert policy.describe_hours() == (
            "channels worked outbound_call all day except on 2027-02-07; "
            "manager 09:00-18:00 except on 2027-02-06..2027-02-08 (Asia/Shanghai), "
            "any other all day"
        )
        plain = DispatchPolicy.model_validate({"hours": {"manager": "09:00-18:00"}})
        # A changed day off wakes the tasks parked by the old timetable (`Deferrals.rejudge`);
        # a policy without days off keeps the digest it had before the field existed.
        assert policy.timetable() != plain.timetable()
        assert (
            plain.timetable()
            == DispatchPolicy.model_validate(
                {"hours": {"manager": "09:00-18:00"}, "closed_days": {}}
            ).timetable()
        )
        assert not plain.always_worked
        assert DispatchPolicy().always_worked
        assert not DispatchPolicy.model_validate(
            {"closed_days": {"sms": "2027-02-07"}}
        ).always_worked


class TestOpens:
    def test_a_day_off_moves_to_the_first_hour_after_it(self) -> None:
        hours = channel_hours(("09:00-18:00",), (D(2027, 2, 6), D(2027, 2, 7)))
        assert hours.opens(local(D(2027, 2, 5), 19), SHANGHAI) == local(D(2027, 2, 8), 9)
        assert hours.opens(local(D(2027, 2, 6), 10), SHANGHAI) == local(D(2027, 2, 8), 9)
        assert hours.opens(local(D(2027, 2, 8), 10), SHANGHAI) == local(D(2027, 2, 8), 10)

    def test_without_hours_a_day_off_ends_at_midnight(self) -> None:
        hours = channel_hours((), (D(2027, 2, 6),))
        assert hours.opens(local(D(2027, 2, 6), 15), SHANGHAI) == local(D(2027, 2, 7), 0)
        assert hours.opens(local(D(2027, 2, 5), 23, 59), SHANGHAI) == local(D(2027, 2, 5), 23, 59)
        assert str(hours) == "all day except on 2027-02-06"

    @settings(deadline=None, max_examples=150)
    @given(
        offs=st.sets(st.integers(0, 20), max_size=12),
        start=st.integers(0, 20 * 24 * 60),
        worked=st.sampled_from([(), ("09:00-18:00",), ("20:00-02:00",)]),
    )
    def test_the_first_open_minute_not_on_a_day_off(
        self, offs: set[int], start: int, worked: tuple[str, ...]
    ) -> None:
        """Against the test's own minute-by-minute walk."""
        first = D(2027, 2, 1)
        days = tuple(sorted(first + dt.timedelta(days=n) for n in offs))
        hours = channel_hours(worked, days)
        plain = channel_hours(worked, ())
        at = local(first, 0) + dt.timedelta(minutes=start)
        expected = at
        while expected.date() in days or plain.opens(expected, SHANGHAI) != expected:
            expected += dt.timedelta(minutes=1)
        assert hours.opens(at, SHANGHAI) == expected


@pytest.mark.parametrize(
    ("zone", "day_off", "worked", "opens"),
    [
        # The clocks skip the midnight after the day off (00:00 -> 01:00): 01:00 opens.
        ("America/Santiago", D(2022, 9, 10), (), "2022-09-11T01:00:00-03:00"),
        ("Asia/Beirut", D(2019, 3, 30), (), "2019-03-31T01:00:00+03:00"),
        ("America/Havana", D(2023, 3, 11), ("20:00-02:00",), "2023-03-12T01:00:00-04:00"),
        # They go back from 00:00 to 23:00: the day off's hour shown twice is off too.
        ("America/Santiago", D(2023, 4, 1), (), "2023-04-02T00:00:00-04:00"),
    ],
)
def test_the_day_after_opens_at_its_first_instant_where_midnight_is_skipped_or_repeated(
    zone: str, day_off: dt.date, worked: tuple[str, ...], opens: str
) -> None:
    """The next local midnight is `datetime.combine` in the zone: one that does not exist
    reads as the instant the clocks jump to, not an hour early on the day off."""
    tz = zoneinfo.ZoneInfo(zone)
    hours = channel_hours(worked, (day_off,))
    noon = dt.datetime.combine(day_off, dt.time(12), tzinfo=tz)
    assert hours.opens(noon, tz) == dt.datetime.fromisoformat(opens)


def test_a_task_made_on_a_day_off_waits_for_the_first_hour_after_it() -> None:
    """The call made on the closed day is published when the centre opens the day
    after, at 10:00 (its hours), not dropped nor sent on the day."""
    closed = {"outbound_call": [AT.date().isoformat()]}
    p = DispatchPolicy.model_validate(
        {
            "timezone": "Asia/Shanghai",
            "hours": {"outbound_call": "10:00-18:00"},
            "closed_days": closed,
            "merge": {"hold_channels": []},
        }
    )
    call = moment("a", "care", Channel.OUTBOUND_CALL).model_copy(
        update={"expires_at": AT + dt.timedelta(days=3)}
    )
    opens_that_day = AT.replace(hour=10)
    next_day = (AT + dt.timedelta(days=1)).replace(hour=10, minute=0)
    [(at, out)] = published(p, [[call]], opens_that_day, next_day)
    assert at == next_day
    assert out["deferred"]["reason"] == "channel_hours"
    assert dt.datetime.fromisoformat(out["deferred"]["until"]) == next_day
    # An SMS the same day goes at once: only the listed channel is closed.
    [(at, out)] = published(p, [[moment("b", "welcome", Channel.SMS)]])
    assert (at, out["channel"]) == (AT, "sms")


def test_a_task_that_would_expire_over_the_days_off_is_dropped_as_expired() -> None:
    closed = {"outbound_call": [f"{AT.date().isoformat()}..{(AT + dt.timedelta(days=2)).date()}"]}
    p = DispatchPolicy.model_validate(
        {"timezone": "Asia/Shanghai", "closed_days": closed, "merge": {"hold_channels": []}}
    )
    call = moment("c", "care", Channel.OUTBOUND_CALL)  # expires a day after AT
    assert published(p, [[call]], AT + dt.timedelta(days=4)) == []


def test_a_channel_with_its_days_off_emptied_is_one_not_listed() -> None:
    """`manager: []` (the list emptied after the holiday) is no day off: the policy says
    every channel is worked all day (it said "channels worked  (Asia/Shanghai)", naming
    none), and its timetable is the one without the field, so a reload to it wakes no
    waiting task."""
    emptied = DispatchPolicy.model_validate({"closed_days": {"manager": []}})
    assert emptied.always_worked
    assert emptied.describe_hours() == "every channel worked all day"
    assert emptied.timetable() == DispatchPolicy().timetable()
    hours = {"outbound_call": "09:00-21:00"}
    both = DispatchPolicy.model_validate(
        {"hours": hours, "closed_days": {"manager": [], "outbound_call": ["2027-02-06"]}}
    )
    assert both.closed_days == {Channel.OUTBOUND_CALL: (D(2027, 2, 6),)}
    assert both.describe_hours() == (
        "channels worked outbound_call 09:00-21:00 except on 2027-02-06 (Asia/Shanghai), "
        "any other all day"
    )


@pytest.mark.parametrize(
    "elsewhere",
    [{}, {"hours": {"manager": "09:00-18:00"}}, {"closed_days": {"manager": ["2027-02-06"]}}],
    ids=["no hours", "manager's hours", "manager's day off"],
)
def test_a_channel_not_listed_is_judged_alike_whatever_the_others_hours(
    elsewhere: dict[str, object],
) -> None:
    """An SMS judged at 23:00 (a retry, a release) inside quiet hours that outlast it is
    dropped as expired, as under a policy with no hours at all: the SMS channel is worked
    all day. With the manager's hours or a day off of theirs in February, the SMS went out
    at once as an app push (its rule's fallback, for a channel not worked in time)."""
    at = local(D(2026, 11, 2), 23)
    p = DispatchPolicy.model_validate(
        {
            "timezone": "Asia/Shanghai",
            "overflow": {"low_balance": {"policy": "fallback", "channel": "app_push"}},
            **elsewhere,
        }
    )
    sms = moment("q", "low_balance", Channel.SMS).model_copy(
        update={
            "triggered_at": at - dt.timedelta(hours=2),
            "created_at": at - dt.timedelta(hours=2),
            "deliver_after": at - dt.timedelta(hours=2),
            "expires_at": local(D(2026, 11, 3), 7),
            "quiet_hours": QuietHours(
                zone="Asia/Shanghai", windows=["21:00-08:00"], channels=[Channel.SMS]
            ),
        }
    )
    clock = EventTime(at.timestamp())
    producer = CollectingProducer(clock)
    metrics = Metrics()
    sink = TaskSink(producer, "moments.tasks", memory_stores(clock), metrics, p, clock)
    asyncio.run(sink.dispatch([sms]))
    assert producer.sent == []
    assert metrics.suppressed.labels("low_balance", "expired")._value.get() == 1
