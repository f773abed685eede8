"""The holiday calendar: which days get a greeting, from China's calendar plus the operator's file.

Default dates come from the `holidays` package (China, lunar festivals included),
taking only the festival day itself: the package also lists the extra days off and
swapped working days of each official holiday, which get no greeting. Each holiday
has a stable key (`spring_festival`) that rules, task occurrences and the operator's
file refer to; the display names are ours, so a wording change in the package does
not change a task.

An operator calendar file (YAML) adds days (the operator's own anniversary), replaces
a default holiday's days (same key), enables an optional one (`qingming`) or disables
one; `export_calendar` writes the effective calendar for a range of years in the same
format, so the written file can be shipped and loaded back as it is.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from calendar import isleap
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from io import StringIO
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from moments.errortext import error_text
from rules.exceptions import RuleProblem, RulesError
from rules.hints import closest
from rules.yamllimits import beyond_limits, read_limited, reused_anchors, yaml_problem
from rules.yamlpos import NamesAsWrittenAt, position

KEY_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


@dataclass(frozen=True, slots=True)
class Holiday:
    """One greeting day: a stable key, names for the greeting, and the local date."""

    key: str
    name: str
    local_name: str
    day: dt.date


@dataclass(frozen=True, slots=True)
class KnownHoliday:
    """A holiday the China calendar provides: the package's English name and our own names."""

    key: str
    package_name: str
    name: str
    local_name: str
    offset_days: int = 0
    greeting: bool = True
    """On by default; an operator file can `enable` the others."""


KNOWN_HOLIDAYS: tuple[KnownHoliday, ...] = (
    KnownHoliday("new_year", "New Year's Day", "New Year's Day", "元旦"),
    KnownHoliday(
        "spring_festival", "Chinese New Year (Spring Festival)", "Spring Festival", "春节"
    ),
    # The 15th of the first lunar month: always 14 days after the 1st.
    KnownHoliday(
        "lantern_festival",
        "Chinese New Year (Spring Festival)",
        "Lantern Festival",
        "元宵节",
        offset_days=14,
    ),
    KnownHoliday("labour_day", "Labor Day", "Labour Day", "劳动节"),
    KnownHoliday("dragon_boat", "Dragon Boat Festival", "Dragon Boat Festival", "端午节"),
    KnownHoliday("mid_autumn", "Mid-Autumn Festival", "Mid-Autumn Festival", "中秋节"),
    KnownHoliday("national_day", "National Day", "National Day", "国庆节"),
    # Off by default: New Year's Eve overlaps the Spring Festival greeting, and
    # Qingming is a day for remembering the dead, not for a marketing greeting.
    # The last day of the 12th lunar month: always the day before the 1st of the 1st. The
    # package lists the eve only in the years it was a day off (not 2014-2024).
    KnownHoliday(
        "lunar_new_years_eve",
        "Chinese New Year (Spring Festival)",
        "Lunar New Year's Eve",
        "除夕",
        offset_days=-1,
        greeting=False,
    ),
    KnownHoliday("qingming", "Tomb-Sweeping Day", "Qingming Festival", "清明节", greeting=False),
)
KNOWN_BY_KEY: Mapping[str, KnownHoliday] = {h.key: h for h in KNOWN_HOLIDAYS}
DEFAULT_KEYS: tuple[str, ...] = tuple(h.key for h in KNOWN_HOLIDAYS if h.greeting)


def month_day_in(year: int, month: int, day: int) -> dt.date:
    """The date of a yearly month-day in `year`; 02-29 falls on 02-28 in a non-leap year."""
    if (month, day) == (2, 29) and not isleap(year):
        return dt.date(year, 2, 28)
    return dt.date(year, month, day)


def china_holidays(year: int, keys: Iterable[str] = DEFAULT_KEYS) -> list[Holiday]:
    """The known holidays `keys` in `year` from the `holidays` package (China).

    A holiday the package does not list that year (e.g. Mid-Autumn before 2008, when
    it became a public holiday) is left out."""
    import holidays  # ~0.05 CPU-s: imported by the first calendar made, not by every command

    package = holidays.country_holidays("CN", years=year, language="en_US", observed=False)
    first: dict[str, dt.date] = {}
    for listed in sorted(package):
        for name in package.get_list(listed):
            first.setdefault(str(name), listed)
    out = []
    for key in keys:
        known = KNOWN_BY_KEY[key]
        day = first.get(known.package_name)
        if day is not None:
            shifted = day + dt.timedelta(days=known.offset_days)
            out.append(Holiday(known.key, known.name, known.local_name, shifted))
    return out


@cache
def package_years() -> range:
    """The years the `holidays` package lists China's days for (1950-2100 in 0.109): it
    lists none outside them, New Year's Day included, and a holiday rule found no day."""
    import holidays

    china = holidays.country_holidays("CN")
    return range(china.start_year, china.end_year + 1)


def gaps_said(missing: Mapping[int, tuple[str, ...]], wanted: Collection[str]) -> str:
    """`no day of dragon_boat, mid_autumn in 2005-2007, nor of any holiday in 2101: the
    holidays package (0.109) lists China's for 1950-2100 only (...)` of `missing`
    (`HolidayCalendar.missing`), `wanted` the keys asked for ("any holiday": all of them)."""
    by_keys: dict[tuple[str, ...], list[int]] = {}
    for year, keys in sorted(missing.items()):
        by_keys.setdefault(keys, []).append(year)
    every = tuple(sorted(wanted))
    parts = [
        f"{'any holiday' if keys == every else ', '.join(keys)} in {years_said(years)}"
        for keys, years in by_keys.items()
    ]
    covered = package_years()
    return (
        f"no day of {', nor of '.join(parts)}: the holidays package ({package_version()}) "
        f"lists China's for {covered[0]}-{covered[-1]} only (Dragon Boat, Mid-Autumn and "
        "Qingming from 2008, when they became public holidays)"
    )


def years_said(years: Sequence[int]) -> str:
    """Sorted years as runs: `2005-2007, 2101`."""
    runs: list[list[int]] = []
    for year in years:
        if runs and year == runs[-1][1] + 1:
            runs[-1][1] = year
        else:
            runs.append([year, year])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def package_version() -> str:
    """The installed `holidays` package's version, as a warning names it."""
    return version("holidays")


# --- the operator's calendar file --------------------------------------------------------

MonthDay = Annotated[str, StringConstraints(pattern=_MONTH_DAY.pattern)]


class HolidayEntry(BaseModel):
    """One holiday in an operator calendar file: every year on a month-day, or on listed dates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Annotated[str, StringConstraints(pattern=KEY_PATTERN)] = Field(
        description="Stable id, lowercase with underscores, e.g. operator_anniversary"
    )
    name: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    local_name: Annotated[str, StringConstraints(max_length=80)] | None = None
    every_year: MonthDay | None = Field(default=None, description="MM-DD, e.g. 05-17")
    dates: list[dt.date] | None = Field(default=None, description="YYYY-MM-DD dates")

    @field_validator("name", "local_name", mode="before")
    @classmethod
    def _digits_as_text(cls, value: Any) -> Any:
        """A name written as digits (`name: 520`, the 20 May day of love) is the text
        written, as `0520` is (digits with a leading zero being text, `NamesAsWrittenAt`),
        as a rules file reads `region: 10`: it was refused "Input should be a valid string"
        with no fix. Another number or yes/no is told to quote it (`_message`)."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def days_in(self, year: int) -> list[dt.date]:
        if self.every_year is not None:
            return [month_day_in(year, int(self.every_year[:2]), int(self.every_year[3:]))]
        return [d for d in self.dates or () if d.year == year]


class CalendarFile(BaseModel):
    """An operator calendar file, as written by hand or by `export_calendar`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: bool = Field(
        default=True, description="false: only the holidays listed here, none from the package"
    )
    enable: list[str] = Field(default_factory=list, description="known holidays to add")
    disable: list[str] = Field(default_factory=list, description="default holidays to leave out")
    holidays: list[HolidayEntry] = Field(default_factory=list)


class CalendarError(RulesError):
    """An operator calendar file was refused; `problems` lists every error with its position."""


class HolidayCalendar:
    """The effective calendar: holidays from the package (unless turned off) and the file's.

    On a day with several holidays, `on` lists the operator's entries first (in file
    order), then the package's in `KNOWN_HOLIDAYS` order. Years are computed once and
    cached: `on` is called for every subscriber every day."""

    def __init__(
        self,
        package_keys: Sequence[str] = DEFAULT_KEYS,
        entries: Sequence[HolidayEntry] = (),
    ) -> None:
        unknown = [k for k in package_keys if k not in KNOWN_BY_KEY]
        if unknown:
            raise ValueError(
                f"unknown holiday keys {unknown}; known ones are {sorted(KNOWN_BY_KEY)}"
            )
        replaced = {e.key for e in entries}
        self.package_keys = tuple(k for k in package_keys if k not in replaced)
        self.entries = tuple(entries)
        self._years: dict[int, tuple[Holiday, ...]] = {}
        self._days: dict[int, dict[dt.date, tuple[Holiday, ...]]] = {}

    @classmethod
    def default(cls) -> Self:
        """The greeting-worthy holidays of China's calendar (`DEFAULT_KEYS`), nothing else."""
        return cls()

    @classmethod
    def from_file(cls, parsed: CalendarFile) -> Self:
        keys = list(DEFAULT_KEYS) if parsed.defaults else []
        keys += [k for k in parsed.enable if k not in keys]
        keys = [k for k in keys if k not in parsed.disable]
        return cls(keys, parsed.holidays)

    def in_year(self, year: int) -> tuple[Holiday, ...]:
        """Every holiday of `year`, by date (same-day holidays in `on` order)."""
        cached = self._years.get(year)
        if cached is None:
            own = [
                Holiday(e.key, e.name, e.local_name or e.name, day)
                for e in self.entries
                for day in e.days_in(year)
            ]
            listed = own + china_holidays(year, self.package_keys)
            cached = tuple(sorted(listed, key=lambda h: h.day))  # sort is stable
            self._years[year] = cached
            by_day: dict[dt.date, list[Holiday]] = {}
            for holiday in cached:
                by_day.setdefault(holiday.day, []).append(holiday)
            self._days[year] = {d: tuple(hs) for d, hs in by_day.items()}
        return cached

    def on(self, day: dt.date) -> tuple[Holiday, ...]:
        """The holidays falling on `day` (usually none or one)."""
        self.in_year(day.year)
        return self._days[day.year].get(day, ())

    def keys(self) -> list[str]:
        """Every holiday key this calendar can produce."""
        return [e.key for e in self.entries] + list(self.package_keys)

    def missing(self, keys: Iterable[str], years: Iterable[int]) -> dict[int, tuple[str, ...]]:
        """Year -> the holidays among `keys` the package was to give and gave no day that
        year (sorted; years with none missing left out). The operator's own entries are
        never missing: their days are the file's. Past the package's years (`package_years`)
        every one is, and no year of them is computed."""
        wanted = sorted(set(keys) & set(self.package_keys))
        if not wanted:
            return {}
        covered = package_years()
        out: dict[int, tuple[str, ...]] = {}
        for year in years:
            found = {h.key for h in self.in_year(year)} if year in covered else set()
            lacking = tuple(k for k in wanted if k not in found)
            if lacking:
                out[year] = lacking
        return out


def parse_calendar(name: str, text: str) -> HolidayCalendar:
    """The calendar described by an operator file's text; `name` is used in error positions.

    Raises `CalendarError` listing every problem as `file:line:column: message`."""
    problems: list[RuleProblem] = []
    refused = beyond_limits(name, text)
    if refused is not None:
        raise CalendarError([refused])
    yaml = YAML(typ="rt")
    yaml.Constructor = NamesAsWrittenAt  # `name: 0520` is "0520", as in a rules file
    try:
        with reused_anchors() as reused:  # ruamel's own warning was a dump on stderr
            doc = yaml.load(text)
    except YAMLError as exc:
        raise CalendarError([yaml_problem(name, text, exc)]) from None
    for anchor in reused:  # loaded as YAML says; the file's author is told which one
        logging.getLogger(__name__).warning("holiday calendar: %s", anchor.said(name))
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise CalendarError(
            [RuleProblem(name, 1, 1, "a calendar file is a mapping; start with `holidays:`")]
        )
    try:
        parsed = CalendarFile.model_validate(_plain(doc))
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            at_key = err["type"] == "extra_forbidden"
            line, col = position(doc, loc, at_key)
            said = _message(err, loc, _written(text, line, col))
            problems.append(RuleProblem(name, line, col, said))
        raise CalendarError(problems) from None
    _check(parsed, doc, name, problems)
    if problems:
        raise CalendarError(problems)
    return HolidayCalendar.from_file(parsed)


def load_calendar(path: Path | None = None) -> HolidayCalendar:
    """The calendar from an operator file, or the default one when `path` is None."""
    if path is None:
        return HolidayCalendar.default()
    try:
        text = read_limited(path)
    except RulesError as exc:
        raise CalendarError(exc.problems) from None
    except OSError as exc:
        raise CalendarError(
            [RuleProblem(str(path), 1, 1, f"cannot read: {exc.strerror}; check the path")]
        ) from exc
    return parse_calendar(str(path), text)


def _plain(node: Any) -> Any:
    """Plain dicts and lists for pydantic. Round-trip loading builds no Python objects
    from tags: a tagged value reaches pydantic as a wrong type."""
    if isinstance(node, CommentedMap):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    return node


def _check(parsed: CalendarFile, doc: Any, name: str, problems: list[RuleProblem]) -> None:
    """Cross-field checks pydantic cannot make: keys that exist, keys used once, one day a year."""

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(RuleProblem(name, *position(doc, loc), message))

    known = ", ".join(sorted(KNOWN_BY_KEY))
    for field in ("enable", "disable"):
        for i, key in enumerate(getattr(parsed, field)):
            if key not in KNOWN_BY_KEY:
                problem((field, i), f"{field}: unknown holiday {key!r}; known ones: {known}")
    for key in set(parsed.enable) & set(parsed.disable):
        problem(("disable", parsed.disable.index(key)), f"{key!r} is both enabled and disabled")
    seen: dict[str, int] = {}
    for i, entry in enumerate(parsed.holidays):
        where = ("holidays", i)
        if entry.key in seen:
            problem(
                (*where, "key"),
                f"holiday key {entry.key!r} is used twice (first at line "
                f"{position(doc, ('holidays', seen[entry.key]))[0]}); give each its own key "
                "or list all its dates in one entry",
            )
        seen.setdefault(entry.key, i)
        if entry.key in parsed.disable:
            problem((*where, "key"), f"{entry.key!r} is also in `disable`; remove one of the two")
        if (entry.every_year is None) == (entry.dates is None):
            problem(
                where,
                "give either `every_year: MM-DD` or `dates: [YYYY-MM-DD, ...]`, not both or none",
            )
        years: dict[int, int] = {}
        for j, day in enumerate(entry.dates or ()):
            if day.year in years:
                problem(
                    (*where, "dates", j),
                    f"{entry.key} has two dates in {day.year}: a holiday greets once a year; "
                    "use another key for the second day",
                )
            years.setdefault(day.year, j)
        if entry.every_year is not None:
            month, mday = int(entry.every_year[:2]), int(entry.every_year[3:])
            try:
                dt.date(2000, month, mday)  # a leap year: 02-29 is allowed
            except ValueError:
                problem((*where, "every_year"), f"{entry.every_year} is not a day of the year")


_PLAIN_SCALAR = re.compile(r"[^\s,#\]}]+")


def _written(text: str, line: int, col: int) -> str | None:
    """The plain scalar at `line`, `col` (1-based) as written in the file: `5.20`, which
    YAML reads as 5.2."""
    lines = text.splitlines()
    if not 0 < line <= len(lines):
        return None
    found = _PLAIN_SCALAR.match(lines[line - 1], col - 1)
    return found[0] if found else None


def _message(err: Any, loc: Sequence[str | int], written: str | None = None) -> str:
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        allowed = {
            1: "defaults, enable, disable, holidays",
            3: "key, name, local_name, every_year, dates",
        }.get(len(loc), "")
        close = closest(str(loc[-1]), allowed.split(", ")) if loc and allowed else None
        if close is not None:  # `every_yaer`: the one meant, not only the list
            return f"unknown field {where!r}; did you mean {close!r}? (allowed here: {allowed})"
        return f"unknown field {where!r}; allowed here: {allowed}"
    if err["type"] == "missing":
        return f"{where}: required field is missing; add it"
    if (loc and loc[-1] == "key") or (len(loc) == 2 and loc[0] in ("enable", "disable")):
        return f"{where}: {error_text(err)}; write a key in lowercase with underscores, e.g. my_day"
    if "every_year" in loc:
        return f"{where}: write the month and day as MM-DD, e.g. 05-17"
    if "dates" in loc:
        return f"{where}: write dates as YYYY-MM-DD, e.g. 2026-05-17"
    value = err.get("input")
    if isinstance(value, int | float) and loc and loc[-1] in ("name", "local_name"):
        said = written or (str(value).lower() if isinstance(value, bool) else str(value))
        kind = "yes or no" if isinstance(value, bool) else "a number"
        return f'{where}: {said} is read as {kind}, not a name: write it in quotes, "{said}"'
    return f"{where}: {error_text(err)}"


# --- export -------------------------------------------------------------------------------


def parse_years(text: str) -> range:
    """`2026-2028` or `2026` as a range of years (the end year included)."""
    match = re.fullmatch(r"\s*(\d{4})\s*(?:-\s*(\d{4})\s*)?", text)
    if match is None:
        raise ValueError(f"years {text!r}: write YYYY or YYYY-YYYY, e.g. 2026-2028")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if last < first:
        raise ValueError(f"years {text!r}: write the earlier year first, e.g. {last}-{first}")
    return range(first, last + 1)


def export_calendar(calendar: HolidayCalendar, years: range) -> str:
    """The effective calendar for `years` as an operator calendar file (`defaults: false`
    and every day listed), so the output loads back into the same days for those years."""
    by_key: dict[str, list[Holiday]] = {}
    for year in years:
        for holiday in calendar.in_year(year):
            by_key.setdefault(holiday.key, []).append(holiday)
    entries = CommentedSeq()
    for key, days in by_key.items():
        entry = CommentedMap()
        entry["key"] = key
        entry["name"] = days[0].name
        entry["local_name"] = days[0].local_name
        entry["dates"] = CommentedSeq(h.day for h in days)
        entry["dates"].fa.set_flow_style()
        entries.append(entry)
    doc = CommentedMap()
    doc["defaults"] = False
    doc["holidays"] = entries
    if not years:
        raise ValueError("no years to export; give a range such as 2026-2028")
    span = f"{years[0]}-{years[-1]}" if len(years) > 1 else str(years[0])
    doc.yaml_set_start_comment(
        f"Holiday calendar for {span}: one greeting day per holiday and year.\n"
        "Written by `moments calendar export`. To use it, name it in a rules file:\n"
        "special_days: {calendar: FILE}, its path relative to that rules file\n"
        "(docs/special-days.md, 'The operator's calendar file')."
    )
    out = StringIO()
    yaml = YAML(typ="rt")
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.dump(doc, out)
    return out.getvalue()


def write_calendar(calendar: HolidayCalendar, years: range, path: Path) -> None:
    """Write `export_calendar(calendar, years)` to `path` (UTF-8)."""
    path.write_text(export_calendar(calendar, years), encoding="utf-8")
