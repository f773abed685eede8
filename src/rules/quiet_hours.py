"""Quiet hours: daily `HH:MM-HH:MM` windows of local wall-clock time, and when they end.

A window is half-open, `[start, end)`: `21:00-08:00` is quiet from 21:00 up to but
not including 08:00 the next morning (it crosses midnight because end < start).

`next_open_instant` answers "when may we contact this customer?": the first instant at
or after a given one whose local wall-clock time lies in no window. It walks the
local timeline of a `tzinfo`, so daylight-saving days come out right: a window ending
inside the spring-forward gap ends when the clocks jump, and an instant in the hour
that repeats in autumn is judged by the wall clock it shows at that instant.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_FIX = "write HH:MM-HH:MM such as 21:00-08:00"
_DAY = dt.timedelta(days=1)
_LOOK_AHEAD = dt.timedelta(days=3)
"""Windows still covering an instant this far ahead cover the whole day."""


@dataclass(frozen=True, slots=True)
class QuietWindow:
    """A daily window of local wall-clock time, `[start, end)`; crosses midnight if end < start."""

    start: dt.time
    end: dt.time

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def contains(self, wall: dt.time) -> bool:
        """True when the wall-clock time of day lies inside the window."""
        wall = wall.replace(tzinfo=None, fold=0)
        if self.crosses_midnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end

    def end_after(self, wall: dt.datetime) -> dt.datetime:
        """The naive local end of the occurrence of this window that covers `wall`."""
        day = wall.date()
        if self.crosses_midnight and wall.time() >= self.start:
            day += _DAY
        return dt.datetime.combine(day, self.end)

    def __str__(self) -> str:
        return _window_text(self.start, self.end)


@functools.lru_cache(maxsize=1024)
def _window_text(start: dt.time, end: dt.time) -> str:
    """`HH:MM-HH:MM`. Cached: every task carries its quiet windows as text
    (`rules.gating.quiet_hours_carried`), and formatting two times was a tenth of
    building one."""
    return f"{start:%H:%M}-{end:%H:%M}"


def parse_window(text: str) -> QuietWindow:
    """Parse `HH:MM-HH:MM`; raise ValueError saying what is wrong and what to write."""
    match = _WINDOW.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a time window; {_FIX}")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    for hour in (start_h, end_h):
        if hour > 23:
            raise ValueError(f"{text}: hour must be 00-23; {_FIX}")
    for minute in (start_m, end_m):
        if minute > 59:
            raise ValueError(f"{text}: minute must be 00-59; {_FIX}")
    if (start_h, start_m) == (end_h, end_m):
        raise ValueError(
            f"{text}: start and end are the same, so the window is empty or the whole day; "
            f"{_FIX}, or opt the customer out of the channel to never contact them"
        )
    return QuietWindow(dt.time(start_h, start_m), dt.time(end_h, end_m))


@functools.lru_cache(maxsize=1024)
def lenient_window(text: str) -> QuietWindow | None:
    """`parse_window`, but None for a bad window (for profile data, which must not stop the
    engine; the profile model already checks the HH:MM-HH:MM shape)."""
    try:
        return parse_window(text)
    except ValueError:
        return None


def covers_whole_day(windows: Iterable[QuietWindow]) -> bool:
    """True when the windows together leave no minute of the day open."""
    covered = [False] * (24 * 60)
    for window in windows:
        start = window.start.hour * 60 + window.start.minute
        end = window.end.hour * 60 + window.end.minute
        minutes = range(start, end) if end > start else [*range(start, 24 * 60), *range(end)]
        for minute in minutes:
            covered[minute] = True
    return all(covered)


def local_wall(instant: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The naive local wall-clock time an aware instant shows in `tz`."""
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def first_instant_showing(wall: dt.datetime, tz: dt.tzinfo, not_before: dt.datetime) -> dt.datetime:
    """The first instant at or after `not_before` whose local clock shows `wall` or later.

    An ambiguous wall time (the repeated autumn hour) gives its first occurrence not
    before `not_before`; a wall time that never happens (the spring-forward gap) gives
    the instant the clocks jump past it.
    """
    found: list[dt.datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(dt.UTC)
        if local_wall(instant, tz) == wall and instant >= not_before:
            found.append(instant)
    if found:
        return min(found)
    early = wall.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)
    late = wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    if local_wall(early, tz) == wall or local_wall(late, tz) == wall:
        # The clock showed `wall` only before not_before: callers never ask for that.
        raise ValueError(f"{wall} is not shown in {tz} at or after {not_before}")
    # A gap: the wall time is skipped. Between the two readings the local clock only
    # moves forward, so bisect (in whole seconds) to the instant of the jump.
    low, high = sorted((int(early.timestamp()), int(late.timestamp())))
    while high - low > 1:
        middle = (low + high) // 2
        if local_wall(dt.datetime.fromtimestamp(middle, dt.UTC), tz) >= wall:
            high = middle
        else:
            low = middle
    return max(dt.datetime.fromtimestamp(high, dt.UTC), not_before)


def _offset_at(epoch: int, tz: dt.tzinfo) -> dt.timedelta:
    return dt.datetime.fromtimestamp(epoch, tz).utcoffset() or dt.timedelta(0)


@functools.lru_cache(maxsize=4096)
def offset_changes(tz: dt.tzinfo, day: int) -> tuple[tuple[int, dt.timedelta, dt.timedelta], ...]:
    """The instants (epoch seconds) in UTC day `day` (days since the epoch) at which the
    zone's UTC offset changes, each with the offset before and after.

    Offsets are sampled hourly (zones never change twice within an hour), then a change
    is bisected to the second. Cached: gating asks about the same few zones and days for
    every task, and sampling a night hour by hour was most of a gate decision's time."""
    found = []
    start = day * 86400
    for hour in range(24):
        low, high = start + hour * 3600, start + (hour + 1) * 3600
        before, after = _offset_at(low, tz), _offset_at(high, tz)
        if before == after:
            continue
        while high - low > 1:
            middle = (low + high) // 2
            if _offset_at(middle, tz) == before:
                low = middle
            else:
                high = middle
        found.append((high, before, after))
    return tuple(found)


def first_fall_back(start: dt.datetime, end: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The first instant in `(start, end]` at which the clocks go back, if any."""
    first, last = start.timestamp(), end.timestamp()
    for day in range(math.floor(first) // 86400, math.ceil(last) // 86400 + 1):
        for at, before, after in offset_changes(tz, day):
            if first < at <= last and after < before:
                return dt.datetime.fromtimestamp(at, dt.UTC)
    return None


_SPANS_PER_KEY = 8
"""Quiet spans remembered per (windows, zone): a few nights, for streams slightly out of order."""
_MAX_KEYS = 4096
"""(windows, zone) pairs remembered; customers' own windows and zones make more of them."""
_Key = tuple[tuple[QuietWindow, ...], dt.tzinfo]
"""The windows and the zone a span holds for."""
_spans: dict[_Key, list[tuple[dt.datetime, dt.datetime]]] = {}


def next_open_instant(
    instant: dt.datetime, windows: Sequence[QuietWindow], tz: dt.tzinfo
) -> dt.datetime | None:
    """The first instant at or after `instant` outside every window (None: quiet all day).

    Touching or overlapping windows chain: `21:00-23:00` and `23:00-08:00` end at 08:00.

    Remembers the quiet spans it walked: when `q0` is quiet and opens at `R`, every instant
    in `[q0, R)` is quiet too and opens at `R`, so a later query inside the span (events
    come in time order, and most customers share the windows and the zone) is answered
    without walking. The answer is the walk's, to the microsecond and in UTC.
    """
    current = instant.astimezone(dt.UTC)
    key = (tuple(windows), tz)
    spans = _spans.get(key)
    if spans is not None:
        for start, opens in spans:
            if start <= current < opens:
                return opens
    opened = _open.get(key)
    if opened is not None:
        for start, until in opened:
            if start <= current < until:
                return current
    found = _walk(current, key[0], tz)
    if found is not None and found > current:
        _remember(_spans, key, (current, found))
    elif found == current and key[0]:
        closes = _open_until(current, key[0], tz)
        if closes is not None and closes > current:
            _remember(_open, key, (current, closes))
    return found


def _remember(
    cache: dict[_Key, list[tuple[dt.datetime, dt.datetime]]],
    key: _Key,
    span: tuple[dt.datetime, dt.datetime],
) -> None:
    """Keep `span` first among the key's (the latest asked is the likeliest next), at
    most `_SPANS_PER_KEY` of them and `_MAX_KEYS` keys (all dropped when full)."""
    spans = cache.get(key)
    if spans is None:
        if len(cache) >= _MAX_KEYS:
            cache.clear()
        spans = cache[key] = []
    spans.insert(0, span)
    del spans[_SPANS_PER_KEY:]


_open: dict[_Key, list[tuple[dt.datetime, dt.datetime]]] = {}
"""Open spans remembered per (windows, zone), as `_spans` the quiet ones: most tasks are
made in the day, when the walk finds the instant open at once and used to run every time."""


def _open_until(
    current: dt.datetime, windows: Sequence[QuietWindow], tz: dt.tzinfo
) -> dt.datetime | None:
    """For an instant outside every window: an instant up to which every instant is too
    (None: none found). From an open wall-clock time the clock enters a window only at a
    window's start, so up to the next start the wall clock shows (or the clocks jump past)
    all is open, as long as the clock runs forward: the span stops where it goes back."""
    wall = local_wall(current, tz)
    day = wall.date()
    starts = []
    for window in windows:
        start = dt.datetime.combine(day, window.start)
        starts.append(start if start > wall else start + _DAY)
    try:
        until = first_instant_showing(min(starts), tz, current)
    except ValueError:
        return None
    fall_back = first_fall_back(current, until, tz)
    return until if fall_back is None else min(until, fall_back)


def _walk(
    current: dt.datetime, windows: Sequence[QuietWindow], tz: dt.tzinfo
) -> dt.datetime | None:
    """`next_open_instant` without the remembered spans (`current` in UTC)."""
    limit = current + _LOOK_AHEAD
    while current <= limit:
        wall = local_wall(current, tz)
        covering = [window for window in windows if window.contains(wall.time())]
        if not covering:
            return current
        # Every covering window contains `current`, so while the clock runs forward their
        # union lasts until the last of them ends; a window starting later is caught on
        # the next pass. When the clocks go back first, look again from that instant.
        ends = max(
            first_instant_showing(window.end_after(wall), tz, current) for window in covering
        )
        fall_back = first_fall_back(current, ends, tz)
        current = ends if fall_back is None else min(ends, fall_back)
    return None
