"""The commands that produce (`moments deadletter replay`, `moments simulate`) await their
acknowledgements within the delivery deadline (`sinks.base.acknowledged_each`), as the
worker's sinks do.

They gathered them with no deadline: an idempotent producer (Apache Kafka grants it)
retries a batch to a topic deleted under it for as long as its metadata names a leader,
so a replay or a simulation hung with no word. Now what is not acknowledged in time is a
failure of its own, the rest known as sent: the replay remembers those and stops saying
so, the simulation keeps the others in its batch and tries again."""

from __future__ import annotations

import asyncio
import datetime as dt
import types
from collections.abc import Awaitable
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka import errors as k

import sinks.base
import sinks.retry
from moments.deadletter_replay import _send
from moments.deadletters import DeadLetterEntry, parse_entry
from moments.models import EventType
from moments.records import DeadLetter, RawRecord, RejectReason
from moments.settings import Settings
from moments.simulate import SimEvent, SimStats, _Delivery
from sinks.deadletter import dead_letter_headers
from sinks.metrics import Metrics

from .fakes import FakeProducer, Sent, acknowledged
from .test_delivery_deadline import Client

AT = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)
DEADLINE_S = 0.01
"""The tests' deadline: what is awaited here never comes, so it only has to pass."""


@pytest.fixture
def deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # raising=False: on a source without the deadline the command hangs (the bug), and the
    # test's timeout says so.
    monkeypatch.setattr(sinks.base, "DELIVERY_TIMEOUT_S", DEADLINE_S, raising=False)


class Stuck(FakeProducer):
    """Acknowledges every record at once but those whose value is in `stuck`, never."""

    def __init__(self, *stuck: bytes) -> None:
        self.stuck = set(stuck)
        self.sent: list[bytes | None] = []
        self.never: list[asyncio.Future[None]] = []

    async def take(self, record: Sent) -> Awaitable[Any]:
        self.sent.append(record.value)
        if record.value in self.stuck:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.never.append(future)
            return future
        return acknowledged()


def entry(value: bytes, offset: int) -> DeadLetterEntry:
    record = RawRecord("telecom.topup", 1, 40 + offset, b"13800138000", value)
    letter = DeadLetter(record, "topup", RejectReason.INVALID_EVENT, "E", "why")
    return parse_entry(0, offset, b"13800138000", value, dead_letter_headers(letter, AT))


@pytest.mark.timeout(15)
class TestAcknowledgedEach:
    async def test_those_not_acknowledged_in_time_fail_the_others_answer(
        self, deadline: None
    ) -> None:
        from sinks.base import acknowledged_each  # here: the module runs on an older src

        producer = Stuck(b"b")
        futures = [await producer.send("t", value=v) for v in (b"a", b"b", b"c")]
        a, b, c = await acknowledged_each(producer, futures, {"t"})
        assert (a, c) == (None, None)
        assert isinstance(b, k.KafkaTimeoutError)
        assert "1 write(s) to t not acknowledged in 0.01 s" in str(b)
        assert producer.never[0].cancelled()

    async def test_a_topic_the_broker_no_longer_has_is_said(self, deadline: None) -> None:
        from sinks.base import acknowledged_each

        producer = Stuck(b"b")
        producer.client = Client(set())  # type: ignore[attr-defined]  # aiokafka's, asked afresh
        futures = [await producer.send("t", value=v) for v in (b"a", b"b")]
        _, b = await acknowledged_each(producer, futures, {"t"})
        assert isinstance(b, k.UnknownTopicOrPartitionError)
        assert "the broker no longer has t (deleted?)" in str(b)


@pytest.mark.timeout(15)
class TestADeadLetterReplay:
    async def test_a_write_never_acknowledged_fails_and_the_others_are_known_sent(
        self, deadline: None
    ) -> None:
        """The replay remembers the entries sent and stops on the failure, which its
        command prints; before, it waited without end."""
        producer = Stuck(b"two")
        entries = [entry(b"one", 1), entry(b"two", 2), entry(b"three", 3)]
        sent, failure = await _send(producer, Settings(), entries)
        assert [e.offset for e in sent] == [1, 3]
        assert isinstance(failure, k.KafkaTimeoutError)


@pytest.mark.timeout(15)
class TestASimulation:
    async def test_a_write_never_acknowledged_stays_in_the_batch_and_is_retried(
        self, deadline: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The first try's stuck event is sent again by the next try, the others not."""
        metrics = Metrics()
        settings = Settings()
        producer = Stuck()
        first = SimEvent(EventType.TOPUP, "13800138000", {"n": 1})
        second = SimEvent(EventType.TOPUP, "13800138001", {"n": 2})
        producer.stuck = {b'{"n":2}'}
        # A fake of the producer's `send`, all that `_Delivery` calls of it.
        delivery = _Delivery(cast(AIOKafkaProducer, producer), settings, SimStats(), metrics)
        delivery.batch = [first, second]

        async def unstick(_: float) -> None:
            producer.stuck = set()

        monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=unstick))
        await delivery.flush()
        assert producer.sent == [b'{"n":1}', b'{"n":2}', b'{"n":2}']
        assert delivery.batch == []
