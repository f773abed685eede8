"""A compiled rule: what it listens to, its condition and thresholds, and its task."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moments.models import EventType, InputEvent
from moments.placetext import folded, place_key
from moments.state import SubscriberState
from rules.base import Condition, Env, Fired, TaskSpec
from rules.predicates import Predicate
from rules.yamlpos import line_of


def state_tag(name: str) -> str:
    """A short stable tag that namespaces a rule's or series' keys inside the subscriber record."""
    return hashlib.blake2b(name.encode(), digest_size=3).hexdigest()


@dataclass(frozen=True, slots=True)
class Override:
    """Params for subscribers of some regions and/or tiers (None: any), matched whatever
    the case (moments.placetext): `nj` in a rules file is the city whose events say `NJ`."""

    regions: frozenset[str] | None
    tiers: frozenset[str] | None
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        for name in ("regions", "tiers"):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, frozenset(place_key(v) for v in values))

    def applies(self, region: str | None, tier: str | None) -> bool:
        return (self.regions is None or folded(region) in self.regions) and (
            self.tiers is None or folded(tier) in self.tiers
        )


MAX_PARAM_SETS = 4096
"""(region, tier) pairs whose params a rule remembers: a province's cities by its tiers, many
times over. The region and tier are the events' and profiles' text: a producer writing a
cell id as the region grew each rule's memory by one entry per cell, for the worker's life."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    version: int
    description: str
    event_types: frozenset[EventType]
    evaluate: str
    """`event`, or `daily`/`weekly`/`monthly`: when a window of that period closes."""
    period: str | None
    when: Predicate
    condition: Condition | None
    task: TaskSpec
    params: Mapping[str, Any] = field(default_factory=dict)
    overrides: tuple[Override, ...] = ()
    sources: tuple[str, ...] = ()
    tag: str = ""
    judges_silence: bool = False
    """The condition has an `absence`: worth nothing once the subscriber is active again."""
    shadow: bool = False
    """`mode: shadow`: the rule runs and is counted up to the gates, and makes no task."""

    spec: Any = None
    """The parsed spec (rules.spec.RuleSpec), for `moments rules explain`."""
    declared_at: str = field(default="", compare=False)
    """`file:line` of the rule in its rules file, for the warnings of `rules.lint`."""
    lines: Mapping[tuple[str | int, ...], int] = field(
        default_factory=dict, compare=False, repr=False
    )
    """The line of each item of the rule in its rules file, by its path from the rule
    (`rules.yamlpos.lines_within`): a warning points at its item (`at`)."""
    _cache: dict[tuple[str | None, str | None], Mapping[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def at(self, *path: str | int) -> str:
        """`file:line` of the rule's item at `path` (`overrides`, 0, `tier`), or of the
        deepest of it the file says where it is; the rule's own (`declared_at`) else."""
        file, _, _ = self.declared_at.rpartition(":")
        line = line_of(self.lines, path)
        return f"{file}:{line}" if file and line is not None else self.declared_at

    @property
    def judged_again(self) -> bool:
        """Its moments are judged again at later looks, each one moment counted once: a
        silence every day it lasts, a contract's end every day of its lead, a special day
        again when a profile update comes that day (moments.sweep)."""
        return self.judges_silence or self.evaluate == "special_day"

    def params_for(self, region: str | None, tier: str | None) -> Mapping[str, Any]:
        """Thresholds for a subscriber: defaults, then each matching override in order."""
        key = (region, tier)
        found = self._cache.get(key)
        if found is None:
            merged = dict(self.params)
            for override in self.overrides:
                if override.applies(region, tier):
                    merged.update(override.params)
            if len(self._cache) >= MAX_PARAM_SETS:
                self._cache.clear()
            found = self._cache[key] = merged
        return found

    def check(
        self,
        event: InputEvent | None,
        state: SubscriberState,
        at: int,
        tz: dt.tzinfo,
        closing: int | None = None,
        occasion: Any = None,
    ) -> Fired | None:
        """Evaluate at one instant; the occurrence defaults to the event, or the window closed."""
        profile = state.profile
        # An event's own region; with none (a close-time or special-day rule, an event
        # that names none), the profile's, else the one the subscriber's events named.
        region = (
            event.region
            if event is not None and event.region
            else profile.get("region") or state.region or None
        )
        tier = profile.get("tier")
        params = self.params_for(region, tier)
        env = Env(event, state, params, at, tz, self.tag, closing, {}, None, occasion)
        if self.condition is not None and not self.condition(env):
            return None
        occurrence = env.occurrence
        if occurrence is None:
            if closing is not None:
                occurrence = f"{self.period}:{closing}"
            elif event is not None:
                occurrence = f"event:{event.event_id}"
            else:
                occurrence = str(at)
        return Fired(occurrence=occurrence, params=env.out)
