"""The small protocol every rule implements, and what a firing carries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from moments.models import Channel, EventType, Family, InputEvent
from moments.state import SubscriberState


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
    """A template filled from the firing's params with `str.format_map` (placeholders only)."""


@dataclass(frozen=True, slots=True)
class EvalContext:
    """What a rule may know besides the event and the subscriber's state."""

    now: dt.datetime
    """Wall clock, only for `created_at`; all detection uses event time."""


@dataclass(frozen=True, slots=True)
class Fired:
    """A rule fired: the occurrence key makes the task id deterministic."""

    occurrence: str
    params: dict[str, Any] = field(default_factory=dict)


class Rule(Protocol):
    """A configured rule: pure, synchronous, no I/O."""

    @property
    def id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def event_types(self) -> frozenset[EventType]: ...

    @property
    def task(self) -> TaskSpec: ...

    def evaluate(self, event: InputEvent, state: SubscriberState, ctx: EvalContext) -> Fired | None:
        """Look at one event against the state; update the state it owns; maybe fire."""
        ...
