"""Windows of event time in the subscriber's own time zone: day, ISO week, calendar month.

A window is an integer index (days since 0001-01-01, weeks starting on Monday,
months since year 0) so state stores one small number, and `window_end` turns an
index back into the instant the window closes. The zone is the caller's:
`moments.zones.subscriber_zone` chooses it.
"""

from __future__ import annotations

import datetime as dt


def local_date(at: float, tz: dt.tzinfo) -> dt.date:
    """The local calendar day of an instant (epoch seconds)."""
    return dt.datetime.fromtimestamp(at, tz).date()


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
