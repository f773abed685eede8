"""A write not acknowledged in time has the broker asked afresh once, briefly.

As its 120 s deadline passed, `sinks.base._unacknowledged` asked the broker whether it
still had the write's topics, waiting as long as the write's deadline: a broker that does
not answer (frozen, its network cut) held that ask for aiokafka's request timeout (40 s
a node, measured on a frozen Tansu) on top of each try's 120 s. Then `with_retry` asked
the same again (up to 5 s more) for the error that ask had just made. Now the ask waits
at most `ASK_AFRESH_S` (5 s), and `with_retry` does not repeat it."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Collection
from typing import Any

import pytest
from aiokafka import errors as k

import sinks.base
import sinks.retry
from sinks.base import acknowledged
from sinks.metrics import Dependency, Metrics
from sinks.retry import with_retry

from .test_delivery_deadline import Client

TASKS = "moments.tasks"
ASK_AFRESH_S = 5.0


class Producer:
    """What `acknowledged` asks of aiokafka's producer: its client (`Client`)."""

    def __init__(self, there: set[str]) -> None:
        self.client = Client(there)


@pytest.fixture(autouse=True)
def deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.base, "DELIVERY_TIMEOUT_S", 0.01)


def never() -> asyncio.Future[Any]:
    """An acknowledgement that does not come."""
    return asyncio.get_running_loop().create_future()


@pytest.mark.timeout(15)
async def test_the_ask_as_the_deadline_passes_waits_the_ask_not_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    asked = sinks.base.gone_topics

    async def spy(producer: object, topics: Collection[str], wait_s: float) -> list[str]:
        waits.append(wait_s)
        return await asked(producer, topics, wait_s)

    monkeypatch.setattr(sinks.base, "gone_topics", spy)
    with pytest.raises(k.KafkaTimeoutError):
        await acknowledged(Producer({TASKS}), [never()], {TASKS}, deadline_s=0.01)
    assert waits == [ASK_AFRESH_S]


@pytest.mark.timeout(15)
async def test_a_retried_write_not_acknowledged_asks_the_broker_once_a_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One try not acknowledged, the next acknowledged: one ask, the one made as the
    deadline passed; `with_retry` counted it a broker away all the same."""
    producer = Producer({TASKS})
    tries = 0

    async def write() -> list[Any]:
        nonlocal tries
        tries += 1
        answer = never()
        if tries > 1:
            answer.set_result(None)
        return await acknowledged(producer, [answer], {TASKS})

    async def no_wait(_: float) -> None:
        return None

    monkeypatch.setattr(sinks.retry, "asyncio", types.SimpleNamespace(sleep=no_wait))
    metrics = Metrics()
    await with_retry(
        write, Dependency.KAFKA, metrics, "publishing tasks", needed_topic=TASKS, producer=producer
    )
    assert tries == 2
    assert producer.client.asked == 1
    errors = {"dependency": "kafka"}
    assert metrics.registry.get_sample_value("moments_dependency_errors_total", errors) == 1
