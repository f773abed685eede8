"""Windows of event time in the subscriber's own time zone: day, ISO week, calendar month.

A window is an integer index (days since 0001-01-01, weeks starting on Monday,
months since year 0) so state stores one small number, and `window_end` turns an
index back into the instant the window closes. The zone is the caller's:
`moments.zones.subscriber_zone` chooses it.
"""

from __future__ import annotations

import datetime as dt


def local_date(at: float, tz: dt.tzinfo) -> dt.date:
    """The local calendar day of an instant (epoch seconds).

    Looked up per zone and UTC hour: the detector asks it for every event, and events come
    in time order, so most fall in an hour asked about already. An hour whose start and end
    show the same day at the same UTC offset shows that day throughout (a zone changes its
    offset at most once an hour, as `rules.quiet_hours.offset_changes` has it); any other
    hour (the one ending at local midnight, a daylight-saving change) is worked out per
    instant, as is an instant the cache cannot place."""
    key = (tz, at // 3600)  # nan and inf are never found, and fromtimestamp says why
    day = _HOURS.get(key, _UNKNOWN)
    if day is _UNKNOWN:
        if len(_HOURS) >= _MAX_HOURS:
            _HOURS.clear()
        day = _HOURS[key] = _whole_hour_date(key[1] * 3600, tz)
    if day is None:
        return dt.datetime.fromtimestamp(at, tz).date()
    return day  # type: ignore[return-value]


_UNKNOWN = object()
_MAX_HOURS = 4096
"""(zone, hour) pairs remembered: a few days of a few zones."""
_HOURS: dict[tuple[dt.tzinfo, float], object] = {}


def _whole_hour_date(start: float, tz: dt.tzinfo) -> dt.date | None:
    """The local day every instant of `[start, start + 3600]` shows, or None when it is not
    one day at one offset (or the hour is out of the clock's range)."""
    try:
        first = dt.datetime.fromtimestamp(start, tz)
        last = dt.datetime.fromtimestamp(start + 3600, tz)
    except (ValueError, OverflowError, OSError):
        return None
    if first.date() != last.date() or first.utcoffset() != last.utcoffset():
        return None
    return first.date()


def window_index(period: str, day: dt.date) -> int:
    """Index of the day/week/month window holding a local day."""
    if period == "day":
        return day.toordinal()
    if period == "week":
        return (day.toordinal() - 1) // 7  # ordinal 1 (0001-01-01) is a Monday
    return day.year * 12 + day.month - 1


def window_start_day(period: str, index: int) -> dt.date:
    """The first local day of a window."""
    if period == "day":
        return dt.date.fromordinal(index)
    if period == "week":
        return dt.date.fromordinal(index * 7 + 1)
    return dt.date(index // 12, index % 12 + 1, 1)


def window_end(period: str, index: int, tz: dt.tzinfo) -> float:
    """The instant (epoch seconds) a window closes: local midnight starting the next one."""
    day = window_start_day(period, index + 1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
