"""The detector: a batch of raw records in, tasks, dead letters and new state out.

Pure and synchronous: no broker, no Redis, no Faust. The Faust agent, the
in-memory pipeline and the tests all drive this same code.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from moments.decoding import decode
from moments.models import EventType, InputEvent, ProfileEvent, ServiceTask
from moments.records import DeadLetter, RawRecord
from moments.state import SubscriberState
from moments.taskbuilder import build_task
from rules.base import EvalContext
from rules.catalog import RuleSet

StateLoader = Callable[[str], SubscriberState | None]

SOURCE_CODES: dict[EventType, str] = {
    EventType.TOPUP: "t",
    EventType.ROAMING: "r",
    EventType.COMPLAINT: "c",
    EventType.USAGE: "u",
    EventType.PROFILE: "p",
}
"""Short names of the sources inside the subscriber record (it is stored per subscriber)."""

_PROFILE_BASE_FIELDS = frozenset({"event_id", "subscriber_id", "occurred_at"})


@dataclass(slots=True)
class StateChange:
    """The new state of one subscriber (None: forget it) and where its changelog belongs."""

    state: SubscriberState | None
    partition: int


@dataclass(slots=True)
class BatchResult:
    tasks: list[ServiceTask] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    changes: dict[str, StateChange] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    """Records consumed (valid or not), by event type."""
    detected: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Moments fired, by (family, moment type)."""
    replayed: int = 0
    """Events skipped because this subscriber had applied them already."""
    expired: Counter[str] = field(default_factory=Counter)
    """Moments whose task expired before it was made (old events), by moment type."""


class Detector:
    """Evaluates the rules over batches; holds no state of its own between batches."""

    def __init__(self, rules: RuleSet, topic_types: Mapping[str, EventType]) -> None:
        self.rules = rules
        self.topic_types = dict(topic_types)

    def swap_rules(self, rules: RuleSet) -> None:
        """Install new rules; the caller does it between batches."""
        self.rules = rules

    def process(
        self, records: Sequence[RawRecord], load: StateLoader, now: dt.datetime
    ) -> BatchResult:
        result = BatchResult()
        states: dict[str, SubscriberState] = {}
        ctx = EvalContext(now=now)
        for record in records:
            event_type = self.topic_types[record.topic]
            result.events[event_type.value] += 1
            decoded = decode(record, event_type)
            if isinstance(decoded, DeadLetter):
                result.dead_letters.append(decoded)
                continue
            if decoded is None:  # profile tombstone: forget the subscriber, state included
                sub = (record.key or b"").decode("utf-8", "replace")
                states.pop(sub, None)
                result.changes[sub] = StateChange(None, record.partition)
                continue
            sub = decoded.subscriber_id
            state = states.get(sub)
            if state is None:
                change = result.changes.get(sub)
                loaded = None if change is not None else load(sub)
                state = loaded if loaded is not None else SubscriberState()
                states[sub] = state
            result.changes[sub] = StateChange(state, record.partition)
            source = SOURCE_CODES[event_type]
            if state.already_applied(source, record.offset, decoded.event_id):
                result.replayed += 1
                continue
            state.mark_applied(source, record.offset, decoded.event_id)
            if isinstance(decoded, ProfileEvent):
                apply_profile(state, decoded)
            self._evaluate(decoded, event_type, state, ctx, result)
        return result

    def _evaluate(
        self,
        event: InputEvent,
        event_type: EventType,
        state: SubscriberState,
        ctx: EvalContext,
        result: BatchResult,
    ) -> None:
        for rule in self.rules.for_event(event_type):
            fired = rule.evaluate(event, state, ctx)
            if fired is None:
                continue
            spec = rule.task
            result.detected[(spec.family.value, spec.moment_type)] += 1
            task = build_task(rule, fired, event, state, ctx.now)
            if task.expires_at <= ctx.now:
                result.expired[spec.moment_type] += 1
                continue
            result.tasks.append(task)


def apply_profile(state: SubscriberState, event: ProfileEvent) -> None:
    """An update changes only the fields it carries."""
    # Declared fields only: unknown extras must not grow the subscriber's record.
    fields = set(ProfileEvent.model_fields) - _PROFILE_BASE_FIELDS
    carried = event.model_dump(mode="json", exclude_unset=True, include=fields)
    state.profile.update(carried)
