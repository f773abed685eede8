"""The holiday calendar: China's greeting days from the `holidays` package, the operator's
file (validated with positions), and the YAML export that loads back as it was."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rules as rules_package
from moments.cli import main
from rules.calendar import (
    DEFAULT_KEYS,
    KNOWN_BY_KEY,
    CalendarError,
    HolidayCalendar,
    export_calendar,
    load_calendar,
    month_day_in,
    parse_calendar,
    parse_years,
    write_calendar,
)
from rules.catalog import load_rules
from rules.exceptions import RulesError

D = dt.date
# The package lists Dragon Boat and Mid-Autumn as public holidays from 2008 on.
FULL_YEARS = st.integers(min_value=2008, max_value=2099)


def days_of(calendar: HolidayCalendar, key: str, year: int) -> list[dt.date]:
    return [h.day for h in calendar.in_year(year) if h.key == key]


def problems(text: str) -> list[str]:
    with pytest.raises(CalendarError) as err:
        parse_calendar("op.yaml", text)
    return [str(p) for p in err.value.problems]


class TestDefaultCalendar:
    """Greeting days of 2026-2028 as the State Council's calendar and the lunar calendar give
    them (cross-checked by hand against an independent lunar-calendar library)."""

    @pytest.mark.parametrize(
        ("key", "days"),
        [
            ("spring_festival", [D(2026, 2, 17), D(2027, 2, 6), D(2028, 1, 26)]),
            ("lantern_festival", [D(2026, 3, 3), D(2027, 2, 20), D(2028, 2, 9)]),
            ("dragon_boat", [D(2026, 6, 19), D(2027, 6, 9), D(2028, 5, 28)]),
            ("mid_autumn", [D(2026, 9, 25), D(2027, 9, 15), D(2028, 10, 3)]),
            ("new_year", [D(2026, 1, 1), D(2027, 1, 1), D(2028, 1, 1)]),
            ("labour_day", [D(2026, 5, 1), D(2027, 5, 1), D(2028, 5, 1)]),
            ("national_day", [D(2026, 10, 1), D(2027, 10, 1), D(2028, 10, 1)]),
        ],
    )
    def test_dates_2026_to_2028(self, key: str, days: list[dt.date]) -> None:
        calendar = HolidayCalendar.default()
        assert [d for y in (2026, 2027, 2028) for d in days_of(calendar, key, y)] == days

    def test_only_the_festival_day_not_the_days_off_around_it(self) -> None:
        """The package also lists 2026-02-18/19 and swapped days off; they get no greeting."""
        calendar = HolidayCalendar.default()
        assert [h.key for h in calendar.on(D(2026, 2, 17))] == ["spring_festival"]
        for day_off in (D(2026, 2, 16), D(2026, 2, 18), D(2026, 2, 23), D(2026, 10, 2)):
            assert calendar.on(day_off) == ()

    def test_qingming_and_new_years_eve_are_off_by_default(self) -> None:
        assert set(DEFAULT_KEYS) == {
            "new_year",
            "spring_festival",
            "lantern_festival",
            "labour_day",
            "dragon_boat",
            "mid_autumn",
            "national_day",
        }
        assert HolidayCalendar.default().on(D(2026, 4, 5)) == ()

    def test_names_for_the_greeting(self) -> None:
        (holiday,) = HolidayCalendar.default().on(D(2027, 9, 15))
        assert (holiday.key, holiday.name, holiday.local_name) == (
            "mid_autumn",
            "Mid-Autumn Festival",
            "中秋节",
        )

    @settings(max_examples=40, deadline=None)
    @given(year=FULL_YEARS)
    def test_each_default_holiday_once_a_year(self, year: int) -> None:
        keys = [h.key for h in HolidayCalendar.default().in_year(year)]
        assert sorted(keys) == sorted(DEFAULT_KEYS)

    @settings(max_examples=40, deadline=None)
    @given(year=FULL_YEARS)
    def test_lunar_festivals_stay_in_their_seasons(self, year: int) -> None:
        """Spring Festival (1st day of the 1st lunar month) falls from Jan 21 to Feb 20. Lunar
        months have 29 or 30 days and a year may add a leap month, so Dragon Boat (5th of
        the 5th) is 4-5 months + 4 days later, Mid-Autumn (15th of the 8th) 7-8 months +
        14 days later, and Lantern (15th of the 1st) exactly 14 days later."""
        calendar = HolidayCalendar.default()
        (spring,) = days_of(calendar, "spring_festival", year)
        (lantern,) = days_of(calendar, "lantern_festival", year)
        (autumn,) = days_of(calendar, "mid_autumn", year)
        (dragon,) = days_of(calendar, "dragon_boat", year)
        assert D(year, 1, 21) <= spring <= D(year, 2, 20)
        assert lantern - spring == dt.timedelta(days=14)
        assert 4 * 29 + 4 <= (dragon - spring).days <= 5 * 30 + 4
        assert 7 * 29 + 14 <= (autumn - spring).days <= 8 * 30 + 14

    @pytest.mark.parametrize("year", [2008, 2014, 2019, 2024, 2025, 2031])
    def test_new_years_eve_enabled_is_the_day_before_the_spring_festival(self, year: int) -> None:
        """The package lists the eve only in the years it was a day off: an operator who
        enabled it got no greeting from 2014 to 2024."""
        calendar = HolidayCalendar(["spring_festival", "lunar_new_years_eve"])
        (spring,) = days_of(calendar, "spring_festival", year)
        assert days_of(calendar, "lunar_new_years_eve", year) == [spring - dt.timedelta(days=1)]

    @settings(max_examples=30, deadline=None)
    @given(day=st.dates(min_value=D(2008, 1, 1), max_value=D(2099, 12, 31)))
    def test_on_agrees_with_in_year(self, day: dt.date) -> None:
        calendar = HolidayCalendar.default()
        assert calendar.on(day) == tuple(h for h in calendar.in_year(day.year) if h.day == day)

    def test_unknown_package_key_is_refused(self) -> None:
        with pytest.raises(ValueError, match="known ones are"):
            HolidayCalendar(["easter"])


class TestMonthDay:
    @given(year=st.integers(min_value=1901, max_value=2199))
    def test_feb_29_is_feb_28_in_a_common_year(self, year: int) -> None:
        try:
            expected = D(year, 2, 29)
        except ValueError:  # no Feb 29 this year
            expected = D(year, 2, 28)
        assert month_day_in(year, 2, 29) == expected

    @given(day=st.dates(min_value=D(1901, 1, 1), max_value=D(2199, 12, 31)))
    def test_any_other_day_is_itself(self, day: dt.date) -> None:
        if (day.month, day.day) != (2, 29):
            assert month_day_in(day.year, day.month, day.day) == day


OPERATOR_FILE = """\
# The operator's own days
enable: [qingming]
disable: [lantern_festival]
holidays:
  - key: operator_anniversary
    name: Operator anniversary
    local_name: 公司周年庆
    every_year: 05-17
  - key: mid_autumn
    name: Mid-Autumn Festival
    local_name: 中秋节
    dates: [2026-09-24, 2027-09-14]
  - key: leap_day_club
    name: Leap day club
    every_year: 02-29
"""


class TestOperatorFile:
    def test_extra_replacement_enabled_and_disabled_days(self) -> None:
        calendar = parse_calendar("op.yaml", OPERATOR_FILE)
        assert [h.key for h in calendar.on(D(2026, 5, 17))] == ["operator_anniversary"]
        assert [h.local_name for h in calendar.on(D(2027, 5, 17))] == ["公司周年庆"]
        # Replaced: the operator's date, not the package's.
        assert days_of(calendar, "mid_autumn", 2026) == [D(2026, 9, 24)]
        assert calendar.on(D(2026, 9, 25)) == ()
        # A replacement with dates covers only the years listed.
        assert days_of(calendar, "mid_autumn", 2028) == []
        assert days_of(calendar, "qingming", 2026) == [D(2026, 4, 5)]
        assert days_of(calendar, "lantern_festival", 2026) == []
        assert days_of(calendar, "spring_festival", 2026) == [D(2026, 2, 17)]
        assert days_of(calendar, "leap_day_club", 2027) == [D(2027, 2, 28)]
        assert days_of(calendar, "leap_day_club", 2028) == [D(2028, 2, 29)]

    def test_name_stands_in_for_a_missing_local_name(self) -> None:
        (holiday,) = parse_calendar("op.yaml", OPERATOR_FILE).on(D(2026, 2, 28))
        assert holiday.local_name == "Leap day club"

    def test_operator_days_come_first_on_a_shared_day(self) -> None:
        text = "holidays:\n  - key: our_day\n    name: Our day\n    every_year: 10-01\n"
        keys = [h.key for h in parse_calendar("op.yaml", text).on(D(2026, 10, 1))]
        assert keys == ["our_day", "national_day"]

    def test_defaults_false_keeps_only_the_file(self) -> None:
        text = "defaults: false\nholidays:\n  - key: a\n    name: A\n    every_year: 03-08\n"
        calendar = parse_calendar("op.yaml", text)
        assert [(h.key, h.day) for h in calendar.in_year(2027)] == [("a", D(2027, 3, 8))]

    def test_an_empty_file_is_the_default_calendar(self) -> None:
        assert parse_calendar("op.yaml", "").in_year(2026) == HolidayCalendar.default().in_year(
            2026
        )

    def test_load_from_a_path(self, tmp_path: Path) -> None:
        path = tmp_path / "calendar.yaml"
        path.write_text(OPERATOR_FILE, encoding="utf-8")
        assert days_of(load_calendar(path), "operator_anniversary", 2026) == [D(2026, 5, 17)]
        assert load_calendar(None).in_year(2027) == HolidayCalendar.default().in_year(2027)

    def test_a_missing_file_says_so(self, tmp_path: Path) -> None:
        with pytest.raises(CalendarError, match=r"missing\.yaml:1:1: cannot read"):
            load_calendar(tmp_path / "missing.yaml")

    def test_refusals_are_rules_errors_too(self) -> None:
        """`moments rules validate` and the reload path catch RulesError; so they catch these."""
        with pytest.raises(RulesError):
            parse_calendar("op.yaml", "holidays: 3\n")


class TestRefusedFile:
    """Each problem with its line and column and what to write instead; all of them at once."""

    def test_field_errors(self) -> None:
        text = (
            "holidays:\n"
            "  - key: Operator\n"
            "    name: x\n"
            "    colour: red\n"
            "    every_year: 13-01\n"
            "  - key: b\n"
            "    name: y\n"
            "    dates: [2026-02-30, hello]\n"
            "  - key: c\n"
            "    every_year: 01-01\n"
            "colour: 1\n"
        )
        assert problems(text) == [
            "op.yaml:2:10: holidays.0.key: String should match pattern "
            "'^[a-z][a-z0-9_]{0,39}$'; write a key in lowercase with underscores, e.g. my_day",
            "op.yaml:5:17: holidays.0.every_year: write the month and day as MM-DD, e.g. 05-17",
            "op.yaml:4:5: unknown field 'holidays.0.colour'; "
            "allowed here: key, name, local_name, every_year, dates",
            "op.yaml:8:13: holidays.1.dates.0: write dates as YYYY-MM-DD, e.g. 2026-05-17",
            "op.yaml:8:25: holidays.1.dates.1: write dates as YYYY-MM-DD, e.g. 2026-05-17",
            "op.yaml:9:5: holidays.2.name: required field is missing; add it",
            "op.yaml:11:1: unknown field 'colour'; "
            "allowed here: defaults, enable, disable, holidays",
        ]

    def test_cross_field_errors(self) -> None:
        text = (
            "enable: [qingming, easter]\n"
            "disable: [qingming, mid_autumn]\n"
            "holidays:\n"
            "  - key: a\n"
            "    name: A\n"
            "    every_year: 02-30\n"
            "  - key: a\n"
            "    name: A again\n"
            "    dates: [2026-01-01, 2026-05-01]\n"
            "  - key: b\n"
            "    name: B\n"
            "  - key: c\n"
            "    name: C\n"
            "    every_year: 01-01\n"
            "    dates: [2026-01-01]\n"
            "  - key: mid_autumn\n"
            "    name: M\n"
            "    every_year: 09-20\n"
        )
        found = problems(text)
        assert "op.yaml:1:20: enable: unknown holiday 'easter'; known ones: " in found[0]
        assert found[1:] == [
            "op.yaml:2:11: 'qingming' is both enabled and disabled",
            "op.yaml:6:17: 02-30 is not a day of the year",
            "op.yaml:7:10: holiday key 'a' is used twice (first at line 4); give each its own "
            "key or list all its dates in one entry",
            "op.yaml:9:25: a has two dates in 2026: a holiday greets once a year; "
            "use another key for the second day",
            "op.yaml:10:5: give either `every_year: MM-DD` or `dates: [YYYY-MM-DD, ...]`, "
            "not both or none",
            "op.yaml:12:5: give either `every_year: MM-DD` or `dates: [YYYY-MM-DD, ...]`, "
            "not both or none",
            "op.yaml:16:10: 'mid_autumn' is also in `disable`; remove one of the two",
        ]

    @pytest.mark.parametrize("written", ["520", "0520"])
    def test_a_name_of_digits_is_the_text_written(self, written: str) -> None:
        """`name: 520` (20 May, the day of love) or `local_name: 0520` were refused "Input
        should be a valid string" with no fix; digits are a name as written, as a rules
        file reads `region: 10` and `010`."""
        text = (
            "holidays:\n"
            "  - key: love_day\n"
            f"    name: {written}\n"
            f"    local_name: {written}\n"
            "    every_year: 05-20\n"
        )
        days = parse_calendar("op.yaml", text).in_year(2026)
        assert [(h.name, h.local_name) for h in days if h.key == "love_day"] == [(written, written)]

    def test_a_name_read_as_a_number_or_yes_no_is_told_to_quote_it(self) -> None:
        text = (
            "holidays:\n"
            "  - key: a\n"
            "    name: 5.20\n"
            "    local_name: true\n"
            "    every_year: 05-20\n"
            "  - {key: b, name: 1e3, every_year: 05-21}\n"
        )
        assert problems(text) == [
            "op.yaml:3:11: holidays.0.name: 5.20 is read as a number, not a name: write it "
            'in quotes, "5.20"',
            "op.yaml:4:17: holidays.0.local_name: true is read as yes or no, not a name: "
            'write it in quotes, "true"',
            "op.yaml:6:20: holidays.1.name: 1e3 is read as a number, not a name: write it "
            'in quotes, "1e3"',
        ]

    def test_yaml_syntax(self) -> None:
        assert problems("holidays: [unclosed\n") == [
            "op.yaml:2:1: YAML syntax: expected ',' or ']', but got '<stream end>'; the [ or "
            "{ opened on line 1 is not closed where it should be"
        ]

    def test_not_a_mapping(self) -> None:
        assert problems("- a\n") == [
            "op.yaml:1:1: a calendar file is a mapping; start with `holidays:`"
        ]

    def test_a_tag_builds_no_object(self) -> None:
        text = (
            "holidays:\n  - key: a\n    name: !!python/object:os.system x\n    every_year: 01-01\n"
        )
        assert problems(text) == ["op.yaml:3:11: holidays.0.name: Input should be a valid string"]

    def test_a_time_of_day_is_no_date(self) -> None:
        text = "holidays:\n  - key: a\n    name: A\n    dates: [2026-01-01 10:00:00]\n"
        assert problems(text) == [
            "op.yaml:4:13: holidays.0.dates.0: write dates as YYYY-MM-DD, e.g. 2026-05-17"
        ]


class TestExport:
    def test_2026_to_2028(self) -> None:
        text = export_calendar(HolidayCalendar.default(), range(2026, 2029))
        assert text.startswith("# Holiday calendar for 2026-2028")
        assert "defaults: false\n" in text
        assert (
            "  - key: mid_autumn\n"
            "    name: Mid-Autumn Festival\n"
            "    local_name: 中秋节\n"
            "    dates: [2026-09-25, 2027-09-15, 2028-10-03]\n"
        ) in text
        assert "    dates: [2026-02-17, 2027-02-06, 2028-01-26]\n" in text

    @settings(max_examples=15, deadline=None)
    @given(first=st.integers(min_value=2008, max_value=2095), span=st.integers(0, 4))
    def test_loads_back_into_the_same_days(self, first: int, span: int) -> None:
        years = range(first, first + span + 1)
        calendar = parse_calendar("op.yaml", OPERATOR_FILE)
        loaded = parse_calendar("export.yaml", export_calendar(calendar, years))
        for year in years:
            assert loaded.in_year(year) == calendar.in_year(year)
        assert loaded.in_year(first + span + 1) == ()

    def test_write_to_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "holidays.yaml"
        write_calendar(HolidayCalendar.default(), range(2027, 2028), path)
        loaded = load_calendar(path)
        assert days_of(loaded, "spring_festival", 2027) == [D(2027, 2, 6)]
        assert path.read_text(encoding="utf-8").startswith("# Holiday calendar for 2027:")

    def test_no_years(self) -> None:
        with pytest.raises(ValueError, match="2026-2028"):
            export_calendar(HolidayCalendar.default(), range(2026, 2026))


class TestParseYears:
    @pytest.mark.parametrize(
        ("text", "years"),
        [
            ("2026-2028", range(2026, 2029)),
            ("2027", range(2027, 2028)),
            (" 2026 - 2026 ", range(2026, 2027)),
        ],
    )
    def test_accepted(self, text: str, years: range) -> None:
        assert parse_years(text) == years

    @pytest.mark.parametrize(
        ("text", "fix"),
        [("2028-2026", "2026-2028"), ("26-28", "YYYY-YYYY"), ("2026..2028", "YYYY-YYYY")],
    )
    def test_refused_with_the_fix(self, text: str, fix: str) -> None:
        with pytest.raises(ValueError, match=fix):
            parse_years(text)


def test_every_known_holiday_has_names() -> None:
    for known in KNOWN_BY_KEY.values():
        assert known.name
        assert known.local_name


DOC = Path(__file__).resolve().parents[2] / "docs" / "special-days.md"


def test_every_yaml_example_in_the_docs_loads() -> None:
    """docs/special-days.md shows calendar files; each one must load as it is written."""
    text = DOC.read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    assert len(blocks) == 2
    own, exported = (parse_calendar(f"{DOC.name} block {i}", b) for i, b in enumerate(blocks))
    assert days_of(own, "operator_anniversary", 2026) == [D(2026, 5, 17)]
    assert days_of(own, "mid_autumn", 2026) == [D(2026, 9, 24)]
    assert days_of(exported, "mid_autumn", 2028) == [D(2028, 10, 3)]
    assert days_of(exported, "national_day", 2028) == []  # the excerpt lists two holidays


def test_every_python_example_in_the_docs_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/special-days.md's Python blocks run as written, imports included: the export
    example used `Path` without importing it."""
    text = DOC.read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})  # noqa: S102 (the page's own code)
    exported = parse_calendar("holidays.yaml", (tmp_path / "holidays.yaml").read_text())
    assert days_of(exported, "spring_festival", 2027) == [D(2027, 2, 6)]


class TestCalendarInARulesFolder:
    """A rules folder (a Kubernetes ConfigMap mounted whole, say) may hold the calendar
    its rules name; before, the folder was refused: the calendar read as rules."""

    RULES = """
special_days: {calendar: operator-days.yaml}
rules:
  - id: company_day
    description: Greeting on the operator's own day
    on: [profile]
    evaluate: special_day
    condition: {occasion: holiday, holidays: [company_day]}
    task: {family: special_day, type: company_day, channel: sms, priority: 4,
           action: greet, ttl: 12h, description: "Happy company day"}
"""
    CALENDAR = """
holidays:
  - key: company_day
    name: Company day
    every_year: "05-17"
"""

    def test_the_named_calendar_is_loaded_as_the_calendar_not_as_rules(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "rules.yaml").write_text(self.RULES)
        (tmp_path / "operator-days.yaml").write_text(self.CALENDAR)
        rules = load_rules(tmp_path)
        assert [r.id for r in rules.rules] == ["company_day"]
        assert days_of(rules.special.calendar, "company_day", 2027) == [dt.date(2027, 5, 17)]

    def test_a_calendar_nobody_names_is_refused_with_what_to_do(self, tmp_path: Path) -> None:
        (tmp_path / "rules.yaml").write_text(
            self.RULES.replace("special_days: {calendar: operator-days.yaml}\n", "")
        )
        (tmp_path / "operator-days.yaml").write_text(self.CALENDAR)
        with pytest.raises(RulesError) as refused:
            load_rules(tmp_path)
        messages = [str(p) for p in refused.value.problems]
        assert any(
            m.startswith(
                f"{tmp_path / 'operator-days.yaml'}:1:1: a holiday calendar file, not rules"
            )
            and "special_days: {calendar: operator-days.yaml}" in m
            for m in messages
        ), messages

    def test_the_packaged_catalog_folder_validates(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        folder = Path(rules_package.__file__).parent / "catalog"
        assert main(["rules", "validate", str(folder)]) == 0
        assert "21 rule(s) OK" in capsys.readouterr().out


def test_a_misspelt_key_of_a_holiday_names_the_one_meant() -> None:
    """`every_yaer:` was told the five keys a holiday takes, to read against the one
    written (journey review): the one meant is named first."""
    from rules.calendar import parse_calendar

    with pytest.raises(RulesError) as err:
        parse_calendar(
            "op.yaml", "holidays:\n  - {key: telecom_day, name: Telecom Day, every_yaer: '05-17'}\n"
        )
    assert [str(p) for p in err.value.problems] == [
        "op.yaml:2:43: unknown field 'holidays.0.every_yaer'; did you mean 'every_year'? "
        "(allowed here: key, name, local_name, every_year, dates)"
    ]


def test_an_anchor_defined_again_is_one_warning_at_its_line_not_a_library_dump(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A holiday calendar whose anchor was defined twice loaded with ruamel's
    `ReusedAnchorWarning` dumped on stderr (`<unicode string>`, a library path), where a
    rules file's is one warning at its line."""
    import logging
    import warnings

    from rules.calendar import parse_calendar

    text = (
        "defaults: false\nholidays:\n  - key: a\n    name: &n A\n    dates: [2026-02-17]\n"
        "  - key: b\n    name: &n B\n    dates: [2026-02-18]\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the loader fails the test
        with caplog.at_level(logging.WARNING):
            calendar = parse_calendar("cal.yaml", text)
    assert calendar.keys()[:2] == ["a", "b"]
    said = [r.getMessage() for r in caplog.records if "anchor" in r.getMessage()]
    assert len(said) == 1
    assert said[0].startswith("holiday calendar: cal.yaml:7:11: anchor &n is defined again")
