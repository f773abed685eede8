"""Channel hours (`hours:` in the dispatch policy): their format, when a channel opens, and
the first instant its hours and a customer's quiet hours (another zone) both allow."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from moments.exceptions import ConfigError
from moments.models import Channel
from rules.quiet_hours import covers_whole_day, next_open_instant
from sinks.hours import channel_hours, complement, first_allowed, hours_text
from sinks.policy import DispatchPolicy, load_policy
from tests.unit.test_quiet_hours import as_windows, instants, quiet_by_hand, zones

UTC = dt.UTC
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
MINUTE = dt.timedelta(minutes=1)

minutes = st.integers(0, 24 * 60 - 1)
pairs = st.tuples(minutes, minutes).filter(lambda pair: pair[0] != pair[1])
open_pairs = st.lists(pairs, min_size=1, max_size=3).filter(
    lambda ps: not covers_whole_day(as_windows(ps))
)


def texts(ps: list[tuple[int, int]]) -> tuple[str, ...]:
    return tuple(str(w) for w in as_windows(ps))


class TestFormat:
    """One window or a list, normalised; what cannot be worked with is refused, naming
    the fix."""

    def test_one_window_or_a_list_normalised(self) -> None:
        assert hours_text("9:00 - 21:00") == ("09:00-21:00",)
        assert hours_text(["09:00-12:00", "13:00-18:00"]) == ("09:00-12:00", "13:00-18:00")

    def test_a_window_may_cross_midnight(self) -> None:
        hours = channel_hours(hours_text("20:00-02:00"))
        assert [str(w) for w in hours.closed] == ["02:00-20:00"]
        late = dt.datetime(2026, 11, 24, 1, 59, tzinfo=SHANGHAI)
        assert hours.opens(late, SHANGHAI) == late  # open: now
        two = dt.datetime(2026, 11, 24, 2, 0, tzinfo=SHANGHAI)
        assert hours.opens(two, SHANGHAI) == dt.datetime(2026, 11, 24, 20, tzinfo=SHANGHAI)

    @pytest.mark.parametrize(
        ("value", "says"),
        [
            ("9-21", "'9-21' is not a time window; write the hours the channel is worked"),
            ("09:00-24:00", "hour must be 00-23; write the hours the channel is worked"),
            ("09:00-09:00", "start and end are the same"),
            ([], "no window, so the channel would never be worked"),
            (["00:00-12:00", "12:00-00:00"], "cover the whole day; remove the channel from hours"),
            # overlapping windows: a typo of a lunch break, or a window written twice; they
            # were taken silently (policy walk)
            (["09:00-13:00", "12:00-18:00"], "09:00-13:00 and 12:00-18:00 overlap (12:00-13:00)"),
            (["09:00-12:00", "09:00-12:00"], "09:00-12:00 and 09:00-12:00 overlap (09:00-12:00)"),
            (["20:00-02:00", "01:00-03:00"], "20:00-02:00 and 01:00-03:00 overlap (01:00-02:00)"),
            (9, "9: write the hours the channel is worked, HH:MM-HH:MM such as 09:00-21:00"),
        ],
    )
    def test_refused_with_the_fix(self, value: object, says: str) -> None:
        """Each message names the fix (an overlap: one window, or the break between)."""
        with pytest.raises(ValueError, match=re.escape(says)):
            hours_text(value)

    def test_the_policy_file_names_the_channel_and_the_fix(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.yaml"
        path.write_text("hours:\n  outbound_call: 09:00-09:00\n  fax: 09:00-18:00\n")
        with pytest.raises(ConfigError) as err:
            load_policy(path)
        said = str(err.value)
        assert f"{path}:2:18: hours.outbound_call: 09:00-09:00: start and end" in said
        assert "remove the channel from hours to have it open all day" in said
        assert f"{path}:3:3: hours.fax: 'fax' is not a channel: write one of sms," in said

    def test_moments_check_says_them_in_words(self, tmp_path: Path) -> None:
        from moments.check import _policy
        from moments.settings import Settings

        path = tmp_path / "policy.yaml"
        path.write_text("hours: {outbound_call: 9:00-21:00, manager: [09:00-12:00, 13:00-18:00]}\n")
        finding, _ = _policy(Settings(dispatch_policy=path))
        assert finding.detail == (
            f"{path}; no capacity limit; channels worked outbound_call 09:00-21:00; "
            "manager 09:00-12:00, 13:00-18:00 (Asia/Shanghai), any other all day"
        )

    def test_a_channel_not_listed_is_open_all_day(self) -> None:
        policy = DispatchPolicy.model_validate(
            {"hours": {"outbound_call": "09:00-21:00", "manager": ["09:00-12:00", "13:00-18:00"]}}
        )
        assert policy.hours_for(Channel.SMS) is None
        manager = policy.hours_for(Channel.MANAGER)
        assert manager is not None
        assert [str(w) for w in manager.closed] == ["12:00-13:00", "18:00-09:00"]


class TestComplement:
    @settings(deadline=None, max_examples=200)
    @given(ps=open_pairs)
    def test_every_minute_is_open_or_closed_not_both(self, ps: list[tuple[int, int]]) -> None:
        closed = [
            (w.start.hour * 60 + w.start.minute, w.end.hour * 60 + w.end.minute)
            for w in complement(as_windows(ps))
        ]
        day = dt.datetime(2026, 1, 1, tzinfo=UTC)
        for minute in range(24 * 60):
            at = day + minute * MINUTE
            assert quiet_by_hand(at, ps, UTC) != quiet_by_hand(at, closed, UTC)


def open_by_hand(at: dt.datetime, ps: list[tuple[int, int]], tz: dt.tzinfo) -> bool:
    """The test's own reading: the operator's local minute lies in an open window."""
    return quiet_by_hand(at, ps, tz)


class TestOpens:
    @settings(deadline=None, max_examples=200)
    @given(ps=open_pairs, at=instants, tz=zones)
    def test_the_first_open_minute(
        self, ps: list[tuple[int, int]], at: dt.datetime, tz: dt.tzinfo
    ) -> None:
        expected = at
        while not open_by_hand(expected, ps, tz):
            expected += MINUTE
        assert channel_hours(texts(ps)).opens(at, tz) == expected

    def test_a_call_at_half_past_midnight_waits_for_nine(self) -> None:
        hours = channel_hours(("09:00-21:00",))
        night = dt.datetime(2026, 11, 24, 0, 30, tzinfo=SHANGHAI)
        assert hours.opens(night, SHANGHAI) == dt.datetime(2026, 11, 24, 9, tzinfo=SHANGHAI)

    def test_nine_on_the_day_the_clocks_go_forward(self) -> None:
        """Berlin 2026-03-29: 02:00 becomes 03:00; the centre still opens at 09:00 local."""
        hours = channel_hours(("09:00-21:00",))
        night = dt.datetime(2026, 3, 28, 22, tzinfo=BERLIN)
        assert hours.opens(night, BERLIN) == dt.datetime(2026, 3, 29, 7, tzinfo=UTC)


class TestFirstAllowed:
    """The channel's hours in the operator's zone and the customer's quiet hours in
    theirs: the instant found is inside both, and no earlier minute is."""

    @settings(deadline=None, max_examples=150)
    @given(
        worked=open_pairs,
        quiet=open_pairs,
        at=instants,
        operator=zones,
        customer=zones,
    )
    def test_inside_both_and_no_earlier_instant_is(
        self,
        worked: list[tuple[int, int]],
        quiet: list[tuple[int, int]],
        at: dt.datetime,
        operator: dt.tzinfo,
        customer: dt.tzinfo,
    ) -> None:
        hours = channel_hours(texts(worked))
        quiet_windows = as_windows(quiet)

        def allowed(instant: dt.datetime) -> bool:
            return open_by_hand(instant, worked, operator) and not quiet_by_hand(
                instant, quiet, customer
            )

        # The first minute both allow, walked by hand over three days; none (the hours
        # lie inside the quiet hours): the rounds run out, as the docstring says.
        day_minutes = 3 * 24 * 60
        first = next(
            (at + n * MINUTE for n in range(day_minutes) if allowed(at + n * MINUTE)), None
        )
        assume(first is not None)
        found = first_allowed(
            at,
            [
                lambda t: hours.opens(t, operator),
                lambda t: next_open_instant(t, quiet_windows, customer),
            ],
        )
        assert found == first

    def test_a_customer_abroad_waits_for_the_centre_and_their_morning(self) -> None:
        """Calls 09:00-21:00 in Shanghai; a customer in Berlin, quiet 21:00-08:00 there.
        At 00:30 Shanghai (17:30 Berlin) the centre is closed; at 09:00 Shanghai it is
        02:00 in Berlin; the first instant both allow is 08:00 Berlin = 15:00 Shanghai."""
        hours = channel_hours(("09:00-21:00",))
        quiet = as_windows([(21 * 60, 8 * 60)])
        at = dt.datetime(2026, 11, 24, 0, 30, tzinfo=SHANGHAI)
        found = first_allowed(
            at,
            [
                lambda t: hours.opens(t, SHANGHAI),
                lambda t: next_open_instant(t, quiet, BERLIN),
            ],
        )
        assert found == dt.datetime(2026, 11, 24, 15, tzinfo=SHANGHAI)

    def test_never_when_one_never_allows_and_bounded_when_they_never_meet(self) -> None:
        at = dt.datetime(2026, 11, 24, tzinfo=UTC)
        assert first_allowed(at, [lambda t: t, lambda t: None]) is None
        hours = channel_hours(("09:00-10:00",))
        quiet = as_windows([(8 * 60, 11 * 60)])  # covers every hour the channel is worked
        found = first_allowed(
            at,
            [lambda t: hours.opens(t, UTC), lambda t: next_open_instant(t, quiet, UTC)],
            rounds=4,
        )
        # Not allowed, but no earlier instant is either: waiting until then loses nothing.
        assert found is not None
        assert found > at + dt.timedelta(days=1)
