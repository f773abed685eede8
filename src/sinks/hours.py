"""The operator's working hours per channel (`hours:` in the dispatch policy), and the first
instant a task may be acted on.

A channel's hours are daily `HH:MM-HH:MM` windows on the operator's wall clock
(`DispatchPolicy.timezone`), half-open like quiet hours: `09:00-21:00` is open from 09:00
up to, not including, 21:00. A window may cross midnight (`20:00-02:00`: open until 02:00
the next morning); a shift that runs past midnight is a real timetable, and reading it
as an error would leave no way to write it. A channel is closed outside the union of its
windows, and that closed part is itself a set of daily windows (`ChannelHours.closed`),
so when a channel opens is `next_open_instant` over them: the DST-aware walk that ends
quiet hours, not a second one.

`first_allowed` finds the first instant several such constraints all allow (the
channel's hours, the customer's quiet hours in another zone): each says when it next
allows from a given instant, and the candidate moves to the latest of their answers
until they agree.

A task's own quiet hours, as dispatch reads them: whether they hold back its channel
(`quiet_holds`), when they let it go (`quiet_opens`, one such constraint), and the task as
consumers get it, without the channels they hold and its times in its moment's offset
(`published`).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from moments.models import ServiceTask
from rules.gating import open_after_quiet
from rules.quiet_hours import QuietWindow, next_open_instant, parse_window

_DAY_MINUTES = 24 * 60
_FIX = "write the hours the channel is worked, HH:MM-HH:MM such as 09:00-21:00"
MAX_ROUNDS = 16
"""Candidate openings `first_allowed` tries: two sets of daily windows agree within a few
(each round moves the candidate to an opening of one of them)."""

Opening = Callable[[dt.datetime], dt.datetime | None]
"""A constraint: the first instant at or after the given one that it allows (None: none)."""


def _minute(at: dt.time) -> int:
    return at.hour * 60 + at.minute


def _time(minute: int) -> dt.time:
    return dt.time(minute // 60 % 24, minute % 60)


def covered_minutes(windows: Iterable[QuietWindow]) -> list[bool]:
    """For each minute of the day, whether a window covers it."""
    covered = [False] * _DAY_MINUTES
    for window in windows:
        start, end = _minute(window.start), _minute(window.end)
        span = range(start, end) if end > start else [*range(start, _DAY_MINUTES), *range(end)]
        for minute in span:
            covered[minute] = True
    return covered


def complement(windows: Sequence[QuietWindow]) -> tuple[QuietWindow, ...]:
    """The daily windows no window of `windows` covers, each a maximal span (one crossing
    midnight when the gap does); () when they cover the whole day. `windows` must cover
    at least a minute."""
    covered = covered_minutes(windows)
    if all(covered):
        return ()
    first = covered.index(True)  # a gap never starts before it: spans wrap around it
    out: list[QuietWindow] = []
    start: int | None = None
    for step in range(1, _DAY_MINUTES + 1):
        minute = (first + step) % _DAY_MINUTES
        if not covered[minute] and start is None:
            start = minute
        elif covered[minute] and start is not None:
            out.append(QuietWindow(_time(start), _time(minute)))
            start = None
    return tuple(sorted(out, key=lambda w: w.start))


@dataclass(frozen=True)
class ChannelHours:
    """When a channel is worked: `open` as written (none: all day), `closed` the rest of
    the day, and never on `days_off` (`closed_days:`, local dates in the policy's zone)."""

    open: tuple[QuietWindow, ...]
    closed: tuple[QuietWindow, ...]
    days_off: frozenset[dt.date] = frozenset()

    def opens(self, instant: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
        """The first instant at or after `instant` inside an open window and not on a day
        off (in UTC). Each day off found moves the search to the next local midnight, so
        it ends within one more round than there are days off."""
        at = instant
        for _ in range(len(self.days_off) + 1):
            found = (
                at.astimezone(dt.UTC) if not self.closed else next_open_instant(at, self.closed, tz)
            )
            if found is None:  # parse_hours refuses hours that leave nothing open
                break
            day = found.astimezone(tz).date()
            if day not in self.days_off:
                return found
            at = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
        raise ValueError(f"channel hours {self} are never open")

    def __str__(self) -> str:
        return self.describe()

    def describe(self, spans: int | None = None) -> str:
        """The hours and days off in words; `spans`: at most that many runs of days off
        named (`days_text`), the rest counted."""
        said = ", ".join(str(w) for w in self.open) or "all day"
        if self.days_off:
            said += f" except on {days_text(self.days_off, spans)}"
        return said


_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
"""A day as `closed_days:` takes it: YYYY-MM-DD, nothing else `date.fromisoformat` reads."""
MAX_DAYS_OFF = 366
"""Days a channel may be closed in all (`closed_days:`): a year of them is a typo in a
range, not a timetable."""


def days_off_text(value: object) -> tuple[dt.date, ...]:
    """A channel's `closed_days:` as written (dates, `YYYY-MM-DD` or `FROM..TO` ranges, both
    ends included), as the sorted days; ValueError naming the fix."""
    fix = "write days as YYYY-MM-DD or a range FROM..TO, such as [2027-02-06..2027-02-13]"
    items = value if isinstance(value, list | tuple) else [value]
    days: set[dt.date] = set()
    for item in items:
        text = item.isoformat() if isinstance(item, dt.date) else item
        if not isinstance(text, str):
            raise ValueError(f"{item!r}: {fix}")
        first, dots, last = (part.strip() for part in text.partition(".."))
        ends = [first, last] if dots else [first]
        if not all(_ISO_DAY.fullmatch(end) for end in ends):
            # Python's fromisoformat alone took `2027-W06` (an ISO week: its Monday only),
            # `20270206`, and `2027-02-06..` (a range left unfinished: one day)
            raise ValueError(f"{text}: {fix}")
        try:
            start = dt.date.fromisoformat(first)
            end = dt.date.fromisoformat(last) if dots else start
        except ValueError:
            raise ValueError(f"{text}: {fix}") from None
        if end < start:
            raise ValueError(f"{text}: the range ends before it starts; {fix}")
        if (end - start).days >= MAX_DAYS_OFF:
            raise ValueError(
                f"{text}: more than {MAX_DAYS_OFF} days closed; a channel closed for good is "
                'one given no capacity (`capacity: {"*": {CHANNEL: 0}}`)'
            )
        days.update(start + dt.timedelta(days=n) for n in range((end - start).days + 1))
    if len(days) > MAX_DAYS_OFF:
        raise ValueError(f"{len(days)} days closed, more than {MAX_DAYS_OFF}; {fix}")
    return tuple(sorted(days))


def days_text(days: Iterable[dt.date], shown: int | None = None) -> str:
    """Days off as a reader wants them: consecutive days as one range; `shown`: at most
    that many ranges named, the days of the rest counted (a centre closed every Sunday
    named 52 of them, 700 characters a channel, in a refused reload's log line)."""
    spans: list[list[dt.date]] = []
    for day in sorted(days):
        if spans and day - spans[-1][1] == dt.timedelta(days=1):
            spans[-1][1] = day
        else:
            spans.append([day, day])
    named = spans if shown is None else spans[:shown]
    said = ", ".join(
        a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in named
    )
    if len(named) < len(spans):
        more = sum((b - a).days + 1 for a, b in spans[len(named) :])
        said += f" and {more} more day(s) (`moments check` lists them)"
    return said


def _window(text: str) -> QuietWindow:
    """One open window; the fix said as for working hours, not quiet hours."""
    try:
        window = parse_window(text)
    except ValueError as exc:
        if "the same" not in str(exc):
            raise ValueError(f"{str(exc).split(';')[0]}; {_FIX}") from None
        raise ValueError(
            f"{text}: start and end are the same, so the window is empty or the whole day; "
            f"{_FIX}, or remove the channel from hours to have it open all day"
        ) from None
    return window


def _overlap(first: QuietWindow, second: QuietWindow) -> QuietWindow | None:
    """The first span of the day both windows cover (from a minute neither starts it in),
    or None."""
    one, other = covered_minutes([first]), covered_minutes([second])
    both = [a and b for a, b in zip(one, other, strict=True)]
    starts = [m for m in range(_DAY_MINUTES) if both[m] and not both[m - 1]]
    if not starts:  # none in common (a window is never the whole day: refused before)
        return None
    start = starts[0]
    end = next(
        (
            m % _DAY_MINUTES
            for m in range(start + 1, start + _DAY_MINUTES)
            if not both[m % _DAY_MINUTES]
        ),
        start,
    )
    return QuietWindow(_time(start), _time(end))


def hours_text(value: object) -> tuple[str, ...]:
    """A channel's hours as written (one window, or a list of them), checked and
    normalised to `HH:MM-HH:MM`; ValueError naming the fix."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{value!r}: {_FIX}, or a list of them such as [09:00-12:00, 13:00-18:00]")
    if not texts:
        raise ValueError(
            f"no window, so the channel would never be worked; {_FIX}, or remove the channel "
            "from hours to have it open all day"
        )
    windows = [_window(t) for t in texts]
    for i, first in enumerate(windows):
        for second in windows[i + 1 :]:
            shared = _overlap(first, second)
            if shared is not None:
                raise ValueError(
                    f"{first} and {second} overlap ({shared}): write them as one window, or "
                    "correct the times (a break between two: [09:00-12:00, 13:00-18:00])"
                )
    if not complement(windows):
        raise ValueError(
            f"{', '.join(str(w) for w in windows)} cover the whole day; remove the channel "
            "from hours (a channel not listed is open all day)"
        )
    return tuple(str(w) for w in windows)


@functools.lru_cache(maxsize=64)
def channel_hours(texts: tuple[str, ...], days_off: tuple[dt.date, ...] = ()) -> ChannelHours:
    """`hours_text`'s windows (none: all day) and `days_off_text`'s days as `ChannelHours`
    (cached: dispatch asks for every task)."""
    windows = tuple(parse_window(t) for t in texts)
    return ChannelHours(windows, complement(windows) if windows else (), frozenset(days_off))


def first_allowed(
    at: dt.datetime, openings: Sequence[Opening], rounds: int = MAX_ROUNDS
) -> dt.datetime | None:
    """The first instant at or after `at` that every constraint allows; None when one never
    allows again.

    Each round asks every constraint from the candidate and moves it to the latest answer:
    no earlier instant is allowed by all (the one that answered later allows none before
    its answer), so the candidate only moves forward, and stops where all agree. After
    `rounds` without agreement it is returned as it is: no earlier instant is allowed, so
    a caller that waits until then and asks again loses nothing."""
    candidate = at
    for _ in range(rounds):
        latest = candidate
        for opening in openings:
            found = opening(candidate)
            if found is None:
                return None
            latest = max(latest, found)
        if latest == candidate:
            return candidate
        candidate = latest
    return candidate


def quiet_holds(task: ServiceTask) -> bool:
    """The quiet hours the task carries hold back its channel now: the channel they list
    (the rules' `quiet_hours_channels`, which a task moved to a fallback channel is judged
    by), or, for a task made before they were listed, any it is on."""
    quiet = task.quiet_hours
    return quiet is not None and (quiet.channels is None or task.channel in quiet.channels)


def published(task: ServiceTask) -> ServiceTask:
    """The task as consumers get it: `quiet_hours` only when they hold back its channel,
    as the contract says, without the channels they hold (dispatch's own), and without
    `counted` (dispatch's own too); every time in the offset of its `triggered_at`
    (`on_its_clock`)."""
    update: dict[str, Any] = on_its_clock(task)
    quiet = task.quiet_hours
    if quiet is not None and quiet.channels is not None:
        shown = quiet.model_copy(update={"channels": None}) if quiet_holds(task) else None
        update["quiet_hours"] = shown
    if task.counted:
        update["counted"] = False
    return task.model_copy(update=update) if update else task


def on_its_clock(task: ServiceTask) -> dict[str, Any]:
    """The task's times not written in the offset of its `triggered_at` (the event's that
    made the moment), in it: the same instants. The worker's clock (`created_at`) and
    dispatch's waits (`deliver_after`, `deferred.until`, set from epoch seconds) were in
    UTC, `Z`, beside a moment at +08:00, and a merged moment keeps its own event's offset.
    The offset, not the moment's zone: a sweep's moment is dated on the subscriber's zone
    (America/New_York), whose offset after a change of the clocks (an expiry two days on)
    is another."""
    offset = task.triggered_at.utcoffset()
    zone = task.triggered_at.tzinfo if offset is None else dt.timezone(offset)

    def moved(at: dt.datetime) -> dt.datetime | None:
        return None if at.utcoffset() == offset else at.astimezone(zone)

    update: dict[str, Any] = {}
    for name in ("created_at", "deliver_after", "expires_at"):
        if (at := moved(getattr(task, name))) is not None:
            update[name] = at
    deferred = task.deferred
    if deferred is not None and (until := moved(deferred.until)) is not None:
        update["deferred"] = deferred.model_copy(update={"until": until})
    related = task.related
    if related and any(
        moved(m.triggered_at) or (m.expires_at is not None and moved(m.expires_at)) for m in related
    ):
        update["related"] = [
            m.model_copy(
                update={
                    "triggered_at": m.triggered_at.astimezone(zone),
                    "expires_at": None if m.expires_at is None else m.expires_at.astimezone(zone),
                }
            )
            for m in related
        ]
    return update


def quiet_opens(task: ServiceTask, at: dt.datetime) -> dt.datetime | None:
    """When the task's quiet hours let it go, from `at`: `at` itself when they do not hold
    now (or it has none, or they do not hold its channel), None when they never open."""
    quiet = task.quiet_hours
    if quiet is None or not quiet_holds(task):
        return at
    opens = open_after_quiet(at, quiet.zone, quiet.windows)
    return None if opens is None else max(opens, at)
