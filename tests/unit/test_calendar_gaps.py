"""Years without a holiday calendar are said: the `holidays` package lists China's days for
1950-2100 only (0.109; Dragon Boat, Mid-Autumn and Qingming from 2008), and a backtest or
`rules test` of history past 2100 (event times run to 9898) found no festival, New Year's
Day included, without a word: its report read as a calendar with no greeting to make. The
backtest's report and `rules test` now warn, naming the years and the rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest

from moments.backtest_report import report_warnings
from moments.cli import main
from moments.models import EventType
from rules.calendar import DEFAULT_KEYS, HolidayCalendar, HolidayEntry, package_years
from rules.catalog import holiday_gaps

from .rules.helpers import BIRTHDAY, at, backtest_of, ev, rules_from

HOLIDAY = """
  - id: holiday_greeting
    description: A greeting on holidays
    on: [profile]
    evaluate: special_day
    condition: {occasion: holiday}
    task: {family: special_day, type: holiday_greeting, channel: sms, priority: 5,
           action: holiday_greeting, ttl: 12h, description: "Greetings for {name}"}
"""
FESTIVALS = """
  - id: festival_call
    description: A call on the lunar festivals only
    on: [profile]
    evaluate: special_day
    condition: {occasion: [birthday, holiday], holidays: [dragon_boat, mid_autumn]}
    task: {family: special_day, type: festival_call, channel: sms, priority: 5,
           action: festival, ttl: 12h, description: "Greetings"}
"""


def test_the_package_covers_1950_to_2100() -> None:
    """The installed `holidays`; a newer one that covers more says fewer years."""
    assert package_years() == range(1950, 2101)


def test_a_year_past_the_package_has_no_day_of_any_holiday() -> None:
    missing = HolidayCalendar.default().missing(DEFAULT_KEYS, range(2099, 2103))
    assert missing == {2101: tuple(sorted(DEFAULT_KEYS)), 2102: tuple(sorted(DEFAULT_KEYS))}


def test_the_lunar_festivals_are_missing_before_2008() -> None:
    missing = HolidayCalendar.default().missing(["dragon_boat", "new_year"], range(2006, 2009))
    assert missing == {2006: ("dragon_boat",), 2007: ("dragon_boat",)}


def test_an_operators_own_days_are_no_gap() -> None:
    """A key the operator's file gives its days is not the package's to miss."""
    own = HolidayEntry(key="new_year", name="New Year", every_year="01-01")
    calendar = HolidayCalendar(DEFAULT_KEYS, [own])
    missing = calendar.missing(["new_year", "national_day"], range(2101, 2102))
    assert missing == {2101: ("national_day",)}


def test_the_warning_names_the_years_the_rules_and_the_fix() -> None:
    rules = rules_from("rules:" + HOLIDAY + FESTIVALS)
    said = holiday_gaps(rules, dt.date(2005, 6, 1), dt.date(2103, 1, 1))
    assert said is not None
    assert said.startswith(
        "The holiday calendar has no day of dragon_boat, mid_autumn in 2005-2007, nor of any "
        "holiday in 2101-2103: the holidays package (0.109) lists China's for 1950-2100"
    )
    assert "the rules holiday_greeting, festival_call find no holiday on those days" in said
    assert "special_days: {calendar: FILE}" in said


def test_no_warning_within_the_package_or_without_a_holiday_rule() -> None:
    holidays, birthdays = rules_from("rules:" + HOLIDAY), rules_from("rules:" + BIRTHDAY)
    assert holiday_gaps(holidays, dt.date(2026, 1, 1), dt.date(2036, 1, 1)) is None
    assert holiday_gaps(birthdays, dt.date(2101, 1, 1), dt.date(2102, 1, 1)) is None


def test_a_backtest_past_2100_warns_that_it_found_no_festival() -> None:
    events = [ev(EventType.PROFILE, at("2101-09-28"), tier="gold")]
    rules = "rules:" + HOLIDAY
    result = backtest_of(rules, events, until="2101-10-03T00:00:00+08:00")
    assert result.tasks() == []  # no National Day greeting: the package has no 2101
    warnings = report_warnings(result, rules_from(rules))
    assert [w for w in warnings if "holiday calendar" in w] == [
        holiday_gaps(rules_from(rules), dt.date(2101, 9, 28), dt.date(2101, 10, 3))
    ]
    within = backtest_of(
        rules,
        [ev(EventType.PROFILE, at("2026-09-28"), tier="gold")],
        until="2026-10-03T00:00:00+08:00",
    )
    assert [t["moment"]["type"] for t in within.tasks()] == ["holiday_greeting"]
    assert not [w for w in report_warnings(within, rules_from(rules)) if "holiday calendar" in w]


def test_rules_test_past_2100_warns_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:" + HOLIDAY)
    events = tmp_path / "events.jsonl"
    _, value = ev(EventType.PROFILE, at("2100-12-30"), tier="gold")
    events.write_bytes(orjson.dumps({"type": "profile", **value}) + b"\n")
    argv = ["rules", "test", str(rules_file), "--events", str(events), "--to", "2101-01-02"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "moments: warning: The holiday calendar has no day of any holiday in 2101:" in err
    assert "the rule holiday_greeting finds no holiday on those days" in err
    assert "holiday_greeting: 0" in out  # New Year's Day 2101 went ungreeted


def test_calendar_export_past_2100_warns_its_file_lacks_those_years(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The file written says `defaults: false`: loaded, it left 2101 with no holiday."""
    assert main(["calendar", "export", "--years", "2100-2101"]) == 0
    out, err = capsys.readouterr()
    assert "2100-10-01" in out
    assert "2101-" not in out
    assert err.startswith(
        "moments: warning: the calendar written has no day of any holiday in 2101: the "
        "holidays package (0.109) lists China's for 1950-2100 only"
    )
    assert main(["calendar", "export", "--years", "2026-2028"]) == 0
    assert capsys.readouterr().err == ""
