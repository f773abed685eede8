"""Special days: which occasions are due for a subscriber on a local day, and when to look.

Pure functions for the engine. Once a day at a local hour (default 09:00, in the
subscriber's own zone) and again on a profile update later that day, the engine asks
`due_now`; when it answers with a local day, `special_days_due` lists the occasions of
that day. Each occasion carries an `occurrence` key unique per subscriber, occasion and
year, so re-evaluating the same day (a second worker, a replay, a profile update) makes
the same task id and the dedup ledger sends it once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from moments.zones import DEFAULT_ZONE, subscriber_zone
from rules.calendar import Holiday, HolidayCalendar, month_day_in

OccasionKind = Literal["birthday", "join_anniversary", "contract_expiry", "holiday"]
ALL_KINDS: frozenset[OccasionKind] = frozenset(get_args(OccasionKind))
DEFAULT_LOCAL_HOUR = 9
DEFAULT_LEAD_DAYS = 30


@dataclass(frozen=True, slots=True)
class Occasion:
    """A special day due for one subscriber.

    `occurrence` is unique per subscriber per occasion per year (`birthday:2026`,
    `holiday:spring_festival:2026`, `contract_expiry:2027-01-31`, `join_anniversary:2026`):
    build the task id from it. `params` fill the task's description template."""

    kind: OccasionKind
    occurrence: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    others: tuple[Occasion, ...] = field(default=(), hash=False, compare=False, repr=False)
    """On a day of several holidays, the occasion of each holiday after the first (the
    greeting goes to the first): a rule that picks some (`holidays:`) greets the first of
    its own, which may be one of these."""


@dataclass(frozen=True, slots=True)
class SpecialDayConfig:
    """Which occasions to look for and how early to warn of a contract's end."""

    lead_days: int = DEFAULT_LEAD_DAYS
    """Contract expiry is due this many days before `contract_end` (and until it, if missed)."""
    kinds: frozenset[OccasionKind] = ALL_KINDS
    skip_statuses: frozenset[str] = frozenset({"closed"})
    """Line statuses that get no occasion at all (a suspended line is gated later, not here)."""

    def __post_init__(self) -> None:
        if not 0 <= self.lead_days <= 366:
            raise ValueError(
                f"lead_days={self.lead_days}: give a number of days from 0 to 366, e.g. 30"
            )
        unknown = set(self.kinds) - ALL_KINDS
        if unknown:
            raise ValueError(
                f"unknown special-day kinds {sorted(unknown)}; choose from {sorted(ALL_KINDS)}"
            )


def special_days_due(
    profile: Mapping[str, Any],
    local_day: dt.date,
    config: SpecialDayConfig,
    calendar: HolidayCalendar,
    *,
    fired: Collection[str] = (),
) -> list[Occasion]:
    """The occasions due on `local_day` (the subscriber's local date) for one subscriber.

    `profile` holds the stored fields as JSON-ready strings: `birthday` (MM-DD, or
    YYYY-MM-DD), `joined_on` and `contract_end` (YYYY-MM-DD), `status`. A missing or
    malformed field gives no occasion of its kind (the profile was validated on the way
    in; stored state must never stop the evaluation). Rules:

    - birthday on its month-day; 02-29 falls on 02-28 in a non-leap year;
    - join anniversary on the month-day of `joined_on` from the first full year on,
      with `years` of tenure (02-29 as for birthdays);
    - contract expiry `lead_days` before `contract_end`, or on any later day up to and
      including `contract_end` when that day was missed (a profile that arrived late):
      the occurrence key is the same on every one of those days, so it is sent once;
    - one holiday occasion a day: if several holidays fall on it, the first in the
      calendar's order, naming the others in `params["also"]` (and holding theirs in
      `others`, for a rule that greets only some holidays);
    - a line whose status is in `config.skip_statuses` (closed) gets nothing.

    `fired` holds occurrence keys the caller knows were already produced for this
    subscriber; they are left out (the dedup ledger catches them anyway)."""
    if profile.get("status") in config.skip_statuses:
        return []
    out: list[Occasion] = []
    kinds = config.kinds
    if "birthday" in kinds:
        birthday = _month_day(profile.get("birthday"))
        if birthday is not None and month_day_in(local_day.year, *birthday) == local_day:
            out.append(
                Occasion(
                    "birthday",
                    f"birthday:{local_day.year}",
                    {"birthday": f"{birthday[0]:02d}-{birthday[1]:02d}"},
                )
            )
    if "join_anniversary" in kinds:
        joined = _date(profile.get("joined_on"))
        if joined is not None:
            years = local_day.year - joined.year
            if years >= 1 and month_day_in(local_day.year, joined.month, joined.day) == local_day:
                out.append(
                    Occasion(
                        "join_anniversary",
                        f"join_anniversary:{local_day.year}",
                        {"years": years, "joined_on": joined.isoformat()},
                    )
                )
    if "contract_expiry" in kinds:
        end = _date(profile.get("contract_end"))
        if end is not None:
            days_left = (end - local_day).days
            if 0 <= days_left <= config.lead_days:
                out.append(
                    Occasion(
                        "contract_expiry",
                        f"contract_expiry:{end.isoformat()}",
                        {"contract_end": end.isoformat(), "days_left": days_left},
                    )
                )
    if "holiday" in kinds:
        today = calendar.on(local_day)
        if today:
            first, *rest = (_holiday_occasion(h, today) for h in today)
            out.append(dataclasses.replace(first, others=tuple(rest)))
    return [o for o in out if o.occurrence not in fired]


def _holiday_occasion(holiday: Holiday, today: Sequence[Holiday]) -> Occasion:
    """The greeting of one of the day's holidays, naming the day's others in `also` (none:
    an empty list; a description's `{also}` is filled whatever the day)."""
    params: dict[str, Any] = {
        "holiday": holiday.key,
        "name": holiday.name,
        "local_name": holiday.local_name,
        "date": holiday.day.isoformat(),
        "also": [h.key for h in today if h is not holiday],
    }
    return Occasion("holiday", f"holiday:{holiday.key}:{holiday.day.year}", params)


def _month_day(value: Any) -> tuple[int, int] | None:
    """(month, day) of a stored birthday, MM-DD or YYYY-MM-DD; None when absent or not a day."""
    if isinstance(value, dt.date):
        return value.month, value.day
    if not isinstance(value, str):
        return None
    text = value[5:] if len(value) == 10 else value
    if len(text) != 5 or text[2] != "-" or not (text[:2] + text[3:]).isdigit():
        return None
    month, day = int(text[:2]), int(text[3:])
    try:
        dt.date(2000, month, day)  # a leap year: 02-29 is a birthday
    except ValueError:
        return None
    return month, day


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


# --- when to evaluate ---------------------------------------------------------------------


def _aware(instant: dt.datetime, what: str) -> None:
    if instant.utcoffset() is None:
        raise ValueError(f"{what} must be time-zone aware; pass e.g. datetime.now(UTC)")


def _check_hour(local_hour: int) -> None:
    if not 0 <= local_hour <= 23:
        raise ValueError(f"local_hour={local_hour}: give an hour from 0 to 23, e.g. 9")


def local_day_at(
    timezone: str | None, utc: dt.datetime, *, default_zone: dt.tzinfo = DEFAULT_ZONE
) -> dt.date:
    """The local calendar day at an aware instant in `timezone`, a profile's zone, or in
    `default_zone`, the configured one, when that is missing or unknown."""
    _aware(utc, "utc")
    return utc.astimezone(subscriber_zone(timezone, default_zone)).date()


def evaluation_instant(
    timezone: str | None,
    local_day: dt.date,
    local_hour: int,
    *,
    default_zone: dt.tzinfo = DEFAULT_ZONE,
) -> dt.datetime:
    """The UTC instant a local day's evaluation is due: `local_hour`:00 on that day, in
    `timezone` (`default_zone` when it is missing or unknown).

    When the clock is set back and the hour happens twice, the first one. When the
    clock jumps over it (a DST gap, or a whole skipped day), the first valid instant
    after it: the moment the clock lands after the jump."""
    return evaluation_instant_in(subscriber_zone(timezone, default_zone), local_day, local_hour)


def evaluation_instant_in(tz: dt.tzinfo, local_day: dt.date, local_hour: int) -> dt.datetime:
    """`evaluation_instant` in a zone already chosen (the engine's, per subscriber)."""
    _check_hour(local_hour)
    wall = dt.datetime(local_day.year, local_day.month, local_day.day, local_hour)
    first = wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In a gap. Read with the offsets before and after the jump, `wall` gives two UTC
    # instants that bracket the jump; find the first second whose local time is past `wall`.
    other = wall.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)
    low, high = sorted((first, other))
    lo, hi = 0, int((high - low).total_seconds())
    while lo < hi:
        mid = (lo + hi) // 2
        if (low + dt.timedelta(seconds=mid)).astimezone(tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid + 1
    return low + dt.timedelta(seconds=lo)


def next_evaluation(
    timezone: str | None,
    after_utc: dt.datetime,
    local_hour: int = DEFAULT_LOCAL_HOUR,
    *,
    default_zone: dt.tzinfo = DEFAULT_ZONE,
) -> dt.datetime:
    """The first daily evaluation instant (see `evaluation_instant`) strictly after `after_utc`,
    in UTC: when to wake up for this subscriber next."""
    _aware(after_utc, "after_utc")
    day = local_day_at(timezone, after_utc, default_zone=default_zone)
    for offset in range(-1, 3):
        instant = evaluation_instant(
            timezone, day + dt.timedelta(days=offset), local_hour, default_zone=default_zone
        )
        if instant > after_utc:
            return instant
    raise AssertionError("unreachable: some day within two days has its evaluation ahead")


def due_now(
    profile: Mapping[str, Any],
    last_evaluated_local_day: dt.date | None,
    now_utc: dt.datetime,
    local_hour: int = DEFAULT_LOCAL_HOUR,
    *,
    profile_changed: bool = False,
    default_zone: dt.tzinfo = DEFAULT_ZONE,
) -> dt.date | None:
    """The local day to evaluate now for this subscriber, or None when nothing is due.

    Call it on every timer tick (with `profile_changed=False`) and on every profile
    update (with `profile_changed=True`), with the local day of the subscriber's last
    evaluation (None if never). `now_utc` is the tick's clock or the update's event time.
    It answers the subscriber's local day (in `profile["timezone"]`, else `default_zone`:
    the engine passes the rules' `gating.timezone`) when that day's evaluation instant
    (`local_hour`, see `evaluation_instant`) has passed and either

    - the subscriber was not yet evaluated for that day (the daily evaluation, also
      late after a worker outage or for a subscriber first seen after the hour), or
    - the profile changed after that day's evaluation (a birthday or contract set
      later that day still fires that day).

    Before the hour it answers None, even on a profile update: the evaluation at the
    hour will read the updated profile; but an update of a day already looked at (dated
    before the hour, read after the look) answers that day. After a move to a zone that is
    behind (the last evaluated day is ahead of today there) it answers None, so no day is
    evaluated twice.
    Store the answer as the new `last_evaluated_local_day` once the occasions are handed
    on; re-evaluating a day is harmless because occurrences are deduplicated."""
    zone = subscriber_zone(profile.get("timezone"), default_zone)
    return due_now_in(zone, last_evaluated_local_day, now_utc, local_hour, profile_changed)


def due_now_in(
    zone: dt.tzinfo,
    last_evaluated_local_day: dt.date | None,
    now_utc: dt.datetime,
    local_hour: int = DEFAULT_LOCAL_HOUR,
    profile_changed: bool = False,
) -> dt.date | None:
    """`due_now` on a clock already chosen: the engine's, the customer's where they are
    (the visited place's while roaming abroad, see `moments.tracking.special_zone`)."""
    _aware(now_utc, "now_utc")
    today = now_utc.astimezone(zone).date()
    if profile_changed and last_evaluated_local_day == today:
        # The day was looked at already: an update dated before the hour, read after the
        # look (a CRM feed minutes behind, within the lateness), counts that day too; it
        # waited for a look that had passed, and the birthday went ungreeted for a year.
        return today
    if now_utc < evaluation_instant_in(zone, today, local_hour):
        return None
    if last_evaluated_local_day is None or last_evaluated_local_day < today:
        return today
    if last_evaluated_local_day == today and profile_changed:
        return today
    return None
