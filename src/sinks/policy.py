"""The dispatch policy: capacity, overflow, contact cap, merge window, relevance, outcomes,
channel hours.

Read from the YAML file named by `MOMENTS_DISPATCH_POLICY` (see docs/architecture.md,
"Dispatch policy"); without a file the defaults below apply: no capacity limits, no
contact cap, a 30 minute merge window in which a subscriber's calls (outbound calls and
phone-manager tasks) are held so that their moments become one call. The page has an
example of every field (a test loads it).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin
from zoneinfo import ZoneInfo

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from moments.exceptions import ConfigError, InputRefusedError
from moments.models import Channel, ServiceTask
from moments.placetext import place_key
from moments.zones import DEFAULT_TIMEZONE, check_zone
from rules.durations import parse_duration
from sinks.hours import ChannelHours, channel_hours, days_off_text, days_text, hours_text
from sinks.policyerrors import located

ANY = "*"


def _duration(value: object) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    return parse_duration(str(value))


Duration = Annotated[
    dt.timedelta, BeforeValidator(_duration), Field(description="e.g. 30m, 2h, 7d")
]
"""A span written as in rules files (`30m`, `2h`, `7d`): every field of this type reads it
(a field that needed its own validator read `7d` as an error where one was forgotten)."""


def _time_as_text(value: object) -> object:
    """A time of day written as a number (`next_day_at: 900`) as its text, refused with
    HH:MM: pydantic reads a number as seconds after midnight, UTC, and `900` (or `0900`,
    read as 900 before digits with a leading zero were text) released tasks deferred to
    the next day at 00:15."""
    if isinstance(value, int | float):
        return str(value).lower()
    return value


_TIME_THEN_ZONE = re.compile(
    r"(\d{1,2}:\d{2})(?::\d{2})?\s+(?![ap]\.?m\.?$)[A-Za-z].*", re.IGNORECASE
)
"""A time of day followed by a zone's name: `09:00 Asia/Shanghai`."""


def _not_local(written: str, hhmm: str, info: ValidationInfo) -> str:
    """`next_day_at` written with an offset or a zone, refused with the fix."""
    zone = info.data.get("timezone", DEFAULT_TIMEZONE)
    return (
        f"{written!r} names an offset or zone, which is not used: next_day_at is local "
        f'time in the policy\'s timezone ({zone}): write "{hhmm}", and set timezone: '
        "if another zone was meant"
    )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OverflowPolicy(StrEnum):
    """What happens to a task when its channel's capacity for the day is used up."""

    FALLBACK = "fallback"  # another channel (e.g. call -> SMS), if that one has room
    DEFER = "defer"  # the next day at `next_day_at`, if before the task expires
    DROP = "drop"  # not sent; counted as suppressed{reason="capacity"}


class Overflow(_Frozen):
    policy: OverflowPolicy = OverflowPolicy.DEFER
    channel: Channel | None = Field(default=None, description="fallback channel")

    @model_validator(mode="after")
    def _fallback_needs_channel(self) -> Overflow:
        if self.policy is OverflowPolicy.FALLBACK and self.channel is None:
            raise ValueError(
                "policy fallback needs a channel, e.g. {policy: fallback, channel: sms}"
            )
        return self


DEFAULT_OVERFLOW = Overflow()
"""A rule's overflow when the policy names neither it nor `"*"`."""


class ContactPolicy(_Frozen):
    """At most `max_contacts` tasks per subscriber per `period`, across all rules (0: no cap)."""

    max_contacts: int = Field(default=0, ge=0)
    period: Duration = dt.timedelta(days=7)


class MergePolicy(_Frozen):
    """Moments of one subscriber within `window` become one task.

    A task that waits anyway (quiet hours, capacity, contact cap) collects the
    subscriber's later moments until it is released, those that would not wait much
    longer with it than alone (`TimeGates.join_bounds`). Tasks on `hold_channels` are
    held for the window even when due now: by default the human channels, where
    several moments must become one call and half an hour costs little, while SMS
    and app pushes (cheap, often time-critical: a roaming welcome) go at once.
    `hold_channels: []` (or `window: 0s`) sends every task as soon as it may be delivered."""

    window: Duration = dt.timedelta(minutes=30)
    hold_channels: frozenset[Channel] = frozenset({Channel.OUTBOUND_CALL, Channel.MANAGER})

    def holds(self, channel: str, attempt: int) -> bool:
        """A fresh task on `channel` is held for the window even when due now (and may
        join a waiting task due any time after it, `TimeGates.join_bounds`): not a retry
        (`attempt` >= 1, which goes when its unreachable wait ends), nor with a window of
        0, which holds nothing."""
        return self.window > dt.timedelta(0) and not attempt and channel in self.hold_channels


HoursText = Annotated[
    tuple[str, ...],
    BeforeValidator(hours_text),
    Field(description="HH:MM-HH:MM, or a list of them, on the operator's wall clock"),
]
"""A channel's working hours as written (one window or a list), checked and normalised."""


DaysOff = Annotated[
    tuple[dt.date, ...],
    BeforeValidator(days_off_text),
    Field(description="YYYY-MM-DD, or FROM..TO, or a list of them, in the policy's timezone"),
]
"""A channel's days off as written (dates and ranges), checked and expanded to days."""


class RelevanceCheckName(StrEnum):
    TOPPED_UP = "topped_up"
    CAME_HOME = "came_home"


class OutcomePolicy(_Frozen):
    declined_suppress: Duration = dt.timedelta(days=30)
    unreachable_retry_after: Duration = dt.timedelta(hours=2)
    max_retries: int = Field(default=2, ge=0, le=10)
    outcome_grace: Duration = Field(
        default=dt.timedelta(hours=1),
        description="how long after a published task's expires_at an outcome is still "
        "awaited; then, with none, it is counted in "
        "moments_tasks_unanswered_expired_total and forgotten",
    )


class DispatchPolicy(_Frozen):
    timezone: str = Field(
        default=DEFAULT_TIMEZONE,
        description="the operator's zone: the day a capacity counts and next_day_at's next "
        "day; customers' local time is the rules' gating.timezone (docs/gating.md)",
    )
    capacity: dict[str, dict[Channel, Annotated[int, Field(ge=0)]]] = Field(
        default_factory=dict
    )  # a count >= 0 on the value itself, so that an error is at its line
    _regions: dict[str, str] = PrivateAttr(default_factory=dict)
    """Each capacity region by its `place_key`: the key as written."""
    reserved_share: float = Field(default=0.2, ge=0, le=1)
    overflow: dict[str, Overflow] = Field(default_factory=dict)
    next_day_at: Annotated[dt.time, BeforeValidator(_time_as_text)] = dt.time(9, 0)
    contact: ContactPolicy = ContactPolicy()
    merge: MergePolicy = MergePolicy()
    relevance: dict[str, RelevanceCheckName] = Field(
        default_factory=lambda: {
            "low_balance": RelevanceCheckName.TOPPED_UP,
            "first_international_roaming": RelevanceCheckName.CAME_HOME,
        }
    )
    outcomes: OutcomePolicy = OutcomePolicy()
    release_batch: int = Field(
        default=500,
        ge=1,
        description="most tasks one release takes from the deferral queue; a timer tick "
        "takes up to RELEASE_BATCHES_PER_TICK (20) such batches while they come full",
    )
    min_time_left: Duration = Field(
        default=dt.timedelta(minutes=5),
        description="a task with less than this left before its expires_at is not published "
        "(suppressed as expired): no consumer could act on it in time",
    )
    hours: dict[Channel, HoursText] = Field(
        default_factory=dict,
        description="when each channel is worked, in `timezone` (e.g. outbound_call: "
        "09:00-21:00); a task waits for its channel's hours; a channel not listed is open "
        "all day",
    )
    closed_days: dict[Channel, DaysOff] = Field(
        default_factory=dict,
        description="days a channel is not worked at all, in `timezone` (e.g. manager: "
        "[2027-02-06..2027-02-13]); its tasks wait for the first hour it is worked after",
    )

    _zone = field_validator("timezone")(check_zone)

    @field_validator("capacity")
    @classmethod
    def _regions_once(cls, value: dict[str, dict[Channel, int]]) -> dict[str, dict[Channel, int]]:
        """Regions are matched whatever the case (moments.placetext), so two keys differing
        only in case (`NJ` and `nj`) would be one region with two limits: refused, at the
        second, with the first named."""
        first: dict[str, str] = {}
        for region in value:
            seen = first.setdefault(place_key(region), region)
            if seen != region:
                raise ValueError(
                    f"{region}: the same region as {seen!r} (regions are matched whatever "
                    f"the case): list it once, as {seen!r}, with both its limits merged"
                )
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._regions.update((place_key(region), region) for region in self.capacity)

    @field_validator("next_day_at", mode="wrap")
    @classmethod
    def _local_time(
        cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> dt.time:
        """A time written with an offset (`"09:00+08:00"`, `"09:00Z"`) or a zone's name
        (`"09:00 Asia/Shanghai"`) is refused with the fix: it is local time in the
        policy's `timezone`, which was applied and an offset dropped without a word, so
        `09:00+08:00` under a UTC policy released at 09:00 UTC; a zone was told only to
        write HH:MM."""
        if isinstance(value, str) and (m := _TIME_THEN_ZONE.fullmatch(value.strip())):
            raise ValueError(_not_local(value, m[1].zfill(5), info))
        time: dt.time = handler(value)
        if time.tzinfo is None:
            return time
        written = value if isinstance(value, str) else time.isoformat(timespec="minutes")
        raise ValueError(_not_local(written, f"{time:%H:%M}", info))

    @field_validator("closed_days")
    @classmethod
    def _without_empty(cls, value: dict[Channel, tuple[dt.date, ...]]) -> dict[Channel, Any]:
        """A channel with no day off (`manager: []`, the list emptied after the holiday) is
        one not listed: kept, it made `moments check` and the reload log say "channels
        worked  (Asia/Shanghai)" with no channel, and changed the timetable digest, which
        woke every task waiting for hours or the next day."""
        return {channel: days for channel, days in value.items() if days}

    @property
    def always_worked(self) -> bool:
        """Every channel worked all day, every day: no `hours:` and no `closed_days:`."""
        return not self.hours and not self.closed_days

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def limit(self, region: str | None, channel: Channel) -> int | None:
        """Tasks per day for this region and channel; None when unlimited."""
        pool = self.pool(region, channel)
        return None if pool is None else pool[1]

    def pool(self, region: str | None, channel: Channel) -> tuple[str, int] | None:
        """Whose slots a task of this region and channel takes: its region's own when the
        policy lists it for the channel, else the one `"*"` pool every other region shares
        (not a pool per region: their number, hence the contacts a day and the counters,
        would grow with whatever regions the events name); None when unlimited. The region
        is matched whatever its case and the pool named as the policy writes it (its Redis
        counters keep their names)."""
        written = self._regions.get(place_key(region), ANY) if region else ANY
        for key in (written, ANY):
            limits = self.capacity.get(key)
            if limits is not None and channel in limits:
                return key, limits[channel]
        return None

    def hours_for(self, channel: Channel) -> ChannelHours | None:
        """When the channel is worked; None when it is open all day, every day."""
        texts = self.hours.get(channel)
        days = self.closed_days.get(channel)
        if texts is None and not days:
            return None
        return channel_hours(texts or (), days or ())

    def describe(self, regions: int | None = None, days_off: int | None = None) -> str:
        """The policy's limits and hours in plain words (`moments check`, the reload log):
        what a manager who changed a capacity looks for; `regions`: at most that many
        regions named, `days_off`: at most that many runs of a channel's days off (a
        refused reload's line), the rest counted."""
        return f"{self.describe_capacity(regions)}; {self.describe_hours(days_off)}"

    def describe_capacity(self, regions: int | None = None) -> str:
        """Each region's limits a day, then the `"*"` pool the rest share (`pool`)."""
        if not any(self.capacity.values()):
            return "no capacity limit"

        def limits(region: str) -> str:
            return ", ".join(f"{c.value} {n}" for c, n in self.capacity[region].items())

        parts = [f"{r} {limits(r)}" for r in self.capacity if r != ANY and self.capacity[r]]
        if regions is not None and len(parts) > regions:
            more = len(parts) - regions
            parts = [*parts[:regions], f"{more} more region(s) (`moments check` lists them)"]
        if self.capacity.get(ANY):
            parts.append(
                "all the rest together (other regions, channels a region does not list) "
                + limits(ANY)
            )
        said = "tasks a day: " + "; ".join(parts) + "; no limit otherwise"
        if self.reserved_share:
            said += f"; the last {self.reserved_share:.0%} of each limit kept for priorities 1-2"
        return said

    def describe_rule(self, rule_id: str, channel: Channel) -> str:
        """What dispatch does with a rule's task (`moments rules explain --policy`): its
        channel's hours, the limits a day on it and what happens over them."""
        hours = self.hours_for(channel)
        worked = "all day" if hours is None else f"{hours} ({self.timezone})"
        limits = [
            f"{'all the rest together' if region == ANY else region} {per[channel]}"
            for region, per in sorted(self.capacity.items(), key=lambda kv: kv[0] == ANY)
            if channel in per
        ]
        if not limits:
            return f"Dispatch: {channel.value} worked {worked}; no limit a day."
        over = self.overflow_for(rule_id)
        if over.policy is OverflowPolicy.FALLBACK and over.channel is not None:
            then = f"sent by {over.channel.value} instead if it has room"
        elif over.policy is OverflowPolicy.DROP:
            then = "not sent (suppressed: capacity)"
        else:
            then = (
                f"waits for {self.next_day_at:%H:%M} the next day (dropped if it would "
                "expire first)"
            )
        return (
            f"Dispatch: {channel.value} worked {worked}; at most a day: {', '.join(limits)}; "
            f"over that: {then}."
        )

    def describe_hours(self, days_off: int | None = None) -> str:
        """The channel hours in plain words (`moments check`, the reload log); `days_off`:
        at most that many runs of a channel's days off named, the rest counted."""
        if self.always_worked:
            return "every channel worked all day"
        worked = "; ".join(
            f"{c.value} {hours.describe(days_off)}"
            for c in Channel
            if (hours := self.hours_for(c)) is not None
        )
        return f"channels worked {worked} ({self.timezone}), any other all day"

    def timetable(self) -> str:
        """A digest of what a parked task's release time was computed from when it waits
        for its channel's hours or for the next day (`channel_hours`, `capacity`): the
        zone, the hours, the days off and `next_day_at`. The deferral queue keeps the one
        its waiting tasks were judged by (`Deferrals.rejudge`), so that a worker started
        or reloaded with another one judges them again."""
        doc: dict[str, Any] = {
            "timezone": self.timezone,
            "next_day_at": self.next_day_at.isoformat(),
            "hours": {channel.value: list(texts) for channel, texts in self.hours.items()},
        }
        if self.closed_days:  # absent otherwise: a policy without them keeps its digest
            doc["closed_days"] = {
                channel.value: days_text(days) for channel, days in self.closed_days.items()
            }
        raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(raw, digest_size=8).hexdigest()

    def last_send(self, task: ServiceTask) -> float:
        """The latest time the task may be published: `min_time_left` before it expires
        (a task sent with a minute to live reached its consumer expired)."""
        return task.expires_at.timestamp() - self.min_time_left.total_seconds()

    def overflow_for(self, rule_id: str) -> Overflow:
        """The rule's overflow, else the policy's `"*"`, else the default: one frozen object,
        not a model made at each call (dispatch asks for it at every task it reads)."""
        return self.overflow.get(rule_id) or self.overflow.get(ANY) or DEFAULT_OVERFLOW


def unknown_rule_keys(
    policy: DispatchPolicy, rule_ids: Iterable[str], moment_types: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The `overflow:` and `relevance:` keys the policy file writes that name none of
    these rules (a `relevance:` key: nor moment types), as (section, key); `"*"` and
    what the file leaves to the defaults are none."""
    ids = set(rule_ids)
    known = {"overflow": ids, "relevance": ids | set(moment_types)}
    return [
        (section, key)
        for section in ("overflow", "relevance")
        if section in policy.model_fields_set
        for key in getattr(policy, section)
        if key != ANY and key not in known[section]
    ]


def check_rule_ids(
    path: Path | None,
    policy: DispatchPolicy,
    rule_ids: Iterable[str],
    moment_types: Iterable[str] = (),
) -> None:
    """Refuse (`InputRefusedError`) an `overflow:` key of the policy file that names no rule of
    the rules in force (`"*"` is every other rule), or a `relevance:` key that names no
    rule and no moment type, at its line, with the one meant and the names there are: a
    misspelt id loaded and its rule got the default overflow, or no relevance check,
    without a word. Only what the file writes is checked (the default relevance checks
    name rules of the packaged catalog)."""
    if path is None:
        return
    ids = sorted(set(rule_ids))
    known = {"overflow": ids, "relevance": sorted(set(ids) | set(moment_types))}
    what = {"overflow": "a rule id", "relevance": "a rule id or moment type"}
    wrong = unknown_rule_keys(policy, ids, known["relevance"])
    if not wrong:
        return
    from rules.yamlpos import key_at

    try:
        doc = _with_positions(path.read_text(encoding="utf-8"))
    except OSError:
        doc = None
    lines = []
    for section, key in wrong:
        at = None
        if isinstance(doc, dict) and isinstance(doc.get(section), dict):
            at = key_at(doc[section], key)
        line, col = (at[0] + 1, at[1] + 1) if at is not None else (1, 1)
        names = known[section]
        close = difflib.get_close_matches(key.casefold(), names, n=1, cutoff=0.6)
        meant = f"did you mean {close[0]!r}? " if close else ""
        anyone = ', or "*" for every other rule' if section == "overflow" else ""
        lines.append(
            f"{path}:{line}:{col}: {section}.{key}: no {what[section][2:]} {key!r} in the "
            f"rules; {meant}"
            f"write {what[section]} ({', '.join(names)}){anyone}"
        )
    raise InputRefusedError(
        "invalid dispatch policy (see docs/architecture.md, 'Dispatch policy'):\n  "
        + "\n  ".join(lines)
    )


def _with_positions(text: str) -> Any:
    """The document again, read keeping each node's line and column, for the errors of
    a policy already read (None if it cannot be: the errors are then at line 1)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from rules.yamlpos import NamesAsWrittenAt

    yaml = YAML(typ="rt")
    yaml.Constructor = NamesAsWrittenAt
    try:
        return yaml.load(text)
    except (YAMLError, ValueError):
        return None


def _no_such_setting(loc: Sequence[str | int]) -> str:
    """What a key that is no setting of its mapping is told (`capcity:`, `merge: {windw:
    30m}`): the setting meant, or those the mapping takes."""
    from rules.hints import known_fields

    return f"no such setting{known_fields(str(loc[-1]), _settings_at(loc[:-1]))}"


def _settings_at(loc: Sequence[str | int]) -> list[str]:
    """The settings of the mapping at `loc` of the policy (a model's fields; through the
    keys of a mapping by region or rule, as `overflow.big_topup`)."""
    kind: Any = DispatchPolicy
    for part in loc:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = kind.model_fields.get(str(part))
            if field is None:
                return []
            kind = field.annotation
        elif get_origin(kind) is dict:
            kind = get_args(kind)[1]
        else:
            return []
    return list(kind.model_fields) if isinstance(kind, type) and issubclass(kind, BaseModel) else []


def _rules_not_policy(path: Path, data: Any) -> str | None:
    """Why a rules file given as the policy is refused (`--policy rules.yaml` was told
    "Extra inputs are not permitted" of its `gating`, `series` and `rules`): it holds
    top-level keys of a rules file and none of a policy. None for any other data."""
    from rules.spec import RulesFile

    if not isinstance(data, dict) or set(data) & set(DispatchPolicy.model_fields):
        return None
    keys = [f"{key}:" for key in data if key in RulesFile.model_fields]
    if not keys:
        return None
    return (
        f"{path}: a rules file ({', '.join(keys)}), not a dispatch policy: give it to --rules "
        "(MOMENTS_RULES), and to --policy (MOMENTS_DISPATCH_POLICY) a dispatch policy of "
        "capacity:, overflow:, contact:, merge: (docs/backtest-policy.yaml is one)"
    )


def load_policy(path: Path | None) -> DispatchPolicy:
    """The policy in `path` (YAML), or the defaults; a file read and found wanting raises
    `InputRefusedError` (exit 1) naming the field and what to write, a path that cannot be
    read a `ConfigError` (exit 2)."""
    if path is None:
        return DispatchPolicy()
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from rules.exceptions import RulesError
    from rules.yamllimits import (
        ReusedAnchor,
        beyond_limits,
        read_limited,
        reused_anchors,
        yaml_problem,
    )

    reused: list[ReusedAnchor] = []
    try:
        text = read_limited(path)
        problem = beyond_limits(str(path), text)
        if problem is not None:  # nested thousands deep, it crashed start-up (RecursionError)
            raise InputRefusedError(f"invalid dispatch policy: {problem}")
        from rules.yamlpos import NamesAsWritten

        # Dates as text (a bad one is refused at its line), region keys as written (`010`).
        yaml = YAML(typ="safe")
        yaml.Constructor = NamesAsWritten
        with reused_anchors() as reused:  # ruamel's own warning was a dump on stderr
            data: Any = yaml.load(text)
    except RulesError as exc:
        raise InputRefusedError(f"invalid dispatch policy: {exc}") from None
    except FileNotFoundError:  # "write it as UTF-8 YAML" sent a user to rewrite a file
        where = "" if path.is_absolute() else f", read from {Path.cwd()}"
        raise ConfigError(
            f"{path}: no such dispatch policy file{where}; give its path (--policy, "
            "MOMENTS_DISPATCH_POLICY), or leave it out for the defaults"
        ) from None
    except YAMLError as exc:  # at its line, with the rules files' hint, not ruamel's dump
        problem = yaml_problem(str(path), text, exc)
        raise InputRefusedError(f"invalid dispatch policy: {problem}") from None
    except (OSError, ValueError) as exc:
        # Read but not UTF-8 (ValueError) is the file's fault; not readable, the path's.
        refused = ConfigError if isinstance(exc, OSError) else InputRefusedError
        raise refused(
            f"{path}: cannot read the dispatch policy ({type(exc).__name__}: {exc}); write "
            "it as UTF-8 YAML (docs/architecture.md, 'Dispatch policy')"
        ) from None
    for anchor in reused:  # loaded as YAML says; the file's author is told which one
        logging.getLogger(__name__).warning("dispatch policy: %s", anchor.said(str(path)))
    if data is None:  # empty, or comments only: what a half-written file looks like
        raise InputRefusedError(
            f"{path}: the dispatch policy is empty, which would put the defaults in force (no "
            "capacity limits): write the policy, `{}` for the defaults on purpose, or unset "
            "MOMENTS_DISPATCH_POLICY"
        )
    if said := _rules_not_policy(path, data):
        raise InputRefusedError(said)
    try:
        return DispatchPolicy.model_validate(data)
    except ValidationError as exc:
        doc = _with_positions(text)
        lines = []
        for err in exc.errors():
            line, col, field, said = located(doc, err)
            if err["type"] == "extra_forbidden":  # "Extra inputs are not permitted"
                said = _no_such_setting(err["loc"])
            named = f"{field}: " if field else ""  # the file as a whole names none
            lines.append(f"{path}:{line}:{col}: {named}{said}")
        raise InputRefusedError(
            "invalid dispatch policy (see docs/architecture.md, 'Dispatch policy'):\n  "
            + "\n  ".join(lines)
        ) from None
