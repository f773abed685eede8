"""The YAML shape of a rules file, as pydantic models (validated before any event is read).

A file holds `series:` (per-subscriber aggregates kept in fixed window rings) and
`rules:`. A rule listens to event types (`on`), filters them (`when`), tests a
`condition` tree and describes the service task it creates. Thresholds are named
`params`, referenced as `$name` and overridden per region or tier.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

from moments.models import Channel, EventType, Family
from rules.durations import echoed, parse_duration
from rules.gating import GatingPolicy

Period = Literal["day", "week", "month"]
Evaluate = Literal["event", "daily", "weekly", "monthly", "special_day"]
OccasionName = Literal["birthday", "join_anniversary", "contract_expiry", "holiday"]
Aggregate = Literal["sum", "count", "avg", "max"]
Scalar = str | int | float | bool
OperatorValue = Scalar | list[Scalar]

PERIOD_OF: dict[str, Period] = {"daily": "day", "weekly": "week", "monthly": "month"}
"""The window a close-evaluated rule looks at."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


def _positive_duration(value: str | None) -> str | None:
    """A ttl of 0 expires every task at once (they vanished without a word)."""
    if value is not None and not parse_duration(value):
        raise ValueError(f"{echoed(value)} is no time at all; give it some, e.g. 24h")
    return value


def _days_or_more(value: str | None) -> str | None:
    """Look-backs and silences are days long; `2m` (minutes) was meant as two months."""
    if value is not None and parse_duration(value) < dt.timedelta(days=1):
        raise ValueError(
            f"{echoed(value)} is less than a day (m is minutes); write days or weeks, e.g. "
            "60d for two months"
        )
    return value


class Operators(_Strict):
    """Comparisons; a value may be a number, a string, a list, or `$param`."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: list[Scalar] | str | None = Field(default=None, alias="in")
    not_in: list[Scalar] | str | None = None
    prefix: list[str | int] | str | int | None = None
    """Texts a value starts with; digits may be written unquoted (`[1380, 1390]`)."""
    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None

    def given(self) -> dict[str, Any]:
        """The operators written, by their YAML names."""
        return {
            ("in" if name == "in_" else name): value
            for name, value in self
            if value is not None and name in Operators.model_fields
        }


class FieldCond(Operators):
    field: str = Field(description="A field of the event, e.g. balance_after")


class ProfileCond(Operators):
    profile: str = Field(description="A profile field, e.g. tier, status, star_level")


class FirstTimeCond(_Strict):
    first_time: str = Field(description="Event field whose first value per subscriber counts")
    lookback: str | None = Field(default=None, description="e.g. 60d; unset means ever")

    _lookback = field_validator("lookback")(_days_or_more)


class ChangedCond(_Strict):
    changed: str = Field(description="Event field compared with its last value, e.g. imei")


class SeriesCond(Operators):
    series: str
    agg: Aggregate = "sum"
    last: int = Field(default=1, ge=1, le=60, description="Windows aggregated, the current one too")


class BaselineCond(Operators):
    baseline: str = Field(description="Series compared with the subscriber's own past")
    agg: Aggregate = "sum"
    windows: int = Field(default=3, ge=1, le=12, description="Previous windows averaged")
    min_baseline: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="Below it there is no baseline"
    )
    measure: Literal["ratio", "change"] = Field(
        default="ratio", description="ratio: current/baseline; change: (current-baseline)/baseline"
    )


class ShareCond(Operators):
    share: str = Field(description="Series whose share is taken")
    of: str = Field(description="Series that is the whole")
    last: int = Field(default=1, ge=1, le=60)
    min_total: float = Field(
        default=1.0, ge=0, allow_inf_nan=False, description="Below it the share is not judged"
    )


class AbsenceCond(_Strict):
    absence: str = Field(description="No event of the rule's types for this long, e.g. 7d")

    _absence = field_validator("absence")(_days_or_more)


class OccasionCond(_Strict):
    occasion: OccasionName | list[OccasionName] = Field(
        description="Special day(s) that fire the rule (evaluate: special_day)"
    )
    holidays: list[str] | None = Field(
        default=None, description="Only these holiday keys (e.g. spring_festival); default all"
    )
    lead_days: int | None = Field(
        default=None,
        ge=0,
        le=366,
        description="contract_expiry: due this many days before contract_end; default: "
        "special_days.lead_days",
    )


class AllCond(_Strict):
    all: list[Condition] = Field(min_length=1)


class AnyCond(_Strict):
    any: list[Condition] = Field(min_length=1)


class NotCond(_Strict):
    not_: Condition = Field(alias="not")


CONDITION_KINDS = (
    "field",
    "profile",
    "first_time",
    "changed",
    "series",
    "baseline",
    "share",
    "absence",
    "occasion",
    "all",
    "any",
    "not",
)


def _kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        for kind, cls in _CLASSES.items():
            if isinstance(value, cls):
                return kind
        return None
    if isinstance(value, dict):
        found = [k for k in CONDITION_KINDS if k in value]
        return found[0] if len(found) == 1 else None
    return None


Condition = Annotated[
    Annotated[FieldCond, Tag("field")]
    | Annotated[ProfileCond, Tag("profile")]
    | Annotated[FirstTimeCond, Tag("first_time")]
    | Annotated[ChangedCond, Tag("changed")]
    | Annotated[SeriesCond, Tag("series")]
    | Annotated[BaselineCond, Tag("baseline")]
    | Annotated[ShareCond, Tag("share")]
    | Annotated[AbsenceCond, Tag("absence")]
    | Annotated[OccasionCond, Tag("occasion")]
    | Annotated[AllCond, Tag("all")]
    | Annotated[AnyCond, Tag("any")]
    | Annotated[NotCond, Tag("not")],
    Discriminator(
        _kind,
        custom_error_type="condition_kind",
        custom_error_message="a condition needs exactly one of: " + ", ".join(CONDITION_KINDS),
    ),
]

_CLASSES: dict[str, type[BaseModel]] = {
    "field": FieldCond,
    "profile": ProfileCond,
    "first_time": FirstTimeCond,
    "changed": ChangedCond,
    "series": SeriesCond,
    "baseline": BaselineCond,
    "share": ShareCond,
    "absence": AbsenceCond,
    "occasion": OccasionCond,
    "all": AllCond,
    "any": AnyCond,
    "not": NotCond,
}


def walk(node: Any) -> Iterator[Any]:
    """A condition and every condition inside it, depth first."""
    for _, found in walk_at(node):
        yield found


def walk_at(
    node: Any, loc: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """As `walk`, each condition with its place under `loc` (the keys and indexes of the
    rules file: `all`, 0, ...), for an error that points at it."""
    yield loc, node
    if isinstance(node, AllCond):
        for i, child in enumerate(node.all):
            yield from walk_at(child, (*loc, "all", i))
    elif isinstance(node, AnyCond):
        for i, child in enumerate(node.any):
            yield from walk_at(child, (*loc, "any", i))
    elif isinstance(node, NotCond):
        yield from walk_at(node.not_, (*loc, "not"))


AllCond.model_rebuild()
AnyCond.model_rebuild()
NotCond.model_rebuild()


class SeriesSpec(_Strict):
    """A per-subscriber aggregate over windows of event time (kept in a fixed ring)."""

    on: list[EventType] = Field(min_length=1)
    when: dict[str, Any] = Field(default_factory=dict)
    field: str | None = Field(default=None, description="Numeric field summed; unset: count only")
    period: Period = "day"
    keep: int | None = Field(
        default=None, ge=1, le=60, description="Windows kept; default: what the rules need"
    )


class TaskSpecModel(_Strict):
    family: Family
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    channel: Channel
    priority: int = Field(ge=1, le=5)
    action: str = Field(min_length=1)
    ttl: str = "24h"
    description: str = Field(min_length=1)
    cooldown: str | None = Field(default=None, description="At most one task per subscriber per")
    purpose: Literal["service", "sales"] = "service"

    _ttl = field_validator("ttl")(_positive_duration)
    _cooldown = field_validator("cooldown")(_duration)


class OverrideSpec(_Strict):
    region: str | list[str] | None = None
    tier: str | list[str] | None = None
    params: dict[str, float | int | str] = Field(min_length=1)

    @field_validator("region", mode="before")
    @classmethod
    def _digits_as_text(cls, value: Any) -> Any:
        """`region: 10` as the region "10", as the dispatch policy reads `capacity: {10:
        ...}` (`010` is "010" already, digits with a leading zero being text): it was
        refused "Input should be a valid string" and no more."""

        def text(item: Any) -> Any:
            return str(item) if isinstance(item, int) and not isinstance(item, bool) else item

        return [text(v) for v in value] if isinstance(value, list) else text(value)


class RuleSpec(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$", max_length=64)
    version: int = Field(default=1, ge=1)
    description: str = Field(min_length=1)
    on: list[EventType] = Field(min_length=1)
    evaluate: Evaluate = "event"
    mode: Literal["live", "shadow"] = Field(
        default="live",
        description="shadow: evaluated and counted (moments_shadow_total), makes no task",
    )
    when: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, float | int | str] = Field(default_factory=dict)
    overrides: list[OverrideSpec] = Field(default_factory=list)
    condition: Condition | None = None
    task: TaskSpecModel


class SpecialDaysSpec(_Strict):
    """When special days are looked at, and with which calendar."""

    local_hour: int = Field(default=9, ge=0, le=23, description="Local hour of the daily look")
    lead_days: int = Field(default=30, ge=0, le=366, description="Contract expiry warning")
    calendar: str | None = Field(
        default=None,
        description="Operator holiday file, relative to this rules file; default: China's",
    )


class RulesFile(_Strict):
    special_days: SpecialDaysSpec | None = None
    gating: GatingPolicy | None = Field(
        default=None, description="Do-not-disturb gates for every task (one file may set it)"
    )
    series: dict[str, SeriesSpec] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
