"""What every rule works with: the task spec, the evaluation environment, a firing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moments.models import Channel, Family, InputEvent
from moments.state import SubscriberState
from rules.gating import Purpose
from rules.windows import local_date, window_index


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """How a moment becomes a service task."""

    family: Family
    moment_type: str
    channel: Channel
    priority: int
    action: str
    ttl: dt.timedelta
    description: str
    """A template filled from the firing's params (`{name}` placeholders only)."""
    cooldown: dt.timedelta | None = None
    purpose: Purpose = "service"


@dataclass(frozen=True, slots=True)
class EvalContext:
    """What a rule may know besides the event and the subscriber's state."""

    now: dt.datetime | None
    """Wall clock, for `created_at` and expiry; detection itself uses event time only.
    None replays history with event time as the clock (tests, `rules test`, backtest)."""


@dataclass(frozen=True, slots=True)
class Fired:
    """A rule fired: the occurrence key makes the task id deterministic."""

    occurrence: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Env:
    """One rule's look at one subscriber at one instant (an event, or a window closing)."""

    event: InputEvent | None
    state: SubscriberState
    params: Mapping[str, Any]
    at: int
    """Event time (epoch seconds): the event's, or the end of the window that closed."""
    tz: dt.tzinfo
    tag: str
    closing: int | None = None
    """The window index that closed (close-evaluated rules), in the rule's period."""
    out: dict[str, Any] = field(default_factory=dict)
    occurrence: str | None = None
    occasion: Any = None
    """The special day being evaluated (rules.special_days.Occasion), if any."""

    def window(self, period: str) -> int:
        """The reference window: the one closing, or the one holding the event."""
        if self.closing is not None:
            return self.closing
        return window_index(period, local_date(self.at, self.tz))


Condition = Callable[[Env], bool]
