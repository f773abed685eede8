"""Time zones: the one check of an IANA zone name and the one choice of a subscriber's zone.

A subscriber's local time (their days, weeks and months, the hour of their special
days, their quiet hours) is in their profile's zone when it names one tzdata knows,
else in the configured default, the rules' `gating.timezone`, itself `DEFAULT_TIMEZONE`
when the rules leave it out. Everything that needs a subscriber's zone asks
`subscriber_zone`, so the parts of the detector cannot drift apart again (windows and
special days once closed days at Shanghai's midnight while quiet hours were in the
configured zone).

Zones are `ZoneInfo` objects, which the standard library caches per name: looking one
up per event costs a dictionary look-up, not a new object.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DEFAULT_TIMEZONE = "Asia/Shanghai"
"""The default zone when a configuration names none (rules' gating, dispatch policy)."""
DEFAULT_ZONE = ZoneInfo(DEFAULT_TIMEZONE)
"""For helpers called without a configured zone (the engine always passes the rules')."""


@lru_cache(maxsize=1024)
def known_zone(name: str) -> ZoneInfo | None:
    """The zone by IANA name; None for a name tzdata does not know.

    A folder of tzdata (`America`) raises IsADirectoryError, not ValueError: it is
    caught here too, so no caller can be stopped by one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def check_zone(name: str) -> str:
    """`name` if it is an IANA zone name; else ValueError saying what to write, the
    closest name first (for the validators of the rules, the dispatch policy and the
    events)."""
    if known_zone(name) is None:
        if offset := offset_refusal(name):
            raise ValueError(offset)
        close = closest_zone(name)
        fix = (
            f"did you mean {close!r}?"
            if close
            else "write one such as Asia/Shanghai or Europe/London"
        )
        raise ValueError(f"{name!r} is not an IANA time zone; {fix}")
    return name


def zone_refusal(name: str) -> str:
    """What a `timezone` the schema's pattern (`ZONE_PATTERN`) refuses is told: what
    `check_zone` says of it (a UTC offset, the closest name), else that it is none of
    tzdata's names (a name only the system's zoneinfo has)."""
    try:
        check_zone(name)
    except ValueError as refused:
        return str(refused)
    return f"{name!r} is not one of tzdata's zone names; write one such as Asia/Shanghai"


@lru_cache(maxsize=1)
def tzdata_zones() -> tuple[str, ...]:
    """The zone names of the tzdata package (a dependency: its `zones` list), sorted; the
    names the system's zoneinfo has when the package is missing."""
    try:
        from importlib.resources import files

        text = files("tzdata").joinpath("zones").read_text(encoding="utf-8")
        names = {line.strip() for line in text.splitlines() if line.strip()}
    except (ImportError, OSError):
        names = set(available_timezones())
    return tuple(sorted(names))


def _zone_pattern(names: tuple[str, ...]) -> str:
    """`names` as one regular expression that also takes any other name of their form:
    tzdata's names without an area (`UTC`, `GB`, `EST5EDT`) and of `Etc/` (`Etc/GMT-8`)
    as they are, and in every other area one or two further parts, each a capital then
    letters, `_` or `-` (`America/Argentina/Buenos_Aires`, `America/Port-au-Prince`).
    So `UTC+8`, `CST`, `asia/shanghai` or `Beijing` are refused by the pattern; a name of
    that form tzdata lacks (`Asia/Beijing`) is the worker's to refuse (`check_zone`)."""
    if not names:
        return r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
    exact = [n for n in names if "/" not in n or n.startswith("Etc/")]
    areas = sorted({n.split("/")[0] for n in names if "/" in n and not n.startswith("Etc/")})
    part = "[A-Z][A-Za-z_-]*"
    whole = "|".join(n.replace("+", r"\+") for n in exact)  # ECMA-262 takes no `\-`
    return f"^({whole}|({'|'.join(areas)})/{part}(/{part})?)$"


ZONE_PATTERN = _zone_pattern(tzdata_zones())
"""What an event's `timezone` must match, in the worker and in the schemas: the form of
tzdata's names (`_zone_pattern`), before `check_zone` asks tzdata for the zone."""


_OFFSET = re.compile(r"(?:(?:UTC|GMT)\s*)?([+\-\u2212])\s*(\d{1,2})(?::?(\d{2}))?", re.IGNORECASE)
"""A UTC offset written for a zone: `UTC+8`, `GMT+08:00`, `+08:00`, `UTC -0500`."""


@lru_cache(maxsize=256)
def offset_refusal(name: str) -> str | None:
    """What to write instead of the UTC offset `name` is, or None when it is none (a
    regular expression, no search among the zones; cached, as `closest_zone`, for a
    producer repeating one offset).
    The place's name keeps its daylight saving; tzdata's fixed-offset zones are named
    `Etc/GMT-8` for UTC+08:00 (POSIX's sign, the other way round) and exist for whole
    hours from UTC-12 to UTC+14 only."""
    written = _OFFSET.fullmatch(name.strip())
    if written is None:
        return None
    sign, hours, minutes = written.groups()
    east = -1 if sign != "+" else 1
    offset = f"UTC{'+' if east > 0 else '-'}{int(hours):02d}:{int(minutes or 0):02d}"
    place = "the place's zone name (Asia/Shanghai for China, Asia/Kolkata for India)"
    head = f"{name!r} is a UTC offset, not an IANA time zone; write {place}"
    whole = east * int(hours)
    if minutes not in (None, "00") or not -12 <= whole <= 14:
        return f"{head}: no fixed-offset zone is {offset}"
    if whole == 0:
        return f"{head}, or 'UTC'"
    return (
        f"{head}, or {f'Etc/GMT{-whole:+d}'!r} for a fixed {offset} (tzdata's Etc zones "
        "have the sign inverted)"
    )


ZONE_ALIASES = {"beijing": "Asia/Shanghai", "china": "Asia/Shanghai"}
"""Names people write for China's one zone, which tzdata files under Shanghai."""


@lru_cache(maxsize=256)
def closest_zone(name: str) -> str | None:
    """The IANA name `name` most likely meant (`asia/shanghai`, `Asia/HongKong`,
    `Europe/Londn`, `Beijing`), or None. Cached: a producer repeating one bad name costs
    one search. Searched among the names of its area (`Asia/`, the closest area when it
    is misspelt; the names without one when it has none), not all ~600: a profile with a
    bad zone of its own (the cache missed) took 1.3 ms to refuse, 70 µs before the hint."""
    text = name.strip()[:64]
    if alias := ZONE_ALIASES.get(text.lower()):
        return alias
    spaced = text.replace(" ", "_").lower()
    areas = _by_area()
    if "/" not in spaced:  # `AsiaBaku`: the slash left out after an area
        lead = next((a for a in areas if a and spaced.startswith(a) and spaced != a), None)
        if lead is not None and spaced not in areas[""]:
            spaced = f"{lead}/{spaced[len(lead) :]}"
    area = spaced.partition("/")[0] if "/" in spaced else ""
    if area not in areas:
        near = difflib.get_close_matches(area, [a for a in areas if a], n=1, cutoff=0.5)
        if not near:
            return None
        area = near[0]
    by_lower = areas[area]
    if spaced in by_lower:
        return by_lower[spaced]
    close = difflib.get_close_matches(spaced, list(by_lower), n=1, cutoff=0.8)
    return by_lower[close[0]] if close else None


@lru_cache(maxsize=1)
def _by_area() -> dict[str, dict[str, str]]:
    """Lower-case area (`asia`; "" for a name without one) -> {lower-case name: name}."""
    out: dict[str, dict[str, str]] = {}
    for zone in sorted(available_timezones()):
        lower = zone.lower()
        area = lower.partition("/")[0] if "/" in lower else ""
        out.setdefault(area, {})[lower] = zone
    return out


def subscriber_zone(name: object, default: dt.tzinfo) -> dt.tzinfo:
    """A subscriber's zone: their profile's `timezone` (`name`) when it is a known IANA
    name, else `default`, the configured one (`RuleSet.gating.zone`). A missing, unknown
    or malformed stored name never stops the engine."""
    if isinstance(name, str) and (zone := known_zone(name)) is not None:
        return zone
    return default


COUNTRY_CHECK_FROM = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
"""Where `country_zone` starts comparing a country's clocks (a fixed instant: gating has
no clock of its own). It compares them weekly over the following year, both sides of
every daylight-saving change."""


COUNTRY_ALIASES = {"XK": "RS", "UK": "GB", "EL": "GR"}
"""Codes roaming feeds send that `zone.tab` lacks, to a country on the same clock:
Kosovo's `XK` (user-assigned, its networks' code; Central European Time, as Serbia),
and the EU's `UK` and `EL` for the United Kingdom and Greece. Input refuses these two now
(`COUNTRY_FIXES`); a trip recorded in state before that still reads them."""


@lru_cache(maxsize=512)
def country_zone(country: str) -> ZoneInfo | None:
    """The visited place's zone when a roaming record names only its country: the
    country's one zone in tzdata's `zone.tab`, or the first of them when all its zones
    keep the same clock (Germany's two, Argentina's twelve). None for a country whose
    clocks differ (the United States, Russia, Australia, Spain with the Canaries): the
    record must say where, with `timezone` or `utc_offset_minutes`. A few codes outside
    `zone.tab` are read as `COUNTRY_ALIASES` says."""
    code = country.upper()
    code = COUNTRY_ALIASES.get(code, code)
    zones = [z for name in _country_zones().get(code, ()) if (z := known_zone(name))]
    if not zones:
        return None
    first = zones[0]
    for week in range(53):
        at = COUNTRY_CHECK_FROM + dt.timedelta(weeks=week)
        offset = at.astimezone(first).utcoffset()
        if any(at.astimezone(zone).utcoffset() != offset for zone in zones[1:]):
            return None
    return first


def _tzdata_table(name: str) -> str:
    """One of tzdata's tables (`zone.tab`, `iso3166.tab`), from the tzdata package (a
    dependency) or, failing that, the system's tzdata; "" when neither has it."""
    try:
        from importlib.resources import files

        return files("tzdata.zoneinfo").joinpath(name).read_text(encoding="utf-8")
    except (ImportError, OSError):
        try:
            with open(f"/usr/share/zoneinfo/{name}", encoding="utf-8") as table:
                return table.read()
        except OSError:
            return ""


def _rows(text: str) -> list[list[str]]:
    """A tzdata table's rows, its columns split at tabs (comments left out)."""
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


@lru_cache(maxsize=1)
def _country_zones() -> dict[str, tuple[str, ...]]:
    """ISO 3166 code -> its zones, in `zone.tab`'s order; empty when tzdata has no
    table (`_tzdata_table`)."""
    found: dict[str, list[str]] = {}
    for cols in _rows(_tzdata_table("zone.tab")):
        if len(cols) >= 3:
            found.setdefault(cols[0], []).append(cols[2])
    return {code: tuple(names) for code, names in found.items()}


USER_ASSIGNED_COUNTRIES = {"XK": "Kosovo"}
"""Codes taken as a roaming `country` beside ISO 3166-1's own: Kosovo has no ISO code,
and its networks, roaming feeds, the EU and CLDR write `XK` (a code ISO leaves to its
users). Without it a record of a visit to Kosovo could not be written at all."""
COUNTRY_FIXES = {"UK": "GB", "EL": "GR"}
"""Codes that are not ISO 3166-1's but name a country that has one (the EU's codes for
the United Kingdom and Greece): a roaming `country` of one is refused naming the ISO
code to write. `UK` and `GB` taken both made the same country two for a `first_time:
country` rule, and the schema said ISO 3166-1."""


@lru_cache(maxsize=1)
def countries() -> tuple[str, ...]:
    """The codes a roaming record's `country` may be, sorted: ISO 3166-1 alpha-2 as
    tzdata's `iso3166.tab` lists them (current as of its version), and
    `USER_ASSIGNED_COUNTRIES`. Empty when tzdata has no table: then any two capitals
    are taken (`COUNTRY_PATTERN`), as before the list was checked."""
    iso = {cols[0] for cols in _rows(_tzdata_table("iso3166.tab")) if len(cols) >= 2}
    if not iso:
        return ()
    return tuple(sorted(iso | set(USER_ASSIGNED_COUNTRIES)))


def _country_pattern(codes: tuple[str, ...]) -> str:
    """`codes` as one regular expression, grouped by first letter (`A[DEFG...]|B[...]`):
    checked by pydantic-core in Rust on the stream, no Python call per roaming record."""
    if not codes:
        return r"^[A-Z]{2}$"
    firsts: dict[str, list[str]] = {}
    for code in codes:
        firsts.setdefault(code[0], []).append(code[1])
    return "^(" + "|".join(f"{a}[{''.join(b)}]" for a, b in sorted(firsts.items())) + ")$"


COUNTRY_PATTERN = _country_pattern(countries())
"""What a roaming record's `country` must match: one of `countries()`."""
_TWO_LETTERS = re.compile(r"[A-Za-z]{2}")


def country_fix(written: object) -> str:
    """What to write instead of a `country` that is not one of `countries()`: the ISO code
    of a known other one (`UK`: GB), the capitals of a lower-case code (`jp`: JP), or
    what the contract takes. Never quotes more than the two letters it names."""
    head = "write the ISO 3166-1 alpha-2 code in capitals"
    if isinstance(written, str) and _TWO_LETTERS.fullmatch(written):
        code = written.upper()
        if code in COUNTRY_FIXES:
            return (
                f"{code} is not an ISO 3166-1 alpha-2 code (it is the EU's): write "
                f"{COUNTRY_FIXES[code]}"
            )
        if code in countries():
            return f"{head}: {code}"
        return (
            f"{code} is not an ISO 3166-1 alpha-2 country code: {head}, e.g. JP for Japan "
            "(the list is tzdata's iso3166.tab; XK is taken for Kosovo)"
        )
    return f"{head}, e.g. JP (not jp or JPN)"
