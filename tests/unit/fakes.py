"""Stand-ins the unit tests share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moments.models import ProfileEvent
    from sinks.dispatch import TaskSink
    from sinks.relevance import SubscriberFacts
    from sinks.stores import Facts


class Clock:
    """A clock that stands still until a test moves `now` (seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ReactivatedMeanwhile:
    """The facts as a release reads them; right after that read, another worker records a
    profile update saying the line is active and wakes its tasks (`record_facts`): the
    task is then neither waiting (it is being decided) nor decided yet. Put in place of
    the deciding sink's `facts`."""

    def __init__(self, facts: Facts, other: TaskSink, update: ProfileEvent) -> None:
        self.facts = facts
        self.other = other
        self.update = update
        self.woken: list[int] = []

    async def get_many(self, subscriber_ids: Sequence[str]) -> list[SubscriberFacts]:
        got = await self.facts.get_many(subscriber_ids)
        if not self.woken:
            await self.other.record_facts([self.update])
            self.woken.append(1)
        return got

    def __getattr__(self, name: str) -> object:
        return getattr(self.facts, name)
