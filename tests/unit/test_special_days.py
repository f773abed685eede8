"""Special days: the occasions due on a subscriber's local day, and when the daily
evaluation is due in the subscriber's own time zone (DST gaps and repeats included)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moments.models import EventType
from moments.pipeline import run_pipeline
from rules.calendar import HolidayCalendar, parse_calendar
from rules.catalog import RuleSet, load_rules
from rules.explain import explain
from rules.special_days import (
    ALL_KINDS,
    Occasion,
    SpecialDayConfig,
    due_now,
    evaluation_instant,
    local_day_at,
    next_evaluation,
    special_days_due,
)

from .rules.helpers import BIRTHDAY, CONTRACT_LEAD, NO_GATES, at, ev, rules_from, run

D = dt.date
UTC = dt.UTC
CALENDAR = HolidayCalendar.default()
CONFIG = SpecialDayConfig()
NO_HOLIDAYS = SpecialDayConfig(kinds=frozenset({"birthday", "join_anniversary", "contract_expiry"}))


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def due(profile: dict[str, Any], day: dt.date, config: SpecialDayConfig = CONFIG) -> list[Occasion]:
    return special_days_due(profile, day, config, CALENDAR)


def kinds(profile: dict[str, Any], day: dt.date, config: SpecialDayConfig = CONFIG) -> list[str]:
    return [o.occurrence for o in due(profile, day, config)]


def days_of_year(year: int) -> list[dt.date]:
    start = D(year, 1, 1)
    return [start + dt.timedelta(days=i) for i in range((D(year + 1, 1, 1) - start).days)]


def valid_month_day(month: int, day: int) -> bool:
    try:
        D(2000, month, day)
    except ValueError:
        return False
    return True


MONTH_DAYS = st.tuples(st.integers(1, 12), st.integers(1, 31)).filter(
    lambda md: valid_month_day(*md)
)
YEARS = st.integers(min_value=2000, max_value=2099)


class TestBirthday:
    def test_on_the_day(self) -> None:
        assert due({"birthday": "07-14"}, D(2026, 7, 14)) == [
            Occasion("birthday", "birthday:2026", {"birthday": "07-14"})
        ]
        assert due({"birthday": "07-14"}, D(2026, 7, 13)) == []

    def test_a_full_date_counts_by_month_and_day(self) -> None:
        assert kinds({"birthday": "1990-07-14"}, D(2027, 7, 14)) == ["birthday:2027"]

    def test_feb_29_in_a_common_year_is_feb_28(self) -> None:
        profile = {"birthday": "02-29"}
        assert kinds(profile, D(2027, 2, 28)) == ["birthday:2027"]
        assert kinds(profile, D(2027, 3, 1)) == []
        assert kinds(profile, D(2028, 2, 29)) == ["birthday:2028"]
        assert kinds(profile, D(2028, 2, 28)) == []

    @settings(max_examples=25, deadline=None)
    @given(month_day=MONTH_DAYS, year=YEARS)
    def test_exactly_once_a_year(self, month_day: tuple[int, int], year: int) -> None:
        profile = {"birthday": f"{month_day[0]:02d}-{month_day[1]:02d}"}
        fired = [
            (day, o.occurrence)
            for day in days_of_year(year)
            for o in due(profile, day, NO_HOLIDAYS)
        ]
        assert len(fired) == 1
        day, occurrence = fired[0]
        assert occurrence == f"birthday:{year}"
        if valid_month_day(*month_day) and (month_day != (2, 29) or day.day == 29):
            assert (day.month, day.day) == month_day
        else:
            assert day == D(year, 2, 28)


class TestJoinAnniversary:
    def test_from_the_first_full_year(self) -> None:
        profile = {"joined_on": "2020-03-15"}
        assert due(profile, D(2026, 3, 15)) == [
            Occasion(
                "join_anniversary", "join_anniversary:2026", {"years": 6, "joined_on": "2020-03-15"}
            )
        ]
        assert kinds(profile, D(2020, 3, 15)) == []
        assert kinds(profile, D(2021, 3, 15)) == ["join_anniversary:2021"]

    def test_joined_on_feb_29(self) -> None:
        profile = {"joined_on": "2024-02-29"}
        (occasion,) = due(profile, D(2025, 2, 28))
        assert occasion.params["years"] == 1
        assert kinds(profile, D(2028, 2, 29)) == ["join_anniversary:2028"]
        assert kinds(profile, D(2028, 2, 28)) == []

    @settings(max_examples=25, deadline=None)
    @given(joined=st.dates(D(1990, 1, 1), D(2030, 12, 31)), year=YEARS)
    def test_once_a_year_after_joining(self, joined: dt.date, year: int) -> None:
        profile = {"joined_on": joined.isoformat()}
        fired = [due(profile, day, NO_HOLIDAYS) for day in days_of_year(year)]
        occasions = [o for day in fired for o in day]
        if year <= joined.year:
            assert occasions == []
        else:
            (occasion,) = occasions
            assert occasion.occurrence == f"join_anniversary:{year}"
            assert occasion.params["years"] == year - joined.year


class TestContractExpiry:
    def test_lead_days_before_the_end(self) -> None:
        profile = {"contract_end": "2027-01-31"}
        assert due(profile, D(2027, 1, 1), NO_HOLIDAYS) == [
            Occasion(
                "contract_expiry",
                "contract_expiry:2027-01-31",
                {"contract_end": "2027-01-31", "days_left": 30},
            )
        ]
        assert kinds(profile, D(2026, 12, 31)) == []

    def test_a_missed_day_is_caught_up_until_the_end_with_the_same_key(self) -> None:
        profile = {"contract_end": "2027-01-31"}
        (late,) = due(profile, D(2027, 1, 20))
        (last,) = due(profile, D(2027, 1, 31))
        assert (late.occurrence, late.params["days_left"]) == ("contract_expiry:2027-01-31", 11)
        assert (last.occurrence, last.params["days_left"]) == ("contract_expiry:2027-01-31", 0)
        assert kinds(profile, D(2027, 2, 1)) == []

    def test_already_fired_is_left_out(self) -> None:
        profile = {"contract_end": "2027-01-31", "birthday": "01-20"}
        found = special_days_due(
            profile, D(2027, 1, 20), CONFIG, CALENDAR, fired={"contract_expiry:2027-01-31"}
        )
        assert [o.occurrence for o in found] == ["birthday:2027"]

    def test_a_renewed_contract_is_a_new_occurrence(self) -> None:
        assert kinds({"contract_end": "2028-01-31"}, D(2028, 1, 10)) == [
            "contract_expiry:2028-01-31"
        ]

    @settings(max_examples=40, deadline=None)
    @given(end=st.dates(D(2020, 1, 1), D(2035, 12, 31)), lead=st.integers(0, 120))
    def test_due_exactly_from_lead_days_before_to_the_end(self, end: dt.date, lead: int) -> None:
        config = SpecialDayConfig(lead_days=lead, kinds=frozenset({"contract_expiry"}))
        profile = {"contract_end": end.isoformat()}
        window = range(-lead - 3, 4)
        fired = {offset: due(profile, end + dt.timedelta(days=offset), config) for offset in window}
        assert {o for o, found in fired.items() if found} == set(range(-lead, 1))
        occasions = [o for found in fired.values() for o in found]
        assert {o.occurrence for o in occasions} == {f"contract_expiry:{end.isoformat()}"}
        assert sorted(o.params["days_left"] for o in occasions) == list(range(lead + 1))


class TestHoliday:
    def test_spring_festival(self) -> None:
        assert due({}, D(2026, 2, 17)) == [
            Occasion(
                "holiday",
                "holiday:spring_festival:2026",
                {
                    "holiday": "spring_festival",
                    "name": "Spring Festival",
                    "local_name": "春节",
                    "date": "2026-02-17",
                    "also": [],
                },
            )
        ]

    def test_one_greeting_on_a_day_with_two_holidays(self) -> None:
        calendar = parse_calendar(
            "op.yaml", "holidays:\n  - key: our_day\n    name: Our day\n    every_year: 10-01\n"
        )
        (occasion,) = special_days_due({}, D(2026, 10, 1), CONFIG, calendar)
        assert occasion.occurrence == "holiday:our_day:2026"
        assert occasion.params["also"] == ["national_day"]

    def test_mid_autumn_on_national_day(self) -> None:
        """In 2020 the 15th of the 8th lunar month was October 1st: one greeting."""
        (occasion,) = due({}, D(2020, 10, 1))
        assert occasion.occurrence == "holiday:mid_autumn:2020"
        assert occasion.params["also"] == ["national_day"]

    @settings(max_examples=10, deadline=None)
    @given(year=st.integers(2008, 2099))
    def test_each_holiday_occurrence_once_a_year(self, year: int) -> None:
        config = SpecialDayConfig(kinds=frozenset({"holiday"}))
        occurrences = [o.occurrence for day in days_of_year(year) for o in due({}, day, config)]
        holiday_days = {h.day for h in CALENDAR.in_year(year)}
        assert len(occurrences) == len(set(occurrences)) == len(holiday_days)
        assert all(o.endswith(f":{year}") for o in occurrences)


class TestWhoGetsWhat:
    def test_a_closed_line_gets_nothing(self) -> None:
        profile = {"status": "closed", "birthday": "02-17", "joined_on": "2020-02-17"}
        assert due(profile, D(2026, 2, 17)) == []

    def test_a_suspended_line_still_gets_its_occasions(self) -> None:
        """Do-not-disturb defers them until the line is active again; detection keeps them."""
        profile = {"status": "suspended", "birthday": "02-17", "contract_end": "2026-03-01"}
        assert kinds(profile, D(2026, 2, 17)) == [
            "birthday:2026",
            "contract_expiry:2026-03-01",
            "holiday:spring_festival:2026",
        ]

    def test_all_four_on_one_day_in_a_fixed_order(self) -> None:
        profile = {
            "birthday": "10-01",
            "joined_on": "2016-10-01",
            "contract_end": "2026-10-15",
            "status": "active",
            "tier": "gold",
        }
        assert kinds(profile, D(2026, 10, 1)) == [
            "birthday:2026",
            "join_anniversary:2026",
            "contract_expiry:2026-10-15",
            "holiday:national_day:2026",
        ]

    def test_kinds_can_be_turned_off(self) -> None:
        profile = {"birthday": "10-01"}
        only = SpecialDayConfig(kinds=frozenset({"holiday"}))
        assert kinds(profile, D(2026, 10, 1), only) == ["holiday:national_day:2026"]

    @pytest.mark.parametrize(
        "profile",
        [
            {"birthday": "13-45"},
            {"birthday": "02-30"},
            {"birthday": "7-14"},
            {"birthday": 714},
            {"birthday": None},
            {"joined_on": "2020/07/14"},
            {"joined_on": 20200714},
            {"contract_end": "soon"},
            {"contract_end": ["2026-07-20"]},
        ],
    )
    def test_a_malformed_field_gives_nothing_and_never_raises(
        self, profile: dict[str, Any]
    ) -> None:
        assert due(profile, D(2026, 7, 14), NO_HOLIDAYS) == []

    def test_dates_as_objects_work_too(self) -> None:
        profile = {"birthday": D(1990, 7, 14), "contract_end": D(2026, 7, 20)}
        assert kinds(profile, D(2026, 7, 14), NO_HOLIDAYS) == [
            "birthday:2026",
            "contract_expiry:2026-07-20",
        ]

    def test_an_occasion_is_frozen_and_hashable(self) -> None:
        occasion = Occasion("birthday", "birthday:2026", {"birthday": "07-14"})
        assert {occasion, Occasion("birthday", "birthday:2026", {"birthday": "07-14"})} == {
            occasion
        }
        with pytest.raises(AttributeError):
            occasion.kind = "holiday"  # type: ignore[misc]


class TestConfig:
    def test_defaults(self) -> None:
        assert (CONFIG.lead_days, CONFIG.kinds, CONFIG.skip_statuses) == (
            30,
            ALL_KINDS,
            frozenset({"closed"}),
        )

    @pytest.mark.parametrize("lead", [-1, 367])
    def test_lead_days_out_of_range(self, lead: int) -> None:
        with pytest.raises(ValueError, match=r"from 0 to 366, e\.g\. 30"):
            SpecialDayConfig(lead_days=lead)

    def test_unknown_kind(self) -> None:
        with pytest.raises(ValueError, match="choose from"):
            SpecialDayConfig(kinds=frozenset({"name_day"}))  # type: ignore[arg-type]


class TestLocalDay:
    def test_in_the_subscribers_zone(self) -> None:
        instant = utc(2026, 11, 22, 17, 0)
        assert local_day_at("Asia/Shanghai", instant) == D(2026, 11, 23)
        assert local_day_at("America/New_York", instant) == D(2026, 11, 22)

    @pytest.mark.parametrize("name", [None, "", "Mars/Olympus_Mons", "../../etc/passwd"])
    def test_unknown_zone_is_shanghai(self, name: str | None) -> None:
        assert local_day_at(name, utc(2026, 11, 22, 16, 0)) == D(2026, 11, 23)
        assert next_evaluation(name, utc(2026, 11, 22, 16, 0)) == utc(2026, 11, 23, 1, 0)

    def test_a_naive_datetime_is_refused_with_the_fix(self) -> None:
        with pytest.raises(ValueError, match=r"datetime\.now\(UTC\)"):
            local_day_at("Asia/Shanghai", dt.datetime(2026, 11, 22, 16))


class TestNextEvaluation:
    def test_shanghai_at_nine(self) -> None:
        assert next_evaluation("Asia/Shanghai", utc(2026, 11, 23, 0, 30)) == utc(2026, 11, 23, 1)
        assert next_evaluation("Asia/Shanghai", utc(2026, 11, 22, 23, 59)) == utc(2026, 11, 23, 1)

    def test_strictly_after(self) -> None:
        assert next_evaluation("Asia/Shanghai", utc(2026, 11, 23, 1)) == utc(2026, 11, 24, 1)

    def test_berlin_around_the_spring_gap(self) -> None:
        """2026-03-29 02:00 CET jumps to 03:00 CEST: 02:00 does not exist that day."""
        berlin = "Europe/Berlin"
        assert next_evaluation(berlin, utc(2026, 3, 28, 12), 2) == utc(2026, 3, 29, 1)
        assert next_evaluation(berlin, utc(2026, 3, 28, 12), 9) == utc(2026, 3, 29, 7)
        assert next_evaluation(berlin, utc(2026, 3, 27, 12), 9) == utc(2026, 3, 28, 8)

    def test_new_york_gap_and_repeat(self) -> None:
        ny = "America/New_York"
        # 2026-03-08 02:00 EST jumps to 03:00 EDT.
        assert next_evaluation(ny, utc(2026, 3, 8, 0), 2) == utc(2026, 3, 8, 7)
        # 2026-11-01 02:00 EDT falls back to 01:00 EST: 01:00 happens twice; the first counts,
        # and once it has passed the next one is the following day's, not the repeat.
        assert next_evaluation(ny, utc(2026, 11, 1, 4), 1) == utc(2026, 11, 1, 5)
        assert next_evaluation(ny, utc(2026, 11, 1, 5, 30), 1) == utc(2026, 11, 2, 6)

    def test_a_half_hour_shift(self) -> None:
        """Lord Howe Island moves its clocks by 30 minutes: 02:00 -> 02:30 on 2026-10-04."""
        assert next_evaluation("Australia/Lord_Howe", utc(2026, 10, 3, 12), 2) == utc(
            2026, 10, 3, 15, 30
        )

    def test_a_gap_at_midnight(self) -> None:
        """Sao Paulo's 2018 DST began at midnight: 00:00 -> 01:00 (-02) on 2018-11-04."""
        assert next_evaluation("America/Sao_Paulo", utc(2018, 11, 3, 12), 0) == utc(2018, 11, 4, 3)

    def test_a_skipped_day(self) -> None:
        """Samoa skipped 2011-12-30 entirely: the first valid instant is 12-31 00:00 local."""
        found = next_evaluation("Pacific/Apia", utc(2011, 12, 29, 20), 9)
        assert found.astimezone(ZoneInfo("Pacific/Apia")).replace(tzinfo=None) == dt.datetime(
            2011, 12, 31
        )

    @pytest.mark.parametrize("hour", [-1, 24])
    def test_hour_out_of_range(self, hour: int) -> None:
        with pytest.raises(ValueError, match=r"from 0 to 23, e\.g\. 9"):
            next_evaluation("Asia/Shanghai", utc(2026, 1, 1), hour)

    @settings(max_examples=300, deadline=None)
    @given(
        name=st.sampled_from(
            [
                "Asia/Shanghai",
                "Europe/Berlin",
                "America/New_York",
                "America/Sao_Paulo",
                "Australia/Lord_Howe",
                "Asia/Kathmandu",
                "America/St_Johns",
            ]
        ),
        after=st.datetimes(
            dt.datetime(1990, 1, 1), dt.datetime(2037, 12, 31), timezones=st.just(UTC)
        ),
        hour=st.integers(0, 23),
    )
    def test_properties(self, name: str, after: dt.datetime, hour: int) -> None:
        """The result is later, at most two days later, at the hour (or just past a gap that
        swallowed it), and no earlier evaluation instant lies between."""
        tz = ZoneInfo(name)
        found = next_evaluation(name, after, hour)
        assert after < found <= after + dt.timedelta(days=2)
        local = found.astimezone(tz)
        wall = dt.datetime.combine(local.date(), dt.time(hour))
        if (local.hour, local.minute, local.second) != (hour, 0, 0):
            before = (found - dt.timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
            assert before < wall <= local.replace(tzinfo=None)  # the clock jumped over it
        today = local_day_at(name, after)
        assert (
            evaluation_instant(name, today, hour) <= after
            or evaluation_instant(name, today, hour) == found
        )
        assert next_evaluation(name, found - dt.timedelta(microseconds=1), hour) == found


SHANGHAI_PROFILE = {"timezone": "Asia/Shanghai"}


class TestDueNow:
    def test_not_before_the_hour(self) -> None:
        assert due_now(SHANGHAI_PROFILE, None, utc(2026, 11, 23, 0, 59)) is None

    def test_at_the_hour_once(self) -> None:
        today = D(2026, 11, 23)
        assert due_now(SHANGHAI_PROFILE, None, utc(2026, 11, 23, 1)) == today
        assert due_now(SHANGHAI_PROFILE, D(2026, 11, 22), utc(2026, 11, 23, 1)) == today
        assert due_now(SHANGHAI_PROFILE, today, utc(2026, 11, 23, 5)) is None

    def test_late_after_an_outage(self) -> None:
        assert due_now(SHANGHAI_PROFILE, D(2026, 11, 20), utc(2026, 11, 23, 10)) == D(2026, 11, 23)

    def test_a_profile_update_later_that_day(self) -> None:
        today = D(2026, 11, 23)
        now = utc(2026, 11, 23, 6)
        assert due_now(SHANGHAI_PROFILE, today, now, profile_changed=True) == today
        assert due_now(SHANGHAI_PROFILE, today, now, profile_changed=False) is None

    def test_a_profile_update_before_the_hour_waits_for_it(self) -> None:
        early = utc(2026, 11, 22, 23)  # 07:00 in Shanghai
        assert due_now(SHANGHAI_PROFILE, D(2026, 11, 22), early, profile_changed=True) is None

    def test_an_update_dated_before_the_hour_read_after_the_look(self) -> None:
        """A CRM update dated 08:50, read at 09:05 after the day's look at 09:00: it waited
        for a look that had passed, and a birthday set in it was not greeted that year."""
        early = utc(2026, 11, 23, 0, 50)  # 08:50 in Shanghai
        looked = D(2026, 11, 23)
        assert due_now(SHANGHAI_PROFILE, looked, early, profile_changed=True) == looked
        assert due_now(SHANGHAI_PROFILE, looked, early, profile_changed=False) is None

    def test_a_birthday_read_late_after_the_look_is_greeted(self) -> None:
        """The same through the engine: another subscriber's event at 09:01 moves event time
        past the look, and the update dated 08:50 comes after it (within the lateness)."""
        rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
        events = [
            ev(EventType.PROFILE, "2026-11-23T08:00:00+08:00", tier="gold"),
            ev(EventType.USAGE, "2026-11-23T09:01:00+08:00", sub="13900139000", kind="data"),
            ev(EventType.PROFILE, "2026-11-23T08:50:00+08:00", birthday="11-23"),
        ]
        (task,) = run(rules, events).tasks
        assert task.moment.rule_id == "birthday_greeting"
        assert task.triggered_at.date() == D(2026, 11, 23)

    def test_a_move_to_a_zone_behind_does_not_repeat_a_day(self) -> None:
        now = utc(2026, 11, 23, 14)  # 22:00 on the 23rd in Shanghai, 09:00 in New York
        assert due_now(SHANGHAI_PROFILE, None, now) == D(2026, 11, 23)
        moved = {"timezone": "America/New_York"}
        assert due_now(moved, D(2026, 11, 23), now) is None
        assert due_now(moved, D(2026, 11, 23), utc(2026, 11, 24, 14)) == D(2026, 11, 24)

    @pytest.mark.parametrize("profile", [{}, {"timezone": "Nowhere/Atlantis"}, {"timezone": 8}])
    def test_unknown_or_missing_zone_is_shanghai(self, profile: dict[str, Any]) -> None:
        assert due_now(profile, None, utc(2026, 11, 23, 0, 59)) is None
        assert due_now(profile, None, utc(2026, 11, 23, 1)) == D(2026, 11, 23)

    @pytest.mark.parametrize("profile", [{}, {"timezone": "Nowhere/Atlantis"}, {"timezone": 8}])
    def test_unknown_or_missing_zone_is_the_configured_one(self, profile: dict[str, Any]) -> None:
        london = ZoneInfo("Europe/London")  # on UTC in November
        assert due_now(profile, None, utc(2026, 11, 23, 8, 59), default_zone=london) is None
        assert due_now(profile, None, utc(2026, 11, 23, 9), default_zone=london) == D(2026, 11, 23)

    def test_the_profile_s_zone_wins_over_the_configured_one(self) -> None:
        london = ZoneInfo("Europe/London")
        now = utc(2026, 11, 23, 1)  # 09:00 in Shanghai, 01:00 in London
        assert due_now(SHANGHAI_PROFILE, None, now, default_zone=london) == D(2026, 11, 23)

    def test_in_a_dst_gap(self) -> None:
        berlin = {"timezone": "Europe/Berlin"}
        assert due_now(berlin, None, utc(2026, 3, 29, 0, 59, 59), 2) is None
        assert due_now(berlin, None, utc(2026, 3, 29, 1), 2) == D(2026, 3, 29)

    @settings(max_examples=60, deadline=None)
    @given(
        name=st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York"]),
        start=st.datetimes(
            dt.datetime(2020, 1, 1), dt.datetime(2030, 1, 1), timezones=st.just(UTC)
        ),
        gaps=st.lists(st.integers(1, 600), min_size=1, max_size=60),
        hour=st.integers(0, 23),
    )
    def test_timer_ticks_evaluate_each_reached_day_once(
        self, name: str, start: dt.datetime, gaps: list[int], hour: int
    ) -> None:
        """Ticks minutes to hours apart: a local day is evaluated at the first tick past its
        hour, never twice, and never a day whose hour no tick reached."""
        profile = {"timezone": name}
        last: dt.date | None = None
        evaluated: list[dt.date] = []
        ticks = [start]
        for minutes in gaps:
            ticks.append(ticks[-1] + dt.timedelta(minutes=minutes))
        for tick in ticks:
            day = due_now(profile, last, tick, hour)
            if day is not None:
                evaluated.append(day)
                last = day
        reached = sorted(
            {
                local_day_at(name, t)
                for t in ticks
                if t >= evaluation_instant(name, local_day_at(name, t), hour)
            }
        )
        assert evaluated == reached


class TestALookAgain:
    """A profile update read after the day's look has the day looked at again, for what it
    brought (a birthday entered at 15:00); an occasion that look judged already is one
    moment, counted once: it was counted in `moments_detected_total` (and made its task,
    which the ledger then stood down) at each update of the day. Its task is made again
    for the ledger to stand down (a gate may have held it at the look:
    `TestAGreetingHeldAtTheLook`), but no more counted as a duplicate."""

    LOOKED = (  # the birthday known at the look, another subscriber's event moves past it
        ev(EventType.PROFILE, "2026-11-23T08:00:00+08:00", tier="gold", birthday="11-23"),
        ev(EventType.USAGE, "2026-11-23T09:01:00+08:00", sub="13900139000", kind="data"),
    )

    @pytest.mark.parametrize("when", ["08:50", "15:00"])
    def test_an_update_after_the_look_counts_the_greeting_once(self, when: str) -> None:
        rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
        late = ev(EventType.PROFILE, f"2026-11-23T{when}:00+08:00", tier="silver")
        out = run(rules, [*self.LOOKED, late])
        assert [t.moment.rule_id for t in out.tasks] == ["birthday_greeting"]
        assert out.detected == {("special_day", "birthday"): 1}
        assert out.duplicates == 0  # made again (a gate may have let go), not counted

    def test_a_birthday_the_update_brings_is_greeted_and_counted_once(self) -> None:
        rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
        first = ev(EventType.PROFILE, "2026-11-23T08:00:00+08:00", tier="gold")
        other = ev(EventType.USAGE, "2026-11-23T09:01:00+08:00", sub="13900139000", kind="data")
        bring = ev(EventType.PROFILE, "2026-11-23T15:00:00+08:00", birthday="11-23")
        after = ev(EventType.PROFILE, "2026-11-23T16:00:00+08:00", tier="silver")
        out = run(rules, [first, other, bring, after])
        assert [t.moment.rule_id for t in out.tasks] == ["birthday_greeting"]
        assert out.detected == {("special_day", "birthday"): 1}

    def test_a_rule_the_update_lets_fire_counts_it_then(self) -> None:
        """Held at the look by a profile condition the update lifts: its first firing."""
        gold = BIRTHDAY.replace(
            "condition: {occasion: birthday}",
            "condition: {all: [{occasion: birthday}, {profile: tier, eq: gold}]}",
        )
        rules = rules_from(NO_GATES + "rules:" + gold)
        first = ev(EventType.PROFILE, "2026-11-23T08:00:00+08:00", tier="silver", birthday="11-23")
        other = ev(EventType.USAGE, "2026-11-23T09:01:00+08:00", sub="13900139000", kind="data")
        upgrade = ev(EventType.PROFILE, "2026-11-23T11:00:00+08:00", tier="gold")
        out = run(rules, [first, other, upgrade])
        assert [t.moment.rule_id for t in out.tasks] == ["birthday_greeting"]
        assert out.detected == {("special_day", "birthday"): 1}

    def test_a_shadow_greeting_is_counted_once(self) -> None:
        shadow = BIRTHDAY.replace(
            "description: Birthday", "mode: shadow\n    description: Birthday"
        )
        rules = rules_from(NO_GATES + "rules:" + shadow)
        late = ev(EventType.PROFILE, "2026-11-23T08:50:00+08:00", tier="silver")
        out = run(rules, [*self.LOOKED, late])
        assert out.shadow == {("birthday_greeting", "task", ""): 1}
        assert not out.tasks

    def test_a_greeting_held_by_its_cooldown_is_not_held_again(self) -> None:
        cooled = BIRTHDAY.replace("ttl: 12h,", "ttl: 12h, cooldown: 30d,")
        rules = rules_from(NO_GATES + "rules:" + cooled)
        late = ev(EventType.PROFILE, "2026-11-23T15:00:00+08:00", tier="silver")
        out = run(rules, [*self.LOOKED, late])
        assert len(out.tasks) == 1
        assert out.detected == {("special_day", "birthday"): 1}
        assert not out.suppressed

    def test_a_look_in_shadow_before_the_go_live_instant_is_judged_live_after_it(self) -> None:
        """Looked at in the warm-up (09:00, live from 10:00): the update's look at 11:00
        is the first live judgement, which makes the task and counts it."""
        rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
        late = ev(EventType.PROFILE, "2026-11-23T11:00:00+08:00", tier="silver")
        live = dt.datetime.fromisoformat("2026-11-23T10:00:00+08:00")
        out = run_pipeline([*self.LOOKED, late], rules, live_from=live)
        assert [t.moment.rule_id for t in out.tasks] == ["birthday_greeting"]
        assert out.detected == {("special_day", "birthday"): 1}
        assert out.shadow == {("birthday_greeting", "task", ""): 1}

    def test_a_holiday_greeting_of_a_profile_with_no_fields_is_counted_once(self) -> None:
        holiday = BIRTHDAY.replace("occasion: birthday", "occasion: holiday")
        rules = rules_from(NO_GATES + "rules:" + holiday)
        other = ev(EventType.USAGE, "2026-10-01T09:01:00+08:00", sub="13900139000", kind="data")
        first = ev(EventType.USAGE, "2026-10-01T08:00:00+08:00", kind="data")
        late = ev(EventType.PROFILE, "2026-10-01T15:00:00+08:00", tier="silver")
        out = run(rules, [first, other, late])  # National Day: each of the two greeted
        assert sorted(t.subscriber_id for t in out.tasks) == ["13800138001", "13900139000"]
        assert out.detected == {("special_day", "birthday"): 2}
        assert out.duplicates == 0


class TestAContractsLead:
    """A contract's end is due every day of its lead with one occurrence: judged each day
    (the task the ledger sends once), it is one moment, counted once; it was counted at
    every day's look, 20 detections for one renewal offer."""

    RULE = CONTRACT_LEAD
    END = "2026-11-21T00:00:00+08:00"

    def test_counted_once_over_the_lead(self) -> None:
        rules = rules_from(NO_GATES + "rules:" + self.RULE)
        profile = ev(EventType.PROFILE, "2026-11-01T08:00:00+08:00", contract_end="2026-11-20")
        out = run(rules, [profile], until=self.END)
        assert [t.moment.rule_id for t in out.tasks] == ["contract_expiry_near"]
        assert out.detected == {("special_day", "contract_expiry_near"): 1}

    def test_held_by_its_cooldown_once(self) -> None:
        cooled = self.RULE.replace("ttl: 48h,", "ttl: 48h, cooldown: 10d,")
        rules = rules_from(NO_GATES + "rules:" + cooled)
        profile = ev(EventType.PROFILE, "2026-11-01T08:00:00+08:00", contract_end="2026-11-20")
        out = run(rules, [profile], until=self.END)
        assert out.detected == {("special_day", "contract_expiry_near"): 1}
        assert not out.suppressed

    def test_a_rule_the_profile_lets_fire_later_counts_it_then(self) -> None:
        """Held while the line is suspended, fired once it is active: counted then, and
        the other updates of the lead (a tier, after the look) count it no more."""
        held = self.RULE.replace(
            "condition: {occasion: contract_expiry}",
            "condition: {all: [{occasion: contract_expiry},"
            " {not: {profile: status, eq: suspended}}]}",
        )
        rules = rules_from(NO_GATES + "rules:" + held)
        events = [
            ev(
                EventType.PROFILE,
                "2026-11-01T08:00:00+08:00",
                contract_end="2026-11-20",
                status="suspended",
            ),
            ev(EventType.PROFILE, "2026-11-05T08:00:00+08:00", status="active"),
            ev(EventType.PROFILE, "2026-11-08T15:00:00+08:00", tier="gold"),
        ]
        out = run(rules, events, until=self.END)
        assert [t.moment.rule_id for t in out.tasks] == ["contract_expiry_near"]
        assert out.tasks[0].triggered_at.date() == D(2026, 11, 5)
        assert out.detected == {("special_day", "contract_expiry_near"): 1}

    def test_a_lead_begun_in_the_warm_up_is_counted_live_once(self) -> None:
        rules = rules_from(NO_GATES + "rules:" + self.RULE)
        profile = ev(EventType.PROFILE, "2026-11-01T08:00:00+08:00", contract_end="2026-11-20")
        live = dt.datetime.fromisoformat("2026-11-10T00:00:00+08:00")
        out = run_pipeline(
            [profile], rules, until=dt.datetime.fromisoformat(self.END), live_from=live
        )
        assert [t.moment.rule_id for t in out.tasks] == ["contract_expiry_near"]
        assert out.tasks[0].triggered_at.date() == D(2026, 11, 10)
        assert out.detected == {("special_day", "contract_expiry_near"): 1}


class TestTheDailyFlow:
    """How the engine uses the pieces: tick, evaluate, remember the day; a later profile
    update re-evaluates the same day and the occurrence keys keep the tasks single."""

    def test_a_birthday_set_after_the_morning_evaluation_still_fires(self) -> None:
        profile: dict[str, Any] = {"timezone": "Asia/Shanghai", "contract_end": "2026-12-10"}
        morning = utc(2026, 11, 23, 1)
        day = due_now(profile, None, morning)
        assert day == D(2026, 11, 23)
        first = due(profile, day)
        assert [o.occurrence for o in first] == ["contract_expiry:2026-12-10"]

        profile["birthday"] = "11-23"  # a CRM update at 15:00 local
        again = due_now(profile, day, utc(2026, 11, 23, 7), profile_changed=True)
        assert again == day
        second = special_days_due(
            profile, again, CONFIG, CALENDAR, fired={o.occurrence for o in first}
        )
        assert [o.occurrence for o in second] == ["birthday:2026"]


def test_each_occasion_puts_the_params_validation_and_explain_know() -> None:
    from rules.conditions import OCCASION_PARAMS

    profile = {"birthday": "10-01", "joined_on": "2020-10-01", "contract_end": "2026-10-05"}
    found = due(profile, D(2026, 10, 1))  # National Day too, with its also-ran holidays
    assert {o.kind for o in found} == set(OCCASION_PARAMS)
    for occasion in found:
        assert set(occasion.params) <= set(OCCASION_PARAMS[occasion.kind]), occasion.kind


class TestARuleOfSomeHolidays:
    """A rule that greets some holidays (`holidays:`) on a day that holds two: the day's
    greeting is its first holiday's, and a rule of the second greets that one. Such a
    rule made nothing: one of National Day in 2020 and 2031 (Mid-Autumn on 1 October),
    one of Labour Day every year for an operator whose own day is 1 May."""

    RULES = """
rules:
  - id: first_rule
    description: A manager's call on one holiday
    on: [profile]
    evaluate: special_day
    condition: {occasion: holiday, holidays: [national_day]}
    task: {family: special_day, type: holiday_call, channel: manager, priority: 4,
           action: festival_call, ttl: 24h, description: "{name} ({local_name})"}
  - id: second_rule
    description: An SMS on another
    on: [profile]
    evaluate: special_day
    condition: {occasion: holiday, holidays: [mid_autumn]}
    task: {family: special_day, type: holiday_sms, channel: sms, priority: 4,
           action: festival_sms, ttl: 24h, description: "{name} ({local_name})"}
"""

    @staticmethod
    def greeted(rules: RuleSet, day: str) -> dict[str, dict[str, Any]]:
        """Each rule's task params when the day's look at 09:00 Shanghai is made."""
        events = [ev(EventType.PROFILE, f"{day}T08:00:00+08:00", birthday="12-31")]
        result = run(rules, events, until=f"{day}T10:00:00+08:00")
        return {t.moment.rule_id: t.moment.params for t in result.tasks}

    @pytest.mark.parametrize("year", [2020, 2031])
    def test_mid_autumn_on_national_day_greets_each_rule_its_own(self, year: int) -> None:
        found = self.greeted(rules_from(NO_GATES + self.RULES), f"{year}-10-01")
        assert found["first_rule"]["holiday"] == "national_day"
        assert found["first_rule"]["name"] == "National Day"
        assert found["first_rule"]["also"] == ["mid_autumn"]
        assert found["second_rule"]["holiday"] == "mid_autumn"
        assert found["second_rule"]["also"] == ["national_day"]

    def test_also_in_a_description_is_filled_every_day(self) -> None:
        """`{also}` is a param of a holiday's task, and validation let a description name it:
        it reached the customer as written, "{also}", on a day of one holiday, and as
        Python's "['national_day']" on a day of two."""
        rules = rules_from(
            NO_GATES + "rules:\n  - id: greet\n    description: d\n    on: [profile]\n"
            "    evaluate: special_day\n    condition: {occasion: holiday}\n"
            "    task: {family: special_day, type: t, channel: sms, priority: 4, action: a,\n"
            '           ttl: 12h, description: "{name}; also: {also}."}\n'
        )
        shown = []
        for day in ("2027-01-01", "2020-10-01"):
            events = [ev(EventType.PROFILE, f"{day}T08:00:00+08:00", birthday="12-31")]
            (task,) = run(rules, events, until=f"{day}T10:00:00+08:00").tasks
            shown.append(task.moment.description)
        assert shown == ["New Year's Day; also: .", "Mid-Autumn Festival; also: national_day."]

    def test_an_operator_day_does_not_hide_the_holiday_it_falls_on(self, tmp_path: Path) -> None:
        rules = self.RULES.replace("[national_day]", "[labour_day]").replace(
            "[mid_autumn]", "[our_day]"
        )
        (tmp_path / "rules.yaml").write_text(
            NO_GATES + "special_days: {calendar: days.yaml}\n" + rules
        )
        (tmp_path / "days.yaml").write_text(
            "holidays:\n  - key: our_day\n    name: Our day\n    every_year: 05-01\n"
        )
        found = self.greeted(load_rules(tmp_path), "2027-05-01")
        assert {rule: params["holiday"] for rule, params in found.items()} == {
            "first_rule": "labour_day",
            "second_rule": "our_day",
        }


class TestAGreetingHeldAtTheLook:
    """A greeting the gates held at the day's look (an SMS opt-out, quiet hours to the
    day's end) is made once a profile update the same day lets it go: the update's look
    left out every occasion a rule had fired on at the look, held or not, so the customer
    who withdrew the opt-out at 11:00 got no greeting. Still one moment, counted once."""

    def test_an_opt_out_withdrawn_the_same_day(self) -> None:
        rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
        events = [
            ev(EventType.PROFILE, at("2026-11-30"), birthday="12-01", opt_out=["sms"]),
            ev(EventType.PROFILE, at("2026-12-01", "11:00"), opt_out=[]),
        ]
        out = run(rules, events, until=at("2026-12-02"))
        assert [(t.moment.type, t.triggered_at.hour) for t in out.tasks] == [("birthday", 11)]
        assert out.detected == {("special_day", "birthday"): 1}
        assert out.suppressed == {("birthday", "opt_out"): 1}

    def test_quiet_hours_to_the_days_end_lifted_the_same_day(self) -> None:
        rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
        events = [
            ev(EventType.PROFILE, at("2026-11-30"), birthday="12-01", quiet_hours=["08:30-00:30"]),
            ev(EventType.PROFILE, at("2026-12-01", "11:00"), quiet_hours=[]),
        ]
        out = run(rules, events, until=at("2026-12-02"))
        assert [(t.moment.type, t.triggered_at.hour) for t in out.tasks] == [("birthday", 11)]
        assert out.detected == {("special_day", "birthday"): 1}
        assert out.suppressed == {("birthday", "expired"): 1}

    def test_one_made_at_the_look_is_sent_once(self) -> None:
        rules = rules_from(NO_GATES + "rules:" + BIRTHDAY)
        events = [
            ev(EventType.PROFILE, at("2026-11-30"), birthday="12-01"),
            ev(EventType.PROFILE, at("2026-12-01", "11:00"), tier="gold"),
        ]
        out = run(rules, events, until=at("2026-12-02"))
        assert [(t.moment.type, t.triggered_at.hour) for t in out.tasks] == [("birthday", 9)]
        assert out.detected == {("special_day", "birthday"): 1}
        assert not out.suppressed

    def test_a_shadow_rule_counts_it_once(self) -> None:
        shadow = BIRTHDAY.replace("    description:", "    mode: shadow\n    description:", 1)
        events = [
            ev(EventType.PROFILE, at("2026-11-30"), birthday="12-01", opt_out=["sms"]),
            ev(EventType.PROFILE, at("2026-12-01", "11:00"), opt_out=[]),
        ]
        out = run(rules_from(NO_GATES + "rules:" + shadow), events, until=at("2026-12-02"))
        assert out.shadow == {("birthday_greeting", "suppressed", "opt_out"): 1}


class TestARuleOfSeveralOccasions:
    """A rule of several occasions (`occasion: [birthday, holiday]`) whose occasions fall
    on one local day (a birthday on the Mid-Autumn festival; a contract's lead over New
    Year): each occasion is a moment of its own, with its own occurrence and task id,
    judged in the order birthday, join anniversary, contract expiry, holiday; a rule's
    `cooldown:` keeps the first of them that makes a task, as for any two moments."""

    RULE = """
rules:
  - id: care
    description: A birthday or Mid-Autumn greeting, or a renewal offer
    on: [profile]
    evaluate: special_day
    condition: {occasion: [birthday, contract_expiry, holiday], holidays: [mid_autumn, new_year]}
    task: {family: special_day, type: care, channel: sms, priority: 4, action: care_sms,
           ttl: 48h, description: "Care"}
"""
    MID_AUTUMN = "2026-09-25"

    def occasions(self, cooldown: str | None, update: bool) -> tuple[list[str], Any]:
        """The tasks' occurrences (by their params) and the run, for a birthday on
        Mid-Autumn 2026; `update`: a profile update at 15:00 looks at the day again."""
        rule = (
            self.RULE
            if cooldown is None
            else self.RULE.replace("ttl: 48h,", f"ttl: 48h, cooldown: {cooldown},")
        )
        events = [ev(EventType.PROFILE, at("2026-09-20"), birthday="09-25")]
        if update:
            events.append(ev(EventType.PROFILE, at(self.MID_AUTUMN, "15:00"), tier="gold"))
        out = run(rules_from(NO_GATES + rule), events, until=at("2026-09-26"))
        found = [t.moment.params.get("holiday") or "birthday" for t in out.tasks]
        return found, out

    @pytest.mark.parametrize("update", [False, True])
    def test_each_occasion_of_the_day_is_a_moment_of_its_own(self, update: bool) -> None:
        found, out = self.occasions(None, update)
        assert found == ["birthday", "mid_autumn"]
        assert len({t.task_id for t in out.tasks}) == 2
        assert out.detected == {("special_day", "care"): 2}  # the update's look: no more
        _, replayed = self.occasions(None, update)  # a replay: the same tasks
        assert [t.task_id for t in replayed.tasks] == [t.task_id for t in out.tasks]

    @pytest.mark.parametrize("update", [False, True])
    def test_a_cooldown_keeps_the_first_of_the_days_occasions(self, update: bool) -> None:
        found, out = self.occasions("1d", update)
        assert found == ["birthday"]
        assert out.detected == {("special_day", "care"): 2}
        assert out.suppressed == {("care", "cooldown"): 1}  # once, the update's look too

    def test_explain_says_each_occasion_makes_its_task(self) -> None:
        (text, *_) = explain(rules_from(NO_GATES + self.RULE))
        assert "on a day of several, a task for each" in text

    def test_a_contract_end_offered_before_holds_back_no_later_greeting(self) -> None:
        """Within a contract's lead its end is judged again every day, its task made again
        for the ledger to stand down. Made again, it moved the rule's cooldown mark to the
        day: New Year's greeting, judged after it, was held back by a renewal offer made
        12 days before, under a cooldown of 3 days."""
        rule = self.RULE.replace("ttl: 48h,", "ttl: 48h, cooldown: 3d,")
        events = [ev(EventType.PROFILE, at("2026-12-20", "10:00"), contract_end="2027-01-15")]
        out = run(rules_from(NO_GATES + rule), events, until=at("2027-01-02"))
        assert [(t.triggered_at.date(), t.moment.params.get("holiday")) for t in out.tasks] == [
            (dt.date(2026, 12, 20), None),
            (dt.date(2027, 1, 1), "new_year"),
        ]
        assert out.detected == {("special_day", "care"): 2}
        assert not out.suppressed
