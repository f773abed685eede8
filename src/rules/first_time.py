"""First-time moments: the first occurrence of a key per subscriber, ever or within a look-back."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from moments.models import EventType, InputEvent
from moments.state import SubscriberState
from rules.base import EvalContext, Fired, TaskSpec
from rules.predicates import Predicate


def state_tag(rule_id: str) -> str:
    """A short stable tag that namespaces a rule's keys inside the subscriber record."""
    return hashlib.blake2b(rule_id.encode(), digest_size=3).hexdigest()


@dataclass(frozen=True, slots=True)
class FirstTimeRule:
    """Fires when `key_field` takes a value not seen for this subscriber (within `lookback`)."""

    id: str
    version: int
    event_types: frozenset[EventType]
    task: TaskSpec
    key_field: str
    when: Predicate
    lookback: dt.timedelta | None = None

    def evaluate(self, event: InputEvent, state: SubscriberState, ctx: EvalContext) -> Fired | None:
        if not self.when(event):
            return None
        value: Any = getattr(event, self.key_field, None)
        if value is None:
            return None
        key = f"{state_tag(self.id)}:{value}"
        at = int(event.occurred_at.timestamp())
        last = state.first_seen.get(key)
        if last is not None and at <= last:
            return None  # seen at or after this event time: late or replayed, never "first"
        state.first_seen[key] = at
        if last is not None and (
            self.lookback is None or at - last <= self.lookback.total_seconds()
        ):
            return None
        params: dict[str, Any] = {self.key_field: value}
        if self.lookback is None:
            occurrence = str(value)
        else:
            # "First in 60 days" can happen again: the occurrence is this sighting.
            occurrence = f"{value}@{at}"
            params["lookback_days"] = self.lookback.days
            if last is not None:
                params["previous_at"] = dt.datetime.fromtimestamp(last, dt.UTC).isoformat()
        return Fired(occurrence=occurrence, params=params)
