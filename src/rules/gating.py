"""Do-not-disturb gating: may a task go out now, later, or never?

Do-not-disturb moments never create tasks; they gate every other one. `gate` is a
pure function of the task, what we know of the subscriber and the `GatingPolicy`
(the `gating:` section of a rules file). Everything is in event time: `now` is the
event-time instant the engine evaluates at (normally the task's `triggered_at`).

The gates, in the order they are applied (the first that suppresses wins):

1. **expired**: `now` is at or past `expires_at`: suppress.
2. **closed** line: suppress.
3. **opt_out**: the subscriber opted out of the task's channel: suppress.
4. **complaint_open**: an open complaint (with a record within
   `open_complaint_lapses_after`) blocks the purposes in `open_complaint_blocks` (sales
   by default, never service): suppress.
5. **suspended** line: per purpose, `wait` (defer with `until=None`) or `suppress`.
6. **quiet_hours**: never deliver inside the default windows or the customer's own,
   in the customer's local time (the visited place's while roaming, until the trip
   lapses after `roaming_lapses_after` with no roaming record); defer to the
   end of the covering windows, chained when they touch or overlap. A task whose
   quiet hours outlast it is suppressed as `expired`.

The policy's `frequency_cap` is not a gate here: dispatch applies it where a task is
sent (`sinks.dispatch`), counting the contacts made, not the moments found (a merged
group is one contact; a task dropped after gating none).

A send or defer always has `now <= deliver_after < expires_at`.

Waiting for reactivation: a task on a suspended line that may wait comes back as
`defer`, reason `suspended`, `until=None`, and `deliver_after` the earliest instant the
other gates would allow. Dispatch holds it until a profile update sets the line active
(which makes it due at once); it drops the task at `expires_at`.

Quiet hours again at dispatch: every task carries them while they hold any channel
(`quiet_hours_carried`: the zone and windows used here, and the channels they hold, so a
task dispatch moves to another channel is judged by that one's), since dispatch has
neither the policy nor the customer. Whatever holds a task after gating (the merge window, the
contact cap, capacity, a retry's wait, a suspended line, a crash) may bring it to
dispatch at another hour, so dispatch judges them again when it would publish it
(`open_after_quiet`), and waits for their end or drops the task as expired.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from moments.models import Channel
from moments.zones import (
    DEFAULT_TIMEZONE,
    check_zone,
    country_zone,
    known_zone,
    subscriber_zone,
)
from rules.durations import echoed, parse_duration
from rules.quiet_hours import (
    QuietWindow,
    covers_whole_day,
    lenient_window,
    next_open_instant,
    parse_window,
)

Purpose = Literal["service", "sales"]
Action = Literal["send", "defer", "suppress"]
Suppressing = Literal["expired", "closed", "opt_out", "complaint_open", "suspended"]
"""What `gate` suppresses a task for (a closed set: metrics declare each at 0)."""
Deferring = Literal["quiet_hours", "suspended"]
"""What `gate` defers a task for."""
Reason = Literal[Suppressing, Deferring, "frequency_cap"]
OnSuspended = Literal["wait", "suppress"]

ALL_CHANNELS: tuple[Channel, ...] = tuple(Channel)


def _window_text(text: str) -> str:
    return str(parse_window(text))


WindowText = Annotated[str, AfterValidator(_window_text)]
"""A quiet window as written, checked and normalised to HH:MM-HH:MM."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrequencyCap(_Strict):
    """At most `max_contacts` tasks per `period` on the counted channels, across all rules."""

    max_contacts: int = Field(default=3, ge=1, le=1000)
    period: str = Field(default="7d", description="A duration such as 7d or 24h")
    channels: tuple[Channel, ...] = Field(
        default=(Channel.OUTBOUND_CALL, Channel.MANAGER, Channel.SMS),
        min_length=1,
        description="Channels whose tasks count towards the cap and are capped",
    )
    reserved: int = Field(
        default=0,
        ge=0,
        description="Contacts of max_contacts that only priorities 1-2 may take (courtesy "
        "SMS used up a week's cap and a complaint callback was dropped)",
    )

    @model_validator(mode="after")
    def _room_left(self) -> FrequencyCap:
        if self.reserved >= self.max_contacts:
            raise ValueError(
                f"reserved {self.reserved} leaves priorities 3-5 no contact of max_contacts "
                f"{self.max_contacts}; reserve fewer, e.g. {self.max_contacts - 1}"
            )
        return self

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        if parse_duration(value) <= dt.timedelta(0):
            raise ValueError(f"period {echoed(value)} must be longer than zero, e.g. 7d")
        return value

    @functools.cached_property
    def span(self) -> dt.timedelta:
        return parse_duration(self.period)


def _positive_duration(value: str | None, info: ValidationInfo) -> str | None:
    """A duration longer than zero, or None (never)."""
    if value is not None and parse_duration(value) <= dt.timedelta(0):
        raise ValueError(
            f"{info.field_name} {echoed(value)} must be longer than zero, e.g. 14d; null for never"
        )
    return value


class SuspendedPolicy(_Strict):
    """What a task for a suspended line does, per purpose: wait for reactivation or drop."""

    service: OnSuspended = "wait"
    sales: OnSuspended = "suppress"


class GatingPolicy(_Strict):
    """The `gating:` section of a rules file: do-not-disturb for every rule's tasks."""

    timezone: str = Field(
        default=DEFAULT_TIMEZONE,
        description="IANA zone of subscribers whose profile has none (or an unknown one): "
        "their days, weeks and months, special days and quiet hours",
    )
    quiet_hours: tuple[WindowText, ...] = Field(
        default=("21:00-08:00",),
        max_length=8,  # with the customer's own 8 at most, a task carries 16
        description="Default quiet windows, HH:MM-HH:MM local time; the customer's own add to them",
    )
    quiet_hours_channels: tuple[Channel, ...] = Field(
        default=ALL_CHANNELS,
        description="Channels quiet hours hold back (all by default: a push wakes a phone too)",
    )
    frequency_cap: FrequencyCap | None = Field(
        default_factory=FrequencyCap, description="null switches the cap off"
    )
    open_complaint_blocks: tuple[Purpose, ...] = Field(
        default=("sales",), description="Purposes an open complaint blocks"
    )
    suspended: SuspendedPolicy = Field(default_factory=SuspendedPolicy)
    roaming_lapses_after: str | None = Field(
        default="14d",
        description="A trip with no roaming record for this long is over: quiet hours go "
        "back to the customer's own clock (null: only a record of the return ends it)",
    )
    open_complaint_lapses_after: str | None = Field(
        default="30d",
        description="An open complaint with no record (opened, updated) for this long is no "
        "longer counted as being handled: it blocks nothing and adds no risk (null: until "
        "resolved)",
    )

    _timezone = field_validator("timezone")(check_zone)
    _lapses = field_validator("roaming_lapses_after", "open_complaint_lapses_after")(
        _positive_duration
    )

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Refused as a value twice in the other lists is (each is normalised, `22:00-8:00`
        # too): a window written twice was dropped without a word.
        for i, text in enumerate(value):
            if text in value[:i]:
                raise ValueError(
                    f"quiet_hours[{i}] {text!r} repeats quiet_hours[{value.index(text)}]; "
                    "write each window once"
                )
        if value and covers_whole_day(parse_window(text) for text in value):
            raise ValueError(
                "quiet_hours cover the whole day, so no task could ever be sent; "
                "leave some hours open, e.g. [21:00-08:00]"
            )
        return value

    @model_validator(mode="after")
    def _no_duplicates(self) -> GatingPolicy:
        for name in ("quiet_hours_channels", "open_complaint_blocks"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice; write each once")
        return self

    @functools.cached_property
    def windows(self) -> tuple[QuietWindow, ...]:
        """The parsed `quiet_hours` (each once: a window listed twice is refused)."""
        return tuple(parse_window(text) for text in self.quiet_hours)

    @functools.cached_property
    def roaming_lapse(self) -> int | None:
        """`roaming_lapses_after` in seconds (None: never)."""
        return _seconds(self.roaming_lapses_after)

    @functools.cached_property
    def open_complaint_lapse(self) -> int | None:
        """`open_complaint_lapses_after` in seconds (None: never)."""
        return _seconds(self.open_complaint_lapses_after)

    @functools.cached_property
    def zone(self) -> zoneinfo.ZoneInfo:
        """`timezone`: the default of `moments.zones.subscriber_zone` for the engine."""
        return zoneinfo.ZoneInfo(self.timezone)


def _seconds(duration: str | None) -> int | None:
    return int(parse_duration(duration).total_seconds()) if duration is not None else None


def _aware(name: str, value: dt.datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be time-zone aware; pass e.g. datetime(..., tzinfo=UTC)")


@dataclass(frozen=True, slots=True)
class GateInput:
    """The task being gated (times are aware; `now` is event time)."""

    channel: str
    priority: int
    purpose: Purpose
    triggered_at: dt.datetime
    expires_at: dt.datetime
    now: dt.datetime

    def __post_init__(self) -> None:
        if (
            self.triggered_at.utcoffset() is None
            or self.expires_at.utcoffset() is None
            or self.now.utcoffset() is None
        ):  # naive (a tzinfo saying None is naive too): say which
            for name in ("triggered_at", "expires_at", "now"):
                _aware(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class SubscriberView:
    """What gating needs to know of a subscriber (from the profile and the state record)."""

    timezone: str | None = None
    """The profile's IANA zone."""
    roaming_timezone: str | None = None
    """The visited place's IANA zone while roaming abroad; wins over everything else. The
    roaming fields are None once the trip lapsed (`roaming_lapses_after`, the engine's
    `abroad`)."""
    roaming_utc_offset_minutes: int | None = None
    """The visited place's UTC offset when only that is known; wins over the profile zone."""
    roaming_country: str | None = None
    """The visited country when the roaming record said neither: its zone when it has one
    clock (`moments.zones.country_zone`), else the profile's as at home."""
    quiet_hours: tuple[str, ...] = ()
    """The customer's own HH:MM-HH:MM windows; they add to the policy's."""
    status: str | None = None
    """`active`, `suspended` or `closed`; None (unknown) counts as active."""
    opt_out: frozenset[str] = frozenset()
    open_complaints: int = 0
    """Complaints still being handled: lapsed ones (`open_complaint_lapses_after`) left out."""


@dataclass(frozen=True, slots=True)
class GateDecision:
    """`send` now, `defer` until `deliver_after`, or `suppress` for good."""

    action: Action
    deliver_after: dt.datetime
    reason: Reason | None = None
    until: dt.datetime | None = None
    """For a defer: when it ends (None: until the line is reactivated). For a suppress by
    the cap or by quiet hours: when the task could have gone out."""


def local_zone(subscriber: SubscriberView, policy: GatingPolicy) -> dt.tzinfo:
    """The customer's local time: the visited place's while roaming, else the profile's.

    Order: roaming zone, roaming UTC offset, the visited country's zone when it keeps
    one clock (France, Japan; not the United States), then the subscriber's zone as
    everywhere else (`subscriber_zone`: the profile's, else the policy's default). An
    unknown zone name is skipped (profile data must not stop the engine).
    """
    visited = roaming_zone(
        subscriber.roaming_timezone,
        subscriber.roaming_utc_offset_minutes,
        subscriber.roaming_country,
    )
    return visited or subscriber_zone(subscriber.timezone, policy.zone)


def roaming_zone(
    timezone: str | None, utc_offset_minutes: int | None, country: str | None
) -> dt.tzinfo | None:
    """The visited place's clock, from what the latest roaming record said: its zone, else
    its UTC offset, else its country's zone when the country keeps one clock; None when
    none of them tells (at home, or in a country of several clocks named alone). Quiet
    hours and special days both ask it, so a customer abroad has one local time."""
    if timezone and (zone := known_zone(timezone)):
        return zone
    if utc_offset_minutes is not None and -24 * 60 < utc_offset_minutes < 24 * 60:
        return dt.timezone(dt.timedelta(minutes=utc_offset_minutes))
    if country and (zone := country_zone(country)):
        return zone
    return None


def quiet_windows(subscriber: SubscriberView, policy: GatingPolicy) -> tuple[QuietWindow, ...]:
    """The policy's windows plus the customer's own (bad customer windows are skipped), each
    once in first-seen order: a task carries them to dispatch, and a profile repeating the
    policy's window must not list it twice."""
    if not subscriber.quiet_hours:
        return policy.windows
    own = (lenient_window(text) for text in subscriber.quiet_hours)
    both = policy.windows + tuple(window for window in own if window is not None)
    return tuple(dict.fromkeys(both))


def _suppress(
    reason: Suppressing, now: dt.datetime, until: dt.datetime | None = None
) -> GateDecision:
    return GateDecision("suppress", now, reason, until)


def gate(task: GateInput, subscriber: SubscriberView, policy: GatingPolicy) -> GateDecision:
    """Decide whether the task is sent now, deferred, or suppressed (see the module doc)."""
    now = task.now
    if now >= task.expires_at:
        return _suppress("expired", now)
    if subscriber.status == "closed":
        return _suppress("closed", now)
    if task.channel in subscriber.opt_out:
        return _suppress("opt_out", now)
    if subscriber.open_complaints > 0 and task.purpose in policy.open_complaint_blocks:
        return _suppress("complaint_open", now)
    suspended = subscriber.status == "suspended"
    if suspended and getattr(policy.suspended, task.purpose) == "suppress":
        return _suppress("suspended", now)

    earliest: dt.datetime = now
    reason: Deferring | None = None
    if task.channel in policy.quiet_hours_channels:
        windows = quiet_windows(subscriber, policy)
        opens = next_open_instant(earliest, windows, local_zone(subscriber, policy))
        if opens is None or opens >= task.expires_at:
            return _suppress("expired", now, opens)
        if opens > earliest:
            earliest, reason = opens, "quiet_hours"
    earliest = earliest.astimezone(now.tzinfo)

    if suspended:
        return GateDecision("defer", earliest, "suspended", None)
    if reason is None:
        return GateDecision("send", now)
    return GateDecision("defer", earliest, reason, earliest)


def quiet_hours_kept(
    channel: str, subscriber: SubscriberView, policy: GatingPolicy
) -> tuple[str | None, list[str]]:
    """What a task carries so that dispatch can judge its quiet hours again when it would
    publish it (it knows neither the policy nor the customer): the zone's label and the
    windows, or (None, []) when the channel has no quiet hours."""
    if channel not in policy.quiet_hours_channels:
        return None, []
    tz = local_zone(subscriber, policy)
    return zone_label(tz), [str(w) for w in quiet_windows(subscriber, policy)]


def quiet_hours_carried(
    subscriber: SubscriberView, policy: GatingPolicy
) -> tuple[str | None, list[str], tuple[Channel, ...]]:
    """What a task carries so that dispatch can judge quiet hours again, on whatever
    channel it sends the task: the zone's label, the windows and the channels they hold,
    whenever they hold any ((None, [], ()) otherwise). A task on a channel they do not hold
    carries them too: dispatch may move it to one they do (a rule's fallback), and an SMS
    falling back from an exempt push went out at 03:00, judged by nothing."""
    if not policy.quiet_hours_channels:
        return None, [], ()
    tz = local_zone(subscriber, policy)
    windows = [str(w) for w in quiet_windows(subscriber, policy)]
    return zone_label(tz), windows, tuple(policy.quiet_hours_channels)


def zone_label(tz: dt.tzinfo) -> str:
    """An IANA zone's name, or a fixed offset as +HH:MM (a roaming UTC offset)."""
    if isinstance(tz, zoneinfo.ZoneInfo):
        return tz.key
    offset = tz.utcoffset(None) or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def zone_of_label(label: str) -> dt.tzinfo | None:
    """`zone_label` read back; None for a label that is neither."""
    if label[:1] in "+-" and len(label) == 6 and label[3] == ":":
        try:
            hours, minutes = int(label[1:3]), int(label[4:6])
        except ValueError:
            return None
        sign = -1 if label[0] == "-" else 1
        return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    return known_zone(label)


def open_after_quiet(
    instant: dt.datetime, zone: str | None, windows: Sequence[str]
) -> dt.datetime | None:
    """The first instant from `instant` outside the kept quiet hours (`instant` itself
    when none are kept; None when they cover the whole day)."""
    if zone is None or not windows:
        return instant
    tz, parsed = _kept(zone, tuple(windows))
    if tz is None or not parsed:
        return instant
    return next_open_instant(instant, parsed, tz)


@functools.lru_cache(maxsize=1024)
def _kept(zone: str, windows: tuple[str, ...]) -> tuple[dt.tzinfo | None, tuple[QuietWindow, ...]]:
    """Kept quiet hours read back, once per zone and windows (dispatch judges every task)."""
    parsed = tuple(w for w in (lenient_window(text) for text in windows) if w is not None)
    return zone_of_label(zone), parsed


def describe(policy: GatingPolicy) -> list[str]:
    """The policy in plain words, one line per gate (for `moments rules explain`)."""
    lines: list[str] = []
    channels = ", ".join(policy.quiet_hours_channels) or "no channel"
    if policy.quiet_hours:
        lines.append(
            f"Quiet hours {', '.join(policy.quiet_hours)} in the customer's local time, plus the "
            f"customer's own windows, hold back {channels} tasks until they end; while roaming "
            f"abroad the visited place's time counts; with no known zone, {policy.timezone}."
        )
    else:
        lines.append(
            f"No default quiet hours; the customer's own windows hold back {channels} tasks, "
            f"in local time ({policy.timezone} when unknown)."
        )
    if policy.roaming_lapses_after is None:
        lines.append("A trip abroad lasts until a roaming record says the customer is home.")
    else:
        lines.append(
            f"A trip abroad is over {policy.roaming_lapses_after} after its latest roaming "
            "record, or at a record of the return: quiet hours are then on the customer's own "
            "clock."
        )
    cap = policy.frequency_cap
    if cap is None:
        lines.append("No frequency cap.")
    else:
        lines.append(
            f"At most {cap.max_contacts} contact{'' if cap.max_contacts == 1 else 's'} per "
            f"{cap.period} across all rules on "
            f"{', '.join(cap.channels)}; a task over the cap waits for the oldest contact to "
            f"age out, or is dropped if it expires first."
        )
    blocked = policy.open_complaint_blocks
    if blocked:
        allowed = sorted({"service", "sales"} - set(blocked))
        tail = f"; {', '.join(allowed)} tasks still go out" if allowed else ""
        lines.append(f"An open complaint drops {', '.join(blocked)} tasks{tail}.")
    else:
        lines.append("An open complaint blocks no task.")
    lapse = policy.open_complaint_lapses_after
    if lapse is None:
        lines.append("A complaint counts as open until it is resolved.")
    else:
        lines.append(
            f"A complaint with no record (opened, updated) for {lapse} no longer counts as "
            "open: it blocks nothing and adds no churn risk."
        )
    for purpose in ("service", "sales"):
        if getattr(policy.suspended, purpose) == "wait":
            lines.append(
                f"On a suspended line, {purpose} tasks wait for reactivation (until they expire)."
            )
        else:
            lines.append(f"On a suspended line, {purpose} tasks are dropped.")
    lines.append(
        "Tasks for a closed line, an opted-out channel, or past their expiry are dropped; "
        "no task is ever delivered inside quiet hours, to a suspended line, or after it expires."
    )
    return lines
