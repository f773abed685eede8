"""Quiet-hours windows: parsing, and the first open instant across midnight and DST."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import quiet_hours
from rules.quiet_hours import (
    QuietWindow,
    covers_whole_day,
    first_fall_back,
    first_instant_showing,
    next_open_instant,
    offset_changes,
    parse_window,
)

UTC = dt.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # DST moves the clock by 30 minutes
    "America/Santiago",  # the clocks change at midnight
    "Asia/Kathmandu",  # +05:45
    "Asia/Shanghai",
    "Pacific/Chatham",  # +12:45 / +13:45
]
# Instants at or near 2026 DST changes of the zones above (UTC).
ZONE_TRANSITIONS = [
    ("Europe/Berlin", dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # spring forward
    ("Europe/Berlin", dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),  # fall back
    ("America/New_York", dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    ("America/New_York", dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),
    ("Australia/Lord_Howe", dt.datetime(2026, 4, 4, 15, 0, tzinfo=UTC)),
    ("Australia/Lord_Howe", dt.datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
    ("America/Santiago", dt.datetime(2026, 4, 5, 3, 0, tzinfo=UTC)),
    ("America/Santiago", dt.datetime(2026, 9, 6, 4, 0, tzinfo=UTC)),
    ("Pacific/Chatham", dt.datetime(2026, 4, 4, 14, 0, tzinfo=UTC)),
    ("Pacific/Chatham", dt.datetime(2026, 9, 26, 14, 0, tzinfo=UTC)),
]
TRANSITIONS = [instant for _, instant in ZONE_TRANSITIONS]


def quiet_by_hand(instant: dt.datetime, windows: list[tuple[int, int]], tz: dt.tzinfo) -> bool:
    """The test's own reading of the rule: the local minute of day lies in [start, end)."""
    local = instant.astimezone(tz)
    minute = local.hour * 60 + local.minute + local.second / 60
    for start, end in windows:
        inside = start <= minute < end if start < end else minute >= start or minute < end
        if inside:
            return True
    return False


def as_windows(pairs: list[tuple[int, int]]) -> list[QuietWindow]:
    texts = [f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in pairs]
    return [parse_window(text) for text in texts]


minutes = st.integers(0, 24 * 60 - 1)
window_pairs = st.lists(
    st.tuples(minutes, minutes).filter(lambda pair: pair[0] != pair[1]), min_size=1, max_size=4
).filter(lambda pairs: not covers_whole_day(as_windows(pairs)))
instants = st.one_of(
    st.builds(
        lambda base, shift: base + dt.timedelta(minutes=shift),
        st.sampled_from(TRANSITIONS),
        st.integers(-36 * 60, 36 * 60),
    ),
    st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31)).map(
        lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC)
    ),
)
zones: st.SearchStrategy[dt.tzinfo] = st.one_of(
    st.sampled_from(ZONES).map(zoneinfo.ZoneInfo),
    st.integers(-12 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
)


@st.composite
def around_a_transition(
    draw: st.DrawFn,
) -> tuple[list[tuple[int, int]], dt.datetime, dt.tzinfo]:
    """A DST change, an instant within three hours of it and windows whose ends lie
    within three hours of the local time it happens at (so they meet the gap or fold)."""
    name, change = draw(st.sampled_from(ZONE_TRANSITIONS))
    tz = zoneinfo.ZoneInfo(name)
    before = (change - dt.timedelta(minutes=1)).astimezone(tz)
    middle = before.hour * 60 + before.minute + 1
    near = st.integers(-180, 180).map(lambda shift: (middle + shift) % (24 * 60))
    pairs = draw(
        st.lists(
            st.tuples(near, near).filter(lambda pair: pair[0] != pair[1]), min_size=1, max_size=3
        ).filter(lambda pairs: not covers_whole_day(as_windows(pairs)))
    )
    at = change + dt.timedelta(minutes=draw(st.integers(-180, 180)))
    return pairs, at, tz


class TestParseWindow:
    """`parse_window` reads HH:MM-HH:MM and says what to write when it cannot."""

    def test_a_window_crossing_midnight(self) -> None:
        window = parse_window("21:00-08:00")
        assert (window.start, window.end) == (dt.time(21), dt.time(8))
        assert window.crosses_midnight
        assert str(window) == "21:00-08:00"

    def test_spaces_and_one_digit_hours_are_read(self) -> None:
        assert str(parse_window(" 7:30 - 09:05 ")) == "07:30-09:05"

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("25:00-08:00", "25:00-08:00: hour must be 00-23; write HH:MM-HH:MM such as 21:00"),
            ("21:00-08:61", "21:00-08:61: minute must be 00-59; write HH:MM-HH:MM"),
            ("9pm-8am", "'9pm-8am' is not a time window; write HH:MM-HH:MM such as 21:00-08:00"),
            ("21:00", "'21:00' is not a time window"),
            ("08:00-08:00", "08:00-08:00: start and end are the same"),
        ],
    )
    def test_bad_windows_say_what_to_write(self, text: str, message: str) -> None:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            parse_window(text)


class TestContains:
    """A window is half-open: quiet from its start up to, not including, its end."""

    def test_ends_are_open_and_starts_closed(self) -> None:
        window = parse_window("21:00-08:00")
        assert window.contains(dt.time(21, 0))
        assert window.contains(dt.time(0, 0))
        assert window.contains(dt.time(7, 59, 59))
        assert not window.contains(dt.time(8, 0))
        assert not window.contains(dt.time(20, 59, 59))

    def test_whole_day_coverage_is_detected(self) -> None:
        assert covers_whole_day(as_windows([(0, 720), (720, 0)]))
        assert not covers_whole_day(as_windows([(0, 720), (721, 0)]))


class TestNextOpenInstant:
    """The first instant at or after a given one whose local clock is in no window."""

    def test_crossing_midnight_ends_next_morning(self) -> None:
        at = dt.datetime(2026, 11, 23, 22, 30, tzinfo=BERLIN)
        opens = next_open_instant(at, [parse_window("21:00-08:00")], BERLIN)
        assert opens == dt.datetime(2026, 11, 24, 8, 0, tzinfo=BERLIN)

    def test_early_morning_part_of_a_window_ends_the_same_day(self) -> None:
        at = dt.datetime(2026, 11, 24, 3, 0, tzinfo=BERLIN)
        opens = next_open_instant(at, [parse_window("21:00-08:00")], BERLIN)
        assert opens == dt.datetime(2026, 11, 24, 8, 0, tzinfo=BERLIN)

    def test_touching_and_overlapping_windows_chain(self) -> None:
        windows = as_windows([(21 * 60, 23 * 60), (23 * 60, 2 * 60), (60, 9 * 60)])
        at = dt.datetime(2026, 11, 23, 21, 5, tzinfo=BERLIN)
        assert next_open_instant(at, windows, BERLIN) == dt.datetime(
            2026, 11, 24, 9, 0, tzinfo=BERLIN
        )

    def test_an_instant_outside_every_window_is_its_own_answer(self) -> None:
        at = dt.datetime(2026, 11, 23, 12, 0, 30, tzinfo=BERLIN)
        assert next_open_instant(at, [parse_window("21:00-08:00")], BERLIN) == at

    def test_windows_covering_the_whole_day_never_open(self) -> None:
        at = dt.datetime(2026, 11, 23, 12, 0, tzinfo=BERLIN)
        assert next_open_instant(at, as_windows([(0, 720), (720, 0)]), BERLIN) is None

    def test_spring_forward_night_ends_at_eight_summer_time(self) -> None:
        """The night of 2026-03-29 in Berlin is an hour short; 08:00 is 06:00 UTC."""
        at = dt.datetime(2026, 3, 28, 22, 0, tzinfo=BERLIN)
        opens = next_open_instant(at, [parse_window("21:00-08:00")], BERLIN)
        assert opens == dt.datetime(2026, 3, 29, 6, 0, tzinfo=UTC)

    def test_a_window_ending_inside_the_spring_gap_ends_when_the_clocks_jump(self) -> None:
        """02:30 never happens on 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST."""
        at = dt.datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN)
        opens = next_open_instant(at, [parse_window("01:00-02:30")], BERLIN)
        assert opens == dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
        assert opens is not None
        assert opens.astimezone(BERLIN).time() == dt.time(3, 0)

    def test_fall_back_night_ends_at_eight_winter_time(self) -> None:
        """The night of 2026-10-25 in Berlin is an hour long; 08:00 CET is 07:00 UTC."""
        at = dt.datetime(2026, 10, 24, 21, 0, tzinfo=BERLIN)
        opens = next_open_instant(at, [parse_window("21:00-08:00")], BERLIN)
        assert opens == dt.datetime(2026, 10, 25, 7, 0, tzinfo=UTC)

    def test_in_the_repeated_hour_each_pass_ends_at_its_own_half_past(self) -> None:
        """02:00-03:00 happens twice on 2026-10-25 in Berlin, first in CEST then in CET."""
        window = [parse_window("02:00-02:30")]
        first = dt.datetime(2026, 10, 25, 2, 10, tzinfo=BERLIN)  # 00:10 UTC
        second = dt.datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=BERLIN)  # 01:10 UTC
        assert next_open_instant(first, window, BERLIN) == dt.datetime(
            2026, 10, 25, 0, 30, tzinfo=UTC
        )
        assert next_open_instant(second, window, BERLIN) == dt.datetime(
            2026, 10, 25, 1, 30, tzinfo=UTC
        )

    def test_a_gap_at_midnight_is_crossed(self) -> None:
        """Santiago skips 00:00-01:00 on 2026-09-06; a window ending at 00:30 ends at the jump."""
        santiago = zoneinfo.ZoneInfo("America/Santiago")
        at = dt.datetime(2026, 9, 5, 23, 0, tzinfo=santiago)
        opens = next_open_instant(at, [parse_window("22:00-00:30")], santiago)
        assert opens == dt.datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
        assert not quiet_by_hand(opens, [(22 * 60, 30)], santiago)

    @settings(deadline=None, max_examples=150)
    @given(pairs=window_pairs, at=instants, tz=zones)
    def test_matches_a_minute_by_minute_walk(
        self, pairs: list[tuple[int, int]], at: dt.datetime, tz: dt.tzinfo
    ) -> None:
        """Windows and offsets are whole minutes, so the answer is the first open minute."""
        expected = at
        while quiet_by_hand(expected, pairs, tz):
            expected += dt.timedelta(minutes=1)
        assert next_open_instant(at, as_windows(pairs), tz) == expected

    @settings(deadline=None, max_examples=300)
    @given(case=around_a_transition())
    def test_matches_a_minute_by_minute_walk_around_dst_changes(
        self, case: tuple[list[tuple[int, int]], dt.datetime, dt.tzinfo]
    ) -> None:
        pairs, at, tz = case
        expected = at
        while quiet_by_hand(expected, pairs, tz):
            expected += dt.timedelta(minutes=1)
        assert next_open_instant(at, as_windows(pairs), tz) == expected

    @settings(deadline=None)
    @given(pairs=window_pairs, at=instants, tz=zones, seconds=st.integers(0, 59))
    def test_is_never_quiet_never_early_and_right_after_quiet(
        self, pairs: list[tuple[int, int]], at: dt.datetime, tz: dt.tzinfo, seconds: int
    ) -> None:
        at += dt.timedelta(seconds=seconds)
        opens = next_open_instant(at, as_windows(pairs), tz)
        assert opens is not None
        assert opens >= at
        assert not quiet_by_hand(opens, pairs, tz)
        if opens > at:
            assert quiet_by_hand(opens - dt.timedelta(seconds=1), pairs, tz)


class TestFirstInstantShowing:
    """A naive local time to the first instant whose clock shows it, or later."""

    def test_ambiguous_time_gives_the_first_occurrence_not_before(self) -> None:
        wall = dt.datetime(2026, 10, 25, 2, 30)
        start = dt.datetime(2026, 10, 24, 0, 0, tzinfo=UTC)
        assert first_instant_showing(wall, BERLIN, start) == dt.datetime(
            2026, 10, 25, 0, 30, tzinfo=UTC
        )
        later = dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
        assert first_instant_showing(wall, BERLIN, later) == dt.datetime(
            2026, 10, 25, 1, 30, tzinfo=UTC
        )

    def test_a_time_already_passed_is_refused(self) -> None:
        wall = dt.datetime(2026, 11, 23, 8, 0)
        with pytest.raises(ValueError, match="not shown"):
            first_instant_showing(wall, BERLIN, dt.datetime(2026, 11, 24, tzinfo=UTC))


class TestOffsetChanges:
    """The cached per-day transitions that `first_fall_back` reads."""

    @pytest.mark.parametrize(("name", "near"), ZONE_TRANSITIONS)
    def test_each_known_change_is_found_to_the_second(self, name: str, near: dt.datetime) -> None:
        tz = zoneinfo.ZoneInfo(name)
        day = int(near.timestamp()) // 86400
        changes = [c for d in (day - 1, day, day + 1) for c in offset_changes(tz, d)]
        assert len(changes) == 1
        at, before, after = changes[0]
        assert dt.datetime.fromtimestamp(at - 1, tz).utcoffset() == before
        assert dt.datetime.fromtimestamp(at, tz).utcoffset() == after != before

    def test_fall_back_is_found_only_inside_the_interval(self) -> None:
        change = dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # Berlin goes back to +01:00
        hour = dt.timedelta(hours=1)
        assert first_fall_back(change - 10 * hour, change + 10 * hour, BERLIN) == change
        assert first_fall_back(change - hour, change, BERLIN) == change  # (start, end]
        assert first_fall_back(change, change + hour, BERLIN) is None
        assert first_fall_back(change - 3 * hour, change - hour, BERLIN) is None
        spring = dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # forward, not back
        assert first_fall_back(spring - hour, spring + hour, BERLIN) is None

    def test_an_interval_of_days_finds_the_change_on_a_later_day(self) -> None:
        change = dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
        start = change - dt.timedelta(days=2, hours=5)
        assert first_fall_back(start, change + dt.timedelta(days=1), BERLIN) == change

    def test_a_fixed_offset_never_changes(self) -> None:
        fixed = dt.timezone(dt.timedelta(hours=5, minutes=45))
        assert offset_changes(fixed, 20_000) == ()


class TestRememberedSpans:
    """`next_open_instant` answers from the quiet spans it walked before exactly as the walk."""

    @settings(deadline=None, max_examples=300)
    @given(
        pairs=window_pairs,
        name=st.sampled_from(ZONES),
        base=st.sampled_from(TRANSITIONS),
        # Queries cluster around a few instants, so many fall in, at or near a walked span.
        shifts=st.lists(st.integers(-36, 36), min_size=1, max_size=4).flatmap(
            lambda hours: st.lists(
                st.tuples(st.sampled_from(hours), st.integers(-3600, 3600)).map(
                    lambda pick: pick[0] * 3600 + pick[1]
                ),
                min_size=1,
                max_size=30,
            )
        ),
        micros=st.integers(0, 999_999),
        in_order=st.booleans(),
    )
    def test_matches_the_walk_for_any_sequence_of_queries(
        self,
        pairs: list[tuple[int, int]],
        name: str,
        base: dt.datetime,
        shifts: list[int],
        micros: int,
        in_order: bool,
    ) -> None:
        tz = zoneinfo.ZoneInfo(name)
        windows = as_windows(pairs)
        quiet_hours._spans.clear()
        quiet_hours._open.clear()
        queries = [
            base + dt.timedelta(seconds=shift, microseconds=micros)
            for shift in (sorted(shifts) if in_order else shifts)
        ]
        budget = 4 * len(queries)
        while queries and budget:
            budget -= 1
            at = queries.pop(0)
            expected = quiet_hours._walk(at.astimezone(UTC), windows, tz)
            opens = next_open_instant(at.astimezone(tz), windows, tz)
            assert opens == expected
            assert opens is None or opens.tzinfo is UTC
            tick = dt.timedelta(microseconds=1)
            if opens is not None and opens > at:  # a span was walked: ask at its edges too
                queries[:0] = [at - tick, opens - tick, opens, opens + tick]
            elif opens is not None:  # open: ask at the edges of the open span remembered
                spans = quiet_hours._open.get((tuple(windows), tz), [])
                until = next((u for s, u in spans if s <= opens < u), None)
                if until is not None:
                    queries[:0] = [until - tick, until, until + tick]

    def test_a_query_inside_an_open_span_is_answered_without_walking(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        windows = [parse_window("21:00-08:00"), parse_window("12:00-13:00")]
        quiet_hours._open.clear()
        morning = dt.datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN)
        assert next_open_instant(morning, windows, BERLIN) == morning
        monkeypatch.setattr(quiet_hours, "_walk", None)  # a walk would now fail
        later = dt.datetime(2026, 11, 23, 11, 59, 59, tzinfo=BERLIN)
        assert next_open_instant(later, windows, BERLIN) == later
        with pytest.raises(TypeError):  # noon is quiet: past the span, the walk is asked
            next_open_instant(dt.datetime(2026, 11, 23, 12, 0, tzinfo=BERLIN), windows, BERLIN)

    def test_a_query_inside_a_walked_span_is_answered_without_walking(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        windows = [parse_window("21:00-08:00")]
        quiet_hours._spans.clear()
        first = next_open_instant(dt.datetime(2026, 11, 23, 22, 0, tzinfo=BERLIN), windows, BERLIN)
        monkeypatch.setattr(quiet_hours, "_walk", None)  # a walk would now fail
        later = dt.datetime(2026, 11, 24, 7, 59, 59, tzinfo=BERLIN)
        assert next_open_instant(later, windows, BERLIN) == first


class TestProfileWindows:
    """A profile's window from a time to itself (`00:00-00:00`, a CRM's "all day") is
    refused, as the rules files refuse one: it was taken, then dropped unsaid when the
    gates read it (`lenient_window`), and the customer it was meant to keep from every
    contact was contacted at 13:00."""

    @staticmethod
    def _profile(windows: list[str]) -> bytes:
        return (
            '{"event_id": "p1", "subscriber_id": "13800138000", '
            '"occurred_at": "2026-11-22T09:00:00+08:00", "quiet_hours": ['
            + ", ".join(f'"{w}"' for w in windows)
            + "]}"
        ).encode()

    @pytest.mark.parametrize("windows", [["00:00-00:00"], ["22:00-08:00", "13:30-13:30"]])
    def test_a_window_from_a_time_to_itself_is_a_dead_letter(self, windows: list[str]) -> None:
        from moments.decoding import decode
        from moments.models import EventType
        from moments.records import DeadLetter, RawRecord, RejectReason

        value = self._profile(windows)
        dead = decode(RawRecord("p", 0, 0, b"13800138000", value), EventType.PROFILE)
        assert isinstance(dead, DeadLetter)
        assert dead.reason is RejectReason.INVALID_EVENT
        assert dead.message.startswith(
            f"quiet_hours.{len(windows) - 1}: start and end are the same, so the window is "
            "empty or the whole day"
        )

    @pytest.mark.parametrize(
        ("windows", "valid"),
        [(["00:00-00:00"], False), (["07:30-07:30"], False), (["00:00-00:01"], True)],
    )
    def test_the_schema_says_the_same(self, windows: list[str], valid: bool) -> None:
        import json
        from pathlib import Path

        from jsonschema import Draft202012Validator

        path = Path(__file__).resolve().parents[2] / "schemas" / "profile-event.schema.json"
        schema = json.loads(path.read_text())
        assert Draft202012Validator(schema).is_valid(json.loads(self._profile(windows))) is valid
