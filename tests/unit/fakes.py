"""Stand-ins the unit tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from aiokafka.errors import KafkaConnectionError

from sinks.base import Headers

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


class Sent(NamedTuple):
    """A record handed to a fake producer's `send`, as its arguments name it."""

    topic: str
    value: bytes | None
    key: bytes | None
    partition: int | None
    timestamp_ms: int | None
    headers: Headers | None


def acknowledged(error: BaseException | None = None) -> asyncio.Future[None]:
    """A send's acknowledgement, done at once: taken, or refused with `error`."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
    return done


class FakeProducer:
    """The sinks' producer (`sinks.base.Producer`) for the unit tests, its `send` declared
    here once: a fake says what it does with each record in `take` (raise, as aiokafka's
    `send` does for a record it refuses; or return the acknowledgement). This one takes
    every record, acknowledged at once, and keeps none."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        return await self.take(Sent(topic, value, key, partition, timestamp_ms, headers))

    async def take(self, record: Sent) -> Awaitable[Any]:
        return acknowledged()


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
            await self.other.subscribers.record_facts([self.update])
            self.woken.append(1)
        return got

    def __getattr__(self, name: str) -> object:
        return getattr(self.facts, name)


class NoDeadLetters:
    """A runtime's dead-letter sink that takes and sends nothing."""

    def add(self, _: object) -> None:
        pass

    async def flush(self) -> None:
        pass


class FakeChangelog:
    """Stands in for `produce_to_partitions`: the first `fail` attempts raise, then each
    write is held until `release` (set at once unless `hold`), kept in `records` and noted
    in `order`; it answers each partition's offset as 40 + the records written so far."""

    def __init__(self, order: list[str], fail: int = 0, hold: bool = False) -> None:
        self.order = order
        self.fail = fail
        self.attempts = 0
        self.records: list[tuple[int, bytes, bytes | None]] = []
        self.headers: list[list[tuple[str, bytes]]] = []
        """Each record's headers, as written (none given: empty)."""
        self.writing = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(
        self,
        _producer: object,
        _topic: str,
        records: Sequence[tuple[int, bytes, bytes | None]],
        headers: Sequence[list[tuple[str, bytes]]] | None = None,
    ) -> dict[int, int]:
        self.attempts += 1
        if self.attempts <= self.fail:
            raise KafkaConnectionError("the broker is gone")
        self.writing.set()
        await self.release.wait()
        self.records.extend(records)
        self.headers.extend(headers if headers is not None else [[] for _ in records])
        self.order.append("changelog written")
        return {p: 40 + len(self.records) for p, _, _ in records}


class ChangedMeanwhile:
    """The facts as a decision reads them; right after its first read, `meanwhile` runs
    once (another batch records a profile update and looks its subscriber's published
    tasks up), before the decision publishes and confirms what it read them for. Put in
    place of the deciding sink's `facts`."""

    def __init__(self, facts: Facts, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self.facts = facts
        self.meanwhile = meanwhile
        self.ran = 0

    async def get_many(self, subscriber_ids: Sequence[str]) -> list[SubscriberFacts]:
        got = await self.facts.get_many(subscriber_ids)
        if not self.ran:
            self.ran += 1
            await self.meanwhile()
        return got

    def __getattr__(self, name: str) -> object:
        return getattr(self.facts, name)
